//! Support for `tests/reliability.rs`: a process-wide lock that keeps environment-wide
//! disturbances (emulator faults, a kube-apiserver restart) away from the other reliability
//! tests, each test's scenario (its hold on that lock, a fresh namespace, its operators), a
//! fault-injection guard that always switches faults off, an operator process that can be
//! SIGKILLed and restarted with its logs kept, a TCP forwarder that can make a vault
//! unreachable, emulator statistics, and the figures written for RELIABILITY.md.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use vaultkey_operator::api::VaultKey;

use crate::support::{
    Env, create, events, events_once, eventually, free_port, fresh_namespace, get_vk,
    scrape_metrics, sum_series, wait_ready,
};

// ---------------------------------------------------------------------------------------------
// Sizes and figures
// ---------------------------------------------------------------------------------------------

/// A size from the environment (`VAULTKEY_RELIABILITY_*`), else the CI default.
pub fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub fn seed() -> u64 {
    let seed = std::env::var("VAULTKEY_RELIABILITY_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(rand::random);
    // Shown with a failure's output, so the run can be repeated.
    eprintln!("fault seed {seed} (VAULTKEY_RELIABILITY_SEED={seed} repeats it)");
    seed
}

/// Records a figure: printed (visible with `--nocapture`) and, when
/// `VAULTKEY_RELIABILITY_REPORT` names a file, appended to it as one JSON line.
pub fn figure(test: &str, values: Value) {
    let line = json!({ "test": test, "figures": values });
    eprintln!("RELIABILITY {line}");
    if let Ok(path) = std::env::var("VAULTKEY_RELIABILITY_REPORT")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Serialisation against environment-wide disturbances
// ---------------------------------------------------------------------------------------------

/// Emulator faults and kube-apiserver restarts hit every client of the environment. Tests that
/// cause them hold this lock exclusively; every other reliability test holds it shared. (Other
/// test binaries run before or after this one, never alongside: cargo runs them in sequence.)
static ENVIRONMENT: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// A test's hold on `ENVIRONMENT`, released when dropped.
enum EnvironmentLock {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

// ---------------------------------------------------------------------------------------------
// A test's scenario
// ---------------------------------------------------------------------------------------------

/// What every reliability test starts from: its hold on the environment, a fresh namespace
/// and the logs of the operators it starts there. Bind it first in the test: dropped last, it
/// holds the environment until the test's operators and fault guards are gone.
pub struct Scenario {
    pub env: Env,
    pub client: Client,
    pub ns: String,
    /// The namespace's VaultKeys.
    pub api: Api<VaultKey>,
    logs: OperatorLogs,
    _environment: EnvironmentLock,
}

impl Scenario {
    /// For a test that leaves the environment as it is: such tests run alongside each other.
    pub async fn shared(prefix: &str) -> Scenario {
        Scenario::new(prefix, EnvironmentLock::Shared(ENVIRONMENT.read().await)).await
    }

    /// For a test that disturbs the whole environment (emulator faults, an API server restart).
    pub async fn exclusive(prefix: &str) -> Scenario {
        Scenario::new(
            prefix,
            EnvironmentLock::Exclusive(ENVIRONMENT.write().await),
        )
        .await
    }

    async fn new(prefix: &str, environment: EnvironmentLock) -> Scenario {
        let env = Env::get();
        let client = env.kube().await;
        let ns = fresh_namespace(&client, prefix).await;
        Scenario {
            api: Api::namespaced(client.clone(), &ns),
            env,
            client,
            ns,
            logs: OperatorLogs::new(),
            _environment: environment,
        }
    }

    /// Starts an operator for the namespace with `flags`; its log is kept with the others.
    pub fn start_operator(&self, flags: &[&str]) -> OperatorProcess {
        OperatorProcess::start(&self.env, &self.ns, &self.logs, flags)
    }

    /// The name of the key VaultKey `name` manages: the namespace in it keeps it apart from
    /// every other test's keys.
    pub fn key_name(&self, name: &str) -> String {
        format!("{name}-{}", self.ns)
    }

    /// Creates VaultKey `name` for the key `key_name(name)` in `vault_url`, with `body` for the
    /// rest of its spec.
    pub async fn create_vaultkey(&self, name: &str, vault_url: &str, body: &str) {
        let manifest = manifest(name, vault_url, &self.key_name(name), body);
        create(&self.client, &self.ns, &manifest)
            .await
            .expect("VaultKey created");
    }

    pub async fn vaultkey(&self, name: &str) -> VaultKey {
        get_vk(&self.client, &self.ns, name).await
    }

    pub async fn vaultkeys(&self) -> Vec<VaultKey> {
        list_vaultkeys(&self.client, &self.ns).await
    }

    /// How many of the namespace's VaultKeys have not converged.
    pub async fn count_unconverged(&self) -> usize {
        self.vaultkeys()
            .await
            .iter()
            .filter(|vk| !converged(vk))
            .count()
    }

    /// `wait_converged` in this namespace. A straggler is shown with what the operators
    /// logged about it, since the last status alone does not say why no pass ended it.
    pub async fn wait_converged(
        &self,
        names: &[String],
        gone: &[String],
        timeout: Duration,
    ) -> Duration {
        match wait_converged(&self.client, &self.ns, names, gone, timeout).await {
            Ok(took) => took,
            Err(stragglers) => {
                let logs = self.logs.all();
                let mut report = format!(
                    "after {timeout:?}, {} VaultKeys have not converged:\n  {}",
                    stragglers.len(),
                    stragglers
                        .iter()
                        .take(40)
                        .map(|(_, described)| described.as_str())
                        .collect::<Vec<_>>()
                        .join("\n  ")
                );
                for (name, _) in stragglers.iter().take(3) {
                    let mention = format!("vaultkey={}/{name} ", self.ns);
                    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&mention)).collect();
                    report.push_str(&format!(
                        "\n---- what the operators logged about {name} (last 40 of {}) ----\n{}",
                        lines.len(),
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    ));
                }
                panic!("{report}");
            }
        }
    }

    /// `wait_ready` in this namespace.
    pub async fn wait_ready(&self, name: &str, status: &str) -> VaultKey {
        wait_ready(&self.client, &self.ns, name, status).await
    }

    /// Waits until VaultKey `name` is gone from the API server (its deletion done).
    pub async fn wait_gone(&self, name: &str) {
        eventually(&format!("{name} gone"), Duration::from_secs(30), || async {
            self.api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }

    /// Events recorded for VaultKey `name`, as (reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        events(&self.client, &self.ns, name).await
    }

    /// `events_once` in this namespace: the events once one with `reason` has arrived.
    pub async fn events_once(&self, name: &str, reason: &str) -> Vec<(String, String)> {
        events_once(&self.client, &self.ns, name, reason).await
    }

    /// Merge-patches the spec of VaultKey `name`, retrying while the API server is away.
    pub async fn patch_spec(&self, name: &str, spec: Value) {
        let ns = &self.ns;
        for attempt in 0.. {
            match self
                .api
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": spec })),
                )
                .await
            {
                Ok(_) => return,
                Err(e) if attempt < 20 => {
                    eprintln!("patching {ns}/{name}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("patching {ns}/{name}: {e}"),
            }
        }
    }

    /// Writes `data` as the entry `key` of Secret `name`.
    pub async fn put_secret(&self, name: &str, data: &[u8]) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        secrets
            .patch(
                name,
                &PatchParams::apply("reliability-test").force(),
                &Patch::Apply(json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name},
                    "data": {"key": base64::engine::general_purpose::STANDARD.encode(data)},
                })),
            )
            .await
            .expect("Secret written");
    }
}

