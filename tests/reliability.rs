//! Reliability: faults between the operator and Key Vault, operator crashes, kube-apiserver
//! restarts, deletion safety, bad input and secrecy, all against the real environment started
//! by `tests/env/testenv.sh` (etcd + kube-apiserver + the Key Vault emulator). Each test has its
//! own namespace and its own operator process.
//!
//! Sizes (CI defaults in brackets; RELIABILITY.md has the full-size run):
//!   VAULTKEY_RELIABILITY_KEYS     VaultKeys in the fault and crash tests [60]
//!   VAULTKEY_RELIABILITY_CRASHES  SIGKILLs in the crash test [5]
//!   VAULTKEY_RELIABILITY_FAULT_RATE            share of vault requests faulted [0.3]
//!   VAULTKEY_RELIABILITY_FAULT_WINDOW_SECONDS  how long faults stay on at most [60]
//!   VAULTKEY_RELIABILITY_SEED     seed of the emulator's fault draw and the crash timing [random]
//!   VAULTKEY_RELIABILITY_REPORT   file to append the figures to (JSON lines)
//!   VAULTKEY_RELIABILITY_KEEP_LOGS  keep every operator log (failed tests always keep theirs)
//!
//! Emulator faults and the kube-apiserver restart hit every client of the environment, so the
//! tests that cause them hold a process-wide lock exclusively and the others hold it shared;
//! faults are switched off by a guard when the test ends, also on panic.

mod reliability_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use vaultkey_operator::api::{IMPORTED_MATERIAL_TAG, OWNER_TAG, OWNER_UID_TAG, VaultKey};
use vaultkey_operator::key_material::KeyMaterial;
use vaultkey_operator::keyvault::{CreateKey, KeyProperties};

use reliability_support::*;
use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/key_material");

/// Every Key Vault operation the operator has any business calling. Nothing that returns
/// private material (release, backup, export) is among them.
const PERMITTED_OPERATIONS: &[&str] = &[
    "get_key",
    // Attributes and tags of every key (no key material): the steady state's comparison.
    "list_keys",
    "list_versions",
    "get_rotation_policy",
    "get_deleted_key",
    "recover_deleted_key",
    "create_key",
    "import_key",
    "update_key",
    "set_rotation_policy",
    "rotate_key",
    "delete_key",
    "purge_deleted_key",
];

const POLICY: &str = "  rotationPolicy:\n    expiresIn: P90D\n    lifetimeActions:\n      - {action: Rotate, timeAfterCreate: P30D}\n      - {action: Notify, timeBeforeExpiry: P7D}\n";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture readable")
}

/// An EC key, as made in a vault behind the operator's back.
fn ec_key(properties: KeyProperties) -> CreateKey {
    CreateKey {
        key_type: vaultkey_operator::api::KeyType::Ec,
        size: None,
        curve: None,
        public_exponent: None,
        properties,
    }
}

fn index_by_name(items: Vec<VaultKey>) -> BTreeMap<String, VaultKey> {
    items
        .into_iter()
        .map(|vk| (vk.metadata.name.clone().unwrap_or_default(), vk))
        .collect()
}

/// 16-character pieces of `text` (a leak of any of them counts).
fn pieces(text: &str) -> Vec<String> {
    text.as_bytes()
        .chunks(16)
        .filter(|c| c.len() == 16)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .filter(|c| c.chars().filter(|ch| ch.is_ascii_alphanumeric()).count() >= 12)
        .map(str::to_owned)
        .collect()
}

/// Pieces of secret content as it could appear anywhere: its text (minus PEM armour lines),
/// and its base64 encoding (as the API server serves Secret data).
fn secret_pieces(content: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(content);
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    let mut out = spread(pieces(&body));
    out.extend(spread(pieces(
        &base64::engine::general_purpose::STANDARD.encode(content),
    )));
    out
}

/// At most 48 pieces spread evenly over `all` (a leak is never a single piece, and searching
/// a trace log for thousands of them takes minutes in a debug build).
fn spread(all: Vec<String>) -> Vec<String> {
    let step = all.len().div_ceil(48).max(1);
    all.into_iter().step_by(step).collect()
}

// =============================================================================================
// 1. Faults between the operator and Key Vault
// =============================================================================================

struct Planned {
    name: String,
    key: String,
    vault: &'static str,
    rotates: bool,
    rotated: bool,
    expected_versions: usize,
}

