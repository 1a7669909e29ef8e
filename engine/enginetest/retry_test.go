package enginetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// within reports whether got is want ±10% (the jitter).
func within(got, want time.Duration) bool {
	return got >= want*9/10 && got <= want*11/10
}

// TestRetryScheduleThenDead: a receiver that always fails gets exactly the
// policy's attempts ([5m, 10m]: 3), spaced by the schedule (±10% jitter),
// then the delivery is dead and raises erpflow.Delivery/dead, which a rule
// turns into an alert; the alert's own dead delivery raises nothing.
func TestRetryScheduleThenDead(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clk := newClock()
		failing := newReceiver(t)
		failing.status = func(string, int) int { return 500 }
		alerts := newReceiver(t)
		alerts.status = func(string, int) int { return 503 }
		rules := parseRules(t, "rules:"+hookRule("flaky", failing.URL, "{schedule: [5m, 10m]}")+fmt.Sprintf(`
  - name: alert-on-dead
    on: {entity: erpflow.Delivery, event: dead}
    retry: none
    actions:
      - type: webhook
        url: %s/alert
        secret: %s
`, alerts.URL, testSecret))
		e := newEngine(t, st, rules, engine.Config{Now: clk.Now})
		ctx := context.Background()
		res, err := e.Emit(ctx, order("r1"))
		if err != nil {
			t.Fatal(err)
		}
		id := res.Deliveries[0].ID
		if res.Deliveries[0].Retry != "schedule:5m0s,10m0s" {
			t.Fatalf("retry text %q", res.Deliveries[0].Retry)
		}
		var runAts []time.Time
		for n, want := range []time.Duration{5 * time.Minute, 10 * time.Minute} {
			d := waitDelivery(t, st, id, fmt.Sprintf("failed after attempt %d", n+1), func(d engine.Delivery) bool {
				return d.State == engine.StateFailed && d.Attempts == n+1
			})
			if gap := d.RunAt.Sub(clk.Now()); !within(gap, want) {
				t.Fatalf("after attempt %d: next run in %s, want %s ±10%%", n+1, gap, want)
			}
			if d.LastCode != 500 {
				t.Fatalf("last code %d", d.LastCode)
			}
			if failing.count(id) != n+1 {
				t.Fatalf("receiver saw %d requests after attempt %d", failing.count(id), n+1)
			}
			runAts = append(runAts, d.RunAt)
			clk.Set(d.RunAt) // time passes: the retry is due
		}
		d := waitDelivery(t, st, id, "dead", func(d engine.Delivery) bool { return d.State == engine.StateDead })
		if d.Attempts != 3 {
			t.Fatalf("dead after %d attempts, want 3", d.Attempts)
		}
		_, atts, err := st.GetDelivery(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(atts) != 3 {
			t.Fatalf("%d attempts recorded, want 3", len(atts))
		}
		for i, a := range atts {
			if a.N != i+1 || a.Outcome != "retryable" || a.Code != 500 {
				t.Fatalf("attempt %d: %+v", i+1, a)
			}
			if i > 0 && !a.StartedAt.Equal(runAts[i-1]) {
				t.Fatalf("attempt %d started %s, want its run time %s", i+1, a.StartedAt, runAts[i-1])
			}
		}

		// The dead event and the alert it caused.
		dead, err := st.GetEvent(ctx, "acme", "dead:"+id)
		if err != nil {
			t.Fatalf("dead event: %v", err)
		}
		if dead.Event.Entity != "erpflow.Delivery" || dead.Event.Event != "dead" || dead.Event.EntityID != id || !dead.Internal {
			t.Fatalf("dead event %+v", dead.Event)
		}
		for k, want := range map[string]any{"delivery_id": id, "rule": "flaky", "event_id": "r1", "attempts": 3, "last_code": 500, "url": failing.URL} {
			if got := dead.Event.Data[k]; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("dead event data %s = %v, want %v", k, got, want)
			}
		}
		if len(dead.Deliveries) != 1 || !dead.Deliveries[0].Internal || dead.Deliveries[0].Rule != "alert-on-dead" {
			t.Fatalf("dead event deliveries %+v", dead.Deliveries)
		}
		alertID := dead.Deliveries[0].ID
		waitDelivery(t, st, alertID, "dead", func(d engine.Delivery) bool { return d.State == engine.StateDead })
		if !strings.Contains(string(alerts.body(alertID)), id) {
			t.Fatalf("alert body does not name the dead delivery: %s", alerts.body(alertID))
		}
		// Internal deliveries never raise again: no loop.
		if _, err := st.GetEvent(ctx, "acme", "dead:"+alertID); !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("the alert's dead delivery raised an event: %v", err)
		}
		// Nothing more happens however far the clock moves.
		clk.Set(clk.Now().Add(48 * time.Hour))
		rs, err := e.EmitBatch(ctx, []engine.Event{order("later")})
		if err != nil {
			t.Fatal(err)
		}
		waitDelivery(t, st, rs[0].Deliveries[0].ID, "attempted", func(d engine.Delivery) bool { return d.Attempts == 1 && d.State == engine.StateFailed })
		if failing.count(id) != 3 || alerts.count(alertID) != 1 {
			t.Fatalf("more attempts after dead: %d, alert %d", failing.count(id), alerts.count(alertID))
		}

		// Retry by hand: a fresh round of the policy, same id.
		if err := e.Retry(ctx, id); err != nil {
			t.Fatal(err)
		}
		d = waitDelivery(t, st, id, "failed after a manual retry", func(d engine.Delivery) bool {
			return d.Attempts == 4 && d.State == engine.StateFailed
		})
		if gap := d.RunAt.Sub(clk.Now()); !within(gap, 5*time.Minute) {
			t.Fatalf("manual retry: next run in %s, want the policy's first delay", gap)
		}
	})
}

