#!/usr/bin/env bash
# Every shared library that the built ckad and ckactl load must come from a package that the
# container's runtime stage installs: one listed in deploy/runtime-packages.txt, one of their
# dependencies (apt installs those too), or an essential package of debian:bookworm-slim.
#
#   runtime_packages_test.sh BINARY...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
list="$root/deploy/runtime-packages.txt"
[ $# -gt 0 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }

mapfile -t listed < <(grep -v '^#' "$list" | grep -v '^$')
# Essential in the base image (apt itself needs them).
essential=(libc6 libgcc-s1 libstdc++6 zlib1g)
mapfile -t provided < <(
  { printf '%s\n' "${listed[@]}" "${essential[@]}"
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances "${listed[@]}" 2>/dev/null | grep -v '^ ' | grep -v '^<'
  } | sed 's/:amd64$//' | sort -u)
# A set, not `printf | grep -q`: under pipefail, grep -q leaving early makes printf fail with
# SIGPIPE, and the pipeline with it (a flaky "does not provide" on a busy machine).
declare -A is_provided=()
for pkg in "${provided[@]}"; do is_provided["$pkg"]=1; done

for pkg in "${listed[@]}"; do
  if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    echo "FAIL: deploy/runtime-packages.txt lists '$pkg', which Debian does not have"
    exit 1
  fi
done

fail=0
checked=0
for bin in "$@"; do
  if ldd "$bin" | grep -q "not found"; then
    echo "FAIL: $bin has an unresolved library: $(ldd "$bin" | grep "not found" | head -1)"
    fail=1
  fi
  mapfile -t libs < <(ldd "$bin" | awk '/=>/ && $3 ~ /^\// {print $3}')
  # One dpkg query for all libraries (by path, and by the path the link points to).
  declare -A owner=()
  while IFS= read -r line; do
    owner["${line#*: }"]=${line%%:*}
  done < <(dpkg -S "${libs[@]}" $(for l in "${libs[@]}"; do readlink -f "$l"; done) 2>/dev/null \
           | grep -v '^diversion')
  for lib in "${libs[@]}"; do
    pkg=${owner[$lib]:-${owner[$(readlink -f "$lib")]:-}}
    if [ -z "$pkg" ]; then
      echo "FAIL: $bin loads $lib, which no Debian package provides"; fail=1; continue
    fi
    if [ -z "${is_provided[$pkg]:-}" ]; then
      echo "FAIL: $bin loads $lib from package $pkg, which deploy/runtime-packages.txt does not provide"
      fail=1
    fi
    checked=$((checked + 1))
  done
  unset owner
done
[ "$checked" -gt 0 ] || { echo "FAIL: no library checked"; exit 1; }
[ "$fail" -eq 0 ] && echo "OK: $checked libraries of $# binaries, all from runtime packages"
exit "$fail"