/// With a share of all vault requests faulted (429 with Retry-After, 500, 503, timeout after
/// the vault committed, connection reset, slow answers), VaultKeys of mixed types with rotation
/// policies all converge; every key has exactly the versions its intent implies (1 + manual
/// rotations); none is deleted or disabled.
#[tokio::test(flavor = "multi_thread")]
async fn vault_faults_every_key_converges_with_exact_versions() {
    let scenario = Scenario::exclusive("faults").await;
    let env = &scenario.env;
    faults_off(env);
    let n = size("VAULTKEY_RELIABILITY_KEYS", 60);
    let rate: f64 = std::env::var("VAULTKEY_RELIABILITY_FAULT_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.3);
    let window = Duration::from_secs(size("VAULTKEY_RELIABILITY_FAULT_WINDOW_SECONDS", 60) as u64);
    let seed = seed();
    let mut operator = scenario.start_operator(&[
        "--resync-seconds",
        "5",
        "--request-timeout-seconds",
        "2",
        "--creates-per-10s",
        "200",
    ]);

    let before = Stats::read(env).await;
    let kinds = [
        "throttle",
        "error500",
        "error503",
        "timeout_after_commit",
        "reset",
        "slow",
    ];
    let faults = FaultInjection::on(
        env,
        json!({
            "rate": rate,
            "kinds": kinds,
            "seed": seed,
            "retryAfterSeconds": 1,
            "slowMillis": 1500,
            // Longer than --request-timeout-seconds 2: the operator gives up on a request
            // the vault has carried out.
            "holdSeconds": 5,
        }),
    )
    .await;
    let start = Instant::now();

    let mut planned = Vec::new();
    for i in 0..n {
        let name = format!("k{i:03}");
        let key = scenario.key_name(&name);
        let url = if i % 2 == 0 {
            &env.vault_url
        } else {
            &env.purgeable_vault_url
        };
        let shape = match i % 3 {
            0 => "  keyType: EC\n  curve: P-256\n  keyOps: [sign, verify]\n",
            1 => "  keyType: RSA\n  keySize: 2048\n",
            _ => "  keyType: oct-HSM\n  keySize: 256\n",
        };
        let token = if i % 4 == 0 {
            "  rotateToken: t0\n"
        } else {
            ""
        };
        let body = format!("{shape}{token}  tags: {{suite: reliability}}\n{POLICY}");
        scenario.create_vaultkey(&name, url, &body).await;
        planned.push(Planned {
            name,
            key,
            vault: vault_name(env, url),
            // Half of the keys of every type are rotated once through rotateToken.
            rotates: (i / 3) % 2 == 0,
            rotated: false,
            expected_versions: 1,
        });
    }
    let names: Vec<String> = planned.iter().map(|p| p.name.clone()).collect();

    // Under faults: rotate each chosen key once it exists, until everything has converged or
    // the window closes.
    let mut converged_under_faults;
    loop {
        let items = index_by_name(scenario.vaultkeys().await);
        rotate_when_created(&scenario, &items, &mut planned).await;
        converged_under_faults = names
            .iter()
            .filter(|n| items.get(*n).is_some_and(converged))
            .count();
        if (converged_under_faults == n && planned.iter().all(|p| !p.rotates || p.rotated))
            || start.elapsed() > window
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let faulted_for = start.elapsed();
    faults.off();
    let faults_off_at = Instant::now();
    let while_faulted = Stats::read(env).await.since(&before);
    assert!(operator.is_running(), "the operator survived the faults");

    // Rotations not yet asked for (their key was not created under faults) are asked now.
    while planned.iter().any(|p| p.rotates && !p.rotated) {
        assert!(
            faults_off_at.elapsed() < Duration::from_secs(300),
            "keys still not created 300 s after the faults stopped"
        );
        let items = index_by_name(scenario.vaultkeys().await);
        rotate_when_created(&scenario, &items, &mut planned).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    scenario
        .wait_converged(&names, &[], Duration::from_secs(400))
        .await;
    let recovery = faults_off_at.elapsed();
    let after = Stats::read(env).await.since(&before);

    // Two resyncs later nothing has changed: no late duplicate from a held response.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let items = index_by_name(scenario.vaultkeys().await);
    let (mut lost, mut duplicates, mut missing_versions, mut disabled, mut deleted) =
        (0, 0, 0, 0, 0);
    let mut problems = Vec::new();
    for p in &planned {
        let Some(facts) = key_facts(env, p.vault, &p.key).await else {
            lost += 1;
            problems.push(format!(
                "{}: key {} not in vault {}",
                p.name, p.key, p.vault
            ));
            continue;
        };
        if facts.versions > p.expected_versions {
            duplicates += facts.versions - p.expected_versions;
        }
        if facts.versions < p.expected_versions {
            missing_versions += p.expected_versions - facts.versions;
        }
        if facts.versions != p.expected_versions {
            problems.push(format!(
                "{}: {} versions, intent {}",
                p.name, facts.versions, p.expected_versions
            ));
        }
        if !facts.all_enabled {
            disabled += 1;
            problems.push(format!("{}: a version is disabled", p.name));
        }
        if facts.deleted {
            deleted += 1;
            problems.push(format!("{}: deleted", p.name));
        }
        let status = items[&p.name].status.clone().unwrap_or_default();
        if status.current_version.as_deref() != Some(facts.latest.as_str())
            || status.version_count != Some(facts.versions as i32)
        {
            problems.push(format!(
                "{}: status shows {:?} ({:?} versions), the vault {} ({})",
                p.name, status.current_version, status.version_count, facts.latest, facts.versions
            ));
        }
    }
    let injected: u64 = after.faults.values().sum();
    figure(
        "vault_faults",
        json!({
            "keys": n,
            "rate": rate,
            "seed": seed,
            "vault_requests": after.total(),
            "vault_requests_while_faulted": while_faulted.total(),
            "faults_injected": injected,
            "faults_by_kind": after.faults,
            "requests_by_operation": after.operations(),
            "manual_rotations": planned.iter().filter(|p| p.rotated).count(),
            "converged_while_faulted": converged_under_faults,
            "faulted_seconds": faulted_for.as_secs_f64(),
            "recovery_seconds_after_faults_off": recovery.as_secs_f64(),
            "keys_lost": lost,
            "duplicate_versions": duplicates,
            "missing_versions": missing_versions,
            "disabled": disabled,
            "deleted": deleted,
        }),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for kind in kinds {
        assert!(
            after.faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} fault was injected: {:?}",
            after.faults
        );
    }
    assert!(operator.is_running(), "the operator is still running");
    let unknown: Vec<_> = after
        .operations()
        .into_keys()
        // `unauthorized`: the SDK's first, token-less request that fetches the 401 challenge.
        .filter(|op| !PERMITTED_OPERATIONS.contains(&op.as_str()) && op != "unauthorized")
        .collect();
    assert!(
        unknown.is_empty(),
        "unexpected vault operations: {unknown:?}"
    );
}

/// Asks the one manual rotation of each chosen key as soon as the operator has created it
/// (status shows a version: the key is managed, so the new token is a rotation request).
async fn rotate_when_created(
    scenario: &Scenario,
    items: &BTreeMap<String, VaultKey>,
    planned: &mut [Planned],
) {
    for p in planned.iter_mut().filter(|p| p.rotates && !p.rotated) {
        let created = items
            .get(&p.name)
            .and_then(|vk| vk.status.as_ref())
            .is_some_and(|s| s.current_version.is_some());
        if created {
            scenario
                .patch_spec(&p.name, json!({"rotateToken": "t1"}))
                .await;
            p.rotated = true;
            p.expected_versions += 1;
        }
    }
}

/// Targeted faults (one operation, every time) that pin down single failure modes found by the
/// random fault run above. Each runs under the exclusive lock: faults are emulator-wide.
async fn targeted_faults(
    env: &Env,
    kind: &str,
    operations: &[&str],
    extra: serde_json::Value,
) -> FaultInjection {
    let mut config = json!({
        "rate": 1.0,
        "kinds": [kind],
        "seed": 1,
        "operations": operations,
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    FaultInjection::on(env, config).await
}

/// The rotateToken a VaultKey is created with (or adopts a key with) describes the key and
/// does not rotate it (README). That must hold when a step after the create fails: here the
/// rotation-policy write (and, for the adopted key, the property update) keeps failing for a
/// while. Once the vault answers again, each key must still have exactly one version.
#[tokio::test(flavor = "multi_thread")]
async fn initial_rotate_token_survives_a_failed_step_after_create() {
    let scenario = Scenario::exclusive("firsttoken").await;
    let env = &scenario.env;
    faults_off(env);
    let mut operator = scenario.start_operator(&["--resync-seconds", "2"]);
    // A key that exists before its VaultKey, to be adopted (its tags differ from the spec).
    let adopted = scenario.key_name("adopted");
    env.vault(&env.vault_url)
        .create_key(&adopted, &ec_key(KeyProperties::default()))
        .await
        .unwrap();
    let faults = targeted_faults(
        env,
        "error503",
        &["set_rotation_policy", "update_key"],
        json!({}),
    )
    .await;
    scenario
        .create_vaultkey(
            "created",
            &env.vault_url,
            &format!("  keyType: EC\n  rotateToken: first\n{POLICY}"),
        )
        .await;
    scenario
        .create_vaultkey(
            "adopted",
            &env.vault_url,
            &format!(
                "  keyType: EC\n  adopt: true\n  rotateToken: first\n  tags: {{team: a}}\n{POLICY}"
            ),
        )
        .await;
    let names = vec!["created".to_string(), "adopted".to_string()];
    // Both keys are known to status (so the VaultKeys count as managed) while the later step
    // keeps failing.
    for name in &names {
        eventually(
            &format!("{name}: version in status, Ready=False"),
            Duration::from_secs(60),
            || async {
                let vk = scenario.vaultkey(name).await;
                let s = vk.status.clone()?;
                (s.current_version.is_some() && vk.ready_condition()?.status == "False")
                    .then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    faults.off();
    scenario
        .wait_converged(&names, &[], Duration::from_secs(90))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut problems = Vec::new();
    for (name, key) in [
        ("created", scenario.key_name("created")),
        ("adopted", adopted.clone()),
    ] {
        let facts = key_facts(env, "default", &key).await.expect("key exists");
        if facts.versions != 1 {
            let rotated = scenario
                .events(name)
                .await
                .into_iter()
                .filter(|(r, _)| r == "Rotated")
                .collect::<Vec<_>>();
            problems.push(format!(
                "{name}: {} versions; the initial rotateToken was taken as a rotation request after a failed step ({rotated:?})",
                facts.versions
            ));
        }
    }
    assert!(operator.is_running());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// status.versionCount and status.versions describe the vault even when listing the versions
/// failed in the reconcile that made (or first saw) a version.
#[tokio::test(flavor = "multi_thread")]
async fn version_list_in_status_recovers_from_a_failed_listing() {
    let scenario = Scenario::exclusive("versionlist").await;
    let env = &scenario.env;
    faults_off(env);
    let _operator = scenario.start_operator(&["--resync-seconds", "2"]);
    let key = scenario.key_name("listed");
    let faults = targeted_faults(env, "error503", &["list_versions"], json!({})).await;
    scenario
        .create_vaultkey(
            "listed",
            &env.vault_url,
            "  keyType: EC\n  rotateToken: a\n",
        )
        .await;
    eventually("the key created", Duration::from_secs(60), || async {
        scenario
            .vaultkey("listed")
            .await
            .status?
            .current_version
            .map(|_| ())
    })
    .await;
    scenario
        .patch_spec("listed", json!({"rotateToken": "b"}))
        .await;
    eventually("the rotation done", Duration::from_secs(60), || async {
        (key_facts(env, "default", &key).await?.versions == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    faults.off();
    scenario
        .wait_converged(&["listed".to_string()], &[], Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // resyncs after the vault answers again
    let status = scenario.vaultkey("listed").await.status.unwrap();
    assert_eq!(
        (status.version_count, status.versions.len()),
        (Some(2), 2),
        "status still describes the versions as they were before the failed listing: versionCount {:?}, versions {:?}",
        status.version_count,
        status
            .versions
            .iter()
            .map(|v| v.version.clone())
            .collect::<Vec<_>>()
    );
}

/// Writes whose answer never arrives (the vault carried them out, the response is held past the
/// operator's request timeout) are not repeated: one create, one rotation, one import.
#[tokio::test(flavor = "multi_thread")]
async fn writes_with_unknown_outcome_are_not_repeated() {
    let scenario = Scenario::exclusive("unknown").await;
    let env = &scenario.env;
    faults_off(env);
    let mut operator =
        scenario.start_operator(&["--resync-seconds", "2", "--request-timeout-seconds", "2"]);
    let before = Stats::read(env).await;
    let faults = targeted_faults(
        env,
        "timeout_after_commit",
        &["create_key", "rotate_key", "import_key"],
        json!({"holdSeconds": 6}),
    )
    .await;
    scenario
        .put_secret("material", &fixture("ec_p256.jwk.json"))
        .await;
    scenario
        .create_vaultkey("gen", &env.vault_url, "  keyType: RSA\n  rotateToken: a\n")
        .await;
    scenario
        .create_vaultkey(
            "imp",
            &env.vault_url,
            "  keyType: EC\n  import: {secretRef: {name: material, key: key}}\n",
        )
        .await;
    let names = vec!["gen".to_string(), "imp".to_string()];
    scenario
        .wait_converged(&names, &[], Duration::from_secs(90))
        .await;
    scenario
        .patch_spec("gen", json!({"rotateToken": "b"}))
        .await;
    scenario
        .put_secret("material", &fixture("ec_p384_pkcs8.pem"))
        .await;
    let p384 = KeyMaterial::parse(&fixture("ec_p384_pkcs8.pem"))
        .unwrap()
        .fingerprint();
    let imp_key = scenario.key_name("imp");
    eventually(
        "rotation and re-import done",
        Duration::from_secs(90),
        || async {
            let items = index_by_name(scenario.vaultkeys().await);
            let reimported = key_facts(env, "default", &imp_key).await?.versions == 2;
            (items.values().all(converged) && reimported).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await; // past every held response
    let seen = Stats::read(env).await.since(&before);
    faults.off();
    for name in &names {
        let facts = key_facts(env, "default", &scenario.key_name(name))
            .await
            .unwrap();
        assert_eq!(
            facts.versions, 2,
            "{name}: one version per write, whatever the timeouts"
        );
    }
    // Status says which material the vault holds, also when the import's answer was lost
    // (the vault records it in the imported-material tag of the version).
    scenario
        .wait_converged(&names, &[], Duration::from_secs(10))
        .await;
    let imported = scenario
        .vaultkey("imp")
        .await
        .status
        .and_then(|s| s.imported_material);
    assert_eq!(
        imported.as_deref(),
        Some(p384.as_str()),
        "status.importedMaterial does not name the material the vault holds (its import timed out; the version carries the material's tag)"
    );
    assert!(
        seen.faults
            .get("timeout_after_commit")
            .copied()
            .unwrap_or(0)
            >= 4,
        "{:?}",
        seen.faults
    );
    assert!(
        operator
            .sum("vaultkey_keyvault_requests_total", &["status=\"timeout\""])
            .await
            >= 4.0,
        "the operator timed out on the held writes"
    );
    assert!(operator.is_running());
}

/// A vault that keeps failing is retried with the documented exponential backoff (2 s, 4 s,
/// 8 s ... up to 5 min), also when the error differs from one attempt to the next. The
/// operator's own status write (the condition's message changed) must not start the next
/// attempt at once: that turns a vault incident into a retry storm (a request, a status write
/// and a Warning event per attempt), and re-decides a write whose outcome is unknown moments
/// after its timeout instead of after the backoff.
#[tokio::test(flavor = "multi_thread")]
async fn backoff_holds_when_the_error_changes_between_attempts() {
    let scenario = Scenario::exclusive("backoff").await;
    let env = &scenario.env;
    faults_off(env);
    let mut operator = scenario.start_operator(&["--resync-seconds", "2"]);
    // Every read of the key fails, with one of three errors drawn at random.
    let faults = FaultInjection::on(
        env,
        json!({"rate": 1.0, "kinds": ["error500", "error503", "reset"], "seed": 7, "operations": ["get_key"]}),
    )
    .await;
    scenario
        .create_vaultkey("storm", &env.vault_url, "  keyType: EC\n")
        .await;
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let attempts = operator
        .sum(
            "vaultkey_keyvault_requests_total",
            &["operation=\"get_key\""],
        )
        .await;
    let warnings = scenario.events("storm").await.len();
    faults.off();
    figure(
        "backoff",
        json!({"window_seconds": window.as_secs(), "vault_reads": attempts, "events": warnings}),
    );
    assert!(operator.is_running());
    // Backoff from the first failure: attempts at 0, 5 and 15 s (the next at 35 s), within the
    // bound of 6 that the former 2 s backoff (0, 2, 6, 14 s, one more for the first status
    // write) also kept.
    assert!(
        attempts <= 6.0,
        "{attempts} reads of a failing vault in {window:?} (backoff allows about 5): each change of the error message wrote status, and the operator's own status write started the next attempt at once"
    );
}

/// A vault over its create budget holds up no other vault: the operator tells each VaultKey
/// that cannot get a create slot soon when to come back (Ready=False Paced, no Warning event)
/// instead of waiting inside one of its few reconcile slots, so a second vault's keys converge
/// while most of the first vault's still queue; nothing is throttled and nothing duplicated.
#[tokio::test(flavor = "multi_thread")]
async fn a_vault_over_its_create_budget_holds_up_no_other_vault() {
    let scenario = Scenario::exclusive("paced").await;
    let env = &scenario.env;
    let _faults = FaultInjection::on(env, json!({"createBudget": {"perTenSeconds": 2}})).await;
    let before = Stats::read(env).await;
    let operator = scenario.start_operator(&["--creates-per-10s", "2", "--concurrency", "2"]);
    let busy: Vec<String> = (0..8).map(|i| format!("busy-{i}")).collect();
    let other: Vec<String> = (0..2).map(|i| format!("other-{i}")).collect();
    for (names, url) in [(&busy, &env.vault_url), (&other, &env.purgeable_vault_url)] {
        for name in names {
            scenario.create_vaultkey(name, url, "  keyType: EC\n").await;
        }
    }
    for name in &other {
        scenario.wait_ready(name, "True").await;
    }
    let queued: Vec<VaultKey> = scenario
        .vaultkeys()
        .await
        .into_iter()
        .filter(|vk| busy.contains(&vk.name_any()) && !converged(vk))
        .collect();
    assert!(
        queued.len() >= 4,
        "the second vault's keys waited for the first vault's: only {} of 8 still queue",
        queued.len()
    );
    let reasons: Vec<String> = queued.iter().map(describe).collect();
    assert!(
        // A queued key may not have had its first reconcile yet (no condition at all).
        queued
            .iter()
            .any(|vk| vk.ready_condition().is_some_and(|c| c.reason == "Paced")),
        "a queued key says what it waits for: {reasons:#?}"
    );

    let all: Vec<String> = busy.iter().chain(&other).cloned().collect();
    scenario
        .wait_converged(&all, &[], Duration::from_secs(120))
        .await;
    for (names, url) in [(&busy, &env.vault_url), (&other, &env.purgeable_vault_url)] {
        for name in names {
            let key = scenario.key_name(name);
            let facts = key_facts(env, vault_name(env, url), &key).await.unwrap();
            assert_eq!(facts.versions, 1, "{key}: {facts:?}");
            let events = scenario.events(name).await;
            assert!(
                events.iter().all(|(reason, _)| reason != "Paced"),
                "pacing is not a warning: {events:?}"
            );
        }
    }
    let stats = Stats::read(env).await.since(&before);
    assert_eq!(
        stats.requests.get(&("create_key".to_string(), 429)),
        None,
        "{stats:?}"
    );
    assert!(operator.sum("vaultkey_keyvault_paced_total", &[]).await >= 1.0);
}

// =============================================================================================
// 2. Crashes
// =============================================================================================

/// Distinct key materials (different public keys) an imported key cycles through.
const RSA_MATERIALS: &[&str] = &[
    "azure_doc_rsa.jwk.json",
    "rsa2048_pkcs8.pem",
    "rsa4096_pkcs8.pem",
];
const EC_MATERIALS: &[&str] = &[
    "ec_p256.jwk.json",
    "ec_p384_pkcs8.pem",
    "ec_p521.jwk.json",
    "ec_secp256k1.jwk.json",
];

/// Imported keys are every fourth; half of them RSA, half EC.
fn import_is_rsa(i: usize) -> bool {
    i % 8 == 3
}

fn materials(i: usize) -> &'static [&'static str] {
    if import_is_rsa(i) {
        RSA_MATERIALS
    } else {
        EC_MATERIALS
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Key Vault generates the key; rotated through rotateToken.
    Generated,
    /// Imported from a Secret; a material change imports a new version.
    Imported,
}

struct Tracked {
    name: String,
    key: String,
    vault: &'static str,
    kind: Kind,
    deletable: bool,
    token: u32,
    /// Index into the material list of its kind (imported keys).
    material: usize,
    expected_versions: usize,
    deleted: bool,
}

/// SIGKILL the operator at random moments while it creates, rotates, imports and deletes
/// VaultKeys; after the last restart everything converges with exactly the versions asked
/// for, deleted VaultKeys are gone (no leaked finalizer) and their keys soft-deleted.
#[tokio::test(flavor = "multi_thread")]
async fn operator_crashes_lose_and_duplicate_nothing() {
    let scenario = Scenario::shared("crash").await;
    let env = &scenario.env;
    let n = size("VAULTKEY_RELIABILITY_KEYS", 60);
    let crashes = size("VAULTKEY_RELIABILITY_CRASHES", 5);
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let flags = [
        "--resync-seconds",
        "3",
        "--request-timeout-seconds",
        "10",
        "--creates-per-10s",
        "200",
    ];

    let mut tracked = Vec::new();
    for i in 0..n {
        let name = format!("c{i:03}");
        let key = scenario.key_name(&name);
        let (url, kind) = match i % 4 {
            0 => (&env.vault_url, Kind::Generated),
            1 => (&env.purgeable_vault_url, Kind::Generated),
            2 => (&env.vault_url, Kind::Generated),
            _ => (&env.vault_url, Kind::Imported),
        };
        tracked.push(Tracked {
            name,
            key,
            vault: vault_name(env, url),
            kind,
            deletable: i % 3 == 0,
            token: 0,
            material: 0,
            expected_versions: 1,
            deleted: false,
        });
    }
    let manifest_of = |i: usize, t: &Tracked| -> String {
        let url = if t.vault == "purgeable" {
            &env.purgeable_vault_url
        } else {
            &env.vault_url
        };
        let deletion = if t.deletable {
            "  deletionPolicy: Delete\n"
        } else {
            ""
        };
        let body = match (t.kind, i % 4) {
            (Kind::Imported, _) => format!(
                "  keyType: {}\n  import: {{secretRef: {{name: m-{}, key: key}}}}\n",
                if import_is_rsa(i) { "RSA" } else { "EC" },
                t.name
            ),
            (_, 0) => format!("  keyType: EC\n  curve: P-384\n  rotateToken: r0\n{POLICY}"),
            (_, 1) => format!("  keyType: RSA\n  keySize: 2048\n{POLICY}"),
            _ => "  keyType: oct-HSM\n  keySize: 256\n  rotateToken: r0\n".to_owned(),
        };
        manifest(&t.name, url, &t.key, &format!("{body}{deletion}"))
    };

    let (mut rotations, mut reimports, mut deletions) = (0, 0, 0);
    let mut kill_points = Vec::new();
    let mut unfinished_at_kill = Vec::new();
    let started = Instant::now();
    for round in 0..crashes {
        // This round's changes, decided while the operator is down (a quiet snapshot): only
        // keys that have converged are changed, so each change asks for exactly one thing.
        let mut changes = Vec::new();
        if round > 0 {
            let items = index_by_name(scenario.vaultkeys().await);
            for (i, t) in tracked.iter_mut().enumerate() {
                if t.deleted {
                    continue;
                }
                let Some(vk) = items.get(&t.name) else {
                    continue;
                };
                if !converged(vk) {
                    continue;
                }
                // An imported key is settled once the vault holds its Secret's current
                // material (the operator reads the Secret at resyncs, so a change takes a
                // moment).
                if t.kind == Kind::Imported {
                    let current = KeyMaterial::parse(&fixture(materials(i)[t.material])).unwrap();
                    let held = key_facts(env, t.vault, &t.key)
                        .await
                        .and_then(|f| f.latest_tags.get(IMPORTED_MATERIAL_TAG).cloned());
                    if held.as_deref() != Some(current.public_thumbprint().as_str()) {
                        continue;
                    }
                }
                match rng.random_range(0..10) {
                    // Delete (Delete policy only: the key is soft-deleted).
                    0 | 1 if t.deletable => {
                        t.deleted = true;
                        deletions += 1;
                        changes.push(Change::Delete(t.name.clone()));
                    }
                    // Rotate / import new material.
                    2..=5 => match t.kind {
                        Kind::Generated => {
                            t.token += 1;
                            t.expected_versions += 1;
                            rotations += 1;
                            changes.push(Change::Rotate(t.name.clone(), format!("r{}", t.token)));
                        }
                        Kind::Imported => {
                            let list = materials(i);
                            t.material = (t.material + 1) % list.len();
                            t.expected_versions += 1;
                            reimports += 1;
                            changes.push(Change::NewMaterial(
                                format!("m-{}", t.name),
                                fixture(list[t.material]),
                            ));
                        }
                    },
                    _ => {}
                }
            }
        }
        let operator = scenario.start_operator(&flags);
        if round == 0 {
            // Creation and first imports happen under the first crashes.
            for (i, t) in tracked.iter().enumerate() {
                if t.kind == Kind::Imported {
                    let m = materials(i)[0];
                    scenario
                        .put_secret(&format!("m-{}", t.name), &fixture(m))
                        .await;
                }
                create(&scenario.client, &scenario.ns, &manifest_of(i, t))
                    .await
                    .expect("VaultKey created");
            }
        } else {
            // All at once, while the new incarnation is starting up.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            futures::future::join_all(
                changes
                    .into_iter()
                    .map(|change| apply_change(&scenario, change)),
            )
            .await;
        }
        // Kill at a random moment, mostly while work is in flight.
        let delay = Duration::from_millis(rng.random_range(50..1500));
        tokio::time::sleep(delay).await;
        let unfinished = scenario.count_unconverged().await;
        operator.sigkill();
        kill_points.push(delay.as_millis() as u64);
        unfinished_at_kill.push(unfinished);
    }

    // The last restart: everything converges.
    let operator = scenario.start_operator(&flags);
    let live: Vec<String> = tracked
        .iter()
        .filter(|t| !t.deleted)
        .map(|t| t.name.clone())
        .collect();
    let gone: Vec<String> = tracked
        .iter()
        .filter(|t| t.deleted)
        .map(|t| t.name.clone())
        .collect();
    let restarted = Instant::now();
    scenario
        .wait_converged(&live, &gone, Duration::from_secs(300))
        .await;
    // Secret changes are read at resyncs: wait until the vault holds every current material.
    for (i, t) in tracked.iter().enumerate() {
        if t.kind != Kind::Imported || t.deleted {
            continue;
        }
        let current = KeyMaterial::parse(&fixture(materials(i)[t.material]))
            .unwrap()
            .public_thumbprint();
        eventually(
            &format!("{}: the vault holds the Secret's current material", t.name),
            Duration::from_secs(60),
            || async {
                let facts = key_facts(env, t.vault, &t.key).await?;
                (facts.latest_tags.get(IMPORTED_MATERIAL_TAG) == Some(&current)).then_some(())
            },
        )
        .await;
    }
    scenario
        .wait_converged(&live, &gone, Duration::from_secs(60))
        .await;
    let recovery = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(7)).await; // two resyncs: nothing more happens

    let items = index_by_name(scenario.vaultkeys().await);
    let (mut lost, mut duplicates, mut missing, mut leaked) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for (i, t) in tracked.iter().enumerate() {
        if t.deleted && items.contains_key(&t.name) {
            leaked += 1;
            problems.push(format!("{}: deleted VaultKey still exists", t.name));
        }
        let Some(facts) = key_facts(env, t.vault, &t.key).await else {
            lost += 1;
            problems.push(format!(
                "{}: key {} missing from vault {}",
                t.name, t.key, t.vault
            ));
            continue;
        };
        if facts.versions != t.expected_versions {
            problems.push(format!(
                "{} ({:?}): {} versions, intent {}",
                t.name, t.kind, facts.versions, t.expected_versions
            ));
        }
        duplicates += facts.versions.saturating_sub(t.expected_versions);
        missing += t.expected_versions.saturating_sub(facts.versions);
        if facts.deleted != t.deleted {
            problems.push(format!(
                "{}: soft-deleted {} but the VaultKey was {}deleted",
                t.name,
                facts.deleted,
                if t.deleted { "" } else { "not " }
            ));
        }
        if !facts.all_enabled {
            problems.push(format!("{}: a version is disabled", t.name));
        }
        if !t.deleted {
            let status = items[&t.name].status.clone().unwrap_or_default();
            if status.current_version.as_deref() != Some(facts.latest.as_str()) {
                problems.push(format!(
                    "{}: status and vault disagree on the current version",
                    t.name
                ));
            }
            if t.kind == Kind::Imported {
                let held = KeyMaterial::parse(&fixture(materials(i)[t.material]))
                    .unwrap()
                    .fingerprint();
                if status.imported_material.as_deref() != Some(held.as_str()) {
                    problems.push(format!(
                        "{}: status.importedMaterial is {:?}, the vault holds {held}",
                        t.name, status.imported_material
                    ));
                }
            }
        }
    }
    figure(
        "operator_crashes",
        json!({
            "keys": n,
            "sigkills": crashes,
            "seed": seed,
            "kill_after_ms": kill_points,
            "vaultkeys_unfinished_at_each_kill": unfinished_at_kill,
            "manual_rotations": rotations,
            "material_changes": reimports,
            "deletions": deletions,
            "operator_incarnations": crashes + 1,
            "total_seconds": started.elapsed().as_secs_f64(),
            "recovery_seconds_after_last_restart": recovery.as_secs_f64(),
            "keys_lost": lost,
            "duplicate_versions": duplicates,
            "missing_versions": missing,
            "leaked_finalizers": leaked,
        }),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        rotations > 0 && deletions > 0,
        "the crash rounds exercised rotation and deletion (rotations {rotations}, deletions {deletions})"
    );
    drop(operator);
}

/// A change the crash test makes to the world.
enum Change {
    /// Delete the VaultKey.
    Delete(String),
    /// Set a new rotateToken.
    Rotate(String, String),
    /// Put new material into the import Secret.
    NewMaterial(String, Vec<u8>),
}

async fn apply_change(scenario: &Scenario, change: Change) {
    match change {
        Change::Delete(name) => {
            scenario
                .api
                .delete(&name, &DeleteParams::default())
                .await
                .expect("VaultKey deleted");
        }
        Change::Rotate(name, token) => {
            scenario
                .patch_spec(&name, json!({ "rotateToken": token }))
                .await;
        }
        Change::NewMaterial(secret, material) => scenario.put_secret(&secret, &material).await,
    }
}

// =============================================================================================
// 3. API server faults
// =============================================================================================

/// Reconciles that failed on an error from the API server, by the operator's own count.
async fn kubernetes_errors(operator: &OperatorProcess) -> f64 {
    operator
        .sum(
            "vaultkey_reconcile_errors_total",
            &["reason=\"KubernetesError\""],
        )
        .await
}

/// kube-apiserver restarted while the operator is reconciling: the process keeps running,
/// reconnects, finishes what it was doing and follows changes made after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn apiserver_restart_mid_reconcile_is_survived() {
    let scenario = Scenario::exclusive("apirestart").await;
    let env = &scenario.env;
    let mut operator = scenario.start_operator(&["--resync-seconds", "3"]);
    // Mostly HSM keys: the operator's HSM create budget (9 per 10 s per vault) keeps it busy
    // with them for a while, so the API server goes away in the middle of the work.
    let first: Vec<String> = (0..30).map(|i| format!("a{i:02}")).collect();
    for (i, name) in first.iter().enumerate() {
        let body = match i % 3 {
            0 => format!("  keyType: EC\n  rotateToken: x0\n{POLICY}"),
            1 => "  keyType: oct-HSM\n  keySize: 256\n".to_owned(),
            _ => "  keyType: oct-HSM\n  rotateToken: x0\n".to_owned(),
        };
        scenario.create_vaultkey(name, &env.vault_url, &body).await;
    }
    // Mid-reconcile: right after the creates, while the operator is working through them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unfinished_before = scenario.count_unconverged().await;
    let restart = restart_apiserver(Duration::from_secs(3)).await;
    let unfinished_after = scenario.count_unconverged().await;
    assert!(
        operator.is_running(),
        "the operator survived the API server's absence"
    );
    let converge_first = scenario
        .wait_converged(&first, &[], Duration::from_secs(120))
        .await;

    // New changes after the restart are followed: new VaultKeys and rotations.
    let after_restart = Instant::now();
    let second: Vec<String> = (0..4).map(|i| format!("b{i:02}")).collect();
    for name in &second {
        scenario
            .create_vaultkey(name, &env.vault_url, "  keyType: EC\n")
            .await;
    }
    for name in ["a00", "a02", "a03"] {
        scenario
            .patch_spec(name, json!({"rotateToken": "x1"}))
            .await;
    }
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let converge_changes = scenario
        .wait_converged(&all, &[], Duration::from_secs(120))
        .await;

    // A second restart, with the operator idle (its watches must be re-established again).
    restart_apiserver(Duration::from_secs(1)).await;
    scenario
        .patch_spec("b00", json!({"tags": {"after": "second-restart"}}))
        .await;
    let vault = env.vault(&env.vault_url);
    let key = scenario.key_name("b00");
    let change_made = Instant::now();
    eventually(
        "a change after the second restart reaches the vault",
        Duration::from_secs(90),
        || async {
            let k = vault.get_key(&key).await.ok()??;
            (k.tags.get("after").map(String::as_str) == Some("second-restart")).then_some(())
        },
    )
    .await;
    let followed_after_second_restart = change_made.elapsed();
    scenario
        .wait_converged(&all, &[], Duration::from_secs(60))
        .await;

    for name in &all {
        let expected = if ["a00", "a02", "a03"].contains(&name.as_str()) {
            2
        } else {
            1
        };
        let facts = key_facts(env, "default", &scenario.key_name(name))
            .await
            .expect("key exists");
        assert_eq!(facts.versions, expected, "{name}: versions");
    }
    assert!(
        operator.is_running(),
        "the operator kept running through both restarts"
    );
    let kube_errors = kubernetes_errors(&operator).await;
    figure(
        "apiserver_restart",
        json!({
            "restart_seconds_including_3s_down": restart.as_secs_f64(),
            "vaultkeys_unfinished_when_the_restart_began": unfinished_before,
            "vaultkeys_unfinished_when_it_was_back": unfinished_after,
            "converged_after_restart_seconds": converge_first.as_secs_f64(),
            "changes_after_restart_converged_seconds": converge_changes.as_secs_f64(),
            "since_changes_seconds": after_restart.elapsed().as_secs_f64(),
            "second_restart_change_followed_seconds": followed_after_second_restart.as_secs_f64(),
            "reconcile_errors_kubernetes": kube_errors,
            "operator_restarts": 0,
        }),
    );
}

/// Writes that race the operator. Its status writes are server-side apply with force (no
/// resourceVersion precondition, so never a 409); what can conflict is its finalizer patch, a
/// JSON patch whose `test` names the finalizer list it read: another controller rewriting the
/// list in between makes the API server refuse it (422), and the operator must retry. Also
/// spec updates in quick succession while it reconciles (a status write then describes an
/// older generation and must be followed by another reconcile). Everything converges to the
/// last spec, with one version per key.
#[tokio::test(flavor = "multi_thread")]
async fn conflicting_writes_are_retried_until_the_last_spec_is_served() {
    let scenario = Scenario::shared("conflict").await;
    let env = &scenario.env;
    let api = &scenario.api;
    let mut operator = scenario.start_operator(&["--resync-seconds", "3"]);
    let vault = env.vault(&env.vault_url);

    // Spec updates in quick succession through optimistic-concurrency replaces (each one a
    // read-modify-write that itself gets 409 when the operator's status write lands between).
    let key = scenario.key_name("busy");
    scenario
        .create_vaultkey("busy", &env.vault_url, "  keyType: EC\n")
        .await;
    let mut our_conflicts = 0;
    for i in 0..15 {
        loop {
            let mut vk = api.get("busy").await.unwrap();
            vk.spec.tags.insert("round".into(), i.to_string());
            match api.replace("busy", &PostParams::default(), &vk).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => our_conflicts += 1,
                Err(e) => panic!("replace: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..200))).await;
    }
    scenario
        .wait_converged(&["busy".to_string()], &[], Duration::from_secs(60))
        .await;
    let k = vault.get_key(&key).await.unwrap().unwrap();
    assert_eq!(
        k.tags.get("round").map(String::as_str),
        Some("14"),
        "the last spec is served"
    );
    assert_eq!(key_facts(env, "default", &key).await.unwrap().versions, 1);

    // Another controller keeps rewriting the finalizer list while the operator adds its own.
    // The operator is paused (SIGSTOP) while the VaultKey is created and rewritten, so when it
    // resumes, the object it acts on is already stale: its finalizer patch (a JSON patch whose
    // `test` names the list it read) is refused, and must be retried.
    let contested: Vec<String> = (0..8).map(|i| format!("contested-{i}")).collect();
    operator.signal("STOP");
    for name in &contested {
        let mut vk = vaultkey_from_yaml(&manifest(
            name,
            &env.vault_url,
            &scenario.key_name(name),
            // Delete: a policy that touches the vault, so the operator holds a finalizer.
            "  keyType: EC\n  deletionPolicy: Delete\n",
        ));
        vk.metadata.finalizers = Some(vec!["example.com/hold-0".into()]);
        api.create(&PostParams::default(), &vk).await.unwrap();
    }
    for i in 1..=10 {
        for name in &contested {
            rewrite_foreign_finalizer(api, name, i).await;
        }
    }
    let flappers: Vec<_> = contested
        .iter()
        .map(|name| {
            let (api, name) = (api.clone(), name.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(3);
                let mut i = 11;
                while Instant::now() < deadline {
                    rewrite_foreign_finalizer(&api, &name, i).await;
                    i += 1;
                }
            })
        })
        .collect();
    operator.signal("CONT");
    for flapper in flappers {
        flapper.await.unwrap();
    }
    scenario
        .wait_converged(&contested, &[], Duration::from_secs(60))
        .await;
    for name in &contested {
        let vk = api.get(name).await.unwrap();
        assert!(
            vk.finalizers().iter().any(|f| f == "vaultkey.dev/cleanup"),
            "{name}: {:?}",
            vk.finalizers()
        );
        let facts = key_facts(env, "default", &scenario.key_name(name))
            .await
            .unwrap();
        assert_eq!(facts.versions, 1, "{name}");
        // Let the object go again (no other controller will remove its finalizer).
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["vaultkey.dev/cleanup"]}})),
        )
        .await
        .unwrap();
    }

    let kube_errors = kubernetes_errors(&operator).await;
    figure(
        "conflicting_writes",
        json!({
            "spec_updates": 15,
            "conflicts_seen_by_the_test_writer": our_conflicts,
            "operator_reconcile_errors_kubernetes": kube_errors + 0.0,
        }),
    );
    assert!(
        kube_errors >= 1.0,
        "the finalizer patches met no conflict: the race was not exercised"
    );
    assert!(operator.is_running());
}

/// Another controller's write: replaces its own finalizer (`example.com/hold-0|1`), keeping
/// everyone else's.
async fn rewrite_foreign_finalizer(api: &Api<VaultKey>, name: &str, i: u32) {
    let Ok(vk) = api.get(name).await else {
        return;
    };
    let mut finalizers: Vec<String> = vk
        .finalizers()
        .iter()
        .filter(|f| !f.starts_with("example.com/"))
        .cloned()
        .collect();
    finalizers.push(format!("example.com/hold-{}", i % 2));
    let _ = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/metadata/resourceVersion", "value": vk.resource_version()},
                    {"op": "replace", "path": "/metadata/finalizers", "value": finalizers},
                ]))
                .unwrap(),
            ),
        )
        .await;
}

// =============================================================================================
// 4. Deletion safety
// =============================================================================================

/// Retain keys survive the deletion of their VaultKeys, and stopping the operator (SIGKILL or
/// SIGTERM) never touches any key, whatever its policy.
#[tokio::test(flavor = "multi_thread")]
async fn retain_and_operator_removal_never_delete_keys() {
    let scenario = Scenario::shared("retain").await;
    let env = &scenario.env;
    let api = &scenario.api;
    let operator = scenario.start_operator(&["--resync-seconds", "3"]);
    let mut names = Vec::new();
    for (i, body) in [
        "  keyType: EC\n",
        "  keyType: RSA\n  deletionPolicy: Retain\n",
        "  keyType: oct-HSM\n  deletionPolicy: Retain\n",
        "  keyType: EC\n  deletionPolicy: Delete\n",
        "  keyType: EC\n  deletionPolicy: Purge\n",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("r{i}");
        scenario
            .create_vaultkey(&name, &env.purgeable_vault_url, body)
            .await;
        names.push(name);
    }
    scenario
        .wait_converged(&names, &[], Duration::from_secs(60))
        .await;

    // The operator goes away, abruptly and gracefully: nothing happens to any key.
    operator.sigkill();
    let operator = scenario.start_operator(&["--resync-seconds", "3"]);
    scenario
        .wait_converged(&names, &[], Duration::from_secs(60))
        .await;
    let pid = operator.pid().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_keys_as_created(&scenario, "purgeable", &names, "key exists").await;
    drop(operator);

    // Retain: deleting the VaultKeys leaves the keys.
    let operator = scenario.start_operator(&["--resync-seconds", "3"]);
    let retained = ["r0", "r1", "r2"];
    for name in retained {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let gone: Vec<String> = retained.iter().map(|s| s.to_string()).collect();
    scenario
        .wait_converged(&[], &gone, Duration::from_secs(60))
        .await;
    assert_keys_as_created(&scenario, "purgeable", &gone, "Retain keeps the key").await;
    drop(operator);
}

/// Asserts that the key of each VaultKey in `names` is as it was created: still there (else
/// panics with `expectation`), not deleted, one version, enabled.
async fn assert_keys_as_created(
    scenario: &Scenario,
    vault: &str,
    names: &[String],
    expectation: &str,
) {
    for name in names {
        let facts = key_facts(&scenario.env, vault, &scenario.key_name(name))
            .await
            .expect(expectation);
        assert!(
            !facts.deleted && facts.all_enabled && facts.versions == 1,
            "{name}: {facts:?}"
        );
    }
}

/// A VaultKey whose deletion cannot be carried out keeps its finalizer (the key may still
/// exist) and says why, naming the way out: a Delete-policy key whose vault cannot be reached,
/// and a Purge-policy key in a vault with purge protection (purge answers 403 until the
/// retention period, 90 days, has passed).
#[tokio::test(flavor = "multi_thread")]
async fn blocked_deletion_is_explained_on_the_vaultkey() {
    let scenario = Scenario::shared("blocked").await;
    let env = &scenario.env;
    let api = &scenario.api;
    let forwarder = VaultForwarder::start(&env.vault_url).await;
    let operator =
        scenario.start_operator(&["--resync-seconds", "3", "--request-timeout-seconds", "3"]);
    let unreachable = scenario.key_name("unreachable");
    let protected = scenario.key_name("protected");
    scenario
        .create_vaultkey(
            "unreachable",
            &forwarder.url,
            "  keyType: EC\n  deletionPolicy: Delete\n",
        )
        .await;
    // The default vault is Recoverable: purge protection on.
    scenario
        .create_vaultkey(
            "protected",
            &env.vault_url,
            "  keyType: EC\n  deletionPolicy: Purge\n",
        )
        .await;
    let names = vec!["unreachable".to_string(), "protected".to_string()];
    scenario
        .wait_converged(&names, &[], Duration::from_secs(60))
        .await;

    forwarder.cut();
    for name in &names {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually(
        "the operator tried to reach the vault",
        Duration::from_secs(30),
        || async { (forwarder.refused() >= 2).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut unexplained = Vec::new();
    for (name, key) in [("unreachable", &unreachable), ("protected", &protected)] {
        let vk = api
            .get(name)
            .await
            .expect("the VaultKey is kept while its key may exist");
        assert!(vk.metadata.deletion_timestamp.is_some());
        assert!(
            vk.finalizers().iter().any(|f| f == "vaultkey.dev/cleanup"),
            "{name}"
        );
        let facts = key_facts(env, "default", key)
            .await
            .expect("the key is still there");
        assert_eq!(
            facts.deleted,
            name == "protected",
            "{name}: soft-deleted only where the vault could be reached"
        );

        // A person looking at the VaultKey must learn why it stays and how to let it go.
        let condition = vk
            .ready_condition()
            .map(|c| format!("{} {}: {}", c.status, c.reason, c.message))
            .unwrap_or_default();
        let events = scenario.events(name).await;
        let explained = condition.contains("vaultkey.dev/abandon")
            || events
                .iter()
                .any(|(_, note)| note.contains("vaultkey.dev/abandon"));
        if !explained {
            unexplained.push(format!(
                "{name}: deletion is blocked, but neither the Ready condition ({condition}) nor an event ({events:?}) says so or names the vaultkey.dev/abandon annotation"
            ));
        }
    }
    assert!(unexplained.is_empty(), "{}", unexplained.join("\n"));
    drop(operator);
}

/// The abandon annotation lets a blocked VaultKey go without a single request to the vault.
#[tokio::test(flavor = "multi_thread")]
async fn abandon_annotation_releases_without_touching_the_vault() {
    let scenario = Scenario::shared("abandon").await;
    let env = &scenario.env;
    let api = &scenario.api;
    let forwarder = VaultForwarder::start(&env.vault_url).await;
    let operator = scenario.start_operator(&[
        "--resync-seconds",
        "3",
        "--request-timeout-seconds",
        "3",
        "--log-level",
        "trace",
    ]);
    let key = scenario.key_name("gone");
    scenario
        .create_vaultkey(
            "gone",
            &forwarder.url,
            "  keyType: EC\n  deletionPolicy: Purge\n",
        )
        .await;
    scenario
        .wait_converged(&["gone".to_string()], &[], Duration::from_secs(60))
        .await;

    forwarder.cut();
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    // Stuck: the operator keeps trying.
    eventually(
        "the operator tried to reach the vault",
        Duration::from_secs(30),
        || async { (forwarder.refused() >= 2).then_some(()) },
    )
    .await;
    assert!(api.get_opt("gone").await.unwrap().is_some());
    // Annotate right after a failed attempt, so no attempt is in flight.
    let seen = forwarder.refused();
    eventually(
        "another failed attempt",
        Duration::from_secs(60),
        || async { (forwarder.refused() > seen).then_some(()) },
    )
    .await;
    let before = forwarder.refused();
    let log_offset = operator.logs().len();
    api.patch(
        "gone",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"vaultkey.dev/abandon": "true"}}})),
    )
    .await
    .unwrap();
    let released = Instant::now();
    scenario
        .wait_converged(&[], &["gone".to_string()], Duration::from_secs(30))
        .await;
    let release_time = released.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        forwarder.refused(),
        before,
        "no connection to the vault after the annotation"
    );
    let later = operator.logs()[log_offset..].to_owned();
    assert!(
        later.contains("abandoned: the vault is not touched"),
        "{later}"
    );
    // Requests sent after the annotation, by the SDK's line at send time: the error lines of
    // the attempt that failed just before it can reach the log after the offset was taken.
    let sends = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|line| {
                line.contains("sending request") && line.contains(&format!("/keys/{key}"))
            })
            .map(str::to_owned)
            .collect()
    };
    assert!(
        !sends(&operator.logs()[..log_offset]).is_empty(),
        "the attempts before the annotation are logged as sends (else the check below sees nothing)"
    );
    let sent_after = sends(&later);
    assert!(
        sent_after.is_empty(),
        "no request for the key after the annotation: {sent_after:#?}"
    );
    let facts = key_facts(env, "default", &key)
        .await
        .expect("the key is left as it is");
    assert!(!facts.deleted && facts.versions == 1);
    assert_eq!(
        operator
            .sum(
                "vaultkey_keyvault_requests_total",
                &["operation=\"delete_key\""]
            )
            .await,
        0.0
    );
    figure(
        "abandon",
        json!({"released_seconds_after_annotation": release_time.as_secs_f64(), "vault_connections_after_annotation": 0}),
    );
}

