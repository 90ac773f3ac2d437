#!/usr/bin/env bash
# Builds the shipping berth-shim: release profile (opt 3, thin LTO, panic=abort, stripped),
# statically linked against glibc as a static PIE (no ld.so, no libc.so pages: ~0.4 MB less RSS).
# Usage: crates/berth-shim/build-static.sh   -> prints the binary's path
set -euo pipefail
cd "$(dirname "$0")/../.."
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-target}
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p berth-shim --bin berth-shim \
  --target "$triple" >&2
echo "$target_dir/$triple/release/berth-shim"
