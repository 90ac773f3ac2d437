#!/usr/bin/env bash
# Builds the shipping berth-runtime: statically linked against glibc as a static PIE (crt-static,
# as the shim): no ld.so, no libc.so to map, no symbol binding at each of its starts (one per
# container create, exec, delete), a third less CPU per start; the executable stays
# position-independent (ASLR). No NSS in it: users are read from /etc/passwd
# (berth_util::passwd). libseccomp is linked statically anyway (.cargo/config.toml).
# Usage: crates/berth-runtime/build-static.sh [--release]  -> prints the binary's path
set -euo pipefail
cd "$(dirname "$0")/../.."
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-target}
profile=debug
[ "${1:-}" = "--release" ] && profile=release
RUSTFLAGS="-C target-feature=+crt-static" cargo build ${1:-} -p berth-runtime --bin berth-runtime \
  --target "$triple" >&2
echo "$target_dir/$triple/$profile/berth-runtime"
