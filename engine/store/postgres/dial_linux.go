package postgres

import (
	"errors"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout returns a net.Dialer Control that sets TCP_USER_TIMEOUT
// on TCP sockets (not on Unix sockets). A kernel or sandbox without the
// option (WSL1, some gVisor builds) connects without it.
func setUserTimeout(t time.Duration) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if !strings.HasPrefix(network, "tcp") {
			return nil
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(t/time.Millisecond))
		})
		if err != nil {
			return err
		}
		if errors.Is(serr, unix.ENOPROTOOPT) || errors.Is(serr, unix.EINVAL) {
			return nil
		}
		return serr
	}
}
