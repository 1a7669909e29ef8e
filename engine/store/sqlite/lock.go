package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
// flock on the sidecar file ".lock" beside the database file its path
// resolves to (never on the database, -wal or -shm files, whose locks are
// SQLite's own), holding this process's pid for the message of the next
// one. The kernel drops the lock when the process exits, however it ends.
// The caller keeps the file referenced until Close: a collected *os.File
// closes, and the lock goes with it.
//
// Where flock is missing (not unix) it takes no lock and returns nil: the
// file is not guarded, and no leases are expired at open.
func lockFile(path string) (*os.File, error) {
	if !canLock {
		return nil, nil
	}
	real, err := resolve(path)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	name := real + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		var pid int
		if b, rerr := os.ReadFile(name); rerr == nil {
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

// resolve returns the absolute path of the database file at path with
// every symlink resolved, so that each name of one file (a symlink to it,
// a path through a symlinked directory, a relative path) gives the same
// lock. A missing file is created first (empty, which SQLite takes for a
// new database, as it would create it) so that a dangling symlink
// resolves to the file SQLite opens through it. Hard links are not
// followed: SQLite's own -wal and -shm files go by name too, so a file
// must not be opened by two hard links anyway.
func resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, fs.ErrNotExist) {
		f, cerr := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o644)
		if cerr != nil {
			return "", cerr
		}
		f.Close()
		real, err = filepath.EvalSymlinks(abs)
	}
	return real, err
}
