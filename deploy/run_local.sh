#!/usr/bin/env bash
# The start command of README.md: installs what is missing, builds ckad and ckactl (Release),
# and runs ckad in the foreground with its state in a default data directory, and its HTTP
# server (the page, the JSON API, /metrics) on 127.0.0.1:8080 unless the flags give
# --http-listen (ckad logs "http listening on HOST:PORT").
#
#   bash deploy/run_local.sh [ckad flags...]     e.g. --listen 127.0.0.1:50051
#
# Data directory: $CKAD_DATA_DIR, default ~/.local/share/ckad.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install_deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DCKA_BUILD_TESTS=OFF >/dev/null
cmake --build build/release -j"$(nproc)" --target ckad ckactl
data_dir=${CKAD_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/ckad}
mkdir -p "$data_dir"
echo "ckactl is at build/release/client/ckactl"
http=(--http-listen 127.0.0.1:8080)
for arg in "$@"; do
  case "$arg" in --http-listen | --http-listen=*) http=() ;; esac
done
echo "the page: http://127.0.0.1:8080/ (unless --http-listen says otherwise)"
exec build/release/server/ckad --data-dir "$data_dir" "${http[@]}" "$@"
