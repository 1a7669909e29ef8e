package engine

import (
	"testing"
	"time"
)

// TestNextPruneBatch: a batch that took longer than pruneBatchTime makes
// the next one proportionally smaller, one that took less than half of it
// twice as large, within [pruneBatchMin, pruneBatchMax].
func TestNextPruneBatch(t *testing.T) {
	for _, tc := range []struct {
		batch int
		took  time.Duration
		want  int
	}{
		{1000, 4 * pruneBatchTime, 250},
		{1000, pruneBatchTime, 1000},
		{1000, pruneBatchTime / 4, 2000},
		{100, 1000 * pruneBatchTime, pruneBatchMin},
		{4000, time.Microsecond, pruneBatchMax},
	} {
		if got := nextPruneBatch(tc.batch, tc.took); got != tc.want {
			t.Errorf("nextPruneBatch(%d, %v) = %d, want %d", tc.batch, tc.took, got, tc.want)
		}
	}
}
