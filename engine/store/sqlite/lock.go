package sqlite

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// InUseError is returned by Open when another Store, in this process or
// another, holds the database file: one engine owns a SQLite file at a
// time (several share PostgreSQL instead).
type InUseError struct {
	Path string // the database file
	PID  int    // the holder's process id as it wrote it in the lock file; 0 if unknown
}

func (e *InUseError) Error() string {
	switch {
	case e.PID == os.Getpid():
		return fmt.Sprintf("database %s is already open in this process", e.Path)
	case e.PID > 0:
		return fmt.Sprintf("database %s is in use by another erpflow process (pid %d)", e.Path, e.PID)
	}
	return fmt.Sprintf("database %s is in use by another erpflow process", e.Path)
}

// lockFile takes the process lock of the database at path: an exclusive
// flock on the sidecar file path+".lock" (never on the database, -wal or
// -shm files, whose locks are SQLite's own), holding this process's pid
// for the message of the next one. The kernel drops the lock when the
// process exits, however it ends. The caller keeps the file referenced
// until Close: a collected *os.File closes, and the lock goes with it.
//
// Where flock is missing (not unix) it takes no lock and returns nil: the
// file is not guarded, and no leases are expired at open.
func lockFile(path string) (*os.File, error) {
	if !canLock {
		return nil, nil
	}
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		var pid int
		if b, rerr := os.ReadFile(path + ".lock"); rerr == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, &InUseError{Path: path, PID: pid}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
