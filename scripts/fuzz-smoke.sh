#!/usr/bin/env bash
# Fuzz smoke test (reliability tier T8): builds the cargo-fuzz targets in fuzz/ on stable Rust
# (no sanitizer: `-s none`) and runs each for FUZZ_SECONDS (default 60). Exits non-zero, naming
# the saved input, if any target crashes, panics, times out or allocates absurdly.
#
#   bash scripts/fuzz-smoke.sh                      # every target, 60 s each
#   FUZZ_SECONDS=5 bash scripts/fuzz-smoke.sh       # quick
#   FUZZ_TARGETS="engine_ops" bash scripts/fuzz-smoke.sh
#
# Installs what it needs when missing: a C++ compiler (libfuzzer-sys builds libFuzzer) and
# cargo-fuzz. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_TARGETS="${FUZZ_TARGETS:-record_decode segment_recovery engine_ops lmdb_scrub}"
# Per-input time limit: an input running longer is a hang.
FUZZ_INPUT_TIMEOUT="${FUZZ_INPUT_TIMEOUT:-30}"
export CARGO_TERM_COLOR=never

say() { echo "fuzz-smoke: $*"; }

# --- set-up ----------------------------------------------------------------------------------
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 \
    && ! command -v clang++ >/dev/null 2>&1; then
    say "installing g++ (libfuzzer-sys compiles libFuzzer)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
say "$(cargo fuzz --version), $(rustc --version)"

# --- build -----------------------------------------------------------------------------------
# `-s none`: no sanitizer, so no nightly. Release with debug assertions and overflow checks
# (cargo-fuzz's default) so arithmetic overflow is a crash, as in the debug-built tests.
started=$(date +%s)
say "building the fuzz targets"
(cd fuzz && cargo fuzz build -s none)
say "built in $(( $(date +%s) - started )) s"

# --- run -------------------------------------------------------------------------------------
logs=fuzz/target/fuzz-smoke
mkdir -p "$logs"
failed=()
summary=()
for target in $FUZZ_TARGETS; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    before=$(ls -1 "fuzz/artifacts/$target" | sort)
    log="$logs/$target.log"
    say "running $target for ${FUZZ_SECONDS} s (log: $log)"
    # engine_ops needs longer inputs (a few hundred bytes: commits, then a crash) sooner
    # than libFuzzer's gradual length growth gives them.
    extra=()
    if [ "$target" = engine_ops ]; then extra=(-max_len=512 -len_control=0); fi
    status=0
    (cd fuzz && cargo fuzz run -s none "$target" -- \
        "${extra[@]}" \
        -max_total_time="$FUZZ_SECONDS" \
        -timeout="$FUZZ_INPUT_TIMEOUT" \
        -rss_limit_mb=2048 \
        -print_final_stats=1) >"$log" 2>&1 || status=$?
    # libFuzzer's last status line: "#<runs> DONE cov: ... exec/s: ...".
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    runs=$(grep -E '^stat::number_of_executed_units:' "$log" | tail -n 1 | awk '{print $2}' || true)
    after=$(ls -1 "fuzz/artifacts/$target" | sort)
    new=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d' || true)
    if [ "$status" -ne 0 ] || [ -n "$new" ]; then
        failed+=("$target")
        summary+=("$target: FAILED (exit $status) after ${runs:-?} runs")
        say "$target FAILED (exit $status); from its log ($log):"
        # The panic (message and the first frames of its backtrace) or libFuzzer's verdict.
        grep -E -A12 'panicked at|ERROR: libFuzzer|alloc_limit:|^SUMMARY' "$log" | head -n 40 || true
        for f in $new; do
            say "crashing input: fuzz/artifacts/$target/$f"
            say "reproduce: (cd fuzz && cargo fuzz run -s none $target artifacts/$target/$f)"
        done
    else
        summary+=("$target: ok, ${done_line:-no DONE line}")
    fi
done

say "summary (${FUZZ_SECONDS} s per target, $(( $(date +%s) - started )) s in all):"
for line in "${summary[@]}"; do echo "  $line"; done
if [ "${#failed[@]}" -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "passed"
