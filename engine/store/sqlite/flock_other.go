//go:build !unix

package sqlite

import (
	"errors"
	"os"
)

// canLock is false: no flock here, so lockFile takes no lock.
const canLock = false

var errLocked = errors.New("locked")

func flock(*os.File) error { return nil }
