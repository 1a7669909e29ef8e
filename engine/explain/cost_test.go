package explain

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/templates"
)

// TestExplainLargeValueCost: rules whose conditions read a large list
// whole (len(data.lines), cheap to run) cost Explain what it shows of the
// list, not its size once or twice per rule: 100 such rules and a 1 MB
// list must not encode 200 MB. (Bytes allocated, not time: deterministic.)
func TestExplainLargeValueCost(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("rules:\n")
	for i := range 100 {
		fmt.Fprintf(&sb, "  - name: r%d\n    on: {entity: Order}\n    when: len(data.lines) > 100000 || data.note == \"x\"\n    actions: [{type: webhook, url: \"https://erp.example/x\"}]\n", i)
	}
	set := load(t, sb.String())
	lines := make([]any, 15000)
	for i := range lines {
		lines[i] = map[string]any{"sku": fmt.Sprintf("a%d", i), "qty": float64(i), "desc": strings.Repeat("x", 20)}
	}
	ev := &templates.Event{ID: "e1", Entity: "Order", EntityID: "O1", Event: "created",
		Data: map[string]any{"lines": lines, "note": strings.Repeat("é", 300_000)}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := Explain(set, ev, Options{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 30<<20 {
		t.Errorf("explaining 100 rules reading a 1 MB list allocated %d MB", got>>20)
	}
	v := res.Rules[0].Values
	if len(v) != 2 || v[0].Path != "data.lines" || v[0].Value != nil || !strings.HasPrefix(v[0].Text, `[{"desc":"xxxxxxxxxxxxxxxxxxxx","qty":0,"sku":"a0"},`) || !strings.HasSuffix(v[0].Text, "…") || len(v[0].Text) > 210 {
		t.Errorf("values: %+v", v)
	}
	if v[1].Path != "data.note" || !strings.HasPrefix(v[1].Text, `"ééé`) || !strings.HasSuffix(v[1].Text, "é…") {
		t.Errorf("values: %+v", v[1])
	}
}
