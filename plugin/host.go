package plugin

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/plugin/internal/glue"
	pb "github.com/erpflow/erpflow/plugin/proto/v1"
)

// Spec names one plugin binary to run (the server config's `plugins:`).
type Spec struct {
	// Name names the plugin in logs and errors. Default: the base name of
	// Path.
	Name string `yaml:"name" json:"name"`
	// Path is the plugin executable. Required.
	Path string `yaml:"path" json:"path"`
	// SHA256 is the hex SHA-256 of the executable; when set, a binary
	// whose checksum differs is refused. Default: not checked.
	SHA256 string `yaml:"sha256" json:"sha256,omitempty"`
	// Env sets environment variables of the plugin's process, beside the
	// few every program needs, which it gets from erpflow's environment
	// (see BaseEnv). Nothing else of erpflow's environment reaches it:
	// not its database URL, tokens or secrets. Default none.
	Env map[string]string `yaml:"env" json:"env,omitempty"`
	// InheritEnv gives the plugin all of erpflow's environment (and Env
	// on top). Default false.
	InheritEnv bool `yaml:"inherit_env" json:"inherit_env,omitempty"`
}

// BaseEnv names the variables of erpflow's environment every plugin
// process gets: where programs, the home directory and temporary files
// are, the user, the time zone and locale, the CA certificates, the
// outbound proxies, and the Python that erpflow's Python plugins run
// with. Any other one reaches a plugin only through Spec.Env (or
// Spec.InheritEnv).
var BaseEnv = []string{
	"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "LC_*",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
	"http_proxy", "https_proxy", "no_proxy", "SYSTEMROOT", "TEMP", "TMP", "ERPFLOW_PYTHON",
}

// environ is the environment of the plugin process of spec, from
// erpflow's own (host).
func (spec Spec) environ(host []string) []string {
	var env []string
	for _, kv := range host {
		name, _, _ := strings.Cut(kv, "=")
		if spec.InheritEnv || baseEnv(name) {
			env = append(env, kv)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, name+"="+spec.Env[name]) // the last value of a name wins
	}
	if env == nil {
		env = []string{} // nil would mean erpflow's whole environment
	}
	return env
}

// ReservedEnv reports whether name is a variable the plugin handshake
// sets (ERPFLOW_PLUGIN, PLUGIN_*), which Spec.Env may not set.
func ReservedEnv(name string) bool {
	return name == Handshake.MagicCookieKey || strings.HasPrefix(name, "PLUGIN_")
}

// checkEnv checks the names of Env.
func (spec Spec) checkEnv() error {
	for name := range spec.Env {
		if !envName.MatchString(name) || ReservedEnv(name) {
			return fmt.Errorf("env: %q is not a variable a plugin may be given (letters, digits and _, not %s or PLUGIN_*, which the handshake sets)", name, Handshake.MagicCookieKey)
		}
	}
	return nil
}

// baseEnv reports whether name is in BaseEnv; on Windows, whose
// variable names ignore case (Path, SystemRoot), in any case.
func baseEnv(name string) bool {
	equal := func(a, b string) bool { return a == b }
	if runtime.GOOS == "windows" {
		equal = strings.EqualFold
	}
	for _, b := range BaseEnv {
		if prefix, ok := strings.CutSuffix(b, "*"); ok && len(name) >= len(prefix) && equal(name[:len(prefix)], prefix) || equal(name, b) {
			return true
		}
	}
	return false
}