// TestRetryThenSucceed: fails twice (503), then succeeds on the third
// attempt; Retry-After from the receiver stretches the wait.
func TestRetryThenSucceed(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clk := newClock()
		rv := newReceiver(t)
		rv.status = func(_ string, n int) int {
			if n <= 2 {
				return 503
			}
			return 204
		}
		rules := parseRules(t, "rules:"+hookRule("flaky", rv.URL, "{schedule: [1m, 1m, 1m, 1m]}"))
		e := newEngine(t, st, rules, engine.Config{Now: clk.Now})
		res, err := e.Emit(context.Background(), order("t1"))
		if err != nil {
			t.Fatal(err)
		}
		id := res.Deliveries[0].ID
		for n := 1; n <= 2; n++ {
			d := waitDelivery(t, st, id, "failed", func(d engine.Delivery) bool {
				return d.State == engine.StateFailed && d.Attempts == n
			})
			clk.Set(d.RunAt)
		}
		d := waitDelivery(t, st, id, "succeeded", func(d engine.Delivery) bool { return d.State == engine.StateSucceeded })
		if d.Attempts != 3 || rv.count(id) != 3 || d.LastCode != 204 {
			t.Fatalf("succeeded after %d attempts, %d requests, code %d", d.Attempts, rv.count(id), d.LastCode)
		}
	})
}

// TestRetryAfterHonoured: a 429 with Retry-After: 3600 delays the retry an
// hour although the policy says a minute.
func TestRetryAfterHonoured(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		clk := newClock()
		rv := newReceiver(t)
		rv.Config.Handler = retryAfterHandler(rv)
		rules := parseRules(t, "rules:"+hookRule("busy", rv.URL, "{schedule: [1m, 1m]}"))
		e := newEngine(t, st, rules, engine.Config{Now: clk.Now})
		res, err := e.Emit(context.Background(), order("ra"))
		if err != nil {
			t.Fatal(err)
		}
		d := waitDelivery(t, st, res.Deliveries[0].ID, "failed", func(d engine.Delivery) bool { return d.State == engine.StateFailed })
		if gap := d.RunAt.Sub(clk.Now()); gap < time.Hour || gap > time.Hour+time.Minute {
			t.Fatalf("next run in %s, want 1h (Retry-After)", gap)
		}
		if d.LastCode != 429 {
			t.Fatalf("last code %d", d.LastCode)
		}
	})
}

// TestPermanentFailure: 410 Gone makes the delivery dead at once.
func TestPermanentFailure(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		st := mustOpen(t, k.newDB(t))
		rv := newReceiver(t)
		rv.status = func(string, int) int { return 410 }
		rules := parseRules(t, "rules:"+hookRule("gone", rv.URL, "default"))
		e := newEngine(t, st, rules, engine.Config{})
		res, err := e.Emit(context.Background(), order("p1"))
		if err != nil {
			t.Fatal(err)
		}
		d := waitDelivery(t, st, res.Deliveries[0].ID, "dead", func(d engine.Delivery) bool { return d.State == engine.StateDead })
		if d.Attempts != 1 || d.LastCode != 410 {
			t.Fatalf("dead after %d attempts, code %d", d.Attempts, d.LastCode)
		}
	})
}
