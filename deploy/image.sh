#!/usr/bin/env bash
# The operator's container image, without Docker: one recipe shared with the Dockerfile.
#
# Usage:
#   deploy/image.sh rootfs BINARY DIR       assemble the image's root filesystem in DIR (new or
#                                           empty): BINARY at /vaultkey-operator, the ELF loader
#                                           and the shared libraries `ldd BINARY` lists, Debian's
#                                           CA bundle, /etc/passwd and /etc/group (root, nobody,
#                                           nonroot 65532), /etc/nsswitch.conf
#   deploy/image.sh oci BINARY OUT.tar REF  that root filesystem as a one-layer OCI image archive
#                                           (OCI image layout in a tar) named REF, for
#                                           `ctr -n k8s.io images import OUT.tar`
#   deploy/image.sh pause OUT.tar REF       a pause image for a node's pod sandboxes: a static C
#                                           program that sleeps in pause() until SIGTERM/SIGINT
#
# The Dockerfile's build stage runs `deploy/image.sh rootfs` and its final stage is FROM scratch
# plus that directory, with the USER/ENTRYPOINT/CMD this script writes into the OCI config
# (tests/image.rs fails when the two drift). Why not distroless any more: the Dockerfile's base
# cannot be pulled where there is no registry, and one recipe is the only way the image tested
# on a node and the image users pull stay the same.
#
# Reproducible: the same BINARY, libraries, CA certificates and REF give byte-identical archives
# (entries sorted, owner 0:0, mtime $SOURCE_DATE_EPOCH or 0, gzip without name or timestamp).
#
# Needs: bash, coreutils, ldd (libc-bin), python3 (oci, pause), gcc with a static libc (pause),
# Debian's ca-certificates (installed with apt-get when missing and running as root).
set -euo pipefail

# The final stage's settings; the Dockerfile repeats them (tests/image.rs compares).
image_user=65532:65532
image_entrypoint='["/vaultkey-operator"]'
image_cmd='["run"]'
# Upstream's pause image runs as 65535 too: nothing in a sandbox needs root.
pause_user=65535:65535

epoch=${SOURCE_DATE_EPOCH:-0}

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '/^# Usage:/,/^#$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# Debian's CA bundle rebuilt from the ca-certificates package's own files, not copied from
# /etc/ssl/certs: update-ca-certificates appends the machine's local CAs (on a build machine
# behind a TLS-inspecting proxy, the proxy's CA), which must not ship in the image.
ca_dir=/usr/share/ca-certificates/mozilla
ensure_ca_certificates() {
  compgen -G "$ca_dir/*.crt" >/dev/null && return 0
  if (( EUID == 0 )) && command -v apt-get >/dev/null; then
    log "installing Debian's ca-certificates with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates; } >&2 \
      || die "apt-get could not install ca-certificates"
  fi
  compgen -G "$ca_dir/*.crt" >/dev/null || die "no CA certificates in $ca_dir (Debian package ca-certificates; run as root to have it installed)"
}

# write_ca_bundle OUT: the certificates in byte order of their names, each ending in a newline,
# as update-ca-certificates concatenates them (the result equals the package's bundle without
# local additions).
write_ca_bundle() {
  local out=$1 f
  : >"$out"
  while IFS= read -r f; do
    cat "$f" >>"$out"
    [[ -z $(tail -c1 "$f") ]] || printf '\n' >>"$out"
  done < <(LC_ALL=C find "$ca_dir" -maxdepth 1 -name '*.crt' -type f | LC_ALL=C sort)
}

# shared_objects BINARY: the loader and every library the dynamic linker resolves for BINARY,
# one absolute path a line (nothing for a static binary). linux-vdso is the kernel's, no file.
shared_objects() {
  local bin=$1 out
  if ! out=$(LC_ALL=C ldd "$bin" 2>&1); then
    [[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]] && return 0
    die "ldd $bin failed: $out"
  fi
  [[ $out != *"not found"* ]] || die "ldd $bin: a library is missing on this machine: $out"
  awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$out" | LC_ALL=C sort -u
}

