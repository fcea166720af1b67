//! `spec.publish` end to end: the real operator binary, API server (with its garbage collector)
//! and Key Vault emulator. What consumers read is checked with consumers' tools: the PEM with
//! an X.509/SPKI parser (x509-parser), the JWKS by verifying JWTs signed with the imported
//! private keys (jsonwebtoken).
//!
//!   tests/env/testenv.sh run -- cargo test --test publish

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vaultkey_operator::api::VaultKey;
use vaultkey_operator::keyvault::KeyProperties;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as X509Key;
use x509_parser::x509::SubjectPublicKeyInfo;

use support::*;

const WAIT: Duration = Duration::from_secs(60);
const P256: &str = include_str!("fixtures/key_material/ec_p256_pkcs8.pem");
const P384: &str = include_str!("fixtures/key_material/ec_p384_pkcs8.pem");

async fn config_map(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("ConfigMaps readable")
}

/// Waits for the published ConfigMap to satisfy `check` on its data.
async fn published(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> ConfigMap {
    eventually(what, WAIT, || async {
        let cm = config_map(client, ns, name).await?;
        check(cm.data.as_ref()?).then_some(cm)
    })
    .await
}

fn kids(data: &BTreeMap<String, String>) -> Vec<String> {
    let jwks: JwkSet = serde_json::from_str(&data["jwks.json"]).expect("jwks.json is a JWK Set");
    jwks.keys
        .iter()
        .map(|k| k.common.key_id.clone().expect("every JWK has a kid"))
        .collect()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// A JWT signed with `pem` (a private key the test holds), `kid` in its header.
fn sign(pem: &str, alg: Algorithm, kid: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = Claims {
        sub: "publish-test".into(),
        exp: (chrono::Utc::now().timestamp() + 600) as u64,
    };
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .expect("token signed")
}

/// Verifies `token` as a JWT verifier does: the key is the JWKS entry its header's kid names.
fn verify(data: &BTreeMap<String, String>, token: &str) -> Result<(), String> {
    let jwks: JwkSet = serde_json::from_str(&data["jwks.json"]).map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or(format!("{kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Claims>(token, &key, &Validation::new(header.alg))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The published PEM, parsed by x509-parser: the SPKI's EC point or RSA modulus.
fn spki_key(data: &BTreeMap<String, String>) -> (String, Vec<u8>) {
    let (rest, pem) =
        x509_parser::pem::parse_x509_pem(data["publicKey.pem"].as_bytes()).expect("PEM");
    assert!(rest.iter().all(u8::is_ascii_whitespace), "one PEM block");
    assert_eq!(pem.label, "PUBLIC KEY");
    let (rest, spki) = SubjectPublicKeyInfo::from_der(&pem.contents).expect("SPKI DER");
    assert!(rest.is_empty());
    match spki.parsed().expect("a known key type") {
        X509Key::EC(point) => ("EC".into(), point.data().to_vec()),
        X509Key::RSA(rsa) => {
            let n = rsa.modulus;
            (
                "RSA".into(),
                n[n.iter().take_while(|b| **b == 0).count()..].to_vec(),
            )
        }
        _ => panic!("neither EC nor RSA"),
    }
}

fn jwk_member(data: &BTreeMap<String, String>, member: &str) -> Vec<u8> {
    let jwk: serde_json::Value = serde_json::from_str(&data["publicKey.jwk.json"]).unwrap();
    URL_SAFE_NO_PAD
        .decode(jwk[member].as_str().expect("member present"))
        .unwrap()
}

/// Imported EC material: publish; tokens signed by each imported version verify against the
/// JWKS after a new version (new material), until that version is disabled; the steady state
/// writes no ConfigMap and reads no older version again.
#[tokio::test(flavor = "multi_thread")]
async fn the_jwks_verifies_tokens_of_every_enabled_version_and_costs_nothing_when_unchanged() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "publish").await;
    let operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    let key = format!("publish-{ns}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "material"},
        "stringData": {"key.pem": P256}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    create(&client, &ns, &format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: signer}}\nspec:\n  vaultUrl: {}\n  keyName: {key}\n  keyType: EC\n  import: {{secretRef: {{name: material, key: key.pem}}}}\n  publish: {{}}\n",
        env.vault_url
    ))
    .await
    .unwrap();
    let vk = wait_ready(&client, &ns, "signer", "True").await;
    let first = vault.get_key(&key).await.unwrap().expect("imported");
    let first_kid = first.versioned_id();
    let cm = published(
        &client,
        &ns,
        "signer-vaultkey",
        "the first version published",
        |d| d.get("keyId") == Some(&first_kid),
    )
    .await;
    let data = cm.data.clone().unwrap();
    assert_eq!(data["keyIdVersionless"], first.key_id);
    assert_eq!(data["version"], first.version);
    assert_eq!(data["keyName"], key);
    assert_eq!(data["keyType"], "EC");
    assert!(
        !data.contains_key("expiresOn"),
        "an imported key without expiry"
    );
    assert_eq!(kids(&data), std::slice::from_ref(&first_kid));
    // Owned by the VaultKey (garbage-collected with it), marked for Reloader.
    let owner = &cm.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("VaultKey", vk.uid().unwrap().as_str())
    );
    assert_eq!(cm.annotations()["reloader.stakater.com/match"], "true");
    // The PEM is the SPKI of the key the JWK describes: 0x04 ‖ x ‖ y.
    let (kind, point) = spki_key(&data);
    assert_eq!(kind, "EC");
    assert_eq!(
        point,
        [vec![4], jwk_member(&data, "x"), jwk_member(&data, "y")].concat()
    );
    let token_1 = sign(P256, Algorithm::ES256, &first_kid);
    verify(&data, &token_1).expect("the first version's token verifies");

    // New material makes a new version: the JWKS lists both, newest first; both tokens verify.
    secrets
        .patch(
            "material",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"key.pem": P384}})),
        )
        .await
        .unwrap();
    let second = eventually("the second import", WAIT, || async {
        let latest = vault.get_key(&key).await.ok()??;
        (latest.version != first.version).then_some(latest)
    })
    .await;
    let second_kid = second.versioned_id();
    let cm = published(
        &client,
        &ns,
        "signer-vaultkey",
        "both versions published",
        |d| d.get("keyId") == Some(&second_kid),
    )
    .await;
    let data = cm.data.clone().unwrap();
    assert_eq!(kids(&data), [second_kid.clone(), first_kid.clone()]);
    let token_2 = sign(P384, Algorithm::ES384, &second_kid);
    verify(&data, &token_2).expect("the new version's token verifies");
    verify(&data, &token_1).expect("the old version's token still verifies");
    let (_, point) = spki_key(&data);
    assert_eq!(point.len(), 1 + 2 * 48, "the current PEM is the P-384 key");

    // Steady state: resyncs write no ConfigMap, and read no version by id (one key read and
    // one version list per resync).
    wait_ready(&client, &ns, "signer", "True").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = |m: &[(String, f64)]| {
        sum_series(
            m,
            "vaultkey_kubernetes_writes_total",
            &["kind=\"configmap\""],
        )
    };
    let reads = |m: &[(String, f64)]| {
        sum_series(
            m,
            "vaultkey_keyvault_requests_total",
            &["operation=\"get_key\""],
        )
    };
    let passes =
        |m: &[(String, f64)]| sum_series(m, "vaultkey_reconciles_total", &["outcome=\"ready\""]);
    let before = operator.metrics().await;
    assert_eq!(
        writes(&before),
        2.0,
        "one ConfigMap write at creation and one for the new version"
    );
    let version_before = cm.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = operator.metrics().await;
    let resyncs = passes(&after) - passes(&before);
    assert!(
        resyncs >= 2.0,
        "at least two resyncs in 7 s at 2 s: {resyncs}"
    );
    assert_eq!(
        writes(&after),
        writes(&before),
        "no ConfigMap write in the steady state"
    );
    assert!(
        reads(&after) - reads(&before) <= resyncs + 1.0,
        "one key read per resync ({resyncs} resyncs, {} reads): older versions are not read again",
        reads(&after) - reads(&before)
    );
    let cm = config_map(&client, &ns, "signer-vaultkey").await.unwrap();
    assert_eq!(cm.metadata.resource_version, version_before);

    // The old version disabled in the vault: it leaves the JWKS within a resync, and its
    // tokens no longer verify; the current version's still do.
    vault
        .update_key(
            &key,
            &first.version,
            &KeyProperties {
                enabled: Some(false),
                ..KeyProperties::default()
            },
        )
        .await
        .expect("old version disabled");
    let cm = published(
        &client,
        &ns,
        "signer-vaultkey",
        "the disabled version gone",
        |d| kids(d) == [second_kid.clone()],
    )
    .await;
    let data = cm.data.unwrap();
    assert!(verify(&data, &token_1).is_err());
    verify(&data, &token_2).expect("the current version's token verifies");
    assert_eq!(
        writes(&operator.metrics().await) - writes(&after),
        1.0,
        "one ConfigMap write for one change"
    );
}

