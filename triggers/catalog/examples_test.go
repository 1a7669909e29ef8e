package catalog_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

// TestExamples checks that every example catalog (one per seed page)
// loads, that the example event of its page fits it, and that the
// example rules of its page load cleanly against it.
func TestExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "examples")
	files, err := filepath.Glob(filepath.Join(dir, "catalog", "*.yaml"))
	if err != nil || len(files) != 6 {
		t.Fatalf("%d example catalogs (%v), want one per seed page", len(files), err)
	}
	reg := &actions.Registry{}
	if err := reg.Register("webhook", webhook.New(webhook.Options{})); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			c, err := catalog.LoadPaths([]string{f})
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(dir, "events", name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			ev, err := templates.DecodeEvent(raw)
			if err != nil {
				t.Fatal(err)
			}
			mode, err := c.Validate(&ev)
			if err != nil || mode == "" || mode == catalog.ModeOff {
				t.Fatalf("example event: mode %q, %v", mode, err)
			}
			e, _ := c.Entity(ev.Entity)
			if err := e.Check(&ev); err != nil {
				t.Fatal(err)
			}
			bad := ev
			bad.Event += "x"
			if err := e.Check(&bad); err == nil {
				t.Fatal("an unknown event name fits")
			}
			opts := triggers.LoadOptions{Actions: reg, Catalog: c, LookupEnv: func(k string) (string, bool) {
				if strings.HasSuffix(k, "_SECRET") { // the examples sign: a whsec_ value
					return "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", true
				}
				return "x", true
			}}
			rules, err := triggers.LoadPaths([]string{filepath.Join(dir, "rules", name+".yaml")}, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(rules) == 0 {
				t.Fatal("no rules")
			}
			for _, r := range rules {
				for _, en := range r.On.Entities {
					if _, ok := c.Entity(en); !ok {
						t.Errorf("rule %s: entity %s is not in the catalog, so the rule was not checked against it", r.Name, en)
					}
				}
			}
		})
	}
}
