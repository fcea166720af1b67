#!/usr/bin/env bash
# A real single-node Kubernetes for the end-to-end tests (tests/chart_on_node.rs), without Docker:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and a node (containerd + runc from
# Debian, kubelet, kube-proxy in nftables mode, the bridge CNI plugin), plus the Key Vault
# emulator where pods can reach it. A cluster of its own, apart from testenv.sh's node-less one,
# so the Deployments other tests create there never start pods.
#
# Usage:
#   tests/env/node.sh install     build/cache kubelet, kube-scheduler, kube-proxy, the CNI plugins;
#                                 apt-get containerd, runc, nftables when missing (as root);
#                                 `testenv.sh install` runs it after building its own binaries
#   tests/env/node.sh up DIR      start everything with state in DIR (root only); writes DIR/env.sh
#   tests/env/node.sh down DIR    stop everything of DIR by PID and undo every host change
#                                 (idempotent; also run by `up` when it fails)
#   tests/env/node.sh image DIR BINARY REF   build the operator image from BINARY and import it
#                                 into the node's containerd as REF
#
# Network (every address lives on interfaces this script creates; nothing leaves the machine):
#   a network namespace held by a process of ours (no /run/netns entry), joined to the host by a
#   veth pair on a free 10.B.0.0/16: host end 10.B.255.1/30, node end 10.B.255.2/30. The node's
#   processes (containerd, kubelet, kube-proxy) run in that namespace, so the pod bridge, the
#   pods' veths, kube-proxy's nftables rules and ip_forward exist only there and vanish with it.
#   Pods: 10.B.0.0/24 (host route via the node end, on our veth). Services: 10.B.128.0/24.
#   The control plane and the emulator listen on the host end 10.B.255.1 (etcd on 127.0.0.1);
#   pods reach the API server through the `kubernetes` Service (kube-proxy DNAT) and the emulator
#   directly. No DNS: kubelet gets an empty resolv.conf.
# Host changes, all undone by `down`: the veth pair and its route (gone with the namespace), the
# cgroup /vaultkey-node-<id> in every hierarchy (kubelet's cgroupRoot), mounts under DIR (kubelet
# volumes, containerd's rootfs and pod netns mounts), containerd shims' sockets in
# /run/containerd/s, and the kernel sysctls kubelet sets (vm.overcommit_memory, kernel.panic,
# ...: saved before, restored after).
set -euo pipefail

# shellcheck source=tests/env/testenv.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/testenv.sh"
node_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

node_name=vaultkey-node
# Host paths the node's programs write to whatever their configuration says: containerd's shims
# (/run/containerd/{s,fifo,runc}), libcni's result cache (/var/lib/cni/results), kubelet's
# device-plugin socket (/var/lib/kubelet/device-plugins) and its container log symlinks
# (/var/log/containers, pointing into DIR/pod-logs). `up` records which did not exist;
# `down` deletes our files in them and removes those folders again when empty (so a concurrent
# user of the same folders keeps theirs).
host_dirs=(/run/containerd /run/containerd/s /run/containerd/fifo /run/containerd/runc
  /run/containerd/runc/k8s.io /var/lib/cni /var/lib/cni/results /var/lib/kubelet
  /var/lib/kubelet/device-plugins /var/log/pods /var/log/containers)
# The sysctls kubelet's container manager sets on start (setupKernelTunables).
kubelet_sysctls=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
# Stop order of `down`: the node first (kubelet would restart containers), the control plane last.
node_stop_order=(kubelet kube-proxy containerd kube-scheduler kube-controller-manager kube-apiserver
  etcd kv-emulator netns)

nlog() { printf 'node: %s\n' "$*" >&2; }
ndie() { printf 'node: error: %s\n' "$*" >&2; exit 1; }

cni_version() { mod_version "$node_here/cni/go.mod" github.com/containernetworking/plugins; }
cni_dir() { printf '%s/cni-plugins-%s\n' "$cache_root" "$(cni_version)"; }
kube_bin() { printf '%s/%s-%s/%s\n' "$cache_root" "$1" "$(kas_version)" "$1"; }

