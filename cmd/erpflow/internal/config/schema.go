package config

import _ "embed"

//go:embed schema.json
var schema []byte

// JSONSchema returns the JSON Schema (draft 2020-12) of the server config
// file, for editors and CI (erpflow schema config). It checks shape only;
// Load checks values.
func JSONSchema() []byte { return append([]byte(nil), schema...) }
