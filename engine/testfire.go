package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
	"github.com/erpflow/erpflow/triggers"
)

// Test runs rule's actions for ev now, whether or not the rule is enabled
// or matches, records the attempts marked as test, and returns them. An
// event without an id gets one ("test_" and the delivery id). Nothing is
// queued: a failed test attempt is not retried (its delivery is dead).
func (e *Engine) Test(ctx context.Context, rule *triggers.Rule, ev Event) ([]TestResult, error) {
	if rule == nil {
		return nil, fmt.Errorf("engine: test: no rule")
	}
	switch {
	case strings.TrimSpace(ev.Entity) == "":
		return nil, &templates.EventError{Field: "entity", Msg: "required"}
	case strings.TrimSpace(ev.Event) == "":
		return nil, &templates.EventError{Field: "event", Msg: "required"}
	}
	now := e.now()
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = now
	}
	if strings.TrimSpace(ev.ID) == "" {
		ev.ID = e.ids.nextAs("test_", now)
	}
	out := make([]TestResult, 0, len(rule.Actions))
	for i := range rule.Actions {
		a := &rule.Actions[i]
		d := Delivery{
			ID:          e.ids.next(now),
			Tenant:      ev.Tenant,
			EventID:     ev.ID,
			Entity:      ev.Entity,
			EventName:   ev.Event,
			Rule:        rule.Name,
			RuleID:      rule.ID,
			ActionIndex: i,
			ActionType:  a.Type,
			Retry:       e.retryText(rule, a),
			Attempts:    1,
			RunAt:       now,
			Internal:    strings.HasPrefix(ev.Entity, internalPrefix),
			Test:        true,
			CreatedAt:   now,
			Payload:     json.RawMessage("null"),
		}
		var o actions.Outcome
		t0 := time.Now()
		cfg, ok := a.Config.(actions.Config)
		if !ok {
			o = actions.Outcome{Status: actions.Permanent, Error: fmt.Sprintf("action type %s has no usable config", a.Type)}
		} else if p, err := safeRender(cfg, &ev, templates.Meta{Rule: rule.Name, DeliveryID: d.ID}); err != nil {
			o = actions.Outcome{Status: actions.Permanent, Error: "render: " + err.Error()}
		} else {
			d.Payload = p
			o = safeExecute(ctx, cfg, &actions.Request{
				DeliveryID: d.ID, Attempt: 1, Rule: rule.Name, Event: &ev, Payload: p, Test: true,
			})
			if o.Status == actions.Unavailable {
				// Nothing ran, but a test attempt is recorded whatever
				// it gives, and "unavailable" is no attempt outcome.
				o.Status = actions.Retryable
			}
		}
		at := Attempt{
			DeliveryID: d.ID,
			N:          1,
			StartedAt:  now,
			Duration:   time.Since(t0),
			Outcome:    o.Status.String(),
			Code:       o.Code,
			Error:      o.Error,
			Detail:     o.Detail,
			Test:       true,
		}
		d.State = StateDead
		if o.Status == actions.Succeeded {
			d.State = StateSucceeded
		}
		d.LastCode, d.LastError, d.UpdatedAt = o.Code, o.Error, e.now()
		if err := e.store.AddAttempt(ctx, d, at); err != nil {
			return out, fmt.Errorf("engine: test: record attempt: %w", err)
		}
		out = append(out, TestResult{Delivery: d, Attempt: at})
	}
	return out, nil
}
