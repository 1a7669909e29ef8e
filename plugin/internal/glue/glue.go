// Package glue starts go-plugin processes the way erpflow does, for both
// the action-plugin host (package plugin) and the engine plugin (package
// engineplugin): gRPC only, AutoMTLS, an optional checksum, logs routed
// into slog, and start errors that say what to do.
package glue

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// ProtocolVersion is the current version of the action-plugin contract
// (proto package erpflow.plugin.v1; see action.proto for what each version
// means).
const ProtocolVersion = 2

// ProtocolVersions are the action-plugin protocol versions erpflow speaks:
// the current one and the previous one, oldest first.
var ProtocolVersions = []int{1, 2}

// StartTimeout bounds the start of one plugin process (exec + handshake).
const StartTimeout = 20 * time.Second

// Typed causes of start failures (re-exported by package plugin).
var (
	ErrChecksum  = errors.New("checksum mismatch")
	ErrHandshake = errors.New("handshake failed")
)

// Launch describes one process to start.
type Launch struct {
	Handshake goplugin.HandshakeConfig
	Name      string          // the plugin's name in the PluginSet
	Plugin    goplugin.Plugin // its client side
	// Versions, when set, are the protocol versions offered (the
	// plugin picks one; Client.NegotiatedVersion says which), each served
	// by Plugin. Default: only Handshake.ProtocolVersion.
	Versions []int
	Cmd      *exec.Cmd
	// Env, when not nil, is the process's whole environment, besides the
	// handshake variables go-plugin adds. nil: the host's environment.
	Env []string
	// OwnGroup starts the process as the leader of a process group of
	// its own (Unix), so that KillGroup(pid) ends the processes it
	// started too. It then no longer gets the terminal's Ctrl-C: the
	// host ends it. Default false.
	OwnGroup bool
	Log      *slog.Logger // receives go-plugin's and the plugin's logs
	Checksum []byte       // from ParseChecksum; nil: not checked
	SHA256   string       // the configured checksum, for the mismatch message
}

// MaxMessage bounds one answer of a plugin (an outcome, a validation, its
// schema): gRPC's own default.
const MaxMessage = 4 << 20

// Start starts the process and dispenses the plugin. Errors are the
// causes; callers wrap them with the plugin's name and path.
func Start(l Launch) (*goplugin.Client, any, error) {
	cfg := &goplugin.ClientConfig{
		HandshakeConfig:  l.Handshake,
		Plugins:          goplugin.PluginSet{l.Name: l.Plugin},
		Cmd:              l.Cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Managed:          true,
		Logger:           newHCLog(l.Log, ""),
		StartTimeout:     StartTimeout,
		SyncStdout:       &lineLogger{log: func(s string) { l.Log.Info(s, "stream", "stdout") }},
		SyncStderr:       &lineLogger{log: func(s string) { l.Log.Info(s, "stream", "stderr") }},
		// go-plugin lets a plugin answer 2 GiB at a time; a bigger
		// answer than MaxMessage is a failed call.
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessage))},
	}
	if l.Env != nil {
		cfg.SkipHostEnv = true
		l.Cmd.Env = l.Env
	}
	if l.OwnGroup {
		ownGroup(l.Cmd)
	}
	if l.Checksum != nil {
		cfg.SecureConfig = &goplugin.SecureConfig{Checksum: l.Checksum, Hash: sha256.New()}
	}
	spoken := []int{int(l.Handshake.ProtocolVersion)}
	if len(l.Versions) > 0 {
		spoken = l.Versions
		cfg.Plugins = nil
		cfg.VersionedPlugins = map[int]goplugin.PluginSet{}
		for _, v := range l.Versions {
			cfg.VersionedPlugins[v] = goplugin.PluginSet{l.Name: l.Plugin}
		}
	}
	client := goplugin.NewClient(cfg)
	kill := func() {
		pid := 0
		if l.Cmd.Process != nil {
			pid = l.Cmd.Process.Pid
		}
		Kill(client, pid, l.OwnGroup)
	}
	rpcClient, err := client.Client()
	if err != nil {
		kill()
		return nil, nil, explainStart(err, l.Cmd.Path, l.SHA256, spoken)
	}
	raw, err := rpcClient.Dispense(l.Name)
	if err != nil {
		kill()
		return nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return client, raw, nil
}

// killGroupAfter is how long Kill lets go-plugin end the process (it
// asks, then kills it after 2 s) before it kills the process group.
const killGroupAfter = 2500 * time.Millisecond

// Kill ends a process Start started: go-plugin asks it to stop, then kills
// it; with group (Launch.OwnGroup), what is left of its process group
// (the processes it started) is killed too. go-plugin reaps the process
// only once its stdout and stderr are closed, so a child that inherited
// them would keep client.Kill waiting for ever: the group is killed once
// that returns or, at the latest, killGroupAfter. Until the process is
// reaped its pid, the group's id, cannot be reused.
func Kill(client *goplugin.Client, pid int, group bool) {
	if !group {
		client.Kill()
		return
	}
	done := make(chan struct{})
	go func() { client.Kill(); close(done) }()
	t := time.NewTimer(killGroupAfter)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	_ = KillGroup(pid)
	<-done
}

// ParseChecksum reads a configured hex SHA-256; "" means not checked.
func ParseChecksum(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	sum, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("sha256 must be 64 hex digits, got %q", s)
	}
	return sum, nil
}

// pluginVersionRE finds the version a plugin answered in go-plugin's
// "incompatible API version" error.
var pluginVersionRE = regexp.MustCompile(`(?i)plugin version: (\d+)`)

// explainStart turns go-plugin's start errors into ones that say what to
// do. spoken are the protocol versions offered.
func explainStart(err error, path, configured string, spoken []int) error {
	msg := err.Error()
	switch {
	case errors.Is(err, goplugin.ErrChecksumsDoNotMatch):
		return fmt.Errorf("%w: the binary's sha256 is %s, the config says %s", ErrChecksum, FileSHA256(path), configured)
	case strings.Contains(strings.ToLower(msg), "incompatible api version"):
		theirs := "another version"
		if m := pluginVersionRE.FindStringSubmatch(msg); m != nil {
			theirs = "version " + m[1]
		}
		return fmt.Errorf("%w: the plugin speaks protocol %s, erpflow speaks %s: rebuild the plugin with an erpflow SDK of a supported version", ErrHandshake, theirs, Versions(spoken))
	case strings.Contains(msg, "exited before we could connect"),
		strings.Contains(msg, "Unrecognized remote plugin message"),
		strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("%w: not an erpflow action plugin of protocol %s, or it failed at start (%s); build it with plugin.Serve from github.com/erpflow/erpflow/plugin", ErrHandshake, Versions(spoken), msg)
	case strings.Contains(msg, "Unsupported plugin protocol"):
		return fmt.Errorf("%w: the plugin does not speak gRPC: %s", ErrHandshake, msg)
	}
	return err
}

// Versions lists protocol versions for messages: "1", "1 and 2", "1, 2 and 3".
func Versions(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// FileSHA256 is the hex SHA-256 of the file at path, "unreadable" when it
// cannot be read.
func FileSHA256(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unreadable"
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "unreadable"
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ExitWithParent ends a plugin process once the process that started it
// is gone. erpflow kills its plugins when it stops, but not when it is
// itself killed with SIGKILL; the plugin would then live on, reparented.
func ExitWithParent() {
	ppid := os.Getppid()
	if ppid <= 1 {
		return
	}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for range t.C {
			if os.Getppid() != ppid {
				os.Exit(0)
			}
		}
	}()
}
