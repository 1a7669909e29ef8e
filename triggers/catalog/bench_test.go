package catalog

import (
	"testing"

	"github.com/erpflow/erpflow/templates"
)

// BenchmarkValidate is the ingest cost of validation: one decoded event
// against the Velosity-sized schema of TestParse's Order.
func BenchmarkValidate(b *testing.B) {
	c, err := Parse("c.yaml", []byte(orders))
	if err != nil {
		b.Fatal(err)
	}
	ev, err := templates.DecodeEvent([]byte(`{"id":"1","entity":"Order","event":"created","data":{"amount":5,"status":"open",
		"customer":{"city":"Oslo"},"lines":[{"sku":"a","qty":1},{"sku":"b","qty":2}],"name":"x"}}`))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Validate(&ev); err != nil {
			b.Fatal(err)
		}
	}
}
