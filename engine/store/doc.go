// Package store opens the erpflow store named by a database URL:
//
//	sqlite:./erpflow.db               an SQLite file (created when missing)
//	sqlite::memory:                   a private in-memory SQLite database
//	postgres://user@host/db?sslmode=disable   PostgreSQL (also postgresql://)
//
// Both adapters (engine/store/sqlite, engine/store/postgres) pass the same
// suite, engine/store/storetest, and apply their embedded schema
// migrations when opened. BareQueueLoop and BareInsertLoop measure the
// database's ceilings for a batched queue and for single-row ingest, which
// `erpflow bench` prints beside the engine's figures; OpenSQL opens the
// database as a plain *sql.DB for such tools.
package store
