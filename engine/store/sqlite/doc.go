// Package sqlite is the embedded erpflow store: one SQLite file
// (modernc.org/sqlite, no cgo) in WAL mode.
//
// SQLite allows one writer at a time, so the store writes through a single
// connection (writers queue in the pool instead of spinning on
// SQLITE_BUSY) and reads through a separate pool that WAL lets run beside
// the writer. Every write is a batch in one transaction, so the engine's
// group commit costs one fsync per batch, not per event.
//
// One Store owns a file at a time: Open takes an exclusive lock on a
// sidecar file (path+".lock") and refuses a second Store with an
// *InUseError, so an engine that starts on a file knows that the
// deliveries left running there belong to dead processes and runs them at
// once. Several engine processes share PostgreSQL instead. Options.NoLock
// opens a file beside its owner (readers; tests).
package sqlite
