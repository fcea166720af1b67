//! Tenancy and control: the pause annotation, managementPolicy Observe and per-namespace
//! workload identity, end to end through the operator binary, the real API server and
//! the emulator. What the operator sent is read from the emulator's per-key counters
//! (`/stats`, `keys`), so other tests running alongside do not blur the figures.
//!
//!   tests/env/testenv.sh run -- cargo test --test tenancy

mod reliability_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vaultkey_operator::api::{KeyType, OWNER_TAG, VaultKey};
use vaultkey_operator::controller::pause::{PAUSED, PAUSED_ANNOTATION};
use vaultkey_operator::keyvault::{CreateKey, KeyProperties};

use reliability_support::*;
use support::*;

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
    VAULT_WRITES
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

/// A converged VaultKey whose vault's list vouches for it (no reads until the verify
/// interval) still loses its Paused condition as soon as the annotation goes: only a full pass
/// takes the condition away, so a VaultKey showing it is never vouched for.
#[tokio::test(flavor = "multi_thread")]
async fn unpausing_a_key_the_list_vouches_for_clears_its_paused_condition() {
    let scenario = Scenario::shared("vouched-pause").await;
    let env = &scenario.env;
    let _operator = scenario.start_operator(&[
        "--resync-seconds",
        &RESYNC_SECONDS.to_string(),
        "--verify-interval-seconds",
        "3600",
    ]);
    scenario
        .create_vaultkey("k", &env.vault_url, "  keyType: EC\n")
        .await;
    scenario.wait_ready("k", "True").await;
    tokio::time::sleep(Duration::from_secs(3 * RESYNC_SECONDS)).await;
    annotate(&scenario, "k", Some("true")).await;
    wait_paused(&scenario, "k", "Annotation").await;
    annotate(&scenario, "k", None).await;
    eventually(
        "the Paused condition gone",
        Duration::from_secs(5 * RESYNC_SECONDS),
        || async {
            let vk = scenario.vaultkey("k").await;
            paused_condition(&vk).is_none().then_some(())
        },
    )
    .await;
    scenario.wait_ready("k", "True").await;
}

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
    scenario.wait_gone("keep").await;
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
    scenario.wait_gone("del").await;
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
    scenario.wait_gone("obs").await;
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

// ---------------------------------------------------------------------------------------------
// Per-namespace workload identity
// ---------------------------------------------------------------------------------------------

/// Creates ServiceAccount `name` in the scenario's namespace with these annotations.
async fn service_account(scenario: &Scenario, name: &str, annotations: Value) {
    let api: Api<ServiceAccount> = Api::namespaced(scenario.client.clone(), &scenario.ns);
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
    }))
    .unwrap();
    api.create(&PostParams::default(), &sa)
        .await
        .expect("ServiceAccount created");
}

/// From the emulator's `/identities`: the `count`s of the `list` entries whose `field` is
/// `value`, summed by their `by` field.
async fn identity_counts(
    env: &Env,
    list: &str,
    (field, value): (&str, &str),
    by: &str,
) -> BTreeMap<String, u64> {
    let snapshot = admin_get(env, "/identities").await;
    let mut out = BTreeMap::new();
    for entry in snapshot[list].as_array().expect("an /identities list") {
        if entry[field] == value {
            *out.entry(entry[by].as_str().unwrap_or("?").to_owned())
                .or_default() += entry["count"].as_u64().unwrap_or(0);
        }
    }
    out
}

/// Who the emulator saw asking, for one key: caller -> requests.
async fn callers(env: &Env, key: &str) -> BTreeMap<String, u64> {
    identity_counts(env, "callers", ("key", key), "caller").await
}

/// Token exchanges of a client id: outcome -> count.
async fn exchanges(env: &Env, client_id: &str) -> BTreeMap<String, u64> {
    identity_counts(env, "exchanges", ("clientId", client_id), "outcome").await
}

/// Lifetime of the access tokens the test identity gets: azure_identity renews a token five
/// minutes before it expires, so this one is renewed about 10 s after it was issued.
const TOKEN_LIFETIME_SECONDS: u64 = 310;

