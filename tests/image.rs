//! The container image: `deploy/image.sh` and the Dockerfile are one recipe.
//! - the Dockerfile's final stage is `FROM scratch`, copies only the script's rootfs, and its
//!   USER/ENTRYPOINT/CMD are the OCI config the script writes (nothing else in the config);
//! - the archive is reproducible (same binary, same bytes);
//! - the archive's layer is exactly what `deploy/image.sh rootfs` (the Dockerfile's step)
//!   produces, holds Debian's CA bundle and the nonroot user, and the binary runs from it as
//!   65532 — proof that the shared libraries the script copies are all the binary needs;
//! - the pause image is reproducible, holds only its static program, and that program exits 0 on
//!   SIGTERM and SIGINT.
//!
//! Built from this build's operator binary (debug here, release in the Dockerfile: both link the
//! same libraries). Needs root (chroot), python3, tar, ldd and gcc with a static libc (the pause
//! program); nothing skips.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

#[path = "support/command.rs"]
mod command;

const BINARY: &str = env!("CARGO_BIN_EXE_vaultkey-operator");
const REF: &str = "vaultkey-operator:image-test";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    command::ok(cmd, None)
}

/// The OCI layout inside `archive`, unpacked into a fresh `dir/layout`.
fn unpack(archive: &Path, dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout));
    layout
}

fn script() -> Command {
    Command::new(repo().join("deploy/image.sh"))
}

/// What the script built, once per test process: two archives from the same binary, the first
/// unpacked (layout and layer), and a rootfs made the way the Dockerfile makes it.
struct Built {
    archives: [PathBuf; 2],
    config: Value,
    index: Value,
    layer: PathBuf,
    rootfs: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Under the target directory and replaced on each run: 250 MB of debug binary copies
        // are not left in /tmp.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test directory");

        let archives = [dir.join("a.tar"), dir.join("b.tar")];
        for archive in &archives {
            run(script().arg("oci").arg(BINARY).arg(archive).arg(REF));
        }

        let layout = unpack(&archives[0], &dir);
        let json = |digest: &str| -> Value {
            let path = layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            serde_json::from_slice(&std::fs::read(&path).expect("blob present")).expect("JSON blob")
        };
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap())
                .expect("index.json is JSON");
        let manifest = json(
            index["manifests"][0]["digest"]
                .as_str()
                .expect("manifest digest"),
        );
        let config = json(
            manifest["config"]["digest"]
                .as_str()
                .expect("config digest"),
        );
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1, "one layer: {manifest}");

        // Unpacked as root, tar keeps the layer's owners and modes: the tree a runtime mounts.
        let layer = dir.join("layer");
        std::fs::create_dir(&layer).unwrap();
        let blob = layout.join("blobs/sha256").join(
            layers[0]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        );
        run(Command::new("tar")
            .arg("--numeric-owner")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(&layer));

        let rootfs = dir.join("rootfs");
        run(script().arg("rootfs").arg(BINARY).arg(&rootfs));

        Built {
            archives,
            config,
            index,
            layer,
            rootfs,
        }
    })
}

/// The Dockerfile's stages: instruction lines (continuations joined, comments dropped), each
/// stage starting with its FROM.
fn dockerfile_stages() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let mut stages: Vec<Vec<String>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let instruction = std::mem::take(&mut pending);
        if instruction.to_ascii_uppercase().starts_with("FROM ") {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("an instruction before the first FROM")
            .push(instruction);
    }
    stages
}

/// The final stage's instructions by keyword; fails on anything the script's image would not
/// have (ENV, WORKDIR, a second COPY, a RUN, ...), because the script would not follow.
fn final_stage() -> BTreeMap<String, String> {
    let stages = dockerfile_stages();
    let last = stages.last().expect("a stage");
    let mut by_keyword = BTreeMap::new();
    for instruction in last {
        let (keyword, rest) = instruction.split_once(' ').expect("keyword and argument");
        let keyword = keyword.to_ascii_uppercase();
        assert!(
            ["FROM", "COPY", "USER", "ENTRYPOINT", "CMD"].contains(&keyword.as_str()),
            "the Dockerfile's final stage has `{instruction}`, which deploy/image.sh does not \
             write into its image: put it in the script (and this test) or drop it"
        );
        let previous = by_keyword.insert(keyword, rest.trim().to_string());
        assert!(
            previous.is_none(),
            "two {instruction:?}-like instructions in the final stage"
        );
    }
    by_keyword
}

#[test]
fn the_dockerfile_packages_the_scripts_rootfs_from_scratch() {
    let stages = dockerfile_stages();
    let final_stage = final_stage();
    assert_eq!(final_stage["FROM"], "scratch");
    // The build stage is named in the FROM line: `FROM image AS name`.
    let build = &stages[stages.len() - 2];
    let build_name = build[0]
        .rsplit(' ')
        .next()
        .expect("the build stage has a name");
    assert_eq!(
        final_stage["COPY"],
        format!("--from={build_name} /rootfs /"),
        "the final stage copies the script's rootfs and nothing else"
    );
    let runs_script = build.iter().any(|i| {
        i.starts_with("RUN ")
            && i.contains("deploy/image.sh rootfs target/release/vaultkey-operator /rootfs")
    });
    assert!(
        runs_script,
        "the build stage makes /rootfs with deploy/image.sh: {build:#?}"
    );
}

