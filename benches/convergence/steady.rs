//! A converged fleet over one resync interval, once every key has been vouched for by its
//! vault's key list, and how soon Key Vault's automatic rotations show in status.

use super::*;

/// Key Vault's price for "other operations": USD per 10,000.
const USD_PER_10K_OPERATIONS: f64 = 0.03;
/// The operator's defaults: --resync-seconds and --verify-interval-seconds.
const DEFAULT_RESYNC_SECONDS: f64 = 300.0;
const DEFAULT_VERIFY_SECONDS: f64 = 86_400.0;
/// A full read of a key with a rotation policy: get_key + get_rotation_policy.
const FULL_READ_REQUESTS: f64 = 2.0;
/// The rotation policy of the bench's keys rotates 30 days after creation.
const PAST_ROTATION_SECONDS: u64 = 31 * 86_400;

async fn emulator_counts(env: &Env) -> BTreeMap<String, f64> {
    let mut ops = emulator_ops(&env.admin(reqwest::Method::GET, "/stats", None).await);
    ops.remove("unauthorized");
    ops
}

fn difference(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n != 0.0)
        .collect()
}

/// Pages of one walk through each vault's list: the keys alternate between two vaults.
fn pages_per_walk(sc: &Scenario) -> f64 {
    let half = sc.n.div_ceil(2);
    (half.div_ceil(25) + (sc.n - half).div_ceil(25)) as f64
}

/// Key Vault requests a day for `keys` converged keys at the operator's default settings:
/// `per_key_per_resync` every resync, plus a full read per key per verify interval.
fn requests_per_day(keys: f64, per_key_per_resync: f64) -> f64 {
    keys * (per_key_per_resync * 86_400.0 / DEFAULT_RESYNC_SECONDS
        + FULL_READ_REQUESTS * 86_400.0 / DEFAULT_VERIFY_SECONDS)
}

fn cost(requests_per_day: f64) -> Value {
    json!({
        "requests_per_day": requests_per_day.round(),
        "usd_per_day": round(requests_per_day / 10_000.0 * USD_PER_10K_OPERATIONS, 2),
    })
}

/// One resync interval of a converged, listed fleet: every Key Vault request (from the
/// emulator's own count, pages included), and the writes of either kind.
pub(crate) async fn listed_steady_state(
    env: &Env,
    op: &Operator,
    sc: &Scenario,
    checks: &mut Checks,
) -> Value {
    let window = Duration::from_secs(sc.resync);
    println!(
        "  listed steady state: one resync ({} s) of the converged fleet …",
        sc.resync
    );
    let (m0, e0) = (op.scrape().await, emulator_counts(env).await);
    tokio::time::sleep(window).await;
    let (m1, e1) = (op.scrape().await, emulator_counts(env).await);
    let scraped = m1.minus(&m0);
    let requests = difference(&e1, &e0);
    let total: f64 = requests.values().sum();
    let n = sc.n as f64;
    let per_key_per_resync = total / n;
    let per_key_reads = ["get_key", "get_rotation_policy", "list_versions"]
        .iter()
        .map(|op| requests.get(*op).copied().unwrap_or(0.0))
        .sum::<f64>();
    let pages = requests.get("list_keys").copied().unwrap_or(0.0);
    let expected_pages = pages_per_walk(sc);
    let (kv_writes, kube_writes) = (scraped.kv_writes(), scraped.kube_writes());
    let before = FULL_READ_REQUESTS;
    let figures = json!({
        "window_seconds": sc.resync,
        "requests_by_operation": requests,
        "list_pages": pages,
        "list_pages_per_walk": expected_pages,
        "requests_per_key_per_resync": round(per_key_per_resync, 4),
        "requests_per_key_per_resync_before": before,
        "reconciles_by_outcome": scraped.by("vaultkey_reconciles_total", "outcome"),
        "kv_writes": kv_writes,
        "kube_writes": kube_writes,
        "at_10000_keys_default_settings": {
            "before": cost(requests_per_day(10_000.0, before) - 10_000.0 * FULL_READ_REQUESTS),
            "after": cost(requests_per_day(10_000.0, per_key_per_resync)),
        },
    });
    println!(
        "  listed steady state: {total} Key Vault requests ({pages} list pages) for {} keys = {:.4} per key per resync (before: {before}); {kv_writes} Key Vault writes, {kube_writes} Kubernetes writes",
        sc.n, per_key_per_resync
    );
    // Publishing VaultKeys are read every resync by design (older versions are not listed).
    checks.check(
        format!("{}: listed steady state: no per-key read", sc.label),
        sc.publish || per_key_reads == 0.0,
        format!("{requests:?}"),
    );
    checks.check(
        format!(
            "{}: listed steady state: one list walk per vault per resync",
            sc.label
        ),
        (expected_pages..=2.0 * expected_pages).contains(&pages),
        format!("{pages} pages in one resync, {expected_pages} per walk"),
    );
    checks.check(
        format!("{}: listed steady state: Key Vault writes = 0", sc.label),
        kv_writes == 0.0,
        format!("{kv_writes}"),
    );
    checks.check(
        format!("{}: listed steady state: Kubernetes writes = 0", sc.label),
        kube_writes == 0.0,
        format!("{kube_writes}"),
    );
    figures
}

