// Command erpflow-csvlog is an erpflow action plugin that appends one CSV
// line per delivery to a file: an audit trail or a feed for a spreadsheet,
// with columns taken from the event through {placeholders}.
//
// Build: go build -o bin/erpflow-csvlog ./examples/plugins/csvlog
package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/erpflow/erpflow/plugin"
)

type config struct {
	Path    string   `json:"path"`
	Columns []string `json:"columns"`
	Header  []string `json:"header"` // written first when the file is new or empty
}

const schema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "path": {"type": "string", "minLength": 1, "description": "the CSV file; created when missing (its directory must exist)"},
    "columns": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "one value per column, with {placeholders}"},
    "header": {"type": "array", "items": {"type": "string"}, "description": "column names written when the file is new"}
  },
  "required": ["path", "columns"],
  "additionalProperties": false
}`

type csvlog struct {
	mu sync.Mutex // one writer at a time per file in this process
}

func (*csvlog) Describe() plugin.Description {
	return plugin.Description{Type: "csvlog", Version: "1.0.0", ConfigSchema: json.RawMessage(schema)}
}

func (*csvlog) Validate(raw json.RawMessage) error {
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	var errs []error
	if strings.Contains(c.Path, "{") {
		// Event data must not choose which file is written.
		errs = append(errs, plugin.Invalid("path", "placeholders are not allowed in the path"))
	} else if fi, err := os.Stat(filepath.Dir(c.Path)); err != nil || !fi.IsDir() {
		errs = append(errs, plugin.Invalid("path", "directory %s does not exist", filepath.Dir(c.Path)))
	}
	if len(c.Header) > 0 && len(c.Header) != len(c.Columns) {
		errs = append(errs, plugin.Invalid("header", "has %d names for %d columns", len(c.Header), len(c.Columns)))
	}
	return errors.Join(errs...)
}

func (l *csvlog) Execute(_ context.Context, d *plugin.Delivery) plugin.Outcome {
	var c config
	if err := json.Unmarshal(d.Config, &c); err != nil {
		return plugin.Permanent(fmt.Errorf("config: %w", err))
	}
	var line bytes.Buffer
	w := csv.NewWriter(&line)
	_ = w.Write(c.Columns)
	w.Flush()

	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(c.Path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return plugin.Retry(err, 0)
	}
	defer f.Close()
	if len(c.Header) > 0 {
		if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
			var h bytes.Buffer
			hw := csv.NewWriter(&h)
			_ = hw.Write(c.Header)
			hw.Flush()
			if _, err := f.Write(h.Bytes()); err != nil {
				return plugin.Retry(err, 0)
			}
		}
	}
	// One write of the whole line: with O_APPEND it cannot interleave with
	// another writer's line.
	if _, err := f.Write(line.Bytes()); err != nil {
		return plugin.Retry(err, 0)
	}
	if err := f.Close(); err != nil {
		return plugin.Retry(err, 0)
	}
	out := plugin.Success()
	out.Detail, _ = json.Marshal(map[string]any{"path": c.Path, "bytes": line.Len()})
	return out
}

func main() { plugin.Serve(&csvlog{}) }
