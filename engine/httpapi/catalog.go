package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
	"github.com/erpflow/erpflow/triggers/catalog"
)

// catalogState is the event catalog in force: the config's files and the
// one written through the API (stored in the database, shared by every
// process), combined. It implements triggers.Catalog for the rule loader.
type catalogState struct {
	paths []string
	store engine.CatalogStore // nil when the store cannot keep one
	log   *slog.Logger

	mu     sync.Mutex // serialises loads and writes
	files  *catalog.Catalog
	api    *catalog.Catalog
	apiRec engine.CatalogRecord

	cur atomic.Pointer[catalog.Catalog] // files and API combined

	warned sync.Map // "entity/event" → time of the last log of an invalid event
}

var _ triggers.Catalog = (*catalogState)(nil)

func (cs *catalogState) Entities() []string { return cs.cur.Load().Entities() }
func (cs *catalogState) Events(entity string) ([]string, bool) {
	return cs.cur.Load().Events(entity)
}
func (cs *catalogState) CheckPath(entity, path string) (bool, string) {
	return cs.cur.Load().CheckPath(entity, path)
}

// newCatalogState loads the catalog files and the stored catalog. A bad
// file is an error; a stored catalog that does not load is logged and
// left out (files and rules keep working).
func newCatalogState(ctx context.Context, paths []string, store engine.Store, log *slog.Logger) (*catalogState, error) {
	cs := &catalogState{paths: paths, log: log}
	cs.store, _ = store.(engine.CatalogStore)
	files, err := cs.loadFiles()
	if err != nil {
		return nil, err
	}
	cs.files = files
	cs.combine()
	if err := cs.refresh(ctx); err != nil {
		return nil, err
	}
	return cs, nil
}

func (cs *catalogState) loadFiles() (*catalog.Catalog, error) {
	if len(cs.paths) == 0 {
		return nil, nil
	}
	c, err := catalog.LoadPaths(cs.paths)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return c, nil
}

// combine sets the catalog in force; cs.mu is held or cs not yet shared.
func (cs *catalogState) combine() {
	c, shadowed := catalog.Combine(cs.files, cs.api)
	if len(shadowed) > 0 {
		cs.log.Warn("entities of the catalog written through the API are also in catalog files; the files' win", "entities", shadowed)
	}
	cs.cur.Store(c)
}