// ---------------------------------------------------------------------------------------------
// Emulator admin API
// ---------------------------------------------------------------------------------------------

/// One blocking plain-HTTP request to the emulator's admin API (usable from `Drop`).
fn admin_blocking(
    admin_url: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<String> {
    let host = admin_url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

pub async fn admin_get(env: &Env, path: &str) -> Value {
    let text = reqwest::get(format!("{}{path}", env.emulator_admin))
        .await
        .expect("emulator admin reachable")
        .text()
        .await
        .expect("emulator admin body");
    serde_json::from_str(&text).expect("emulator admin JSON")
}

/// Emulator operations (its `/stats` names) that change the vault.
pub const VAULT_WRITES: [&str; 8] = [
    "create_key",
    "import_key",
    "update_key",
    "set_rotation_policy",
    "rotate_key",
    "delete_key",
    "recover_deleted_key",
    "purge_deleted_key",
];

/// Emulator request and fault counters, aggregated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// (operation, status) -> count, over both vaults.
    pub requests: BTreeMap<(String, u64), u64>,
    /// vault -> count.
    pub per_vault: BTreeMap<String, u64>,
    /// (vault, operation) -> count.
    pub per_vault_operation: BTreeMap<(String, String), u64>,
    pub faults: BTreeMap<String, u64>,
}

impl Stats {
    pub async fn read(env: &Env) -> Stats {
        let raw = admin_get(env, "/stats").await;
        let mut stats = Stats::default();
        for r in raw["requests"].as_array().expect("stats.requests") {
            let count = r["count"].as_u64().unwrap_or(0);
            let op = r["operation"].as_str().unwrap_or("?").to_owned();
            let status = r["status"].as_u64().unwrap_or(0);
            *stats.requests.entry((op.clone(), status)).or_default() += count;
            let vault = r["vault"].as_str().unwrap_or("?").to_owned();
            *stats
                .per_vault_operation
                .entry((vault.clone(), op.clone()))
                .or_default() += count;
            *stats.per_vault.entry(vault).or_default() += count;
        }
        if let Some(faults) = raw["faults"].as_object() {
            for (kind, n) in faults {
                stats.faults.insert(kind.clone(), n.as_u64().unwrap_or(0));
            }
        }
        stats
    }

    /// What happened since `before`.
    pub fn since(&self, before: &Stats) -> Stats {
        fn diff<K: Ord + Clone>(a: &BTreeMap<K, u64>, b: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
            a.iter()
                .filter_map(|(k, v)| {
                    let d = v.saturating_sub(*b.get(k).unwrap_or(&0));
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect()
        }
        Stats {
            requests: diff(&self.requests, &before.requests),
            per_vault: diff(&self.per_vault, &before.per_vault),
            per_vault_operation: diff(&self.per_vault_operation, &before.per_vault_operation),
            faults: diff(&self.faults, &before.faults),
        }
    }

    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn operations(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((op, _), n) in &self.requests {
            *out.entry(op.clone()).or_default() += n;
        }
        out
    }

    /// Requests of `op` to one vault (by its emulator name).
    pub fn count_in(&self, vault: &str, op: &str) -> u64 {
        self.per_vault_operation
            .get(&(vault.to_owned(), op.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn count(&self, op: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((o, _), _)| o == op)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Emulator fault injection, switched off again when dropped (also when the test panics).
pub struct FaultInjection {
    admin: String,
}

impl FaultInjection {
    pub async fn on(env: &Env, config: Value) -> FaultInjection {
        let guard = FaultInjection {
            admin: env.emulator_admin.clone(),
        };
        let response = reqwest::Client::new()
            .put(format!("{}/faults", env.emulator_admin))
            .header("content-type", "application/json")
            .body(config.to_string())
            .send()
            .await
            .expect("emulator admin reachable");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "PUT /faults {config}: {status} {body}");
        guard
    }

    pub fn off(&self) {
        let _ = admin_blocking(&self.admin, "DELETE", "/faults", "");
    }
}

impl Drop for FaultInjection {
    fn drop(&mut self) {
        self.off();
    }
}

/// A dialect of Key Vault spoken by one emulator vault (see tests/kv-emulator/README.md),
/// switched back to the default when dropped (also when the test panics).
pub struct Dialect {
    admin: String,
    vault: &'static str,
}

impl Dialect {
    pub async fn on(env: &Env, vault: &'static str, dialect: Value) -> Dialect {
        let guard = Dialect {
            admin: env.emulator_admin.clone(),
            vault,
        };
        let response = reqwest::Client::new()
            .put(format!("{}/dialect?vault={vault}", env.emulator_admin))
            .header("content-type", "application/json")
            .body(dialect.to_string())
            .send()
            .await
            .expect("emulator admin reachable");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "PUT /dialect {dialect}: {status} {body}"
        );
        guard
    }

    pub fn off(&self) {
        let path = format!("/dialect?vault={}", self.vault);
        let _ = admin_blocking(&self.admin, "DELETE", &path, "");
    }
}

impl Drop for Dialect {
    fn drop(&mut self) {
        self.off();
    }
}

/// The emulator's name for a vault URL of the environment.
pub fn vault_name(env: &Env, url: &str) -> &'static str {
    if url == env.purgeable_vault_url {
        "purgeable"
    } else if url == env.listed_vault_url {
        "listed"
    } else {
        "default"
    }
}

/// Switches faults off without a guard (a test that starts while a crashed earlier run left
/// them on).
pub fn faults_off(env: &Env) {
    let _ = admin_blocking(&env.emulator_admin, "DELETE", "/faults", "");
}

/// The emulator's view of a key: (versions, every version enabled, soft-deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    pub versions: usize,
    pub all_enabled: bool,
    pub deleted: bool,
    pub latest: String,
    /// Tags of the latest version.
    pub latest_tags: BTreeMap<String, String>,
}

pub async fn key_facts(env: &Env, vault: &str, key: &str) -> Option<KeyFacts> {
    let dump = env.emulator_key(vault, key).await?;
    let versions = dump["versions"].as_array().cloned().unwrap_or_default();
    Some(KeyFacts {
        versions: dump["versionCount"].as_u64().unwrap_or(0) as usize,
        all_enabled: versions
            .iter()
            .all(|v| v["attributes"]["enabled"].as_bool() == Some(true)),
        deleted: !dump["deleted"].is_null(),
        latest: dump["latestVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        latest_tags: versions
            .iter()
            .find(|v| v["version"] == dump["latestVersion"])
            .and_then(|v| v["tags"].as_object())
            .map(|tags| {
                tags.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------
// The operator as a process that can be killed and restarted
// ---------------------------------------------------------------------------------------------

/// Log files of every incarnation of an operator, kept for the whole test, and kept on disk
/// when the test fails or `VAULTKEY_RELIABILITY_KEEP_LOGS` is set (the path is printed).
pub struct OperatorLogs {
    dir: Option<tempfile::TempDir>,
    // Atomic so that a shared `Scenario` can start operators.
    started: AtomicU32,
}

impl Drop for OperatorLogs {
    fn drop(&mut self) {
        let keep = std::thread::panicking()
            || std::env::var_os("VAULTKEY_RELIABILITY_KEEP_LOGS").is_some();
        if keep && let Some(dir) = self.dir.take() {
            eprintln!("operator logs kept in {}", dir.keep().display());
        }
    }
}

impl OperatorLogs {
    pub fn new() -> OperatorLogs {
        OperatorLogs {
            dir: Some(tempfile::tempdir().expect("temp dir")),
            started: AtomicU32::new(0),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.as_ref().expect("log dir").path().to_owned()
    }

    /// Everything every incarnation logged.
    pub fn all(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.started.load(Ordering::SeqCst) {
            if let Ok(text) = std::fs::read_to_string(self.dir().join(format!("operator-{n}.log")))
            {
                out.push_str(&text);
            }
        }
        out
    }
}

/// One operator process watching one namespace.
pub struct OperatorProcess {
    child: Child,
    pub incarnation: u32,
    pub metrics_url: String,
    pub log_path: PathBuf,
}

impl OperatorProcess {
    /// Starts the operator binary for `namespace` with `extra` flags (resync, timeouts, log
    /// level...). The log goes to a new file in `logs`.
    pub fn start(
        env: &Env,
        namespace: &str,
        logs: &OperatorLogs,
        extra: &[&str],
    ) -> OperatorProcess {
        let incarnation = logs.started.fetch_add(1, Ordering::SeqCst) + 1;
        let port = free_port();
        let log_path = logs.dir().join(format!("operator-{incarnation}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut args: Vec<String> = vec![
            "run".into(),
            "--namespace".into(),
            namespace.into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{port}"),
            "--emulator-ca-file".into(),
            env.vault_ca.display().to_string(),
            "--emulator-static-token".into(),
            "reliability-test".into(),
            "--emulator-skip-challenge-resource-check".into(),
        ];
        if !extra.contains(&"--log-level") {
            args.extend(["--log-level".into(), "info".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_vaultkey-operator"))
            .args(&args)
            .env("KUBECONFIG", &env.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("operator binary starts");
        OperatorProcess {
            child,
            incarnation,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log_path,
        }
    }

    /// SIGKILL: no graceful shutdown, no chance to finish anything.
    pub fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIG{name} sent");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub async fn metrics(&self) -> Vec<(String, f64)> {
        scrape_metrics(&self.metrics_url).await
    }

    /// Sum of the series of `metric` whose labels contain every fragment of `labels`.
    pub async fn sum(&self, metric: &str, labels: &[&str]) -> f64 {
        sum_series(&self.metrics().await, metric, labels)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.logs();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- operator log, incarnation {} ({}) ----\n{}",
                self.incarnation,
                self.log_path.display(),
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// kube-apiserver restart
// ---------------------------------------------------------------------------------------------

/// Restarts the environment's kube-apiserver (same flags and port) through
/// `tests/env/testenv.sh restart-apiserver`, keeping it down for `down` first.
pub async fn restart_apiserver(down: Duration) -> Duration {
    let dir = std::env::var("VAULTKEY_TEST_ENV_DIR")
        .expect("VAULTKEY_TEST_ENV_DIR is not set: run through tests/env/testenv.sh run");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/env/testenv.sh");
    let start = std::time::Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .args(["restart-apiserver", &dir])
        .env(
            "VAULTKEY_TESTENV_RESTART_DOWN_SECONDS",
            down.as_secs().to_string(),
        )
        .output()
        .await
        .expect("testenv.sh runs");
    assert!(
        output.status.success(),
        "restart-apiserver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&output.stderr).trim_end());
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// A TCP forwarder in front of a vault, to make it unreachable at will
// ---------------------------------------------------------------------------------------------

/// Forwards `https://127.0.0.1:<port>` to a vault of the emulator (TLS passes through; the
/// emulator's certificate is valid for 127.0.0.1). `cut()` closes every open connection and
/// drops new ones at once, counting them: the vault is then unreachable, and the count shows
/// whether anything still tried to reach it.
pub struct VaultForwarder {
    pub url: String,
    up: Arc<AtomicBool>,
    pub forwarded: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl VaultForwarder {
    pub async fn start(vault_url: &str) -> VaultForwarder {
        let target = vault_url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let forwarded = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = {
            let (up, forwarded, refused) = (up.clone(), forwarded.clone(), refused.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        drop(inbound);
                        continue;
                    }
                    forwarded.fetch_add(1, Ordering::SeqCst);
                    let target = target.clone();
                    let mut cut_rx = cut_rx.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut_rx.wait_for(|cut| *cut) => {}
                        }
                    });
                }
            })
        };
        VaultForwarder {
            url: format!("https://127.0.0.1:{port}"),
            up,
            forwarded,
            refused,
            cut,
            task,
        }
    }

    /// The vault becomes unreachable: open connections are closed, new ones dropped.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.cut.send(true);
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for VaultForwarder {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.cut.send(true);
    }
}

// ---------------------------------------------------------------------------------------------
// VaultKey state
// ---------------------------------------------------------------------------------------------

pub fn manifest(name: &str, vault_url: &str, key: &str, body: &str) -> String {
    format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: {name}}}\nspec:\n  vaultUrl: {vault_url}\n  keyName: {key}\n{body}"
    )
}

/// Ready=True for the current generation, every asked rotation recorded, nothing pending.
pub fn converged(vk: &VaultKey) -> bool {
    let Some(status) = vk.status.as_ref() else {
        return false;
    };
    let Some(ready) = vk.ready_condition() else {
        return false;
    };
    ready.status == "True"
        && ready.observed_generation == vk.metadata.generation
        && status.observed_generation == vk.metadata.generation
        && status.current_version.is_some()
        && status.pending_rotation.is_none()
        && (vk.spec.rotate_token.is_none() || status.observed_rotate_token == vk.spec.rotate_token)
}

pub fn describe(vk: &VaultKey) -> String {
    let name = vk.metadata.name.clone().unwrap_or_default();
    match vk.ready_condition() {
        Some(c) => format!(
            "{name}: Ready={} {} (gen {:?}/{:?}) {}",
            c.status, c.reason, c.observed_generation, vk.metadata.generation, c.message
        ),
        None => format!("{name}: no Ready condition"),
    }
}

pub async fn list_vaultkeys(client: &Client, ns: &str) -> Vec<VaultKey> {
    // The API server may be restarting: retry a few times.
    for _ in 0..60 {
        match Api::<VaultKey>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
        {
            Ok(list) => return list.items,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    panic!("cannot list VaultKeys in {ns}");
}

/// Waits until every VaultKey in `names` is converged and every one in `gone` no longer
/// exists; returns how long it took, or after `timeout` the stragglers (name, description).
async fn wait_converged(
    client: &Client,
    ns: &str,
    names: &[String],
    gone: &[String],
    timeout: Duration,
) -> Result<Duration, Vec<(String, String)>> {
    let start = std::time::Instant::now();
    loop {
        let items = list_vaultkeys(client, ns).await;
        let by_name: BTreeMap<String, &VaultKey> = items
            .iter()
            .map(|vk| (vk.metadata.name.clone().unwrap_or_default(), vk))
            .collect();
        let waiting: Vec<(String, String)> = names
            .iter()
            .filter(|n| !by_name.get(*n).is_some_and(|vk| converged(vk)))
            .map(|n| match by_name.get(n) {
                Some(vk) => (n.clone(), describe(vk)),
                None => (n.clone(), format!("{n}: missing")),
            })
            .chain(gone.iter().filter(|n| by_name.contains_key(*n)).map(|n| {
                (
                    n.clone(),
                    format!(
                        "{n}: still exists (finalizers {:?})",
                        by_name[n].metadata.finalizers
                    ),
                )
            }))
            .collect();
        if waiting.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(waiting);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
