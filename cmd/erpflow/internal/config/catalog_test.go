package config

import (
	"strings"
	"testing"
)

func TestCatalogKey(t *testing.T) {
	c, err := Parse("erpflow.yaml", []byte("catalog: [./catalog, extra/orders.yaml]\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Catalog, ",") != "./catalog,extra/orders.yaml" {
		t.Fatalf("catalog %q", c.Catalog)
	}
	if c, err := Parse("erpflow.yaml", []byte("listen: 127.0.0.1:1\n"), env(nil)); err != nil || c.Catalog != nil {
		t.Fatalf("default: %v %v", c.Catalog, err)
	}
	_, err = Parse("erpflow.yaml", []byte("listen: 127.0.0.1:1\ncatalog: {orders: x}\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "erpflow.yaml:2:10") || !strings.Contains(err.Error(), "catalog") {
		t.Fatalf("got %v", err)
	}
	_, err = Parse("erpflow.yaml", []byte("catalg: [x]\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "unknown key") || !strings.Contains(err.Error(), "catalog,") {
		t.Fatalf("got %v", err)
	}
}
