package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitSymlinksAndModes: init never writes through a symlink (a
// dangling one counts as there; --force replaces the link, not its
// target), and --force leaves the secret-holding files 0600 whatever
// mode the old ones had.
func TestInitSymlinksAndModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "victim.yaml")
	if err := os.MkdirAll(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "rules", "example.yaml")); err != nil {
		t.Fatal(err)
	}
	code, _, errb := runOut("init", dir)
	if _, err := os.Lstat(outside); err == nil || code != 1 || !strings.Contains(errb, "would overwrite") {
		t.Fatalf("init with a dangling symlink: exit %d, target written: %v\n%s", code, err == nil, errb)
	}
	if err := os.WriteFile(outside, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "erpflow.yaml"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errb := runOut("init", dir, "--force"); code != 0 {
		t.Fatalf("init --force: exit %d\n%s%s", code, out, errb)
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep me\n" {
		t.Errorf("init --force wrote through the symlink: %q", b)
	}
	for _, name := range []string{"erpflow.yaml", filepath.Join("rules", "example.yaml")} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", name, fi.Mode(), err)
		}
	}
}