# put SRC DEST MODE: a regular file (symlinks followed: the loader finds each library by the
# name ldd printed, so a copy there is all it needs).
put() {
  local src=$1 dest=$2 mode=$3
  mkdir -p "$(dirname "$dest")"
  cp -L "$src" "$dest"
  chmod "$mode" "$dest"
}

cmd_rootfs() {
  (( $# == 2 )) || usage
  local bin=$1 dir=$2 so
  [[ -f $bin && -x $bin ]] || die "$bin is not an executable file"
  if [[ -e $dir ]]; then
    # An existing non-empty directory could carry files nobody meant to ship.
    [[ -d $dir && -z $(ls -A "$dir") ]] || die "$dir exists and is not an empty directory"
  fi
  ensure_ca_certificates
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)

  put "$bin" "$dir/vaultkey-operator" 0755
  while IFS= read -r so; do
    put "$so" "$dir$so" 0755
  done < <(shared_objects "$bin")

  mkdir -p "$dir/etc/ssl/certs"
  write_ca_bundle "$dir/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$dir/etc/ssl/certs/ca-certificates.crt"

  # The users distroless has: root, nobody and nonroot (65532, the user the image runs as).
  # A named user lets tools like `id` or a core dump say who the process is; no home directory
  # exists because the operator reads nothing from HOME.
  cat >"$dir/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
EOF
  cat >"$dir/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
  # glibc without nsswitch.conf asks DNS before /etc/hosts; the kubelet's /etc/hosts (the pod's
  # own name, hostAliases) must win, as on every other image.
  cat >"$dir/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
  chmod 0644 "$dir/etc/passwd" "$dir/etc/group" "$dir/etc/nsswitch.conf"
  # No /tmp: the operator writes no file and the chart mounts the root filesystem read-only.

  # Same metadata whatever the umask and clock: the Dockerfile's COPY keeps these.
  find "$dir" -type d -exec chmod 0755 {} +
  if (( EUID == 0 )); then
    chown -R -h 0:0 "$dir"
  fi
  find "$dir" -exec touch -h -d "@$epoch" {} +
}

# write_oci ROOTFS OUT REF USER ENTRYPOINT CMD: the archive (python: tarfile, gzip and hashlib do
# this deterministically; no OCI tool is installed here).
write_oci() {
  command -v python3 >/dev/null || die "python3 is required to write the OCI archive"
  python3 - "$@" "$epoch" <<'PY'
import gzip, hashlib, io, json, os, platform, re, sys, tarfile, time

rootfs, out, ref, user, entrypoint, cmd, epoch = sys.argv[1:]
epoch = int(epoch)

# Docker's normalisation, so that a kubelet asking for `vaultkey-operator:dev` finds the image
# containerd stored (containerd keeps names as given; the CRI looks up the normalised one).
if "@" in ref:
    sys.exit(f"image: error: {ref}: a digest cannot be chosen, give a tag")
first, _, rest = ref.partition("/")
if not rest or not ("." in first or ":" in first or first == "localhost"):
    ref = "docker.io/" + ("library/" + ref if not rest else ref)
if ":" not in ref.rsplit("/", 1)[1]:
    ref += ":latest"
if not re.fullmatch(r"[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", ref):
    sys.exit(f"image: error: {ref}: not an image reference")
tag = ref.rsplit(":", 1)[1]

arch = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x",
        "riscv64": "riscv64"}.get(platform.machine())
if arch is None:
    sys.exit(f"image: error: no OCI architecture name for {platform.machine()}")

# The layer: every path under rootfs in byte order, parents first, owner 0:0, fixed mtime.
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
    paths = []
    for top, dirs, files in os.walk(rootfs):
        dirs.sort()
        for name in dirs + sorted(files):
            paths.append(os.path.join(top, name))
    for path in sorted(paths, key=lambda p: os.path.relpath(p, rootfs).encode()):
        info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = epoch
        if info.isfile():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        elif info.isdir() or info.issym():
            tar.addfile(info)
        else:
            sys.exit(f"image: error: {path}: only files, directories and symlinks go in the image")
layer = layer.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
gz = io.BytesIO()
# Level 6, Docker's default: level 9 takes four times as long (15 s for a debug binary) for 1%.
with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=6) as g:
    g.write(layer)
