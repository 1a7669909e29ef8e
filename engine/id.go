package engine

import (
	"crypto/rand"
	"sync"
	"time"
)

// crockford is Crockford's base32 alphabet: sortable as ASCII, no I L O U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idGen makes time-sortable delivery ids: "dlv_" and a ULID (48-bit
// millisecond time, 80 random bits, Crockford base32). Within one
// millisecond the random part increments, so ids from one generator are
// strictly increasing even when the clock stands still or steps back.
type idGen struct {
	mu     sync.Mutex
	lastMS uint64
	rnd    [10]byte // big-endian 80-bit random part of the last id
}

// next returns a new delivery id for time now.
func (g *idGen) next(now time.Time) string { return g.nextAs("dlv_", now) }

// nextAs returns a new id for time now with prefix ("tmr_", "rrn_"…):
// one sequence for every kind, so all sort by creation.
func (g *idGen) nextAs(prefix string, now time.Time) string {
	ms := uint64(now.UnixMilli())
	g.mu.Lock()
	if ms <= g.lastMS {
		// Same (or an earlier) millisecond: keep the time, increment.
		ms = g.lastMS
		for i := len(g.rnd) - 1; i >= 0; i-- {
			g.rnd[i]++
			if g.rnd[i] != 0 {
				break
			}
			if i == 0 { // 80 bits overflowed: move to the next millisecond
				ms++
			}
		}
	} else {
		rand.Read(g.rnd[:]) // never fails (crypto/rand panics on failure)
		// Leave headroom for increments within the millisecond.
		g.rnd[0] &= 0x7f
	}
	g.lastMS = ms
	var b [16]byte
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	copy(b[6:], g.rnd[:])
	g.mu.Unlock()
	return prefix + encodeULID(&b)
}

// DeliveryIDAt returns a delivery id for creation time t, as the engine
// would have given one: "dlv_" and a ULID whose 48-bit millisecond part is
// t's, with 80 random bits after it. It is for tools that write deliveries
// of the past (erpflow bench --stored fills a store with days of them):
// the id is the delivery's creation time wherever the store relies on
// that (retention and listing walk ids in order; a store may partition by
// id range). Ids of different milliseconds sort by time; ids of one
// millisecond are unique (random) but, unlike the engine's own, in no
// particular order.
func DeliveryIDAt(t time.Time) string {
	ms := uint64(t.UnixMilli())
	var b [16]byte
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	rand.Read(b[6:]) // never fails (crypto/rand panics on failure)
	return "dlv_" + encodeULID(&b)
}

// encodeULID encodes 128 bits as 26 Crockford base32 characters (the first
// carries 3 bits).
func encodeULID(b *[16]byte) string {
	var out [26]byte
	// Work on the 128-bit value as two uint64 halves, 5 bits at a time
	// from the least significant end.
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
		uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