#[test]
fn the_oci_config_is_the_dockerfiles_user_entrypoint_and_cmd() {
    let final_stage = final_stage();
    let exec_form = |keyword: &str| -> Value {
        serde_json::from_str(&final_stage[keyword])
            .unwrap_or_else(|e| panic!("{keyword} is not exec form (JSON): {e}"))
    };
    let config = &built().config;
    let expected = serde_json::json!({
        "User": final_stage["USER"],
        "Entrypoint": exec_form("ENTRYPOINT"),
        "Cmd": exec_form("CMD"),
    });
    // The whole object: an Env or WorkingDir only the script sets is drift too.
    assert_eq!(config["config"], expected);
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn the_archive_is_reproducible_and_named() {
    let b = built();
    let [first, second] = &b.archives;
    let (first, second) = (
        std::fs::read(first).unwrap(),
        std::fs::read(second).unwrap(),
    );
    assert!(
        first == second,
        "two archives from the same binary differ ({} and {} bytes)",
        first.len(),
        second.len()
    );
    let annotations = &b.index["manifests"][0]["annotations"];
    // containerd and the kubelet look the image up by its normalised name.
    assert_eq!(
        annotations["io.containerd.image.name"],
        "docker.io/library/vaultkey-operator:image-test"
    );
    assert_eq!(
        annotations["org.opencontainers.image.ref.name"],
        "image-test"
    );
}

/// A path in an unpacked image: type and permission bits, owner, and what it holds (a file's
/// bytes, a symlink's target).
struct Entry {
    mode: u32,
    owner: (u32, u32),
    content: Option<Vec<u8>>,
}

/// Every path under `root`, relative to it.
fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                Some(std::fs::read(&path).unwrap())
            } else if meta.is_symlink() {
                Some(
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else {
                None
            };
            let entry = Entry {
                mode: meta.mode(),
                owner: (meta.uid(), meta.gid()),
                content,
            };
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), entry);
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn the_layer_is_the_dockerfiles_rootfs() {
    let b = built();
    let (layer, rootfs) = (tree(&b.layer), tree(&b.rootfs));
    let names = |t: &BTreeMap<PathBuf, Entry>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&layer), names(&rootfs));
    for (path, entry) in &layer {
        let other = &rootfs[path];
        assert_eq!(
            (entry.mode, entry.owner),
            (other.mode, other.owner),
            "{}",
            path.display()
        );
        assert!(entry.content == other.content, "{} differs", path.display());
        assert_eq!(entry.owner, (0, 0), "{} is owned by root", path.display());
    }
}

#[test]
fn the_image_holds_the_ca_bundle_and_the_nonroot_user() {
    let layer = &built().layer;
    let bundle = std::fs::read_to_string(layer.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("the CA bundle is in the image");
    // Debian's certificates, one each, and no CA the build machine added locally.
    let debian = std::fs::read_dir("/usr/share/ca-certificates/mozilla")
        .expect("Debian's ca-certificates")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "crt"))
        })
        .count();
    assert!(debian > 100, "only {debian} Debian certificates");
    assert_eq!(
        bundle.matches("-----BEGIN CERTIFICATE-----").count(),
        debian
    );

    let passwd = std::fs::read_to_string(layer.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(layer.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
}

#[test]
fn the_binary_runs_from_the_image_as_65532() {
    let layer = &built().layer;
    // As the runtime starts it: the image's root, user 65532, no library path from the host
    // (cargo sets one for tests). A library the script missed fails here with "error while
    // loading shared libraries".
    let out = run(Command::new("chroot")
        .arg("--userspec=65532:65532")
        .arg(layer)
        .arg("/vaultkey-operator")
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD"));
    assert_eq!(
        out.trim(),
        concat!("vaultkey-operator ", env!("CARGO_PKG_VERSION"))
    );
    // The binary needs no writable file: the layer holds no /tmp (the chart mounts the root
    // filesystem read-only), and no path in it is writable by 65532.
    for (path, entry) in tree(layer) {
        assert!(
            entry.owner.0 == 0 && entry.mode & 0o022 == 0,
            "{} is writable by a non-root user",
            path.display()
        );
    }
}

#[test]
fn the_pause_image_is_reproducible_and_stops_on_sigterm() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pause-image");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let archives = [dir.join("a.tar"), dir.join("b.tar")];
    for archive in &archives {
        run(script()
            .arg("pause")
            .arg(archive)
            .arg("registry.k8s.io/pause:test"));
    }
    assert!(
        std::fs::read(&archives[0]).unwrap() == std::fs::read(&archives[1]).unwrap(),
        "two pause archives differ"
    );

    let layout = unpack(&archives[0], &dir);
    let blob = |digest: &Value| {
        let digest = digest.as_str().expect("a digest");
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&index["manifests"][0]["digest"])).unwrap())
            .unwrap();
    let config: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest["config"]["digest"])).unwrap())
            .unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/pause"])
    );
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(blob(&manifest["layers"][0]["digest"]))
        .arg("-C")
        .arg(&rootfs));
    let names: Vec<_> = tree(&rootfs).into_keys().collect();
    assert_eq!(names, [PathBuf::from("pause")], "only the static program");

    // The kubelet stops a sandbox with SIGTERM and counts anything but exit 0 as a failure.
    for signal in ["TERM", "INT"] {
        let mut child = Command::new(rootfs.join("pause"))
            .env_clear()
            .spawn()
            .expect("the pause program starts (static: no loader needed)");
        // Signalled only once it catches SIGTERM and SIGINT (bits 14 and 1 of SigCgt): a
        // signal before that kills it whatever its handlers, and the test would be flaky.
        let status_file = format!("/proc/{}/status", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            assert!(
                child.try_wait().unwrap().is_none(),
                "pause exited before the signal"
            );
            let status = std::fs::read_to_string(&status_file).unwrap();
            let caught = status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .expect("SigCgt in /proc/PID/status");
            if caught & (1 << 14) != 0 && caught & (1 << 1) != 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pause never installed its handlers"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        run(Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string()));
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "after SIG{signal}: {status}");
    }
}
