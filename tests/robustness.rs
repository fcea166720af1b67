//! Robustness: one object never stops the others, no failure runs faster than its backoff,
//! and a vault answer that contradicts status is confirmed before the operator acts on it.
//! Each test reproduces an example an outside probe found (see RELIABILITY.md, "Classes"),
//! against the real environment started by `tests/env/testenv.sh`; the emulator's dialects
//! (tests/kv-emulator/README.md) make it answer the way other Key Vault implementations do.

mod reliability_support;
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use vaultkey_operator::api::{OWNER_TAG, OWNER_UID_TAG, VaultKey};
use vaultkey_operator::keyvault::KeyProperties;

use reliability_support::*;
use support::*;

/// Waits until VaultKey `name`'s Ready condition has `reason`.
async fn wait_reason(scenario: &Scenario, name: &str, reason: &str, timeout: Duration) -> VaultKey {
    eventually(&format!("{name} with reason {reason}"), timeout, || async {
        let vk = scenario.vaultkey(name).await;
        (vk.ready_condition()?.reason == reason).then_some(vk)
    })
    .await
}

fn reasons(events: &[(String, String)], reason: &str) -> usize {
    events.iter().filter(|(r, _)| r == reason).count()
}

async fn readyz(metrics_url: &str) -> Option<(u16, String)> {
    let url = metrics_url.replace("/metrics", "/readyz");
    let response = reqwest::get(&url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

fn scenario_kubeconfig(scenario: &Scenario) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(&scenario.env.kubeconfig).unwrap()).unwrap()
}

