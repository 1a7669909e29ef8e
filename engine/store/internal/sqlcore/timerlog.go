package sqlcore

import (
	"context"
	"errors"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// ListTimers implements engine.TimerStore.
func (c *Core) ListTimers(ctx context.Context, f engine.TimerFilter) ([]engine.Timer, error) {
	return nil, errors.New("list timers: not implemented yet")
}

// GetTimer implements engine.TimerStore.
func (c *Core) GetTimer(ctx context.Context, id string) (engine.Timer, error) {
	return engine.Timer{}, errors.New("get timer: not implemented yet")
}

// CancelTimer implements engine.TimerStore.
func (c *Core) CancelTimer(ctx context.Context, id, reason string, now time.Time) (engine.Timer, error) {
	return engine.Timer{}, errors.New("cancel timer: not implemented yet")
}