/// A generated RSA key with a rotation policy: the PEM's modulus is the JWK's; a rotateToken
/// and Key Vault's automatic rotation (the emulator's clock shifted past the Rotate trigger)
/// each reach the ConfigMap within a resync, every version listed newest first.
#[tokio::test(flavor = "multi_thread")]
async fn manual_and_automatic_rotations_reach_the_published_config_map() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "publish-rot").await;
    let operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    let key = format!("publish-rot-{ns}");
    create(&client, &ns, &format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: rsa}}\nspec:\n  vaultUrl: {}\n  keyName: {key}\n  keyType: RSA\n  rotationPolicy:\n    expiresIn: P90D\n    lifetimeActions:\n      - {{action: Rotate, timeAfterCreate: P30D}}\n  publish: {{configMapName: rsa-public}}\n",
        env.vault_url
    ))
    .await
    .unwrap();
    let vk = wait_ready(&client, &ns, "rsa", "True").await;
    let status = vk.status.unwrap();
    let first_kid = status.current_key_id.clone().unwrap();
    let cm = published(&client, &ns, "rsa-public", "the key published", |d| {
        d.get("keyId") == Some(&first_kid) && d.contains_key("nextRotationTime")
    })
    .await;
    let data = cm.data.unwrap();
    let (kind, modulus) = spki_key(&data);
    assert_eq!(kind, "RSA");
    assert_eq!(modulus, jwk_member(&data, "n"));
    assert_eq!(modulus.len(), 256, "RSA 2048");
    let next = status.next_rotation_time.unwrap().0.to_string();
    assert_eq!(data["nextRotationTime"], next);
    assert!(
        !data.contains_key("expiresOn"),
        "created without an expiry (the policy's expiresIn applies to the versions it makes)"
    );

    // rotateToken: a new version, the JWKS lists both. A second later than the creation, so
    // that the order by creation time (whole seconds) is the order they were made in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Api::<VaultKey>::namespaced(client.clone(), &ns)
        .patch(
            "rsa",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rotateToken": "r1"}})),
        )
        .await
        .unwrap();
    let second = eventually("the manual rotation", WAIT, || async {
        let latest = vault.get_key(&key).await.ok()??;
        (latest.versioned_id() != first_kid).then_some(latest)
    })
    .await;
    let cm = published(
        &client,
        &ns,
        "rsa-public",
        "the manual rotation published",
        |d| kids(d) == [second.versioned_id(), first_kid.clone()],
    )
    .await;
    let expires = second
        .expires_on
        .expect("a rotated version expires (expiresIn)");
    let data = cm.data.unwrap();
    assert_eq!(
        data["expiresOn"],
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // The per-VaultKey gauges say the same: Ready, expiry and next rotation as Unix times.
    let next = chrono::DateTime::parse_from_rfc3339(&data["nextRotationTime"]).unwrap();
    let labels = [format!("namespace=\"{ns}\""), "name=\"rsa\"".to_owned()];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    eventually("the gauges at the new version", WAIT, || async {
        let m = operator.metrics().await;
        let gauge = |name: &str| sum_series(&m, name, &labels);
        (gauge("vaultkey_key_ready") == 1.0
            && gauge("vaultkey_key_expiry_timestamp_seconds") == expires.timestamp() as f64
            && gauge("vaultkey_key_next_rotation_timestamp_seconds") == next.timestamp() as f64)
            .then_some(())
    })
    .await;

    // Key Vault rotates by itself 31 days later: the ConfigMap follows within a resync.
    let shifted = env
        .emulator_post(&format!("/time-shift?seconds={}", 31 * 24 * 3600))
        .await;
    assert!(
        shifted.to_string().contains(&key),
        "the emulator rotated the key: {shifted}"
    );
    let third = vault.get_key(&key).await.unwrap().unwrap();
    assert_ne!(third.version, second.version);
    let cm = tokio::time::timeout(
        Duration::from_secs(2 * 2 + 3),
        published(
            &client,
            &ns,
            "rsa-public",
            "the automatic rotation published",
            |d| d.get("keyId") == Some(&third.versioned_id()),
        ),
    )
    .await
    .expect("published within a resync (2 s, +10 %) and a reconcile");
    let data = cm.data.unwrap();
    assert_eq!(
        kids(&data),
        [third.versioned_id(), second.versioned_id(), first_kid]
    );
}