/// The test environment's kubeconfig with the API server's address replaced by `server`.
fn kubeconfig_via(scenario: &Scenario, dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let mut config = scenario_kubeconfig(scenario);
    for cluster in config["clusters"].as_array_mut().expect("clusters") {
        cluster["cluster"]["server"] = json!(server);
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

/// An operator for the scenario's namespace that reaches the API server through `kubeconfig`;
/// the process and its metrics URL.
fn operator_via(
    scenario: &Scenario,
    kubeconfig: &std::path::Path,
) -> (std::process::Child, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_vaultkey-operator"))
        .args([
            "run",
            "--namespace",
            &scenario.ns,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--emulator-static-token",
            "t",
            "--emulator-skip-challenge-resource-check",
            "--shutdown-grace-seconds",
            "3",
        ])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("operator starts");
    (child, format!("http://127.0.0.1:{port}/metrics"))
}

/// Sends SIGTERM and returns how long the process took to exit.
fn terminate(operator: &mut OperatorProcess, limit: Duration) -> Duration {
    let start = Instant::now();
    operator.signal("TERM");
    while operator.is_running() {
        assert!(
            start.elapsed() < limit,
            "still running {limit:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// One object never stops the others
// ---------------------------------------------------------------------------------------------

const CRD: &str = "vaultkeys.vaultkey.dev";

/// The CRD without bounds on `publicExponent`, as an older CRD (format int32 only) was.
fn loosened(crd: &CustomResourceDefinition) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(crd).expect("CRD serialises");
    for version in value["spec"]["versions"].as_array_mut().expect("versions") {
        let spec = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        if let Some(exponent) = spec["properties"]["publicExponent"].as_object_mut() {
            exponent.remove("maximum");
        }
    }
    serde_json::from_value(value).expect("CRD deserialises")
}

/// A VaultKey the API server stored while its schema admitted an exponent above i32: the
/// operator cannot decode it. A freshly started operator used not to list VaultKeys at all
/// (nothing reconciled, /readyz 200, SIGTERM ignored); now the bad one is reported on itself,
/// counted, and the others reconcile.
#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_vaultkey_is_isolated_and_the_others_reconcile() {
    // Exclusive: the CRD is loosened for a moment.
    let scenario = Scenario::exclusive("undecodable").await;
    let crds: Api<CustomResourceDefinition> = Api::all(scenario.client.clone());
    let original = crds.get(CRD).await.expect("CRD installed");
    crds.replace(CRD, &PostParams::default(), &loosened(&original))
        .await
        .expect("CRD loosened");
    let raw: Api<DynamicObject> = Api::namespaced_with(
        scenario.client.clone(),
        &scenario.ns,
        &ApiResource::erase::<VaultKey>(&()),
    );
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "vaultkey.dev/v1alpha1",
        "kind": "VaultKey",
        "metadata": {"name": "bad"},
        "spec": {
            "vaultUrl": scenario.env.vault_url,
            "keyName": scenario.key_name("bad"),
            "keyType": "RSA",
            "publicExponent": 4_294_967_297u64,
        },
    }))
    .unwrap();
    // The API server serves the new schema a moment after the CRD changes.
    eventually(
        "the loosened CRD admits the object",
        Duration::from_secs(30),
        || async { raw.create(&PostParams::default(), &bad).await.ok() },
    )
    .await;
    let mut restored = crds.get(CRD).await.expect("CRD");
    restored.spec = original.spec.clone();
    crds.replace(CRD, &PostParams::default(), &restored)
        .await
        .expect("CRD restored");
    scenario
        .create_vaultkey("good", &scenario.env.vault_url, "  keyType: EC\n")
        .await;

    let mut operator = scenario.start_operator(&["--shutdown-grace-seconds", "5"]);
    scenario.wait_ready("good", "True").await;
    // Read raw: the object does not decode into a VaultKey here either.
    let message = eventually(
        "bad reported InvalidObject",
        Duration::from_secs(60),
        || async {
            let object = serde_json::to_value(raw.get("bad").await.ok()?).ok()?;
            let ready = object["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["reason"] == "InvalidObject")
                .then(|| ready["message"].as_str().unwrap_or_default().to_owned())
        },
    )
    .await;
    assert!(
        message.contains("spec.publicExponent") && message.contains("4294967297"),
        "the condition names the field and the value: {message}"
    );
    assert_eq!(
        operator.sum("vaultkey_undecodable_objects", &[]).await,
        1.0,
        "the metric counts the undecodable object"
    );
    let (status, _) = readyz(&operator.metrics_url)
        .await
        .expect("/readyz answers");
    assert_eq!(status, 200, "the watch lists: the operator is ready");
    // Reported once: the operator's own status write does not wake it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reasons(&scenario.events("bad").await, "InvalidObject"), 1);
    let logs = operator.logs();
    let took = terminate(&mut operator, Duration::from_secs(15));
    figure(
        "undecodable",
        json!({"sigterm_exit_seconds": took.as_secs_f64(), "log_lines": logs.lines().count()}),
    );
    assert!(
        logs.lines().count() < 200,
        "the log does not dump the object list: {} lines",
        logs.lines().count()
    );
}

/// With no API server to list from, /readyz says why, and SIGTERM still ends the process
/// while the watch is in backoff.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_and_sigterm_exits_while_the_watch_cannot_list() {
    let scenario = Scenario::shared("nolist").await;
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("https://127.0.0.1:{}", free_port());
    let kubeconfig = kubeconfig_via(&scenario, dir.path(), &dead);
    let (mut child, metrics) = operator_via(&scenario, &kubeconfig);
    let (status, body) = eventually("/readyz answers", Duration::from_secs(20), || async {
        readyz(&metrics).await
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("has not listed"), "{body}");
    // Let the watch fail a few times and back off.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _) = readyz(&metrics).await.expect("/readyz answers");
    assert_eq!(status, 503);
    let start = Instant::now();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM with the watch in backoff"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    figure(
        "sigterm_in_backoff",
        json!({"exit_seconds": start.elapsed().as_secs_f64()}),
    );
}

