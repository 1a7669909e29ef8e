// Package python holds erpflow's Python plugin SDK: erpflow_plugin.py,
// which speaks go-plugin's protocol for an action written in Python, and
// the protobuf code generated from ../proto/v1/action.proto (by `make
// generate`). `erpflow plugin init --lang python` copies Files into a new
// plugin project; examples/plugins/python-ticket imports them from here.
package python

import "embed"

// Files are the SDK's Python modules, at the root of the FS.
//
//go:embed erpflow_plugin.py action_pb2.py action_pb2_grpc.py
var Files embed.FS
