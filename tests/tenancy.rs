//! Control over what the operator does for one VaultKey: the pause annotation and
//! managementPolicy Observe, end to end through the operator binary, the real API server and
//! the emulator. What the operator sent is read from the emulator's per-key counters
//! (`/stats`, `keys`), so other tests running alongside do not blur the figures.
//!
//!   tests/env/testenv.sh run -- cargo test --test tenancy

mod reliability_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use vaultkey_operator::api::{KeyType, OWNER_TAG, VaultKey};
use vaultkey_operator::controller::pause::{PAUSED, PAUSED_ANNOTATION};
use vaultkey_operator::keyvault::{CreateKey, KeyProperties};

use reliability_support::*;
use support::*;

/// Operations that change the vault.
const WRITES: [&str; 8] = [
    "create_key",
    "import_key",
    "update_key",
    "rotate_key",
    "set_rotation_policy",
    "delete_key",
    "purge_deleted_key",
    "recover_deleted_key",
];

/// Requests the emulator received for one key, per operation.
async fn key_requests(env: &Env, vault: &str, key: &str) -> BTreeMap<String, u64> {
    let stats = admin_get(env, "/stats").await;
    let mut out = BTreeMap::new();
    for r in stats["keys"].as_array().expect("stats.keys") {
        if r["vault"] == vault && r["key"] == key {
            *out.entry(r["operation"].as_str().unwrap_or("?").to_owned())
                .or_default() += r["count"].as_u64().unwrap_or(0);
        }
    }
    out
}

fn total(requests: &BTreeMap<String, u64>) -> u64 {
    requests.values().sum()
}

fn writes(requests: &BTreeMap<String, u64>) -> u64 {
    WRITES
        .iter()
        .map(|op| requests.get(*op).copied().unwrap_or(0))
        .sum()
}

fn since(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(op, n)| {
            let d = n.saturating_sub(before.get(op).copied().unwrap_or(0));
            (d > 0).then(|| (op.clone(), d))
        })
        .collect()
}

async fn annotate(scenario: &Scenario, name: &str, value: Option<&str>) -> VaultKey {
    scenario
        .api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {PAUSED_ANNOTATION: value}}})),
        )
        .await
        .expect("annotation patched")
}

fn paused_condition(vk: &VaultKey) -> Option<(String, String)> {
    vk.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == PAUSED)
        .map(|c| (c.reason.clone(), c.message.clone()))
}

async fn wait_paused(scenario: &Scenario, name: &str, reason: &str) -> VaultKey {
    eventually(
        &format!("{name} Paused with reason {reason}"),
        Duration::from_secs(30),
        || async {
            let vk = scenario.vaultkey(name).await;
            (paused_condition(&vk)?.0 == reason).then_some(vk)
        },
    )
    .await
}

async fn wait_reason(scenario: &Scenario, name: &str, reason: &str) -> VaultKey {
    eventually(
        &format!("{name} with Ready reason {reason}"),
        Duration::from_secs(60),
        || async {
            let vk = scenario.vaultkey(name).await;
            let ready = vk.ready_condition()?;
            (ready.reason == reason && ready.observed_generation == vk.metadata.generation)
                .then_some(vk)
        },
    )
    .await
}

const RESYNC_SECONDS: u64 = 2;
/// Several resyncs of a converged key.
const WINDOW: Duration = Duration::from_secs(8);