/// A TCP forwarder to the API server that can stop carrying bytes while keeping every
/// connection open, as when a pod's route to the API server goes: nothing fails, nothing
/// answers.
struct ApiServerRoute {
    server: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServerRoute {
    async fn start(target: String) -> ApiServerRoute {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(AtomicBool::new(true));
        // Copies one direction, holding each chunk while the route is down.
        async fn pipe(
            mut from: tokio::net::tcp::OwnedReadHalf,
            mut to: tokio::net::tcp::OwnedWriteHalf,
            open: std::sync::Arc<AtomicBool>,
        ) {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                while !open.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
        let task = {
            let open = open.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        continue;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::spawn(pipe(in_read, out_write, open.clone()));
                    tokio::spawn(pipe(out_read, in_write, open.clone()));
                }
            })
        };
        ApiServerRoute {
            server: format!("https://127.0.0.1:{port}"),
            open,
            task,
        }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for ApiServerRoute {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A synced operator whose route to the API server goes away (connections stay open, bytes
/// stop) turns unready within a probe, saying why, and Ready again when the route is back.
/// Its watch notices nothing for minutes, so readiness cannot rest on the watch having listed
/// once (issue 15: a pod with no route to the API server must not be Ready).
#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_while_the_api_server_is_unreachable_after_the_watch_synced() {
    let scenario = Scenario::shared("noroute").await;
    let dir = tempfile::tempdir().unwrap();
    let server = scenario_kubeconfig(&scenario)["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server")
        .to_owned();
    let target = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    assert!(target.starts_with("127.0.0.1:"), "{server}");
    let route = ApiServerRoute::start(target).await;
    let kubeconfig = kubeconfig_via(&scenario, dir.path(), &route.server);
    let (mut child, metrics) = operator_via(&scenario, &kubeconfig);
    let probe = || async {
        // The kubelet's probe timeout in the chart.
        tokio::time::timeout(Duration::from_secs(3), readyz(&metrics))
            .await
            .ok()
            .flatten()
    };
    eventually(
        "Ready once the watch listed",
        Duration::from_secs(30),
        || async { probe().await.filter(|(status, _)| *status == 200) },
    )
    .await;

    route.set_open(false);
    let went = Instant::now();
    let (status, body) = eventually(
        "unready without a route",
        Duration::from_secs(15),
        || async { probe().await.filter(|(status, _)| *status != 200) },
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("does not answer a list"), "{body}");
    let unready_after = went.elapsed();
    // It stays unready while the route is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(probe().await.map(|(s, _)| s), Some(503));

    route.set_open(true);
    eventually(
        "Ready again with the route back",
        Duration::from_secs(30),
        || async { probe().await.filter(|(status, _)| *status == 200) },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    figure(
        "unready_without_api_server",
        json!({"unready_after_seconds": unready_after.as_secs_f64()}),
    );
}

// ---------------------------------------------------------------------------------------------
// No failure runs faster than its backoff
// ---------------------------------------------------------------------------------------------

/// A create that keeps answering 409 with a fresh random id in its message gave 118 create
/// requests and 133 Warning events a minute: each new message was a status write, and that
/// write woke the VaultKey at once. Now the message is the same on each attempt, the watch
/// ignores the operator's own writes, and the attempts follow the backoff (5, 10, 20, 40 s...).
#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_failure_with_a_changing_message_stays_within_its_backoff() {
    let scenario = Scenario::exclusive("noisy").await;
    let env = &scenario.env;
    let _dialect = Dialect::on(
        env,
        "default",
        json!({"persistentError": {"operations": ["create_key"], "status": 409, "code": "Conflict", "messageNoise": true}}),
    )
    .await;
    let operator = scenario.start_operator(&[]);
    let before = Stats::read(env).await;
    scenario
        .create_vaultkey("noisy", &env.vault_url, "  keyType: EC\n")
        .await;
    wait_reason(&scenario, "noisy", "VaultConflict", Duration::from_secs(30)).await;
    let window = Duration::from_secs(100);
    tokio::time::sleep(window).await;
    let stats = Stats::read(env).await.since(&before);
    let creates = stats.count("create_key");
    let events = scenario.events("noisy").await;
    let status_writes = operator
        .sum("vaultkey_kubernetes_writes_total", &["kind=\"status\""])
        .await;
    figure(
        "persistent_conflict",
        json!({"window_seconds": window.as_secs(), "create_requests": creates, "warning_events": reasons(&events, "VaultConflict"), "status_writes": status_writes, "operations": stats.operations()}),
    );
    // Attempts at 0, 5, 15, 35 and 75 s: five in the window, the next at 155 s.
    assert!(
        (3..=6).contains(&creates),
        "{creates} create requests in {window:?}: the backoff allows five"
    );
    assert_eq!(
        reasons(&events, "VaultConflict"),
        1,
        "one Warning for the one reason: {events:?}"
    );
    assert!(
        status_writes <= 2.0,
        "{status_writes} status writes for one unchanged failure"
    );
}

/// The same class with the vault's own pacing: a vault that answers every create with 429 and
/// `Retry-After: 1` was asked again every second, forever (Retry-After alone set the wait). Now
/// the wait is the later of Retry-After and the backoff.
#[tokio::test(flavor = "multi_thread")]
async fn a_vault_that_keeps_throttling_is_asked_no_faster_than_the_backoff() {
    let scenario = Scenario::exclusive("throttled").await;
    let env = &scenario.env;
    let _faults = FaultInjection::on(
        env,
        json!({"rate": 1.0, "kinds": ["throttle"], "retryAfterSeconds": 1, "seed": 7, "operations": ["create_key"]}),
    )
    .await;
    let _operator = scenario.start_operator(&[]);
    let before = Stats::read(env).await;
    scenario
        .create_vaultkey("throttled", &env.vault_url, "  keyType: EC\n")
        .await;
    wait_reason(&scenario, "throttled", "Throttled", Duration::from_secs(30)).await;
    let window = Duration::from_secs(100);
    tokio::time::sleep(window).await;
    let stats = Stats::read(env).await.since(&before);
    let creates = stats.count("create_key");
    let events = scenario.events("throttled").await;
    figure(
        "persistent_throttle",
        json!({"window_seconds": window.as_secs(), "retry_after_seconds": 1, "create_requests": creates, "throttled_events": reasons(&events, "Throttled"), "operations": stats.operations()}),
    );
    // Attempts at 0, 5, 15, 35 and 75 s (Retry-After alone: about 100).
    assert!(
        (3..=6).contains(&creates),
        "{creates} create requests in {window:?}: the backoff allows five"
    );
    assert!(
        reasons(&events, "Throttled") <= 1,
        "at most one Warning for the one reason: {events:?}"
    );
}

/// A vault that refuses a rotation policy after the key was created: the message names
/// spec.rotationPolicy and says the key stands without it; one version, no second create.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_rotation_policy_names_the_field_and_makes_no_second_version() {
    let scenario = Scenario::exclusive("policy-refused").await;
    let env = &scenario.env;
    let _dialect = Dialect::on(
        env,
        "default",
        json!({"persistentError": {"operations": ["set_rotation_policy"], "status": 400, "code": "BadParameter"}}),
    )
    .await;
    let _operator = scenario.start_operator(&[]);
    scenario
        .create_vaultkey(
            "policy-refused",
            &env.vault_url,
            "  keyType: EC\n  rotationPolicy:\n    expiresIn: P90D\n    lifetimeActions:\n    - action: Rotate\n      timeAfterCreate: P30D\n",
        )
        .await;
    let vk = wait_reason(
        &scenario,
        "policy-refused",
        "VaultRejected",
        Duration::from_secs(30),
    )
    .await;
    let message = vk.ready_condition().expect("Ready").message.clone();
    assert!(
        message.contains("spec.rotationPolicy") && message.contains("a key just created has none"),
        "{message}"
    );
    // Several backoff rounds: the policy is retried, the key is not created again.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let facts = key_facts(env, "default", &scenario.key_name("policy-refused"))
        .await
        .expect("the key exists");
    assert_eq!(facts.versions, 1, "one version: {message}");
}

// ---------------------------------------------------------------------------------------------
// When the vault contradicts status, confirm before acting
// ---------------------------------------------------------------------------------------------

/// A vault that answers 404 for a disabled key (as one implementation does) made the operator
/// create a second version and reset versionCount to 1. Now the missing key is confirmed with
/// the version list and a versioned read, and nothing is created.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_vault_hides_is_confirmed_not_created_again() {
    let scenario = Scenario::exclusive("hidden").await;
    let env = &scenario.env;
    // Every resync reads the key itself (the subject here), not only the vault's key list.
    let _operator =
        scenario.start_operator(&["--resync-seconds", "2", "--verify-interval-seconds", "2"]);
    scenario
        .create_vaultkey("hidden", &env.vault_url, "  keyType: EC\n")
        .await;
    let first = scenario.wait_ready("hidden", "True").await;
    // Two versions, so that a versionCount reset to 1 would show.
    scenario
        .patch_spec("hidden", json!({"rotateToken": "second"}))
        .await;
    let created = eventually("the rotation", Duration::from_secs(30), || async {
        let vk = scenario.vaultkey("hidden").await;
        let status = vk.status.as_ref()?;
        (status.version_count == Some(2)
            && status.current_version != first.status.as_ref()?.current_version)
            .then_some(vk)
    })
    .await;
    let _dialect = Dialect::on(env, "default", json!({"hideDisabledKeys": true})).await;
    scenario
        .patch_spec("hidden", json!({"attributes": {"enabled": false}}))
        .await;
    scenario.wait_ready("hidden", "True").await;
    let before = Stats::read(env).await;
    // Several resyncs, each reading a key the vault hides.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stats = Stats::read(env).await.since(&before);
    let vk = scenario.wait_ready("hidden", "True").await;
    let facts = key_facts(env, "default", &scenario.key_name("hidden"))
        .await
        .expect("the key exists");
    let dialect = admin_get(env, "/stats").await["dialect"]["hideDisabledKeys"]
        .as_u64()
        .unwrap_or(0);
    figure(
        "hidden_key",
        json!({"versions": facts.versions, "hidden_reads": dialect, "operations": stats.operations()}),
    );
    assert!(dialect > 0, "the vault hid the key at least once");
    assert_eq!(facts.versions, 2, "no third version");
    assert_eq!(stats.count("create_key"), 0);
    assert_eq!(stats.count("rotate_key"), 0);
    // The confirming read once took the older version (created in the same second) for the
    // current one, and disabled it: a write nobody asked for.
    assert_eq!(
        stats.count("update_key"),
        0,
        "no version disabled but the one asked"
    );
    let status = vk.status.expect("status");
    assert_eq!(status.version_count, Some(2), "versionCount kept");
    assert_eq!(
        status.current_version,
        created.status.and_then(|s| s.current_version)
    );
    assert_eq!(reasons(&scenario.events("hidden").await, "Created"), 1);
}

