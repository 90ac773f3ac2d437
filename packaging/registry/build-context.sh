#!/usr/bin/env bash
# Gathers the build context of the registry image into DIR: the Dockerfile, the `berth` binary
# (BERTH, default: target/release/berth, else target/debug/berth) and every shared library it
# loads (from ldd), at the same paths. Then: `berth build -t berth-registry DIR`.
# Usage: packaging/registry/build-context.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${1:?usage: build-context.sh DIR}
bin=${BERTH:-}
if [ -z "$bin" ]; then
  for b in "$root/target/release/berth" "$root/target/debug/berth"; do
    if [ -x "$b" ]; then bin=$b; break; fi
  done
fi
[ -x "${bin:-}" ] || { echo "build-context.sh: no berth binary (build it, or set BERTH)" >&2; exit 1; }
mkdir -p "$dir/rootfs/usr/bin" "$dir/rootfs/var/lib/registry" "$dir/rootfs/tmp" "$dir/rootfs/etc"
cp "$here/Dockerfile" "$dir/Dockerfile"
cp "$bin" "$dir/rootfs/usr/bin/berth"
# The dynamic loader and the libraries, resolved through symlinks, copied under their paths.
ldd "$bin" | awk '/=> \// {print $3} /^\t\// {print $1}' | while read -r lib; do
  mkdir -p "$dir/rootfs$(dirname "$lib")"
  cp -L "$lib" "$dir/rootfs$lib"
done
chmod 1777 "$dir/rootfs/tmp"
echo "root:x:0:0:root:/:/usr/bin/berth" > "$dir/rootfs/etc/passwd"
echo "$dir"