// Error is a plugin failing to start or to describe itself.
type Error struct {
	Plugin string // Spec.Name
	Path   string
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("plugin %q (%s): %v", e.Plugin, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Typed causes inside *Error, for callers that branch.
var (
	// ErrChecksum: the binary's SHA-256 differs from Spec.SHA256.
	ErrChecksum = glue.ErrChecksum
	// ErrHandshake: the binary is not an erpflow plugin of this protocol
	// version.
	ErrHandshake = glue.ErrHandshake
	// ErrClosed: the Host was closed.
	ErrClosed = errors.New("plugin host closed")
)

// Host runs action plugins and keeps them running.
type Host struct {
	procs  []*proc
	log    *slog.Logger
	reload sync.Mutex // one Reload at a time
}

// Start starts every plugin in specs, asks each for its action type and
// registers that type in reg. On any error it stops the plugins it
// started and returns an *Error naming the plugin and its path. logger
// receives the plugins' logs (default slog.Default()).
func Start(ctx context.Context, specs []Spec, reg *actions.Registry, logger *slog.Logger) (*Host, error) {
	if logger == nil {
		logger = slog.Default()
	}
	h := &Host{log: logger}
	for _, s := range specs {
		if s.Name == "" {
			s.Name = filepath.Base(s.Path)
		}
		p := &proc{spec: s, log: logger.With("plugin", s.Name), kick: make(chan struct{}, 1), quit: make(chan struct{}), kept: make(chan struct{})}
		if err := p.init(ctx); err != nil {
			_ = h.Close()
			return nil, err
		}
		go p.keep()
		h.procs = append(h.procs, p)
	}
	// Check every type first so that a conflict registers none of them.
	taken := map[string]bool{}
	for _, t := range reg.Types() {
		taken[t] = true
	}
	for _, p := range h.procs {
		for _, t := range p.types {
			if taken[t.desc.Type] {
				_ = h.Close()
				return nil, p.errorf(fmt.Errorf("action type %q is already registered (by erpflow or another plugin)", t.desc.Type))
			}
			taken[t.desc.Type] = true
		}
	}
	for _, p := range h.procs {
		for _, t := range p.types {
			if err := reg.Register(t.desc.Type, &factory{p: p, t: t}); err != nil {
				_ = h.Close()
				return nil, &Error{Plugin: p.spec.Name, Path: p.spec.Path, Err: err}
			}
		}
		st := p.status()
		p.log.Info("plugin started", "types", st.Types, "version", st.Version, "protocol", st.Protocol, "pid", st.PID)
	}
	return h, nil
}

// Types returns the action types the plugins provide, in Spec order.
func (h *Host) Types() []string {
	var out []string
	for _, p := range h.procs {
		out = append(out, p.typeNames()...)
	}
	return out
}

// Close kills every plugin process and waits for them to exit. Actions of
// the plugins fail as retryable afterwards.
func (h *Host) Close() error {
	var wg sync.WaitGroup
	for _, p := range h.procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.close() }()
	}
	wg.Wait()
	return nil
}

// Plugin states in Status.State.
const (
	StateRunning    = "running"    // a process runs and answers
	StateRestarting = "restarting" // the process died; a new one is started after a backoff
	// StateFailed: FailedAfter crashes or failed starts in a row. Its
	// deliveries wait in the queue (not counted as attempts) while
	// erpflow keeps trying to start it, every 30s at most; it is running
	// again after the first start that succeeds.
	StateFailed  = "failed"
	StateStopped = "stopped" // the Host was closed
)

// FailedAfter is how many crashes or failed starts in a row mark a plugin
// failed. A process that ran for a minute resets the count.
const FailedAfter = 5

// Status is the state of one plugin, for GET /v1/plugins and `erpflow
// plugins list`.
type Status struct {
	Name      string
	Path      string
	SHA256    string   // hex SHA-256 of the binary the last process started from
	Types     []string // the action types it provides
	Version   string   // the plugin's own version
	Protocol  int      // the negotiated protocol version
	State     string   // one of the State constants
	PID       int      // 0 when no process runs
	StartedAt time.Time
	Restarts  int // processes started after the first
	// Failures counts the crashes and failed starts in a row (reset by a
	// process that runs for a minute, and by a reload).
	Failures int
	// RetryAt is when the next start is tried, while no process runs.
	RetryAt time.Time
	// LastError is the last crash or failed start, with its time; empty
	// when there was none.
	LastError   string
	LastErrorAt time.Time
}