/// Two VaultKeys naming the same key, applied together, both created it and both reported
/// Ready at different versions. Work on one key is now serialised: one creates it, the other
/// finds its owner tag and writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn two_vaultkeys_naming_one_key_make_one_version() {
    // Exclusive: slow reads widen the window between a read and the create that follows it,
    // where two unserialised reconciles both find no key.
    let scenario = Scenario::exclusive("twins").await;
    let env = &scenario.env;
    let _slow = FaultInjection::on(
        env,
        json!({"rate": 1.0, "kinds": ["slow"], "slowMillis": 300, "operations": ["get_key"]}),
    )
    .await;
    let _operator = scenario.start_operator(&[]);
    let pairs = 3;
    for pair in 0..pairs {
        let key = scenario.key_name(&format!("shared-{pair}"));
        let a = manifest(
            &format!("a-{pair}"),
            &env.vault_url,
            &key,
            "  keyType: EC\n",
        );
        let b = manifest(
            &format!("b-{pair}"),
            &env.vault_url,
            &key,
            "  keyType: EC\n",
        );
        let (ra, rb) = tokio::join!(
            create(&scenario.client, &scenario.ns, &a),
            create(&scenario.client, &scenario.ns, &b)
        );
        ra.expect("a created");
        rb.expect("b created");
    }
    for pair in 0..pairs {
        let names = [format!("a-{pair}"), format!("b-{pair}")];
        let outcome = eventually(
            "one owner, one refused",
            Duration::from_secs(60),
            || async {
                let mut reasons = BTreeMap::new();
                for name in &names {
                    let vk = scenario.vaultkey(name).await;
                    reasons.insert(name.clone(), vk.ready_condition()?.reason.clone());
                }
                let owners = reasons.values().filter(|r| *r == "Reconciled").count();
                let refused = reasons
                    .values()
                    .filter(|r| *r == "OwnedByAnotherVaultKey")
                    .count();
                (owners == 1 && refused == 1).then_some(reasons)
            },
        )
        .await;
        let facts = key_facts(
            env,
            "default",
            &scenario.key_name(&format!("shared-{pair}")),
        )
        .await
        .expect("the key exists");
        assert_eq!(facts.versions, 1, "one version for {names:?}: {outcome:?}");
        for name in &names {
            if outcome[name] == "OwnedByAnotherVaultKey" {
                let vk = scenario.vaultkey(name).await;
                assert_eq!(
                    vk.status.and_then(|s| s.current_version),
                    None,
                    "nothing about the key is recorded for the refused {name}"
                );
            }
        }
    }
}

