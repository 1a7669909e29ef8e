package plugintest_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erpflow/erpflow/plugin"
	"github.com/erpflow/erpflow/plugin/plugintest"
)

const event = `{"id":"e1","entity":"SalesOrder","entity_id":"SO1000","event":"created","data":{"no":"SO1000"}}`

// TestKit drives erpflow's echo test plugin: validation errors with
// positions, an attempt with the secret kept out of the payload, the
// delivery's options, both kinds of failure.
func TestKit(t *testing.T) {
	bin := plugintest.Build(t, "../internal/testplugins/echo")
	if again := plugintest.Build(t, "../internal/testplugins/echo"); again != bin {
		t.Fatalf("second Build %s, want the cached %s", again, bin)
	}
	var pid int
	t.Run("run", func(t *testing.T) {
		p := plugintest.Start(t, bin)
		pid = p.PID()
		if p.Protocol() != plugin.ProtocolVersion || len(p.Actions()) != 1 || p.Actions()[0].Type != "echo" {
			t.Fatalf("protocol %d, actions %+v", p.Protocol(), p.Actions())
		}

		err := p.Validate("message: forbidden\n")
		var cfe *plugin.ConfigFileError
		if !errors.As(err, &cfe) || err.Error() != `config:1:10: message: must not be "forbidden"` {
			t.Fatalf("Validate: %v", err)
		}
		if err := p.Validate("type: echo\nmessage: hi\nnope: 1\n"); err == nil || !strings.Contains(err.Error(), "config:3:1: nope:") {
			t.Fatalf("unknown key: %v", err)
		}
		if err := p.Validate(`{"message": "json works too"}`); err != nil {
			t.Fatal(err)
		}

		r := p.Execute(event, "message: 'order {id}'\ntoken: s3cret\n")
		r.RequireSucceeded(t)
		if r.DeliveryID != "dlv_test_1" || r.Attempt.Attempt != 1 || !strings.Contains(string(r.Output), `"message":"order SO1000"`) {
			t.Fatalf("result %+v output %s", r.Attempt, r.Output)
		}
		if strings.Contains(string(r.Payload), "s3cret") || !strings.Contains(string(r.Payload), "order SO1000") {
			t.Fatalf("payload %s: want rendered, without the secret", r.Payload)
		}

		r = p.ExecuteWith(event, "message: m\nfail: retry\n", plugintest.Options{DeliveryID: "dlv_x", Attempt: 3})
		r.RequireRetryable(t)
		if r.DeliveryID != "dlv_x" || r.Attempt.Attempt != 3 || !r.Retryable || r.RetryAfter != 2*time.Second || r.Error != "asked to fail: m" {
			t.Fatalf("retryable result %+v", r.Attempt)
		}
		p.Execute("", "message: m\nfail: permanent\n").RequirePermanent(t)
	})
	// The subtest's cleanup ended the plugin and reaped it.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("plugin process %d still there after the test: %v", pid, err)
	}
}

// TestKitFailsTheTest: what makes the kit fail a test, seen through Run.
func TestKitFailsTheTest(t *testing.T) {
	bin := plugintest.Build(t, "../internal/testplugins/echo")
	for name, c := range map[string]struct {
		f    func(t plugintest.TB, p *plugintest.Plugin)
		want []string
	}{
		"bad event JSON": {
			f:    func(_ plugintest.TB, p *plugintest.Plugin) { p.Execute("{\n  \"id\": \"e1\",,\n}", "message: m\n") },
			want: []string{"plugintest: invalid event: event:2:14: malformed JSON: invalid character ','"},
		},
		"event without entity": {
			f:    func(_ plugintest.TB, p *plugintest.Plugin) { p.Execute(`{"id":"e1","event":"x"}`, "message: m\n") },
			want: []string{"plugintest: invalid event: event: event.entity: required"},
		},
		"invalid config": {
			f:    func(_ plugintest.TB, p *plugintest.Plugin) { p.Execute(event, "mesage: m\n") },
			want: []string{"plugintest: invalid config:\n", "config:1:1: mesage: unknown key"},
		},
		"failed attempt": {
			f: func(t plugintest.TB, p *plugintest.Plugin) {
				p.Execute(event, "message: m\nfail: retry\n").RequireSucceeded(t)
			},
			// The plugin's log is part of the report.
			want: []string{`plugintest: attempt retryable, want succeeded: error "asked to fail: m"`, "log:", "executed"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			after := false
			err := plugintest.Run(func(tb plugintest.TB) {
				c.f(tb, plugintest.Start(tb, bin))
				after = true
			})
			if err == nil || after {
				t.Fatalf("Run: %v (went on after the failure: %v)", err, after)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("want %q in:\n%v", w, err)
				}
			}
		})
	}
	script := filepath.Join(t.TempDir(), "not-a-plugin")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := plugintest.Run(func(tb plugintest.TB) { plugintest.Start(tb, script) }); err == nil ||
		!strings.Contains(err.Error(), `plugintest: plugin "not-a-plugin"`) {
		t.Fatalf("a binary that is no plugin: %v", err)
	}
}