// Plugins returns the state of every plugin, in Spec order.
func (h *Host) Plugins() []Status {
	out := make([]Status, len(h.procs))
	for i, p := range h.procs {
		out[i] = p.status()
	}
	return out
}

func (p *proc) status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{Name: p.spec.Name, Path: p.spec.Path, Types: p.typeNames(), Version: p.version, Protocol: p.protocol,
		Restarts: p.restarts, Failures: p.failures, LastError: p.lastErr, LastErrorAt: p.lastErrAt, SHA256: p.sha256}
	switch {
	case p.closed:
		st.State = StateStopped
	case p.cur != nil && !p.cur.client.Exited():
		st.State, st.PID, st.StartedAt = StateRunning, p.cur.pid, p.cur.started
	case p.failed:
		st.State, st.RetryAt = StateFailed, p.nextStart
	default:
		st.State, st.RetryAt = StateRestarting, p.nextStart
	}
	return st
}

// pids returns the process ids of the running plugins (tests).
func (h *Host) pids() []int {
	var out []int
	for _, p := range h.procs {
		if pid := p.pid(); pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}

// proc is one plugin: its description and its current process, restarted
// with backoff when it dies.
type proc struct {
	spec     Spec
	log      *slog.Logger
	checksum []byte

	// Fixed at the first start: the registered types keep them.
	types []*actionType

	mu        sync.Mutex
	protocol  int    // negotiated with the current process
	version   string // the current process's
	cur       *instance
	starting  chan struct{} // closed when a restart in progress ends
	closed    bool
	failed    bool          // StateFailed: FailedAfter failures in a row
	kick      chan struct{} // wakes keep to try a start now (Reload of a plugin that is down)
	quit      chan struct{} // closed by close: keep returns
	kept      chan struct{} // closed when keep has returned
	failures  int           // consecutive crashes or failed starts
	restarts  int           // processes started after the first
	sha256    string        // of the binary the last process started from
	lastErr   string        // the last crash or failed start
	lastErrAt time.Time
	nextStart time.Time // no restart before
	allPIDs   []int     // every process started (tests)
}

// actionType is one action type of a plugin, with its compiled schema.
type actionType struct {
	desc        Description
	schema      *jsonschema.Schema // nil: any object
	secretPaths map[string]bool    // by JSON pointer of the config
}

// typeNames returns the names of p's action types.
func (p *proc) typeNames() []string {
	out := make([]string, len(p.types))
	for i, t := range p.types {
		out[i] = t.desc.Type
	}
	return out
}

// describedTypes reads the action types of a Describe answer: the list of
// a protocol 2 plugin, the single type of a protocol 1 one.
func describedTypes(protocol int, d *pb.DescribeResponse) []Description {
	if protocol >= 2 && len(d.Actions) > 0 {
		out := make([]Description, len(d.Actions))
		for i, a := range d.Actions {
			out[i] = Description{Type: a.Type, Version: d.Version, Summary: a.Description, ConfigSchema: json.RawMessage(a.ConfigSchema)}
		}
		return out
	}
	if d.Type == "" {
		return nil
	}
	return []Description{{Type: d.Type, Version: d.Version, ConfigSchema: json.RawMessage(d.ConfigSchema)}}
}

// sameTypes reports whether a restarted process describes the types
// registered at the first start.
func (p *proc) sameTypes(ds []Description) bool {
	if len(ds) != len(p.types) {
		return false
	}
	for i, d := range ds {
		if d.Type != p.types[i].desc.Type {
			return false
		}
	}
	return true
}

// instance is one running plugin process.
type instance struct {
	client   *goplugin.Client
	rpc      pb.ActionPluginClient
	started  time.Time
	pid      int
	protocol int    // negotiated
	sha256   string // of the binary when it started

	// Under proc.mu: the calls running on it, the latest deadline among
	// them, and, while Reload drains it, a channel closed when calls is 0.
	calls int
	until time.Time
	idle  chan struct{}
}

// kill ends the process and the processes it started (glue.Kill).
func (inst *instance) kill() { glue.Kill(inst.client, inst.pid, true) }

func (p *proc) errorf(err error) *Error {
	return &Error{Plugin: p.spec.Name, Path: p.spec.Path, Err: err}
}

// init checks the spec, starts the process and reads the description.
func (p *proc) init(ctx context.Context) error {
	if p.spec.Path == "" {
		return p.errorf(errors.New("path is required"))
	}
	if err := p.parseChecksum(); err != nil {
		return err
	}
	if err := p.spec.checkEnv(); err != nil {
		return p.errorf(err)
	}
	inst, d, err := p.start(ctx)
	if err != nil {
		return err
	}
	p.protocol, p.version = inst.protocol, d.Version
	ds := describedTypes(inst.protocol, d)
	if len(ds) == 0 {
		inst.kill()
		return p.errorf(errors.New("plugin describes no action type"))
	}
	seen := map[string]bool{}
	for _, desc := range ds {
		if desc.Type == "" || seen[desc.Type] {
			inst.kill()
			return p.errorf(fmt.Errorf("plugin describes an empty or repeated action type %q", desc.Type))
		}
		seen[desc.Type] = true
		t := &actionType{desc: desc}
		if strings.TrimSpace(string(desc.ConfigSchema)) != "" {
			if t.schema, t.secretPaths, err = compileSchema(desc.Type, desc.ConfigSchema); err != nil {
				inst.kill()
				return p.errorf(fmt.Errorf("the config schema of action type %q is invalid: %w", desc.Type, err))
			}
		}
		p.types = append(p.types, t)
	}
	p.cur, p.sha256 = inst, inst.sha256
	return nil
}

// parseChecksum reads Spec.SHA256.
func (p *proc) parseChecksum() error {
	sum, err := glue.ParseChecksum(p.spec.SHA256)
	if err != nil {
		return p.errorf(err)
	}
	p.checksum = sum
	return nil
}

// start runs a new process of p.spec and describes it.
func (p *proc) start(ctx context.Context) (*instance, *pb.DescribeResponse, error) {
	return p.startFrom(ctx, p.spec.Path, p.spec.SHA256, p.checksum, p.spec.environ(os.Environ()))
}

// filePath is path as a file path, as os.Stat and the checksum read it:
// exec.Command would look a bare name up in $PATH and run another file.
func filePath(path string) string {
	if strings.ContainsRune(path, filepath.Separator) {
		return path
	}
	return "." + string(filepath.Separator) + path
}

// startFrom runs a new process of the binary at path (whose sha256, when
// sum is set, must be sum) in the environment env, and describes it.
func (p *proc) startFrom(ctx context.Context, path, sha string, sum []byte, env []string) (*instance, *pb.DescribeResponse, error) {
	errorf := func(err error) *Error { return &Error{Plugin: p.spec.Name, Path: path, Err: err} }
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, errorf(fmt.Errorf("binary not found: %w", err))
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return nil, nil, errorf(errors.New("not an executable file"))
	}
	client, raw, err := glue.Start(glue.Launch{
		Handshake: Handshake,
		Versions:  glue.ProtocolVersions,
		Name:      actionPluginName,
		Plugin:    &actionPlugin{},
		Cmd:       exec.Command(filePath(path)),
		Env:       env,
		OwnGroup:  true,
		Log:       p.log,
		Checksum:  sum,
		SHA256:    sha,
	})
	if err != nil {
		return nil, nil, errorf(err)
	}
	inst := &instance{client: client, rpc: raw.(pb.ActionPluginClient), started: time.Now(), protocol: client.NegotiatedVersion()}
	if sum != nil {
		inst.sha256 = hex.EncodeToString(sum) // go-plugin checked the binary against it before running it
	} else {
		inst.sha256 = glue.FileSHA256(path)
	}
	if rc := client.ReattachConfig(); rc != nil {
		inst.pid = rc.Pid
	}
	dctx, cancel := context.WithTimeout(ctx, glue.StartTimeout)
	defer cancel()
	d, err := inst.rpc.Describe(dctx, &pb.DescribeRequest{})
	if err != nil {
		inst.kill()
		return nil, nil, errorf(fmt.Errorf("describe: %w", err))
	}
	p.mu.Lock()
	p.allPIDs = append(p.allPIDs, inst.pid)
	p.mu.Unlock()
	return inst, d, nil
}

