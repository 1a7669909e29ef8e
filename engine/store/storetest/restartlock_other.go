//go:build !unix

package storetest

import "os"

// lockFile does nothing where flock is missing: restart tests may overlap.
func lockFile(*os.File) error { return nil }