/// A ConfigMap of the name that the VaultKey does not own is never overwritten: Ready=False
/// naming the field, one Warning event; once it is gone the VaultKey publishes, and deleting
/// the VaultKey takes its ConfigMap along (garbage collector).
#[tokio::test(flavor = "multi_thread")]
async fn a_config_map_the_vaultkey_does_not_own_is_left_alone() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "publish-own").await;
    let _operator = Operator::start(&env, &ns, 2);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "app-vaultkey"},
        "data": {"keyId": "someone else's"}
    }))
    .unwrap();
    configmaps
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    create(&client, &ns, &format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: app}}\nspec:\n  vaultUrl: {}\n  keyName: publish-own-{ns}\n  keyType: EC\n  publish: {{}}\n",
        env.vault_url
    ))
    .await
    .unwrap();
    let vk = wait_ready(&client, &ns, "app", "False").await;
    let (reason, message) = ready_reason(&vk);
    assert_eq!(reason, "ConfigMapNotOwned");
    assert!(
        message.contains("spec.publish") && message.contains("app-vaultkey"),
        "{message}"
    );
    events_once(&client, &ns, "app", "ConfigMapNotOwned").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cm = configmaps.get("app-vaultkey").await.unwrap();
    assert_eq!(
        cm.data.clone().unwrap(),
        BTreeMap::from([("keyId".into(), "someone else's".into())])
    );
    assert!(cm.owner_references().is_empty());
    let warnings = events(&client, &ns, "app")
        .await
        .into_iter()
        .filter(|(reason, _)| reason == "ConfigMapNotOwned")
        .count();
    assert_eq!(warnings, 1, "one Warning over several attempts");

    // The name is free: published at the next resync.
    configmaps
        .delete("app-vaultkey", &DeleteParams::default())
        .await
        .unwrap();
    wait_ready(&client, &ns, "app", "True").await;
    let cm = published(&client, &ns, "app-vaultkey", "published once free", |d| {
        d.get("keyType").map(String::as_str) == Some("EC")
    })
    .await;
    assert_eq!(cm.owner_references()[0].uid, vk.uid().unwrap());

    // Deleting the VaultKey (deletionPolicy Retain) removes the ConfigMap with it.
    Api::<VaultKey>::namespaced(client.clone(), &ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ConfigMap garbage-collected", WAIT, || async {
        config_map(&client, &ns, "app-vaultkey")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// spec.retention: a superseded version stays enabled through the grace window and is disabled
/// after it (the emulator's clock and the operator's shifted past it), once, with an event; the
/// current version is untouched and the JWKS drops the disabled version.
#[tokio::test(flavor = "multi_thread")]
async fn retention_disables_superseded_versions_after_the_grace_window() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "retention").await;
    let operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    let key = format!("retention-{ns}");
    create(&client, &ns, &format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: cmk}}\nspec:\n  vaultUrl: {}\n  keyName: {key}\n  keyType: EC\n  retention: {{disableSupersededAfter: P1D}}\n  publish: {{}}\n",
        env.vault_url
    ))
    .await
    .unwrap();
    let first = wait_ready(&client, &ns, "cmk", "True")
        .await
        .status
        .unwrap()
        .current_key_id
        .unwrap();
    Api::<VaultKey>::namespaced(client.clone(), &ns)
        .patch(
            "cmk",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rotateToken": "r1"}})),
        )
        .await
        .unwrap();
    let second = eventually("the rotation", WAIT, || async {
        let latest = vault.get_key(&key).await.ok()??;
        (latest.versioned_id() != first).then_some(latest.versioned_id())
    })
    .await;
    published(&client, &ns, "cmk-vaultkey", "both versions listed", |d| {
        kids(d) == [second.clone(), first.clone()]
    })
    .await;
    // Within the grace window (a few resyncs): both versions stay enabled.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let enabled = |versions: &[vaultkey_operator::keyvault::KeyVersion]| {
        versions.iter().filter(|v| v.enabled).count()
    };
    assert_eq!(enabled(&vault.list_versions(&key).await.unwrap()), 2);
    assert!(
        !events(&client, &ns, "cmk")
            .await
            .iter()
            .any(|(r, _)| r == "VersionDisabled")
    );
    drop(operator);

    // Two days later, by the vault's clock and the operator's.
    let offset = env.shift_clock(2 * 24 * 3600).await.to_string();
    let operator =
        Operator::start_with(&env, &ns, 2, &["--emulator-clock-offset-seconds", &offset]);
    published(
        &client,
        &ns,
        "cmk-vaultkey",
        "the superseded version gone",
        |d| kids(d) == std::slice::from_ref(&second),
    )
    .await;
    let versions = vault.list_versions(&key).await.unwrap();
    assert_eq!(enabled(&versions), 1);
    let current = vault.get_key(&key).await.unwrap().unwrap();
    assert_eq!(current.versioned_id(), second);
    assert!(current.enabled, "the current version is never disabled");
    let notes: Vec<String> = events_once(&client, &ns, "cmk", "VersionDisabled")
        .await
        .into_iter()
        .filter(|(r, _)| r == "VersionDisabled")
        .map(|(_, note)| note)
        .collect();
    let first_version = first.rsplit('/').next().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains(first_version) && notes[0].contains("disableSupersededAfter P1D"),
        "{notes:?}"
    );
    // Status shows it; later resyncs disable nothing more.
    let status = wait_ready(&client, &ns, "cmk", "True")
        .await
        .status
        .unwrap();
    assert!(
        status
            .versions
            .iter()
            .any(|v| v.version == first_version && !v.enabled),
        "{:?}",
        status.versions
    );
    let updates = operator
        .sum(
            "vaultkey_keyvault_requests_total",
            &["operation=\"update_key\""],
        )
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        operator
            .sum(
                "vaultkey_keyvault_requests_total",
                &["operation=\"update_key\""]
            )
            .await,
        updates
    );
}