// backoff is the wait before restart number n (1-based) after consecutive
// failures: the first restart is immediate, then 250ms doubling to 30s.
func backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := 250 * time.Millisecond
	for i := 2; i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

// Waits of attempts that find no process to run on.
const (
	// startWait bounds how long an attempt waits for another caller's
	// start of the plugin before it goes back to the queue.
	startWait = 2 * time.Second
	// minUnavailable is the shortest wait an unavailable attempt is
	// given (actions.Outcome.RetryAfter).
	minUnavailable = time.Second
	// watchInterval is how often keep checks that the running process
	// lives, so that one dying between attempts is restarted before the
	// next one arrives.
	watchInterval = time.Second
)

// unavailableError is a call that found no process to run on: the
// attempt was not made.
type unavailableError struct {
	retryIn time.Duration
	err     error
}

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// Is makes a plugin with no process an actions.ErrUnavailable.
func (e *unavailableError) Is(target error) bool { return target == actions.ErrUnavailable }

func (p *proc) unavailable(retryIn time.Duration, format string, args ...any) error {
	return &unavailableError{retryIn: max(retryIn, minUnavailable), err: fmt.Errorf(format, args...)}
}

// instance returns the running process, counting the call in its calls
// (the caller ends it with p.done). A dead process is restarted when its
// backoff has passed; one caller restarts, the others wait for it at most
// wait. An error is an *unavailableError: nothing was tried.
func (p *proc) instance(ctx context.Context, wait time.Duration) (*instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var waitEnd <-chan time.Time
	for {
		if p.closed {
			return nil, p.unavailable(5*time.Second, "%w", ErrClosed)
		}
		if p.cur != nil && !p.cur.client.Exited() {
			return p.cur.begin(ctx), nil
		}
		if p.cur != nil { // exited without us noticing a failed call
			p.failLocked(p.cur, errors.New("the process exited"))
		}
		if p.starting == nil {
			break
		}
		// Another caller or keep is starting a process, which may take
		// up to glue.StartTimeout: wait for it only as for a reload, so
		// that attempts do not hold every engine worker meanwhile.
		if waitEnd == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			waitEnd = t.C
		}
		ch := p.starting
		p.mu.Unlock()
		select {
		case <-ch:
		case <-waitEnd:
			p.mu.Lock()
			return nil, p.unavailable(wait, "plugin %q is starting", p.spec.Name)
		case <-ctx.Done():
			p.mu.Lock()
			return nil, p.unavailable(0, "plugin %q is restarting: %w", p.spec.Name, ctx.Err())
		}
		p.mu.Lock()
	}
	if left := time.Until(p.nextStart); left > 0 {
		what := "restarting"
		if p.failed {
			what = "failed"
		}
		return nil, p.unavailable(left, "plugin %q is %s (next try in %s after %d failures in a row)", p.spec.Name, what, left.Round(time.Millisecond), p.failures)
	}
	inst, err := p.restartLocked(ctx)
	if err != nil {
		return nil, p.unavailable(time.Until(p.nextStart), "%w", err)
	}
	return inst.begin(ctx), nil
}

