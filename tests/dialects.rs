//! The core flows under every dialect of Key Vault the emulator speaks (issue 11 §4; see the
//! "Dialects" section of tests/kv-emulator/README.md): for each dialect flag, one at a time,
//! one emulator vault speaks it while the operator creates a key with a rotation policy (and
//! one created disabled), rotates it, imports material from a Secret, corrects drift, deletes and purges, and adopts
//! a key made behind its back. Each test checks what users care about: Ready, the number of
//! versions in the vault, no vault write in steady state, and that the dialect's counter in the
//! emulator's `/stats` moved (the mode was exercised, not just switched on).
//!
//! Dialects affect every client of their vault, so each test holds the environment
//! exclusively (the tests of this file run one after the other).

mod reliability_support;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use vaultkey_operator::api::{KeyOperation, KeyType};
use vaultkey_operator::keyvault::{CreateKey, KeyProperties};

use reliability_support::*;
use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/key_material");

/// The seed's key: the Azure how-to (RSA 2048, encrypt/decrypt, expiresAfter P1Y, tags, a
/// rotation policy expiring versions after 90 days, rotating 30 days after creation and
/// notifying 7 days before expiry).
const SEED: &str = "  keyType: RSA\n  keySize: 2048\n  keyOps: [encrypt, decrypt]\n  attributes:\n    expiresAfter: P1Y\n  tags:\n    project: test-project\n  rotationPolicy:\n    expiresIn: P90D\n    lifetimeActions:\n      - {action: Rotate, timeAfterCreate: P30D}\n      - {action: Notify, timeBeforeExpiry: P7D}\n";

/// The drift subject manages both dates (no policy owns the expiry), so a PATCH that sends
/// one date without the other is visible.
const DRIFT: &str = "  keyType: RSA\n  keySize: 2048\n  keyOps: [encrypt, decrypt]\n  attributes:\n    notBefore: \"2025-01-01T00:00:00Z\"\n    expiresOn: \"2031-01-01T00:00:00Z\"\n  tags:\n    project: test-project\n";

