package plugintest

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
)

// Run calls f with a TB for use outside `go test`, in a program or an
// Example: Fatalf ends f (as it ends a test), the cleanups run when f
// returns, last registered first. The result is nil, or the failures
// followed by what was logged.
func Run(f func(t TB)) error {
	r := &runner{}
	r.call(func() { f(r) })
	r.mu.Lock()
	cleanups := r.cleanups
	r.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		r.call(cleanups[i])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) == 0 {
		return nil
	}
	msg := strings.Join(r.failures, "\n")
	if len(r.logs) > 0 {
		msg += "\nlog:\n" + strings.Join(r.logs, "\n")
	}
	return errors.New(msg)
}

type runner struct {
	mu       sync.Mutex
	failures []string
	logs     []string
	cleanups []func()
}

// call runs f on its own goroutine, so that Fatalf can end it with
// runtime.Goexit the way the testing package ends a test.
func (r *runner) call(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil {
				r.fail(fmt.Sprintf("panic: %v", v))
			}
		}()
		f()
	}()
	<-done
}

func (r *runner) fail(msg string) {
	r.mu.Lock()
	r.failures = append(r.failures, msg)
	r.mu.Unlock()
}

func (r *runner) Helper() {}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

func (r *runner) Logf(format string, args ...any) {
	r.mu.Lock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *runner) Errorf(format string, args ...any) { r.fail(fmt.Sprintf(format, args...)) }

func (r *runner) Fatalf(format string, args ...any) {
	r.fail(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
