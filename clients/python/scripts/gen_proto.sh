#!/usr/bin/env bash
# Regenerates the Python gRPC stubs from proto/ with grpcio-tools (which
# bundles its own protoc). Output: clients/python/python/d_engine/_proto/.
# Usage: gen_proto.sh [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/python/d_engine/_proto}"
mkdir -p "$out"
python -m grpc_tools.protoc \
    -I "$root/proto/proto/dengine/v1" \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    "$root/proto/proto/dengine/v1/client.proto"
# grpcio-tools emits absolute imports of sibling modules; make them package-relative.
sed -i 's/^import client_pb2 as client__pb2$/from . import client_pb2 as client__pb2/' "$out/client_pb2_grpc.py"
touch "$out/__init__.py"
