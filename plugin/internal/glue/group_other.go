//go:build !unix

package glue

import "os/exec"

// ownGroup does nothing here: process groups are a Unix notion.
func ownGroup(*exec.Cmd) {}

// KillGroup does nothing here (see the Unix version).
func KillGroup(int) error { return nil }
