package plugin

// The protobuf code under proto/v1 is generated and committed, so plugin
// authors and builds need no protoc. `make generate` (go generate ./...)
// regenerates it; it needs protoc, protoc-gen-go and protoc-gen-go-grpc
// (looked up on PATH and in $(go env GOPATH)/bin). TestGeneratedCodeIsCurrent
// checks the committed code is current when those tools are available.

//go:generate sh -c "PATH=\"$PATH:$(go env GOPATH)/bin\" protoc --proto_path=proto/v1 --go_out=proto/v1 --go_opt=paths=source_relative --go-grpc_out=proto/v1 --go-grpc_opt=paths=source_relative action.proto engine.proto"

// The Python SDK's protobuf code (plugin/python, used by the Python
// plugins and the `erpflow plugin init --lang python` scaffold); the
// script says what it needs. TestGeneratedPythonIsCurrent checks it.
//go:generate sh ../scripts/gen-python-plugin.sh
