//! End-to-end: the real operator binary against a real kube-apiserver + etcd and the Key Vault
//! emulator, all started by `tests/env/testenv.sh`. Each test has its own namespace and its own
//! operator process watching only that namespace, and asserts on both sides.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use vaultkey_operator::api::{OWNER_TAG, VaultKey};
use vaultkey_operator::keyvault::{KeyProperties, KeyVault};

use support::*;

const WAIT: Duration = Duration::from_secs(60);

async fn version_count(vault: &dyn KeyVault, key: &str) -> usize {
    vault
        .list_versions(key)
        .await
        .expect("versions listable")
        .len()
}

async fn patch_spec(client: &kube::Client, ns: &str, name: &str, spec: serde_json::Value) {
    Api::<VaultKey>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("spec patched");
}

/// Scenarios 1-3 of the how-to: create with options and a rotation policy, rotate by spec,
/// and see Key Vault's automatic rotation in status. One test, because the emulator's clock
/// shift is global and would rotate other tests' keys.
#[tokio::test(flavor = "multi_thread")]
async fn how_to_flow_with_manual_and_automatic_rotation() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "howto").await;
    let _operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    let key = format!("howto-{ns}");
    let manifest = format!(
        r#"
apiVersion: vaultkey.dev/v1alpha1
kind: VaultKey
metadata: {{name: signing}}
spec:
  vaultUrl: {url}
  keyName: {key}
  keyType: RSA
  keySize: 2048
  keyOps: [encrypt, decrypt]
  attributes:
    expiresAfter: P1Y
  tags: {{project: test-project}}
  rotationPolicy:
    expiresIn: P90D
    lifetimeActions:
      - {{action: Rotate, timeAfterCreate: P30D}}
      - {{action: Notify, timeBeforeExpiry: P7D}}
"#,
        url = env.vault_url
    );
    create(&client, &ns, &manifest)
        .await
        .expect("how-to manifest accepted");

    // kubectl wait, as a user would.
    let wait = tokio::process::Command::new("kubectl")
        .args(["--kubeconfig"])
        .arg(&env.kubeconfig)
        .args([
            "wait",
            "-n",
            &ns,
            "--for=condition=Ready",
            "vaultkey/signing",
            "--timeout=60s",
        ])
        .output()
        .await
        .expect("kubectl runs");
    assert!(
        wait.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&wait.stderr)
    );

    let vk = wait_ready(&client, &ns, "signing", "True").await;
    let status = vk.status.clone().unwrap();
    let latest = vault
        .get_key(&key)
        .await
        .unwrap()
        .expect("key exists in the vault");
    assert_eq!(
        status.current_version.as_deref(),
        Some(latest.version.as_str())
    );
    assert_eq!(status.current_key_id, Some(latest.versioned_id()));
    assert_eq!(status.key_id, Some(latest.key_id.clone()));
    assert_eq!(latest.key_type, "RSA");
    assert_eq!(latest.key_size, Some(2048));
    assert_eq!(
        latest.key_ops,
        ["decrypt".to_string(), "encrypt".to_string()].into()
    );
    assert_eq!(
        latest.tags.get("project").map(String::as_str),
        Some("test-project")
    );
    assert_eq!(latest.tags.get(OWNER_TAG), Some(&format!("{ns}/signing")));
    let created = latest.created.unwrap();
    let exp = latest.expires_on.expect("expiry set one year out");
    // The operator counts the year from its own clock just before the create; the vault's
    // `created` may be a second or two later (the same minute of tolerance the plan allows).
    let lifetime = (exp - created).num_seconds();
    assert!(
        (365 * 86_400 - 60..=366 * 86_400).contains(&lifetime),
        "expiry one year after creation: exp {exp}, created {created}"
    );
    let policy = vault
        .get_rotation_policy(&key)
        .await
        .unwrap()
        .expect("policy set");
    assert_eq!(policy.expires_in.as_deref(), Some("P90D"));
    assert_eq!(policy.actions.len(), 2);
    assert!(
        policy
            .actions
            .iter()
            .any(|a| a.action.eq_ignore_ascii_case("rotate")
                && a.time_after_create.as_deref() == Some("P30D"))
    );
    assert!(
        policy
            .actions
            .iter()
            .any(|a| a.action.eq_ignore_ascii_case("notify")
                && a.time_before_expiry.as_deref() == Some("P7D"))
    );
    assert!(
        status.next_rotation_time.is_some(),
        "next rotation computed from the policy"
    );
    assert_eq!(version_count(vault.as_ref(), &key).await, 1);

    // 2. Manual rotation through the spec: exactly one new version per token change.
    patch_spec(
        &client,
        &ns,
        "signing",
        serde_json::json!({"rotateToken": "2026-11-25"}),
    )
    .await;
    let before = latest.version.clone();
    let vk = eventually("manual rotation in status", WAIT, || async {
        let vk = get_vk(&client, &ns, "signing").await;
        let s = vk.status.as_ref()?;
        (s.observed_rotate_token.as_deref() == Some("2026-11-25")
            && s.current_version.as_deref() != Some(before.as_str()))
        .then_some(vk.clone())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // two more resyncs must not rotate again
    assert_eq!(
        version_count(vault.as_ref(), &key).await,
        2,
        "exactly one new version"
    );
    let latest = vault.get_key(&key).await.unwrap().unwrap();
    assert_eq!(
        vk.status.as_ref().unwrap().current_version.as_deref(),
        Some(latest.version.as_str())
    );
    events_once(&client, &ns, "signing", "Rotated").await;

    // 3. Automatic rotation: 31 days later Key Vault has rotated; status follows.
    let shifted = env
        .emulator_post(&format!("/time-shift?seconds={}", 31 * 24 * 3600))
        .await;
    assert!(
        shifted.to_string().contains(&key),
        "the emulator rotated the key: {shifted}"
    );
    let auto = eventually("automatic rotation in status", WAIT, || async {
        let vk = get_vk(&client, &ns, "signing").await;
        let s = vk.status.clone()?;
        (s.version_count == Some(3)).then_some(s)
    })
    .await;
    let latest = vault.get_key(&key).await.unwrap().unwrap();
    assert_eq!(
        auto.current_version.as_deref(),
        Some(latest.version.as_str())
    );
    assert_eq!(version_count(vault.as_ref(), &key).await, 3);
    assert!(auto.last_rotation_time.is_some());
}

/// 4a. Material whose type contradicts keyType (EC under RSA, RSA under EC) is refused before
/// any vault call, naming spec.keyType, and no key is made.
#[tokio::test(flavor = "multi_thread")]
async fn imported_material_of_another_type_is_refused_before_the_vault() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "mismatch").await;
    let _operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "material"},
        "stringData": {
            "ec.pem": include_str!("fixtures/key_material/ec_p256_pkcs8.pem"),
            "rsa.json": include_str!("fixtures/key_material/rsa2048.jwk.json"),
        }
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    for (name, key_type, entry) in [
        ("ec-as-rsa", "RSA", "ec.pem"),
        ("rsa-as-ec", "EC", "rsa.json"),
    ] {
        let key = format!("{name}-{ns}");
        create(
            &client,
            &ns,
            &format!(
                "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: {name}}}\nspec:\n  vaultUrl: {}\n  keyName: {key}\n  keyType: {key_type}\n  import: {{secretRef: {{name: material, key: {entry}}}}}\n",
                env.vault_url
            ),
        )
        .await
        .unwrap();
        let vk = wait_ready(&client, &ns, name, "False").await;
        let ready = vk.ready_condition().expect("Ready");
        assert_eq!(ready.reason, "InvalidKeyMaterial", "{name}: {ready:?}");
        assert!(
            ready.message.contains("keyType") && ready.message.contains("import.secretRef"),
            "{name}: {}",
            ready.message
        );
        assert!(
            vault.get_key(&key).await.unwrap().is_none(),
            "{name}: nothing imported"
        );
    }
}

