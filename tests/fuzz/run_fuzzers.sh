#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (build dir build/fuzz) and runs each for a
# bounded time from a copy of its checked-in seed corpus (tests/fuzz/corpus/<target>, which is
# never modified). Fails when a target crashes, trips a sanitizer or a FUZZ_CHECK, leaks, hangs
# on one input or exceeds the memory limits (512 MB in one allocation: four times the targets'
# memory budget; 2 GB resident); the reproducer is kept under build/fuzz/findings/.
# Prints the executions of each target.
#
#   bash tests/fuzz/run_fuzzers.sh                        # 30 s per target
#   CKA_FUZZ_SECONDS=60 bash tests/fuzz/run_fuzzers.sh    # what CI may afford
#   CKA_FUZZ_TARGETS=session_restore_fuzzer bash tests/fuzz/run_fuzzers.sh
#   build/fuzz/tests/fuzz/activation_batch_fuzzer CRASH_FILE   # replay one input
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${CKA_FUZZ_SECONDS:-30}
jobs=${CKA_FUZZ_BUILD_JOBS:-$(nproc)}
build=${CKA_FUZZ_BUILD_DIR:-build/fuzz}
read -r -a targets <<<"${CKA_FUZZ_TARGETS:-activation_batch_fuzzer session_restore_fuzzer}"

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="${CKA_FUZZ_CC:-clang-14}" -DCMAKE_CXX_COMPILER="${CKA_FUZZ_CXX:-clang++-14}" \
  -DCKA_FUZZ=ON -DCKA_SANITIZE=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
report=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp tests/fuzz/corpus/"$t"/* "$work/$t/corpus/"
  log="$work/$t/log"
  echo "fuzzing $t for ${seconds} s"
  rc=0
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/tests/fuzz/$t" "$work/$t/corpus" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  findings=$(ls "$work/$t/artifacts" | wc -l)
  report+=("$t: ${execs:-?} executions in ${seconds} s, exit ${rc}, ${findings} finding(s); ${done_line:-no DONE line}")
  if [ "$rc" != 0 ] || [ "$findings" != 0 ]; then
    failed=1
    mkdir -p "$build/findings/$t"
    cp "$work/$t/artifacts/"* "$build/findings/$t/" 2>/dev/null || true
    cp "$log" "$build/findings/$t/log"
    echo "---- $t failed (exit $rc); the log's end (all of it in $build/findings/$t/log):"
    tail -60 "$log"
    echo "---- reproducers: $(ls "$build/findings/$t" | grep -v '^log$' | sed "s|^|$build/findings/$t/|" | tr '\n' ' ')"
  fi
done
printf '%s\n' "${report[@]}"
exit "$failed"