/// Replacing a key's tags (as `az keyvault key set-attributes --tags` does) removed the owner
/// tags and the VaultKey dropped to KeyExistsNotAdopted, orphaning its own key. A key at the
/// version status recorded is still this VaultKey's: its tags are put back.
#[tokio::test(flavor = "multi_thread")]
async fn replaced_tags_are_put_back_and_the_key_stays_managed() {
    let scenario = Scenario::shared("retag").await;
    let env = &scenario.env;
    let _operator = scenario.start_operator(&["--resync-seconds", "2"]);
    scenario
        .create_vaultkey(
            "retag",
            &env.vault_url,
            "  keyType: EC\n  tags: {team: payments}\n",
        )
        .await;
    let vk = scenario.wait_ready("retag", "True").await;
    let version = vk.status.and_then(|s| s.current_version).expect("version");
    let key = scenario.key_name("retag");
    env.vault(&env.vault_url)
        .update_key(
            &key,
            &version,
            &KeyProperties {
                tags: Some([("changed".to_owned(), "by-hand".to_owned())].into()),
                ..Default::default()
            },
        )
        .await
        .expect("tags replaced behind the operator's back");
    let facts = eventually("owner tags back", Duration::from_secs(30), || async {
        let facts = key_facts(env, "default", &key).await?;
        (facts.latest_tags.get(OWNER_TAG) == Some(&format!("{}/retag", scenario.ns)))
            .then_some(facts)
    })
    .await;
    assert_eq!(
        facts.latest_tags.get("team").map(String::as_str),
        Some("payments")
    );
    assert!(facts.latest_tags.contains_key(OWNER_UID_TAG));
    assert!(!facts.latest_tags.contains_key("changed"));
    assert_eq!(facts.versions, 1);
    scenario.wait_ready("retag", "True").await;
    scenario.events_once("retag", "DriftCorrected").await;
}