gz = gz.getvalue()

blobs = {}
def blob(data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}

def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
config = {
    "created": created,
    "architecture": arch,
    "os": "linux",
    "config": {"User": user, "Entrypoint": json.loads(entrypoint), "Cmd": json.loads(cmd)},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created": created, "created_by": "deploy/image.sh"}],
}
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": blob(canonical(config), "application/vnd.oci.image.config.v1+json"),
    "layers": [blob(gz, "application/vnd.oci.image.layer.v1.tar+gzip")],
}
manifest_desc = blob(canonical(manifest), "application/vnd.oci.image.manifest.v1+json")
manifest_desc["platform"] = {"architecture": arch, "os": "linux"}
# containerd names the image after io.containerd.image.name; the OCI annotation carries the
# tag, as `docker save` and `ctr export` write it.
manifest_desc["annotations"] = {"io.containerd.image.name": ref,
                                "org.opencontainers.image.ref.name": tag}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [manifest_desc]}

files = [("oci-layout", canonical({"imageLayoutVersion": "1.0.0"})), ("index.json", canonical(index))]
files += [("blobs/sha256/" + d.split(":", 1)[1], data) for d, data in sorted(blobs.items())]
tmp = out + ".tmp"
with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for d in ("blobs", "blobs/sha256"):
        info = tarfile.TarInfo(d)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, epoch
        tar.addfile(info)
    for name, data in files:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, epoch
        tar.addfile(info, io.BytesIO(data))
os.replace(tmp, out)
print(json.dumps({"ref": ref, "manifest": manifest_desc["digest"], "config": manifest["config"]["digest"],
                  "layer_gzip_bytes": len(gz), "layer_tar_bytes": len(layer)}))
PY
}

cmd_oci() {
  (( $# == 3 )) || usage
  local bin=$1 out=$2 ref=$3
  # Global: the EXIT trap runs after this function's locals are gone.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cmd_rootfs "$bin" "$tmp/rootfs"
  write_oci "$tmp/rootfs" "$out" "$ref" "$image_user" "$image_entrypoint" "$image_cmd"
}

# The pause program: PID 1 of each pod sandbox. It reaps orphans (other containers' processes
# reparented to it when the pod shares a PID namespace) and exits 0 on the kubelet's SIGTERM.
pause_c='#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction sa = {0};
  sa.sa_handler = stop;
  if (sigaction(SIGTERM, &sa, 0) || sigaction(SIGINT, &sa, 0)) return 1;
  sa.sa_handler = reap;
  sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGCHLD, &sa, 0)) return 1;
  for (;;) pause();
}
'

cmd_pause() {
  (( $# == 2 )) || usage
  local out=$1 ref=$2
  command -v gcc >/dev/null || die "gcc is required for the pause image (Debian: gcc, libc6-dev)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  printf '%s' "$pause_c" >"$tmp/pause.c"
  mkdir -p "$tmp/rootfs"
  # Static and stripped: no loader or library in the image, and no path of this temporary
  # directory in the binary, so the digest depends on the compiler and libc only.
  (cd "$tmp" && gcc -O2 -static -s -o rootfs/pause pause.c) || die "gcc -static failed (is libc6-dev installed?)"
  chmod 0755 "$tmp/rootfs/pause"
  write_oci "$tmp/rootfs" "$out" "$ref" "$pause_user" '["/pause"]' '[]'
}

cmd=${1:-}
(( $# > 0 )) && shift
case $cmd in
  rootfs) cmd_rootfs "$@" ;;
  oci) cmd_oci "$@" ;;
  pause) cmd_pause "$@" ;;
  *) usage ;;
esac
