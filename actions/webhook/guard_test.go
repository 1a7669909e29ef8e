package webhook

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

func TestBlockedReason(t *testing.T) {
	for ip, want := range map[string]string{
		"127.0.0.1": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback",
		"10.1.2.3": "private", "172.16.0.1": "private", "192.168.1.1": "private", "fc00::1": "private", "::ffff:10.0.0.1": "private",
		"169.254.169.254": "metadata", "169.254.1.1": "link-local", "fe80::1": "link-local",
		"100.64.0.1": "carrier-grade", "0.0.0.0": "unspecified", "::": "unspecified",
		"224.0.0.1": "multicast", "ff02::1": "multicast", "64:ff9b::a00:1": "private", "2002:7f00:1::": "loopback",
		"::127.0.0.1": "loopback", "::a9fe:a9fe": "metadata", "64:ff9b:1::a9fe:a9fe": "local-use NAT64",
		"fec0::1": "site-local", "2001::1": "Teredo", "100::1": "discard-only", "2001:db8::1": "documentation",
		"192.0.2.1": "documentation", "198.51.100.1": "documentation", "203.0.113.1": "documentation", "192.88.99.1": "6to4 relay",
		"8.8.8.8": "", "2606:4700:4700::1111": "", "100.128.0.1": "", "::8.8.8.8": "",
	} {
		got := blockedReason(netip.MustParseAddr(ip))
		if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", ip, got, want)
		}
	}
}

func TestMaskURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://h/x?id=1&token=abc&api_key=k&sig=s": "https://h/x?id=1&token=****&api_key=****&sig=****",
		"https://u:p@h/x":  "https://****@h/x",
		"https://h/x?id=1": "https://h/x?id=1",
	} {
		if got := MaskURL(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
	if got := redactText(`Post "https://h/x?password=pw": EOF`); strings.Contains(got, "pw\"") {
		t.Errorf("redactText: %s", got)
	}
}

func TestRedactingLogger(t *testing.T) {
	var buf strings.Builder
	l := redactingLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Error("request failed", "error", errors.New(`Post "https://u:pw@h/x?token=abc": EOF`), "url", "https://h/x?api_key=k")
	out := buf.String()
	for _, secret := range []string{"pw", "abc", "api_key=k"} {
		if strings.Contains(out, secret) {
			t.Fatalf("log leaks %q: %s", secret, out)
		}
	}
	if !strings.Contains(out, "token=****") {
		t.Fatalf("log: %s", out)
	}
}
