package catalog

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/erpflow/erpflow/templates"
)

var printer = message.NewPrinter(language.English)

// MaxProblems bounds ValidationError.Problems.
const MaxProblems = 20

// ValidationError says why an event does not fit the catalog. Path names
// the failing part of the event: "event" for an unknown event name,
// "data.amount", "previous.lines[2].sku".
type ValidationError struct {
	Entity string
	Event  string
	Path   string
	Msg    string
	More   int // further problems, not in Path and Msg
	// Problems are the problems found, sorted by path: the first is Path
	// and Msg, at most MaxProblems (More counts them all).
	Problems []Problem
}

// Problem is one failing part of an event.
type Problem struct {
	Path string `json:"path"`
	Msg  string `json:"message"`
}

func (e *ValidationError) Error() string {
	s := e.Path + ": " + e.Msg
	if e.More > 0 {
		s += fmt.Sprintf(" (and %d more)", e.More)
	}
	return s
}

// Validate checks ev against the catalog and returns the entity's
// validation mode with the problem found (a *ValidationError), if any.
// Events of entities the catalog does not have, and of entities whose
// mode is ModeOff, are not checked: Validate returns ("", nil) and
// (ModeOff, nil) for them.
func (c *Catalog) Validate(ev *templates.Event) (Mode, error) {
	e, ok := c.Entity(ev.Entity)
	if !ok {
		return "", nil
	}
	if e.Validation == ModeOff {
		return ModeOff, nil
	}
	return e.Validation, e.Check(ev)
}

// Check validates ev against e whatever e's mode: its event name, data,
// and previous (when the event has one).
func (e *Entity) Check(ev *templates.Event) error {
	if !slices.Contains(e.Events, ev.Event) {
		hint := ""
		if s := templates.Closest(ev.Event, e.Events); s != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", s)
		}
		return newValidationError(e.Name, ev.Event, []Problem{{Path: "event",
			Msg: fmt.Sprintf("unknown event %q of entity %q%s (the catalog has: %s)", ev.Event, e.Name, hint, strings.Join(e.Events, ", "))}})
	}
	if e.data != nil {
		var data any = ev.Data
		if ev.Data == nil {
			data = map[string]any{} // an event without data has empty data
		}
		if err := e.data.Validate(data); err != nil {
			return e.validationError(ev, "data", err)
		}
	}
	if ev.Previous != nil {
		s := e.previous
		if s == nil {
			s = e.data
		}
		if s != nil {
			if err := s.Validate(ev.Previous); err != nil {
				return e.validationError(ev, "previous", err)
			}
		}
	}
	return nil
}

func (e *Entity) validationError(ev *templates.Event, root string, err error) error {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return newValidationError(e.Name, ev.Event, []Problem{{Path: root, Msg: err.Error()}})
	}
	var leaves []Problem
	var walk func(v *jsonschema.ValidationError)
	walk = func(v *jsonschema.ValidationError) {
		if len(v.Causes) > 0 {
			for _, c := range v.Causes {
				walk(c)
			}
			return
		}
		p, m := describe(root, v)
		leaves = append(leaves, Problem{Path: p, Msg: m})
	}
	walk(ve)
	sort.SliceStable(leaves, func(i, j int) bool { return leaves[i].Path < leaves[j].Path })
	if len(leaves) == 0 {
		leaves = []Problem{{Path: root, Msg: "does not match the catalog's schema"}}
	}
	return newValidationError(e.Name, ev.Event, leaves)
}

// newValidationError describes problems (at least one) in one error.
func newValidationError(entity, event string, problems []Problem) *ValidationError {
	out := &ValidationError{Entity: entity, Event: event, Path: problems[0].Path, Msg: problems[0].Msg, More: len(problems) - 1}
	out.Problems = problems[:min(len(problems), MaxProblems):min(len(problems), MaxProblems)]
	return out
}

// describe turns one failing leaf into a path and a short message.
func describe(root string, v *jsonschema.ValidationError) (string, string) {
	path := root
	for _, t := range v.InstanceLocation {
		path = appendSeg(path, t)
	}
	switch k := v.ErrorKind.(type) {
	case *kind.Type:
		return path, fmt.Sprintf("expected %s, got %s", strings.Join(k.Want, " or "), k.Got)
	case *kind.Required:
		if len(k.Missing) > 0 {
			return appendSeg(path, k.Missing[0]), "required by the catalog's schema, missing"
		}
	case *kind.AdditionalProperties:
		if len(k.Properties) > 0 {
			return appendSeg(path, k.Properties[0]), "not allowed by the catalog's schema"
		}
	}
	return path, v.ErrorKind.LocalizedString(printer)
}

func appendSeg(path, t string) string {
	if t != "" && strings.Trim(t, "0123456789") == "" {
		return path + "[" + t + "]"
	}
	return path + "." + t
}
