//! End-to-end test support: the environment started by `tests/env/testenv.sh`, a fresh
//! namespace per test, the real operator binary per test (scoped to that namespace), and
//! read-back of the vault through the Azure SDK and the emulator's admin API.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use vaultkey_operator::api::VaultKey;
use vaultkey_operator::keyvault::azure::{
    AzureVaultProvider, ClientSettings, CredentialSource, credential,
};
use vaultkey_operator::keyvault::budget::Limits;
use vaultkey_operator::keyvault::{KeyVault, VaultProvider};
use vaultkey_operator::telemetry::Metrics;
use vaultkey_operator::vault_hosts::VaultHosts;

/// The environment `tests/env/testenv.sh` exports. Missing variables fail the test: the
/// end-to-end suite never skips silently.
pub struct Env {
    pub kubeconfig: PathBuf,
    pub vault_url: String,
    pub purgeable_vault_url: String,
    /// A vault only the key-list tests use, so its list holds only their keys.
    pub listed_vault_url: String,
    pub vault_ca: PathBuf,
    pub emulator_admin: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through `tests/env/testenv.sh run -- cargo test` (see README)")
    })
}

impl Env {
    pub fn get() -> Env {
        Env {
            kubeconfig: var("VAULTKEY_TEST_KUBECONFIG").into(),
            vault_url: var("VAULTKEY_TEST_VAULT_URL")
                .trim_end_matches('/')
                .to_owned(),
            purgeable_vault_url: var("VAULTKEY_TEST_PURGEABLE_VAULT_URL")
                .trim_end_matches('/')
                .to_owned(),
            listed_vault_url: var("VAULTKEY_TEST_LISTED_VAULT_URL")
                .trim_end_matches('/')
                .to_owned(),
            vault_ca: var("VAULTKEY_TEST_VAULT_CA").into(),
            emulator_admin: var("VAULTKEY_TEST_EMULATOR_ADMIN")
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    pub async fn kube(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig readable");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig valid");
        Client::try_from(config).expect("kube client")
    }

    /// A Key Vault client for read-back and for changing the vault behind the operator's back.
    pub fn vault(&self, url: &str) -> Arc<dyn KeyVault> {
        let credential =
            credential(&CredentialSource::EmulatorStaticToken("e2e-test".into())).unwrap();
        let settings = ClientSettings {
            request_timeout: Duration::from_secs(30),
            extra_root_pem: Some(std::fs::read(&self.vault_ca).expect("emulator CA readable")),
            verify_challenge_resource: false,
            vault_hosts: VaultHosts::parse::<&str>(&[], true).expect("loopback hosts"),
            limits: Limits::default(),
        };
        AzureVaultProvider::new(credential, settings, Arc::new(Metrics::new()))
            .expect("vault provider")
            .vault(url)
            .expect("vault client")
    }

    /// The emulator's view of a key (versions, policy, deleted state), independent of the SDK.
    pub async fn emulator_key(&self, vault: &str, key: &str) -> Option<serde_json::Value> {
        let url = format!("{}/vaults/{vault}/keys/{key}", self.emulator_admin);
        let response = reqwest::get(&url).await.expect("emulator admin reachable");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        Some(
            serde_json::from_str(&response.text().await.expect("emulator admin body"))
                .expect("emulator admin JSON"),
        )
    }

    /// Moves the emulator's clock `seconds` forward (due automatic rotations happen) and
    /// returns its whole offset from the system clock, for an operator started with
    /// `--emulator-clock-offset-seconds` to follow it.
    pub async fn shift_clock(&self, seconds: u64) -> i64 {
        self.emulator_post(&format!("/time-shift?seconds={seconds}"))
            .await;
        let time = reqwest::get(format!("{}/time", self.emulator_admin))
            .await
            .expect("emulator admin reachable")
            .text()
            .await
            .expect("emulator time");
        let time: serde_json::Value = serde_json::from_str(&time).expect("emulator time JSON");
        time["offsetSeconds"].as_i64().expect("offsetSeconds")
    }

    pub async fn emulator_post(&self, path: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.emulator_admin))
            .header("content-type", "application/json")
            .send()
            .await
            .expect("emulator admin reachable");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        serde_json::from_str(&response.text().await.unwrap_or_default())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// A fresh namespace, so that tests sharing one API server never see each other's objects.
/// (The test environment's kube-controller-manager removes deleted namespaces, but a test that
/// deletes one must wait for it: see tests/namespace_deletion.rs.)
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    name
}

