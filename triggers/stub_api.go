package triggers

// This file is a stub of the package API that other packages build
// against; the triggers implementation replaces it.

import (
	"github.com/erpflow/erpflow/templates"
)

// LoadOptions configures loading. Zero values mean defaults.
type LoadOptions struct {
	// Actions decodes action configs. Default: none (any action type is
	// an error).
	Actions ActionDecoder
	// LookupEnv resolves ${NAME} in strings. Default os.LookupEnv.
	LookupEnv func(name string) (string, bool)
	// DisabledByDefault makes rules without an `enabled` key disabled (rules
	// created through the API). Default false: enabled.
	DisabledByDefault bool
}

// SetOptions configures a Set. Zero values mean defaults.
type SetOptions struct {
	// OnEvalError is told about a condition that failed at run time (the
	// rule did not match). Default: ignored.
	OnEvalError func(rule string, err error)
}

// Set is an immutable, indexed set of rules, safe for concurrent matching.
type Set struct{}

// Explanation says whether a rule matched an event and, if not, why.
type Explanation struct {
	Rule    *Rule
	Matched bool
	Reason  string
}

// DefaultRetry is the policy of rules that name none.
var DefaultRetry = Retry{Kind: RetryDefault}

func NewSet(rules []*Rule, opts SetOptions) (*Set, error)                    { panic("TODO") }
func (s *Set) Rules() []*Rule                                                { panic("TODO") }
func (s *Set) Rule(name string) *Rule                                        { panic("TODO") }
func (s *Set) Match(ev *templates.Event, dst []*Rule) []*Rule                { panic("TODO") }
func (s *Set) Explain(ev *templates.Event) []Explanation                     { panic("TODO") }
func (r Retry) String() string                                               { panic("TODO") }
func ParseRetry(s string) (Retry, error)                                     { panic("TODO") }
func LoadPaths(paths []string, opts LoadOptions) ([]*Rule, error)            { panic("TODO") }
func Parse(filename string, src []byte, opts LoadOptions) ([]*Rule, error)   { panic("TODO") }
func ParseRule(filename string, src []byte, opts LoadOptions) (*Rule, error) { panic("TODO") }