/// A vault outside the namespace's allowance is never called, not even to delete: a
/// Delete-policy VaultKey naming it is let go and the key (even one tagged for it) is left.
#[tokio::test(flavor = "multi_thread")]
async fn denied_vault_is_not_touched_on_deletion() {
    let scenario = Scenario::shared("denied").await;
    let env = &scenario.env;
    let api = &scenario.api;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.yaml");
    std::fs::write(
        &access,
        format!(
            "default: []\nnamespaces:\n  {}: ['{}']\n",
            scenario.ns, env.purgeable_vault_url
        ),
    )
    .unwrap();
    let operator = scenario.start_operator(&[
        "--resync-seconds",
        "3",
        "--log-level",
        "trace",
        "--vault-access-file",
        access.to_str().unwrap(),
    ]);
    // A key in the denied vault that carries this VaultKey's owner tag (the policy changed
    // after it was created, or someone forged the tag).
    let key = scenario.key_name("fenced");
    let vault = env.vault(&env.vault_url);
    vault
        .create_key(
            &key,
            &ec_key(KeyProperties {
                tags: Some(
                    [
                        (OWNER_TAG.to_string(), format!("{}/fenced", scenario.ns)),
                        (OWNER_UID_TAG.to_string(), "x".into()),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    scenario
        .create_vaultkey(
            "fenced",
            &env.vault_url,
            "  keyType: EC\n  deletionPolicy: Purge\n",
        )
        .await;
    let vk = scenario.wait_ready("fenced", "False").await;
    assert_eq!(ready_reason(&vk).0, "VaultNotAllowed");
    api.delete("fenced", &DeleteParams::default())
        .await
        .unwrap();
    scenario
        .wait_converged(&[], &["fenced".to_string()], Duration::from_secs(30))
        .await;
    let facts = key_facts(env, "default", &key).await.unwrap();
    assert!(!facts.deleted && facts.versions == 1, "{facts:?}");
    assert!(
        !operator.logs().contains(&format!("/keys/{key}")),
        "no request for the fenced key"
    );
}

// =============================================================================================
// 5. Bad input
// =============================================================================================

/// Import Secrets that are not usable private keys give Ready=False InvalidKeyMaterial, with a
/// message naming the Secret and containing none of its content, and nothing in the vault.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_import_secrets_are_reported_without_their_content() {
    let scenario = Scenario::shared("badsecret").await;
    let env = &scenario.env;
    let operator = scenario.start_operator(&["--resync-seconds", "3", "--log-level", "trace"]);

    let mut rng = StdRng::seed_from_u64(seed());
    let mut random = vec![0u8; 4096];
    rng.fill(&mut random[..]);
    // Over 64 KiB: a real key, padded with PEM-looking noise.
    let mut oversized = fixture("rsa2048_pkcs8.pem");
    while oversized.len() <= 70 * 1024 {
        let mut line = [0u8; 48];
        rng.fill(&mut line[..]);
        oversized.extend(
            base64::engine::general_purpose::STANDARD
                .encode(line)
                .into_bytes(),
        );
        oversized.push(b'\n');
    }
    let pem = fixture("rsa2048_pkcs8.pem");
    let jwk = fixture("azure_doc_rsa.jwk.json");
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("oversized", "RSA", oversized),
        ("truncated-pem", "RSA", pem[..pem.len() / 2].to_vec()),
        ("truncated-jwk", "RSA", jwk[..jwk.len() * 3 / 5].to_vec()),
        ("binary", "RSA", random),
        ("certificate", "EC", fixture("ec_p256_cert.pem")),
        ("public-key", "RSA", fixture("rsa2048_public.pem")),
        ("public-jwk", "EC", br#"{"kty":"EC","crv":"P-256","x":"GPBe3lzsNYOIoRzsDe7TFXSQZVfyAAZDY8-RLiksl1g","y":"7Uxw8xE9OI3y3aRa0jXtBBFtzxy_-232GbRbS3-PX2c"}"#.to_vec()),
        ("encrypted", "RSA", fixture("rsa2048_encrypted_pkcs8.pem")),
        ("rsa-1024", "RSA", fixture("rsa1024_pkcs1.pem")),
        ("curve-p224", "EC", fixture("ec_secp224r1_pkcs8.pem")),
        ("brainpool", "EC", fixture("ec_brainpool_pkcs8.pem")),
        ("ed25519", "EC", fixture("ed25519_pkcs8.pem")),
        ("symmetric-jwk", "RSA", br#"{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#.to_vec()),
        ("wrong-types-jwk", "RSA", br#"{"kty":"RSA","n":12345,"e":true,"d":["abcdefghijklmnopqrstuvwxyz0123456789"]}"#.to_vec()),
        ("empty", "RSA", Vec::new()),
        ("yaml", "EC", b"kty: EC\ncrv: P-256\nd: xo_7xiuPDEQOAoW1iEHNlXjddXwUP3N8R6cWCSJzRPc\n".to_vec()),
    ];
    for (name, key_type, content) in &cases {
        scenario.put_secret(&format!("s-{name}"), content).await;
        scenario
            .create_vaultkey(
                name,
                &env.vault_url,
                &format!(
                    "  keyType: {key_type}\n  import: {{secretRef: {{name: s-{name}, key: key}}}}\n"
                ),
            )
            .await;
    }
    let mut messages = Vec::new();
    for (name, _, content) in &cases {
        let vk = scenario.wait_ready(name, "False").await;
        let (reason, message) = ready_reason(&vk);
        assert_eq!(reason, "InvalidKeyMaterial", "{name}: {message}");
        assert!(
            message.contains(&format!("Secret {}/s-{name}", scenario.ns)),
            "{name}: the message names the Secret: {message}"
        );
        let status_text = serde_json::to_string(&vk.status).unwrap();
        let events_text = format!("{:?}", scenario.events(name).await);
        for piece in secret_pieces(content) {
            assert!(
                !status_text.contains(&piece),
                "{name}: content in status: {message}"
            );
            assert!(!events_text.contains(&piece), "{name}: content in an event");
        }
        assert!(
            key_facts(env, "default", &scenario.key_name(name))
                .await
                .is_none(),
            "{name}: nothing imported"
        );
        messages.push(format!("{name}: {message}"));
    }
    let log = operator.logs();
    for (name, _, content) in &cases {
        for piece in secret_pieces(content) {
            assert!(
                !log.contains(&piece),
                "{name}: Secret content in the operator's trace log"
            );
        }
    }
    figure(
        "bad_import_secrets",
        json!({"secrets": cases.len(), "all_invalid_key_material": true, "messages": messages}),
    );
}

/// A corpus of invalid manifests, applied with kubectl to the real API server: each is refused,
/// and the refusal names the field at fault.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_manifest_corpus_is_rejected_naming_the_field() {
    let scenario = Scenario::shared("corpus").await;
    let env = &scenario.env;
    let long_name = "k".repeat(128);
    let long_token = "t".repeat(254);
    let long_url = format!("https://{}.vault.azure.net", "v".repeat(520));
    let thirteen_tags = (0..13)
        .map(|i| format!("t{i}: v"))
        .collect::<Vec<_>>()
        .join(", ");
    // (spec lines after `spec:`, what the message must contain)
    let cases: Vec<(String, &str)> = vec![
        ("  keyType: RSA\n".into(), "spec.vaultUrl: Required value"),
        ("  vaultUrl: https://v.vault.azure.net\n".into(), "spec.keyType: Required value"),
        ("  vaultUrl: http://v.vault.azure.net\n  keyType: RSA\n".into(), "spec.vaultUrl"),
        ("  vaultUrl: https://v.vault.azure.net/keys/x\n  keyType: RSA\n".into(), "spec.vaultUrl"),
        (format!("  vaultUrl: {long_url}\n  keyType: RSA\n"), "spec.vaultUrl"),
        ("  vaultUrl: [https://v.vault.azure.net]\n  keyType: RSA\n".into(), "spec.vaultUrl"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: oct\n".into(), "spec.keyType: Unsupported value"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  keySize: big\n".into(), "spec.keySize"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  keySize: 2048.5\n".into(), "spec.keySize"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: oct-HSM\n  keySize: 2048\n".into(), "oct-HSM keySize must be one of [128, 192, 256]"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: EC\n  curve: P-192\n".into(), "spec.curve: Unsupported value"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: EC\n  publicExponent: 3\n".into(), "publicExponent applies only to RSA"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  publicExponent: 1\n".into(), "spec.publicExponent"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  keyOps: [encrypt, frobnicate]\n".into(), "spec.keyOps[1]: Unsupported value"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  keyOps: encrypt\n".into(), "spec.keyOps"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  keyOps: [encrypt, decrypt, sign, verify, wrapKey, unwrapKey, import, export, encrypt]\n".into(), "spec.keyOps"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  attributes: {enabled: maybe}\n".into(), "spec.attributes.enabled"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  attributes: {expiresOn: tomorrow}\n".into(), "spec.attributes.expiresOn"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  attributes: {notBefore: '2027-13-45T00:00:00Z'}\n".into(), "spec.attributes.notBefore"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  attributes: {expiresAfter: 1y}\n".into(), "spec.attributes.expiresAfter"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  attributes: {expiresOn: '2027-01-01T00:00:00Z', expiresAfter: P1Y}\n".into(), "set either expiresOn or expiresAfter"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  attributes: {expiresOn: '2027-01-01T00:00:00Z', notBefore: '2028-01-01T00:00:00Z'}\n".into(), "notBefore must be earlier than expiresOn"),
        (format!("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  tags: {{{thirteen_tags}}}\n"), "spec.tags"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  tags: {team: [a, b]}\n".into(), "spec.tags.team"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  tags: {vaultkey.dev/owner-uid: x}\n".into(), "reserved"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  releasePolicy: {immutable: true}\n".into(), "spec.releasePolicy.data: Required value"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Explode, timeAfterCreate: P30D}]}\n".into(), "spec.rotationPolicy.lifetimeActions[0].action: Unsupported value"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate}]}\n".into(), "set exactly one of timeAfterCreate and timeBeforeExpiry"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D, timeBeforeExpiry: P10D}]}\n".into(), "set exactly one of timeAfterCreate and timeBeforeExpiry"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotationPolicy: {lifetimeActions: [{action: Rotate, timeBeforeExpiry: P10D}]}\n".into(), "timeBeforeExpiry needs expiresIn"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Notify, timeBeforeExpiry: P10D}, {action: Notify, timeBeforeExpiry: P20D}]}\n".into(), "at most one Notify action"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Notify, timeBeforeExpiry: P10D}, {action: Rotate, timeAfterCreate: P30D}, {action: Rotate, timeAfterCreate: P40D}]}\n".into(), "spec.rotationPolicy.lifetimeActions: Too many"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: 30d}]}\n".into(), "spec.rotationPolicy.lifetimeActions[0].timeAfterCreate"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Notify, timeBeforeExpiry: 1 week}]}\n".into(), "spec.rotationPolicy.lifetimeActions[0].timeBeforeExpiry"),
        (format!("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotateToken: {long_token}\n"), "spec.rotateToken"),
        (format!("  vaultUrl: https://v.vault.azure.net\n  keyName: {long_name}\n  keyType: RSA\n"), "spec.keyName"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyName: ''\n  keyType: RSA\n".into(), "spec.keyName"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  import: {secretRef: {name: '', key: k}}\n".into(), "spec.import.secretRef.name"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  import: {secretRef: {name: s}}\n".into(), "spec.import.secretRef.key: Required value"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: oct-HSM\n  import: {secretRef: {name: s, key: k}}\n".into(), "import supports RSA and EC material only"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: EC\n  curve: P-256\n  import: {secretRef: {name: s, key: k}}\n".into(), "an imported key takes its size or curve from the material"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  rotateToken: a\n  import: {secretRef: {name: s, key: k}}\n".into(), "rotateToken makes Key Vault generate new material"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  import: {secretRef: {name: s, key: k}}\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D}]}\n".into(), "an imported key cannot have a Rotate action"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  adopt: yes-please\n".into(), "spec.adopt"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  deletionPolicy: Shred\n".into(), "spec.deletionPolicy: Unsupported value"),
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  colour: blue\n".into(), "spec.colour"),
        // Import Secrets come from the VaultKey's own namespace: there is no field to name another.
        ("  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  import: {secretRef: {name: s, key: k, namespace: other-team}}\n".into(), "spec.import.secretRef.namespace"),
    ];
    let mut rejected = 0;
    let mut failures = Vec::new();
    for (i, (spec, expected)) in cases.iter().enumerate() {
        let manifest = format!(
            "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: bad-{i}}}\nspec:\n{spec}"
        );
        match kubectl_apply(env, &scenario.ns, &manifest).await {
            Ok(out) => failures.push(format!("#{i} accepted ({out}):\n{spec}")),
            Err(err) if err.contains(expected) => rejected += 1,
            Err(err) => failures.push(format!(
                "#{i} refused without naming {expected:?}:\n{spec}{err}"
            )),
        }
    }
    // Identity fields cannot change once set.
    let api = &scenario.api;
    create(&scenario.client, &scenario.ns, "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {name: fixed}\nspec:\n  vaultUrl: https://v.vault.azure.net\n  keyName: fixed-name\n  keyType: RSA\n")
        .await
        .unwrap();
    let updates = [
        (
            json!({"spec": {"keyName": "other-name"}}),
            "keyName is immutable",
        ),
        (
            json!({"spec": {"keyName": null}}),
            "spec.keyName is immutable",
        ),
        (
            json!({"spec": {"vaultUrl": "https://w.vault.azure.net"}}),
            "vaultUrl is immutable",
        ),
    ];
    for (patch, expected) in &updates {
        match api
            .patch("fixed", &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => failures.push(format!("update {patch} accepted")),
            Err(e) if e.to_string().contains(expected) => rejected += 1,
            Err(e) => failures.push(format!("update {patch} refused without {expected:?}: {e}")),
        }
    }
    let stored = api.list(&Default::default()).await.unwrap().items.len();
    figure(
        "invalid_manifests",
        json!({"manifests": cases.len(), "updates": updates.len(), "rejected_naming_the_field": rejected}),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(stored, 1, "no invalid VaultKey was stored");
}

