package sqlcore

import (
	"context"
	"errors"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// ClaimTimers implements engine.TimerStore.
func (c *Core) ClaimTimers(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]engine.Timer, error) {
	return nil, errors.New("claim timers: not implemented yet")
}

// EndTimers implements engine.TimerStore.
func (c *Core) EndTimers(ctx context.Context, ends []engine.TimerEnd, now time.Time) ([]bool, error) {
	return nil, errors.New("end timers: not implemented yet")
}

// NextTimer implements engine.TimerStore.
func (c *Core) NextTimer(ctx context.Context) (time.Time, error) {
	return time.Time{}, nil
}

// ArmCron implements engine.TimerStore.
func (c *Core) ArmCron(ctx context.Context, ts []engine.Timer, rules []string, reason string, now time.Time) error {
	return errors.New("arm cron: not implemented yet")
}
