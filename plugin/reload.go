package plugin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/erpflow/erpflow/plugin/internal/glue"
	pb "github.com/erpflow/erpflow/plugin/proto/v1"
)

// drainGrace is how long past the latest deadline of its in-flight calls
// a reload waits for the old process before it is killed.
const drainGrace = 5 * time.Second

// Reload applies the server config's `plugins:` again (SIGHUP). Each
// plugin, matched by name, is restarted when the SHA-256 of its binary on
// disk differs from its running process's (Status.SHA256), or its
// configured path, sha256, env or inherit_env changed:
//
//   - a new process is started beside the old one, which keeps serving;
//     its checksum is checked, and it must describe the same action types
//     and config schemas; else the old process keeps running (Linux keeps
//     a replaced binary's file until it exits), the error is logged, set
//     as LastError and returned;
//   - the new process takes the new attempts ("plugin reloaded" is
//     logged with the old and new sha256);
//   - the old one's in-flight calls run to their end on it, and it is
//     killed once they have, or at the latest 5s after their timeout;
//     Reload returns then.
//
// A plugin that is down (restarting or failed) is started at once.
// Plugins added to or removed from specs are logged and left alone: that
// takes a restart of erpflow. Reload returns the errors of the plugins
// it could not reload, joined.
func (h *Host) Reload(ctx context.Context, specs []Spec) error {
	h.reload.Lock()
	defer h.reload.Unlock()
	want := map[string]Spec{}
	var names []string
	for _, s := range specs {
		if s.Name == "" {
			s.Name = filepath.Base(s.Path)
		}
		want[s.Name] = s
		names = append(names, s.Name)
	}
	var errs []error
	have := map[string]bool{}
	for _, p := range h.procs {
		have[p.spec.Name] = true
		s, ok := want[p.spec.Name]
		if !ok {
			h.log.Warn("plugin removed from the config: it keeps running until erpflow is restarted", "plugin", p.spec.Name)
			continue
		}
		if err := p.reload(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range names {
		if !have[name] {
			h.log.Warn("plugin added to the config: it starts when erpflow is restarted", "plugin", name, "path", want[name].Path)
		}
	}
	return errors.Join(errs...)
}

// reload restarts p from s when its binary or config changed, or when no
// process runs (see Host.Reload).
func (p *proc) reload(ctx context.Context, s Spec) error {
	if s.Path == "" {
		return p.errorf(errors.New("path is required"))
	}
	sum, err := glue.ParseChecksum(s.SHA256)
	if err == nil {
		err = s.checkEnv()
	}
	if err != nil {
		return &Error{Plugin: p.spec.Name, Path: s.Path, Err: err}
	}
	disk := glue.FileSHA256(s.Path)

	p.mu.Lock()
	// Become the only one to start a process: a crash restart (keep, or
	// an attempt) waits for this one. Attempts meanwhile run on the old
	// process, which serves until the new one has passed its checks.
	for p.starting != nil {
		ch := p.starting
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
	}
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	old := p.cur
	if old != nil && old.client.Exited() {
		p.failLocked(old, errors.New("the process exited"))
		old = nil
	}
	changed := s.Path != p.spec.Path || !strings.EqualFold(s.SHA256, p.spec.SHA256) ||
		!maps.Equal(s.Env, p.spec.Env) || s.InheritEnv != p.spec.InheritEnv
	if old != nil && !changed && disk == old.sha256 {
		p.mu.Unlock()
		return nil
	}
	starting := make(chan struct{})
	p.starting = starting
	p.mu.Unlock()

	var (
		inst *instance
		d    *pb.DescribeResponse
	)
	if err = ctx.Err(); err == nil { // erpflow is stopping: keep what runs
		inst, d, err = p.startFrom(ctx, s.Path, s.SHA256, sum, s.environ(os.Environ()))
	}
	if err == nil {
		err = p.checkTypes(inst, d)
	}

	p.mu.Lock()
	if err == nil && p.closed {
		inst.kill()
		err = ErrClosed
	}
	oldSHA := p.sha256
	switch {
	case err != nil && old != nil && p.cur == old:
		p.lastErr, p.lastErrAt = err.Error(), time.Now()
		p.log.Error("plugin reload failed; the old process keeps running", "error", err, "pid", old.pid, "sha256", oldSHA)
	case err != nil:
		// Nothing runs: the new config is the one to bring back.
		p.spec.Path, p.spec.SHA256, p.spec.Env, p.spec.InheritEnv, p.checksum = s.Path, s.SHA256, s.Env, s.InheritEnv, sum
		p.startFailedLocked(err)
		p.log.Error("plugin reload failed; no process runs", "error", err, "failures", p.failures)
	default:
		p.spec.Path, p.spec.SHA256, p.spec.Env, p.spec.InheritEnv, p.checksum = s.Path, s.SHA256, s.Env, s.InheritEnv, sum
		p.failures, p.nextStart = 0, time.Time{}
		p.adoptLocked(inst, d)
		oldPID := 0
		if old != nil {
			oldPID = old.pid
		}
		p.log.Info("plugin reloaded", "old_sha256", oldSHA, "new_sha256", inst.sha256, "old_pid", oldPID, "pid", inst.pid)
	}
	p.starting = nil
	close(starting)
	retire := old != nil && p.cur != old
	// The old process finishes the calls it has; new ones go to the new.
	var idle chan struct{}
	var until time.Time
	if retire && old.calls > 0 {
		idle = make(chan struct{})
		old.idle, until = idle, old.until
		if until.IsZero() {
			until = time.Now().Add(DefaultTimeout)
		}
	}
	p.mu.Unlock()
	p.wake()
	if idle != nil {
		t := time.NewTimer(time.Until(until) + drainGrace)
		select {
		case <-idle:
		case <-t.C:
			p.log.Warn("plugin reload: attempts in flight on the old process did not end by their timeout; it is killed")
		case <-ctx.Done():
		}
		t.Stop()
	}
	if retire {
		old.kill()
	}
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return nil
}
