package postgres_test

import (
	"database/sql"
	"testing"

	"github.com/erpflow/erpflow/engine"
	"github.com/erpflow/erpflow/engine/store/storetest"
)

// TestMigrations runs storetest's checks of single migrations on a
// schema that each brings to the release before its migration.
func TestMigrations(t *testing.T) {
	for name, check := range map[string]func(*testing.T, *sql.DB, string, string, func() engine.Store){
		"DeliveryTrace": storetest.DeliveryTraceMigration,
		"StatsCounts":   storetest.StatsCountsMigration,
	} {
		t.Run(name, func(t *testing.T) {
			u := freshSchema(t)
			db, err := sql.Open("postgres", u)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			check(t, db, "migrations", "now()", func() engine.Store {
				s := open(t, u)
				t.Cleanup(func() { s.Close() })
				return s
			})
		})
	}
}
