//! Support for `tests/reliability.rs`: a process-wide lock that keeps environment-wide
//! disturbances (emulator faults, a kube-apiserver restart) away from the other reliability
//! tests, a fault-injection guard that always switches faults off, an operator process that
//! can be SIGKILLed and restarted with its logs kept, a TCP forwarder that can make a vault
//! unreachable, emulator statistics, and the figures written for RELIABILITY.md.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use vaultkey_operator::api::VaultKey;

use crate::support::{Env, free_port, scrape_metrics, sum_series};

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
    std::env::var("VAULTKEY_RELIABILITY_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(rand::random)
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

pub async fn shared_environment() -> RwLockReadGuard<'static, ()> {
    ENVIRONMENT.read().await
}

pub async fn exclusive_environment() -> RwLockWriteGuard<'static, ()> {
    ENVIRONMENT.write().await
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

/// Emulator request and fault counters, aggregated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// (operation, status) -> count, over both vaults.
    pub requests: BTreeMap<(String, u64), u64>,
    /// vault -> count.
    pub per_vault: BTreeMap<String, u64>,
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
            *stats.requests.entry((op, status)).or_default() += count;
            *stats
                .per_vault
                .entry(r["vault"].as_str().unwrap_or("?").to_owned())
                .or_default() += count;
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
    started: u32,
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
            started: 0,
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.as_ref().expect("log dir").path().to_owned()
    }

    /// Everything every incarnation logged.
    pub fn all(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.started {
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
        logs: &mut OperatorLogs,
        extra: &[&str],
    ) -> OperatorProcess {
        logs.started += 1;
        let incarnation = logs.started;
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
/// exists; returns how long it took. Panics with the stragglers after `timeout`.
pub async fn wait_converged(
    client: &Client,
    ns: &str,
    names: &[String],
    gone: &[String],
    timeout: Duration,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let items = list_vaultkeys(client, ns).await;
        let by_name: BTreeMap<String, &VaultKey> = items
            .iter()
            .map(|vk| (vk.metadata.name.clone().unwrap_or_default(), vk))
            .collect();
        let waiting: Vec<String> = names
            .iter()
            .filter(|n| !by_name.get(*n).is_some_and(|vk| converged(vk)))
            .map(|n| match by_name.get(n) {
                Some(vk) => describe(vk),
                None => format!("{n}: missing"),
            })
            .chain(gone.iter().filter(|n| by_name.contains_key(*n)).map(|n| {
                format!(
                    "{n}: still exists (finalizers {:?})",
                    by_name[n].metadata.finalizers
                )
            }))
            .collect();
        if waiting.is_empty() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!(
                "after {timeout:?}, {} VaultKeys have not converged:\n  {}",
                waiting.len(),
                waiting
                    .iter()
                    .take(40)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