ensure_debian_packages() {
  local -A pkg_of=([containerd]=containerd [ctr]=containerd [runc]=runc [nft]=nftables [gcc]=gcc [ip]=iproute2 [nsenter]=util-linux [unshare]=util-linux)
  local t missing=() pkgs=()
  for t in containerd ctr runc nft gcc ip nsenter unshare; do
    command -v "$t" >/dev/null && continue
    missing+=("$t")
    [[ " ${pkgs[*]} " == *" ${pkg_of[$t]} "* ]] || pkgs+=("${pkg_of[$t]}")
  done
  (( ${#missing[@]} > 0 )) || return 0
  if (( EUID != 0 )) || ! command -v apt-get >/dev/null; then
    # Not fatal here: `testenv.sh install` runs this for every test run, and only the node's
    # test needs these (node.sh up then fails, naming them).
    nlog "warning: missing ${missing[*]} (Debian packages ${pkgs[*]}; run as root to have them installed): the node cannot start"
    return 0
  fi
  nlog "installing ${pkgs[*]} with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >&2 \
    || ndie "apt-get could not install ${pkgs[*]}"
}

cmd_node_install() {
  local t kv p
  t=$(now_ms)
  ensure_debian_packages
  command -v go >/dev/null || ndie "go is not installed (needed to build kubelet, kube-scheduler, kube-proxy, CNI plugins)"
  kv=$(kas_version)
  for p in kube-scheduler kubelet kube-proxy; do
    build_go_binary "$p" "$kv" "$here/kube-apiserver" "k8s.io/kubernetes/cmd/$p" "$(kas_ldflags "$kv")"
  done
  # CNI plugins are static Go programs, cached as cni-<plugin>-<version>/cni-<plugin>; containerd
  # finds them under their own names in one folder (cni-plugins-<version>, hard links).
  local cv pkg plugin
  cv=$(cni_version)
  mkdir -p "$(cni_dir)"
  for pkg in main/bridge ipam/host-local main/loopback; do
    plugin=$(basename "$pkg")
    CGO_ENABLED=0 build_go_binary "cni-$plugin" "$cv" "$node_here/cni" \
      "github.com/containernetworking/plugins/plugins/$pkg"
    ln -f "$cache_root/cni-$plugin-$cv/cni-$plugin" "$(cni_dir)/$plugin"
  done
  nlog "installed in $(since "$t")"
}

# free_block: B such that 10.B.0.0/16 overlaps no address or route of the host.
free_block() {
  python3 - <<'PY'
import ipaddress, json, random, subprocess
used = []
for cmd in (["ip", "-j", "-4", "route", "show", "table", "all"], ["ip", "-j", "-4", "addr"]):
    for e in json.loads(subprocess.check_output(cmd) or b"[]"):
        dst = e.get("dst")
        if dst and dst != "default":
            try: used.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
            except ValueError: pass
        for a in e.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
cands = list(range(200, 250)); random.shuffle(cands)
for b in cands:
    net = ipaddress.ip_network(f"10.{b}.0.0/16")
    if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
        print(b); break
PY
}

nsrun() { local dir=$1; shift; nsenter --net="/proc/$(pid_of netns "$dir")/ns/net" -- "$@"; }

cgroup_hierarchies() {
  if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
    printf '/sys/fs/cgroup\n'
  else
    local d
    for d in /sys/fs/cgroup/*; do [[ -d $d && ! -L $d ]] && mountpoint -q "$d" && printf '%s\n' "$d"; done
  fi
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------

cmd_node_down() {
  local dir=${1:?usage: node.sh down DIR}
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd -P)
  local name pid cg h
  cg=$(cat "$dir/cgroup" 2>/dev/null || true)
  for name in "${node_stop_order[@]}"; do
    if [[ $name == containerd && -n $cg ]]; then
      # Every container process lives below our cgroup root: kill them all before containerd
      # goes, so no pod outlives the run.
      local procs
      for h in $(cgroup_hierarchies); do
        [[ -d $h$cg ]] || continue
        procs=$(find "$h$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
        # shellcheck disable=SC2086  # one PID per word
        if [[ -n $procs ]]; then kill -KILL $procs 2>/dev/null || true; fi
        break
      done
    fi
    pid=$(pid_of "$name" "$dir")
    if [[ -n $pid ]] && ours "$pid" "$dir"; then stop_pid "$name" "$pid" "$dir"; fi
    rm -f "$dir/pids/$name.pid"
    if [[ $name == containerd ]]; then
      # Shims re-parent themselves and survive containerd; theirs name our socket. Their socket
      # files in /run/containerd/s are named in each task's `address` file.
      local p
      for p in /proc/[0-9]*; do
        p=${p#/proc/}
        if ours "$p" "$dir" && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q containerd-shim; then
          kill -KILL "$p" 2>/dev/null || true
        fi
      done
      local a
      for a in "$dir"/containerd/state/io.containerd.runtime.v2.task/*/*/address; do
        [[ -f $a ]] || continue
        a=$(sed 's#^unix://##' "$a")
        [[ $a == /run/containerd/s/* ]] && rm -f "$a"
      done
    fi
  done
  # Our files in shared host folders: CNI results of our containers, kubelet's socket.
  local ids=() c
  for c in "$dir"/containerd/root/io.containerd.grpc.v1.cri/sandboxes/* \
           "$dir"/containerd/root/io.containerd.grpc.v1.cri/containers/*; do
    [[ -e $c ]] && ids+=("$(basename "$c")")
  done
  for c in "${ids[@]}"; do
    rm -f /var/lib/cni/results/*-"$c"-* /run/containerd/fifo/"$c"* 2>/dev/null || true
    rm -rf "/run/containerd/runc/k8s.io/$c" 2>/dev/null || true
  done
  for c in /var/log/containers/*.log; do
    [[ -L $c && $(readlink "$c") == "$dir/"* ]] && rm -f "$c"
  done
  if [[ -f $dir/host-dirs.created ]]; then
    grep -qx /var/lib/kubelet/device-plugins "$dir/host-dirs.created" && rm -f /var/lib/kubelet/device-plugins/kubelet.sock
    # Deepest first; rmdir leaves a folder someone else still uses.
    sort -r "$dir/host-dirs.created" | while read -r c; do rmdir "$c" 2>/dev/null || true; done
    rm -f "$dir/host-dirs.created"
  fi
  # Mounts under DIR (kubelet's volumes, container rootfs, pod netns), deepest first.
  local m mounts=()
  for _ in 1 2 3; do
    mapfile -t mounts < <(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    (( ${#mounts[@]} == 0 )) && break
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
  # kubelet's cgroups: depth first, once their processes are gone.
  if [[ -n $cg ]]; then
    for h in $(cgroup_hierarchies); do
      [[ -d $h$cg ]] || continue
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        find "$h$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d $h$cg ]] || break
        sleep 0.3
      done
      [[ -d $h$cg ]] && nlog "down: could not remove cgroup $h$cg"
    done
  fi
  # Sysctls kubelet changed.
  if [[ -f $dir/sysctls.saved ]]; then
    local k v
    while read -r k v; do
      [[ $(cat "/proc/sys/$k") == "$v" ]] || printf '%s\n' "$v" >"/proc/sys/$k" || nlog "down: cannot restore $k"
    done <"$dir/sysctls.saved"
    rm -f "$dir/sysctls.saved"
  fi
  # The host end of the veth normally went with the namespace.
  if [[ -f $dir/veth ]]; then
    ip link del "$(cat "$dir/veth")" 2>/dev/null || true
    rm -f "$dir/veth"
  fi
}

# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------

wait_for() { # DESC SECONDS CMD...: poll CMD until it succeeds
  local desc=$1 secs=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || { nlog "timed out after ${secs}s waiting for $desc"; return 1; }
    sleep 0.2
  done
}

node_kubeconfig() { # DIR FILE TOKEN USER SERVER
  local ca
  ca=$(base64 -w0 <"$1/pki/apiserver-ca.crt")
  (umask 077 && cat >"$2") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: node
  cluster: {server: "$5", certificate-authority-data: $ca}
users:
- name: $4
  user: {token: $3}
contexts:
- name: node
  context: {cluster: node, user: $4, namespace: default}
current-context: node
EOF
}

cmd_node_up() {
  local dir=${1:?usage: node.sh up DIR}
  (( EUID == 0 )) || ndie "the node needs root (network namespace, mounts, cgroups)"
  local t0 t
  t0=$(now_ms)
  ensure_tools
  local b
  for b in "$(etcd_bin)" "$(kas_bin)" "$(kcm_bin)" "$(kube_bin kube-scheduler)" "$(kube_bin kubelet)" \
           "$(kube_bin kube-proxy)" "$(cni_dir)/bridge" "$(emulator_bin)"; do
    [[ -x $b ]] || ndie "$b is missing: run tests/env/testenv.sh install"
  done
  local tool
  for tool in containerd ctr runc nft gcc nsenter unshare; do
    command -v "$tool" >/dev/null || ndie "$tool is missing: run tests/env/testenv.sh install (as root)"
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  [[ ! -e $dir/pids/netns.pid ]] || ndie "$dir is in use: run node.sh down $dir first"
  mkdir -p "$dir/pids" "$dir/logs" "$dir/pki"
  node_dir=$dir
  trap 'st=$?; if (( st != 0 )); then nlog "up failed; tearing down"; cmd_node_down "$node_dir"; fi' EXIT

  # --- network ---
  local blk id host_if node_if host_ip node_ip pod_net svc_net
  blk=$(free_block)
  [[ -n $blk ]] || ndie "no free 10.B.0.0/16 block for the node"
  id=$(openssl rand -hex 3)
  host_if=vkh$id node_if=vkn$id
  host_ip=10.$blk.255.1 node_ip=10.$blk.255.2 pod_net=10.$blk.0.0/24 svc_net=10.$blk.128.0/24
  # The namespace's holder: a process of ours that only waits; the namespace lives as long as
  # it or any node process does. `tail -f` on a file of DIR keeps DIR in its command line.
  : >"$dir/netns.hold"
  start netns "$dir" unshare --net -- tail -f "$dir/netns.hold"
  alive netns "$dir" || ndie "could not create the network namespace"
  printf '%s\n' "$host_if" >"$dir/veth"
  ip link add "$host_if" type veth peer name "$node_if" netns "/proc/$(pid_of netns "$dir")/ns/net"
  ip addr add "$host_ip/30" dev "$host_if"
  ip link set "$host_if" up
  nsrun "$dir" ip link set lo up
  nsrun "$dir" ip addr add "$node_ip/30" dev "$node_if"
  nsrun "$dir" ip link set "$node_if" up
  nsrun "$dir" ip route add default via "$host_ip"
  nsrun "$dir" sysctl -qw net.ipv4.ip_forward=1
  ip route add "$pod_net" via "$node_ip" dev "$host_if"
  nlog "network: host $host_ip ($host_if) <-> node namespace $node_ip; pods $pod_net; services $svc_net"

  # --- cgroups ---
  local cg=/vaultkey-node-$id h
  printf '%s\n' "$cg" >"$dir/cgroup"
  for h in $(cgroup_hierarchies); do
    mkdir -p "$h$cg"
    if [[ -f $h/cpuset.cpus && -f $h$cg/cpuset.cpus ]]; then
      cat "$h/cpuset.cpus" >"$h$cg/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$cg/cpuset.mems"
    fi
  done
  local s
  for s in "${host_dirs[@]}"; do [[ -e $s ]] || printf '%s\n' "$s"; done >"$dir/host-dirs.created"
  for s in "${kubelet_sysctls[@]}"; do printf '%s %s\n' "$s" "$(cat "/proc/sys/$s")"; done >"$dir/sysctls.saved"

  # --- control plane ---
  t=$(now_ms)
  gen_pki "$dir"
  start etcd "$dir" "$(etcd_bin)" --name=default --data-dir="$dir/etcd" \
    --listen-client-urls="http://$host_ip:2379" --advertise-client-urls="http://$host_ip:2379" \
    --listen-peer-urls="http://$host_ip:2380" --initial-advertise-peer-urls="http://$host_ip:2380" \
    --initial-cluster="default=http://$host_ip:2380" --unsafe-no-fsync --log-outputs=stderr
  wait_for etcd 30 curl -fsS "http://$host_ip:2379/health" || { log_tail etcd "$dir"; ndie "etcd did not start"; }
  # The default admission plugins (ServiceAccount among them: pods get their projected token)
  # and the lease endpoint reconciler (the `kubernetes` Service points at $host_ip:6443).
  # Logs and exec reach the kubelet at the node's InternalIP: its hostname is a made-up name
  # that must never go to DNS.
  start kube-apiserver "$dir" "$(kas_bin)" --etcd-servers="http://$host_ip:2379" \
    --bind-address="$host_ip" --advertise-address="$host_ip" --secure-port=6443 \
    --cert-dir="$dir/pki" --service-account-issuer="$sa_issuer" \
    --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range="$svc_net" --authorization-mode=Node,RBAC \
    --token-auth-file="$dir/pki/tokens.csv" --profiling=false \
    --kubelet-preferred-address-types=InternalIP
  local token
  token=$(cat "$dir/pki/admin.token")
  wait_for kube-apiserver 90 bash -c "[[ \$(curl -ksS -H 'Authorization: Bearer $token' https://$host_ip:6443/readyz) == ok ]]" \
    || { log_tail kube-apiserver "$dir"; ndie "kube-apiserver did not become ready"; }
  printf '6443\n' >"$dir/apiserver.port"
  awk '/-----BEGIN CERTIFICATE-----/ { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' \
    "$dir/pki/apiserver.crt" >"$dir/pki/apiserver-ca.crt"
  local server=https://$host_ip:6443
  node_kubeconfig "$dir" "$dir/kubeconfig" "$token" admin "$server"
  # One system:masters token serves the node's components (a test cluster; no node authorizer
  # credentials to mint).
  node_kubeconfig "$dir" "$dir/pki/components.kubeconfig" "$(cat "$dir/pki/kube-controller-manager.token")" \
    system:kube-controller-manager "$server"
  start kube-controller-manager "$dir" "$(kcm_bin)" --kubeconfig="$dir/pki/components.kubeconfig" \
    --authentication-kubeconfig="$dir/pki/components.kubeconfig" \
    --authorization-kubeconfig="$dir/pki/components.kubeconfig" --authentication-skip-lookup=true \
    --controllers='*' --use-service-account-credentials=false --leader-elect=false \
    --root-ca-file="$dir/pki/apiserver-ca.crt" --service-account-private-key-file="$dir/pki/sa.key" \
    --bind-address="$host_ip" --secure-port=10257 --cert-dir="$dir/pki/kcm" --profiling=false
  start kube-scheduler "$dir" "$(kube_bin kube-scheduler)" --kubeconfig="$dir/pki/components.kubeconfig" \
    --authentication-kubeconfig="$dir/pki/components.kubeconfig" \
    --authorization-kubeconfig="$dir/pki/components.kubeconfig" --authentication-skip-lookup=true \
    --leader-elect=false --bind-address="$host_ip" --secure-port=10259 --cert-dir="$dir/pki/scheduler"
  nlog "control plane up after $(since "$t")"
  install_crds "$dir"

  # --- containerd (in the namespace) ---
  t=$(now_ms)
  mkdir -p "$dir/cni/net.d" "$dir/containerd" "$dir/kubelet" "$dir/pod-logs"
  # The CNI config must exist before containerd starts, or the node stays NotReady.
  cat >"$dir/cni/net.d/10-vaultkey.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "vaultkey-node-$id", "plugins": [
  {"type": "bridge", "bridge": "vkbr0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$dir/cni/ipam", "ranges": [[{"subnet": "$pod_net"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
  # restrict_oom_score_adj: this machine kind lacks CAP_SYS_RESOURCE, and runc fails every
  # sandbox lowering oom_score_adj without it. disable_apparmor: no profile loaded into the
  # kernel. netns_mounts_under_state_dir: pod netns mounts stay in DIR, not /run/netns.
  cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$dir/containerd/containerd.sock"
[ttrpc]
  address = "$dir/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:node"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$(cni_dir)"
    conf_dir = "$dir/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/containerd/runc"
EOF
  start containerd "$dir" nsenter --net="/proc/$(pid_of netns "$dir")/ns/net" -- \
    containerd --config "$dir/containerd/config.toml"
  wait_for containerd 30 ctr --address "$dir/containerd/containerd.sock" version \
    || { log_tail containerd "$dir"; ndie "containerd did not start"; }
  build_pause_image "$dir/pause.tar" localhost/pause:node >"$dir/logs/image.log" 2>&1 \
    || { cat "$dir/logs/image.log" >&2; ndie "building the pause image failed"; }
  ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import "$dir/pause.tar" >>"$dir/logs/image.log" 2>&1 \
    || { cat "$dir/logs/image.log" >&2; ndie "importing the pause image failed"; }
  nlog "containerd up, pause image imported after $(since "$t")"

  # --- kubelet, kube-proxy (in the namespace) ---
  t=$(now_ms)
  : >"$dir/resolv.conf"
  node_kubeconfig "$dir" "$dir/pki/kubelet.kubeconfig" "$(cat "$dir/pki/kube-controller-manager.token")" \
    system:kube-controller-manager "$server"
  cat >"$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine kind mounts cgroup v1 hierarchies and has no systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# All of kubelet's cgroups below one root of ours, removed by down.
cgroupRoot: $cg
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
address: $node_ip
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
podLogsDir: $dir/pod-logs
resolvConf: $dir/resolv.conf
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
# Never evict nor garbage-collect the imported images (there is no registry to pull them back).
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
oomScoreAdj: 0
registerNode: true
syncFrequency: 10s
EOF
  start kubelet "$dir" nsenter --net="/proc/$(pid_of netns "$dir")/ns/net" -- \
    "$(kube_bin kubelet)" --config="$dir/kubelet/config.yaml" --kubeconfig="$dir/pki/kubelet.kubeconfig" \
    --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" --hostname-override="$node_name" --node-ip="$node_ip"
  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
# nftables: pods reach the API server's Service IP (without Service routing they look Ready yet
# never reach the API).
mode: nftables
clientConnection: {kubeconfig: $dir/pki/components.kubeconfig}
hostnameOverride: $node_name
clusterCIDR: $pod_net
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$node_ip/32"]
# Zero: leave the host's conntrack sysctls alone (nf_conntrack_max is global).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy "$dir" nsenter --net="/proc/$(pid_of netns "$dir")/ns/net" -- \
    "$(kube_bin kube-proxy)" --config="$dir/kube-proxy.yaml"
  local kubectl
  kubectl=$(pick_kubectl)
  wait_for "node $node_name Ready" 120 bash -c \
    "[[ \$('$kubectl' --kubeconfig '$dir/kubeconfig' get node $node_name -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}') == True ]]" \
    || { log_tail kubelet "$dir"; log_tail containerd "$dir"; ndie "the node did not become Ready"; }
  nlog "node $node_name Ready after $(since "$t")"

  # --- emulator, on the host end so pods reach it ---
  t=$(now_ms)
  start kv-emulator "$dir" "$(emulator_bin)" --ready-file "$dir/kv-emulator.json" --bind "$host_ip" \
    --sa-public-key "$dir/pki/sa.pub" --sa-issuer "$sa_issuer" --vault default=Recoverable
  wait_for kv-emulator 60 jq -e '.caFile and .adminUrl and .vaults.default.url' "$dir/kv-emulator.json" \
    || { log_tail kv-emulator "$dir"; ndie "kv-emulator did not start"; }

  {
    printf '# Generated by tests/env/node.sh up; source it.\n'
    printf 'export VAULTKEY_NODE_DIR=%q\n' "$dir"
    printf 'export VAULTKEY_NODE_KUBECONFIG=%q\n' "$dir/kubeconfig"
    printf 'export VAULTKEY_NODE_HOST_IP=%q\n' "$host_ip"
    printf 'export VAULTKEY_NODE_VAULT_URL=%q\n' "$(jq -r .vaults.default.url "$dir/kv-emulator.json")"
    printf 'export VAULTKEY_NODE_VAULT_CA=%q\n' "$(jq -r .caFile "$dir/kv-emulator.json")"
    printf 'export VAULTKEY_NODE_EMULATOR_ADMIN=%q\n' "$(jq -r .adminUrl "$dir/kv-emulator.json")"
    printf 'export VAULTKEY_NODE_CTR_ADDRESS=%q\n' "$dir/containerd/containerd.sock"
  } >"$dir/env.sh"
  trap - EXIT
  nlog "up in $(since "$t0"); source $dir/env.sh"
}

# The images come from the project's own recipe (the one the Dockerfile packages).
build_operator_image() { "$repo_root/deploy/image.sh" oci "$@"; }
build_pause_image() { "$repo_root/deploy/image.sh" pause "$@"; }

cmd_node_image() {
  local dir=${1:?usage: node.sh image DIR BINARY REF} bin=${2:?} ref=${3:?} t
  dir=$(cd "$dir" && pwd -P)
  t=$(now_ms)
  build_operator_image "$bin" "$dir/operator.tar" "$ref" >"$dir/logs/operator-image.log" 2>&1 \
    || { cat "$dir/logs/operator-image.log" >&2; ndie "building the operator image failed"; }
  ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import "$dir/operator.tar" \
    >>"$dir/logs/operator-image.log" 2>&1 \
    || { cat "$dir/logs/operator-image.log" >&2; ndie "importing the operator image failed"; }
  nlog "image $ref ($(du -h "$dir/operator.tar" | cut -f1) archive) imported after $(since "$t")"
}

node_main() {
  (( $# > 0 )) || { sed -n '8,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
  local sub=$1
  shift
  case $sub in
    install) cmd_node_install "$@" ;;
    up) cmd_node_up "$@" ;;
    down) cmd_node_down "$@" ;;
    image) cmd_node_image "$@" ;;
    *) ndie "unknown subcommand '$sub'" ;;
  esac
}

node_main "$@"
