package engine

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestIDsSortByTimeAndAreUnique(t *testing.T) {
	var g idGen
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seen := map[string]bool{}
	prev := ""
	for i := range 5000 {
		// 0..4 ms steps, with the clock stepping back now and then.
		at := t0.Add(time.Duration(i/1000) * time.Millisecond)
		if i%777 == 0 {
			at = at.Add(-time.Second)
		}
		id := g.next(at)
		if len(id) != 30 || !strings.HasPrefix(id, "dlv_") {
			t.Fatalf("id %q: want dlv_ + 26 characters", id)
		}
		for _, c := range id[4:] {
			if !strings.ContainsRune(crockford, c) {
				t.Fatalf("id %q has %q, not Crockford base32", id, c)
			}
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		if id <= prev {
			t.Fatalf("id %q not after %q", id, prev)
		}
		prev = id
	}
	// A later millisecond sorts after everything before it.
	later := g.next(t0.Add(time.Hour))
	if later <= prev {
		t.Fatalf("%q should sort after %q", later, prev)
	}
	// The time prefix encodes the millisecond (first 10 characters).
	var g2 idGen
	a, b := g2.next(t0), g2.next(t0.Add(time.Millisecond))
	if a[:14] == b[:14] {
		t.Fatalf("time prefix did not change: %q %q", a, b)
	}
}

// DeliveryIDAt's ids carry their time as the engine's do: the same
// millisecond prefix as an id the engine makes at that time, and they
// are unique within a millisecond.
func TestDeliveryIDAt(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 678_900_000, time.UTC)
	seen := map[string]bool{}
	for i := range 1000 {
		at := t0.Add(time.Duration(i/100) * 24 * time.Hour)
		id := DeliveryIDAt(at)
		if len(id) != 30 || !strings.HasPrefix(id, "dlv_") {
			t.Fatalf("id %q: want dlv_ + 26 characters", id)
		}
		var g idGen
		if want := g.next(at); id[:14] != want[:14] {
			t.Fatalf("DeliveryIDAt(%s) = %q, the engine's id then is %q: want the same time prefix", at, id, want)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	if a, b := DeliveryIDAt(t0), DeliveryIDAt(t0.Add(time.Millisecond)); a >= b {
		t.Fatalf("%q (a millisecond later) should sort after %q", b, a)
	}
}

func TestIDsConcurrent(t *testing.T) {
	var g idGen
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			local := make([]string, 0, 1000)
			for range 1000 {
				local = append(local, g.next(time.Now()))
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				if seen[id] {
					t.Errorf("duplicate id %q", id)
				}
				seen[id] = true
			}
		})
	}
	wg.Wait()
}

func TestEncodeULIDKnownValue(t *testing.T) {
	// All ones: the maximum ULID.
	var b [16]byte
	for i := range b {
		b[i] = 0xff
	}
	if got := encodeULID(&b); got != "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" {
		t.Fatalf("max = %q", got)
	}
	b = [16]byte{15: 1}
	if got := encodeULID(&b); got != "00000000000000000000000001" {
		t.Fatalf("one = %q", got)
	}
	b = [16]byte{5: 1} // time = 1 ms
	if got := encodeULID(&b); got != "0000000001"+"0000000000000000" {
		t.Fatalf("1ms = %q", got)
	}
}

func BenchmarkID(b *testing.B) {
	var g idGen
	now := time.Now()
	for b.Loop() {
		g.next(now)
	}
}
