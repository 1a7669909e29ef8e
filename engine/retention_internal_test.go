package engine

import (
	"testing"
	"time"
)

// TestNextPruneBatch: a batch that took longer than the target makes
// the next one proportionally smaller, one that took less than half of it
// twice as large, within [pruneBatchMin, pruneBatchMax].
func TestNextPruneBatch(t *testing.T) {
	const target = 10 * time.Millisecond
	for _, tc := range []struct {
		batch int
		took  time.Duration
		want  int
	}{
		{1000, 4 * target, 250},
		{1000, target, 1000},
		{1000, target / 4, 2000},
		{100, 1000 * target, pruneBatchMin},
		{4000, time.Microsecond, pruneBatchMax},
	} {
		if got := nextPruneBatch(tc.batch, tc.took, target); got != tc.want {
			t.Errorf("nextPruneBatch(%d, %v) = %d, want %d", tc.batch, tc.took, got, tc.want)
		}
	}
}
