package httpapi

import (
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// activityMaxAttempts bounds the attempts GET /v1/activity reads: the
// most recent ones, newest first; when the window holds more, the answer
// says it is not fully covered.
const activityMaxAttempts = 10000

// activityMaxSpan bounds the attempt log (in Seq numbers, all tenants) one
// answer walks back through for a tenant-scoped read, so that a tenant
// with few attempts on a busy server does not read the whole log.
const activityMaxSpan = 100000

// activityChunk is how far back (in Seq numbers) one read of the walk goes.
const activityChunk = 2000

// Activity is the answer of GET /v1/activity.
type Activity struct {
	Since         time.Time            `json:"since"`
	Until         time.Time            `json:"until"`
	WindowSeconds int64                `json:"window_seconds"`
	Covered       bool                 `json:"covered"`       // every attempt of the window was read
	AttemptsRead  int                  `json:"attempts_read"` // the attempts the figures are of
	Attempts      map[string]int       `json:"attempts"`      // by outcome: succeeded, retryable, permanent
	Results       map[string]int       `json:"results"`       // by the state the delivery went to: succeeded, failed, dead
	SuccessRate   *float64             `json:"success_rate"`  // succeeded attempts / attempts; nil when none
	PerMinute     []ActivityMinute     `json:"per_minute"`
	Failing       []FailingDestination `json:"failing_destinations"`
	Tenant        *string              `json:"tenant,omitempty"` // when the figures are of one tenant
}

// ActivityMinute is one minute of GET /v1/activity: the attempts that
// started in it, by the state their delivery went to.
type ActivityMinute struct {
	Minute    time.Time `json:"minute"`
	Succeeded int       `json:"succeeded"`
	Failed    int       `json:"failed"`
	Dead      int       `json:"dead"`
}

// FailingDestination is a destination whose latest attempt in the window
// failed.
type FailingDestination struct {
	Destination string    `json:"destination"` // scheme://host[:port]
	Failures    int       `json:"failures"`    // failed attempts in the window
	Attempts    int       `json:"attempts"`    // all attempts in the window
	LastCode    int       `json:"last_code"`
	LastError   string    `json:"last_error,omitempty"`
	LastAt      time.Time `json:"last_at"`
	Rule        string    `json:"rule"` // of the latest attempt
}

// activity is GET /v1/activity: the figures /metrics has (attempts by
// outcome, results by state), per tenant and over a window, read from the
// attempt log.
func (s *Server) activity(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q := r.URL.Query()
	if err := checkParams(q, "window", "tenant"); err != nil {
		writeError(w, err)
		return
	}
	window := time.Hour
	if v := q.Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute || d > 24*time.Hour {
			writeError(w, badRequest("window", "must be a duration from 1m to 24h (1h, 15m), not %q", v))
			return
		}
		window = d.Truncate(time.Minute)
	}
	f := engine.AttemptFilter{Tenant: q.Get("tenant"), TenantSet: q.Has("tenant")}
	if p.Bound {
		if f.TenantSet && f.Tenant != p.Tenant {
			writeError(w, errf(http.StatusForbidden, "forbidden", "tenant", "tenant: token %q sees only tenant %q", p.Name, p.Tenant))
			return
		}
		f.Tenant, f.TenantSet = p.Tenant, true
	}
	now := time.Now().UTC()
	end := now.Truncate(time.Minute).Add(time.Minute)
	since := end.Add(-window)
	recs, covered, err := s.recentAttempts(r, f, since)
	if err != nil {
		writeError(w, internal(err))
		return
	}
	mask := s.env.replacer()
	minutes := make([]ActivityMinute, int(window/time.Minute))
	for i := range minutes {
		minutes[i].Minute = since.Add(time.Duration(i) * time.Minute)
	}
	outcomes := map[string]int{"succeeded": 0, "retryable": 0, "permanent": 0}
	results := map[string]int{"succeeded": 0, "failed": 0, "dead": 0}
	dests := map[string]*FailingDestination{}
	var latest = map[string]bool{} // destination → its latest attempt failed
	// recs are newest first.
	for i := range recs {
		m := streamAttempt(&recs[i], mask) // as the stream shows it, not encoded
		outcomes[m.Outcome]++
		results[string(m.State)]++
		if k := int(m.StartedAt.Sub(since) / time.Minute); k >= 0 && k < len(minutes) {
			switch m.State {
			case engine.StateSucceeded:
				minutes[k].Succeeded++
			case engine.StateDead:
				minutes[k].Dead++
			default:
				minutes[k].Failed++
			}
		}
		dest := destination(m.URL)
		if dest == "" {
			continue
		}
		fd := dests[dest]
		if fd == nil {
			fd = &FailingDestination{Destination: dest, LastCode: m.Code, LastError: m.Error, LastAt: m.StartedAt, Rule: m.Rule}
			dests[dest] = fd
			latest[dest] = m.Outcome != "succeeded"
		}
		fd.Attempts++
		if m.Outcome != "succeeded" {
			fd.Failures++
		}
	}
	failing := []FailingDestination{}
	for d, fd := range dests {
		if latest[d] {
			failing = append(failing, *fd)
		}
	}
	sort.Slice(failing, func(i, j int) bool {
		if !failing[i].LastAt.Equal(failing[j].LastAt) {
			return failing[i].LastAt.After(failing[j].LastAt)
		}
		return failing[i].Destination < failing[j].Destination
	})
	out := Activity{Since: since, Until: end, WindowSeconds: int64(window / time.Second), Covered: covered,
		AttemptsRead: len(recs), Attempts: outcomes, Results: results, PerMinute: minutes, Failing: failing}
	if n := len(recs); n > 0 {
		rate := float64(outcomes["succeeded"]) / float64(n)
		out.SuccessRate = &rate
	}
	if f.TenantSet {
		out.Tenant = &f.Tenant
	}
	writeJSON(w, http.StatusOK, out)
}

// recentAttempts reads the attempts of f that started at or after since,
// newest first, walking the attempt log back from its end a chunk at a
// time; at most activityMaxAttempts of them and activityMaxSpan Seq
// numbers. covered is false when it stopped at a bound before since.
func (s *Server) recentAttempts(r *http.Request, f engine.AttemptFilter, since time.Time) ([]engine.AttemptRecord, bool, error) {
	ctx := r.Context()
	top, err := s.store.AttemptSeq(ctx)
	if err != nil {
		return nil, false, err
	}
	var out []engine.AttemptRecord
	for through := top; through > 0; through -= activityChunk {
		if top-through >= activityMaxSpan {
			return out, false, nil
		}
		var chunk []engine.AttemptRecord
		f.After, f.Through, f.Limit = max(0, through-activityChunk), through, 1000
		for {
			recs, err := s.store.ListAttempts(ctx, f)
			if err != nil {
				return nil, false, err
			}
			chunk = append(chunk, recs...)
			if len(recs) < f.Limit {
				break
			}
			f.After = recs[len(recs)-1].Seq
		}
		done := false
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i].Attempt.StartedAt.Before(since) {
				done = true
				continue
			}
			if len(out) == activityMaxAttempts {
				return out, false, nil
			}
			out = append(out, chunk[i])
		}
		if done {
			return out, true, nil
		}
	}
	return out, true, nil
}

// destination is scheme://host[:port] of a URL ("" when it has none).
func destination(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
