package postgres_test

import (
	"context"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/erpflow/erpflow/engine/store/postgres"
)

// TestStoreConnectionsCarryUserTimeout: every connection the store
// opens, its pool's and its listener's, carries TCP_USER_TIMEOUT (see
// TestDialerSetsUserTimeout for the dialer itself). The store's sessions
// are found by their application name on the server, and their sockets
// in this process by the client ports the server reports.
func TestStoreConnectionsCarryUserTimeout(t *testing.T) {
	s, db, app := openNamed(t, "dial", "")
	s.Wakeups() // starts the listener's connection
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ports map[int]bool
	for {
		ports = map[int]bool{}
		var listening bool
		rows, err := db.QueryContext(ctx, `SELECT client_port, coalesce(query, '') FROM pg_stat_activity WHERE application_name = $1`, app)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var port int
			var query string
			if err := rows.Scan(&port, &query); err != nil {
				t.Fatal(err)
			}
			if port < 0 {
				t.Skip("the server reports no client port: TEST_DATABASE_URL connects through a Unix socket")
			}
			ports[port] = true
			listening = listening || query == `LISTEN "erpflow_deliveries"`
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if listening && len(ports) >= 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the store's pool and listener sessions did not show (ports %v, listening %v)", ports, listening)
		case <-time.After(10 * time.Millisecond):
		}
	}
	server, err := url.Parse(baseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	serverPort := 5432
	if p := server.Port(); p != "" {
		if serverPort, err = strconv.Atoi(p); err != nil {
			t.Fatal(err)
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	found := map[int]bool{}
	for _, f := range fds {
		fd, err := strconv.Atoi(f.Name())
		if err != nil {
			continue
		}
		// Another test's socket may have the same local port towards
		// another address: the peer must be the server too.
		local, lerr := unix.Getsockname(fd)
		peer, perr := unix.Getpeername(fd)
		if lerr != nil || perr != nil {
			continue // not a connected socket, or closed since
		}
		if port := inetPort(local); !ports[port] || inetPort(peer) != serverPort {
			continue
		}
		found[inetPort(local)] = true
		ms, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		if err != nil {
			t.Fatal(err)
		}
		if want := postgres.UserTimeout.Milliseconds(); int64(ms) != want {
			t.Errorf("the store's connection from port %d has TCP_USER_TIMEOUT %d ms, want %d", inetPort(local), ms, want)
		}
	}
	if len(found) == 0 {
		t.Skip("none of the store's connections is among this process's sockets as the server reports them (a proxy or NAT between)")
	}
	if len(found) != len(ports) {
		t.Errorf("found %d of the store's %d connections among this process's sockets", len(found), len(ports))
	}
}

// inetPort is the port of an IPv4 or IPv6 socket address, or -1.
func inetPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return -1
}
