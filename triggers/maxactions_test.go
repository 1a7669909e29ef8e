package triggers

import (
	"strings"
	"testing"
)

// TestMaxActions: a rule with more actions than the bound is a load error
// at the first action too many (file:line:col); the bound is configurable
// and defaults to DefaultMaxActions.
func TestMaxActions(t *testing.T) {
	rule := func(n int) string {
		return "rules:\n  - name: r\n    on: {entity: X}\n    actions:\n" + strings.Repeat("      - type: log\n", n)
	}
	if _, err := Parse("a.yaml", []byte(rule(DefaultMaxActions)), LoadOptions{Actions: testDecoder{}}); err != nil {
		t.Fatalf("%d actions: %v", DefaultMaxActions, err)
	}
	_, err := Parse("a.yaml", []byte(rule(DefaultMaxActions+1)), LoadOptions{Actions: testDecoder{}})
	want := "a.yaml:21:9: rules[0].actions[16]: a rule has 17 actions, more than the limit of 16"
	if err == nil || err.Error() != want {
		t.Fatalf("17 actions: %v\nwant %s", err, want)
	}
	_, err = Parse("a.yaml", []byte(rule(3)), LoadOptions{Actions: testDecoder{}, MaxActions: 2})
	want = "a.yaml:7:9: rules[0].actions[2]: a rule has 3 actions, more than the limit of 2"
	if err == nil || err.Error() != want {
		t.Fatalf("3 actions, limit 2: %v\nwant %s", err, want)
	}
	if _, err := ParseRule("body", []byte(`{"name":"r","on":{"entity":"X"},"actions":[{"type":"log"},{"type":"log"}]}`), LoadOptions{Actions: testDecoder{}, MaxActions: 1}); err == nil ||
		!strings.Contains(err.Error(), "actions[1]: a rule has 2 actions, more than the limit of 1") {
		t.Fatalf("JSON rule over the limit: %v", err)
	}
}

// fileDecoder is testDecoder whose "log" actions read the file named by
// their key "file".
type fileDecoder struct{ testDecoder }

func (fileDecoder) FileKeys(typ string) []string {
	if typ == "log" {
		return []string{"file"}
	}
	return nil
}

// TestNoServerFiles: with NoServerFiles, an action key naming a file on
// the machine is a load error at the key; without it the rule loads.
func TestNoServerFiles(t *testing.T) {
	src := "rules:\n  - name: r\n    on: {entity: X}\n    actions:\n      - type: log\n        file: /etc/passwd\n"
	if _, err := Parse("a.yaml", []byte(src), LoadOptions{Actions: fileDecoder{}}); err != nil {
		t.Fatalf("a rule file: %v", err)
	}
	_, err := Parse("a.yaml", []byte(src), LoadOptions{Actions: fileDecoder{}, NoServerFiles: true})
	want := "a.yaml:6:9: rules[0].actions[0].file: names a file on the server"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want %s…", err, want)
	}
}
