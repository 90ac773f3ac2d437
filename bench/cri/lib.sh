# Sourced by bench/cri/critest and bench/cri/pod: private peers for side-by-side CRI runs.
#
# - a docker-registry on 127.0.0.1:$REG_PORT holding offline, busybox-based stand-ins of the
#   images critest pulls (critest runs with --registry-prefix localhost:$REG_PORT);
# - berthd (this tree's build, $BIN) with its own root, sockets, cgroup parent and CNI
#   network;
# - Debian's containerd 1.6 with its own root, state, socket, config and CNI network, a
#   compiled pause (pause.c) as its sandbox image, pulling over http from the registry.
#
# Each runtime's CNI network is a bridge + host-local + portmap conflist in a private
# directory, with its own bridge and subnet. `cri_cleanup` (set as the EXIT trap) removes the
# pods through each runtime, stops what was started (by pid), deletes the bridges, the
# portmap plugin's idle chains, mounts left under the work directory, and the directory.

CNI_BIN=${CNI_BIN:-/usr/lib/cni}
CRICTL=${CRICTL:-/root/peers/bin/crictl}
CRITEST=${CRITEST:-/root/peers/bin/critest}
REG_PORT=${REG_PORT:-5055}
REG=localhost:$REG_PORT
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d /tmp/berth-cri.XXXXXX)
started=()   # pids, stopped in reverse order
bridges=()
endpoints=() # CRI endpoints whose pods are removed at cleanup

log() { echo "[$(date +%T)] $*" >&2; }

crictl_at() { # ENDPOINT ARGS...
  local ep=$1
  shift
  CRI_CONFIG_FILE=/dev/null "$CRICTL" --runtime-endpoint "$ep" --image-endpoint "$ep" --timeout 60s "$@"
}

