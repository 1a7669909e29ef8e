package config_test

import (
	"fmt"

	"github.com/erpflow/erpflow/cmd/erpflow/internal/config"
)

func ExampleParse() {
	env := map[string]string{"ERP_TOKEN": "s3cret"}
	src := []byte(`
listen: 0.0.0.0:8080
tokens:
  - {name: erp, token: "${ERP_TOKEN}", scopes: [events:write]}
`)
	c, err := config.Parse("erpflow.yaml", src, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Listen, c.Database, c.Delivery.Workers, c.Tokens[0].Name, c.Tokens[0].HasScope(config.ScopeEventsWrite))

	_, err = config.Parse("erpflow.yaml", []byte("delivery:\n  workers: lots\n"), nil)
	fmt.Println(err)
	// Output:
	// 0.0.0.0:8080 sqlite:./erpflow.db 32 erp true
	// erpflow.yaml:2:12: delivery.workers: must be a whole number, not "lots"
}
