package httpapi

import "testing"

// TestSplitEvents: a batch is an object whose one key decodes to
// "events", however it is written; anything else is one event, also one
// that has "events" deeper down.
func TestSplitEvents(t *testing.T) {
	for _, c := range []struct {
		body  string
		batch bool
		n     int
	}{
		{`{"id":"a","entity":"SalesOrder","event":"updated"}`, false, 1},
		{`{"id":"a","entity":"SalesOrder","event":"updated","data":{"events":[1,2]}}`, false, 1},
		{`{"id":"a","entity":"SalesOrder","event":"updated","data":{"note":"caf\u00e9"}}`, false, 1},
		{`{"events":[{"id":"a"},{"id":"b"}]}`, true, 2},
		{` {"\u0065vents":[{"id":"a"}]}`, true, 1},
		{`{"event\u0073":[{"id":"a"},{"id":"b"},{"id":"c"}]}`, true, 3},
		{`[1,2]`, false, 1},
	} {
		raws, batch, err := splitEvents([]byte(c.body))
		if err != nil || batch != c.batch || len(raws) != c.n {
			t.Errorf("%s: %d events, batch %v, %v; want %d, batch %v", c.body, len(raws), batch, err, c.n, c.batch)
		}
	}
}

// BenchmarkSplitEvents: a typical single event, and the same with a \u
// escape in its data, which takes the token-by-token path.
func BenchmarkSplitEvents(b *testing.B) {
	for name, body := range map[string]string{
		"plain":   `{"id":"SO-1000-released","tenant":"acme","entity":"SalesOrder","entity_id":"SO-1000","event":"status_changed","occurred_at":"2026-11-30T10:00:00Z","data":{"status":"RELEASED","customer":"C-1","total":1234.5,"lines":[{"sku":"A-1","qty":2},{"sku":"B-2","qty":1}]}}`,
		"escaped": `{"id":"SO-1000-released","tenant":"acme","entity":"SalesOrder","entity_id":"SO-1000","event":"status_changed","occurred_at":"2026-11-30T10:00:00Z","data":{"status":"RELEASED","customer":"Caf\u00e9","total":1234.5,"lines":[{"sku":"A-1","qty":2},{"sku":"B-2","qty":1}]}}`,
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := splitEvents([]byte(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