// begin counts a call on inst that ends by ctx's deadline. proc.mu is held.
func (inst *instance) begin(ctx context.Context) *instance {
	inst.calls++
	if dl, ok := ctx.Deadline(); ok && dl.After(inst.until) {
		inst.until = dl
	}
	return inst
}

// done ends a call that instance counted.
func (p *proc) done(inst *instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	inst.calls--
	if inst.calls == 0 && inst.idle != nil {
		close(inst.idle)
		inst.idle = nil
	}
}

// restartLocked starts a new process in place of a dead one. p.mu is
// held (and released while the process starts); no process runs and no
// start is in progress.
func (p *proc) restartLocked(ctx context.Context) (*instance, error) {
	done := make(chan struct{})
	p.starting = done
	p.mu.Unlock()
	inst, d, err := p.start(ctx)
	if err == nil {
		err = p.checkTypes(inst, d)
	}
	p.mu.Lock()
	p.starting = nil
	close(done)
	if err == nil && p.closed {
		inst.kill()
		err = ErrClosed
	}
	if err != nil {
		p.startFailedLocked(err)
		p.log.Error("plugin restart failed", "error", err, "failures", p.failures)
		return nil, err
	}
	p.log.Info("plugin restarted", "pid", inst.pid, "failures", p.failures)
	p.adoptLocked(inst, d)
	return inst, nil
}