/// Moves the emulator's clock past the keys' rotation time (Key Vault rotates them itself)
/// and measures how long each VaultKey's status takes to show its new version, and what
/// each rotation costs the operator.
pub(crate) async fn automatic_rotation(
    env: &Env,
    op: &Operator,
    sc: &Scenario,
    tracker: &Arc<Mutex<Tracker>>,
    checks: &mut Checks,
) -> Value {
    let before: HashMap<String, String> = tracker
        .lock()
        .unwrap()
        .versions
        .iter()
        .map(|(name, (version, _))| (name.clone(), version.clone()))
        .collect();
    // Memory before the burst of reads and status writes 10,000 rotations bring.
    let rss_before_mib = status_kib(op.pid, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    let (m0, e0) = (op.scrape().await, emulator_counts(env).await);
    let shifted = Instant::now();
    env.admin(
        reqwest::Method::POST,
        &format!("/time-shift?seconds={PAST_ROTATION_SECONDS}"),
        None,
    )
    .await;
    let limit = Duration::from_secs(2 * sc.resync + 120);
    println!(
        "  automatic rotation: the vault rotated every key; waiting up to {} s for status …",
        limit.as_secs()
    );
    let delays = loop {
        let delays: Vec<f64> = tracker
            .lock()
            .unwrap()
            .versions
            .iter()
            .filter(|(name, (version, _))| before.get(*name).is_some_and(|v| v != version))
            .map(|(_, (_, at))| at.saturating_duration_since(shifted).as_secs_f64())
            .collect();
        if delays.len() >= sc.n || shifted.elapsed() > limit {
            break delays;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (m1, _) = settle(op, Duration::from_secs(3), Duration::from_secs(60)).await;
    let e1 = emulator_counts(env).await;
    let shown = delays.len();
    let per = shown.max(1) as f64;
    let scraped = m1.minus(&m0);
    let requests = difference(&e1, &e0);
    let figures = json!({
        "rotated_by_the_vault": sc.n,
        "shown_in_status": shown,
        "seconds_until_status_shows_it": distribution(delays.clone()),
        "resync_seconds": sc.resync,
        "kv_requests_per_rotation": per_key(&requests, per),
        "kube_writes_per_rotation": per_key(&scraped.by("vaultkey_kubernetes_writes_total", "kind"), per),
        "kv_writes": scraped.kv_writes(),
        "rss_peak_before_mib": round(rss_before_mib, 1),
        "rss_peak_after_mib": round(status_kib(op.pid, "VmHWM").unwrap_or(0) as f64 / 1024.0, 1),
    });
    println!(
        "  automatic rotation: {shown} of {} shown in status; seconds p50/p95/max {} / {} / {}; per rotation: Key Vault {} Kubernetes {}; peak RSS before / after {} / {} MiB",
        sc.n,
        figures["seconds_until_status_shows_it"]["p50"],
        figures["seconds_until_status_shows_it"]["p95"],
        figures["seconds_until_status_shows_it"]["max"],
        figures["kv_requests_per_rotation"],
        figures["kube_writes_per_rotation"],
        figures["rss_peak_before_mib"],
        figures["rss_peak_after_mib"]
    );
    checks.check(
        format!("{}: every automatic rotation shows in status", sc.label),
        shown == sc.n,
        format!("{shown} of {} within {} s", sc.n, limit.as_secs()),
    );
    checks.check(
        format!(
            "{}: an automatic rotation makes no Key Vault write",
            sc.label
        ),
        scraped.kv_writes() == 0.0,
        format!("{}", scraped.kv_writes()),
    );
    figures
}
