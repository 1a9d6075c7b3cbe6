#!/usr/bin/env bash
# Installs what the harness's peers need to build on Debian bookworm, as root:
# Debian's RocksDB 7.8 (the `rocksdb` crate =0.20.1 links it), and clang/libclang for the
# crate's bindgen step. Idempotent: apt is skipped when every package is already installed.
set -euo pipefail

PACKAGES=(librocksdb-dev libclang-dev clang)

missing=()
for p in "${PACKAGES[@]}"; do
    if dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
        echo "setup.sh: $p already installed"
    else
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup.sh: nothing to install"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "setup.sh: need root to install: ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "setup.sh: apt-get update"
"${SUDO[@]}" apt-get update
echo "setup.sh: apt-get install -y ${missing[*]}"
"${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
echo "setup.sh: installed ${missing[*]}"