// startFailedLocked records a start that failed: the next one waits a
// backoff step longer, and enough of them in a row make p failed. p.mu
// is held.
func (p *proc) startFailedLocked(err error) {
	p.failures++
	p.nextStart = time.Now().Add(backoff(p.failures + 1))
	p.lastErr, p.lastErrAt = err.Error(), time.Now()
	p.checkFailedLocked()
}

// adoptLocked makes the new process inst (described by d) the one calls
// go to. p.mu is held.
func (p *proc) adoptLocked(inst *instance, d *pb.DescribeResponse) {
	p.restarts++
	p.cur, p.sha256, p.version, p.protocol = inst, inst.sha256, d.Version, inst.protocol
	if p.failed {
		p.failed = false
		p.log.Info("plugin is back after failing; its waiting deliveries run now", "pid", inst.pid, "failures", p.failures)
	}
}

// checkTypes kills a new process that does not describe the types
// registered at the first start.
func (p *proc) checkTypes(inst *instance, d *pb.DescribeResponse) error {
	ds := describedTypes(inst.protocol, d)
	if p.sameTypes(ds) {
		// The registered types keep the first start's schema and secret
		// keys: a new process must describe the same, or a key it marks
		// secret would be stored and shown.
		for i, d := range ds {
			if !sameJSON(d.ConfigSchema, p.types[i].desc.ConfigSchema) {
				inst.kill()
				return p.errorf(fmt.Errorf("the new process describes another config schema for the action type %q: restart erpflow to change a plugin's config schema", d.Type))
			}
		}
		return nil
	}
	inst.kill()
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.Type
	}
	return p.errorf(fmt.Errorf("the new process describes the types %q, not %q: restart erpflow to change a plugin's types", names, p.typeNames()))
}

// sameJSON reports whether a and b are the same JSON but for spaces.
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// checkFailedLocked marks p failed when it has failed FailedAfter times in
// a row. p.mu is held.
func (p *proc) checkFailedLocked() {
	if p.failed || p.failures < FailedAfter || p.closed {
		return
	}
	p.failed = true
	p.log.Error(fmt.Sprintf("plugin failed: %d crashes in a row; its deliveries wait until it comes back", p.failures),
		"error", p.lastErr, "next_try", time.Until(p.nextStart).Round(time.Millisecond))
}