/// 4. Import from a Secret: once, not again on resync, once more when the material changes,
/// and the material never reaches the operator's logs.
#[tokio::test(flavor = "multi_thread")]
async fn imports_material_once_per_change_without_leaking_it() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "import").await;
    let operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    let key = format!("import-{ns}");
    let jwk = include_str!("fixtures/key_material/azure_doc_rsa.jwk.json");
    let pem = include_str!("fixtures/key_material/rsa2048_pkcs8.pem");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "material"},
        "stringData": {"key.json": jwk}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    create(
        &client,
        &ns,
        &format!(
            "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: imported}}\nspec:\n  vaultUrl: {}\n  keyName: {key}\n  keyType: RSA\n  import: {{secretRef: {{name: material, key: key.json}}}}\n",
            env.vault_url
        ),
    )
    .await
    .unwrap();
    let vk = wait_ready(&client, &ns, "imported", "True").await;
    let first = vault.get_key(&key).await.unwrap().unwrap();
    let status = vk.status.unwrap();
    assert_eq!(status.public_key_thumbprint, first.public_thumbprint);
    assert!(
        status
            .imported_material
            .as_deref()
            .is_some_and(|f| f.starts_with("sha256:"))
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        version_count(vault.as_ref(), &key).await,
        1,
        "a resync does not import again"
    );

    // New material: exactly one new version.
    secrets
        .patch(
            "material",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"key.json": pem}})),
        )
        .await
        .unwrap();
    eventually("second import", WAIT, || async {
        let latest = vault.get_key(&key).await.ok()??;
        (latest.version != first.version).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        version_count(vault.as_ref(), &key).await,
        2,
        "changed material imports exactly once"
    );
    events_once(&client, &ns, "imported", "Imported").await;

    // No piece of the private members in the logs (trace level), events or status.
    let logs = operator.logs();
    let vk_text = serde_json::to_string(&get_vk(&client, &ns, "imported").await).unwrap();
    let event_text = format!("{:?}", events(&client, &ns, "imported").await);
    let private: serde_json::Value = serde_json::from_str(jwk).unwrap();
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        let value = private[member].as_str().unwrap();
        for piece in value.as_bytes().chunks(16).filter(|c| c.len() == 16) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(
                !logs.contains(piece),
                "private member {member} leaked into the logs"
            );
            assert!(
                !vk_text.contains(piece) && !event_text.contains(piece),
                "private member {member} leaked"
            );
        }
    }
    let pem_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for piece in pem_body.as_bytes().chunks(16).filter(|c| c.len() == 16) {
        assert!(
            !logs.contains(std::str::from_utf8(piece).unwrap()),
            "PEM material leaked into the logs"
        );
    }
}

