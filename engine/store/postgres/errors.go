package postgres

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/lib/pq"
)

// transient reports errors that a retry on a fresh connection may cure:
// connection failures (a server restart kills every pooled connection),
// shutdown notices, serialisation failures and deadlocks.
func transient(err error) bool {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if e := pq.As(err); e != nil {
		code := string(e.Code)
		return strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03" ||
			code == "40001" || code == "40P01"
	}
	return false
}

// unavailable reports errors of a database that cannot work now besides
// the transient ones: gone (dropped, or not created yet), out of
// connections, memory or disk, or a statement timeout.
func unavailable(err error) bool {
	if e := pq.As(err); e != nil {
		code := string(e.Code)
		return code == "3D000" || code == "57P04" || code == "57014" || strings.HasPrefix(code, "53")
	}
	return false
}
