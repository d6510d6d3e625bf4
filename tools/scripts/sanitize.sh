# Sourced by test.sh after the main suite (the servers it started are still up): the whole
# suite again under AddressSanitizer + UndefinedBehaviorSanitizer, a short run of every fuzz
# target, and the concurrency suites under ThreadSanitizer. Each in a clang build tree of its
# own (build-asan, build-tsan beside BUILD_DIR). Any finding stops the process that met it
# (no recovery), so it fails its test and this script. README: "What we test and what held";
# docs/fuzzing.md.
#
#   ANNALS_FUZZ_SECONDS  seconds per fuzz target (default 15)

declare -F phase >/dev/null || phase() { echo "test: [${SECONDS}s] $*" >&2; }

sanitizer_packages=(clang libclang-rt-14-dev)
sanitizer_missing=()
for p in "${sanitizer_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    sanitizer_missing+=("$p")
  fi
done
if ((${#sanitizer_missing[@]})); then
  echo "test: installing ${sanitizer_missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${sanitizer_missing[@]}" >/dev/null
fi

ASAN_DIR="${ASAN_DIR:-$ROOT/build-asan}"
TSAN_DIR="${TSAN_DIR:-$ROOT/build-tsan}"
jobs="$(nproc)"

# ASan + UBSan, the build also instrumented for libFuzzer (the fuzz targets are real fuzzers
# here). The package test is left out: it links an uninstrumented consumer against the
# instrumented libraries (the main run covers it).
echo "test: AddressSanitizer + UndefinedBehaviorSanitizer build ($ASAN_DIR)" >&2
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$ASAN_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DANNALS_TEST_POSTGRES=ON -DANNALS_FUZZ=ON -DANNALS_SANITIZE=address,undefined >/dev/null
cmake --build "$ASAN_DIR" -j"$jobs"
phase "ASan+UBSan tree built"
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
(cd "$ASAN_DIR" && ctest -j"$jobs" --timeout 900 --output-on-failure -E '^package\.')
phase "ASan+UBSan suite passed"

# Every fuzz target for a short while, from a scratch copy of its seed corpus; two at a time
# (each fuzzer is one process on one core, with up to 2 GiB).
#   ANNALS_FUZZ_JOBS     fuzzers at once (default: 2, or 1 on one core)
fuzz_seconds="${ANNALS_FUZZ_SECONDS:-15}"
fuzz_jobs="${ANNALS_FUZZ_JOBS:-$((jobs < 2 ? jobs : 2))}"
fuzz_scratch="$(mktemp -d "${TMPDIR:-/tmp}/annals-fuzz.XXXXXX")"
for target in $(ls "$ROOT/fuzz/corpus"); do  # the seeds first: a failed copy is not a finding
  mkdir -p "$fuzz_scratch/$target"
  cp "$ROOT/fuzz/corpus/$target/"* "$fuzz_scratch/$target/"
done
fuzz_targets=($(ls "$ROOT/fuzz/corpus"))
fuzz_failed=()
for ((i = 0; i < ${#fuzz_targets[@]}; i += fuzz_jobs)); do
  batch=("${fuzz_targets[@]:i:fuzz_jobs}")
  pids=()
  for target in "${batch[@]}"; do
    "$ASAN_DIR/bin/$target" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 \
      -artifact_prefix="$fuzz_scratch/$target-" "$fuzz_scratch/$target" \
      >"$fuzz_scratch/$target.log" 2>&1 &
    pids+=($!)
  done
  for k in "${!batch[@]}"; do  # every fuzzer of the batch is waited for, failed or not
    target="${batch[$k]}"
    if wait "${pids[$k]}"; then
      echo "test: fuzzed $target for ${fuzz_seconds}s: $(grep -Eo 'Done [0-9]+ runs' "$fuzz_scratch/$target.log" || true)" >&2
    else
      tail -n 40 "$fuzz_scratch/$target.log" >&2 || true
      fuzz_failed+=("$target")
    fi
  done
  if ((${#fuzz_failed[@]})); then
    echo "test: ${fuzz_failed[*]} found a crash or a broken property; the input is in" \
         "$fuzz_scratch as TARGET-crash-* (see docs/fuzzing.md: keep it in" \
         "fuzz/regressions/TARGET/)" >&2
    exit 1
  fi
done
rm -rf "$fuzz_scratch"
phase "fuzzed"

# TSan: the suites whose code runs threads (stores' concurrent appends, subscriptions and their
# lease keeper, projection runners, the HTTP server and its SSE writer, the relay).
echo "test: ThreadSanitizer build ($TSAN_DIR)" >&2
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$TSAN_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DANNALS_TEST_POSTGRES=ON -DANNALS_SANITIZE=thread >/dev/null
cmake --build "$TSAN_DIR" -j"$jobs" --target store_tests subscription_tests subscription_pg_tests \
  projection_tests projection_pg_tests http_tests http_pg_tests relay_tests bank annals_tool
phase "TSan tree built"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$ROOT/tools/scripts/tsan.supp"
(cd "$TSAN_DIR" && ctest -j"$jobs" --timeout 900 --output-on-failure \
  -R '^(store|subscription|subscription_postgres|projection|projection_postgres|http|http_postgres|relay)\.')
