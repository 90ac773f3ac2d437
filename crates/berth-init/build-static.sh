#!/usr/bin/env bash
# Builds berth-init statically linked (it runs inside any image, even one without a libc).
# Usage: crates/berth-init/build-static.sh [--release]  -> prints the binary's path
set -euo pipefail
cd "$(dirname "$0")/../.."
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-target}
profile=debug
[ "${1:-}" = "--release" ] && profile=release
RUSTFLAGS="-C target-feature=+crt-static" cargo build ${1:-} -p berth-init --target "$triple" >&2
echo "$target_dir/$triple/$profile/berth-init"
