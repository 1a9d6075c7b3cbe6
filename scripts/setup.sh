#!/usr/bin/env bash
# Installs what building and testing walmdb needs on a fresh Debian machine. Idempotent.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
# scripts/raft-cluster.sh (run by CI) talks to the nodes' HTTP API with curl.
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
  else
    echo "walmdb needs: ${need[*]} (install them with apt-get)" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null 2>&1 || { echo "walmdb needs a Rust toolchain (cargo)" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "walmdb CI needs clippy (rustup component add clippy)" >&2; exit 1; }
echo "set-up done: $(cargo --version)"
