#!/usr/bin/env bash
# Installs the Debian bookworm packages ckad needs to build, test and run. Idempotent: packages
# already present are left alone, so a second run costs one dpkg query.
#
#   install_deps.sh           what building and running ckad needs (deploy/run_local.sh)
#   install_deps.sh --tests   also what only the tests need (tests/run_all.sh): PyTorch (~700 MB),
#                             headless Chromium for the page's browser test (tests/web),
#                             scikit-learn (its bundled digits data) and matplotlib (the Python
#                             example's heatmap, optional for users), and Prometheus (~96 MB)
#                             for promtool, which checks ckad's /metrics
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libgrpc++-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libeigen3-dev libopenblas-dev libabsl-dev libspdlog-dev libsqlite3-dev
  libcli11-dev nlohmann-json3-dev libcpp-httplib-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev
  python3 python3-numpy python3-grpcio python3-protobuf python3-pytest python3-threadpoolctl
  nginx openssl
)
if [ "${1:-}" = "--tests" ]; then
  packages+=(python3-torch python3-sklearn python3-matplotlib chromium-headless-shell prometheus)
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--tests]" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The build needs npm (the page's assets are bundled from npm packages, server/web) and so do
# the deploy checks; a machine may have Node.js from elsewhere (NodeSource), whose package
# conflicts with Debian's npm, so only install when the command is missing.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
