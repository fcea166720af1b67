//! Expiry signals end to end: a key inside its rotation policy's Notify window with no
//! rotation before its expiry gets one Warning event (the emulator's clock and the operator's
//! shifted into the window). A binary of its own: the clock shift is global, and a test running
//! beside it would see its keys move in time.
//!
//!   tests/env/testenv.sh run -- cargo test --test expiry_signals

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use vaultkey_operator::api::VaultKey;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn warnings(events: &[(String, String)]) -> Vec<String> {
    events
        .iter()
        .filter(|(reason, _)| reason == "ExpiringWithoutRotation")
        .map(|(_, note)| note.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_in_its_notify_window_without_a_rotation_first_is_announced_once() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "expiry").await;
    let operator = Operator::start(&env, &ns, 2);
    let vault = env.vault(&env.vault_url);
    let key = format!("expiry-{ns}");
    create(&client, &ns, &format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: notify}}\nspec:\n  vaultUrl: {}\n  keyName: {key}\n  keyType: EC\n  rotationPolicy:\n    expiresIn: P28D\n    lifetimeActions:\n      - {{action: Notify, timeBeforeExpiry: P7D}}\n",
        env.vault_url
    ))
    .await
    .unwrap();
    wait_ready(&client, &ns, "notify", "True").await;
    // A rotation makes a version that expires in 28 days (the policy's expiresIn).
    Api::<VaultKey>::namespaced(client.clone(), &ns)
        .patch(
            "notify",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rotateToken": "r1"}})),
        )
        .await
        .unwrap();
    let rotated = eventually("a version that expires", WAIT, || async {
        let latest = vault.get_key(&key).await.ok()??;
        latest.expires_on.is_some().then_some(latest)
    })
    .await;
    wait_ready(&client, &ns, "notify", "True").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        warnings(&events(&client, &ns, "notify").await).is_empty(),
        "21 days before the Notify window: no warning"
    );
    drop(operator);

    // 22 days later (by the vault's clock and the operator's): 6 days before the expiry, in
    // the 7-day window, and nothing rotates the key.
    let offset = env.shift_clock(22 * 24 * 3600).await.to_string();
    let _operator =
        Operator::start_with(&env, &ns, 2, &["--emulator-clock-offset-seconds", &offset]);
    let events = events_once(&client, &ns, "notify", "ExpiringWithoutRotation").await;
    let notes = warnings(&events);
    assert!(
        notes[0].contains(&rotated.version) && notes[0].contains("P7D"),
        "{notes:?}"
    );
    // Announced once: status remembers the version; later resyncs stay silent.
    let vk = wait_ready(&client, &ns, "notify", "True").await;
    assert_eq!(
        vk.status.unwrap().expiry_warned_version.as_deref(),
        Some(rotated.version.as_str())
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        warnings(&events_once(&client, &ns, "notify", "ExpiringWithoutRotation").await).len(),
        1
    );
    assert_eq!(
        vault.get_key(&key).await.unwrap().unwrap().version,
        rotated.version
    );
}
