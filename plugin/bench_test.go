package plugin

import (
	"context"
	"testing"

	"github.com/erpflow/erpflow/actions"
	"github.com/erpflow/erpflow/templates"
)

// BenchmarkPluginExecute is one attempt through a plugin: secrets put
// back, event encoded, a gRPC call over the AutoMTLS connection, the
// outcome decoded.
func BenchmarkPluginExecute(b *testing.B) {
	reg := &actions.Registry{}
	logger, _ := testLogger()
	h, err := Start(context.Background(), []Spec{{Path: bin(b, "echo")}}, reg, logger)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	cfg := benchConfig(b, reg)
	ev := benchEvent(b)
	payload, _ := cfg.Render(ev, actions.Meta{DeliveryID: "dlv_b"})
	req := &actions.Request{DeliveryID: "dlv_b", Attempt: 1, Event: ev, Payload: payload}
	benchExecute(b, cfg, req)
}

// benchExecute runs req through cfg serially and in parallel.
func benchExecute(b *testing.B, cfg actions.Config, req *actions.Request) {
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if o := cfg.Execute(context.Background(), req); o.Status != actions.Succeeded {
				b.Fatal(o)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if o := cfg.Execute(context.Background(), req); o.Status != actions.Succeeded {
					b.Error(o)
					return
				}
			}
		})
	})
}

// BenchmarkPluginRender is what a plugin action costs when a delivery is
// created (in process: no call to the plugin).
func BenchmarkPluginRender(b *testing.B) {
	reg := &actions.Registry{}
	logger, _ := testLogger()
	h, err := Start(context.Background(), []Spec{{Path: bin(b, "echo")}}, reg, logger)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	cfg := benchConfig(b, reg)
	ev := benchEvent(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cfg.Render(ev, actions.Meta{DeliveryID: "dlv_b"}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchConfig(b *testing.B, reg *actions.Registry) actions.Config {
	b.Helper()
	c, err := decodeTB(b, reg, "echo", "message: 'order {id} of {data.customer.name} is {data.status}'\ntoken: s3cret\ntags: [a, '{tenant}']\n")
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func benchEvent(b *testing.B) *templates.Event {
	ev, err := templates.DecodeEvent([]byte(`{"id":"evt-1","tenant":"acme","entity":"SalesOrder","entity_id":"SO1000","event":"status_changed","occurred_at":"2024-09-11T23:41:12Z","data":{"status":"RELEASED","customer":{"name":"Bikes Inc"}}}`))
	if err != nil {
		b.Fatal(err)
	}
	return &ev
}
