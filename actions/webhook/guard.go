package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// BlockedAddressError is returned (wrapped) when the SSRF guard refuses to
// connect to an address. The delivery fails permanently: only a change of
// configuration (or of the receiver's DNS) can make it succeed, so retrying
// on a schedule would only hide the problem.
type BlockedAddressError struct {
	IP     netip.Addr
	Reason string
}

func (e *BlockedAddressError) Error() string {
	return fmt.Sprintf("refusing to connect to %s: %s; set delivery.allow_private_networks: true or list the address in delivery.allowed_networks to allow it", e.IP, e.Reason)
}

var (
	cgnat      = netip.MustParsePrefix("100.64.0.0/10")
	thisNet    = netip.MustParsePrefix("0.0.0.0/8")
	reserved4  = netip.MustParsePrefix("240.0.0.0/4")
	benchmark4 = netip.MustParsePrefix("198.18.0.0/15")
	ietf4      = netip.MustParsePrefix("192.0.0.0/24")
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	compat4    = netip.MustParsePrefix("::/96") // IPv4-compatible, deprecated
	metadata   = netip.MustParseAddr("169.254.169.254")
	// Ranges no public receiver has, some of which a local network may
	// route somewhere private (a local NAT64 to the metadata service).
	special = []struct {
		p      netip.Prefix
		reason string
	}{
		{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 address"},
		{netip.MustParsePrefix("fec0::/10"), "site-local address"},
		{netip.MustParsePrefix("2001::/32"), "Teredo address"},
		{netip.MustParsePrefix("100::/64"), "discard-only address"},
		{netip.MustParsePrefix("2001:db8::/32"), "documentation address"},
		{netip.MustParsePrefix("192.0.2.0/24"), "documentation address"},
		{netip.MustParsePrefix("198.51.100.0/24"), "documentation address"},
		{netip.MustParsePrefix("203.0.113.0/24"), "documentation address"},
		{netip.MustParsePrefix("192.88.99.0/24"), "reserved address (6to4 relay)"},
	}
)

// blockedReason says why ip is not a public unicast address, or "".
func blockedReason(ip netip.Addr) string {
	ip = ip.Unmap()
	// Addresses that embed an IPv4 address are judged by it.
	if ip.Is6() && nat64.Contains(ip) {
		b := ip.As16()
		return blockedReason(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	if ip.Is6() && sixToFour.Contains(ip) {
		b := ip.As16()
		return blockedReason(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
	}
	if ip.Is6() && compat4.Contains(ip) && !ip.IsLoopback() && !ip.IsUnspecified() {
		b := ip.As16()
		return blockedReason(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	for _, sp := range special {
		if sp.p.Contains(ip) {
			return sp.reason
		}
	}
	switch {
	case !ip.IsValid():
		return "invalid address"
	case ip.IsLoopback():
		return "loopback address"
	case ip.IsUnspecified() || thisNet.Contains(ip):
		return "unspecified address"
	case ip == metadata:
		return "link-local address (cloud metadata service)"
	case ip.IsLinkLocalUnicast():
		return "link-local address"
	case ip.IsMulticast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast():
		return "multicast address"
	case ip.IsPrivate():
		return "private network address"
	case cgnat.Contains(ip):
		return "carrier-grade NAT address (100.64.0.0/10)"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || reserved4.Contains(ip):
		return "reserved address"
	case benchmark4.Contains(ip) || ietf4.Contains(ip):
		return "special-purpose address"
	}
	return ""
}

// guard decides which addresses may be dialled.
type guard struct {
	allowAll bool
	nets     []netip.Prefix
	hosts    map[string]bool // lower-case host names exempt from the guard
}

func newGuard(allowAll bool, allowed []string) (*guard, error) {
	g := &guard{allowAll: allowAll, hosts: map[string]bool{}}
	for _, a := range allowed {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if p, err := netip.ParsePrefix(a); err == nil {
			g.nets = append(g.nets, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(a); err == nil {
			g.nets = append(g.nets, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		if strings.ContainsAny(a, "/ :") {
			return nil, fmt.Errorf("webhook: allowed network %q is neither a CIDR, an IP nor a host name", a)
		}
		g.hosts[strings.ToLower(strings.TrimSuffix(a, "."))] = true
	}
	return g, nil
}

// check returns a *BlockedAddressError for a refused address.
func (g *guard) check(ip netip.Addr) error {
	if g.allowAll {
		return nil
	}
	ip = ip.Unmap()
	reason := blockedReason(ip)
	if reason == "" {
		return nil
	}
	for _, p := range g.nets {
		if p.Contains(ip) {
			return nil
		}
	}
	return &BlockedAddressError{IP: ip, Reason: reason}
}

// control runs after DNS resolution, right before each connect, so a name
// that resolves (or re-resolves, or redirects) to a private address is
// caught no matter how it got there.
func (g *guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook: cannot check address %q: %w", address, err)
	}
	return g.check(ap.Addr())
}

// dialer returns the DialContext of the shared transports: resolve
// overrides first, then the guarded dial (or an unguarded one for hosts
// on the allow-list).
func (g *guard) dialer(resolve map[string]string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	guarded := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}
	open := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if to, ok := resolve[addr]; ok {
			addr = to
		}
		if g.hosts[strings.ToLower(strings.TrimSuffix(host, "."))] {
			return open.DialContext(ctx, network, addr)
		}
		return guarded.DialContext(ctx, network, addr)
	}
}

func isBlocked(err error) bool {
	var be *BlockedAddressError
	return errors.As(err, &be)
}