/// A key soft-deleted by hand is recovered (same material, no new version), not replaced.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_deleted_by_hand_is_recovered_not_recreated() {
    let scenario = Scenario::shared("undelete").await;
    let env = &scenario.env;
    let _operator = scenario.start_operator(&["--resync-seconds", "2"]);
    scenario
        .create_vaultkey("undelete", &env.vault_url, "  keyType: EC\n")
        .await;
    let vk = scenario.wait_ready("undelete", "True").await;
    let version = vk.status.and_then(|s| s.current_version);
    let key = scenario.key_name("undelete");
    env.vault(&env.vault_url)
        .delete_key(&key)
        .await
        .expect("deleted by hand");
    eventually("recovered", Duration::from_secs(30), || async {
        let facts = key_facts(env, "default", &key).await?;
        (!facts.deleted).then_some(())
    })
    .await;
    let vk = scenario.wait_ready("undelete", "True").await;
    let facts = key_facts(env, "default", &key).await.expect("the key");
    assert_eq!(facts.versions, 1);
    assert_eq!(vk.status.and_then(|s| s.current_version), version);
    let events = scenario.events_once("undelete", "Recovered").await;
    assert_eq!(reasons(&events, "Recovered"), 1, "{events:?}");
    assert_eq!(reasons(&events, "Created"), 1, "{events:?}");
}

