package postgres_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/actions/webhook"
	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
	"github.com/erpflow/erpflow/triggers"
)

// commitCutter is a TCP proxy in front of PostgreSQL that, when armed,
// cuts the connection at the next COMMIT, as a network or a failover
// may, in one of three ways (cutMode).
type commitCutter struct {
	url   string // the database URL through the proxy
	armed atomic.Bool
	mode  atomic.Int32 // a cutMode
	// stmt, when set, arms the cut for the answer of the next statement
	// whose text holds it (run alone, it commits before its answer)
	// instead of a COMMIT; only cutAnswer.
	stmt atomic.Pointer[string]
	// gate, when set with stmt, holds the next run of that statement
	// after the cut (the store's retry) until it is closed.
	gate atomic.Pointer[chan struct{}]
	cut  atomic.Int32 // commits cut
	quit chan struct{}

	mu      sync.Mutex
	clients map[net.Conn]bool // open ones
	dark    bool              // blackout: refusing connections
}

// lightsOn ends a blackout.
func (c *commitCutter) lightsOn() {
	c.mu.Lock()
	c.dark = false
	c.mu.Unlock()
}

// darken cuts every connection and refuses new ones.
func (c *commitCutter) darken() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dark = true
	for conn := range c.clients {
		conn.Close()
	}
}

type cutMode int32

const (
	// cutAnswer lets the COMMIT through and cuts the connection when the
	// server answers it, before the answer reaches the client: the
	// transaction committed, the client sees a dropped connection.
	cutAnswer cutMode = iota
	// cutBefore cuts the connection instead of passing the COMMIT on:
	// the server sees the drop and rolls back.
	cutBefore
	// strand closes the client's side instead of passing the COMMIT on
	// and keeps the server's open, as a network that failed silently
	// towards the server: its process stays idle in the transaction.
	strand
	// blackout is cutAnswer, then every connection cut and new ones
	// refused until blackout is cleared: the database out of reach.
	blackout
)

func newCommitCutter(t *testing.T, dbURL string) *commitCutter {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Query().Get("sslmode") != "disable" {
		t.Skip("the proxy reads the wire protocol in the clear: TEST_DATABASE_URL needs sslmode=disable")
	}
	server := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &commitCutter{quit: make(chan struct{}), clients: map[net.Conn]bool{}}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); close(c.quit); conns.Wait() })
	u.Host = ln.Addr().String()
	c.url = u.String()
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			dark := c.dark
			if !dark {
				c.clients[client] = true
			}
			c.mu.Unlock()
			if dark {
				client.Close()
				continue
			}
			conns.Go(func() {
				c.relay(client, server)
				c.mu.Lock()
				delete(c.clients, client)
				c.mu.Unlock()
			})
		}
	}()
	return c
}

// relay carries one connection, parsing the protocol's messages (type
// byte and length; the startup message has no type byte) to find a
// COMMIT and the server's CommandComplete after it.
func (c *commitCutter) relay(client net.Conn, server string) {
	defer client.Close()
	up, err := net.Dial("tcp", server)
	if err != nil {
		return
	}
	defer up.Close()
	var cutNext atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer client.Close()
		for {
			msg, err := readMessage(up, true)
			if err != nil {
				return
			}
			if msg[0] == 'C' && cutNext.Load() {
				c.cut.Add(1)
				up.Close()
				if cutMode(c.mode.Load()) == blackout {
					c.darken()
				}
				return
			}
			if _, err := client.Write(msg); err != nil {
				return
			}
		}
	}()
	first := true
	parsed := map[string]string{} // statement name → text
	for {
		msg, err := readMessage(client, !first)
		if err != nil {
			break
		}
		first = false
		stmt := c.stmt.Load()
		switch {
		case msg[0] == 'P': // Parse: name, text
			f := bytes.SplitN(msg[5:], []byte{0}, 3)
			if len(f) == 3 {
				parsed[string(f[0])] = string(f[1])
			}
		case msg[0] == 'B' && stmt != nil: // Bind: portal, statement
			f := bytes.SplitN(msg[5:], []byte{0}, 3)
			if len(f) != 3 || !strings.Contains(parsed[string(f[1])], *stmt) {
				break
			}
			if c.armed.CompareAndSwap(true, false) {
				cutNext.Store(true)
			} else if g := c.gate.Load(); g != nil && c.cut.Load() > 0 {
				<-*g
			}
		}
		if msg[0] == 'Q' && stmt == nil && bytes.EqualFold(bytes.TrimRight(msg[5:], "\x00; "), []byte("COMMIT")) && c.armed.CompareAndSwap(true, false) {
			switch cutMode(c.mode.Load()) {
			case cutBefore:
				c.cut.Add(1)
				up.Close()
				<-done
				return
			case strand:
				c.cut.Add(1)
				client.Close()
				select {
				case <-done: // the server ended its process
				case <-c.quit:
				}
				return
			}
			cutNext.Store(true)
		}
		if _, err := up.Write(msg); err != nil {
			break
		}
	}
	up.Close()
	<-done
}

