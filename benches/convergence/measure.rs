//! One scenario measured: creation, throttling, steady state, and the figures against targets.

use super::*;

// ------------------------------------------------------------------------------------------
// One scenario
// ------------------------------------------------------------------------------------------

pub(crate) struct Checks {
    /// (name, passed, detail): invariants; a smoke run fails when one does not hold.
    pub(crate) invariants: Vec<(String, bool, String)>,
}

impl Checks {
    pub(crate) fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        let (name, detail) = (name.into(), detail.into());
        println!(
            "    [{}] {name}: {detail}",
            if ok { "ok" } else { "BROKEN" }
        );
        self.invariants.push((name, ok, detail));
    }
}

pub(crate) fn target(label: &str, value: String, target: &str, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "info",
    };
    println!("    {label:<44} {value:<28} target {target:<26} {verdict}");
}

pub(crate) async fn run_scenario(
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
pub(crate) fn faults_for(args: &Args, sc: &Scenario) -> Option<Value> {
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
pub(crate) async fn measure(
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

    // 2. The operator, with vaults that hold only this scenario's keys (their lists are
    // measured in the steady state).
    if sc.throttle.is_none() {
        for vault in ["default", "listed"] {
            env.admin(
                reqwest::Method::DELETE,
                &format!("/vaults/{vault}/keys"),
                None,
            )
            .await;
        }
    }
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
        // more every 10 s. The rule of thumb is N / (budget / 10 s).
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
        figures["listed_steady"] = listed_steady_state(env, &op, sc, checks).await;
        figures["automatic_rotation"] = automatic_rotation(env, &op, sc, &tracker, checks).await;
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
    // The vault's list pages walked while keys were created belong to no key.
    let listed = figures["creation"]["kv_requests_per_key_by_operation"]["list_keys"]
        .as_f64()
        .unwrap_or(0.0);
    if sc.throttle.is_none() {
        target(
            "creation: Key Vault requests per key",
            format!(
                "{kv_per_key:.2} {}",
                figures["creation"]["kv_requests_per_key_by_operation"]
            ),
            "<= 3 (read+create+policy), besides list pages",
            Some(kv_per_key - listed <= 3.0),
        );
    }
    let kw = figures["creation"]["kube_writes_per_key_by_kind"].clone();
    let patches = kw["status"].as_f64().unwrap_or(0.0) + kw["finalizer"].as_f64().unwrap_or(0.0);
    target(
        "creation: Kubernetes writes per key",
        format!(
            "{:.2} (status + finalizer {patches:.2}, events {}, ConfigMaps {})",
            patches + kw["event"].as_f64().unwrap_or(0.0) + kw["configmap"].as_f64().unwrap_or(0.0),
            kw["event"].as_f64().unwrap_or(0.0),
            kw["configmap"].as_f64().unwrap_or(0.0)
        ),
        "<= 2 (status + event; Retain holds no finalizer; paced keys write status once more), +1 ConfigMap with --publish",
        sc.throttle.is_none().then_some(
            patches + kw["event"].as_f64().unwrap_or(0.0) + kw["configmap"].as_f64().unwrap_or(0.0)
                <= if sc.publish { 3.0 } else { 2.0 },
        ),
    );
    if let Some(s) = figures.get("steady") {
        let reads = s["kv_requests_per_resync"].as_f64().unwrap_or(f64::NAN);
        target(
            "first resync after creation: Key Vault reads per reconcile",
            format!("{reads:.2} {}", s["kv_requests_per_resync_by_operation"]),
            "<= 2 (get_key + policy; 0 when the list vouched first), +1 version list with --publish",
            Some(reads <= if sc.publish { 3.3 } else { 2.0 }),
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
    if let Some(l) = figures.get("listed_steady") {
        let per = l["requests_per_key_per_resync"]
            .as_f64()
            .unwrap_or(f64::NAN);
        target(
            "steady state: Key Vault requests per key per resync",
            format!(
                "{per:.4} ({} list pages; before: {})",
                l["list_pages"], l["requests_per_key_per_resync_before"]
            ),
            "<= 0.05 (at 1,000 and 10,000)",
            (sc.n >= 1000).then_some(per <= 0.05),
        );
        target(
            "Key Vault cost a day, 10,000 keys at default settings",
            format!(
                "before {} after {}",
                l["at_10000_keys_default_settings"]["before"],
                l["at_10000_keys_default_settings"]["after"]
            ),
            "-",
            None,
        );
    }
    if let Some(r) = figures.get("automatic_rotation") {
        let max = r["seconds_until_status_shows_it"]["max"]
            .as_f64()
            .unwrap_or(f64::NAN);
        target(
            "automatic rotation: seconds until status shows it (max)",
            format!("{max:.1} s (resync {} s)", sc.resync),
            "<= one resync (+ reads)",
            None,
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
