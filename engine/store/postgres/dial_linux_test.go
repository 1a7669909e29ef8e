package postgres

import (
	"context"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The connections to PostgreSQL carry the user timeout: data left
// unacknowledged for 30 s ends the connection, rather than a call
// waiting for TCP to give up (about 15 minutes).
func TestDialerSetsUserTimeout(t *testing.T) {
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		t.Skip("TEST_DATABASE_URL not set: needs a PostgreSQL server to connect to")
	}
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" {
		t.Skipf("TEST_DATABASE_URL is not a postgres:// URL with a host (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host := pu.Host
	if pu.Port() == "" {
		host = net.JoinHostPort(pu.Hostname(), "5432")
	}
	c, err := newDialer().DialContext(ctx, "tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if time.Duration(got)*time.Millisecond != userTimeout {
		t.Errorf("TCP_USER_TIMEOUT %d ms, want %v", got, userTimeout)
	}
}
