//! Steady state through the vault's key list: a converged fleet costs one list page per 25
//! keys per resync and nothing else, changes made behind the operator's back still show up
//! within a resync or two, a change the list cannot show waits for the verify interval, and a
//! vault that refuses the list falls back to per-key reads and says so. These tests use the
//! emulator's `listed` vault, which holds only their keys (its pages are counted), and run
//! one at a time.

mod reliability_support;
mod support;

use std::time::Duration;

use serde_json::json;
use vaultkey_operator::api::OWNER_TAG;
use vaultkey_operator::keyvault::{KeyProperties, KeyVault};

use reliability_support::*;
use support::*;

const VAULT: &str = "listed";
fn writes(stats: &Stats) -> u64 {
    VAULT_WRITES
        .iter()
        .map(|op| stats.count_in(VAULT, op))
        .sum()
}

/// Soft-deletes the test's keys (a soft-deleted key is not in the list), so the next test's
/// list holds only its own keys: with more pages than keys the vault goes back to per-key
/// reads.
async fn remove_keys(scenario: &Scenario, names: &[String]) {
    let vault = scenario.env.vault(&scenario.env.listed_vault_url);
    for name in names {
        vault
            .delete_key(&scenario.key_name(name))
            .await
            .expect("key soft-deleted");
    }
}

async fn create_fleet(scenario: &Scenario, names: &[String]) {
    let url = &scenario.env.listed_vault_url;
    for (i, name) in names.iter().enumerate() {
        // Every third key has a rotation policy: its steady state must not read it either.
        let policy = if i % 3 == 0 {
            "  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D}]}\n"
        } else {
            ""
        };
        scenario
            .create_vaultkey(
                name,
                url,
                &format!("  keyType: EC\n  tags: {{team: payments}}\n{policy}"),
            )
            .await;
    }
    scenario
        .wait_converged(names, &[], Duration::from_secs(120))
        .await;
}

