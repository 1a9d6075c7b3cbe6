#!/usr/bin/env bash
# Runs the harness with every peer: installs what RocksDB needs (setup.sh, skipped when it is
# there), points the `rocksdb` crate at Debian's librocksdb, then builds and runs in release.
# Arguments go to the harness: `harness/run.sh --help`. Works from any directory.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bash "$HERE/setup.sh"

# Link Debian's shared librocksdb (7.8) instead of compiling the crate's bundled copy (~14 min),
# with bindings generated from Debian's own headers so they match the library.
# (The lines starting with `export` can be sourced alone: source <(grep '^export' harness/run.sh).)
export ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)}"
export ROCKSDB_INCLUDE_DIR="${ROCKSDB_INCLUDE_DIR:-/usr/include}"
# Set, it would link librocksdb.a, which also needs its compression libraries named.
unset ROCKSDB_STATIC

exec cargo run --release --features peers --manifest-path "$HERE/Cargo.toml" -- "$@"
