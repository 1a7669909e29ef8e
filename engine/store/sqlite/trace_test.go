package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

// TestMigrateDeliveryTrace: see storetest.DeliveryTraceMigration.
func TestMigrateDeliveryTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	storetest.DeliveryTraceMigration(t, db, "migrations", "1", func() engine.Store {
		s := open(t, path)
		t.Cleanup(func() { s.Close() })
		return s
	})
}