/// 5. EC P-256 with sign/verify, and oct-HSM.
#[tokio::test(flavor = "multi_thread")]
async fn ec_and_oct_hsm_keys() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "types").await;
    let _operator = Operator::start(&env, &ns, 5);
    let vault = env.vault(&env.vault_url);
    let ec = format!("ec-{ns}");
    let oct = format!("oct-{ns}");
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: ec}}\nspec:\n  vaultUrl: {}\n  keyName: {ec}\n  keyType: EC\n  curve: P-256\n  keyOps: [sign, verify]\n", env.vault_url)).await.unwrap();
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: oct}}\nspec:\n  vaultUrl: {}\n  keyName: {oct}\n  keyType: oct-HSM\n  keySize: 256\n", env.vault_url)).await.unwrap();
    let vk = wait_ready(&client, &ns, "ec", "True").await;
    let key = vault.get_key(&ec).await.unwrap().unwrap();
    assert_eq!(
        (key.key_type.as_str(), key.curve.as_deref()),
        ("EC", Some("P-256"))
    );
    assert_eq!(
        key.key_ops,
        ["sign".to_string(), "verify".to_string()].into()
    );
    assert_eq!(vk.status.unwrap().curve.as_deref(), Some("P-256"));
    wait_ready(&client, &ns, "oct", "True").await;
    let key = vault.get_key(&oct).await.unwrap().unwrap();
    assert_eq!(key.key_type, "oct-HSM");
}

