package postgres

import (
	"context"
	"net"
	"time"
)

// userTimeout is how long data sent to PostgreSQL may stay
// unacknowledged before the kernel drops the connection (TCP_USER_TIMEOUT,
// on Linux). Without it a connection whose packets vanish (a failover
// moving the address, a firewall dropping state) waits for TCP to give
// up, about 15 minutes, and lib/pq does not end a call when its ctx ends
// (it sends a CancelRequest and keeps reading): a claim, a Stop or a
// ping would wait as long. A query running long is not affected: the
// server's kernel acknowledges it at once. Idle connections are checked
// by Go's keepalives (15 s).
const userTimeout = 30 * time.Second

// dialer is lib/pq's dialer (pq.Dialer and pq.DialerContext: net.Dialer's
// Dial and DialContext) with the connection's user timeout set.
type dialer struct{ net.Dialer }

func newDialer() *dialer {
	return &dialer{net.Dialer{Control: setUserTimeout(userTimeout)}}
}

// DialTimeout completes pq.Dialer.
func (d *dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}
