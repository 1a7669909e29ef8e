// Package enginetest holds the engine's cross-store tests: every test runs
// against the SQLite store and, when TEST_DATABASE_URL is set, against
// PostgreSQL, with real HTTP receivers and real engine subprocesses
// (the test binary re-executed) for crash and multi-instance proofs.
//
// The package has no API; it exists for its tests.
package enginetest
