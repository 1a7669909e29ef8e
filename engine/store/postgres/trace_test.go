package postgres_test

import (
	"database/sql"
	"testing"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

// TestMigrateDeliveryTrace: see storetest.DeliveryTraceMigration.
func TestMigrateDeliveryTrace(t *testing.T) {
	u := freshSchema(t)
	db, err := sql.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	storetest.DeliveryTraceMigration(t, db, "migrations", "now()", func() engine.Store {
		s := open(t, u)
		t.Cleanup(func() { s.Close() })
		return s
	})
}
