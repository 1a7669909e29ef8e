package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
)

// A plugin's Execute reports how the attempt went with one of three
// helpers.
func ExampleRetry() {
	o := Retry(errors.New("421 mail server busy"), 30*time.Second)
	fmt.Println(o.Status, o.RetryAfter, o.Error)
	fmt.Println(Permanent(errors.New("550 no such mailbox")).Status)
	fmt.Println(Success().Status)
	// Output:
	// retryable 30s 421 mail server busy
	// permanent
	// succeeded
}

// Start runs plugin binaries and registers their action types; configs
// then decode (validated by the plugin), render without secrets, and
// execute in the plugin process.
func ExampleStart() {
	path, err := bins.Build("echo") // an action plugin built with plugin.Serve
	if err != nil {
		fmt.Println(err)
		return
	}
	reg := &actions.Registry{}
	h, err := Start(context.Background(), []Spec{{Name: "echo", Path: path}}, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	fmt.Println(reg.Types())

	var node yaml.Node
	_ = yaml.Unmarshal([]byte("message: 'order {id} is {data.status}'\ntoken: s3cret\n"), &node)
	cfg, err := reg.Decode("echo", node.Content[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := &templates.Event{ID: "e1", Entity: "SalesOrder", EntityID: "SO1000", Event: "released",
		Data: map[string]any{"status": "RELEASED"}}
	c := cfg.(actions.Config)
	payload, _ := c.Render(ev, actions.Meta{})
	fmt.Println(string(payload)) // the token (x-secret) is not stored
	o := c.Execute(context.Background(), &actions.Request{DeliveryID: "dlv_1", Attempt: 1, Event: ev, Payload: payload})
	fmt.Println(o.Status)

	_, err = reg.Decode("echo", node.Content[0].Content[0]) // not a mapping
	fmt.Println(err)
	// Output:
	// [echo]
	// {"message":"order SO1000 is RELEASED"}
	// succeeded
	// 1:1: the config of action type "echo" must be a mapping
}

// Reload (SIGHUP in erpflow serve) restarts a plugin whose binary was
// replaced, after its in-flight attempts; an unchanged one keeps its
// process.
func ExampleHost_Reload() {
	src, err := bins.Build("echo")
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, err := os.MkdirTemp("", "erpflow-reload-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	b, _ := os.ReadFile(src)
	path := filepath.Join(dir, "echo")
	_ = os.WriteFile(path, b, 0o755)
	ctx := context.Background()
	specs := []Spec{{Name: "echo", Path: path}}
	h, err := Start(ctx, specs, &actions.Registry{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	before := h.Plugins()[0]

	_ = h.Reload(ctx, specs)
	fmt.Println("unchanged, same process:", h.Plugins()[0].PID == before.PID)

	// Deploy a new build: written beside, renamed over the old one.
	_ = os.WriteFile(path+".new", append(b, "build 2"...), 0o755)
	_ = os.Rename(path+".new", path)
	if err := h.Reload(ctx, specs); err != nil {
		fmt.Println(err)
		return
	}
	after := h.Plugins()[0]
	fmt.Println(after.State, after.Restarts, after.PID != before.PID, after.SHA256 != before.SHA256)
	// Output:
	// unchanged, same process: true
	// running 1 true true
}