/// A paused VaultKey costs no vault request and no write over several resyncs, even when its
/// spec changes; removing the annotation applies that change.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_vaultkey_costs_nothing_and_converges_when_unpaused() {
    let scenario = Scenario::shared("pause").await;
    let env = &scenario.env;
    let vault = vault_name(env, &env.vault_url);
    let key = scenario.key_name("k");
    scenario
        .create_vaultkey("k", &env.vault_url, "  keyType: EC\n  tags: {stage: one}\n")
        .await;
    let _operator = scenario.start_operator(&["--resync-seconds", &RESYNC_SECONDS.to_string()]);
    scenario.wait_ready("k", "True").await;
    let converged = key_requests(env, vault, &key).await;
    assert!(total(&converged) > 0, "the key was read and created");
    let ready_before = scenario.vaultkey("k").await.ready_condition().cloned();

    annotate(&scenario, "k", Some("true")).await;
    let paused = wait_paused(&scenario, "k", "Annotation").await;
    let (_, message) = paused_condition(&paused).unwrap();
    assert!(
        message.contains("paused since 20") && message.contains(PAUSED_ANNOTATION),
        "the condition says since when and what to remove: {message}"
    );
    assert_eq!(
        paused.ready_condition().cloned(),
        ready_before,
        "Ready is left as it was"
    );
    // The spec changes while paused: nothing is applied, nothing is written.
    let before = key_requests(env, vault, &key).await;
    let changed = scenario
        .api
        .patch(
            "k",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tags": {"stage": "two"}}})),
        )
        .await
        .expect("spec patched");
    tokio::time::sleep(WINDOW).await;
    let during = since(&key_requests(env, vault, &key).await, &before);
    let after_window = scenario.vaultkey("k").await;
    figure(
        "pause",
        json!({"window_seconds": WINDOW.as_secs(), "resync_seconds": RESYNC_SECONDS, "vault_requests": total(&during), "operations": during}),
    );
    assert_eq!(
        total(&during),
        0,
        "no vault request while paused: {during:?}"
    );
    assert_eq!(
        after_window.metadata.resource_version, changed.metadata.resource_version,
        "no write to the VaultKey while paused"
    );
    let facts = key_facts(env, vault, &key).await.expect("key exists");
    assert_eq!(
        facts.latest_tags.get("stage").map(String::as_str),
        Some("one")
    );

    // Unpaused: the change is applied, and the Paused condition goes.
    annotate(&scenario, "k", None).await;
    let vk = scenario.wait_ready("k", "True").await;
    let vk = if paused_condition(&vk).is_some() {
        eventually(
            "the Paused condition removed",
            Duration::from_secs(30),
            || async {
                let vk = scenario.vaultkey("k").await;
                paused_condition(&vk).is_none().then_some(vk)
            },
        )
        .await
    } else {
        vk
    };
    assert_eq!(
        vk.status.as_ref().unwrap().observed_generation,
        vk.metadata.generation
    );
    let facts = key_facts(env, vault, &key).await.expect("key exists");
    assert_eq!(
        facts.latest_tags.get("stage").map(String::as_str),
        Some("two")
    );
}

