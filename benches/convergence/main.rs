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

mod env;
mod measure;
mod operator;
mod scrape;
mod steady;
mod workload;

use env::*;
use measure::*;
use operator::*;
use scrape::*;
use steady::*;
use workload::*;

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
    /// Every VaultKey publishes its ConfigMap (`spec.publish`): creation, steady state and
    /// automatic rotation then count the ConfigMap writes and the reads publishing needs
    /// (such keys are read every resync: older versions are not in the vault's list).
    #[arg(long)]
    publish: bool,
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
    /// The VaultKeys publish a ConfigMap.
    publish: bool,
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
            label: format!(
                "{}-{n}{}",
                kind.short(),
                if args.publish { "-publish" } else { "" }
            ),
            n,
            kind,
            floor: !args.no_floor,
            steady: !args.no_steady,
            throttle: None,
            resync: resync_for(n),
            second_vault: 0,
            publish: args.publish,
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
            publish: false,
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
            publish: false,
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