// =============================================================================================
// 6. Secrets
// =============================================================================================

/// The operator never asks the vault for private material: over imports, re-imports,
/// creation, rotation and deletion, every request it makes is one of the permitted operations
/// (none of release, backup, export), at the emulator and in its own metrics.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_never_asks_the_vault_for_private_material() {
    let scenario = Scenario::shared("noexport").await;
    let env = &scenario.env;
    let before = Stats::read(env).await;
    let operator = scenario.start_operator(&["--resync-seconds", "2"]);
    scenario
        .put_secret("rsa", &fixture("azure_doc_rsa.jwk.json"))
        .await;
    scenario
        .put_secret("ec", &fixture("ec_p384_pkcs8.pem"))
        .await;
    scenario.create_vaultkey("rsa", &env.vault_url, "  keyType: RSA\n  import: {secretRef: {name: rsa, key: key}}\n  deletionPolicy: Delete\n").await;
    scenario.create_vaultkey("ec", &env.purgeable_vault_url, "  keyType: EC-HSM\n  import: {secretRef: {name: ec, key: key}}\n  attributes: {exportable: false}\n  deletionPolicy: Purge\n").await;
    scenario.create_vaultkey("gen", &env.vault_url, "  keyType: RSA\n  keyOps: [wrapKey, unwrapKey]\n  rotateToken: a\n  deletionPolicy: Delete\n").await;
    let names = vec!["rsa".to_string(), "ec".to_string(), "gen".to_string()];
    scenario
        .wait_converged(&names, &[], Duration::from_secs(60))
        .await;
    scenario
        .put_secret("rsa", &fixture("rsa2048_pkcs8.pem"))
        .await;
    scenario
        .patch_spec("gen", json!({"rotateToken": "b"}))
        .await;
    eventually("re-import", Duration::from_secs(60), || async {
        let f = key_facts(env, "default", &scenario.key_name("rsa")).await?;
        (f.versions == 2).then_some(())
    })
    .await;
    scenario
        .wait_converged(&names, &[], Duration::from_secs(60))
        .await;
    let api = &scenario.api;
    for name in &names {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    scenario
        .wait_converged(&[], &names, Duration::from_secs(60))
        .await;

    let seen = Stats::read(env).await.since(&before);
    let operations = seen.operations();
    let unexpected: Vec<_> = operations
        .keys()
        .filter(|op| !PERMITTED_OPERATIONS.contains(&op.as_str()) && op.as_str() != "unauthorized")
        .collect();
    assert!(
        unexpected.is_empty(),
        "requests outside the permitted operations: {operations:?}"
    );
    assert_eq!(
        seen.count("other"),
        0,
        "no request the emulator does not know (release, backup, export...)"
    );
    assert!(seen.count("import_key") >= 3, "{operations:?}");
    let metrics = operator.metrics().await;
    let operator_operations: BTreeSet<String> = metrics
        .iter()
        .filter(|(s, _)| s.starts_with("vaultkey_keyvault_requests_total{"))
        .filter_map(|(s, _)| {
            s.split("operation=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        operator_operations
            .iter()
            .all(|op| PERMITTED_OPERATIONS.contains(&op.as_str())),
        "{operator_operations:?}"
    );
    figure(
        "no_private_material_requested",
        json!({"emulator_operations": operations, "operator_operations": operator_operations}),
    );
}
