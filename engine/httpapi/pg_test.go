package httpapi

import (
	"context"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/postgres"
)

func openPostgres(ctx context.Context, u string) (engine.Store, error) {
	return postgres.Open(ctx, u, postgres.Options{})
}
