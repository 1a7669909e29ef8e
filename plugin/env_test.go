package plugin

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/actions"
)

// TestPluginEnvironment: a plugin's process gets the base variables of
// erpflow's environment (PATH, HOME, LC_*, …) and its Spec.Env, and
// nothing else of erpflow's: not a database URL, a token or a variable
// the plugin would like (SMTP_HOST) unless Env names it. InheritEnv
// gives it all of erpflow's environment, Env on top.
func TestPluginEnvironment(t *testing.T) {
	t.Setenv("ERPFLOW_TEST_DATABASE", "postgres://erp:pw@db/erp")
	t.Setenv("SMTP_HOST", "from-erpflow")
	t.Setenv("LC_ERPFLOW_TEST", "kept")
	for _, tc := range []struct {
		name   string
		spec   Spec
		want   map[string]string
		absent []string
	}{
		{"base and Env", Spec{Env: map[string]string{"SMTP_PASSWORD": "pw", "EMPTY": ""}},
			map[string]string{"SMTP_PASSWORD": "pw", "EMPTY": "", "LC_ERPFLOW_TEST": "kept", "PATH": os.Getenv("PATH")},
			[]string{"ERPFLOW_TEST_DATABASE", "SMTP_HOST"}},
		{"Env over erpflow's", Spec{Env: map[string]string{"SMTP_HOST": "smtp.example", "PATH": "/opt/plugin/bin"}},
			map[string]string{"SMTP_HOST": "smtp.example", "PATH": "/opt/plugin/bin"},
			[]string{"ERPFLOW_TEST_DATABASE"}},
		{"inherited", Spec{InheritEnv: true, Env: map[string]string{"SMTP_HOST": "smtp.example"}},
			map[string]string{"ERPFLOW_TEST_DATABASE": "postgres://erp:pw@db/erp", "SMTP_HOST": "smtp.example", "LC_ERPFLOW_TEST": "kept"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Name, tc.spec.Path = "echo", bin(t, "echo")
			_, reg, _ := startHost(t, tc.spec)
			rec := runEcho(t, reg, "")
			env := map[string]string{}
			for _, kv := range rec.Env {
				k, v, _ := strings.Cut(kv, "=")
				if _, dup := env[k]; dup {
					t.Fatalf("%s twice in the plugin's environment", k)
				}
				env[k] = v
			}
			for k, v := range tc.want {
				if got, ok := env[k]; !ok || got != v {
					t.Errorf("%s: %q (set %v), want %q", k, got, ok, v)
				}
			}
			for _, k := range tc.absent {
				if v, ok := env[k]; ok {
					t.Errorf("the plugin sees %s=%q", k, v)
				}
			}
			// The handshake's variables are there (or it would not run).
			if !slices.ContainsFunc(rec.Env, func(kv string) bool { return strings.HasPrefix(kv, "PLUGIN_PROTOCOL_VERSIONS=") }) {
				t.Error("no PLUGIN_PROTOCOL_VERSIONS")
			}
		})
	}
	for _, bad := range []string{"BAD=NAME", "PLUGIN_MIN_PORT", "ERPFLOW_PLUGIN", ""} {
		_, err := Start(context.Background(), []Spec{{Name: "echo", Path: bin(t, "echo"), Env: map[string]string{bad: "x"}}}, &actions.Registry{}, nil)
		if err == nil || !strings.Contains(err.Error(), `env: "`+bad+`" is not a variable a plugin may be given`) {
			t.Errorf("Env %q: %v", bad, err)
		}
	}
}

// TestReloadEnv: a reload with the same env keeps the process; one with
// another env starts a process that sees it; a bad name is refused and
// the running process kept.
func TestReloadEnv(t *testing.T) {
	spec := Spec{Name: "echo", Path: bin(t, "echo"), Env: map[string]string{"SMTP_HOST": "old.example"}}
	h, reg, _ := startHost(t, spec)
	first := runEcho(t, reg, "")
	if err := h.Reload(context.Background(), []Spec{{Name: "echo", Path: spec.Path, Env: map[string]string{"SMTP_HOST": "old.example"}}}); err != nil {
		t.Fatal(err)
	}
	if again := runEcho(t, reg, ""); again.PID != first.PID {
		t.Fatalf("a reload with the same env restarted the plugin (pid %d, then %d)", first.PID, again.PID)
	}
	if err := h.Reload(context.Background(), []Spec{{Name: "echo", Path: spec.Path, Env: map[string]string{"SMTP_HOST": "new.example"}}}); err != nil {
		t.Fatal(err)
	}
	second := runEcho(t, reg, "")
	if second.PID == first.PID || !slices.Contains(second.Env, "SMTP_HOST=new.example") {
		t.Fatalf("after a reload with a new env: pid %d (was %d), env %v", second.PID, first.PID, second.Env)
	}
	err := h.Reload(context.Background(), []Spec{{Name: "echo", Path: spec.Path, Env: map[string]string{"PLUGIN_X": "1"}}})
	if err == nil || !strings.Contains(err.Error(), `env: "PLUGIN_X"`) {
		t.Fatalf("a reload with a reserved name: %v", err)
	}
	if third := runEcho(t, reg, ""); third.PID != second.PID {
		t.Fatal("a refused reload replaced the process")
	}
}

// runEcho runs one attempt of the echo action of reg (its config: a
// message, extra's keys) and returns what the plugin recorded.
func runEcho(t *testing.T, reg *actions.Registry, extra string) record {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.jsonl")
	cfg := mustDecode(t, reg, "echo", "message: hi\n"+extra+"out: "+out+"\n")
	ev := sampleEvent(t)
	payload, err := cfg.Render(ev, actions.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_1", Attempt: 1, Event: ev, Payload: payload}); o.Status != actions.Succeeded {
		t.Fatalf("outcome %+v", o)
	}
	return readRecords(t, out)[0]
}
