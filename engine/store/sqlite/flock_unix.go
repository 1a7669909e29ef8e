//go:build unix

package sqlite

import (
	"errors"
	"os"
	"syscall"
)

const canLock = true

// errLocked: another open file holds the lock.
var errLocked = syscall.EWOULDBLOCK

// flock takes an exclusive lock on f without waiting.
func flock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return err
}
