package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// LockRestartServer makes t the only test, in any package of a `go test
// ./...` run, that uses the restartable PostgreSQL server at restartURL
// (TEST_PG_RESTART_URL) until t ends. Test packages run in parallel
// processes, and a test that restarts the server must not do so while
// another is connected to it.
func LockRestartServer(t testing.TB, restartURL string) {
	t.Helper()
	sum := sha256.Sum256([]byte(restartURL))
	path := filepath.Join(os.TempDir(), "erpflow-pg-restart-"+hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("lock of the restartable PostgreSQL server: %v", err)
	}
	if err := lockFile(f); err != nil { // blocks while another test holds it
		f.Close()
		t.Fatalf("lock of the restartable PostgreSQL server: %v", err)
	}
	t.Cleanup(func() { f.Close() }) // closing drops the lock
}
