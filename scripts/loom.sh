#!/usr/bin/env bash
# Runs the loom models (loom-tests/) over the real pipeline code, in release, one model at a
# time. LOOM_MAX_PREEMPTIONS bounds the preemptions loom explores per execution (default 3).
# Extra arguments go to the test binaries (a model's name filters).
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
RUSTFLAGS="--cfg walmdb_loom" cargo test --release -p walmdb-loom-tests \
    --target-dir target/loom -- --test-threads=1 "$@"
