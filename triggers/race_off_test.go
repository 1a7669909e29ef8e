//go:build !race

package triggers

const raceEnabled = false
