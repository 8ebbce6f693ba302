#!/usr/bin/env bash
# Generates the Python gRPC stubs of proto/cka/v1/*.proto into a build directory (never into the
# source tree) and prints the PYTHONPATH that makes the `cka` package importable:
#
#   eval "$(bash client/python/build.sh)"     # sets PYTHONPATH in this shell
#   bash client/python/build.sh               # prints: export PYTHONPATH=...
#
# Output: $CKA_PY_STUBS (default build/python-stubs/ at the repository root) holds
# cka/v1/similarity_pb2.py and similarity_pb2_grpc.py; the `cka` package extends its import
# path to that cka/ directory, so the generated `from cka.v1 import similarity_pb2` works
# unedited. Uses protoc and grpc_python_plugin (Debian: protobuf-compiler,
# protobuf-compiler-grpc), or `$PYTHON -m grpc_tools.protoc` where those are missing or
# CKA_PROTOC=grpc_tools asks for it (stubs matching the grpcio/protobuf of $PYTHON's
# environment).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${CKA_PY_STUBS:-$root/build/python-stubs}"
python="${PYTHON:-/usr/bin/python3}"
[ -x "$python" ] || python=python3

mkdir -p "$out"
protos=("$root"/proto/cka/v1/*.proto)
plugin="$(command -v grpc_python_plugin || true)"
if [ "${CKA_PROTOC:-}" != "grpc_tools" ] && command -v protoc >/dev/null 2>&1 &&
  [ -n "$plugin" ]; then
  protoc -I"$root/proto" --python_out="$out" --grpc_python_out="$out" \
    --plugin=protoc-gen-grpc_python="$plugin" "${protos[@]}"
elif "$python" -c 'import grpc_tools.protoc' 2>/dev/null; then
  "$python" -m grpc_tools.protoc -I"$root/proto" --python_out="$out" --grpc_python_out="$out" \
    "${protos[@]}"
else
  echo "build.sh: need protoc and grpc_python_plugin (apt-get install protobuf-compiler" \
    "protobuf-compiler-grpc) or the grpcio-tools Python package" >&2
  exit 1
fi
echo "export PYTHONPATH=$here:$out\${PYTHONPATH:+:\$PYTHONPATH}"
