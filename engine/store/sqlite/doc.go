// Package sqlite is the embedded erpflow store: one SQLite file
// (modernc.org/sqlite, no cgo) in WAL mode.
//
// SQLite allows one writer at a time, so the store writes through a single
// connection (writers queue in the pool instead of spinning on
// SQLITE_BUSY) and reads through a separate pool that WAL lets run beside
// the writer. Every write is a batch in one transaction, so the engine's
// group commit costs one fsync per batch, not per event.
//
// Several processes may open the same file (the CLI beside a running
// server); they take turns through SQLite's lock with a busy timeout.
// Several engine processes should share PostgreSQL instead.
package sqlite
