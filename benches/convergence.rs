//! Convergence, cost and memory benchmark of the operator over the real test environment
//! (kube-apiserver + etcd + the Key Vault emulator started by `tests/env/testenv.sh`).
//!
//! ```sh
//! # full benchmark (release build): EC P-256 at 100, 1,000, 10,000; RSA-2048 at 100, 1,000;
//! # throttled convergence of 1,000 keys under Key Vault's create budget
//! tests/env/testenv.sh run -- cargo bench --bench convergence
//! tests/env/testenv.sh run -- cargo bench --bench convergence -- --keys 100,1000 --rsa-keys none
//! # CI smoke (debug build): 20 keys + a 40-key throttle run, exits non-zero only on a broken
//! # invariant (never on timing)
//! tests/env/testenv.sh run -- cargo test --bench convergence -- --smoke
//! ```
//!
//! Per scenario: the floor (the same Key Vault calls the operator's plan makes for a new key,
//! create + rotation policy, issued straight through the library's Azure SDK client with the
//! operator's concurrency), then the operator binary in a namespace of its own: N VaultKeys
//! created through the API, the time until all are Ready, Key Vault requests and Kubernetes
//! writes per key for creation and for one steady-state resync, peak RSS and CPU. See
//! BENCHMARKS.md for what each figure means and the results.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use vaultkey_operator::api::VaultKey;
use vaultkey_operator::keyvault::azure::{
    AzureVaultProvider, ClientSettings, CredentialSource, credential,
};
use vaultkey_operator::keyvault::budget::Limits;
use vaultkey_operator::keyvault::{KeyVault, VaultError, VaultErrorKind, VaultProvider};
use vaultkey_operator::plan::{Observed, Owner, Plan, PlanInput, Remembered, Step, plan};
use vaultkey_operator::telemetry::Metrics;
use vaultkey_operator::validate::validate;
use vaultkey_operator::vault_hosts::VaultHosts;

/// Creates per vault per 10 s given to the operator and the floor outside the throttle
/// scenario: the emulator has no budget there, so pacing would only measure the pacing.
const UNPACED_CREATES: u32 = 1_000_000;
/// A request that reaches the emulator this soon after it answered 429 was already in flight
/// when the client heard of it (on loopback, even on a loaded 2-core machine).
const GRACE_MILLIS: u64 = 500;

#[derive(Parser, Debug)]
#[command(about = "vaultkey-operator convergence benchmark (run inside tests/env/testenv.sh)")]
struct Args {
    /// EC P-256 scenario sizes, comma-separated, or `none` (default 100,1000,10000; smoke: 20).
    #[arg(long)]
    keys: Option<String>,
    /// RSA-2048 scenario sizes, comma-separated, or `none` (default 100,1000; smoke: none).
    #[arg(long)]
    rsa_keys: Option<String>,
    /// Keys of the throttled scenario (Key Vault's create budget in the emulator, the
    /// operator's default pacing), 0 to skip (default 1000; smoke: 40).
    #[arg(long)]
    throttle_keys: Option<usize>,
    /// Software-key creates per vault per 10 s the emulator allows in the throttled scenario.
    #[arg(long, default_value_t = 20)]
    throttle_budget: u32,
    /// `--creates-per-10s` for the operator in the throttled scenario (default: the
    /// operator's own default).
    #[arg(long)]
    throttle_operator_creates: Option<u32>,
    /// In the throttled scenario, this many more VaultKeys in a second vault, created after
    /// the first vault's: how long they wait shows whether one throttled vault holds up others
    /// (default 100; smoke: 0).
    #[arg(long)]
    second_vault_keys: Option<usize>,
    /// Operator resync interval for N <= 1,000 (smoke: 10).
    #[arg(long)]
    resync_seconds: Option<u64>,
    /// Operator resync interval for N > 1,000.
    #[arg(long, default_value_t = 300)]
    large_resync_seconds: u64,
    /// Key Vault requests in flight per vault: the operator's `--vault-concurrency` and the
    /// floor's concurrency (the operator's `--concurrency`, reconciles in parallel, keeps its
    /// default unless set with `--extra`).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// VaultKeys created through the API in parallel.
    #[arg(long, default_value_t = 32)]
    apply_concurrency: usize,
    /// Delay every Key Vault answer of the emulator by this many milliseconds (its `slow`
    /// fault at rate 1), for both the floor and the operator: a real vault answers in tens of
    /// milliseconds, the emulator on loopback in well under one.
    #[arg(long, default_value_t = 0)]
    kv_latency_ms: u64,
    /// Skip the floor measurement.
    #[arg(long)]
    no_floor: bool,
    /// Skip the steady-state resync measurement.
    #[arg(long)]
    no_steady: bool,
    /// Give up on a convergence after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
    /// Operator binary to measure (default: the one Cargo built with this bench).
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Extra arguments for the operator, e.g. `--extra=--log-level=warn` (repeatable).
    #[arg(long = "extra", allow_hyphen_values = true)]
    extra: Vec<String>,
    /// Where operator logs and results.json go (default target/convergence-bench/<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// CI smoke: small N, short resync; exits non-zero only when an invariant breaks.
    #[arg(long)]
    smoke: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Ec,
    Rsa,
}

impl KeyKind {
    fn label(self) -> &'static str {
        match self {
            KeyKind::Ec => "EC P-256",
            KeyKind::Rsa => "RSA-2048",
        }
    }
    fn short(self) -> &'static str {
        match self {
            KeyKind::Ec => "ec",
            KeyKind::Rsa => "rsa",
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    label: String,
    n: usize,
    kind: KeyKind,
    floor: bool,
    steady: bool,
    /// Emulator create budget per 10 s, and the operator's `--creates-per-10s` (None: default).
    throttle: Option<(u32, Option<u32>)>,
    resync: u64,
    /// VaultKeys in the second vault, created after the first vault's.
    second_vault: usize,
}

/// What `tests/env/testenv.sh run` exports.
struct Env {
    kubeconfig: PathBuf,
    vault_url: String,
    second_vault_url: String,
    vault_ca: PathBuf,
    admin: String,
    env_dir: PathBuf,
}