/// Deleting a paused VaultKey whose deletionPolicy would delete the key waits, touching
/// nothing, until the pause is lifted; a paused VaultKey that retains its key goes at once.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_paused_vaultkey_touches_the_vault_only_after_unpausing() {
    let scenario = Scenario::shared("pausedel").await;
    let env = &scenario.env;
    let vault = vault_name(env, &env.vault_url);
    scenario
        .create_vaultkey(
            "del",
            &env.vault_url,
            "  keyType: EC\n  deletionPolicy: Delete\n",
        )
        .await;
    scenario
        .create_vaultkey("keep", &env.vault_url, "  keyType: EC\n")
        .await;
    let _operator = scenario.start_operator(&["--resync-seconds", &RESYNC_SECONDS.to_string()]);
    scenario.wait_ready("del", "True").await;
    scenario.wait_ready("keep", "True").await;
    for name in ["del", "keep"] {
        annotate(&scenario, name, Some("true")).await;
        wait_paused(&scenario, name, "Annotation").await;
    }
    let del_key = scenario.key_name("del");
    let keep_key = scenario.key_name("keep");
    let before = (
        key_requests(env, vault, &del_key).await,
        key_requests(env, vault, &keep_key).await,
    );
    for name in ["del", "keep"] {
        scenario
            .api
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete accepted");
    }
    // Retain: let go without the vault.
    eventually("keep deleted", Duration::from_secs(30), || async {
        scenario
            .api
            .get_opt("keep")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // Delete: waits, and says why and what to do.
    let (_, message) = paused_condition(&wait_paused(&scenario, "del", "DeletionWaits").await)
        .expect("Paused condition");
    assert!(message.contains("vaultkey.dev/abandon"), "{message}");
    tokio::time::sleep(WINDOW).await;
    assert!(scenario.api.get_opt("del").await.unwrap().is_some());
    let during = (
        since(&key_requests(env, vault, &del_key).await, &before.0),
        since(&key_requests(env, vault, &keep_key).await, &before.1),
    );
    assert_eq!(
        during,
        (BTreeMap::new(), BTreeMap::new()),
        "no vault request"
    );
    assert!(!key_facts(env, vault, &keep_key).await.unwrap().deleted);
    assert!(!key_facts(env, vault, &del_key).await.unwrap().deleted);

    annotate(&scenario, "del", None).await;
    eventually("del deleted", Duration::from_secs(30), || async {
        scenario
            .api
            .get_opt("del")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        key_facts(env, vault, &del_key).await.unwrap().deleted,
        "unpaused, the deletionPolicy applied"
    );
}

/// Observe over a key someone else made: status shows the key, a difference from the spec is
/// reported field by field, the fix of the spec makes it Ready, switching to Manage does not
/// take the key without `adopt`, and deleting the VaultKey leaves the key; not one write
/// reaches the vault meanwhile. A key that does not exist is reported, not created.
#[tokio::test(flavor = "multi_thread")]
async fn an_observe_vaultkey_reports_differences_and_never_writes() {
    let scenario = Scenario::shared("observe").await;
    let env = &scenario.env;
    let vault = vault_name(env, &env.vault_url);
    let key = scenario.key_name("obs");
    let made = env
        .vault(&env.vault_url)
        .create_key(
            &key,
            &CreateKey {
                key_type: KeyType::Rsa,
                size: Some(2048),
                curve: None,
                public_exponent: None,
                properties: KeyProperties {
                    enabled: Some(true),
                    tags: Some([("team".to_owned(), "a".to_owned())].into()),
                    ..Default::default()
                },
            },
        )
        .await
        .expect("key made outside the operator");
    let before = key_requests(env, vault, &key).await;
    scenario
        .create_vaultkey(
            "obs",
            &env.vault_url,
            "  keyType: RSA\n  managementPolicy: Observe\n  attributes: {enabled: false}\n  tags: {team: b}\n  rotateToken: first\n",
        )
        .await;
    scenario
        .create_vaultkey(
            "missing",
            &env.vault_url,
            "  keyType: EC\n  managementPolicy: Observe\n",
        )
        .await;
    let _operator = scenario.start_operator(&["--resync-seconds", &RESYNC_SECONDS.to_string()]);

    let vk = wait_reason(&scenario, "obs", "Drifted").await;
    let (_, message) = ready_reason(&vk);
    assert!(
        message.contains("attributes.enabled, tags") && message.contains("managementPolicy"),
        "the condition lists the fields and what to do: {message}"
    );
    let status = vk.status.as_ref().unwrap();
    assert_eq!(
        status.current_version.as_deref(),
        Some(made.version.as_str())
    );
    assert_eq!(status.key_type.as_deref(), Some("RSA"));
    assert!(status.observe_only);
    let events = scenario.events_once("obs", "Drifted").await;
    let (_, message) = ready_reason(&wait_reason(&scenario, "missing", "KeyNotFound").await);
    assert!(message.contains("never creates it"), "{message}");

    // Several resyncs of a drifted key: reads only, and no further Kubernetes write.
    let settled = scenario.vaultkey("obs").await;
    tokio::time::sleep(WINDOW).await;
    assert_eq!(
        scenario.vaultkey("obs").await.metadata.resource_version,
        settled.metadata.resource_version,
        "a drift that persists writes nothing more"
    );
    assert_eq!(
        events.iter().filter(|(r, _)| r == "Drifted").count(),
        1,
        "one Warning event"
    );

    // The spec made to match the key: Ready, still without writing.
    scenario
        .patch_spec("obs", json!({"attributes": {"enabled": true}, "tags": {"team": "a"}, "rotateToken": "second"}))
        .await;
    let vk = wait_reason(&scenario, "obs", "Observed").await;
    assert_eq!(vk.ready_condition().unwrap().status, "True");

    // Manage without adopt: a key only observed is not taken over.
    scenario
        .patch_spec("obs", json!({"managementPolicy": "Manage"}))
        .await;
    wait_reason(&scenario, "obs", "KeyExistsNotAdopted").await;
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS * 2)).await;
    scenario
        .patch_spec("obs", json!({"managementPolicy": "Observe"}))
        .await;
    wait_reason(&scenario, "obs", "Observed").await;

    scenario
        .api
        .delete("obs", &DeleteParams::default())
        .await
        .expect("delete accepted");
    eventually("obs deleted", Duration::from_secs(30), || async {
        scenario
            .api
            .get_opt("obs")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let sent = since(&key_requests(env, vault, &key).await, &before);
    let missing = key_requests(env, vault, &scenario.key_name("missing")).await;
    figure(
        "observe",
        json!({"observed_key": sent, "missing_key": missing}),
    );
    assert_eq!(writes(&sent), 0, "no write to the observed key: {sent:?}");
    assert!(sent.get("get_key").copied().unwrap_or(0) > 0, "it was read");
    assert_eq!(
        writes(&missing),
        0,
        "the missing key is not created: {missing:?}"
    );
    let facts = key_facts(env, vault, &key).await.expect("key still there");
    assert!(
        !facts.deleted,
        "deleting an Observe VaultKey leaves the key"
    );
    assert_eq!(facts.versions, 1, "no rotation for rotateToken");
    assert!(!facts.latest_tags.contains_key(OWNER_TAG), "not adopted");
}
