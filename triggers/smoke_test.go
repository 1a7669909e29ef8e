package triggers

import "testing"

func TestSmoke(t *testing.T) {
	rules := mustParse(t, `
rules:
  - name: so-released
    on: {entity: SalesOrder, event: updated, field: status, to: RELEASED}
    when: data.total > 100 && changed("status") && tenant == "acme"
    actions:
      - type: webhook
        url: https://x.example/
`)
	s, err := NewSet(rules, SetOptions{OnEvalError: func(r string, err error) { t.Logf("eval %s: %v", r, err) }})
	if err != nil {
		t.Fatal(err)
	}
	ev := event("SalesOrder", "updated", map[string]any{"status": "RELEASED", "total": 500}, map[string]any{"status": "DRAFT"})
	got := s.Match(ev, nil)
	t.Log(len(got))
	for _, x := range s.Explain(ev) {
		t.Log(x.Rule.Name, x.Matched, x.Reason)
	}
	_, err = Parse("so.yaml", []byte(`
rules:
  - name: x y
    on: {entity: SalesOrder, evnt: updated}
    when: amout > 5
    actions:
      - type: webhok
      - type: webhook
        bad: 1
        worse: 2
  - name: b
    on: {entity: A}
    when: |
      data.x > 1 &&
        foo(1)
    actions: [{type: log}]
    retry: {schedule: []}
`), testOpts(nil))
	t.Log(err)
}
