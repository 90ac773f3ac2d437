#!/usr/bin/env bash
# Builds berth-init statically linked (scripts/build-static: it runs inside any image, even one
# without a libc) and puts it next to the other binaries (TARGET/<profile>/berth-init), where
# berthd finds it.
# Usage: crates/berth-init/build-static.sh [--release]  -> prints the binary's path
set -euo pipefail
cd "$(dirname "$0")/../.."
built=$(scripts/build-static berth-init "$@")
target_dir=${CARGO_TARGET_DIR:-target}
profile=$(basename "$(dirname "$built")")
mkdir -p "$target_dir/$profile"
# A rename: a running copy (an --init container's) is never overwritten in place.
cp "$built" "$target_dir/$profile/.berth-init.$$"
mv -f "$target_dir/$profile/.berth-init.$$" "$target_dir/$profile/berth-init"
echo "$target_dir/$profile/berth-init"
