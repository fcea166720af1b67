#!/usr/bin/env bash
# STAND-IN for deploy/image.sh (being written on the `image` branch) with the agreed interface,
# so the node's end-to-end test can run before it lands. tests/env/node.sh prefers
# deploy/image.sh whenever it exists; delete this file once main has it.
#
# Usage:
#   tests/env/node-image.sh oci BINARY OUT.tar REF   one-layer OCI image archive named REF:
#                                                    BINARY as /vaultkey-operator, the loader and
#                                                    libraries `ldd` lists, the CA bundle,
#                                                    passwd/group with 65532; user 65532:65532,
#                                                    entrypoint /vaultkey-operator, cmd run
#   tests/env/node-image.sh pause OUT.tar REF        a pause image: a static C program that
#                                                    sleeps in pause() until SIGTERM/SIGINT
# The archives are deterministic (sorted entries, owner 0:0, mtime 0, uncompressed layer).
set -euo pipefail

die() { printf 'node-image: error: %s\n' "$*" >&2; exit 1; }

# oci_archive ROOTFS OUT REF USER ENTRYPOINT_JSON CMD_JSON: the OCI layout of a one-layer image
# from ROOTFS, as a tar, for `ctr images import` (which names the image from the
# io.containerd.image.name annotation).
oci_archive() {
  python3 - "$@" <<'PY'
import hashlib, io, json, os, sys, tarfile
rootfs, out, ref, user, entrypoint, cmd = sys.argv[1:7]

def add_tree(tar, root):
    entries = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            entries.append(os.path.join(d, n))
    for p in sorted(entries):
        info = tar.gettarinfo(p, os.path.relpath(p, root))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        if info.isfile():
            with open(p, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)

layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    add_tree(t, rootfs)
layer = layer.getvalue()
def digest(b): return "sha256:" + hashlib.sha256(b).hexdigest()
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"User": user, "Entrypoint": json.loads(entrypoint), "Cmd": json.loads(cmd),
               "Env": ["PATH=/"]},
    "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
    "history": [{"created_by": "tests/env/node-image.sh"}],
}, sort_keys=True).encode()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer), "size": len(layer)}],
}, sort_keys=True).encode()
index = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest),
                   "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
                   "annotations": {"io.containerd.image.name": ref,
                                   "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}}],
}, sort_keys=True).encode()
with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as t:
    def put(name, data):
        info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
    put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    put("index.json", index)
    for b in (config, manifest, layer):
        put("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b)
PY
}

cmd=${1:-}
case $cmd in
  oci)
    bin=${2:?usage: node-image.sh oci BINARY OUT.tar REF} out=${3:?} ref=${4:?}
    [[ -x $bin ]] || die "$bin is not an executable"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/etc/ssl/certs" "$root/tmp"
    chmod 1777 "$root/tmp"
    install -m 0755 "$bin" "$root/vaultkey-operator"
    # The loader and every library the dynamic binary needs, at the paths ldd resolves them to.
    while read -r lib; do
      [[ -n $lib ]] || continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
    cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
    oci_archive "$root" "$out" "$ref" 65532:65532 '["/vaultkey-operator"]' '["run"]'
    ;;
  pause)
    out=${2:?usage: node-image.sh pause OUT.tar REF} ref=${3:?}
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    printf '%s\n' '#include <signal.h>' '#include <unistd.h>' '#include <stdlib.h>' \
      'static void bye(int s) { (void)s; _exit(0); }' \
      'int main(void) { signal(SIGTERM, bye); signal(SIGINT, bye); for (;;) pause(); }' >"$root/pause.c"
    mkdir -p "$root/fs"
    gcc -static -O2 -o "$root/fs/pause" "$root/pause.c" || die "gcc -static failed (libc6-dev has the static libc)"
    oci_archive "$root/fs" "$out" "$ref" 65535:65535 '["/pause"]' '[]'
    ;;
  *) sed -n '5,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