/// 50 keys: two pages a resync (the operator's request metric counts pages, as the vault
/// does), no key or policy read, no write of either kind; then a new
/// version, a tag change and a disable made in the vault are each taken in within a resync
/// or two.
#[tokio::test(flavor = "multi_thread")]
async fn a_converged_fleet_costs_one_list_page_per_25_keys() {
    let scenario = Scenario::exclusive("listing").await;
    let env = &scenario.env;
    let resync = 2;
    let operator = scenario.start_operator(&[
        "--resync-seconds",
        &resync.to_string(),
        "--verify-interval-seconds",
        "3600",
    ]);
    let names: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    create_fleet(&scenario, &names).await;
    // The first list switches the vault to listed; keys already due read once more.
    tokio::time::sleep(Duration::from_secs(3 * resync)).await;

    let list_requests = [r#"operation="list_keys""#];
    let before = Stats::read(env).await;
    let kube_before = operator.sum("vaultkey_kubernetes_writes_total", &[]).await;
    let listed_before = operator
        .sum("vaultkey_keyvault_requests_total", &list_requests)
        .await;
    let window = 10;
    tokio::time::sleep(Duration::from_secs(window)).await;
    let stats = Stats::read(env).await.since(&before);
    let resyncs = window / resync;
    let pages = stats.count_in(VAULT, "list_keys");
    let per_key_per_resync = pages as f64 / (names.len() as u64 * resyncs) as f64;
    figure(
        "listing_steady_state",
        json!({"keys": names.len(), "window_s": window, "resync_s": resync,
               "operations": stats.per_vault_operation.iter()
                   .filter(|((v, _), _)| v == VAULT)
                   .map(|((_, op), n)| (op.clone(), *n))
                   .collect::<std::collections::BTreeMap<_, _>>(),
               "requests_per_key_per_resync": per_key_per_resync}),
    );
    assert_eq!(stats.count_in(VAULT, "get_key"), 0, "{stats:?}");
    assert_eq!(stats.count_in(VAULT, "get_rotation_policy"), 0, "{stats:?}");
    assert_eq!(writes(&stats), 0, "{stats:?}");
    assert!(
        (2 * (resyncs - 1)..=2 * (resyncs + 1)).contains(&pages),
        "two pages per resync: {pages} in {resyncs} resyncs"
    );
    let listed = operator
        .sum("vaultkey_keyvault_requests_total", &list_requests)
        .await
        - listed_before;
    assert!(
        (listed - pages as f64).abs() <= 2.0,
        "the operator counts each page as a request: {listed} counted, {pages} served"
    );
    assert!(per_key_per_resync <= 0.05, "{per_key_per_resync}");
    assert_eq!(
        operator.sum("vaultkey_kubernetes_writes_total", &[]).await,
        kube_before,
        "no Kubernetes write in steady state"
    );

    // Behind the operator's back: a new version, a changed tag, a disabled key.
    let vault = env.vault(&env.listed_vault_url);
    let rotated = scenario.key_name("k1");
    let new_version = vault.rotate_key(&rotated, false).await.unwrap().version;
    let retagged = scenario.key_name("k2");
    let latest = vault.get_key(&retagged).await.unwrap().unwrap();
    let mut tags = latest.tags.clone();
    tags.insert("team".into(), "hijacked".into());
    set(
        &*vault,
        &retagged,
        &latest.version,
        KeyProperties {
            tags: Some(tags),
            ..Default::default()
        },
    )
    .await;
    let disabled = scenario.key_name("k3");
    let latest = vault.get_key(&disabled).await.unwrap().unwrap();
    set(
        &*vault,
        &disabled,
        &latest.version,
        KeyProperties {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await;
    let limit = Duration::from_secs(4 * resync + 10);
    eventually("status shows the new version", limit, || async {
        let vk = scenario.vaultkey("k1").await;
        (vk.status?.current_version? == new_version).then_some(())
    })
    .await;
    eventually("the tag put back", limit, || async {
        let key = vault.get_key(&retagged).await.ok()??;
        (key.tags.get("team")? == "payments" && key.tags.contains_key(OWNER_TAG)).then_some(())
    })
    .await;
    eventually("the key enabled again", limit, || async {
        vault.get_key(&disabled).await.ok()??.enabled.then_some(())
    })
    .await;
    let woken = operator.sum("vaultkey_listing_wakes_total", &[]).await;
    assert!(
        woken >= 3.0,
        "the three changed keys were woken by the list: {woken}"
    );
    drop(operator);
    remove_keys(&scenario, &names).await;
}

async fn set(vault: &dyn KeyVault, name: &str, version: &str, properties: KeyProperties) {
    vault
        .update_key(name, version, &properties)
        .await
        .expect("changed behind the operator's back");
}

/// A vault that does not stamp `updated` on a PATCH hides a key_ops change from its list:
/// the operator misses it until the verify interval's full read, and then corrects it.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_the_list_cannot_show_waits_for_the_verify_interval() {
    let scenario = Scenario::exclusive("unstamped").await;
    let env = &scenario.env;
    let _dialect = Dialect::on(env, VAULT, json!({"patchKeepsUpdated": true})).await;
    let operator =
        scenario.start_operator(&["--resync-seconds", "2", "--verify-interval-seconds", "30"]);
    scenario
        .create_vaultkey(
            "ops",
            &env.listed_vault_url,
            "  keyType: EC\n  keyOps: [sign, verify]\n",
        )
        .await;
    scenario.wait_ready("ops", "True").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let vault = env.vault(&env.listed_vault_url);
    let key = scenario.key_name("ops");
    let latest = vault.get_key(&key).await.unwrap().unwrap();
    let original_ops = latest.key_ops.clone();
    set(
        &*vault,
        &key,
        &latest.version,
        KeyProperties {
            key_ops: Some([vaultkey_operator::api::KeyOperation::Encrypt].into()),
            ..Default::default()
        },
    )
    .await;
    // Three resyncs: the list looks the same, so the key is not read.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let unseen = vault.get_key(&key).await.unwrap().unwrap();
    assert_eq!(
        unseen.key_ops,
        ["encrypt".to_owned()].into(),
        "the unstamped change is not in the list"
    );
    eventually(
        "key_ops corrected by the verify read",
        Duration::from_secs(45),
        || async {
            let now = vault.get_key(&key).await.ok()??;
            (now.key_ops == original_ops).then_some(())
        },
    )
    .await;
    drop(operator);
    remove_keys(&scenario, &["ops".to_owned()]).await;
}

/// Without the keys/list permission every key is read each resync, and Ready says why and
/// what to grant.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_list_falls_back_to_per_key_reads_and_says_so() {
    let scenario = Scenario::exclusive("unlisted").await;
    let env = &scenario.env;
    let _dialect = Dialect::on(
        env,
        VAULT,
        json!({"persistentError": {"operations": ["list_keys"], "status": 403, "code": "Forbidden",
               "innerCode": "ForbiddenByPolicy"}}),
    )
    .await;
    let operator = scenario.start_operator(&["--resync-seconds", "2"]);
    let names = vec!["a".to_owned(), "b".to_owned()];
    create_fleet(&scenario, &names).await;
    for name in &names {
        eventually(
            "Ready names the missing permission",
            Duration::from_secs(20),
            || async {
                let vk = scenario.vaultkey(name).await;
                let ready = vk.ready_condition()?;
                (ready.status == "True" && ready.message.contains("keys/list")).then_some(())
            },
        )
        .await;
    }
    let before = Stats::read(env).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = Stats::read(env).await.since(&before);
    assert!(
        stats.count_in(VAULT, "get_key") >= 2 * names.len() as u64,
        "each key read every resync: {stats:?}"
    );
    assert_eq!(writes(&stats), 0, "{stats:?}");
    drop(operator);
    remove_keys(&scenario, &names).await;
}
