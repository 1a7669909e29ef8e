package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

// TestMigrations runs storetest's checks of single migrations on a
// database file that each brings to the release before its migration.
func TestMigrations(t *testing.T) {
	for name, check := range storetest.Migrations {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "old.db")
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			check(t, db, "migrations", "1", func() engine.Store {
				s := open(t, path)
				t.Cleanup(func() { s.Close() })
				return s
			})
		})
	}
}