/// A purged key is reported gone; a new key only when the spec asks for one.
#[tokio::test(flavor = "multi_thread")]
async fn a_purged_key_is_reported_gone_until_the_spec_asks_for_a_new_one() {
    let scenario = Scenario::shared("purged").await;
    let env = &scenario.env;
    let _operator = scenario.start_operator(&["--resync-seconds", "2"]);
    scenario
        .create_vaultkey("purged", &env.purgeable_vault_url, "  keyType: EC\n")
        .await;
    scenario.wait_ready("purged", "True").await;
    let key = scenario.key_name("purged");
    let vault = env.vault(&env.purgeable_vault_url);
    vault.delete_key(&key).await.expect("deleted by hand");
    vault.purge_deleted_key(&key).await.expect("purged by hand");
    let vk = wait_reason(&scenario, "purged", "KeyGone", Duration::from_secs(30)).await;
    assert!(ready_reason(&vk).1.contains("recreateIfGone"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        key_facts(env, "purgeable", &key).await,
        None,
        "no key made while the spec does not ask"
    );
    scenario
        .patch_spec("purged", json!({"recreateIfGone": true}))
        .await;
    scenario.wait_ready("purged", "True").await;
    let facts = key_facts(env, "purgeable", &key).await.expect("a new key");
    assert_eq!(facts.versions, 1);
}

/// A 409 on create without Key Vault's `ObjectIsDeletedButRecoverable` inner code was a
/// generic conflict. The operator now asks the vault (deleted-key lookup): a VaultKey created
/// again over its own soft-deleted key recovers it; someone else's is reported, not touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_without_an_inner_code_is_classified_by_asking_the_vault() {
    let scenario = Scenario::exclusive("conflict").await;
    let env = &scenario.env;
    let _operator = scenario.start_operator(&["--resync-seconds", "2"]);
    let body = "  keyType: EC\n  deletionPolicy: Delete\n";
    scenario
        .create_vaultkey("again", &env.vault_url, body)
        .await;
    let first = scenario.wait_ready("again", "True").await;
    let version = first.status.and_then(|s| s.current_version);
    scenario
        .api
        .delete("again", &DeleteParams::default())
        .await
        .expect("VaultKey deleted");
    eventually("VaultKey gone", Duration::from_secs(30), || async {
        scenario
            .api
            .get_opt("again")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let key = scenario.key_name("again");
    assert!(key_facts(env, "default", &key).await.expect("key").deleted);

    let _dialect = Dialect::on(env, "default", json!({"conflictWithoutInnerCode": true})).await;
    scenario
        .create_vaultkey("again", &env.vault_url, body)
        .await;
    let vk = scenario.wait_ready("again", "True").await;
    assert_eq!(
        vk.status.and_then(|s| s.current_version),
        version,
        "the same key came back"
    );
    let facts = key_facts(env, "default", &key).await.expect("key");
    assert!(!facts.deleted);
    assert_eq!(facts.versions, 1);

    // A soft-deleted key nobody's VaultKey made.
    let stranger = scenario.key_name("stranger");
    let vault = env.vault(&env.vault_url);
    vault
        .create_key(
            &stranger,
            &vaultkey_operator::keyvault::CreateKey {
                key_type: vaultkey_operator::api::KeyType::Ec,
                size: None,
                curve: Some(vaultkey_operator::api::Curve::P256),
                public_exponent: None,
                properties: KeyProperties::default(),
            },
        )
        .await
        .expect("a key made by hand");
    vault.delete_key(&stranger).await.expect("and deleted");
    scenario
        .create_vaultkey("stranger", &env.vault_url, "  keyType: EC\n")
        .await;
    let vk = wait_reason(
        &scenario,
        "stranger",
        "SoftDeletedConflict",
        Duration::from_secs(30),
    )
    .await;
    assert!(ready_reason(&vk).1.contains("soft-deleted"));
    let facts = key_facts(env, "default", &stranger).await.expect("key");
    assert!(facts.deleted, "someone else's deleted key is left as it is");
    assert!(
        admin_get(env, "/stats").await["dialect"]["conflictWithoutInnerCode"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
}
