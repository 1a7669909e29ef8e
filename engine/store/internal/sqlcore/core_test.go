package sqlcore

import (
	"testing"
	"time"

	"github.com/erpflow/erpflow/engine"
)

// TestIDBound: every delivery id of a millisecond before at's sorts below
// IDBound(at), every one of at's millisecond or later not.
func TestIDBound(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 30, 13, 45, 7, 123456789, time.UTC),
		time.Unix(1<<40/1000, 0),
	} {
		b := IDBound(at)
		for _, d := range []time.Duration{-time.Hour, -time.Millisecond} {
			if id := engine.DeliveryIDAt(at.Add(d)); id >= b {
				t.Errorf("id %s of %s is not below IDBound(%s) = %s", id, at.Add(d), at, b)
			}
		}
		for _, d := range []time.Duration{-time.Duration(at.Nanosecond() % 1e6), 0, time.Millisecond, time.Hour} {
			if id := engine.DeliveryIDAt(at.Add(d)); id < b {
				t.Errorf("id %s of %s is below IDBound(%s) = %s", id, at.Add(d), at, b)
			}
		}
	}
}
