//go:build !unix

package main

import "time"

// processCPU is the CPU time the process has used so far: not read on
// this system.
func processCPU() time.Duration { return 0 }