/// 6. Drift in the vault is put back without a new version; a spec change is followed.
#[tokio::test(flavor = "multi_thread")]
async fn drift_is_corrected_and_spec_changes_followed() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "drift").await;
    let _operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    let key = format!("drift-{ns}");
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: drift}}\nspec:\n  vaultUrl: {}\n  keyName: {key}\n  keyType: RSA\n  keyOps: [wrapKey, unwrapKey]\n  tags: {{team: payments}}\n", env.vault_url)).await.unwrap();
    wait_ready(&client, &ns, "drift", "True").await;
    let original = vault.get_key(&key).await.unwrap().unwrap();

    // Someone changes the key in the portal.
    let mut tags = original.tags.clone();
    tags.insert("team".into(), "hijacked".into());
    tags.insert("extra".into(), "x".into());
    let tampered = KeyProperties {
        enabled: Some(false),
        key_ops: Some([vaultkey_operator::api::KeyOperation::Encrypt].into()),
        tags: Some(tags),
        ..Default::default()
    };
    vault
        .update_key(&key, &original.version, &tampered)
        .await
        .unwrap();
    let restored = eventually("drift corrected", WAIT, || async {
        let k = vault.get_key(&key).await.ok()??;
        (k.enabled
            && k.tags.get("team").map(String::as_str) == Some("payments")
            && !k.tags.contains_key("extra"))
        .then_some(k)
    })
    .await;
    assert_eq!(
        restored.key_ops,
        ["unwrapKey".to_string(), "wrapKey".to_string()].into()
    );
    assert_eq!(
        restored.version, original.version,
        "no new version for property drift"
    );
    events_once(&client, &ns, "drift", "DriftCorrected").await;

    // A spec change is followed, still without a new version.
    patch_spec(&client, &ns, "drift", serde_json::json!({"tags": {"team": "payments", "tier": "gold"}, "attributes": {"enabled": false}})).await;
    eventually("spec change applied", WAIT, || async {
        let k = vault.get_key(&key).await.ok()??;
        (!k.enabled && k.tags.get("tier").map(String::as_str) == Some("gold")).then_some(())
    })
    .await;
    wait_ready(&client, &ns, "drift", "True").await;
    assert_eq!(version_count(vault.as_ref(), &key).await, 1);

    // A type change makes a new version of the same key.
    patch_spec(&client, &ns, "drift", serde_json::json!({"keySize": 3072})).await;
    eventually("new version for a size change", WAIT, || async {
        let k = vault.get_key(&key).await.ok()??;
        (k.key_size == Some(3072)).then_some(())
    })
    .await;
    assert_eq!(version_count(vault.as_ref(), &key).await, 2);
}