impl Env {
    fn get() -> Result<Env, String> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                format!("{name} is not set: run through `tests/env/testenv.sh run -- cargo bench --bench convergence`")
            })
        };
        Ok(Env {
            kubeconfig: var("VAULTKEY_TEST_KUBECONFIG")?.into(),
            vault_url: var("VAULTKEY_TEST_VAULT_URL")?
                .trim_end_matches('/')
                .to_owned(),
            second_vault_url: var("VAULTKEY_TEST_PURGEABLE_VAULT_URL")?
                .trim_end_matches('/')
                .to_owned(),
            vault_ca: var("VAULTKEY_TEST_VAULT_CA")?.into(),
            admin: var("VAULTKEY_TEST_EMULATOR_ADMIN")?
                .trim_end_matches('/')
                .to_owned(),
            env_dir: var("VAULTKEY_TEST_ENV_DIR")?.into(),
        })
    }

    fn pid(&self, component: &str) -> Option<u32> {
        std::fs::read_to_string(self.env_dir.join("pids").join(format!("{component}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.admin));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("emulator admin API reachable");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "emulator {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

// ------------------------------------------------------------------------------------------
// /proc sampling
// ------------------------------------------------------------------------------------------

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// A `/proc/<pid>/status` field in KiB (VmHWM, VmRSS).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// (busy, total) ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU ticks of the processes under test and of the machine, to attribute a phase's CPU.
#[derive(Debug, Clone)]
struct CpuSample {
    at: Instant,
    procs: BTreeMap<&'static str, u64>,
    machine: (u64, u64),
}

fn sample(env: &Env, operator: Option<u32>) -> CpuSample {
    let mut procs = BTreeMap::new();
    for name in ["etcd", "kube-apiserver", "kv-emulator"] {
        if let Some(t) = env.pid(name).and_then(cpu_ticks) {
            procs.insert(name, t);
        }
    }
    if let Some(t) = operator.and_then(cpu_ticks) {
        procs.insert("operator", t);
    }
    if let Some(t) = cpu_ticks(std::process::id()) {
        procs.insert("bench", t);
    }
    CpuSample {
        at: Instant::now(),
        procs,
        machine: machine_ticks(),
    }
}

/// CPU seconds per process between two samples, plus "other" (everything else on the
/// machine: other engineers' builds, ...) and the wall time.
fn cpu_between(a: &CpuSample, b: &CpuSample, hz: f64) -> Value {
    let mut out = serde_json::Map::new();
    let mut ours = 0u64;
    for (name, end) in &b.procs {
        let d = end.saturating_sub(a.procs.get(name).copied().unwrap_or(0));
        ours += d;
        out.insert((*name).into(), json!(round(d as f64 / hz, 2)));
    }
    let busy = b.machine.0.saturating_sub(a.machine.0);
    out.insert(
        "other".into(),
        json!(round(busy.saturating_sub(ours) as f64 / hz, 2)),
    );
    out.insert(
        "wall".into(),
        json!(round(b.at.duration_since(a.at).as_secs_f64(), 2)),
    );
    Value::Object(out)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

// ------------------------------------------------------------------------------------------
// Prometheus text
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Scrape {
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.trim_end_matches('}');
                    let labels = body
                        .split("\",")
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.to_owned(), v.trim_matches('"').to_owned()))
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            series.push((name, labels, value));
        }
        Scrape { series }
    }

    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && filter
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.series {
            if n == name
                && let Some(l) = labels.get(label)
            {
                *out.entry(l.clone()).or_default() += v;
            }
        }
        out
    }

    /// `self - earlier`, series by series (counters only make sense).
    fn minus(&self, earlier: &Scrape) -> Scrape {
        let series = self
            .series
            .iter()
            .map(|(n, l, v)| {
                let before = earlier
                    .series
                    .iter()
                    .find(|(n2, l2, _)| n2 == n && l2 == l)
                    .map_or(0.0, |(_, _, v)| *v);
                (n.clone(), l.clone(), v - before)
            })
            .collect();
        Scrape { series }
    }

    fn kv_requests(&self) -> f64 {
        self.sum("vaultkey_keyvault_requests_total", &[])
    }
    fn kv_writes(&self) -> f64 {
        self.by("vaultkey_keyvault_requests_total", "operation")
            .iter()
            .filter(|(op, _)| !is_read(op))
            .map(|(_, v)| v)
            .sum()
    }
    fn kube_writes(&self) -> f64 {
        self.sum("vaultkey_kubernetes_writes_total", &[])
    }
    fn reconciles(&self) -> f64 {
        self.sum("vaultkey_reconciles_total", &[])
    }
}

fn is_read(op: &str) -> bool {
    matches!(
        op,
        "get_key" | "list_versions" | "get_rotation_policy" | "get_deleted_key"
    )
}

fn per_key(map: &BTreeMap<String, f64>, n: f64) -> Value {
    Value::Object(
        map.iter()
            .filter(|(_, v)| **v != 0.0)
            .map(|(k, v)| (k.clone(), json!(round(v / n, 3))))
            .collect(),
    )
}

// ------------------------------------------------------------------------------------------
// The operator process
// ------------------------------------------------------------------------------------------

struct Operator {
    child: Child,
    pid: u32,
    metrics_url: String,
    log: PathBuf,
}

impl Operator {
    #[allow(clippy::too_many_arguments)]
    fn start(
        env: &Env,
        bin: &Path,
        namespace: &str,
        resync: u64,
        concurrency: usize,
        creates_per_10s: Option<u32>,
        extra: &[String],
        log: PathBuf,
    ) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let file = std::fs::File::create(&log).expect("operator log file");
        let mut command = Command::new(bin);
        command
            .args(["run", "--namespace", namespace])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--resync-seconds={resync}"))
            .arg(format!("--vault-concurrency={concurrency}"))
            .arg("--emulator-ca-file")
            .arg(&env.vault_ca)
            .args([
                "--emulator-static-token=bench",
                "--emulator-skip-challenge-resource-check",
                "--log-level=info",
            ]);
        if let Some(c) = creates_per_10s {
            command.arg(format!("--creates-per-10s={c}"));
        }
        let child = command
            .args(extra)
            .env("KUBECONFIG", &env.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let pid = child.id();
        Operator {
            child,
            pid,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    async fn scrape(&self) -> Scrape {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&self.metrics_url).await
                && let Ok(text) = r.text().await
            {
                return Scrape::parse(&text);
            }
            assert!(
                Instant::now() < deadline,
                "the operator's /metrics did not answer (log: {})",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, as Kubernetes stops a pod; SIGKILL after 10 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        for _ in 0..100 {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Manifests, floor, readiness
// ------------------------------------------------------------------------------------------

fn manifest(vault_url: &str, ns: &str, name: &str, key_name: &str, kind: KeyKind) -> VaultKey {
    let shape = match kind {
        KeyKind::Ec => json!({"keyType": "EC", "curve": "P-256"}),
        KeyKind::Rsa => json!({"keyType": "RSA", "keySize": 2048}),
    };
    let mut spec = json!({
        "vaultUrl": vault_url,
        "keyName": key_name,
        "keyOps": ["sign", "verify"],
        "tags": {"bench": "convergence"},
        "rotationPolicy": {
            "expiresIn": "P90D",
            "lifetimeActions": [
                {"action": "Rotate", "timeAfterCreate": "P30D"},
                {"action": "Notify", "timeBeforeExpiry": "P7D"}
            ]
        }
    });
    if kind == KeyKind::Rsa {
        spec["keyOps"] = json!(["encrypt", "decrypt"]);
    }
    for (k, v) in shape.as_object().expect("object") {
        spec[k] = v.clone();
    }
    let mut manifest = json!({
        "apiVersion": "vaultkey.dev/v1alpha1",
        "kind": "VaultKey",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    // As `kubectl apply` (and Argo CD's client-side apply) leave it.
    manifest["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": manifest.to_string(),
    });
    serde_json::from_value(manifest).expect("bench manifest is a VaultKey")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn distribution(mut values: Vec<f64>) -> Value {
    values.sort_by(|a, b| a.total_cmp(b));
    json!({
        "p50": round(percentile(&values, 50.0), 3),
        "p95": round(percentile(&values, 95.0), 3),
        "max": round(values.last().copied().unwrap_or(f64::NAN), 3),
    })
}

fn vault_client(env: &Env, metrics: Arc<Metrics>, creates: u32) -> Arc<dyn KeyVault> {
    let credential = credential(&CredentialSource::EmulatorStaticToken("bench".into()))
        .expect("static credential");
    let settings = ClientSettings {
        request_timeout: Duration::from_secs(30),
        extra_root_pem: Some(std::fs::read(&env.vault_ca).expect("emulator CA readable")),
        verify_challenge_resource: false,
        vault_hosts: VaultHosts::parse::<&str>(&[], true).expect("loopback hosts"),
        limits: Limits {
            software_creates: creates,
            hsm_creates: creates,
            ..Limits::default()
        },
    };
    AzureVaultProvider::new(credential, settings, metrics)
        .expect("vault provider")
        .vault(&env.vault_url)
        .expect("vault client")
}

/// The floor: what the operator's own plan calls for a new key (create + rotation policy),
/// sent directly with the same concurrency and the same client library.
async fn floor(env: &Env, sc: &Scenario, ns: &str, concurrency: usize) -> Result<Value, String> {
    let metrics = Arc::new(Metrics::new());
    let vault = vault_client(env, metrics.clone(), UNPACED_CREATES);
    let before = sample(env, None);
    let start = Instant::now();
    let results: Vec<Result<f64, String>> = futures::stream::iter(0..sc.n)
        .map(|i| {
            let vault = vault.clone();
            let name = format!("k-{i:05}");
            let vk = manifest(
                &env.vault_url,
                ns,
                &name,
                &format!("floor-{ns}-{i:05}"),
                sc.kind,
            );
            async move {
                let desired = validate(&vk).map_err(|e| e.to_string())?;
                let owner = Owner {
                    namespace: ns.to_owned(),
                    name: name.clone(),
                    uid: format!("floor-{i}"),
                };
                let steps = match plan(&PlanInput {
                    desired: &desired,
                    owner: &owner,
                    observed: &Observed::default(),
                    remembered: &Remembered::default(),
                    material: None,
                    now: Utc::now(),
                }) {
                    Plan::Steps(steps) => steps,
                    Plan::Blocked(b) => return Err(format!("plan blocked: {b:?}")),
                };
                for step in steps {
                    match step {
                        Step::Create(create) => {
                            when_paced_wait(|| vault.create_key(&desired.key_name, &create))
                                .await?;
                        }
                        Step::SetRotationPolicy(policy) => {
                            when_paced_wait(|| {
                                vault.set_rotation_policy(&desired.key_name, &policy)
                            })
                            .await?;
                        }
                        other => return Err(format!("unexpected step for a new key: {other:?}")),
                    }
                }
                Ok(start.elapsed().as_secs_f64())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let total = start.elapsed().as_secs_f64();
    let after = sample(env, None);
    let latencies = results.into_iter().collect::<Result<Vec<f64>, String>>()?;
    let calls = Scrape::parse(&metrics.render());
    let ops = calls.by("vaultkey_keyvault_requests_total", "operation");
    Ok(json!({
        "total_seconds": round(total, 3),
        "per_key_seconds_from_start": distribution(latencies),
        "keys_per_second": round(sc.n as f64 / total, 1),
        "kv_requests_per_key": per_key(&ops, sc.n as f64),
        "cpu_seconds": cpu_between(&before, &after, clock_ticks()),
    }))
}

/// Sends a request; when the client's budget has no slot soon, waits the promised time and
/// asks again, as the operator's requeue does.
async fn when_paced_wait<T, F, Fut>(request: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, VaultError>>,
{
    loop {
        match request().await {
            Err(VaultError {
                kind: VaultErrorKind::Paced { retry_in },
                ..
            }) => tokio::time::sleep(retry_in).await,
            other => return other.map_err(|e| e.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    ready_at: Instant,
    created: Option<i64>,
    transitioned: Option<i64>,
}

#[derive(Default)]
struct Tracker {
    ready: HashMap<String, Seen>,
    /// Not-ready reasons seen, and on how many keys.
    reasons: BTreeMap<String, std::collections::BTreeSet<String>>,
}

fn watch_readiness(client: Client, ns: &str) -> (Arc<Mutex<Tracker>>, tokio::task::JoinHandle<()>) {
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let api: Api<VaultKey> = Api::namespaced(client, ns);
    let t = tracker.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Ok(Some(vk)) = stream.try_next().await {
            let Some(cond) = vk.ready_condition() else {
                continue;
            };
            let mut tracker = t.lock().unwrap();
            if cond.status == "True" && cond.observed_generation == vk.metadata.generation {
                let name = vk.name_any();
                tracker.ready.entry(name).or_insert_with(|| Seen {
                    ready_at: Instant::now(),
                    created: vk
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_millisecond()),
                    transitioned: Some(cond.last_transition_time.0.as_millisecond()),
                });
            } else if cond.status != "True" {
                tracker
                    .reasons
                    .entry(cond.reason.clone())
                    .or_default()
                    .insert(vk.name_any());
            }
        }
    });
    (tracker, task)
}

async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    name
}

/// Creates the VaultKeys with bounded concurrency, retrying what the apiserver sheds (429,
/// 5xx). Returns when each create returned.
async fn apply_all(
    client: &Client,
    env: &Env,
    ns: &str,
    sc: &Scenario,
    concurrency: usize,
) -> HashMap<String, Instant> {
    let api: Api<VaultKey> = Api::namespaced(client.clone(), ns);
    // The first vault's keys, then the second vault's.
    futures::stream::iter(0..sc.n + sc.second_vault)
        .map(|i| {
            let api = api.clone();
            let (name, url) = if i < sc.n {
                (format!("k-{i:05}"), &env.vault_url)
            } else {
                (format!("p-{:05}", i - sc.n), &env.second_vault_url)
            };
            let vk = manifest(url, ns, &name, &format!("{ns}-{name}"), sc.kind);
            async move {
                let mut attempt = 0;
                loop {
                    match api.create(&PostParams::default(), &vk).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 && attempt > 0 => break,
                        Err(e) if attempt < 8 => {
                            attempt += 1;
                            eprintln!("  create {name}: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                        }
                        Err(e) => panic!("cannot create VaultKey {name}: {e}"),
                    }
                }
                (name, Instant::now())
            }
        })
        .buffered(concurrency)
        .collect()
        .await
}

/// Waits until the operator's Key Vault request and reconcile counters stop moving for
/// `quiet`, at most `limit`. Returns the last scrape and whether it was quiet.
async fn settle(op: &Operator, quiet: Duration, limit: Duration) -> (Scrape, bool) {
    let deadline = Instant::now() + limit;
    let mut last = op.scrape().await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = op.scrape().await;
        let moved = now.kv_requests() != last.kv_requests()
            || now.reconciles() != last.reconciles()
            || now.kube_writes() != last.kube_writes();
        if moved {
            since = Instant::now();
        }
        last = now;
        if since.elapsed() >= quiet {
            return (last, true);
        }
        if Instant::now() >= deadline {
            return (last, false);
        }
    }
}

/// The emulator's request counts by operation (all vaults), 401 challenges separately.
fn emulator_ops(stats: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in stats["requests"].as_array().into_iter().flatten() {
        let op = r["operation"].as_str().unwrap_or("?").to_owned();
        *out.entry(op).or_default() += r["count"].as_f64().unwrap_or(0.0);
    }
    out
}

// ------------------------------------------------------------------------------------------
// One scenario
// ------------------------------------------------------------------------------------------

struct Checks {
    /// (name, passed, detail): invariants; a smoke run fails when one does not hold.
    invariants: Vec<(String, bool, String)>,
}

impl Checks {
    fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        let (name, detail) = (name.into(), detail.into());
        println!(
            "    [{}] {name}: {detail}",
            if ok { "ok" } else { "BROKEN" }
        );
        self.invariants.push((name, ok, detail));
    }
}

fn target(label: &str, value: String, target: &str, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "info",
    };
    println!("    {label:<44} {value:<28} target {target:<26} {verdict}");
}

async fn run_scenario(
    env: &Env,
    client: &Client,
    args: &Args,
    sc: &Scenario,
    bin: &Path,
    out: &Path,
    checks: &mut Checks,
) -> Result<Value, String> {
    println!(
        "\n== {} — {} VaultKeys, {}{}{}, resync {} s, concurrency {}",
        sc.label,
        sc.n,
        sc.kind.label(),
        match sc.throttle {
            Some((b, _)) => format!(", emulator create budget {b} per 10 s"),
            None => ", no Key Vault budget (creates unpaced)".into(),
        },
        if args.kv_latency_ms > 0 {
            format!(", every Key Vault answer delayed {} ms", args.kv_latency_ms)
        } else {
            String::new()
        },
        sc.resync,
        args.concurrency
    );
    let ns = create_namespace(client, &format!("vkb-{}", sc.label)).await;
    let mut report = json!({
        "scenario": sc.label, "keys": sc.n, "key_type": sc.kind.label(),
        "namespace": ns, "resync_seconds": sc.resync, "concurrency": args.concurrency,
        "kv_latency_ms": args.kv_latency_ms,
    });
    let faults = faults_for(args, sc);
    if let Some(f) = &faults {
        env.admin(reqwest::Method::PUT, "/faults", Some(f.clone()))
            .await;
    }
    let result = measure(env, client, args, sc, bin, out, checks, &ns, &mut report).await;
    if faults.is_some() {
        env.admin(reqwest::Method::DELETE, "/faults", None).await;
    }
    result.map(|()| report)
}

/// The emulator's fault configuration of a scenario: Key Vault's create budget in the
/// throttled scenario, a fixed answer delay with `--kv-latency-ms`.
fn faults_for(args: &Args, sc: &Scenario) -> Option<Value> {
    let mut faults = serde_json::Map::new();
    if args.kv_latency_ms > 0 {
        faults.insert("rate".into(), json!(1.0));
        faults.insert("kinds".into(), json!(["slow"]));
        faults.insert("slowMillis".into(), json!(args.kv_latency_ms));
    }
    if let Some((budget, _)) = sc.throttle {
        faults.insert(
            "createBudget".into(),
            json!({"perTenSeconds": budget, "graceMillis": GRACE_MILLIS}),
        );
    }
    (!faults.is_empty()).then_some(Value::Object(faults))
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    env: &Env,
    client: &Client,
    args: &Args,
    sc: &Scenario,
    bin: &Path,
    out: &Path,
    checks: &mut Checks,
    ns: &str,
    report: &mut Value,
) -> Result<(), String> {
    let hz = clock_ticks();
    let ns = ns.to_owned();

    // 1. The floor, before the operator exists.
    let mut floor_total = None;
    if sc.floor {
        let f = floor(env, sc, &ns, args.concurrency).await?;
        println!(
            "  floor: {} keys in {:.2} s ({} keys/s), per key p50/p95/max {} / {} / {} s, calls {}",
            sc.n,
            f["total_seconds"],
            f["keys_per_second"],
            f["per_key_seconds_from_start"]["p50"],
            f["per_key_seconds_from_start"]["p95"],
            f["per_key_seconds_from_start"]["max"],
            f["kv_requests_per_key"]
        );
        floor_total = f["total_seconds"].as_f64();
        report["floor"] = f;
    }

    // 2. The operator.
    env.admin(reqwest::Method::POST, "/stats/reset", None).await;
    let creates = match sc.throttle {
        Some((_, operator_creates)) => operator_creates,
        None => Some(UNPACED_CREATES),
    };
    let op = Operator::start(
        env,
        bin,
        &ns,
        sc.resync,
        args.concurrency,
        creates,
        &args.extra,
        out.join(format!("{}-operator.log", sc.label)),
    );
    let m0 = op.scrape().await;
    let (tracker, watch_task) = watch_readiness(client.clone(), &ns);
    let s0 = sample(env, Some(op.pid));
    let t0 = Instant::now();
    let created = apply_all(client, env, &ns, sc, args.apply_concurrency).await;
    let applied = t0.elapsed().as_secs_f64();
    let timeout = Duration::from_secs(args.timeout_seconds);
    let mut last_print = Instant::now();
    let total = sc.n + sc.second_vault;
    loop {
        let ready = tracker.lock().unwrap().ready.len();
        if ready >= total {
            break;
        }
        if t0.elapsed() > timeout {
            let reasons: BTreeMap<String, usize> = tracker
                .lock()
                .unwrap()
                .reasons
                .iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect();
            watch_task.abort();
            op.stop();
            return Err(format!(
                "{}: only {ready} of {total} Ready after {timeout:?} (not-ready reasons seen: {reasons:?})",
                sc.label
            ));
        }
        if last_print.elapsed() > Duration::from_secs(30) {
            println!(
                "  … {ready}/{total} Ready after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ready = t0.elapsed().as_secs_f64();
    let s1 = sample(env, Some(op.pid));
    // The first vault's keys (all keys but a second vault's).
    let (converged, second_vault) = {
        let t = tracker.lock().unwrap();
        let done = |prefix: &str| {
            t.ready
                .iter()
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(_, seen)| seen.ready_at.saturating_duration_since(t0).as_secs_f64())
                .fold(0.0, f64::max)
        };
        let second: Vec<f64> = t
            .ready
            .iter()
            .filter(|(name, _)| name.starts_with("p-"))
            .filter_map(|(name, seen)| {
                Some(
                    seen.ready_at
                        .saturating_duration_since(*created.get(name)?)
                        .as_secs_f64(),
                )
            })
            .collect();
        let second_vault = (sc.second_vault > 0).then(|| {
            json!({
                "keys": sc.second_vault,
                "all_ready_after_seconds": round(done("p-"), 3),
                "per_key_seconds_observed": distribution(second),
            })
        });
        (done("k-"), second_vault)
    };
    let hwm_converged = status_kib(op.pid, "VmHWM").unwrap_or(0);

    // Per key: create call returned -> Ready seen by the watch (ms); and the API's own
    // timestamps, creationTimestamp -> Ready lastTransitionTime (whole seconds).
    let (observed, api_latency, first_ready) = {
        let t = tracker.lock().unwrap();
        let mut observed = Vec::new();
        let mut api = Vec::new();
        let mut first = None::<Instant>;
        for (name, seen) in &t.ready {
            if let Some(c) = created.get(name) {
                observed.push(seen.ready_at.saturating_duration_since(*c).as_secs_f64());
            }
            if let (Some(c), Some(r)) = (seen.created, seen.transitioned) {
                api.push((r - c) as f64 / 1000.0);
            }
            first = Some(first.map_or(seen.ready_at, |f: Instant| f.min(seen.ready_at)));
        }
        (observed, api, first.unwrap_or(t0))
    };
    let not_ready_reasons: BTreeMap<String, usize> = tracker
        .lock()
        .unwrap()
        .reasons
        .iter()
        .map(|(k, v)| (k.clone(), v.len()))
        .collect();

    // Let the reconciles that follow the last Ready finish (the operator reconciles again
    // after its own status write), then count creation.
    let (mut m1, mut quiet) = settle(&op, Duration::from_secs(3), Duration::from_secs(20)).await;
    // The emulator's counters, read while the operator's stand still (scraped before and
    // after), so that both count the same requests.
    let mut emu = Value::Null;
    for attempt in 0..10 {
        let before = op.scrape().await;
        emu = env.admin(reqwest::Method::GET, "/stats", None).await;
        let after = op.scrape().await;
        if before.kv_requests() == after.kv_requests() {
            m1 = after;
            break;
        }
        if attempt == 9 {
            quiet = false;
            m1 = after;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s_settled = sample(env, Some(op.pid));
    let creation = m1.minus(&m0);
    let n = total as f64;
    let emu_ops = emulator_ops(&emu);
    let op_ops = creation.by("vaultkey_keyvault_requests_total", "operation");

    println!(
        "  operator: {} keys Ready in {converged:.2} s (API creates took {applied:.2} s)",
        sc.n
    );
    if let Some(sv) = &second_vault {
        println!(
            "  second vault: {} more keys, created after the first vault's, all Ready {} s after the start; per key p50 {} s, max {} s",
            sc.second_vault,
            sv["all_ready_after_seconds"],
            sv["per_key_seconds_observed"]["p50"],
            sv["per_key_seconds_observed"]["max"]
        );
    }
    let ratio = floor_total.map(|f| converged / f);
    let mut figures = json!({
        "converge_seconds": round(converged, 3),
        "all_ready_seconds": round(all_ready, 3),
        "second_vault": second_vault,
        "apply_seconds": round(applied, 3),
        "per_key_seconds_observed": distribution(observed),
        "per_key_seconds_api_timestamps": distribution(api_latency),
        "not_ready_reasons_seen": not_ready_reasons,
        "creation": {
            "settled_quietly": quiet,
            "reconciles_per_key": round(creation.reconciles() / n, 3),
            "reconciles_by_outcome": per_key(&creation.by("vaultkey_reconciles_total", "outcome"), n),
            "kv_requests_per_key": round(creation.kv_requests() / n, 3),
            "kv_requests_per_key_by_operation": per_key(&op_ops, n),
            "kv_requests_by_status": creation.by("vaultkey_keyvault_requests_total", "status"),
            "kube_writes_per_key": round(creation.kube_writes() / n, 3),
            "kube_writes_per_key_by_kind": per_key(&creation.by("vaultkey_kubernetes_writes_total", "kind"), n),
            "reconcile_errors": creation.by("vaultkey_reconcile_errors_total", "reason"),
            "throttled_429": creation.sum("vaultkey_keyvault_throttled_total", &[]),
        },
        "emulator_requests_by_operation": emu_ops,
        "cpu_seconds_converge": cpu_between(&s0, &s1, hz),
        "cpu_seconds_until_settled": cpu_between(&s0, &s_settled, hz),
        "rss_peak_mib_at_ready": round(hwm_converged as f64 / 1024.0, 1),
    });
    if let Some(r) = ratio {
        figures["overhead_ratio"] = json!(round(r, 3));
    }
    let p = &figures["per_key_seconds_observed"];
    let pa = &figures["per_key_seconds_api_timestamps"];
    println!(
        "  per key (create returned → Ready seen): p50 {} s, p95 {} s, max {} s; API timestamps (1 s resolution) p50 {} / p95 {} / max {} s",
        p["p50"], p["p95"], p["max"], pa["p50"], pa["p95"], pa["max"]
    );
    let c = &figures["creation"];
    println!(
        "  creation: {} reconciles/key {}, Key Vault {} req/key {}, Kubernetes writes/key {} {}",
        c["reconciles_per_key"],
        c["reconciles_by_outcome"],
        c["kv_requests_per_key"],
        c["kv_requests_per_key_by_operation"],
        c["kube_writes_per_key"],
        c["kube_writes_per_key_by_kind"]
    );

    // Cross-check the operator's metrics with the emulator's counters (same window).
    let mut mismatches = Vec::new();
    for (op_name, count) in &op_ops {
        let e = emu_ops.get(op_name).copied().unwrap_or(0.0);
        if (e - count).abs() > 0.5 {
            mismatches.push(format!("{op_name}: operator {count} emulator {e}"));
        }
    }
    for (op_name, e) in &emu_ops {
        if op_name != "unauthorized" && !op_ops.contains_key(op_name) && *e > 0.0 {
            mismatches.push(format!("{op_name}: operator 0 emulator {e}"));
        }
    }
    let challenges = emu_ops.get("unauthorized").copied().unwrap_or(0.0);
    if quiet {
        checks.check(
            format!("{}: operator Key Vault metrics = emulator /stats", sc.label),
            mismatches.is_empty(),
            if mismatches.is_empty() {
                format!(
                    "{} requests agree by operation (plus {challenges} 401 challenges the SDK answers itself)",
                    creation.kv_requests()
                )
            } else {
                mismatches.join("; ")
            },
        );
    } else {
        println!(
            "    (cross-check skipped: the operator's Key Vault traffic did not stand still long enough)"
        );
    }
    checks.check(
        format!("{}: all {total} VaultKeys Ready", sc.label),
        true,
        format!("in {converged:.1} s"),
    );
    let managed = m1.sum("vaultkey_managed_keys", &[]);
    checks.check(
        format!("{}: managed_keys gauge", sc.label),
        (managed - n).abs() < 0.5,
        format!("{managed} (expected {total})"),
    );

    // 3. Throttling.
    if let Some((budget, _)) = sc.throttle {
        let b = &emu["budget"];
        let sum = |v: &Value| -> f64 {
            v.as_object().map_or(0.0, |o| {
                o.values().filter_map(Value::as_f64).fold(0.0, |a, b| a + b)
            })
        };
        let throttled = sum(&b["throttled"]);
        let inside = sum(&b["inRetryAfterWindow"]);
        let late = sum(&b["inRetryAfterWindowAfterGrace"]);
        // Sliding window of `budget` per 10 s: the first `budget` at once, then `budget`
        // more every 10 s. The issue's rule of thumb is N / (budget / 10 s).
        let minimum = sc.n as f64 / (f64::from(budget) / 10.0);
        let exact_min = ((sc.n as f64 / f64::from(budget)).ceil() - 1.0) * 10.0;
        figures["throttle"] = json!({
            "emulator_budget_per_10s": budget,
            "operator_creates_per_10s": sc.throttle.and_then(|t| t.1).map_or(format!("default ({})", Limits::default().software_creates), |c| c.to_string()),
            "minimum_seconds_n_over_rate": minimum,
            "minimum_seconds_sliding_window": exact_min,
            "ratio_to_minimum": round(converged / minimum, 3),
            "emulator_429": throttled,
            "operator_429_metric": creation.sum("vaultkey_keyvault_throttled_total", &[]),
            "requests_inside_retry_after_window": inside,
            "requests_inside_retry_after_window_after_grace": late,
            "grace_millis": b["graceMillis"],
            "admitted": b["admitted"],
        });
        println!(
            "  throttled: {throttled} × 429 from the emulator; {inside} requests arrived inside a Retry-After window, {late} of them after the {} ms in-flight grace",
            b["graceMillis"]
        );
        target(
            "time / minimum (N / 2 per s)",
            format!(
                "{:.1} s / {minimum:.0} s = {:.3}",
                converged,
                converged / minimum
            ),
            "<= 1.10",
            Some(converged / minimum <= 1.10),
        );
        target(
            "429 answers",
            format!("{throttled}"),
            "no storm (waits each out)",
            None,
        );
        checks.check(
            format!("{}: no request sent inside a Retry-After window", sc.label),
            late == 0.0,
            format!("{late} after the grace ({inside} including requests already in flight)"),
        );
    }

    // 4. Steady state: idle CPU, then one full resync of every key.
    if sc.steady {
        let s_idle0 = sample(env, Some(op.pid));
        let r_idle0 = op.scrape().await.reconciles();
        // Until shortly before the first key's resync can be due (-10 % jitter).
        let first_resync = first_ready + Duration::from_secs_f64(sc.resync as f64 * 0.9);
        let idle_end = (Instant::now() + Duration::from_secs(30)).min(
            first_resync
                .checked_sub(Duration::from_secs(2))
                .unwrap_or(first_resync),
        );
        if idle_end > Instant::now() + Duration::from_secs(3) {
            tokio::time::sleep_until(idle_end.into()).await;
            let s_idle1 = sample(env, Some(op.pid));
            let r_idle1 = op.scrape().await.reconciles();
            let d = cpu_between(&s_idle0, &s_idle1, hz);
            let wall = d["wall"].as_f64().unwrap_or(1.0);
            let op_cpu = d["operator"].as_f64().unwrap_or(0.0);
            figures["idle"] = json!({
                "window_seconds": wall,
                "reconciles_in_window": r_idle1 - r_idle0,
                "operator_cpu_percent_of_one_core": round(100.0 * op_cpu / wall, 3),
                "cpu_seconds": d,
            });
            println!(
                "  idle between resyncs: operator {:.3} % of a core over {wall:.0} s ({} reconciles in the window)",
                100.0 * op_cpu / wall,
                r_idle1 - r_idle0
            );
        } else {
            println!(
                "  idle between resyncs: no quiet window (convergence took longer than 0.9 × resync)"
            );
        }
        // Every key resyncs within 1.1 × resync after it became Ready.
        let last_ready = Instant::now().min(t0 + Duration::from_secs_f64(converged));
        let until = last_ready + Duration::from_secs_f64(sc.resync as f64 * 1.1 + 5.0);
        println!(
            "  waiting {:.0} s for one resync of every key …",
            until
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
        );
        let s_ss0 = sample(env, Some(op.pid));
        tokio::time::sleep_until(until.into()).await;
        let (m2, _) = settle(&op, Duration::from_secs(2), Duration::from_secs(10)).await;
        let s_ss1 = sample(env, Some(op.pid));
        let steady = m2.minus(&m1);
        let reconciles = steady.reconciles();
        let per = reconciles.max(1.0);
        let kv_writes = steady.kv_writes();
        let kube_writes = steady.kube_writes();
        figures["steady"] = json!({
            "window_seconds": round(s_ss1.at.duration_since(s_ss0.at).as_secs_f64(), 1),
            "reconciles": reconciles,
            "reconciles_per_key": round(reconciles / n, 3),
            "kv_requests_per_resync": round(steady.kv_requests() / per, 3),
            "kv_requests_per_resync_by_operation": per_key(&steady.by("vaultkey_keyvault_requests_total", "operation"), per),
            "kv_writes": kv_writes,
            "kube_writes": kube_writes,
            "kube_writes_by_kind": steady.by("vaultkey_kubernetes_writes_total", "kind"),
            "cpu_seconds": cpu_between(&s_ss0, &s_ss1, hz),
            "operator_cpu_ms_per_resync": round(1000.0 * (s_ss1.procs.get("operator").copied().unwrap_or(0) - s_ss0.procs.get("operator").copied().unwrap_or(0)) as f64 / hz / per, 3),
        });
        let s = &figures["steady"];
        println!(
            "  steady state: {reconciles} resync reconciles ({} per key), {} Key Vault req per resync {}, {kv_writes} Key Vault writes, {kube_writes} Kubernetes writes",
            s["reconciles_per_key"],
            s["kv_requests_per_resync"],
            s["kv_requests_per_resync_by_operation"]
        );
        checks.check(
            format!("{}: steady-state Key Vault writes = 0", sc.label),
            kv_writes == 0.0 && reconciles > 0.0,
            format!("{kv_writes} writes over {reconciles} resyncs"),
        );
        checks.check(
            format!("{}: steady-state Kubernetes writes = 0", sc.label),
            kube_writes == 0.0 && reconciles > 0.0,
            format!("{kube_writes} writes over {reconciles} resyncs"),
        );
    }

    let end = sample(env, Some(op.pid));
    let hwm = status_kib(op.pid, "VmHWM").unwrap_or(0);
    let rss = status_kib(op.pid, "VmRSS").unwrap_or(0);
    figures["rss_peak_mib"] = json!(round(hwm as f64 / 1024.0, 1));
    figures["rss_end_mib"] = json!(round(rss as f64 / 1024.0, 1));
    figures["cpu_seconds_whole_run"] = cpu_between(&s0, &end, hz);
    figures["operator_startup_cpu_seconds"] = json!(round(
        s0.procs.get("operator").copied().unwrap_or(0) as f64 / hz,
        2
    ));
    watch_task.abort();
    op.stop();

    // Targets.
    println!("  figures against targets:");
    if let Some(r) = ratio {
        target(
            "overhead: operator / floor time",
            format!(
                "{converged:.2} s / {:.2} s = {r:.2}",
                floor_total.unwrap_or(0.0)
            ),
            "<= 1.2 (at 1,000)",
            (sc.n == 1000).then_some(r <= 1.2),
        );
    }
    let kv_per_key = figures["creation"]["kv_requests_per_key"]
        .as_f64()
        .unwrap_or(f64::NAN);
    if sc.throttle.is_none() {
        target(
            "creation: Key Vault requests per key",
            format!(
                "{kv_per_key:.2} {}",
                figures["creation"]["kv_requests_per_key_by_operation"]
            ),
            "<= 3 (read+create+policy)",
            Some(kv_per_key <= 3.0),
        );
    }
    let kw = figures["creation"]["kube_writes_per_key_by_kind"].clone();
    let patches = kw["status"].as_f64().unwrap_or(0.0) + kw["finalizer"].as_f64().unwrap_or(0.0);
    target(
        "creation: status + finalizer patches per key",
        format!(
            "{patches:.2} (+ {} events)",
            kw["event"].as_f64().unwrap_or(0.0)
        ),
        "2-3",
        Some(patches <= 3.0),
    );
    if let Some(s) = figures.get("steady") {
        let reads = s["kv_requests_per_resync"].as_f64().unwrap_or(f64::NAN);
        target(
            "steady state: Key Vault reads per key per resync",
            format!("{reads:.2} {}", s["kv_requests_per_resync_by_operation"]),
            "<= 1 (issue); README: 2 w/ policy",
            Some(reads <= 1.0),
        );
        target(
            "steady state: Key Vault writes",
            format!("{}", s["kv_writes"]),
            "0",
            Some(s["kv_writes"].as_f64() == Some(0.0)),
        );
        target(
            "steady state: Kubernetes writes",
            format!("{}", s["kube_writes"]),
            "0",
            Some(s["kube_writes"].as_f64() == Some(0.0)),
        );
    }
    let rss_mib = hwm as f64 / 1024.0;
    target(
        "operator peak RSS (VmHWM)",
        format!("{rss_mib:.1} MiB"),
        "<= 64 MiB (at 10,000)",
        (sc.n >= 10_000).then_some(rss_mib <= 64.0),
    );
    let cpu = &figures["cpu_seconds_whole_run"];
    target(
        "operator CPU, whole run",
        format!("{} s over {} s", cpu["operator"], cpu["wall"]),
        "-",
        None,
    );
    if let Some(idle) = figures.get("idle") {
        target(
            "operator idle CPU between resyncs",
            format!("{} % of a core", idle["operator_cpu_percent_of_one_core"]),
            "- (at 10,000)",
            None,
        );
    }
    println!(
        "  CPU seconds while converging: {}",
        figures["cpu_seconds_converge"]
    );
    report["operator"] = figures;
    Ok(())
}

fn machine_facts() -> Value {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "date_utc": run("date", &["-u"]),
        "nproc": run("nproc", &[]),
        "free_g": run("free", &["-g"]),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().lines().find(|l| l.starts_with("model name")).unwrap_or_default().split(':').nth(1).unwrap_or_default().trim(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

fn parse_sizes(raw: &str) -> Vec<usize> {
    if raw.trim().is_empty() || raw.trim() == "none" {
        return Vec::new();
    }
    raw.split(',')
        .map(|s| s.trim().parse().expect("sizes are comma-separated numbers"))
        .collect()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let env = match Env::get() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let bin = args
        .operator
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vaultkey-operator")));
    let ec = match &args.keys {
        Some(raw) => parse_sizes(raw),
        None if args.smoke => vec![20],
        None => vec![100, 1000, 10_000],
    };
    let rsa = match &args.rsa_keys {
        Some(raw) => parse_sizes(raw),
        None if args.smoke => Vec::new(),
        None => vec![100, 1000],
    };
    let throttle_keys = args
        .throttle_keys
        .unwrap_or(if args.smoke { 40 } else { 1000 });
    let small_resync = args
        .resync_seconds
        .unwrap_or(if args.smoke { 10 } else { 60 });
    let resync_for = |n: usize| {
        if n > 1000 {
            args.large_resync_seconds
        } else {
            small_resync
        }
    };
    let mut scenarios = Vec::new();
    let mut sizes: Vec<(usize, KeyKind)> = ec.iter().map(|n| (*n, KeyKind::Ec)).collect();
    sizes.extend(rsa.iter().map(|n| (*n, KeyKind::Rsa)));
    sizes.sort_by_key(|(n, k)| (*n, *k == KeyKind::Rsa));
    for (n, kind) in sizes {
        scenarios.push(Scenario {
            label: format!("{}-{n}", kind.short()),
            n,
            kind,
            floor: !args.no_floor,
            steady: !args.no_steady,
            throttle: None,
            resync: resync_for(n),
            second_vault: 0,
        });
    }
    if throttle_keys > 0 {
        scenarios.push(Scenario {
            label: format!("throttle-{throttle_keys}"),
            n: throttle_keys,
            kind: KeyKind::Ec,
            floor: false,
            steady: false,
            throttle: Some((args.throttle_budget, args.throttle_operator_creates)),
            resync: resync_for(throttle_keys).max(60),
            second_vault: args
                .second_vault_keys
                .unwrap_or(if args.smoke { 0 } else { 100 }),
        });
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/convergence-bench")
            .join(Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
    });
    std::fs::create_dir_all(&out).expect("output directory");
    let machine = machine_facts();
    println!(
        "vaultkey-operator convergence benchmark ({} build of the bench and, by default, of the operator)\n  operator: {}\n  machine: {} cores ({}), load {}\n  output: {}",
        machine["profile"].as_str().unwrap_or("?"),
        bin.display(),
        machine["nproc"].as_str().unwrap_or("?"),
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["loadavg"].as_str().unwrap_or("?"),
        out.display()
    );
    let kubeconfig = kube::config::Kubeconfig::read_from(&env.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig valid");
    let client = Client::try_from(config).expect("kube client");
    let versions = json!({
        "kube_apiserver": client.apiserver_version().await.map(|v| v.git_version).unwrap_or_default(),
        "etcd": "v3.6.16 (tests/env/etcd/go.mod)",
        "key_vault": "tests/kv-emulator (this repository; Lowkey Vault is not available from this machine's registries)",
    });

    // The apiserver's first writes of a new CRD are slow (schema and CEL compilation):
    // warm it up so that the first scenario's apply time is not the CRD's start-up.
    {
        let ns = create_namespace(&client, "vkb-warmup").await;
        let warmup = Scenario {
            label: "warmup".into(),
            n: 20,
            kind: KeyKind::Ec,
            floor: false,
            steady: false,
            throttle: None,
            resync: 60,
            second_vault: 0,
        };
        apply_all(&client, &env, &ns, &warmup, args.apply_concurrency).await;
    }
    let mut checks = Checks {
        invariants: Vec::new(),
    };
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    let started = Instant::now();
    for sc in &scenarios {
        match run_scenario(&env, &client, &args, sc, &bin, &out, &mut checks).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                println!("  FAILED: {e}");
                checks.check(format!("{}: converged", sc.label), false, e.clone());
                failed.push(e);
            }
        }
        let results = json!({
            "machine": machine, "versions": versions, "operator_binary": bin,
            "args": format!("{:?}", std::env::args().skip(1).collect::<Vec<_>>()),
            "scenarios": reports, "failed": failed,
        });
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(&results).unwrap(),
        )
        .expect("results written");
    }
    let passed = checks.invariants.iter().filter(|c| c.1).count();
    let broken: Vec<_> = checks.invariants.iter().filter(|c| !c.1).collect();
    println!(
        "\nbenchmark finished in {:.0} s; results: {}",
        started.elapsed().as_secs_f64(),
        out.join("results.json").display()
    );
    for b in &broken {
        println!("  BROKEN: {}: {}", b.0, b.2);
    }
    println!(
        "{}: {passed} passed, {} failed",
        if args.smoke { "smoke" } else { "invariants" },
        broken.len()
    );
    if !failed.is_empty() || (args.smoke && !broken.is_empty()) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
