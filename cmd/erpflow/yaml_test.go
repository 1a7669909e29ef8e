package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestYAMLStringsStayStrings: -o yaml quotes the strings that a YAML 1.1
// reader (PyYAML, yaml.v2, Ruby) would read as booleans, numbers or a
// merge key; numbers, booleans and null stay plain.
func TestYAMLStringsStayStrings(t *testing.T) {
	t.Parallel()
	in := `{"country":"NO","a":"yes","b":"off","c":"Y","d":"1:20","<<":"x","e":"Norway","n":12,"t":true,"z":null,"s":"123"}`
	var buf bytes.Buffer
	if err := printYAML(&buf, json.RawMessage(in)); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{`country: "NO"`, `a: "yes"`, `b: "off"`, `c: "Y"`, `d: "1:20"`, `"<<": x`, "e: Norway", "n: 12", "t: true", "z: null", `s: "123"`} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("want %s in\n%s", want, got)
		}
	}
}
