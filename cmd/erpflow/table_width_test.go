package main

import (
	"bytes"
	"strings"
	"testing"
	"unicode"

	"golang.org/x/text/width"
)

// termCols is the test's own count of terminal columns.
func termCols(s string) int {
	n := 0
	for _, r := range s {
		switch k := width.LookupRune(r).Kind(); {
		case unicode.Is(unicode.Mn, r):
		case k == width.EastAsianWide || k == width.EastAsianFullwidth:
			n += 2
		default:
			n++
		}
	}
	return n
}

// TestTableWideCharacters: a table of Japanese and accented text fits 80
// terminal columns and its columns line up: wide characters take two
// columns, combining marks none; a newline in a cell stays in its row.
func TestTableWideCharacters(t *testing.T) {
	t.Setenv("COLUMNS", "")
	tb := newTable(column{name: "NAME", fixed: true}, column{name: "DESCRIPTION"}, column{name: "STATE", fixed: true})
	tb.add("so-released", strings.Repeat("受注確定の通知", 8), "ok")
	tb.add("cafe\u0301", "e\u0301 combining, then\na newline", "ok")
	var b bytes.Buffer
	tb.write(&b, false)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	col := -1
	for _, l := range lines {
		if w := termCols(l); w > 80 {
			t.Errorf("line of %d columns: %s", w, l)
		}
		i := strings.LastIndex(l, "  ")
		c := termCols(l[:i+2])
		if col >= 0 && c != col {
			t.Errorf("STATE starts at column %d, not %d:\n%s", c, col, b.String())
		}
		col = c
	}
	if got := cut("受注確定", 5); got != "受注…" {
		t.Errorf("cut to 5 columns: %q", got)
	}
}
