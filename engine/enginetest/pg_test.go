package enginetest

import (
	"context"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
)

// openPostgres opens the PostgreSQL store.
func openPostgres(ctx context.Context, u string) (engine.Store, error) {
	return postgres.Open(ctx, u, postgres.Options{})
}