pub fn vaultkey_from_yaml(yaml: &str) -> VaultKey {
    serde_norway::from_str(yaml).expect("test manifest parses")
}

pub async fn create(client: &Client, ns: &str, yaml: &str) -> Result<VaultKey, kube::Error> {
    let api: Api<VaultKey> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &vaultkey_from_yaml(yaml))
        .await
}

/// Polls `check` until it returns `Some`, or fails with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn get_vk(client: &Client, ns: &str, name: &str) -> VaultKey {
    Api::<VaultKey>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("VaultKey readable")
}

/// Waits until Ready has `status` for the current generation; returns the object.
pub async fn wait_ready(client: &Client, ns: &str, name: &str, status: &str) -> VaultKey {
    eventually(
        &format!("{ns}/{name} Ready={status}"),
        Duration::from_secs(60),
        || async {
            let vk = get_vk(client, ns, name).await;
            let generation = vk.metadata.generation;
            let ready = vk.ready_condition()?;
            (ready.status == status && ready.observed_generation == generation)
                .then_some(vk.clone())
        },
    )
    .await
}

pub fn ready_reason(vk: &VaultKey) -> (String, String) {
    let c = vk.ready_condition().expect("Ready condition");
    (c.reason.clone(), c.message.clone())
}

/// The operator binary, started for one namespace. Killed on drop.
pub struct Operator {
    child: Child,
    pub metrics_url: String,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    pub fn start(env: &Env, namespace: &str, resync_seconds: u64) -> Operator {
        Self::start_with(env, namespace, resync_seconds, &[])
    }

    pub fn start_with(env: &Env, namespace: &str, resync_seconds: u64, extra: &[&str]) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log_path = dir.path().join("operator.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_vaultkey-operator"))
            .args(["run", "--namespace", namespace, "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--resync-seconds",
                &resync_seconds.to_string(),
                "--log-level",
                "trace",
            ])
            .arg("--emulator-ca-file")
            .arg(&env.vault_ca)
            .args([
                "--emulator-static-token",
                "e2e-test",
                "--emulator-skip-challenge-resource-check",
            ])
            .args(extra)
            .env("KUBECONFIG", &env.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("operator binary starts");
        Operator {
            child,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log_path,
            _dir: dir,
        }
    }

    /// SIGTERM, as Kubernetes stops a pod; waits up to 10 s for the process to exit.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM sent");
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting to be reaped: it has exited.
            if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the operator did not stop within 10 s of SIGTERM");
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut out);
        }
        out
    }

    /// The operator's metrics as (series, value) pairs.
    pub async fn metrics(&self) -> Vec<(String, f64)> {
        scrape_metrics(&self.metrics_url).await
    }

    /// Sum of all series of `metric` whose labels contain every fragment in `labels`.
    pub async fn sum(&self, metric: &str, labels: &[&str]) -> f64 {
        sum_series(&self.metrics().await, metric, labels)
    }
}

/// Reads a Prometheus text endpoint as (series, value) pairs, waiting for it to answer.
pub async fn scrape_metrics(url: &str) -> Vec<(String, f64)> {
    let text = eventually(
        "operator metrics endpoint",
        Duration::from_secs(30),
        || async { reqwest::get(url).await.ok()?.text().await.ok() },
    )
    .await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of the series of `metric` whose labels contain every fragment of `labels`.
pub fn sum_series(metrics: &[(String, f64)], metric: &str, labels: &[&str]) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| {
            (series == metric || series.starts_with(&format!("{metric}{{")))
                && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- operator log ({}) ----\n{}",
                self.log_path.display(),
                tail(&self.logs(), 80)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Events recorded for a VaultKey (events.k8s.io), as (reason, note).
pub async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .expect("events listable")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Events of a VaultKey once one with `reason` is among them. The operator posts an event
/// after the change it reports, so a test that has just seen the change in the vault or in
/// status may be a moment ahead of the event; asserting on `events` alone then races.
pub async fn events_once(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Vec<(String, String)> {
    eventually(
        &format!("a {reason} event for {ns}/{name}"),
        Duration::from_secs(30),
        || async {
            let events = events(client, ns, name).await;
            events.iter().any(|(r, _)| r == reason).then_some(events)
        },
    )
    .await
}

/// `kubectl apply` of a manifest, as a user would; Err carries kubectl's stderr.
pub async fn kubectl_apply(env: &Env, ns: &str, manifest: &str) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["apply", "-n", ns, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(manifest.as_bytes())
        .await
        .expect("manifest written");
    drop(stdin);
    let output = child.wait_with_output().await.expect("kubectl finishes");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