/// 7. Retain leaves the key, Delete soft-deletes it, Purge purges it; finalizers go. Only
/// the policies that touch the vault hold a finalizer; a Retain VaultKey switched to Delete
/// gets one, and its deletion then soft-deletes the key.
#[tokio::test(flavor = "multi_thread")]
async fn deletion_policies() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "delete").await;
    let operator = Operator::start(&env, &ns, 5);
    let vault = env.vault(&env.purgeable_vault_url);
    let api: Api<VaultKey> = Api::namespaced(client.clone(), &ns);
    let has_finalizer = |vk: &VaultKey| {
        vk.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "vaultkey.dev/cleanup")
    };
    for (name, policy) in [
        ("retain", "Retain"),
        ("delete", "Delete"),
        ("purge", "Purge"),
        ("switched", "Retain"),
    ] {
        create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: {name}}}\nspec:\n  vaultUrl: {}\n  keyName: {name}-{ns}\n  keyType: EC\n  deletionPolicy: {policy}\n", env.purgeable_vault_url)).await.unwrap();
        let vk = wait_ready(&client, &ns, name, "True").await;
        assert_eq!(has_finalizer(&vk), policy != "Retain", "{name}: {policy}");
    }
    patch_spec(
        &client,
        &ns,
        "switched",
        serde_json::json!({"deletionPolicy": "Delete"}),
    )
    .await;
    eventually("the finalizer once the policy is Delete", WAIT, || async {
        has_finalizer(&api.get("switched").await.ok()?).then_some(())
    })
    .await;
    let namespace_label = format!("namespace=\"{ns}\"");
    let gauges = || async {
        operator
            .metrics()
            .await
            .into_iter()
            .map(|(series, _)| series)
            .filter(|s| s.starts_with("vaultkey_key_ready") && s.contains(&namespace_label))
            .count()
    };
    assert_eq!(gauges().await, 4, "one Ready gauge per VaultKey");
    for name in ["retain", "delete", "purge", "switched"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["retain", "delete", "purge", "switched"] {
        eventually(&format!("{name} gone from Kubernetes"), WAIT, || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    // Each VaultKey's gauges go with it, with or without a finalizer (Retain holds none, so
    // no cleanup runs for it): the watch's delete is what the operator acts on.
    eventually("the deleted VaultKeys' gauges removed", WAIT, || async {
        (gauges().await == 0).then_some(())
    })
    .await;
    assert!(
        vault
            .get_key(&format!("retain-{ns}"))
            .await
            .unwrap()
            .is_some(),
        "Retain leaves the key"
    );
    assert!(
        vault
            .get_key(&format!("delete-{ns}"))
            .await
            .unwrap()
            .is_none()
    );
    for name in ["delete", "switched"] {
        assert!(
            vault
                .get_key(&format!("{name}-{ns}"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            vault
                .get_deleted_key(&format!("{name}-{ns}"))
                .await
                .unwrap()
                .is_some(),
            "{name}: Delete soft-deletes"
        );
    }
    assert!(
        vault
            .get_key(&format!("purge-{ns}"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        vault
            .get_deleted_key(&format!("purge-{ns}"))
            .await
            .unwrap()
            .is_none(),
        "Purge purges"
    );
}

/// 8a. Invalid manifests never reach the operator: the API server refuses them.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_manifests_are_rejected_at_apply_time() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "invalid").await;
    let cases = [
        ("keyType: DSA", "Unsupported value: \"DSA\""),
        (
            "keyType: EC\n  keySize: 2048",
            "keySize applies only to RSA",
        ),
        (
            "keyType: RSA\n  keySize: 1024",
            "RSA keySize must be one of [2048, 3072, 4096]",
        ),
        ("keyType: RSA\n  curve: P-256", "curve applies only to EC"),
        (
            "keyType: RSA\n  rotationPolicy: {expiresIn: 90days}",
            "expiresIn",
        ),
        (
            "keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Notify, timeAfterCreate: P30D}]}",
            "Notify action takes timeBeforeExpiry",
        ),
        (
            "keyType: RSA\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D}, {action: Rotate, timeAfterCreate: P40D}]}",
            "at most one Rotate",
        ),
        ("keyType: RSA\n  keyName: no_underscores", "keyName"),
        ("keyType: RSA\n  tags: {vaultkey.dev/owner: me}", "reserved"),
    ];
    for (i, (spec, expected)) in cases.iter().enumerate() {
        let manifest = format!(
            "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: bad-{i}}}\nspec:\n  vaultUrl: https://v.vault.azure.net\n  {spec}\n"
        );
        let err = kubectl_apply(&env, &ns, &manifest).await.expect_err(spec);
        assert!(err.contains(expected), "{spec}: {err}");
    }
    // Identity fields are immutable.
    create(&client, &ns, "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {name: fixed}\nspec:\n  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n").await.unwrap();
    let err = Api::<VaultKey>::namespaced(client.clone(), &ns)
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"vaultUrl": "https://w.vault.azure.net"}})),
        )
        .await
        .expect_err("vaultUrl change refused");
    assert!(err.to_string().contains("vaultUrl is immutable"), "{err}");
}

