#!/bin/sh
# Regenerates the Python example plugin's protobuf code from
# plugin/proto/v1/action.proto (run by `make generate` from plugin/):
# protoc writes the messages, the gRPC Python plugin of grpc_tools
# (Debian: python3-grpc-tools) the service stub. $ERPFLOW_PYTHON picks the
# Python (default /usr/bin/python3, which has Debian's grpc packages). An
# argument names another output directory (the test that checks the
# committed code is current).
set -eu
root=$(dirname "$0")/..
out=${1:-$root/plugin/python}
protoc --proto_path="$root/plugin/proto/v1" --python_out="$out" action.proto
"${ERPFLOW_PYTHON:-/usr/bin/python3}" -m grpc_tools.protoc --proto_path="$root/plugin/proto/v1" --grpc_python_out="$out" action.proto
