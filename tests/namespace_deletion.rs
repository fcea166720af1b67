//! Namespace deletion end to end: the test environment's kube-controller-manager (namespace
//! controller) empties a deleted namespace, the operator applies each VaultKey's
//! deletionPolicy while it does, and the namespace goes away in bounded time. When the vault
//! cannot be reached, a Delete VaultKey holds the namespace in Terminating with a
//! `DeletionBlocked` condition until it is annotated `vaultkey.dev/abandon: "true"`.
//!
//! Each test has its own namespace and its own operator process watching only that namespace.

mod reliability_support;
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vaultkey_operator::api::VaultKey;

use reliability_support::VaultForwarder;
use support::*;

/// How long a namespace may take to go once nothing blocks it. The namespace controller
/// re-checks a namespace whose content still has finalizers after an estimate of a few
/// seconds; a minute leaves room for a loaded machine.
const NAMESPACE_GONE_WITHIN: Duration = Duration::from_secs(90);

fn manifest(name: &str, vault_url: &str, key: &str, policy: &str) -> String {
    format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: {name}}}\nspec:\n  vaultUrl: {vault_url}\n  keyName: {key}\n  keyType: EC\n  deletionPolicy: {policy}\n"
    )
}

async fn delete_namespace(client: &Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await
        .expect("namespace deletion accepted");
}

/// Waits until the namespace no longer exists; returns how long that took.
async fn wait_namespace_gone(client: &Client, ns: &str, since: Instant) -> Duration {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(
        &format!("namespace {ns} to disappear"),
        NAMESPACE_GONE_WITHIN,
        || async {
            namespaces
                .get_opt(ns)
                .await
                .expect("namespace readable")
                .is_none()
                .then(|| since.elapsed())
        },
    )
    .await
}

/// Retain, Delete and Purge VaultKeys (each Ready first) in a namespace that is deleted: the
/// namespace goes, and the vault holds what each policy asks.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_namespace_applies_every_deletion_policy() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "nsdel").await;
    let operator = Operator::start(&env, &ns, 5);
    // The purgeable vault (Recoverable+Purgeable): soft delete, and purge allowed.
    let vault = env.vault(&env.purgeable_vault_url);
    let policies = ["Retain", "Delete", "Purge"];
    for policy in policies {
        let name = policy.to_lowercase();
        create(
            &client,
            &ns,
            &manifest(
                &name,
                &env.purgeable_vault_url,
                &format!("{name}-{ns}"),
                policy,
            ),
        )
        .await
        .expect("VaultKey accepted");
    }
    for policy in policies {
        let name = policy.to_lowercase();
        let vk = wait_ready(&client, &ns, &name, "True").await;
        assert_eq!(
            vk.finalizers().iter().any(|f| f == "vaultkey.dev/cleanup"),
            policy != "Retain",
            "{name}: only the policies that touch the vault hold the cleanup finalizer"
        );
        assert!(
            vault
                .get_key(&format!("{name}-{ns}"))
                .await
                .unwrap()
                .is_some(),
            "{name}: the key exists before the namespace is deleted"
        );
    }

    let start = Instant::now();
    delete_namespace(&client, &ns).await;
    let took = wait_namespace_gone(&client, &ns, start).await;
    eprintln!("namespace {ns} with 3 VaultKeys gone {took:?} after its deletion");

    // Retain: still live, not soft-deleted.
    let retain = format!("retain-{ns}");
    assert!(
        vault.get_key(&retain).await.unwrap().is_some(),
        "Retain leaves the key live"
    );
    assert!(vault.get_deleted_key(&retain).await.unwrap().is_none());
    let dump = env
        .emulator_key("purgeable", &retain)
        .await
        .expect("the emulator still has the Retain key");
    assert!(dump["deleted"].is_null(), "Retain key not deleted: {dump}");

    // Delete: soft-deleted (recoverable), no longer live.
    let delete = format!("delete-{ns}");
    assert!(vault.get_key(&delete).await.unwrap().is_none());
    assert!(
        vault.get_deleted_key(&delete).await.unwrap().is_some(),
        "Delete soft-deletes the key"
    );
    let dump = env
        .emulator_key("purgeable", &delete)
        .await
        .expect("the emulator still has the soft-deleted key");
    assert!(
        !dump["deleted"].is_null(),
        "Delete key soft-deleted: {dump}"
    );

    // Purge: gone entirely, not even soft-deleted.
    let purge = format!("purge-{ns}");
    assert!(vault.get_key(&purge).await.unwrap().is_none());
    assert!(
        vault.get_deleted_key(&purge).await.unwrap().is_none(),
        "Purge leaves no deleted key"
    );
    assert_eq!(
        env.emulator_key("purgeable", &purge).await,
        None,
        "the emulator knows nothing of the purged key"
    );
    drop(operator);
}

