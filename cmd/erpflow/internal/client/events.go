package client

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/httpapi"
)

// EventList is GET /v1/events.
type EventList struct {
	Events     []engine.EventSummary `json:"events"`
	NextCursor string                `json:"next_cursor,omitempty"`
}

// RerunResult is POST /v1/events/{id}:rerun.
type RerunResult struct {
	EventID    string `json:"event_id"`
	Tenant     string `json:"tenant"`
	Rerun      string `json:"rerun"`
	Deliveries []struct {
		ID          string       `json:"id"`
		Rule        string       `json:"rule"`
		ActionIndex int          `json:"action_index"`
		Action      string       `json:"action"`
		State       engine.State `json:"state"`
	} `json:"deliveries"`
	Hint string `json:"hint,omitempty"`
}

// Status is GET /v1/status.
type Status struct {
	Version       string    `json:"version"`
	Store         string    `json:"store"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	Rules         int       `json:"rules"`
	RulesEnabled  int       `json:"rules_enabled"`
	Tenant        *string   `json:"tenant,omitempty"`
	Queue         struct {
		Pending       int        `json:"pending"`
		Running       int        `json:"running"`
		Failed        int        `json:"failed"`
		Dead          int        `json:"dead"`
		OldestWaiting *time.Time `json:"oldest_waiting,omitempty"`
		OldestAge     float64    `json:"oldest_waiting_age_seconds"`
	} `json:"queue"`
}

// Attempt is one message of GET /v1/deliveries:stream.
type Attempt = httpapi.StreamAttempt

// Message is one server-sent event.
type Message struct {
	ID    string
	Event string
	Data  string
}

// Stream opens the server-sent events at path (GET) and calls fn with each
// message until the stream ends (nil), ctx ends (ctx.Err()) or fn fails.
// lastID, when set, is sent as Last-Event-ID. retry receives the
// server's reconnection delay when it sends one. A non-2xx answer is an
// *Error. The request has no timeout: a stream is long.
func (c *Client) Stream(ctx context.Context, path string, query url.Values, lastID string, retry func(time.Duration), fn func(Message) error) error {
	base, u := c.endpoint(path, query)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{}
	}
	// A connection that died silently (a dropped NAT entry, a host gone)
	// sends nothing, not even the heartbeat: without a deadline the read
	// would wait for ever. Each line read puts it off.
	idle := cmp.Or(c.StreamIdle, time.Minute)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	quiet := time.AfterFunc(idle, func() { cancel(fmt.Errorf("%w: nothing for %s", ErrStreamIdle, idle)) })
	defer quiet.Stop()
	req = req.WithContext(ctx)
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(context.Cause(ctx), ErrStreamIdle) {
			err = context.Cause(ctx)
		}
		return fmt.Errorf("calling the erpflow server at %s: %w", base, err)
	}
	defer resp.Body.Close()
	if err := notErpflow(base, resp); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return answerError(resp, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return &Error{Status: resp.StatusCode, Code: "http", Message: fmt.Sprintf("%s answered %s, not an event stream: is it an erpflow server?", base, ct)}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var m Message
	var data []string
	for sc.Scan() {
		quiet.Reset(idle)
		line := sc.Text()
		if line == "" {
			if len(data) > 0 {
				m.Data = strings.Join(data, "\n")
				if err := fn(m); err != nil {
					return err
				}
			}
			m, data = Message{}, nil
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "": // a comment: heartbeat
		case "id":
			m.ID = value
		case "event":
			m.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil && retry != nil {
				retry(time.Duration(ms) * time.Millisecond)
			}
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return sc.Err()
}

// ErrStreamIdle: Stream received nothing, not even a heartbeat, for
// Client.StreamIdle; the connection is taken for dead (reconnect).
var ErrStreamIdle = errors.New("the event stream went quiet")
