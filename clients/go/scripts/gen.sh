#!/usr/bin/env bash
# Regenerate the Go stubs in clients/go/proto/dengine/v1 from proto/proto/dengine/v1/*.proto.
#
# No system protoc is needed: buf (pinned in tools/go.mod) compiles the .proto files
# itself, and the plugins protoc-gen-go / protoc-gen-go-grpc are built at the versions
# pinned as `tool` lines in clients/go/go.mod.
#
# Usage: scripts/gen.sh [OUT_DIR]    (default: clients/go/proto)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # clients/go
proto_root="$(cd "$here/../../proto/proto" && pwd)"       # holds dengine/v1/*.proto
out="${1:-$here/proto}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT

# Build the pinned tools.
(cd "$here" && go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go)
(cd "$here" && go build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc)
(cd "$here/tools" && go build -o "$bin/buf" github.com/bufbuild/buf/cmd/buf)

# Generate into a scratch dir, then replace the .pb.go files in OUT_DIR, so files of
# removed .proto files do not linger.
scratch="$bin/out"
mkdir -p "$scratch"
(cd "$proto_root" && PATH="$bin:$PATH" "$bin/buf" generate . \
    --template "$here/buf.gen.yaml" -o "$scratch")
# buf.gen.yaml writes to "proto" relative to -o.
find "$out" -name '*.pb.go' -delete
cp -R "$scratch/proto/." "$out/"
echo "generated Go stubs in $out:"
(cd "$out" && find . -name '*.pb.go' | sort)
