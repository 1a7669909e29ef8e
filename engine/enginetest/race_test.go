//go:build race

package enginetest

// raceEnabled: the race detector slows everything ~10×; big tests shrink.
const raceEnabled = true
