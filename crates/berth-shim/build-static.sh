#!/usr/bin/env bash
# Builds the shipping berth-shim: release profile (opt 3, thin LTO, panic=abort, stripped),
# statically linked against glibc as a static PIE (scripts/build-static: no ld.so, no libc.so
# pages: ~0.4 MB less RSS).
# Usage: crates/berth-shim/build-static.sh   -> prints the binary's path
exec "$(dirname "$0")/../../scripts/build-static" berth-shim --release