/// A team's VaultKeys act with the team's ServiceAccount: in the vault its identity is granted
/// they converge, in another vault they are Forbidden naming that identity, the operator's own
/// identity appears on none of their requests, and the token is renewed before it expires.
/// Each missing piece (ServiceAccount, annotation, federated credential, any identity at all
/// under --require-namespace-identity) is its own condition, and none reaches a vault.
#[tokio::test(flavor = "multi_thread")]
async fn a_team_acts_with_its_own_identity_and_only_where_it_is_granted() {
    let scenario = Scenario::shared("ident").await;
    let env = &scenario.env;
    let login_url = std::env::var("VAULTKEY_TEST_LOGIN_URL")
        .expect("VAULTKEY_TEST_LOGIN_URL: run through tests/env/testenv.sh");
    let ns = scenario.ns.clone();
    let client_id = format!("client-{ns}");
    let tenant_id = "tenant-e2e";
    let annotations = json!({
        "azure.workload.identity/client-id": client_id,
        "azure.workload.identity/tenant-id": tenant_id,
    });
    service_account(&scenario, "kv", annotations.clone()).await;
    service_account(&scenario, "unfederated", annotations).await;
    service_account(
        &scenario,
        "bare",
        json!({"azure.workload.identity/tenant-id": tenant_id}),
    )
    .await;
    // The team's application: a federated credential for ServiceAccount kv only, and a role on
    // the default vault only.
    let federation = json!({
        "tenantId": tenant_id,
        "clientId": client_id,
        "subject": format!("system:serviceaccount:{ns}:kv"),
        "vaults": ["default"],
        "tokenLifetimeSeconds": TOKEN_LIFETIME_SECONDS,
    });
    let added = reqwest::Client::new()
        .post(format!("{}/identities", env.emulator_admin))
        .header("content-type", "application/json")
        .body(federation.to_string())
        .send()
        .await
        .expect("emulator admin reachable");
    assert!(added.status().is_success());

    let identity = |sa: &str| format!("  identity: {{serviceAccountName: {sa}}}\n");
    for (name, vault, body) in [
        ("own", &env.vault_url, identity("kv")),
        ("other", &env.purgeable_vault_url, identity("kv")),
        ("ghost", &env.vault_url, identity("ghost")),
        ("bare", &env.vault_url, identity("bare")),
        ("unfederated", &env.vault_url, identity("unfederated")),
        ("none", &env.vault_url, String::new()),
    ] {
        scenario
            .create_vaultkey(name, vault, &format!("  keyType: EC\n{body}"))
            .await;
    }
    // Full reads every resync (not only the vault's list), so the renewed token is seen
    // reading the key itself.
    let operator = scenario.start_operator(&[
        "--resync-seconds",
        &RESYNC_SECONDS.to_string(),
        "--verify-interval-seconds",
        &RESYNC_SECONDS.to_string(),
        "--require-namespace-identity",
        "--emulator-authority-host",
        &login_url,
    ]);
    let start = std::time::Instant::now();

    let own = scenario.wait_ready("own", "True").await;
    assert!(own.status.unwrap().current_version.is_some());
    let (_, message) = ready_reason(&wait_reason(&scenario, "other", "Forbidden").await);
    assert!(
        message.contains(&format!("ServiceAccount {ns}/kv (client id {client_id})")),
        "the refusal names the identity: {message}"
    );
    for (name, reason, names) in [
        (
            "ghost",
            "IdentityServiceAccountMissing",
            format!("{ns}/ghost"),
        ),
        (
            "bare",
            "IdentityAnnotationMissing",
            "azure.workload.identity/client-id".to_owned(),
        ),
        (
            "unfederated",
            "IdentityExchangeRefused",
            format!("system:serviceaccount:{ns}:unfederated"),
        ),
        (
            "none",
            "IdentityRequired",
            "spec.identity.serviceAccountName".to_owned(),
        ),
    ] {
        let (_, message) = ready_reason(&wait_reason(&scenario, name, reason).await);
        assert!(message.contains(&names), "{name}: {message}");
    }

    // Past the first renewal of the token: still converged, renewed before it expired.
    let renewal = Duration::from_secs(TOKEN_LIFETIME_SECONDS - 300 + 6);
    tokio::time::sleep(renewal.saturating_sub(start.elapsed())).await;
    let own_key = scenario.key_name("own");
    let before = key_requests(env, vault_name(env, &env.vault_url), &own_key).await;
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS * 2)).await;
    let after = key_requests(env, vault_name(env, &env.vault_url), &own_key).await;
    assert!(
        after.get("get_key") > before.get("get_key"),
        "resyncs go on: {before:?} -> {after:?}"
    );
    scenario.wait_ready("own", "True").await;
    let issued = exchanges(env, &client_id).await;
    let own_callers = callers(env, &own_key).await;
    let other_callers = callers(env, &scenario.key_name("other")).await;
    let mut unreached = BTreeMap::new();
    for name in ["ghost", "bare", "unfederated", "none"] {
        unreached.insert(name, callers(env, &scenario.key_name(name)).await);
    }
    figure(
        "namespace_identity",
        json!({"exchanges": issued, "own_key_callers": own_callers, "other_vault_callers": other_callers, "unreached": unreached}),
    );
    assert!(
        issued.get("issued").copied().unwrap_or(0) >= 2,
        "the token was renewed: {issued:?}"
    );
    assert!(
        issued.get("AADSTS70021").copied().unwrap_or(0) > 0,
        "the unfederated ServiceAccount was refused: {issued:?}"
    );
    assert!(own_callers.get(&client_id).copied().unwrap_or(0) > 0);
    assert!(other_callers.get(&client_id).copied().unwrap_or(0) > 0);
    for (key, seen) in [("own", &own_callers), ("other", &other_callers)] {
        assert!(
            !seen.contains_key("static") && !seen.contains_key("expired"),
            "{key}: only the team's identity, never an expired token: {seen:?}"
        );
    }
    for (name, seen) in &unreached {
        assert!(
            seen.is_empty(),
            "{name}: no vault request without a usable identity: {seen:?}"
        );
    }
    let logs = operator.logs();
    assert!(
        !logs.contains("kvemu.") && !logs.contains("eyJ"),
        "no token in the operator's log"
    );
}