/// 8b. What the schema cannot see becomes Ready=False with a reason; the vault is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn problems_become_conditions_and_leave_the_vault_alone() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "problems").await;
    let mut operator = Operator::start(&env, &ns, 3);
    let vault = env.vault(&env.vault_url);

    // A key that exists and is not ours.
    let foreign = format!("foreign-{ns}");
    let create_params = vaultkey_operator::keyvault::CreateKey {
        key_type: vaultkey_operator::api::KeyType::Ec,
        size: None,
        curve: None,
        public_exponent: None,
        properties: KeyProperties {
            tags: Some([("owner".to_string(), "someone".to_string())].into()),
            ..Default::default()
        },
    };
    let existing = vault.create_key(&foreign, &create_params).await.unwrap();
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: foreign}}\nspec:\n  vaultUrl: {}\n  keyName: {foreign}\n  keyType: EC\n  tags: {{a: b}}\n", env.vault_url)).await.unwrap();
    let vk = wait_ready(&client, &ns, "foreign", "False").await;
    let (reason, message) = ready_reason(&vk);
    assert_eq!(reason, "KeyExistsNotAdopted");
    assert!(message.contains("adopt"), "{message}");

    // A second VaultKey naming a key another VaultKey owns.
    let owned = format!("owned-{ns}");
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: first}}\nspec:\n  vaultUrl: {}\n  keyName: {owned}\n  keyType: EC\n", env.vault_url)).await.unwrap();
    wait_ready(&client, &ns, "first", "True").await;
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: second}}\nspec:\n  vaultUrl: {}\n  keyName: {owned}\n  keyType: EC\n  adopt: true\n", env.vault_url)).await.unwrap();
    let vk = wait_ready(&client, &ns, "second", "False").await;
    assert_eq!(ready_reason(&vk).0, "OwnedByAnotherVaultKey");

    // A missing import Secret.
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: nosecret}}\nspec:\n  vaultUrl: {}\n  keyName: nosecret-{ns}\n  keyType: RSA\n  import: {{secretRef: {{name: absent, key: k}}}}\n", env.vault_url)).await.unwrap();
    let vk = wait_ready(&client, &ns, "nosecret", "False").await;
    let (reason, message) = ready_reason(&vk);
    assert_eq!(reason, "ImportSecretMissing");
    assert!(message.contains("absent"), "{message}");

    // An unreachable vault.
    let dead = format!("https://127.0.0.1:{}", free_port());
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: unreachable}}\nspec:\n  vaultUrl: {dead}\n  keyType: RSA\n")).await.unwrap();
    let vk = wait_ready(&client, &ns, "unreachable", "False").await;
    assert_eq!(ready_reason(&vk).0, "VaultUnreachable");

    // Nothing changed in the vault; Warning events were recorded; the operator still runs.
    let after = vault.get_key(&foreign).await.unwrap().unwrap();
    assert_eq!(after.version, existing.version);
    assert_eq!(after.tags, existing.tags, "the foreign key was not touched");
    assert_eq!(version_count(vault.as_ref(), &owned).await, 1);
    assert!(
        vault
            .get_key(&format!("nosecret-{ns}"))
            .await
            .unwrap()
            .is_none()
    );
    events_once(&client, &ns, "foreign", "KeyExistsNotAdopted").await;
    assert!(operator.is_running(), "the operator did not crash");
}