// refresh reads the stored catalog and applies it when its version
// changed (this process or another wrote it).
func (cs *catalogState) refresh(ctx context.Context) error {
	if cs.store == nil {
		return nil
	}
	rec, err := cs.store.GetCatalog(ctx)
	if err != nil {
		return fmt.Errorf("reading the catalog: %w", err)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if rec.Version == cs.apiRec.Version {
		return nil
	}
	cs.apiRec = rec
	cs.api = nil
	if rec.Source != "" {
		c, err := catalog.Parse("", []byte(rec.Source))
		if err != nil {
			cs.log.Warn("the stored catalog does not load; it is left out", "version", rec.Version, "error", err)
		} else {
			cs.api = c
		}
	}
	cs.combine()
	return nil
}

// reloadFiles reads the catalog files again and puts them in force,
// returning a function that puts the previous ones back (when the rules
// do not reload against the new ones). On error nothing changes.
func (cs *catalogState) reloadFiles() (undo func(), err error) {
	files, err := cs.loadFiles()
	if err != nil {
		return nil, err
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	prev := cs.files
	cs.files = files
	cs.combine()
	return func() {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		cs.files = prev
		cs.combine()
	}, nil
}

// catalogView is GET /v1/catalog and the answer of PUT.
type catalogView struct {
	Version int64 `json:"version"` // of the catalog written through the API; 0 when none
	// Files are the config's catalog paths; nil (left out) for
	// tenant-bound tokens.
	Files    *[]string         `json:"files,omitempty"`
	Entities []*catalog.Entity `json:"entities"`
	Warnings []string          `json:"warnings,omitempty"`
}

// catalogView is the catalog in force as p may see it.
func (s *Server) catalogView(p *principal) catalogView {
	cs := s.catalog
	cs.mu.Lock() // one consistent version, files and catalog in force
	v, files, cur := cs.apiRec.Version, cs.files, cs.cur.Load()
	cs.mu.Unlock()
	entities := nonNil(cur.All())
	if p.Bound {
		// Paths on the server's disk are the installation's: a tenant
		// learns only whether an entity comes from a file or the API.
		return catalogView{Version: v, Entities: withoutPaths(entities, files)}
	}
	paths := nonNil(cs.paths)
	return catalogView{Version: v, Files: &paths, Entities: entities}
}

// withoutPaths returns copies of entities whose Source is "file" (an
// entity of files) or "api".
func withoutPaths(entities []*catalog.Entity, files *catalog.Catalog) []*catalog.Entity {
	out := make([]*catalog.Entity, len(entities))
	for i, e := range entities {
		c := *e
		c.Source = "api"
		if f, ok := files.Entity(e.Name); ok && f == e {
			c.Source = "file"
		}
		out[i] = &c
	}
	return out
}

func (s *Server) getCatalog(w http.ResponseWriter, r *http.Request) {
	if err := s.catalog.refresh(r.Context()); err != nil {
		writeError(w, internal(err))
		return
	}
	v := s.catalogView(principalFrom(r.Context()))
	w.Header().Set("ETag", etag(v.Version))
	writeJSON(w, http.StatusOK, v)
}

// putCatalog replaces the catalog written through the API. It is the
// installation's, not a tenant's: tenant-bound tokens may not.
func (s *Server) putCatalog(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if p.Bound {
		writeError(w, errf(http.StatusForbidden, "forbidden", "", "the catalog is the installation's: writing it needs a token not bound to a tenant"))
		return
	}
	cs := s.catalog
	if cs.store == nil {
		writeError(w, errf(http.StatusNotImplemented, "not_implemented", "", "this store cannot keep a catalog"))
		return
	}
	ver, err := ifMatch(r)
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := readBody(w, r, catalog.MaxBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	c, err := catalog.Parse("", body)
	if err != nil {
		writeError(w, catalogError(err))
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, name := range c.Entities() {
		if e, ok := cs.files.Entity(name); ok {
			writeError(w, errf(http.StatusConflict, "conflict", "catalog", "entity %q is declared by the catalog file %s; change it there", name, e.Source))
			return
		}
	}
	combined, err := catalog.Merge(cs.files, c)
	if err != nil {
		writeError(w, badRequest("catalog", "%v", err))
		return
	}
	if ver >= 0 && ver != cs.apiRec.Version {
		// Checked again by the store, which also sees other processes.
		writeError(w, errf(http.StatusConflict, "conflict", "If-Match", "the catalog is at version %d, not %d", cs.apiRec.Version, ver))
		return
	}
	if ver < 0 {
		ver = cs.apiRec.Version // a write based on what this process has
	}
	rec, err := cs.store.PutCatalog(r.Context(), string(body), ver)
	if err != nil {
		if errors.Is(err, engine.ErrConflict) {
			writeError(w, errf(http.StatusConflict, "conflict", "If-Match", "the catalog changed since it was read (another process wrote it); read it again: %v", err))
			return
		}
		writeError(w, internal(err))
		return
	}
	cs.apiRec, cs.api = rec, c
	cs.cur.Store(combined)
	paths := nonNil(cs.paths)
	v := catalogView{Version: rec.Version, Files: &paths, Entities: nonNil(combined.All()),
		Warnings: s.rules.misfits(combined)}
	w.Header().Set("ETag", etag(rec.Version))
	writeJSON(w, http.StatusOK, v)
}

// catalogError is the 400 of a catalog body that does not load, naming
// line:col and the field of each problem.
func catalogError(err error) *apiError {
	var es catalog.Errors
	if !errors.As(err, &es) {
		var e *catalog.Error
		if errors.As(err, &e) {
			es = catalog.Errors{e}
		}
	}
	if len(es) == 0 {
		return badRequest("catalog", "%v", err)
	}
	details := make([]errorDetail, len(es))
	for i, e := range es {
		details[i] = errorDetail{Field: e.Path, Line: e.Line, Column: e.Column, Message: e.Msg}
	}
	ae := &apiError{Status: http.StatusBadRequest, Code: "invalid_catalog", Field: details[0].Field,
		Message: "the catalog was not changed: " + err.Error(), Details: details}
	return ae
}

// misfits lists the rules in force that do not load against cat, one
// line each, for the answer of PUT /v1/catalog: they stay in force, but
// file rules will not reload and API rules will not be written until they
// fit.
func (m *ruleManager) misfits(cat *catalog.Catalog) []string {
	var out []string
	if len(m.paths) > 0 {
		opts := m.opts
		opts.Catalog = cat
		if _, err := triggers.LoadPaths(m.paths, opts); err != nil {
			out = append(out, strings.Split(err.Error(), "\n")...)
		}
	}
	m.mu.Lock()
	recs := make([]engine.RuleRecord, 0, len(m.api))
	for _, ar := range m.api {
		if ar.err == nil {
			recs = append(recs, ar.rec)
		}
	}
	m.mu.Unlock()
	opts := m.apiOpts
	opts.Catalog = cat
	for _, rec := range recs {
		if _, err := triggers.ParseRule("rule "+rec.Name, []byte(rec.Source), opts); err != nil {
			out = append(out, strings.Split(err.Error(), "\n")...)
		}
	}
	return out
}

// validateEvent checks ev against the catalog at ingest. It returns the
// error to refuse the event with (mode reject); in mode warn the event
// is counted and logged (at most once a minute per entity and event) and
// accepted.
func (s *Server) validateEvent(ev *engine.Event, field func(string) string) error {
	cat := s.catalog.cur.Load()
	if cat.Len() == 0 {
		return nil
	}
	mode, err := cat.Validate((*templates.Event)(ev))
	if err == nil {
		return nil
	}
	var ve *catalog.ValidationError
	path := ""
	if errors.As(err, &ve) {
		path = ve.Path
	}
	if mode == catalog.ModeReject {
		f := field(path)
		return badRequest(f, "%s: %s (the catalog's validation of entity %q is reject)", f, strings.TrimPrefix(err.Error(), path+": "), ev.Entity)
	}
	label := ev.Event
	if path == "event" {
		label = "unknown" // label values stay within the catalog's names
	}
	if s.opts.Metrics != nil {
		s.opts.Metrics.eventInvalid(ev.Entity, label)
	}
	key := ev.Entity + "/" + label
	now := time.Now()
	if last, ok := s.catalog.warned.Load(key); !ok || now.Sub(last.(time.Time)) >= time.Minute {
		s.catalog.warned.Store(key, now)
		s.log.Warn("event does not fit the catalog; accepted (validation: warn)", "entity", ev.Entity, "event", ev.Event,
			"tenant", ev.Tenant, "id", ev.ID, "problem", err.Error())
	}
	return nil
}
