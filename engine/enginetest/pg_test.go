package enginetest

import (
	"context"
	"errors"

	"github.com/erpflow/erpflow/engine"
)

// openPostgres opens the PostgreSQL store (engineer C's engine/store/postgres).
func openPostgres(ctx context.Context, u string) (engine.Store, error) {
	return nil, errors.New("postgres store not available yet")
}