cri_cleanup() {
  set +e
  for ep in "${endpoints[@]}"; do
    crictl_at "$ep" rmp -fa >/dev/null 2>&1
  done
  local i
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    kill "${started[i]}" 2>/dev/null && wait "${started[i]}" 2>/dev/null
  done
  # containerd's shims outlive it: those serving this run's containerd (by its socket path).
  for p in $(ps -eo pid=,args= | awk -v a="$work/containerd/containerd.sock" 'index($0, a) && /containerd-shim/ {print $1}'); do
    kill "$p" 2>/dev/null
  done
  for b in "${bridges[@]}"; do ip link del "$b" 2>/dev/null; done
  nft delete table inet "berth_bd$$" 2>/dev/null
  remove_idle_portmap_chains
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
  for d in /sys/fs/cgroup/*/"berth-cri-$$" /sys/fs/cgroup/"berth-cri-$$"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rm -rf "$work"
}

# The portmap plugin leaves its shared chains after the last pod (IPv4 and IPv6 `nat` tables);
# remove them when unused, and a table then left with empty base chains only.
remove_idle_portmap_chains() {
  local tool family hook c
  for tool in iptables ip6tables; do
    family=ip
    [ "$tool" = ip6tables ] && family=ip6
    "$tool" -w -t nat -S 2>/dev/null | grep -q -- "-A CNI-HOSTPORT-DNAT" && continue
    for hook in PREROUTING OUTPUT; do
      "$tool" -w -t nat -D "$hook" -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
    done
    "$tool" -w -t nat -D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ 2>/dev/null
    for c in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
      "$tool" -w -t nat -F "$c" 2>/dev/null
      "$tool" -w -t nat -X "$c" 2>/dev/null
    done
    "$tool" -w -t nat -S 2>/dev/null | grep -qv -- "^-P " || nft delete table "$family" nat 2>/dev/null
  done
}

wait_for_socket() { # PATH SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  log "no socket at $1"
  return 1
}

# cni_conf DIR BRIDGE SUBNET: a conflist like a cluster's (bridge, host-local, portmap).
cni_conf() {
  mkdir -p "$1"
  bridges+=("$2")
  cat >"$1/10-bench.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$2-net",
  "plugins": [
    {"type": "bridge", "bridge": "$2", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$3"}]], "dataDir": "$work/ipam-$2"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# A busybox root file system with the users and groups the stand-ins need.
base_rootfs() { # DIR
  local r=$1 app
  mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/root" "$r/var/run" "$r/proc" "$r/sys" "$r/dev" "$r/home"
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  for app in $(/bin/busybox --list); do [ "$app" = busybox ] || ln -sf busybox "$r/bin/$app"; done
  mkdir -p "$r/usr/bin" "$r/usr/sbin" "$r/sbin"
  printf '%s\n' "root:x:0:0:root:/root:/bin/sh" "www-data:x:33:33:www-data:/var/www:/bin/sh" \
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false" >"$r/etc/passwd"
  printf '%s\n' "root:x:0:" "www-data:x:33:" "users:x:100:" "nogroup:x:65534:" >"$r/etc/group"
  # Applets the e2e busybox image has and Debian's busybox-static lacks, as scripts:
  # `pgrep NAME` (the pids of the processes whose name contains NAME, itself left out; exit
  # 1 for none) and `ipcs -m` (the IPC namespace's shared memory segments, as the kernel
  # lists them).
  cat >"$r/bin/pgrep" <<'SH'
#!/bin/sh
found=1
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = "$$" ] && continue
  read -r comm <"$d/comm" 2>/dev/null || continue
  case $comm in *"$1"*) echo "$pid"; found=0 ;; esac
done
exit $found
SH
  cat >"$r/bin/ipcs" <<'SH'
#!/bin/sh
echo "------ Shared Memory Segments --------"
cat /proc/sysvipc/shm
SH
  chmod 755 "$r/bin/pgrep" "$r/bin/ipcs"
}

# import_image NAME DIR [CHANGE...]: the directory as an image through the Docker API.
import_image() {
  local name=$1 dir=$2
  shift 2
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  tar --numeric-owner -C "$dir" -cf - . | docker -H "unix://$berth_sock" import "${args[@]}" - "$name" >/dev/null
}

start_registry() {
  mkdir -p "$work/registry"
  cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
EOF
  /usr/bin/docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
  started+=($!)
  local i
  for ((i = 0; i < 100; i++)); do
    curl -sf "http://$REG/v2/" >/dev/null && return 0
    sleep 0.1
  done
  log "docker-registry did not start: $(cat "$work/registry/log")"
  return 1
}

# Builds the stand-ins in berthd's store, pushes them to the registry, removes them again.
push_images() {
  local b=$work/img
  gcc -static -O2 -o "$work/pause" "$here/pause.c"
  gcc -static -O2 -o "$work/nnp" "$here/nnp.c"
  base_rootfs "$b/base"
  local e2e=$REG/e2e-test-images staging=$REG/k8s-staging-cri-tools
  import_image "$e2e/busybox:1.29-2" "$b/base" 'CMD ["sh"]'
  cp -a "$b/base" "$b/web"
  mkdir -p "$b/web/usr/share/nginx/html"
  echo "<h1>Welcome to nginx (a busybox httpd stand-in)</h1>" >"$b/web/usr/share/nginx/html/index.html"
  # The nginx stand-ins' process looks like nginx's master: named nginx (`pidof nginx`: a
  # link to busybox run under that name) with "nginx: master process" in its command line
  # (an argv[0] starting with "busybox" makes busybox run argv[1], the httpd applet).
  ln "$b/web/bin/busybox" "$b/web/usr/sbin/nginx"
  local nginx='exec -a \"busybox nginx: master process\" /usr/sbin/nginx httpd -f'
  import_image "$e2e/nginx:1.14-2" "$b/web" \
    "CMD [\"sh\", \"-c\", \"echo \$\$ > /var/run/nginx.pid; $nginx -p 80 -h /usr/share/nginx/html\"]"
  import_image "$staging/hostnet-nginx-amd64:latest" "$b/web" \
    "CMD [\"sh\", \"-c\", \"echo \$\$ > /var/run/nginx.pid; $nginx -p 12003 -h /usr/share/nginx/html\"]"
  import_image "$e2e/httpd:2.4.39-4" "$b/web" \
    'CMD ["sh", "-c", "echo httpd: serving on port 80; exec httpd -f -p 80 -h /usr/share/nginx/html"]'
  cp -a "$b/base" "$b/nnp"
  mkdir -p "$b/nnp/usr/local/bin"
  install -m 4755 "$work/nnp" "$b/nnp/usr/local/bin/nnp"
  import_image "$e2e/nonewprivs:1.3" "$b/nnp" 'CMD ["/usr/local/bin/nnp"]'
  import_image "$staging/test-image-user-uid:latest" "$b/base" 'USER 1002' 'CMD ["sh"]'
  import_image "$staging/test-image-user-username:latest" "$b/base" 'USER www-data' 'CMD ["sh"]'
  import_image "$staging/test-image-user-uid-group:latest" "$b/base" 'USER 1003:users' 'CMD ["sh"]'
  import_image "$staging/test-image-user-username-group:latest" "$b/base" 'USER www-data:www-data' 'CMD ["sh"]'
  cp -a "$b/base" "$b/group"
  echo "default-user:x:1000:1000::/home/default-user:/bin/sh" >>"$b/group/etc/passwd"
  printf '%s\n' "default-user:x:1000:" "group-defined-in-image:x:50000:default-user" >>"$b/group/etc/group"
  import_image "$staging/test-image-predefined-group:latest" "$b/group" 'USER 1000' 'CMD ["sh"]'
  local t
  for t in latest:latest tag:test tag:all 1:latest 2:latest 3:latest tags:1; do
    cp -a "$b/base" "$b/t"
    echo "$t" >"$b/t/test-image-$t"
    import_image "$staging/test-image-$t" "$b/t" 'CMD ["sh"]'
    rm -rf "$b/t"
  done
  for t in tags:2 tags:3; do docker -H "unix://$berth_sock" tag "$staging/test-image-tags:1" "$staging/test-image-$t"; done
  mkdir -p "$b/pause"
  cp "$work/pause" "$b/pause/pause"
  import_image "$REG/pause:3.9" "$b/pause" 'ENTRYPOINT ["/pause"]'
  # critest pulls `--registry-prefix`ed names, which keep an image's path but not its tag
  # (PrepareImageName: every prefixed image is `:latest`), and then creates containers of
  # the images' own names: each stand-in is pushed as `$REG/<path>:latest`, and kept in
  # berthd's store under its own name (imported into containerd's by `start_containerd`).
  local names n
  names=$(docker -H "unix://$berth_sock" images --format '{{.Repository}}:{{.Tag}}' | grep "^$REG/")
  for n in $names; do
    docker -H "unix://$berth_sock" tag "$n" "${n%:*}:latest"
    docker -H "unix://$berth_sock" push -q "${n%:*}:latest" >/dev/null
    [ "${n%:*}:latest" = "$n" ] || docker -H "unix://$berth_sock" push -q "$n" >/dev/null
  done
  own_images=()
  for n in $names; do
    case $n in
      # Those critest creates containers of (by their own names).
      "$REG"/e2e-test-images/* | *hostnet-nginx* | *predefined-group*) ;;
      *) continue ;;
    esac
    case $n in
      "$REG"/e2e-test-images/*) own_images+=("registry.k8s.io/${n#"$REG"/}") ;;
      *) own_images+=("gcr.io/${n#"$REG"/}") ;;
    esac
    docker -H "unix://$berth_sock" tag "$n" "${own_images[-1]}"
  done
  docker -H "unix://$berth_sock" save -o "$work/own-images.tar" "${own_images[@]}"
  # shellcheck disable=SC2046
  docker -H "unix://$berth_sock" rmi $(docker -H "unix://$berth_sock" images --format '{{.Repository}}:{{.Tag}}' | grep "^$REG/") >/dev/null
  log "pushed $(echo "$names" | wc -l) stand-in images to $REG; kept ${#own_images[@]} under their own names"
}

# start_berthd: $berth_sock (Docker API) and $berth_cri (CRI endpoint). $BERTHD_ARGS: more
# flags (e.g. `--log-level debug` for the CRI's phase timings).
start_berthd() {
  local d=$work/berthd
  mkdir -p "$d"
  cni_conf "$d/net.d" "bcri$$" "10.231.0.0/16"
  berth_sock=$d/docker.sock
  berth_cri=unix://$d/exec/cri.sock
  "$BIN/berthd" -H "unix://$berth_sock" --data-root "$d/data" --exec-root "$d/exec" \
    --pidfile "$d/berthd.pid" --bridge "bd$$" --bip 10.233.0.1/24 --cgroup-parent "/berth-cri-$$" \
    --cri-socket "$d/exec/cri.sock" --cni-conf-dir "$d/net.d" --cni-bin-dir "$CNI_BIN" \
    ${BERTHD_ARGS:-} >"$d/log" 2>&1 &
  berthd_pid=$!
  started+=($!)
  bridges+=("bd$$")
  wait_for_socket "$d/exec/cri.sock" 30 && wait_for_socket "$berth_sock" 30
  endpoints+=("$berth_cri")
}

# start_containerd: $containerd_cri.
start_containerd() {
  local d=$work/containerd
  mkdir -p "$d"
  cni_conf "$d/net.d" "ccri$$" "10.232.0.0/16"
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
plugin_dir = ""
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REG/pause:3.9"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This machine refuses to lower oom_score_adj (the pause process's -998): clamp it.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$d/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REG"]
    endpoint = ["http://$REG"]
EOF
  /usr/bin/containerd --config "$d/config.toml" >"$d/log" 2>&1 &
  containerd_pid=$!
  started+=($!)
  containerd_cri=unix://$d/containerd.sock
  wait_for_socket "$d/containerd.sock" 30
  endpoints+=("$containerd_cri")
  ctr --address "$d/containerd.sock" -n k8s.io images import "$work/own-images.tar" >/dev/null
  # The sandbox image, pulled once (containerd pulls it at the first pod otherwise).
  crictl_at "$containerd_cri" pull "$REG/pause:3.9" >/dev/null
}
