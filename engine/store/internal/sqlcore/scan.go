package sqlcore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/jmoiron/sqlx"
)

// Querier is what *sql.DB, *sql.Tx, *sqlx.DB and *sqlx.Tx have in common.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Time scans a timestamp stored either as INTEGER unix microseconds
// (SQLite) or as timestamptz (PostgreSQL); NULL is the zero time. Times
// come back in UTC.
type Time struct{ T time.Time }

// Scan implements sql.Scanner.
func (t *Time) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		t.T = time.Time{}
	case int64:
		t.T = time.UnixMicro(v).UTC()
	case time.Time:
		t.T = v.UTC()
	case []byte:
		return t.parse(string(v))
	case string:
		return t.parse(v)
	default:
		return fmt.Errorf("sqlcore: cannot scan %T into a time", src)
	}
	return nil
}

func (t *Time) parse(s string) error {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		t.T = time.UnixMicro(n).UTC()
		return nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999-07"} {
		if p, err := time.Parse(layout, s); err == nil {
			t.T = p.UTC()
			return nil
		}
	}
	return fmt.Errorf("sqlcore: cannot parse time %q", s)
}

// Micros encodes t as unix microseconds, nil for the zero time (SQLite).
func Micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// Timestamp encodes t for a timestamptz column, nil for the zero time
// (PostgreSQL). Sub-microsecond digits are dropped, as the column would.
func Timestamp(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Truncate(time.Microsecond)
}

// Round is what a stored time reads back as.
func Round(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// blob returns b for a BLOB/BYTEA column; nil stays NULL.
func blob(b []byte) any {
	if b == nil {
		return nil
	}
	return []byte(b)
}

// deliveryCols are the columns of a delivery, in scanDelivery order.
var deliveryCols = []string{
	"id", "tenant", "event_id", "entity", "event_name", "rule", "action_index",
	"action_type", "retry", "payload", "state", "attempts", "retry_base",
	"run_at", "last_code", "last_error", "internal", "test", "lease_owner",
	"locked_until", "created_at", "updated_at", "rule_id", "rerun", "order_key", "coalesced", "trace",
}

// DeliveryCols returns the delivery columns, each prefixed with prefix
// ("d." or "").
func DeliveryCols(prefix string) string {
	var b strings.Builder
	for i, c := range deliveryCols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(prefix)
		b.WriteString(c)
	}
	return b.String()
}

// ScanDeliveries reads all rows of a query selecting DeliveryCols.
func ScanDeliveries(rows *sql.Rows) ([]engine.Delivery, error) {
	defer rows.Close()
	var out []engine.Delivery
	for rows.Next() {
		var d engine.Delivery
		dst, finish := deliveryScan(&d)
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		finish()
		out = append(out, d)
	}
	return out, rows.Err()
}

// deliveryScan returns the scan destinations of DeliveryCols into d, and
// what completes d after the scan.
func deliveryScan(d *engine.Delivery) ([]any, func()) {
	var payload []byte
	var state string
	var runAt, locked, created, updated Time
	var coalesced string
	dst := []any{&d.ID, &d.Tenant, &d.EventID, &d.Entity, &d.EventName,
		&d.Rule, &d.ActionIndex, &d.ActionType, &d.Retry, &payload, &state,
		&d.Attempts, &d.RetryBase, &runAt, &d.LastCode, &d.LastError,
		&d.Internal, &d.Test, &d.LeaseOwner, &locked, &created, &updated, &d.RuleID, &d.Rerun, &d.OrderKey, &coalesced, &d.Trace}
	return dst, func() {
		d.Coalesced = SplitIDs(coalesced)
		if payload != nil {
			d.Payload = json.RawMessage(payload)
		}
		d.State = engine.State(state)
		d.RunAt, d.LockedUntil, d.CreatedAt, d.UpdatedAt = runAt.T, locked.T, created.T, updated.T
	}
}

// attemptCols are the columns of an attempt, in scanAttempts order.
const attemptCols = "delivery_id, n, started_at, duration_ns, outcome, code, error, detail, test"

func scanAttempts(rows *sql.Rows) ([]engine.Attempt, error) {
	defer rows.Close()
	var out []engine.Attempt
	for rows.Next() {
		var a engine.Attempt
		var started Time
		var dur int64
		var detail []byte
		if err := rows.Scan(&a.DeliveryID, &a.N, &started, &dur, &a.Outcome, &a.Code,
			&a.Error, &detail, &a.Test); err != nil {
			return nil, err
		}
		a.StartedAt = started.T
		a.Duration = time.Duration(dur)
		if len(detail) > 0 {
			a.Detail = json.RawMessage(detail)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func rebind(bind int, q string) string { return sqlx.Rebind(bind, q) }

// JoinIDs encodes ids for a list column (timers.events, .deliveries,
// deliveries.coalesced): JSON strings joined by ',', so that SQL appends
// one with "list || ',' || item" and a reader wraps it in brackets.
func JoinIDs(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	b, _ := json.Marshal(ids) // strings: never fails
	return string(b[1 : len(b)-1])
}

// SplitIDs decodes a list column (see JoinIDs); nil for "".
func SplitIDs(s string) []string {
	if s == "" {
		return nil
	}
	var ids []string
	if json.Unmarshal([]byte("["+s+"]"), &ids) != nil {
		return nil
	}
	return ids
}

// timerCols are the columns of a timer, in timerScan order.
var timerCols = []string{
	"id", "kind", "rule", "rule_id", "tenant", "entity", "entity_id", "event_id",
	"latest_id", "fire_at", "first_at", "state", "reason", "events", "count",
	"deliveries", "spec", "version", "lease_owner", "locked_until", "created_at", "updated_at", "trace",
}

// TimerCols returns the timer columns, each prefixed with prefix.
func TimerCols(prefix string) string {
	var b strings.Builder
	for i, c := range timerCols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(prefix)
		b.WriteString(c)
	}
	return b.String()
}

// ScanTimers reads all rows of a query selecting TimerCols.
func ScanTimers(rows *sql.Rows) ([]engine.Timer, error) {
	defer rows.Close()
	var out []engine.Timer
	for rows.Next() {
		var t engine.Timer
		var kind, state, events, dls string
		var fire, first, locked, created, updated Time
		if err := rows.Scan(&t.ID, &kind, &t.Rule, &t.RuleID, &t.Tenant, &t.Entity, &t.EntityID, &t.EventID,
			&t.LatestID, &fire, &first, &state, &t.Reason, &events, &t.Count,
			&dls, &t.Spec, &t.Version, &t.LeaseOwner, &locked, &created, &updated, &t.Trace); err != nil {
			return nil, err
		}
		t.Kind, t.State = engine.TimerKind(kind), engine.TimerState(state)
		t.Events, t.Deliveries = SplitIDs(events), SplitIDs(dls)
		t.FireAt, t.FirstAt, t.LockedUntil, t.CreatedAt, t.UpdatedAt = fire.T, first.T, locked.T, created.T, updated.T
		out = append(out, t)
	}
	return out, rows.Err()
}
