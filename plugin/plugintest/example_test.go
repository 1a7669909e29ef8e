package plugintest_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/erpflow/erpflow/plugin/plugintest"
)

// Build, start and try the csvlog example plugin. In a test, pass the
// test's t to Build and Start instead of using Run.
func Example() {
	err := plugintest.Run(func(t plugintest.TB) {
		bin := plugintest.Build(t, "../../examples/plugins/csvlog")
		p := plugintest.Start(t, bin)

		err := p.Validate("path: /no/such/dir/orders.csv\ncolumns: ['{id}']\n")
		fmt.Println(err)

		dir, _ := os.MkdirTemp("", "plugintest-example-")
		defer os.RemoveAll(dir)
		file := filepath.Join(dir, "orders.csv")
		r := p.Execute(`{"id":"e1","entity":"SalesOrder","event":"created","data":{"no":"SO1"}}`,
			"path: "+file+"\ncolumns: ['{delivery_id}', '{event_id}', '{data.no}']\n")
		r.RequireSucceeded(t)
		fmt.Println(r.Status, r.DeliveryID)
		csv, _ := os.ReadFile(file)
		fmt.Print(string(csv))
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// config:1:7: path: directory /no/such/dir does not exist
	// succeeded dlv_test_1
	// dlv_test_1,e1,SO1
}