/// 9. Steady state: once converged, resyncs make no Key Vault write and no Kubernetes write.
#[tokio::test(flavor = "multi_thread")]
async fn steady_state_makes_no_writes() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "steady").await;
    let operator = Operator::start(&env, &ns, 1);
    // With a Notify action; with expiresIn only (Key Vault adds its own Notify); without a policy.
    let policies = [
        "\n  rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Notify, timeBeforeExpiry: P30D}]}",
        "\n  rotationPolicy: {expiresIn: P60D}",
        "",
    ];
    for (i, policy) in policies.iter().enumerate() {
        create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: k{i}}}\nspec:\n  vaultUrl: {}\n  keyName: steady{i}-{ns}\n  keyType: EC\n  keyOps: [sign, verify]\n  tags: {{a: b}}{policy}\n", env.vault_url)).await.unwrap();
    }
    for i in 0..3 {
        wait_ready(&client, &ns, &format!("k{i}"), "True").await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // let the last status writes settle
    let write_ops = [
        "create_key",
        "import_key",
        "update_key",
        "set_rotation_policy",
        "rotate_key",
        "delete_key",
        "purge_deleted_key",
    ];
    let mut before = Vec::new();
    for op in write_ops {
        before.push(
            operator
                .sum(
                    "vaultkey_keyvault_requests_total",
                    &[&format!("operation=\"{op}\"")],
                )
                .await,
        );
    }
    let kube_before = operator.sum("vaultkey_kubernetes_writes_total", &[]).await;
    // The vault is compared by reading each key, or by its key list (when it holds few
    // keys besides these: see tests/listing.rs).
    let compared = || async {
        operator
            .sum(
                "vaultkey_keyvault_requests_total",
                &["operation=\"get_key\""],
            )
            .await
            + operator
                .sum(
                    "vaultkey_keyvault_requests_total",
                    &["operation=\"list_keys\""],
                )
                .await
    };
    let reads_before = compared().await;
    tokio::time::sleep(Duration::from_secs(6)).await; // several resyncs at 1 s
    let mut after = Vec::new();
    for op in write_ops {
        after.push(
            operator
                .sum(
                    "vaultkey_keyvault_requests_total",
                    &[&format!("operation=\"{op}\"")],
                )
                .await,
        );
    }
    assert_eq!(before, after, "no Key Vault write in steady state");
    assert_eq!(
        operator.sum("vaultkey_kubernetes_writes_total", &[]).await,
        kube_before,
        "no Kubernetes write in steady state"
    );
    let reads = compared().await - reads_before;
    assert!(
        reads >= 3.0,
        "the keys were compared with the vault during the window ({reads} reads and lists)"
    );
    // Creation cost: one create per key, one policy write per key with a policy. Answered
    // requests are counted: an attempt lost to a dropped connection is retried after a re-read
    // and makes no version, which the vault's own version count confirms.
    assert_eq!(
        operator
            .sum(
                "vaultkey_keyvault_requests_total",
                &["operation=\"create_key\"", "status=\"200\""]
            )
            .await,
        3.0
    );
    assert_eq!(
        operator
            .sum(
                "vaultkey_keyvault_requests_total",
                &["operation=\"set_rotation_policy\"", "status=\"200\""]
            )
            .await,
        2.0
    );
    let vault = env.vault(&env.vault_url);
    for i in 0..3 {
        assert_eq!(
            version_count(vault.as_ref(), &format!("steady{i}-{ns}")).await,
            1
        );
    }
}

/// Tenancy: a namespace may use only the vaults the operator's access policy gives it; a
/// VaultKey outside its allowance is refused without any vault call.
#[tokio::test(flavor = "multi_thread")]
async fn vault_access_policy_confines_namespaces() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "tenancy").await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("access.yaml");
    std::fs::write(
        &policy,
        format!(
            "default: []\nnamespaces:\n  {ns}: ['{}']\n",
            env.purgeable_vault_url
        ),
    )
    .unwrap();
    let operator = Operator::start_with(
        &env,
        &ns,
        2,
        &["--vault-access-file", policy.to_str().unwrap()],
    );
    let denied = format!("denied-{ns}");
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: denied}}\nspec:\n  vaultUrl: {}\n  keyName: {denied}\n  keyType: EC\n", env.vault_url)).await.unwrap();
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: allowed}}\nspec:\n  vaultUrl: {}\n  keyName: allowed-{ns}\n  keyType: EC\n", env.purgeable_vault_url)).await.unwrap();
    let vk = wait_ready(&client, &ns, "denied", "False").await;
    let (reason, message) = ready_reason(&vk);
    assert_eq!(reason, "VaultNotAllowed");
    assert!(message.contains(&env.vault_url), "{message}");
    wait_ready(&client, &ns, "allowed", "True").await;
    assert!(
        env.vault(&env.vault_url)
            .get_key(&denied)
            .await
            .unwrap()
            .is_none()
    );
    // Not a single request for the denied key reached a vault.
    assert!(
        !operator.logs().contains(&format!("/keys/{denied}")),
        "no vault request for the denied key"
    );
}
