// Command echo is an action plugin for erpflow's own tests: it records
// what it receives, and can crash, hang or fail on demand.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/erpflow/erpflow/plugin"
)

type echo struct{}

// secretMessage marks "message" x-secret in the schema: set while a file
// named like the binary plus ".secret-message" exists at start (a new
// version of the plugin with another config schema).
var secretMessage bool

// version is the plugin's version: the content of a file named like the
// binary plus ".version" at start, else 1.0.0.
var version = "1.0.0"

type config struct {
	Message   string `json:"message"`
	Token     string `json:"token"`
	CrashFile string `json:"crash_file"` // exit at Execute when this file exists (and remove it)
	Hang      bool   `json:"hang"`       // never answer, ignoring the context
	Fail      string `json:"fail"`       // "retry", "permanent" or "panic"
	EchoToken bool   `json:"echo_token"` // fail (retry), quoting the token
	Out       string `json:"out"`        // append what was received to this file
	WaitFile  string `json:"wait_file"`  // answer only once this file exists (or the context ends)
	Big       int    `json:"big"`        // fail with an error and a detail of this many bytes
	Spawn     string `json:"spawn"`      // start a child process (sleep) that outlives the attempt, its pid recorded as "child": "quiet" (no stdio) or "inherit" (the plugin's stdout and stderr)
}

func (echo) Describe() plugin.Description {
	message := `{"type": "string"}`
	if secretMessage {
		message = `{"type": "string", "x-secret": true}`
	}
	return plugin.Description{
		Type:    "echo",
		Version: version,
		ConfigSchema: json.RawMessage(`{
			"type": "object",
			"properties": {
				"message": ` + message + `,
				"token": {"type": "string", "x-secret": true},
				"crash_file": {"type": "string"},
				"hang": {"type": "boolean"},
				"fail": {"enum": ["retry", "permanent", "panic"]},
				"echo_token": {"type": "boolean"},
				"out": {"type": "string"},
				"wait_file": {"type": "string"},
				"big": {"type": "integer"},
				"spawn": {"enum": ["quiet", "inherit"]},
				"tags": {"type": "array", "items": {"type": "string"}}
			},
			"required": ["message"],
			"additionalProperties": false
		}`),
	}
}

func (echo) Validate(raw json.RawMessage) error {
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	if c.Message == "panic in validate" {
		panic("asked to panic in Validate")
	}
	if c.Message == "forbidden" {
		return errors.Join(plugin.Invalid("message", "must not be %q", c.Message))
	}
	return nil
}

func (echo) Execute(ctx context.Context, d *plugin.Delivery) plugin.Outcome {
	var c config
	if err := json.Unmarshal(d.Config, &c); err != nil {
		return plugin.Permanent(err)
	}
	if c.CrashFile != "" {
		if _, err := os.Stat(c.CrashFile); err == nil {
			_ = os.Remove(c.CrashFile)
			os.Exit(3)
		}
	}
	if c.Hang {
		select {} // a plugin that ignores its context
	}
	if c.WaitFile != "" {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for _, err := os.Stat(c.WaitFile); err != nil; _, err = os.Stat(c.WaitFile) {
			select {
			case <-ctx.Done():
				return plugin.Retry(ctx.Err(), 0)
			case <-tick.C:
			}
		}
	}
	child := 0
	if c.Spawn != "" {
		cmd := exec.Command("sleep", "300")
		if c.Spawn == "inherit" {
			// The process's own descriptors 1 and 2, which erpflow reads
			// (plugin.Serve points os.Stdout and os.Stderr elsewhere).
			cmd.Stdout, cmd.Stderr = os.NewFile(1, "stdout"), os.NewFile(2, "stderr")
		}
		if err := cmd.Start(); err != nil {
			return plugin.Retry(err, 0)
		}
		child = cmd.Process.Pid
		go cmd.Wait() //nolint:errcheck // reaped when it ends
	}
	if c.Out != "" {
		rec, _ := json.Marshal(map[string]any{
			"id": d.ID, "attempt": d.Attempt, "rule": d.Rule, "test": d.Test,
			"event": d.Event, "config": d.Config, "pid": os.Getpid(), "env": os.Environ(), "child": child,
		})
		f, err := os.OpenFile(c.Out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return plugin.Retry(err, 0)
		}
		_, err = f.Write(append(rec, '\n'))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return plugin.Retry(err, 0)
		}
	}
	plugin.Logger().Info("executed", "delivery", d.ID, "attempt", d.Attempt)
	fmt.Println("plain stdout line for", d.ID) // synced to erpflow's log
	if c.EchoToken {
		out := plugin.Retry(fmt.Errorf("the far end refused the token %q", c.Token), 0)
		out.Detail, _ = json.Marshal(map[string]string{"sent": "Bearer " + c.Token})
		return out
	}
	if c.Big > 0 {
		out := plugin.Retry(errors.New(strings.Repeat("e", c.Big)), 0)
		out.Detail, _ = json.Marshal(map[string]string{"big": strings.Repeat("d", c.Big)})
		return out
	}
	switch c.Fail {
	case "retry":
		return plugin.Retry(fmt.Errorf("asked to fail: %s", c.Message), 2*time.Second)
	case "permanent":
		return plugin.Permanent(fmt.Errorf("asked to fail: %s", c.Message))
	case "panic":
		panic("asked to panic: " + c.Message)
	}
	out := plugin.Success()
	out.Detail, _ = json.Marshal(map[string]any{"message": c.Message, "pid": os.Getpid()})
	return out
}

func main() {
	// A plugin that cannot start: exits before the handshake while a file
	// named like the binary plus ".down" exists.
	if exe, err := os.Executable(); err == nil {
		if _, err := os.Stat(exe + ".down"); err == nil {
			fmt.Fprintln(os.Stderr, "echo: down (", exe+".down", "exists)")
			os.Exit(4)
		}
		_, err := os.Stat(exe + ".secret-message")
		secretMessage = err == nil
		if b, err := os.ReadFile(exe + ".version"); err == nil {
			version = string(b)
		}
	}
	plugin.Serve(echo{})
}
