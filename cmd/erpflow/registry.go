package main

import (
	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
)

// newRegistry returns an action registry with the built-in webhook type.
// Plugins add their types to it.
func newRegistry(opts webhook.Options) *actions.Registry {
	if opts.Version == "" {
		opts.Version = moduleVersion() // User-Agent: erpflow/<version>
	}
	r := &actions.Registry{}
	if err := r.Register("webhook", webhook.New(opts)); err != nil {
		panic(err) // only on a programming error: the registry is new
	}
	return r
}
