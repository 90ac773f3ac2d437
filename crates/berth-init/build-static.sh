#!/usr/bin/env bash
# Builds berth-init statically linked (it runs inside any image, even one without a libc) and
# puts it next to the other binaries (TARGET/<profile>/berth-init), where berthd finds it.
# Usage: crates/berth-init/build-static.sh [--release]  -> prints the binary's path
set -euo pipefail
cd "$(dirname "$0")/../.."
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-target}
profile=debug
[ "${1:-}" = "--release" ] && profile=release
RUSTFLAGS="-C target-feature=+crt-static" cargo build ${1:-} -p berth-init --target "$triple" >&2
mkdir -p "$target_dir/$profile"
# A rename: a running copy (an --init container's) is never overwritten in place.
cp "$target_dir/$triple/$profile/berth-init" "$target_dir/$profile/.berth-init.$$"
mv -f "$target_dir/$profile/.berth-init.$$" "$target_dir/$profile/berth-init"
echo "$target_dir/$profile/berth-init"
