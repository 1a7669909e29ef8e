package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erpflow/erpflow/plugin/plugintest"
)

func TestCSVLog(t *testing.T) {
	p := plugintest.Start(t, plugintest.Build(t, "."))
	file := filepath.Join(t.TempDir(), "orders.csv")
	cfg := "path: " + file + "\nheader: [delivery, order, status]\ncolumns: ['{delivery_id}', '{id}', '{data.status}']\n"
	ev := `{"id":"ev1","entity":"SalesOrder","entity_id":"SO1000","event":"released","data":{"status":"RELEASED, \"late\""}}`

	p.Execute(ev, cfg).RequireSucceeded(t)
	p.Execute(ev, cfg).RequireSucceeded(t)
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := "delivery,order,status\ndlv_test_1,SO1000,\"RELEASED, \"\"late\"\"\"\ndlv_test_2,SO1000,\"RELEASED, \"\"late\"\"\"\n"
	if string(got) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}

	for cfg, want := range map[string]string{
		"path: '/tmp/{data.x}.csv'\ncolumns: ['{id}']\n":          "config:1:7: path: placeholders are not allowed in the path",
		"path: " + file + "\nheader: [a, b]\ncolumns: ['{id}']\n": "config:2:9: header: has 2 names for 1 columns",
		"path: /no/such/dir/x.csv\ncolumns: ['{id}']\n":           "config:1:7: path: directory /no/such/dir does not exist",
		"path: " + file + "\ncolumns: []\n":                       "config:2:10: columns: minItems",
	} {
		if err := p.Validate(cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%q): %v, want %q", cfg, err, want)
		}
	}
}