/// The namespace default (--namespace-identity-service-account): a VaultKey that names no
/// identity acts with its namespace's ServiceAccount of that name; once that ServiceAccount is
/// gone, --require-namespace-identity stops it (IdentityRequired, saying what to create) and
/// no request reaches the vault.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_default_identity_acts_for_vaultkeys_that_name_none() {
    let scenario = Scenario::shared("nsdefault").await;
    let env = &scenario.env;
    let login_url = std::env::var("VAULTKEY_TEST_LOGIN_URL")
        .expect("VAULTKEY_TEST_LOGIN_URL: run through tests/env/testenv.sh");
    let ns = scenario.ns.clone();
    let client_id = format!("client-{ns}");
    service_account(
        &scenario,
        "vaultkeys",
        json!({
            "azure.workload.identity/client-id": client_id,
            "azure.workload.identity/tenant-id": "tenant-e2e",
        }),
    )
    .await;
    let federation = json!({
        "tenantId": "tenant-e2e",
        "clientId": client_id,
        "subject": format!("system:serviceaccount:{ns}:vaultkeys"),
        "vaults": ["default"],
    });
    let added = reqwest::Client::new()
        .post(format!("{}/identities", env.emulator_admin))
        .header("content-type", "application/json")
        .body(federation.to_string())
        .send()
        .await
        .expect("emulator admin reachable");
    assert!(added.status().is_success());
    scenario
        .create_vaultkey("implicit", &env.vault_url, "  keyType: EC\n")
        .await;
    let _operator = scenario.start_operator(&[
        "--resync-seconds",
        &RESYNC_SECONDS.to_string(),
        "--require-namespace-identity",
        "--namespace-identity-service-account",
        "vaultkeys",
        "--emulator-authority-host",
        &login_url,
    ]);
    scenario.wait_ready("implicit", "True").await;
    let key = scenario.key_name("implicit");
    let seen = callers(env, &key).await;
    assert!(seen.get(&client_id).copied().unwrap_or(0) > 0, "{seen:?}");
    assert!(
        !seen.contains_key("static"),
        "never the operator's identity: {seen:?}"
    );

    let sas: Api<ServiceAccount> = Api::namespaced(scenario.client.clone(), &ns);
    sas.delete("vaultkeys", &DeleteParams::default())
        .await
        .expect("ServiceAccount deleted");
    let (_, message) = ready_reason(&wait_reason(&scenario, "implicit", "IdentityRequired").await);
    assert!(
        message.contains("create ServiceAccount vaultkeys"),
        "says what to create: {message}"
    );
    let stopped = callers(env, &key).await;
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS * 3)).await;
    assert_eq!(
        callers(env, &key).await,
        stopped,
        "no vault request without an identity"
    );
}
