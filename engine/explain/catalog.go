package explain

import (
	"errors"
	"fmt"
	"io"

	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers/catalog"
)

// Catalog says whether the event fits the event catalog, as ingest
// (POST /v1/events) judges it.
type Catalog struct {
	Entity string `json:"entity"`
	// Known: the catalog has the entity. Events of other entities are
	// accepted unchecked.
	Known bool `json:"known"`
	// DidYouMean is the catalog's entity that an unknown entity differs
	// from only in case or by one edit.
	DidYouMean string `json:"did_you_mean,omitempty"`
	// Mode is the entity's validation (reject, warn, off); "" when the
	// entity is unknown.
	Mode catalog.Mode `json:"mode,omitempty"`
	// Valid: the event fits the entity's events and schemas (checked in
	// mode off too, which ingest does not). True for unknown entities.
	Valid bool `json:"valid"`
	// Errors are the failing parts, sorted by path, at most
	// catalog.MaxProblems; More counts those left out.
	Errors []catalog.Problem `json:"errors,omitempty"`
	More   int               `json:"more,omitempty"`
	// WouldReject: ingest answers 400 to this event (mode reject and not
	// valid); nothing would be stored or delivered.
	WouldReject bool `json:"would_reject"`
}

// checkCatalog checks ev against cat; nil when cat is empty.
func checkCatalog(cat *catalog.Catalog, ev *templates.Event) *Catalog {
	if cat.Len() == 0 {
		return nil
	}
	out := &Catalog{Entity: ev.Entity, Valid: true}
	e, ok := cat.Entity(ev.Entity)
	if !ok {
		out.DidYouMean = templates.Closest(ev.Entity, cat.Entities())
		return out
	}
	out.Known, out.Mode = true, e.Validation
	err := e.Check(ev)
	if err == nil {
		return out
	}
	out.Valid = false
	out.WouldReject = e.Validation == catalog.ModeReject
	var ve *catalog.ValidationError
	if !errors.As(err, &ve) {
		out.Errors = []catalog.Problem{{Msg: err.Error()}}
		return out
	}
	out.Errors = ve.Problems
	out.More = ve.More + 1 - len(ve.Problems)
	return out
}

// printCatalog writes the catalog line of Print, and the further errors
// indented below it.
func printCatalog(w io.Writer, c *Catalog) {
	switch {
	case !c.Known:
		hint := ""
		if c.DidYouMean != "" {
			hint = fmt.Sprintf("; did you mean %q?", c.DidYouMean)
		}
		fmt.Fprintf(w, "catalog: entity %q is not in the catalog (accepted%s)\n", c.Entity, hint)
		return
	case c.Valid && c.Mode == catalog.ModeOff:
		fmt.Fprintf(w, "catalog: fits %s (validation off)\n", c.Entity)
		return
	case c.Valid:
		fmt.Fprintf(w, "catalog: fits %s\n", c.Entity)
		return
	case c.WouldReject:
		fmt.Fprint(w, "catalog: REJECTED at ingest: ")
	case c.Mode == catalog.ModeWarn:
		fmt.Fprintf(w, "catalog: does not fit %s (validation warn: accepted, counted and logged): ", c.Entity)
	default:
		fmt.Fprintf(w, "catalog: does not fit %s (validation off: accepted unchecked): ", c.Entity)
	}
	for i, e := range c.Errors {
		if i > 0 {
			fmt.Fprint(w, "  ")
		}
		fmt.Fprintln(w, problemText(e))
	}
	if c.More > 0 {
		fmt.Fprintf(w, "  (and %d more)\n", c.More)
	}
}

func problemText(p catalog.Problem) string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// undelivered is the end of Print's count line when ingest would refuse
// the event: the rules are explained as if it had been accepted.
func undelivered(res *Result) string {
	if res.Catalog == nil || !res.Catalog.WouldReject {
		return ""
	}
	return fmt.Sprintf(" as if accepted, but ingest refuses this event (validation reject of %s): nothing would be delivered", res.Catalog.Entity)
}
