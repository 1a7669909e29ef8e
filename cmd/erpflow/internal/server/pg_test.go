package server

import (
	"context"
	"errors"

	"github.com/erpflow/erpflow/engine"
)

// openPostgres opens the PostgreSQL store once engine/store provides it.
func openPostgres(ctx context.Context, u string) (engine.Store, error) {
	return nil, errors.New("postgres store not available yet")
}
