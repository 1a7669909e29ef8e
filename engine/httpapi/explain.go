package httpapi

import (
	"net/http"
	"time"

	"github.com/erpflow/erpflow/engine/explain"
	"github.com/erpflow/erpflow/triggers"
)

// explainEvent is POST /v1/events:explain: the rules in force that apply
// to the caller, each matched or why not, and what matched rules would
// send. It changes nothing: no event is stored, nothing is sent, no
// cool-down begins, no metric of accepted events counts it.
//
// The event is read as POST /v1/events reads it, with the same errors; a
// tenant-bound token's event is of its tenant (another tenant is a 403)
// and it sees exactly the rules it may GET: those scoped to its tenant
// alone. Rules of every tenant, or shared with other tenants, are the
// operator's: their conditions, files and URLs are not a tenant's to read.
//
// The answer says whether the event fits the catalog in force, as ingest
// would judge it (the catalog is the installation's, the same for every
// token). An event ingest would refuse is explained as if accepted.
func (s *Server) explainEvent(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	body, err := readBody(w, r, s.opts.MaxEventBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	ev, err := decodeEvent(p, body, func(f string) string { return f })
	if err != nil {
		writeError(w, err)
		return
	}
	now := time.Now()
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = now.UTC() // as Emit stamps the time received
	}
	set := s.eng.Rules()
	visible := func(rule *triggers.Rule) bool { return p.seesRule(rule.Tenants) }
	keep := visible
	if name := r.URL.Query().Get("rule"); name != "" {
		if rule := set.Rule(name); rule == nil || !visible(rule) {
			writeError(w, notFound("rule", name))
			return
		}
		keep = func(rule *triggers.Rule) bool { return rule.Name == name }
	}
	res, err := explain.Explain(set, &ev, explain.Options{Keep: keep, Catalog: s.catalog.cur.Load(), Now: now})
	if err != nil {
		writeError(w, internal(err))
		return
	}
	s.env.mask(res)
	for i := range res.Rules {
		res.Rules[i].File = shownFile(p, res.Rules[i].File)
	}
	writeJSON(w, http.StatusOK, res)
}
