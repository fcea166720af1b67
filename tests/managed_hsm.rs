//! Managed HSM end to end: oct-HSM keys of every size created, converged and rotated through
//! the real operator against the emulator (which accepts oct-HSM in every vault, so no Managed
//! HSM mode is needed), and vault hosts outside the known clouds refused unless allowed.
//!
//!   tests/env/testenv.sh run -- cargo test --test managed_hsm

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use vaultkey_operator::api::VaultKey;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn oct_hsm_keys_of_every_size_converge_and_rotate() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "mhsm").await;
    let _operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    for size in [128, 192, 256] {
        create(&client, &ns, &format!(
            "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: oct-{size}}}\nspec:\n  vaultUrl: {url}\n  keyName: oct-{size}-{ns}\n  keyType: oct-HSM\n  keySize: {size}\n  keyOps: [wrapKey, unwrapKey]\n  publish: {{}}\n",
            url = env.vault_url
        ))
        .await
        .expect("oct-HSM manifest accepted");
    }
    for size in [128, 192, 256] {
        let vk = wait_ready(&client, &ns, &format!("oct-{size}"), "True").await;
        let status = vk.status.expect("status");
        assert_eq!(status.key_type.as_deref(), Some("oct-HSM"));
        // status.keySize and the SDK's key size stay empty for oct keys (a JWK of a symmetric
        // key carries no public size); the emulator's record holds the size.
        let key = vault
            .get_key(&format!("oct-{size}-{ns}"))
            .await
            .unwrap()
            .expect("key in the vault");
        assert_eq!(key.key_type, "oct-HSM");
        let dump = env
            .emulator_key("default", &format!("oct-{size}-{ns}"))
            .await
            .expect("emulator holds the key");
        assert!(dump.to_string().contains(&format!("{size}")), "{dump}");
        assert_eq!(
            key.key_ops,
            ["unwrapKey".to_string(), "wrapKey".to_string()].into()
        );
        // A symmetric key has no public part: its identifiers only are published.
        let cm = eventually(
            "the identifiers published",
            Duration::from_secs(30),
            || async {
                Api::<ConfigMap>::namespaced(client.clone(), &ns)
                    .get_opt(&format!("oct-{size}-vaultkey"))
                    .await
                    .ok()?
            },
        )
        .await;
        let data = cm.data.expect("data");
        let published: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            published,
            ["keyId", "keyIdVersionless", "keyName", "keyType", "version"]
        );
        assert_eq!(data["keyId"], key.versioned_id());
        assert_eq!(data["keyType"], "oct-HSM");
    }

    // A rotation of an HSM key (counted against the HSM create budget) makes one version.
    Api::<VaultKey>::namespaced(client.clone(), &ns)
        .patch(
            "oct-256",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"rotateToken": "r1"}})),
        )
        .await
        .expect("rotateToken set");
    let rotated = eventually(
        "oct-256 rotated",
        std::time::Duration::from_secs(60),
        || async {
            let vk = get_vk(&client, &ns, "oct-256").await;
            let status = vk.status.clone()?;
            (status.observed_rotate_token.as_deref() == Some("r1")
                && vk.ready_condition().is_some_and(|c| c.status == "True"))
            .then_some(status)
        },
    )
    .await;
    let versions = vault.list_versions(&format!("oct-256-{ns}")).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(rotated.key_type.as_deref(), Some("oct-HSM"));
}

/// A host outside the known clouds (and not allowed by --allowed-vault-hosts) is refused before
/// any request: no DNS lookup, no token. What the allow-list admits is unit-tested
/// (`vault_hosts::tests`): an admitted host here would be looked up in DNS, off this machine.
#[tokio::test(flavor = "multi_thread")]
async fn vault_hosts_outside_the_known_clouds_are_refused() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "hosts").await;
    let _operator = Operator::start_with(
        &env,
        &ns,
        2,
        &["--allowed-vault-hosts", "*.allowed.invalid"],
    );
    create(
        &client,
        &ns,
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {name: refused}\nspec:\n  vaultUrl: https://kv.elsewhere.invalid\n  keyType: RSA\n",
    )
    .await
    .unwrap();
    let vk = wait_ready(&client, &ns, "refused", "False").await;
    let (reason, message) = ready_reason(&vk);
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(
        message.contains(
            "spec.vaultUrl: kv.elsewhere.invalid is not a Key Vault or Managed HSM endpoint"
        ),
        "{message}"
    );
    assert!(
        message.contains("https://my-vault.vault.azure.net"),
        "{message}"
    );
    assert!(message.contains("--allowed-vault-hosts"), "{message}");
}