const RESYNC_SECONDS: &str = "2";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Counters of the dialect flags in the emulator's `/stats`.
async fn dialect_counters(env: &Env) -> BTreeMap<String, u64> {
    admin_get(env, "/stats").await["dialect"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes per operation in `stats`.
fn writes(stats: &Stats) -> BTreeMap<String, u64> {
    stats
        .operations()
        .into_iter()
        .filter(|(op, _)| VAULT_WRITES.contains(&op.as_str()))
        .collect()
}

/// How the Purge flow ends on the dialect's vault.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PurgeOutcome {
    /// The vault allows purge: the key is gone and the VaultKey with it.
    Purged,
    /// The vault does not allow purge: the key stays soft-deleted and the VaultKey says why
    /// (DeletionBlocked) without hammering the vault.
    Blocked,
}

/// Runs every core flow against `vault` speaking `dialect`, and checks that `flag`'s counter
/// moved.
async fn core_flows_under(prefix: &str, vault: &'static str, flag: &str, dialect: Value) {
    let scenario = Scenario::exclusive(prefix).await;
    let started = Instant::now();
    let env = &scenario.env;
    faults_off(env);
    let url = match vault {
        "purgeable" => env.purgeable_vault_url.clone(),
        _ => env.vault_url.clone(),
    };
    let purge_outcome = if vault == "purgeable" {
        PurgeOutcome::Purged
    } else {
        PurgeOutcome::Blocked
    };
    let kv = env.vault(&url);
    let counters_before = dialect_counters(env).await;
    let _dialect = Dialect::on(env, vault, dialect.clone()).await;

    // A key made behind the operator's back (no key_ops, no tags, no policy), to be adopted.
    let adopted_key = scenario.key_name("adopt");
    kv.create_key(
        &adopted_key,
        &CreateKey {
            key_type: KeyType::Rsa,
            size: Some(2048),
            curve: None,
            public_exponent: None,
            properties: KeyProperties::default(),
        },
    )
    .await
    .expect("key made behind the operator's back");
    scenario
        .put_secret(
            "material",
            &std::fs::read(format!("{FIXTURES}/rsa2048.jwk.json")).unwrap(),
        )
        .await;

    let _operator = scenario.start_operator(&["--resync-seconds", RESYNC_SECONDS]);
    let flows: [(&str, String); 8] = [
        ("create", SEED.to_owned()),
        // Created disabled: its current version stays disabled.
        (
            "disabled",
            SEED.replacen("  attributes:\n", "  attributes:\n    enabled: false\n", 1),
        ),
        ("rotate", format!("{SEED}  rotateToken: a\n")),
        (
            "import",
            "  keyType: RSA\n  import: {secretRef: {name: material, key: key}}\n  tags: {project: test-project}\n".to_owned(),
        ),
        ("drift", DRIFT.to_owned()),
        ("adopt", format!("{SEED}  adopt: true\n")),
        ("del", format!("{SEED}  deletionPolicy: Delete\n")),
        ("purge", format!("{SEED}  deletionPolicy: Purge\n")),
    ];
    for (name, body) in &flows {
        scenario.create_vaultkey(name, &url, body).await;
    }
    let names: Vec<String> = flows.iter().map(|(n, _)| n.to_string()).collect();
    scenario
        .wait_converged(&names, &[], Duration::from_secs(60))
        .await;
    for (name, versions) in [
        ("create", 1),
        ("disabled", 1),
        ("rotate", 1),
        ("import", 1),
        ("drift", 1),
        ("adopt", 1),
    ] {
        let facts = key_facts(env, vault, &scenario.key_name(name))
            .await
            .unwrap_or_else(|| panic!("{name}: key in the vault"));
        assert_eq!(facts.versions, versions, "{name}: versions after create");
    }

    // Rotate: a new rotateToken makes exactly one new version.
    scenario
        .patch_spec("rotate", json!({"rotateToken": "b"}))
        .await;
    // Drift: someone disables the key, changes a tag and moves notBefore (sending no expiry).
    let drift_key = scenario.key_name("drift");
    let original = kv
        .get_key(&drift_key)
        .await
        .expect("drift key readable")
        .expect("drift key exists");
    let mut tags = original.tags.clone();
    tags.insert("project".into(), "hijacked".into());
    kv.update_key(
        &drift_key,
        &original.version,
        &KeyProperties {
            enabled: Some(false),
            key_ops: Some([KeyOperation::Encrypt].into()),
            not_before: Some(at("2026-06-01T00:00:00Z")),
            tags: Some(tags),
            ..Default::default()
        },
    )
    .await
    .expect("drift made behind the operator's back");

    let restored = eventually("drift corrected", Duration::from_secs(60), || async {
        let v = kv
            .get_key_version(&drift_key, &original.version)
            .await
            .ok()??;
        (v.enabled
            && v.tags.get("project").map(String::as_str) == Some("test-project")
            && v.not_before == Some(at("2025-01-01T00:00:00Z"))
            && v.expires_on == Some(at("2031-01-01T00:00:00Z"))
            && v.key_ops == ["decrypt".to_string(), "encrypt".to_string()].into())
        .then_some(v)
    })
    .await;
    assert_eq!(restored.version, original.version, "drift: no new version");
    scenario
        .wait_converged(&names, &[], Duration::from_secs(60))
        .await;
    scenario.events_once("drift", "DriftCorrected").await;
    let rotated = scenario.vaultkey("rotate").await;
    assert_eq!(
        rotated.status.as_ref().and_then(|s| s.version_count),
        Some(2),
        "rotate: status shows both versions"
    );
    for (name, versions) in [
        ("create", 1),
        ("disabled", 1),
        ("rotate", 2),
        ("import", 1),
        ("drift", 1),
        ("adopt", 1),
    ] {
        let facts = key_facts(env, vault, &scenario.key_name(name))
            .await
            .unwrap_or_else(|| panic!("{name}: key in the vault"));
        assert_eq!(facts.versions, versions, "{name}: versions");
        assert_eq!(
            facts.all_enabled,
            name != "disabled",
            "{name}: versions enabled as the spec says"
        );
    }

    // Steady state: a few resyncs without a vault write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = Stats::read(env).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let steady = Stats::read(env).await.since(&before);
    // Compared by reading each key, or by the vault's key list when it holds few other keys.
    assert!(
        steady.count("get_key") + steady.count("list_keys") >= 3,
        "steady state: the operator kept comparing ({:?})",
        steady.operations()
    );
    assert_eq!(
        writes(&steady),
        BTreeMap::new(),
        "steady state: no vault write over several resyncs ({:?})",
        steady.operations()
    );
    scenario
        .wait_converged(&names, &[], Duration::from_secs(10))
        .await;

    // Delete (soft) and Purge.
    for name in ["del", "purge"] {
        scenario
            .api
            .delete(name, &DeleteParams::default())
            .await
            .expect("VaultKey deleted");
    }
    let gone: &[String] = match purge_outcome {
        PurgeOutcome::Purged => &["del".to_string(), "purge".to_string()],
        PurgeOutcome::Blocked => &["del".to_string()],
    };
    let live: Vec<String> = ["create", "disabled", "rotate", "import", "drift", "adopt"]
        .map(String::from)
        .to_vec();
    scenario
        .wait_converged(&live, gone, Duration::from_secs(60))
        .await;
    let deleted = key_facts(env, vault, &scenario.key_name("del"))
        .await
        .expect("del: soft-deleted key kept");
    assert!(deleted.deleted, "del: soft-deleted");
    match purge_outcome {
        PurgeOutcome::Purged => assert_eq!(
            key_facts(env, vault, &scenario.key_name("purge")).await,
            None,
            "purge: key purged"
        ),
        PurgeOutcome::Blocked => {
            let blocked = eventually("purge blocked", Duration::from_secs(30), || async {
                let vk = scenario.vaultkey("purge").await;
                let c = vk.ready_condition()?;
                (c.reason == "DeletionBlocked").then(|| c.message.clone())
            })
            .await;
            let facts = key_facts(env, vault, &scenario.key_name("purge"))
                .await
                .expect("purge: key kept, soft-deleted");
            assert!(facts.deleted, "purge: soft-deleted");
            // The refusal does not change: it is asked again with backoff, not in a loop.
            let before = Stats::read(env).await;
            tokio::time::sleep(Duration::from_secs(8)).await;
            let retried = Stats::read(env).await.since(&before);
            let purges = retried.count("purge_deleted_key");
            eprintln!("purge refused ({blocked}); {purges} purge attempts in 8 s");
            assert!(purges <= 4, "purge: retried with backoff ({purges} in 8 s)");
            // Let the VaultKey go without touching the vault again.
            scenario
                .api
                .patch(
                    "purge",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"vaultkey.dev/abandon": "true"}}}),
                    ),
                )
                .await
                .expect("abandon annotation");
            scenario
                .wait_converged(&[], &["purge".to_string()], Duration::from_secs(30))
                .await;
        }
    }

    // A VaultKey for the soft-deleted name says so instead of creating anything.
    create(
        &scenario.client,
        &scenario.ns,
        &manifest("recreate", &url, &scenario.key_name("del"), SEED),
    )
    .await
    .expect("VaultKey created");
    let refused = scenario.wait_ready("recreate", "False").await;
    assert_eq!(
        refused.ready_condition().map(|c| c.reason.clone()),
        Some("SoftDeletedConflict".to_string()),
        "recreate over a soft-deleted name: {:?}",
        refused.ready_condition().map(|c| c.message.clone())
    );
    let facts = key_facts(env, vault, &scenario.key_name("del")).await;
    assert_eq!(
        facts.map(|f| (f.versions, f.deleted)),
        Some((1, true)),
        "recreate: nothing created over the soft-deleted key"
    );

    // The dialect was spoken to the operator.
    let counters = dialect_counters(env).await;
    let moved =
        counters.get(flag).copied().unwrap_or(0) - counters_before.get(flag).copied().unwrap_or(0);
    assert!(
        moved > 0,
        "dialect {flag} was never exercised (counters {counters:?})"
    );
    eprintln!(
        "DIALECT {flag} {dialect}: all core flows passed; {moved} answers changed; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hide_disabled_keys() {
    core_flows_under(
        "d-hide",
        "purgeable",
        "hideDisabledKeys",
        json!({"hideDisabledKeys": true}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conflict_without_inner_code() {
    core_flows_under(
        "d-conflict",
        "purgeable",
        "conflictWithoutInnerCode",
        json!({"conflictWithoutInnerCode": true}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_action_case_lower() {
    core_flows_under(
        "d-lower",
        "purgeable",
        "policyActionCase",
        json!({"policyActionCase": "lower"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_action_case_upper() {
    core_flows_under(
        "d-upper",
        "purgeable",
        "policyActionCase",
        json!({"policyActionCase": "upper"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_unset_empty_body() {
    core_flows_under(
        "d-unset-empty",
        "purgeable",
        "policyUnset",
        json!({"policyUnset": "empty-body"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_unset_not_found() {
    core_flows_under(
        "d-unset-404",
        "purgeable",
        "policyUnset",
        json!({"policyUnset": "not-found"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_clears_unsent_dates() {
    core_flows_under(
        "d-dates",
        "purgeable",
        "patchClearsUnsentDates",
        json!({"patchClearsUnsentDates": true}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn omit_empty_key_ops() {
    core_flows_under(
        "d-keyops",
        "purgeable",
        "omitEmptyKeyOps",
        json!({"omitEmptyKeyOps": true}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_leading_zero() {
    core_flows_under(
        "d-zero",
        "purgeable",
        "rsaLeadingZero",
        json!({"rsaLeadingZero": true}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_error_codes() {
    core_flows_under(
        "d-foreign",
        "purgeable",
        "foreignErrorCodes",
        json!({"foreignErrorCodes": true}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_oldest_first() {
    core_flows_under(
        "d-order",
        "purgeable",
        "versionsOrder",
        json!({"versionsOrder": "oldest-first"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn omit_exportable() {
    core_flows_under(
        "d-exportable",
        "purgeable",
        "omitExportable",
        json!({"omitExportable": true}),
    )
    .await;
}

/// On the `default` vault (Recoverable, not purgeable): the Purge flow is refused there, with
/// a 500 instead of Key Vault's 403.
#[tokio::test(flavor = "multi_thread")]
async fn purge_refused_as_500() {
    core_flows_under(
        "d-purge500",
        "default",
        "purgeRefusedAs500",
        json!({"purgeRefusedAs500": true}),
    )
    .await;
}
