//! Two operator processes with leader election against the real control plane: only the
//! leader reconciles; killing it hands over within the lease duration; no key gets a
//! duplicate version.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use vaultkey_operator::api::VaultKey;

use support::*;

async fn holder(client: &kube::Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt("vaultkey-operator")
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_reconciles_and_a_successor_takes_over() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "leader").await;
    let vault = env.vault(&env.vault_url);
    let start = |name: &str| {
        Operator::start_with(
            &env,
            &ns,
            2,
            &[
                "--leader-election",
                "--leader-election-namespace",
                &ns,
                "--lease-duration-seconds",
                "6",
                "--instance",
                name,
            ],
        )
    };
    let mut a = start("a");
    let mut b = start("b");

    let first = eventually("a leader", Duration::from_secs(30), || holder(&client, &ns)).await;
    for i in 0..3 {
        create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: k{i}}}\nspec:\n  vaultUrl: {}\n  keyName: le{i}-{ns}\n  keyType: EC\n", env.vault_url)).await.unwrap();
    }
    for i in 0..3 {
        wait_ready(&client, &ns, &format!("k{i}"), "True").await;
    }
    let (leader, standby) = if first == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(
        leader.sum("vaultkey_reconciles_total", &[]).await > 0.0,
        "the leader reconciles"
    );
    assert_eq!(
        standby.sum("vaultkey_reconciles_total", &[]).await,
        0.0,
        "the standby does not"
    );

    // The leader dies without releasing the Lease; the standby takes over after it expires.
    drop(std::mem::replace(leader, start("c")));
    let successor = eventually("a new leader", Duration::from_secs(30), || async {
        holder(&client, &ns).await.filter(|h| *h != first)
    })
    .await;
    assert_ne!(successor, first);

    // The new leader serves changes: a new key and a rotation, each exactly once.
    create(&client, &ns, &format!("apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: k3}}\nspec:\n  vaultUrl: {}\n  keyName: le3-{ns}\n  keyType: EC\n", env.vault_url)).await.unwrap();
    wait_ready(&client, &ns, "k3", "True").await;
    Api::<VaultKey>::namespaced(client.clone(), &ns)
        .patch(
            "k0",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"rotateToken": "after-failover"}})),
        )
        .await
        .unwrap();
    eventually(
        "rotation after failover",
        Duration::from_secs(60),
        || async {
            let vk = get_vk(&client, &ns, "k0").await;
            (vk.status?.observed_rotate_token.as_deref() == Some("after-failover")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let versions = |i: usize| {
        let vault = vault.clone();
        let key = format!("le{i}-{ns}");
        async move { vault.list_versions(&key).await.unwrap().len() }
    };
    assert_eq!(versions(0).await, 2, "one rotation, one new version");
    for i in 1..4 {
        assert_eq!(versions(i).await, 1, "no duplicate version for k{i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_the_lease_for_a_fast_handover() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "handover").await;
    let args = |name: &'static str| {
        [
            "--leader-election",
            "--leader-election-namespace",
            ns.as_str(),
            "--lease-duration-seconds",
            "60",
            "--instance",
            name,
            // Within the test's 10 s for the process to exit, as a pod's grace period would be.
            "--shutdown-grace-seconds",
            "5",
        ]
        .map(str::to_owned)
    };
    let a_args = args("a");
    let a = Operator::start_with(
        &env,
        &ns,
        2,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    eventually("a leads", Duration::from_secs(30), || async {
        (holder(&client, &ns).await? == "a").then_some(())
    })
    .await;
    let b_args = args("b");
    let _b = Operator::start_with(
        &env,
        &ns,
        2,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    a.terminate();
    // With a 60 s lease, only a released Lease lets b lead this quickly.
    eventually(
        "b leads after a's graceful shutdown",
        Duration::from_secs(20),
        || async { (holder(&client, &ns).await? == "b").then_some(()) },
    )
    .await;
}
