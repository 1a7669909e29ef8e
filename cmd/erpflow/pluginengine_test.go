package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// plugin-engine is for engineplugin.StartEngine, not people: help does not
// list it, and run by hand it says what it is for.
func TestPluginEngineHiddenFromHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &out, &errb); code != 0 {
		t.Fatalf("help: exit %d", code)
	}
	if strings.Contains(out.String(), "plugin-engine") || !strings.Contains(out.String(), "  serve ") {
		t.Fatalf("help lists:\n%s", out.String())
	}
	t.Setenv("ERPFLOW_ENGINE_PLUGIN", "")
	errb.Reset()
	if code := run(context.Background(), []string{"plugin-engine"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "engineplugin.StartEngine") {
		t.Fatalf("by hand: exit %d, %q", code, errb.String())
	}
}