// readMessage reads one protocol message, with its type byte when typed.
func readMessage(r io.Reader, typed bool) ([]byte, error) {
	head := 4
	if typed {
		head = 5
	}
	msg := make([]byte, head)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(msg[head-4:]))
	if n < 4 || n > 1<<30 {
		return nil, io.ErrUnexpectedEOF
	}
	msg = append(msg, make([]byte, n-4)...)
	_, err := io.ReadFull(r, msg[head:])
	return msg, err
}

// TestCommitAnswerLost: every write whose second run would answer
// differently, or undo what came between, tells from the database
// whether a COMMIT whose answer the network lost committed (TxOnce),
// rather than running again. Before, a rule created so came back as
// "rule exists" (an API's 409 for its own write), a delete as not found,
// a rerun's deliveries as a duplicate key, a requeue as 0 requeued, a
// destination's pause, probe and resume as done by another process.
func TestCommitAnswerLost(t *testing.T) {
	u := freshSchema(t)
	cc := newCommitCutter(t, u)
	s := open(t, cc.url)
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now().UTC()
	// lose runs op with its COMMIT cut as mode says, and reports op's
	// error.
	lose := func(t *testing.T, mode cutMode, op func() error) {
		t.Helper()
		cc.mode.Store(int32(mode))
		cut := cc.cut.Load()
		cc.armed.Store(true)
		err := op()
		if cc.armed.Swap(false) || cc.cut.Load() != cut+1 {
			t.Fatal("no commit was cut (the test's proxy missed it)")
		}
		if err != nil {
			t.Errorf("with its commit's answer lost: %v", err)
		}
	}
	// claim claims every due delivery for owner w.
	claim := func(t *testing.T) []engine.Delivery {
		t.Helper()
		now = now.Add(time.Second)
		ds, err := s.Claim(ctx, "w", 100, now, time.Minute)
		if err != nil || len(ds) == 0 {
			t.Fatalf("claim: %d, %v", len(ds), err)
		}
		return ds
	}

	// givenBack checks that ds, claimed, are pending again, their claims'
	// attempts undone, once.
	givenBack := func(t *testing.T, after string, ds []engine.Delivery) {
		t.Helper()
		for _, d := range ds {
			got, _, err := s.GetDelivery(ctx, d.ID)
			if err != nil || got.State != engine.StatePending || got.Attempts != d.Attempts-1 {
				t.Errorf("delivery %s after the %s: %s, attempts %d (claimed at %d), %v", d.ID, after, got.State, got.Attempts, d.Attempts, err)
			}
		}
	}
	idsOf := func(ds []engine.Delivery) []string {
		ids := make([]string, len(ds))
		for i := range ds {
			ids[i] = ds[i].ID
		}
		return ids
	}

	t.Run("create a rule", func(t *testing.T) {
		var r engine.RuleRecord
		lose(t, cutAnswer, func() (err error) {
			r, err = s.PutRule(ctx, engine.RuleRecord{Name: "created", Source: "x", Enabled: true}, 0)
			return err
		})
		if r.Version != 1 || r.ID == "" {
			t.Errorf("returned %+v, want version 1 with an id", r)
		}
	})
	t.Run("replace a rule at its version", func(t *testing.T) {
		r, err := s.PutRule(ctx, engine.RuleRecord{Name: "replaced", Source: "x"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		lose(t, cutAnswer, func() (err error) {
			r, err = s.PutRule(ctx, engine.RuleRecord{Name: "replaced", Source: "y"}, r.Version)
			return err
		})
		if r.Version != 2 {
			t.Errorf("version %d, want 2", r.Version)
		}
	})
	t.Run("delete a rule", func(t *testing.T) {
		r, err := s.PutRule(ctx, engine.RuleRecord{Name: "deleted", Source: "x"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		lose(t, cutAnswer, func() error { return s.DeleteRule(ctx, "deleted", r.ID) })
	})
	t.Run("create rules", func(t *testing.T) {
		lose(t, cutAnswer, func() error {
			_, err := s.CreateRules(ctx, []engine.RuleRecord{{Name: "many1", Source: "x"}, {Name: "many2", Source: "y"}})
			return err
		})
	})
	t.Run("write the catalog", func(t *testing.T) {
		var cat engine.CatalogRecord
		lose(t, cutAnswer, func() (err error) { cat, err = s.PutCatalog(ctx, "entities: {}", 0); return err })
		if cat.Version != 1 {
			t.Errorf("version %d, want 1", cat.Version)
		}
	})
	t.Run("rerun an event", func(t *testing.T) {
		if _, err := s.InsertEvents(ctx, []engine.EventRecord{record("rerun")}); err != nil {
			t.Fatal(err)
		}
		var added []engine.Delivery
		lose(t, cutAnswer, func() (err error) {
			added, err = s.AddDeliveries(ctx, "acme", "rerun", []engine.Delivery{{ID: "dlv_rerun_2", Rule: "r",
				ActionType: "webhook", Payload: []byte(`{}`), State: engine.StatePending, RunAt: now, CreatedAt: now}})
			return err
		})
		if len(added) != 1 {
			t.Errorf("added %d deliveries, want 1", len(added))
		}
	})
	t.Run("requeue", func(t *testing.T) {
		if _, err := s.InsertEvents(ctx, []engine.EventRecord{record("requeue")}); err != nil {
			t.Fatal(err)
		}
		var cs []engine.Completion
		for _, d := range claim(t) {
			cs = append(cs, engine.Completion{ID: d.ID, Owner: "w", State: engine.StateDead,
				Attempt: engine.Attempt{DeliveryID: d.ID, N: d.Attempts, StartedAt: now, Outcome: "failed"}})
		}
		if n, err := s.Complete(ctx, cs); err != nil || n != len(cs) {
			t.Fatalf("complete: %d, %v", n, err)
		}
		var requeued int
		lose(t, cutAnswer, func() (err error) {
			requeued, err = s.Requeue(ctx, nil, &engine.DeliveryFilter{States: []engine.State{engine.StateDead}}, now)
			return err
		})
		if requeued != len(cs) {
			t.Errorf("requeue said %d, want %d", requeued, len(cs))
		}
	})
	// A release (and a wait for a paused destination, below) runs again
	// after its COMMIT or its answer is lost: run again, it gives its
	// deliveries back once. What it could undo is a claim of the same
	// delivery by the same process in between, which the engine keeps
	// from happening (engine/enginetest TestReleaseRetryNeverUndoesAReclaim).
	for _, c := range []struct {
		name string
		mode cutMode
		id   string
	}{{"its COMMIT cut", cutBefore, "release1"}, {"its answer cut", cutAnswer, "release2"}} {
		mode, id := c.mode, c.id
		t.Run("release, "+c.name, func(t *testing.T) {
			if _, err := s.InsertEvents(ctx, []engine.EventRecord{record(id)}); err != nil {
				t.Fatal(err)
			}
			ds := claim(t)
			lose(t, mode, func() error { return s.Release(ctx, "w", idsOf(ds), now) })
			givenBack(t, "release", ds)
		})
	}
	t.Run("wait for a paused destination, its answer cut", func(t *testing.T) {
		if _, err := s.InsertEvents(ctx, []engine.EventRecord{record("waits")}); err != nil {
			t.Fatal(err)
		}
		ds := claim(t)
		dest := "https://paused.example.com"
		lose(t, cutAnswer, func() error { return s.WaitFor(ctx, "w", idsOf(ds), dest, now.Add(time.Hour)) })
		givenBack(t, "wait", ds)
		if n, err := s.WakeDestination(ctx, dest, now); err != nil || n != len(ds) {
			t.Errorf("woke %d (%v), want %d", n, err, len(ds))
		}
	})
	// A test-fire's record is an upsert: run again, it changes nothing.
	t.Run("a test-fire's record, run again", func(t *testing.T) {
		d := engine.Delivery{ID: "dlv_testfire", Tenant: "acme", EventID: "tf", Entity: "SalesOrder", EventName: "updated",
			Rule: "r", ActionType: "webhook", Payload: []byte(`{}`), Test: true, Attempts: 1}
		lose(t, cutAnswer, func() error {
			return s.AddAttempt(ctx, d, engine.Attempt{N: 1, StartedAt: now, Outcome: "succeeded", Code: 200})
		})
		_, atts, err := s.GetDelivery(ctx, d.ID)
		if err != nil || len(atts) != 1 {
			t.Errorf("the test-fire has %d attempts (%v), want 1", len(atts), err)
		}
	})
	// A COMMIT that never reached a server that did not see the client
	// go: its process waits in the transaction, holding its locks,
	// until TCP gives up (hours). The check ends it (only if still idle
	// in that transaction), the transaction aborts, and the write runs
	// again.
	t.Run("a COMMIT stranded", func(t *testing.T) {
		var r engine.RuleRecord
		lose(t, strand, func() (err error) {
			r, err = s.PutRule(ctx, engine.RuleRecord{Name: "stranded", Source: "x"}, 0)
			return err
		})
		if r.Version != 1 {
			t.Errorf("version %d, want 1", r.Version)
		}
	})
	// The database out of reach from the drop on: the write fails as
	// of unknown outcome, and is not run again (run again, it would
	// have failed as "exists" once the database came back).
	t.Run("the outcome unknown", func(t *testing.T) {
		postgres.SetCommitCheckFor(s, 300*time.Millisecond)
		defer postgres.SetCommitCheckFor(s, 0)
		defer cc.lightsOn()
		cc.mode.Store(int32(blackout))
		cut := cc.cut.Load()
		cc.armed.Store(true)
		_, err := s.PutRule(ctx, engine.RuleRecord{Name: "unknown", Source: "x"}, 0)
		if !errors.Is(err, engine.ErrOutcomeUnknown) || !errors.Is(err, engine.ErrUnavailable) || cc.cut.Load() != cut+1 {
			t.Fatalf("put rule with the database gone at its commit: %v, want ErrOutcomeUnknown and ErrUnavailable", err)
		}
		cc.lightsOn()
		rules, err := s.ListRules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(rules, func(r engine.RuleRecord) bool { return r.Name == "unknown" && r.Version == 1 }) {
			t.Errorf("rules %+v: the rule committed should be there, once", rules)
		}
	})
	t.Run("cancel and end timers", func(t *testing.T) {
		var ids []string
		for _, id := range []string{"timer1", "timer2"} {
			r := record(id)
			r.Event.EntityID = id
			r.Timers = []engine.Timer{{ID: "tmr_" + id, Kind: engine.TimerSchedule, Rule: "later", RuleID: "rul_later",
				Tenant: "acme", Entity: "SalesOrder", EntityID: id, EventID: id, FireAt: now, FirstAt: now,
				State: engine.TimerPending, Count: 1, Events: []string{id}, CreatedAt: now, UpdatedAt: now}}
			if _, err := s.InsertEvents(ctx, []engine.EventRecord{r}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, "tmr_"+id)
		}
		var cancelled engine.Timer
		lose(t, cutAnswer, func() (err error) { cancelled, err = s.CancelTimer(ctx, ids[0], "not wanted", now); return err })
		if cancelled.State != engine.TimerCancelled {
			t.Errorf("cancelled timer is %q", cancelled.State)
		}
		now = now.Add(time.Second)
		ts, err := s.ClaimTimers(ctx, "w", 10, now, time.Minute)
		if err != nil || len(ts) != 1 || ts[0].ID != ids[1] {
			t.Fatalf("claim timers: %+v, %v", ts, err)
		}
		var ended []bool
		lose(t, cutAnswer, func() (err error) {
			ended, err = s.EndTimers(ctx, []engine.TimerEnd{{ID: ts[0].ID, Owner: "w", Version: ts[0].Version,
				State: engine.TimerFired, Reason: "fired"}}, now)
			return err
		})
		if len(ended) != 1 || !ended[0] {
			t.Errorf("ended %v, want [true]", ended)
		}
	})
	t.Run("a destination's pause, probe, rules and resume", func(t *testing.T) {
		dest := "https://hooks.example.com"
		var did bool
		lose(t, cutAnswer, func() (err error) {
			did, err = s.PauseDestination(ctx, engine.DestinationState{Destination: dest, Failures: 20, PausedAt: now, NextProbeAt: now, UpdatedAt: now})
			return err
		})
		if !did {
			t.Error("pause: another process paused it, says the store")
		}
		lose(t, cutAnswer, func() (err error) {
			did, err = s.TakeProbe(ctx, dest, now, now.Add(time.Minute), time.Minute)
			return err
		})
		if !did {
			t.Error("probe: another process took it, says the store")
		}
		lose(t, cutAnswer, func() (err error) { did, err = s.ClaimDisable(ctx, dest, now.Add(time.Second), now); return err })
		if !did {
			t.Error("disabling its rules: another process claimed it, says the store")
		}
		lose(t, cutAnswer, func() (err error) { _, did, err = s.ResumeDestination(ctx, dest, now); return err })
		if !did {
			t.Error("resume: another process resumed it, says the store")
		}
	})
}

// TestCommitCheckAnswers: the check trusts the mark, not the id alone.
// After a server crash an id whose records never reached the disk may be
// given to another transaction: committed, it must not answer for the
// write whose mark is missing.
func TestCommitCheckAnswers(t *testing.T) {
	u := freshSchema(t)
	s := open(t, u)
	t.Cleanup(func() { s.Close() })
	db := rawDB(t, u)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// txid runs a transaction that takes an id and ends with end.
	txid := func(end string) int64 {
		t.Helper()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var id int64
		if err := tx.QueryRowContext(ctx, "SELECT txid_current()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		if end == "COMMIT" {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO commit_marks (token) VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	// A transaction still running (as one whose commit waits for a
	// synchronous standby: recorded, not yet shown) is not taken for
	// aborted, however long it takes: the outcome stays unknown.
	open, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Rollback()
	var running int64
	if err := open.QueryRowContext(ctx, "SELECT txid_current()").Scan(&running); err != nil {
		t.Fatal(err)
	}
	postgres.SetCommitCheckFor(s, 300*time.Millisecond)
	if got, err := postgres.CommitOutcome(ctx, s, 7, running); got || !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Errorf("a transaction still running: committed %v (%v), want the outcome unknown", got, err)
	}
	postgres.SetCommitCheckFor(s, 0)
	for _, c := range []struct {
		what  string
		token int64
		xid   int64
		want  bool
	}{
		{"marked", 42, txid("COMMIT"), true},
		{"an id another transaction committed, no mark", 7, txid("COMMIT"), false},
		{"an id that rolled back", 7, txid("ROLLBACK"), false},
		{"an id not given out yet", 7, txid("COMMIT") + 1000000, false},
	} {
		got, err := postgres.CommitOutcome(ctx, s, c.token, c.xid)
		if err != nil || got != c.want {
			t.Errorf("%s: committed %v (%v), want %v", c.what, got, err, c.want)
		}
	}
}

// emitRig is an engine over a store behind a commitCutter, whose rule
// posts each SalesOrder event to a receiver hooks times (one webhook
// action each); the receiver records each webhook's id, answering once
// open is closed.
type emitRig struct {
	e     *engine.Engine
	s     *postgres.Store
	cc    *commitCutter
	db    *sql.DB // straight to the database, not through the proxy
	open  chan struct{}
	first chan struct{} // a webhook arrived (buffered: the first)
	// failFirst, when set, fails the next webhook (500), once.
	failFirst atomic.Bool

	mu     sync.Mutex
	sent   map[string]int // webhook-id → requests
	handed []string       // deliveries completions handed to the workers
	// lateHanded are those of them handed by calls none of whose
	// completions applied: found from an earlier run's hand-over.
	lateHanded []string
}

// handRecorder is the rig's store: it records the deliveries that
// completions hand over.
type handRecorder struct {
	*postgres.Store
	r *emitRig
}

func (h handRecorder) CompleteAndClaim(ctx context.Context, cs []engine.Completion, owner string, limit int, lease time.Duration) (int, []engine.Delivery, error) {
	n, got, err := h.Store.CompleteAndClaim(ctx, cs, owner, limit, lease)
	h.r.mu.Lock()
	for _, d := range got {
		h.r.handed = append(h.r.handed, d.ID)
		if n == 0 {
			h.r.lateHanded = append(h.r.lateHanded, d.ID)
		}
	}
	h.r.mu.Unlock()
	return n, got, err
}

func newEmitRig(t *testing.T, hooks int, cfg engine.Config) *emitRig {
	t.Helper()
	return newRuleRig(t, func(url string) string {
		src := "rules:\n  - name: hook\n    on: {entity: SalesOrder}\n    actions:\n"
		for range hooks {
			src += "      - type: webhook\n        url: " + url + "\n        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n" // signed: webhook-id
		}
		return src
	}, cfg)
}

// newRuleRig is newEmitRig with the rules rules returns for the
// receiver's URL (its webhooks signed, for their webhook-id).
func newRuleRig(t *testing.T, rules func(url string) string, cfg engine.Config) *emitRig {
	t.Helper()
	u := freshSchema(t)
	r := &emitRig{cc: newCommitCutter(t, u), open: make(chan struct{}), first: make(chan struct{}, 1), sent: map[string]int{}}
	r.s = open(t, r.cc.url)
	t.Cleanup(func() { r.s.Close() })
	r.db = rawDB(t, u)
	rv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.sent[req.Header.Get("webhook-id")]++
		r.mu.Unlock()
		select {
		case r.first <- struct{}{}:
		default:
		}
		select {
		case <-r.open:
		case <-req.Context().Done():
		}
		if r.failFirst.CompareAndSwap(true, false) {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(rv.Close)
	zero := 0
	reg := &actions.Registry{}
	if err := reg.Register("webhook", webhook.New(webhook.Options{AllowHTTP: true, AllowPrivateNetworks: true, QuickRetries: &zero})); err != nil {
		t.Fatal(err)
	}
	parsed, err := triggers.Parse("test.yaml", []byte(rules(rv.URL)), triggers.LoadOptions{Actions: reg})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Lease = 10 * time.Minute // what waits for its lease is never sent within the test
	cfg.Logger = slog.New(slog.DiscardHandler)
	if r.e, err = engine.New(handRecorder{r.s, r}, cfg); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Reload(parsed); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.e.Stop(ctx)
	})
	return r
}

// cutInsert arms the cut for the answer of the next event insert.
func (r *emitRig) cutInsert() {
	stmt := "INSERT INTO events"
	r.cc.stmt.Store(&stmt)
	r.cc.armed.Store(true)
}

// until polls query (one integer) on the database until it is at least
// want.
func (r *emitRig) until(t *testing.T, ctx context.Context, want int, what, query string, args ...any) {
	t.Helper()
	for {
		var n int
		if err := r.db.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n >= want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %d, want %d", what, n, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sentOnce checks that each of ids was sent once, and nothing else.
func (r *emitRig) sentOnce(t *testing.T, ids []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.sent[id] != 1 {
			t.Errorf("delivery %s sent %d times, want 1", id, r.sent[id])
		}
	}
	if len(r.sent) != len(ids) {
		t.Errorf("%d deliveries sent, want %d", len(r.sent), len(ids))
	}
}

// TestEmitAnswerLost: an event's insert is run again when its answer is
// lost (a second run creates nothing). The engine tells its own earlier
// run from another emit of the same event by the delivery ids it made:
// the caller is told the event was created, not "duplicate: true", and
// the deliveries the lost run took for this process's workers run now,
// once, not after their lease (ten minutes here).
func TestEmitAnswerLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ev := engine.Event{ID: "o1", Tenant: "acme", Entity: "SalesOrder", Event: "updated", Data: map[string]any{"n": 1}}

	t.Run("preclaimed", func(t *testing.T) {
		r := newEmitRig(t, 1, engine.Config{})
		close(r.open)
		r.cutInsert()
		res, err := r.e.Emit(ctx, ev)
		if r.cc.armed.Swap(false) || r.cc.cut.Load() != 1 {
			t.Fatal("no insert's answer was cut (the test's proxy missed it)")
		}
		if err != nil || len(res.Deliveries) != 1 {
			t.Fatalf("emit: %+v, %v", res, err)
		}
		if res.Duplicate {
			t.Error("the emit whose first run's answer was lost says duplicate: true")
		}
		id := res.Deliveries[0].ID
		r.until(t, ctx, 1, "the delivery succeeded (it waits for its lease)",
			"SELECT count(*) FROM deliveries WHERE id = $1 AND state = 'succeeded' AND attempts = 1", id)
		r.sentOnce(t, []string{id})
		// Another emit of the same event is still a duplicate.
		again, err := r.e.Emit(ctx, ev)
		if err != nil || !again.Duplicate || len(again.Deliveries) != 1 || again.Deliveries[0].ID != id {
			t.Errorf("the event emitted again: %+v, %v; want a duplicate with %s", again, err, id)
		}
	})

	// The lost run stored the deliveries it had no hand-over room for
	// pending, and this process's claim loop claimed one (attempt 1, this
	// owner, a fresh lease) before the insert ran again: that one is the
	// claim's, and only the preclaimed ones are handed over.
	t.Run("claimed since", func(t *testing.T) {
		// Whether a claimed one would be handed over again depends on
		// room the fair scheduler frees as it parks jobs: a few runs.
		for run := range 4 {
			t.Run(fmt.Sprint(run), func(t *testing.T) {
				// One worker and claims of ten: hand-overs take at most
				// 15 of 16 (a rule's most actions), and the claim loop
				// has room for at least one more (the jobs queue holds
				// 16).
				r := newEmitRig(t, 16, engine.Config{Workers: 1, ClaimBatch: 10})
				gate := make(chan struct{})
				var opened sync.Once
				openGate := func() { opened.Do(func() { close(gate) }) }
				t.Cleanup(openGate) // before the engine's Stop, which waits for the emit
				r.cc.gate.Store(&gate)
				r.cutInsert()
				type emitted struct {
					res engine.EmitResult
					err error
				}
				done := make(chan emitted, 1)
				go func() {
					res, err := r.e.Emit(ctx, ev)
					done <- emitted{res, err}
				}()
				// The preclaimed ones are handed over only when the emit
				// returns: a webhook before is of a delivery claimed since.
				wait(t, r.first, "no delivery of the lost run was claimed")
				openGate()
				got := <-done
				if got.err != nil || len(got.res.Deliveries) != 16 || got.res.Duplicate {
					t.Fatalf("emit: %+v, %v", got.res, got.err)
				}
				close(r.open)
				ids := make([]string, len(got.res.Deliveries))
				for i, d := range got.res.Deliveries {
					ids[i] = d.ID
				}
				// The claim loop takes the pending ones as room frees.
				r.until(t, ctx, 16, "every delivery succeeded",
					"SELECT count(*) FROM deliveries WHERE event_id = 'o1' AND state = 'succeeded'")
				r.sentOnce(t, ids)
			})
		}
	})
}

// TestCompletionAnswerLost: an ordered delivery's completion, which also
// makes the chain's next delivery its head and claims it for this
// process, is run again when its answer is lost. Run again, the
// completion is fenced out and moves the chain on no further: the next
// delivery, claimed by the lost run, is found by that run's lease end
// and handed to the workers now, not after its lease (ten minutes here).
// A success completes in one statement ("succeeded"); a dead delivery,
// which raises an event, in a transaction ("dead", its COMMIT's answer
// cut).
func TestCompletionAnswerLost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dead  bool
		state string // the first delivery's
	}{
		{"succeeded", false, "succeeded"},
		{"dead", true, "dead"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := newRuleRig(t, func(url string) string {
				return "rules:\n  - name: hook\n    on: {entity: SalesOrder}\n    ordered: true\n    retry: none\n    actions:\n" +
					"      - type: webhook\n        url: " + url + "\n        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
			}, engine.Config{})
			r.failFirst.Store(tc.dead)
			var ids []string
			for _, id := range []string{"o1", "o2"} {
				res, err := r.e.Emit(ctx, engine.Event{ID: id, Tenant: "acme", Entity: "SalesOrder", EntityID: "42", Event: "updated"})
				if err != nil || len(res.Deliveries) != 1 {
					t.Fatalf("emit %s: %+v, %v", id, res, err)
				}
				ids = append(ids, res.Deliveries[0].ID)
			}
			// o1's delivery is at the receiver, o2's waits behind it.
			wait(t, r.first, "the chain's head was not sent")
			r.until(t, ctx, 1, "the second delivery held", "SELECT count(*) FROM deliveries WHERE id = $1 AND state = 'held'", ids[1])
			if !tc.dead {
				stmt := "), ends AS ("
				r.cc.stmt.Store(&stmt)
			}
			r.cc.armed.Store(true)
			close(r.open)
			r.until(t, ctx, 1, "the first delivery ended", "SELECT count(*) FROM deliveries WHERE id = $1 AND state = $2", ids[0], tc.state)
			r.until(t, ctx, 1, "the second delivery succeeded (it waits for its lease)",
				"SELECT count(*) FROM deliveries WHERE id = $1 AND state = 'succeeded' AND attempts = 1", ids[1])
			if r.cc.armed.Load() || r.cc.cut.Load() != 1 {
				t.Fatal("no completion's answer was cut (the test's proxy missed it)")
			}
			r.sentOnce(t, ids)
			r.mu.Lock()
			defer r.mu.Unlock()
			// Handed over by the run again, which applied nothing: found,
			// not handed over by a completion the cut missed.
			if !slices.Equal(r.handed, ids[1:]) || !slices.Equal(r.lateHanded, ids[1:]) {
				t.Errorf("completions handed over %v, %v by a run that applied none; want the second delivery, by such a run", r.handed, r.lateHanded)
			}
		})
	}
}

// TestEmitBatchInOutage: a batch of emits that fails because the
// database is out of reach fails every caller at once, with
// engine.ErrUnavailable (the API's 503). Written one by one instead
// (which is right when one event of the batch is refused), each waited
// for the store's retries of about five seconds in turn, and callers
// further down the batch met their own deadline first (TestBatchFailure
// covers a batch split while the database answers).
func TestEmitBatchInOutage(t *testing.T) {
	r := newEmitRig(t, 1, engine.Config{})
	close(r.open)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.cc.darken()
	const callers = 16
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			// A caller that gives up, as an HTTP client does.
			cctx, cancel := context.WithTimeout(ctx, 25*time.Second)
			defer cancel()
			_, err := r.e.Emit(cctx, engine.Event{ID: fmt.Sprintf("out%d", i), Tenant: "acme", Entity: "SalesOrder", Event: "updated"})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, engine.ErrUnavailable) {
			t.Errorf("an emit with the database out of reach: %v, want engine.ErrUnavailable", err)
		}
	}
	r.cc.lightsOn()
	// The database is back: an emit gets through, not behind the
	// abandoned ones.
	actx, cancel := context.WithTimeout(ctx, 12*time.Second)
	defer cancel()
	res, err := r.e.Emit(actx, engine.Event{ID: "after", Tenant: "acme", Entity: "SalesOrder", Event: "updated"})
	if err != nil || len(res.Deliveries) != 1 {
		t.Fatalf("the first emit after the outage: %+v, %v", res, err)
	}
}
