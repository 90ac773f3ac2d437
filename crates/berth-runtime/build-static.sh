#!/usr/bin/env bash
# Builds the shipping berth-runtime statically linked against glibc as a static PIE
# (scripts/build-static, as the shim): no ld.so, no libc.so to map, no symbol binding at each of
# its starts (one per container create, exec, delete), a third less CPU per start. No NSS in it:
# users are read from /etc/passwd (berth_util::passwd). libseccomp is linked statically anyway
# (.cargo/config.toml).
# Usage: crates/berth-runtime/build-static.sh [--release]  -> prints the binary's path
exec "$(dirname "$0")/../../scripts/build-static" berth-runtime "$@"