// keep runs while the Host is open: it notices a process that died
// between calls and starts a new one after the backoff, so that a plugin
// comes back (and leaves StateFailed) without waiting for a delivery.
func (p *proc) keep() {
	defer close(p.kept)
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		p.mu.Lock()
		var wait <-chan struct{}
		var timer *time.Timer
		switch {
		case p.closed:
			p.mu.Unlock()
			return
		case p.starting != nil:
			wait = p.starting
		case p.cur != nil && !p.cur.client.Exited():
		case p.cur != nil:
			p.failLocked(p.cur, errors.New("the process exited"))
			p.mu.Unlock()
			continue
		case time.Until(p.nextStart) > 0:
			timer = time.NewTimer(time.Until(p.nextStart))
		default:
			_, _ = p.restartLocked(context.Background())
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		var fire <-chan time.Time
		if timer != nil {
			fire = timer.C
		}
		select {
		case <-p.quit:
		case <-wait:
		case <-fire:
		case <-p.kick:
		case <-tick.C:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// wake makes keep look at p now.
func (p *proc) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// fail marks inst broken (it crashed or stopped answering): it is killed
// and a new process is started after the backoff.
func (p *proc) fail(inst *instance, cause error) {
	p.mu.Lock()
	broken := p.cur == inst
	if broken {
		p.failLocked(inst, cause)
	}
	failures := p.failures
	p.mu.Unlock()
	if broken {
		p.log.Error("plugin failed; restarting", "error", cause, "pid", inst.pid, "failures", failures)
	}
}

// failLocked drops the current process inst. p.mu is held.
func (p *proc) failLocked(inst *instance, cause error) {
	p.cur = nil
	if time.Since(inst.started) > time.Minute {
		p.failures = 0 // it ran well for a while: this is a fresh problem
	}
	p.failures++
	p.nextStart = time.Now().Add(backoff(p.failures))
	p.lastErr, p.lastErrAt = cause.Error(), time.Now()
	p.checkFailedLocked()
	p.wake()
	go inst.kill()
}

func (p *proc) close() {
	p.mu.Lock()
	if !p.closed {
		close(p.quit)
	}
	p.closed = true
	inst := p.cur
	p.cur = nil
	p.mu.Unlock()
	if inst != nil {
		inst.kill()
	}
	if p.kept != nil {
		<-p.kept // a start it made meanwhile is killed
	}
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return 0
	}
	return p.cur.pid
}

func (p *proc) validate(ctx context.Context, req *pb.ValidateRequest) (*pb.ValidateResponse, error) {
	inst, err := p.instance(ctx, validateTimeout)
	if err != nil {
		return nil, fmt.Errorf("plugin %q cannot validate the config: %w", p.spec.Name, err)
	}
	defer p.done(inst)
	resp, err := inst.rpc.Validate(ctx, req)
	if err != nil {
		if ctx.Err() == nil && !cutOff(ctx, err) && gone(inst, err) {
			p.fail(inst, err)
			err = &unavailableError{retryIn: minUnavailable, err: err} // it crashed: try again once it is back
		}
		return nil, fmt.Errorf("plugin %q cannot validate the config: %w", p.spec.Name, err)
	}
	return resp, nil
}

// execute calls the plugin. A plugin that could not be called makes the
// attempt Unavailable (it waits in the queue, not counted); a failure to
// get an answer is retryable: the delivery stays queued and nothing is
// lost.
func (p *proc) execute(ctx context.Context, timeout time.Duration, req *pb.ExecuteRequest) actions.Outcome {
	inst, err := p.instance(ctx, startWait)
	if err != nil {
		var ue *unavailableError
		retryIn := minUnavailable
		if errors.As(err, &ue) {
			retryIn = ue.retryIn
		}
		return actions.Outcome{Status: actions.Unavailable, RetryAfter: retryIn, Error: fmt.Sprintf("plugin %q unavailable: %v", p.spec.Name, err)}
	}
	defer p.done(inst)
	resp, err := inst.rpc.Execute(ctx, req)
	if err != nil {
		switch {
		case cutOff(ctx, err):
			go p.probe(inst)
			return actions.Outcome{Status: actions.Retryable, Error: fmt.Sprintf("plugin %q did not answer within the timeout of %s", p.spec.Name, timeout)}
		case ctx.Err() != nil:
			return actions.Outcome{Status: actions.Retryable, Error: fmt.Sprintf("plugin %q: canceled: %v", p.spec.Name, ctx.Err())}
		case !gone(inst, err):
			return actions.Outcome{Status: actions.Retryable, Error: fmt.Sprintf("plugin %q answered with an error: %v", p.spec.Name, grpcMessage(err))}
		}
		p.fail(inst, err)
		return actions.Outcome{Status: actions.Retryable, Error: fmt.Sprintf("plugin %q crashed or failed during the attempt (%v); it is restarted", p.spec.Name, grpcMessage(err))}
	}
	return outcomeFromPB(resp.Outcome)
}

// gone reports whether a call's error means that inst's process crashed
// or cannot be reached (gRPC Unavailable), rather than an error status
// the plugin answered with (a Python exception is Unknown): only then is
// the process killed and restarted.
func gone(inst *instance, err error) bool {
	return status.Code(err) == codes.Unavailable || inst.client.Exited()
}

// cutOff reports whether a call's error means it was cut off at ctx's
// deadline. ctx.Err() alone does not tell: gRPC sends the deadline to the
// plugin (grpc-timeout), whose server resets the stream (RST_STREAM CANCEL)
// when it passes, and that reset can reach us before this process has run
// ctx's own timer — under load ctx.Err() is then still nil, and the
// error is "stream terminated by RST_STREAM" with code DeadlineExceeded
// (or Canceled). Taking that for a crash would kill a healthy plugin.
func cutOff(ctx context.Context, err error) bool {
	switch ctx.Err() {
	case context.DeadlineExceeded:
		return true
	case nil:
	default:
		return false // the caller canceled
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return false
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded:
		return true
	case codes.Canceled:
		// Only the plugin's gRPC server cancels a stream from its side
		// while the process lives (a crash is Unavailable), and it does
		// so only at the deadline we sent it.
		return true
	}
	return !time.Now().Before(dl)
}

// probe checks a plugin that let a call time out: one that no longer
// answers a ping is restarted; one that is merely slow keeps running.
func (p *proc) probe(inst *instance) {
	rc, err := inst.client.Client()
	if err == nil {
		done := make(chan error, 1)
		go func() { done <- rc.Ping() }()
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			err = errors.New("no answer to ping within 5s")
		}
	}
	if err != nil {
		p.fail(inst, fmt.Errorf("health check after a timeout: %w", err))
	}
}

func grpcMessage(err error) string {
	s := err.Error()
	if i := strings.Index(s, "desc = "); i >= 0 {
		return s[i+len("desc = "):]
	}
	return s
}

// compileSchema compiles a plugin's JSON Schema and finds its secret
// properties ("x-secret": true or "writeOnly": true), by JSON pointer of
// the config.
func compileSchema(typ string, src []byte) (*jsonschema.Schema, map[string]bool, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(src))
	if err != nil {
		return nil, nil, err
	}
	c := jsonschema.NewCompiler()
	url := "erpflow-plugin://" + typ + "/schema.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, nil, err
	}
	sch, err := c.Compile(url)
	if err != nil {
		return nil, nil, err
	}
	secrets := map[string]bool{}
	findSecrets(doc, "", secrets, 0)
	return sch, secrets, nil
}

func findSecrets(schema any, ptr string, out map[string]bool, depth int) {
	m, ok := schema.(map[string]any)
	if !ok || depth > 32 {
		return
	}
	props, _ := m["properties"].(map[string]any)
	for name, ps := range props {
		p := ptr + "/" + escapePointer(name)
		pm, _ := ps.(map[string]any)
		if pm == nil {
			continue
		}
		if pm["x-secret"] == true || pm["writeOnly"] == true {
			out[p] = true
			continue
		}
		findSecrets(pm, p, out, depth+1)
	}
}
