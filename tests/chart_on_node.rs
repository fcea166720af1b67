//! The chart end to end on a real node, as users run it: `tests/env/node.sh` brings up a
//! single-node Kubernetes (containerd + runc, kubelet, kube-proxy) with the Key Vault emulator
//! reachable from pods; the operator image is built from this build's binary and imported; the
//! chart is installed with it; everything is then observed from the outside: the container
//! processes' credentials in /proc, the Lease holder, VaultKeys Ready, versions in the vault.
//!
//! Needs root (network namespace, mounts, cgroups): CI runs as root. Not skipped otherwise: a
//! test that cannot run fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "support/command.rs"]
mod command;
use command::{ok, output};

const IMAGE_REPO: &str = "localhost/vaultkey-operator";
const IMAGE_TAG: &str = "dev";
const RELEASE: &str = "vko";
const NS: &str = "vko";
const KEYS_NS: &str = "keys";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn node_sh() -> Command {
    Command::new(repo().join("tests/env/node.sh"))
}

/// The node of one test run: `node.sh up` in a fresh folder; Drop prints diagnostics when the
/// test failed, then `node.sh down` (by PID, host changes undone). The folder is kept on failure.
struct Node {
    dir: PathBuf,
    env: HashMap<String, String>,
    helm: PathBuf,
    kubectl: PathBuf,
}

impl Node {
    fn up() -> Node {
        let t = Instant::now();
        let install = output(node_sh().arg("install").stderr(Stdio::inherit()), None);
        assert!(install.status.success(), "node.sh install failed");
        eprintln!("node.sh install: {:.1?}", t.elapsed());
        // Inside testenv.sh's folder when there is one: its teardown then also stops a node this
        // process could not (killed before Drop ran).
        let parent = std::env::var_os("VAULTKEY_TEST_ENV_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("node-")
            .tempdir_in(parent)
            .expect("temp dir")
            .keep();
        let t = Instant::now();
        let up = output(node_sh().arg("up").arg(&dir).stderr(Stdio::inherit()), None);
        assert!(
            up.status.success(),
            "node.sh up {} failed (logs kept there)",
            dir.display()
        );
        eprintln!("node.sh up: {:.1?}", t.elapsed());
        let env = std::fs::read_to_string(dir.join("env.sh"))
            .expect("env.sh")
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let helm =
            PathBuf::from(ok(&mut Command::new(repo().join("tests/env/helm.sh")), None).trim());
        let kubectl = PathBuf::from(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()));
        Node {
            dir,
            env,
            helm,
            kubectl,
        }
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from env.sh"))
    }

    fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(self.var("VAULTKEY_NODE_KUBECONFIG"))
            .arg("--request-timeout=20s");
        cmd
    }

    fn helm(&self) -> Command {
        let home = self.dir.join("helm-home");
        let mut cmd = Command::new(&self.helm);
        cmd.env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .arg("--kubeconfig")
            .arg(self.var("VAULTKEY_NODE_KUBECONFIG"));
        cmd
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = ok(self.kubectl().args(args).args(["-o", "json"]), None);
        serde_json::from_str(&out).expect("kubectl JSON")
    }

    fn apply(&self, ns: &str, manifest: &str) {
        ok(
            self.kubectl().args(["apply", "-n", ns, "-f", "-"]),
            Some(manifest),
        );
    }

    /// The operator's pods: (name, phase, ready, container id without the runtime prefix).
    fn pods(&self) -> Vec<(String, String, bool, String)> {
        let list = self.json(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/instance=vko",
        ]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let status = &p["status"]["containerStatuses"][0];
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["phase"].as_str().unwrap_or("").to_string(),
                    status["ready"].as_bool().unwrap_or(false),
                    status["containerID"]
                        .as_str()
                        .unwrap_or("")
                        .trim_start_matches("containerd://")
                        .to_string(),
                )
            })
            .collect()
    }

    fn lease_holder(&self) -> Option<String> {
        let out = output(
            self.kubectl().args([
                "get",
                "lease",
                "-n",
                NS,
                "vko-vaultkey-operator",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ]),
            None,
        );
        let h = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !h.is_empty()).then_some(h)
    }

    fn ready(&self, name: &str) -> bool {
        let out = output(
            self.kubectl().args([
                "get",
                "vaultkey",
                "-n",
                KEYS_NS,
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}/{.status.observedGeneration}/{.metadata.generation}",
            ]),
            None,
        );
        let s = String::from_utf8_lossy(&out.stdout);
        let parts: Vec<&str> = s.trim().split('/').collect();
        parts.len() == 3 && parts[0] == "True" && parts[1] == parts[2]
    }

    /// Versions of `key` in the emulator's default vault (management API).
    fn vault_versions(&self, key: &str) -> usize {
        let url = format!(
            "{}/vaults/default/keys/{key}",
            self.var("VAULTKEY_NODE_EMULATOR_ADMIN")
        );
        let out = output(
            Command::new("curl").args(["-fsS", "--max-time", "5", &url]),
            None,
        );
        if !out.status.success() {
            return 0;
        }
        let v: Value = serde_json::from_slice(&out.stdout).expect("emulator JSON");
        v["versions"].as_array().map_or(0, Vec::len)
    }

    /// PID on the host of the container `id` (containerd's task list).
    fn container_pid(&self, id: &str) -> u32 {
        let out = ok(
            Command::new("ctr").args([
                "--address",
                self.var("VAULTKEY_NODE_CTR_ADDRESS"),
                "-n",
                "k8s.io",
                "tasks",
                "ls",
            ]),
            None,
        );
        out.lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no task {id} in:\n{out}"))
    }

    fn diagnostics(&self) {
        eprintln!(
            "===== diagnostics (node folder {}) =====",
            self.dir.display()
        );
        for args in [
            &["get", "nodes,pods,leases", "-A", "-o", "wide"][..],
            &["get", "vaultkeys", "-A", "-o", "yaml"],
            &["describe", "pods", "-n", NS],
            &[
                "logs",
                "-n",
                NS,
                "-l",
                "app.kubernetes.io/instance=vko",
                "--tail=40",
                "--prefix",
            ],
            &["get", "events", "-A"],
        ] {
            let out = output(self.kubectl().args(args), None);
            eprintln!(
                "----- kubectl {} -----\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for log in ["kubelet", "containerd", "kube-proxy", "kv-emulator"] {
            let path = self.dir.join("logs").join(format!("{log}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("----- last 30 lines of {} -----", path.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            self.diagnostics();
        }
        let t = Instant::now();
        let down = output(
            node_sh()
                .arg("down")
                .arg(&self.dir)
                .stderr(Stdio::inherit()),
            None,
        );
        eprintln!("node.sh down: {:.1?} ({})", t.elapsed(), down.status);
        if !failed && down.status.success() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        assert!(
            down.status.success() || failed,
            "node.sh down {} failed",
            self.dir.display()
        );
    }
}

/// Polls `f` every 500 ms until it returns Some, or panics after `secs` naming `what`.
fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{field} missing from /proc status:\n{status}"))
}

fn howto(vault: &str, name: &str, key: &str) -> String {
    let text = std::fs::read_to_string(repo().join("examples/howto-rsa-with-rotation.yaml"))
        .expect("how-to example");
    let out = text
        .replace("https://my-vault.vault.azure.net", vault)
        .replace("\nspec:\n", &format!("\nspec:\n  keyName: {key}\n"))
        .replace("\n  name: howto-rsa\n", &format!("\n  name: {name}\n"));
    assert!(
        out.contains(vault) && out.contains(key),
        "examples/howto-rsa-with-rotation.yaml changed shape"
    );
    out
}

#[test]
fn the_chart_runs_on_a_real_node() {
    let started = Instant::now();
    let node = Node::up();
    let vault = node.var("VAULTKEY_NODE_VAULT_URL").to_string();

    // The image from this build's binary (the debug build: a release build costs 10+ minutes
    // in CI), imported into the node's containerd (no registry).
    ok(
        node_sh()
            .args(["image"])
            .arg(&node.dir)
            .arg(env!("CARGO_BIN_EXE_vaultkey-operator"))
            .arg(format!("{IMAGE_REPO}:{IMAGE_TAG}")),
        None,
    );

    // The emulator's CA reaches the pods as a ConfigMap volume; the emulator flags as extraArgs.
    ok(node.kubectl().args(["create", "namespace", NS]), None);
    ok(node.kubectl().args(["create", "namespace", KEYS_NS]), None);
    ok(
        node.kubectl()
            .args(["create", "configmap", "emulator-ca", "-n", NS])
            .arg(format!(
                "--from-file=ca.pem={}",
                node.var("VAULTKEY_NODE_VAULT_CA")
            )),
        None,
    );
    let values = format!(
        "image: {{repository: {IMAGE_REPO}, tag: {IMAGE_TAG}, pullPolicy: Never}}
azure: {{workloadIdentity: {{clientId: 00000000-0000-0000-0000-00000000000c, tenantId: 00000000-0000-0000-0000-00000000000d}}}}
leaderElection: {{leaseDurationSeconds: 6}}
operator:
  extraArgs:
    - --emulator-ca-file=/etc/emulator-ca/ca.pem
    - --emulator-static-token=node-e2e
    - --emulator-skip-challenge-resource-check
    - --allowed-vault-hosts={}
  extraVolumes: [{{name: emulator-ca, configMap: {{name: emulator-ca}}}}]
  extraVolumeMounts: [{{name: emulator-ca, mountPath: /etc/emulator-ca, readOnly: true}}]
",
        node.var("VAULTKEY_NODE_HOST_IP")
    );
    let values_path = node.dir.join("values.yaml");
    std::fs::write(&values_path, values).unwrap();
    let t = Instant::now();
    ok(
        node.helm()
            .args(["install", RELEASE])
            .arg(repo().join("charts/vaultkey-operator"))
            .args(["-n", NS, "--wait", "--timeout", "120s", "-f"])
            .arg(&values_path),
        None,
    );
    let pods = wait("both replicas Running and Ready", 120, || {
        let pods = node.pods();
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p.1 == "Running" && p.2 && !p.3.is_empty()))
        .then_some(pods)
    });
    eprintln!("helm install to 2 Ready replicas: {:.1?}", t.elapsed());

    // The chart's securityContext, as the kernel enforces it on the container processes.
    for (pod, _, _, id) in &pods {
        let pid = node.container_pid(id);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        // Seccomp 2: a filter is in force.
        for (field, expected) in [
            ("Uid:", "65532\t65532\t65532\t65532"),
            ("Gid:", "65532\t65532\t65532\t65532"),
            ("CapEff:", "0000000000000000"),
            ("CapPrm:", "0000000000000000"),
            ("NoNewPrivs:", "1"),
            ("Seccomp:", "2"),
        ] {
            assert_eq!(status_field(&status, field), expected, "{pod}: {field}");
        }
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mountinfo
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .expect("a root mount");
        let opts = root.split_whitespace().nth(5).unwrap();
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "{pod}: root not read-only: {root}"
        );
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, Path::new("/vaultkey-operator"), "{pod}");
        // Workload identity without the webhook: the kubelet projects the chart's token for
        // Azure AD where AZURE_FEDERATED_TOKEN_FILE says (the vault itself takes the
        // emulator's static token here).
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let token_file = environ
            .split(|b| *b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("AZURE_FEDERATED_TOKEN_FILE="))
            .unwrap_or_else(|| panic!("{pod}: no AZURE_FEDERATED_TOKEN_FILE"))
            .to_owned();
        let token = std::fs::read_to_string(format!("/proc/{pid}/root{token_file}"))
            .unwrap_or_else(|e| panic!("{pod}: {token_file}: {e}"));
        let payload = token.split('.').nth(1).expect("a JWT");
        use base64::Engine as _;
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .expect("base64url"),
        )
        .expect("JSON claims");
        assert_eq!(
            claims["aud"],
            json!(["api://AzureADTokenExchange"]),
            "{pod}"
        );
        let account = node.json(&["get", "pod", pod, "-n", NS])["spec"]["serviceAccountName"]
            .as_str()
            .map(str::to_owned)
            .expect("the pod's ServiceAccount");
        assert_eq!(
            claims["sub"],
            format!("system:serviceaccount:{NS}:{account}"),
            "{pod}"
        );
    }

    // Exactly one holder, and it is one of the running replicas.
    let names: Vec<String> = pods.iter().map(|p| p.0.clone()).collect();
    let leader = wait("a replica holds the Lease", 60, || {
        node.lease_holder().filter(|h| names.contains(h))
    });
    eprintln!("leader: {leader}");
    // Exactly one: only the holder says it leads (its log, read through the kubelet).
    let logged_leading = || -> Vec<String> {
        names
            .iter()
            .filter(|pod| {
                ok(node.kubectl().args(["logs", "-n", NS, pod.as_str()]), None)
                    .contains("became leader")
            })
            .cloned()
            .collect()
    };
    wait("only the Lease holder logged \"became leader\"", 30, || {
        (logged_leading() == [leader.clone()]).then_some(())
    });

    // VaultKeys reconciled from inside the pod: the how-to, an import, a rotation by token.
    let t = Instant::now();
    node.apply(KEYS_NS, &howto(&vault, "howto-rsa", "node-howto"));
    let import = std::fs::read_to_string(repo().join("examples/import-jwk.yaml"))
        .unwrap()
        .replace("https://my-vault.vault.azure.net", &vault);
    assert!(
        import.contains(&vault),
        "examples/import-jwk.yaml changed shape"
    );
    node.apply(KEYS_NS, &import);
    wait("how-to VaultKey Ready", 90, || {
        node.ready("howto-rsa").then_some(())
    });
    wait("imported VaultKey Ready", 90, || {
        node.ready("imported-rsa").then_some(())
    });
    assert_eq!(node.vault_versions("node-howto"), 1);
    let imported_key =
        node.json(&["get", "vaultkey", "-n", KEYS_NS, "imported-rsa"])["status"]["keyName"]
            .as_str()
            .expect("status.keyName")
            .to_string();
    assert_eq!(node.vault_versions(&imported_key), 1);
    eprintln!("how-to and import Ready: {:.1?}", t.elapsed());
    ok(
        node.kubectl().args([
            "patch",
            "vaultkey",
            "-n",
            KEYS_NS,
            "howto-rsa",
            "--type=merge",
            "-p",
            r#"{"spec":{"rotateToken":"node-e2e-1"}}"#,
        ]),
        None,
    );
    wait(
        "rotation by token: a second version in the vault, Ready",
        90,
        || (node.vault_versions("node-howto") == 2 && node.ready("howto-rsa")).then_some(()),
    );

    // The leader goes away: the other replica takes the Lease and keeps reconciling.
    let t = Instant::now();
    ok(
        node.kubectl()
            .args(["delete", "pod", "-n", NS, &leader, "--wait=false"]),
        None,
    );
    let new_leader = wait("another replica takes over the Lease", 90, || {
        node.lease_holder().filter(|h| *h != leader)
    });
    eprintln!("failover {leader} -> {new_leader}: {:.1?}", t.elapsed());
    // Deleting a pod lets the leader release the Lease on SIGTERM. A leader that hangs releases
    // nothing: freeze the new leader's process from the host (SIGSTOP); the other replica takes
    // over once the Lease expires (leaseDurationSeconds 6). Thawed, the old leader finds the
    // Lease taken and exits (kubelet restarts it), so only one instance ever reconciles.
    let t = Instant::now();
    let pods = wait("two Ready replicas after the failover", 90, || {
        let pods = node.pods();
        (pods.len() == 2 && pods.iter().all(|p| p.2 && !p.3.is_empty())).then_some(pods)
    });
    let frozen = pods
        .iter()
        .find(|p| p.0 == new_leader)
        .expect("the leader is a replica");
    let pid = node.container_pid(&frozen.3).to_string();
    ok(Command::new("kill").args(["-STOP", &pid]), None);
    let taken = wait("the other replica takes over the expired Lease", 60, || {
        node.lease_holder().filter(|h| *h != new_leader)
    });
    ok(Command::new("kill").args(["-CONT", &pid]), None);
    eprintln!("{new_leader} frozen -> {taken}: {:.1?}", t.elapsed());
    wait(
        "the thawed old leader exits, seeing the Lease taken",
        60,
        || {
            let out = output(
                node.kubectl()
                    .args(["logs", "-n", NS, &new_leader, "--previous"]),
                None,
            );
            String::from_utf8_lossy(&out.stdout)
                .contains("lost the leader Lease")
                .then_some(())
        },
    );
    assert_eq!(node.lease_holder().as_deref(), Some(taken.as_str()));
    node.apply(
        KEYS_NS,
        &howto(&vault, "after-failover", "node-after-failover"),
    );
    wait("VaultKey after failover Ready", 90, || {
        (node.ready("after-failover") && node.vault_versions("node-after-failover") == 1)
            .then_some(())
    });

    // helm upgrade with a changed value rolls the pods; a VaultKey applied during the roll.
    let before: Vec<String> = node.pods().into_iter().map(|p| p.0).collect();
    ok(
        node.helm()
            .args(["upgrade", RELEASE])
            .arg(repo().join("charts/vaultkey-operator"))
            .args([
                "-n",
                NS,
                "--reuse-values",
                "--set",
                "operator.logLevel=debug",
            ]),
        None,
    );
    node.apply(
        KEYS_NS,
        &howto(&vault, "during-upgrade", "node-during-upgrade"),
    );
    ok(
        node.kubectl().args([
            "rollout",
            "status",
            "-n",
            NS,
            "deployment/vko-vaultkey-operator",
            "--timeout=120s",
        ]),
        None,
    );
    wait("VaultKey applied during the upgrade Ready", 90, || {
        (node.ready("during-upgrade") && node.vault_versions("node-during-upgrade") == 1)
            .then_some(())
    });
    let after = wait("two new Ready replicas", 60, || {
        let pods = node.pods();
        (pods.len() == 2 && pods.iter().all(|p| p.2 && !before.contains(&p.0))).then_some(pods)
    });
    let names: Vec<String> = after.iter().map(|p| p.0.clone()).collect();
    wait("a new replica holds the Lease", 60, || {
        node.lease_holder().filter(|h| names.contains(h))
    });

    // helm uninstall: the pods go; VaultKeys (CRD kept) and the keys stay, untouched (README
    // "Install, upgrade, uninstall"; these are `Retain` VaultKeys, which carry no finalizer).
    let keys = [
        "node-howto",
        imported_key.as_str(),
        "node-after-failover",
        "node-during-upgrade",
    ];
    let versions_before: Vec<usize> = keys.iter().map(|k| node.vault_versions(k)).collect();
    assert_eq!(
        versions_before,
        [2, 1, 1, 1],
        "versions in the vault of {keys:?}"
    );
    ok(
        node.helm().args(["uninstall", RELEASE, "-n", NS, "--wait"]),
        None,
    );
    wait("the operator's pods gone", 90, || {
        node.pods().is_empty().then_some(())
    });
    let left = node.json(&["get", "vaultkeys", "-n", KEYS_NS]);
    assert_eq!(left["items"].as_array().unwrap().len(), 4, "VaultKeys kept");
    ok(
        node.kubectl()
            .args(["get", "crd", "vaultkeys.vaultkey.dev"]),
        None,
    );
    let versions_after: Vec<usize> = keys.iter().map(|k| node.vault_versions(k)).collect();
    assert_eq!(
        versions_after, versions_before,
        "keys untouched by the uninstall"
    );
    eprintln!("whole test: {:.1?}", started.elapsed());
}
