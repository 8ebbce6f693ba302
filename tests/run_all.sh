#!/usr/bin/env bash
# The test command of README.md, and what CI runs (.ci/run): installs what is missing, builds
# once, runs every unit and end-to-end test, then the core and service tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then the libFuzzer targets for a bounded time
# (tests/fuzz/run_fuzzers.sh, clang), then the performance report in its reduced form (to check
# that it works; no timing is asserted).
#
#   bash tests/run_all.sh            # everything
#   CKA_SKIP_SANITIZE=1 bash tests/run_all.sh   # skip the sanitizer build (faster local runs)
#   CKA_SKIP_FUZZ=1 bash tests/run_all.sh       # skip the fuzzers (CKA_FUZZ_SECONDS: per target)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

step() { printf '\n==== %s ====\n' "$*"; }

step "dependencies"
bash deploy/install_deps.sh --tests

step "build (RelWithDebInfo)"
cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/test -j"$jobs"

step "unit and end-to-end tests"
ctest --test-dir build/test --output-on-failure -j"$jobs" --timeout 300

step "Python client tests (client/python, against build/test's ckad)"
(
  stubs_env=$(bash client/python/build.sh)  # generates build/python-stubs, prints PYTHONPATH
  eval "$stubs_env"
  rc=0
  CKAD_BINARY=$PWD/build/test/server/ckad CKA_REQUIRE_TORCH=1 timeout 600 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider client/python/tests || rc=$?
  # Any non-zero exit fails the step, 5 (no tests collected) included.
  if [ "$rc" -ne 0 ]; then
    echo "Python client tests failed: pytest exit status $rc (5 = no tests collected)" >&2
    exit 1
  fi
)

if [ "${CKA_SKIP_SANITIZE:-0}" != "1" ]; then
  step "ASan + UBSan build and tests"
  cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DCKA_SANITIZE=ON >/dev/null
  cmake --build build/asan -j"$jobs"
  LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan --output-on-failure -j"$jobs" --timeout 600
fi

if [ "${CKA_SKIP_FUZZ:-0}" != "1" ]; then
  step "fuzzers (${CKA_FUZZ_SECONDS:-30} s per target)"
  CKA_FUZZ_BUILD_JOBS="$jobs" bash tests/fuzz/run_fuzzers.sh
fi

step "deploy checks (Dockerfile lint, Kubernetes schemas; npm)"
(cd deploy/tools && npm ci --no-audit --no-fund --loglevel=error && node check_deploy.mjs)

step "performance report (reduced: checks that it runs; no timing is asserted)"
/usr/bin/python3 bench/report.py --build build/test --quick --json build/test/bench-report.json

step "all tests passed"