/// A Delete VaultKey whose vault cannot be reached keeps its namespace Terminating and says
/// why (`DeletionBlocked`); the abandon annotation lets the namespace go, leaving the key as it
/// is.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_vault_blocks_namespace_deletion_until_abandoned() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "nsblock").await;
    // The vault as the operator sees it, through a forwarder that can be cut.
    let forwarder = VaultForwarder::start(&env.purgeable_vault_url).await;
    let operator = Operator::start_with(&env, &ns, 3, &["--request-timeout-seconds", "3"]);
    let vault = env.vault(&env.purgeable_vault_url);
    let key = format!("blocked-{ns}");
    create(
        &client,
        &ns,
        &manifest("blocked", &forwarder.url, &key, "Delete"),
    )
    .await
    .expect("VaultKey accepted");
    let vk = wait_ready(&client, &ns, "blocked", "True").await;
    assert!(vk.finalizers().iter().any(|f| f == "vaultkey.dev/cleanup"));

    forwarder.cut();
    delete_namespace(&client, &ns).await;
    let api: Api<VaultKey> = Api::namespaced(client.clone(), &ns);
    let namespaces: Api<Namespace> = Api::all(client.clone());

    // The namespace controller deletes the VaultKey; the operator cannot reach the vault.
    let blocked = eventually(
        "Ready=False DeletionBlocked on the VaultKey",
        Duration::from_secs(60),
        || async {
            let vk = api.get_opt("blocked").await.expect("readable")?;
            vk.metadata.deletion_timestamp.as_ref()?;
            let ready = vk.ready_condition()?;
            (ready.status == "False" && ready.reason == "DeletionBlocked").then(|| ready.clone())
        },
    )
    .await;
    assert!(
        blocked.message.contains("vaultkey.dev/abandon"),
        "the condition names the way out: {}",
        blocked.message
    );
    assert!(forwarder.refused() >= 1, "the operator tried the vault");

    // It stays blocked: well past the namespace controller's re-checks, the namespace is
    // still Terminating because of the finalizer, and the key is untouched.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let namespace = namespaces
        .get_opt(&ns)
        .await
        .expect("namespace readable")
        .expect("the namespace is kept while the VaultKey's key may exist");
    let status = namespace.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Terminating"));
    let conditions = status.conditions.unwrap_or_default();
    let finalizers_remaining = conditions
        .iter()
        .find(|c| c.type_ == "NamespaceFinalizersRemaining")
        .unwrap_or_else(|| panic!("no NamespaceFinalizersRemaining condition: {conditions:?}"));
    assert_eq!(finalizers_remaining.status, "True");
    assert!(
        finalizers_remaining
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("vaultkey.dev/cleanup"),
        "{finalizers_remaining:?}"
    );
    let vk = api.get("blocked").await.expect("the VaultKey is kept");
    assert!(vk.finalizers().iter().any(|f| f == "vaultkey.dev/cleanup"));
    assert_eq!(
        vk.ready_condition().map(|c| c.reason.as_str()),
        Some("DeletionBlocked")
    );
    assert!(
        vault.get_key(&key).await.unwrap().is_some(),
        "the key is still live"
    );

    // The way out: abandon. The finalizer goes without a vault request, then the namespace.
    let refused_before = forwarder.refused();
    let start = Instant::now();
    api.patch(
        "blocked",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"vaultkey.dev/abandon": "true"}}})),
    )
    .await
    .expect("annotation added");
    let took = wait_namespace_gone(&client, &ns, start).await;
    eprintln!("namespace {ns} gone {took:?} after the abandon annotation");
    assert!(
        vault.get_key(&key).await.unwrap().is_some(),
        "abandon leaves the key live in the vault"
    );
    assert!(vault.get_deleted_key(&key).await.unwrap().is_none());
    eprintln!(
        "vault connections refused after the annotation: {}",
        forwarder.refused() - refused_before
    );
    drop(operator);
}
