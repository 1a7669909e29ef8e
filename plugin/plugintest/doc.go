// Package plugintest tests an erpflow action plugin the way erpflow runs
// it: the real binary, started by erpflow's own host code over gRPC with
// AutoMTLS, its config checked against its schema and its Validate, the
// config rendered for an event and executed once.
//
//	func TestMyAction(t *testing.T) {
//		bin := plugintest.Build(t, ".")
//		p := plugintest.Start(t, bin)
//		if err := p.Validate(`project: OPS`); err != nil {
//			t.Fatal(err)
//		}
//		r := p.Execute(`{"id":"e1","entity":"SalesOrder","event":"created","data":{"no":"SO1"}}`, `project: OPS`)
//		r.RequireSucceeded(t)
//	}
//
// Build compiles the main package once per test process; Start launches
// it and, at the end of the test, ends it and fails the test if the
// process is still alive. The plugin's log goes to t.Log. Configs are YAML
// (or JSON) as a rule holds an action, with or without `type:`; errors
// name config:line:col like a rules file's. Execute returns the attempt
// record erpflow's delivery log keeps (status, retryable, output, error,
// and the payload without secrets).
//
// Outside `go test` (a program, an Example), Run gives the functions a TB
// and runs its cleanups.
package plugintest
