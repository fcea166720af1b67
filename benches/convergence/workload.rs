//! What the bench does to the cluster and the vault: VaultKeys, the floor, readiness.

use super::*;

// ------------------------------------------------------------------------------------------
// Manifests, floor, readiness
// ------------------------------------------------------------------------------------------

pub(crate) fn manifest(
    vault_url: &str,
    ns: &str,
    name: &str,
    key_name: &str,
    kind: KeyKind,
    publish: bool,
) -> VaultKey {
    let shape = match kind {
        KeyKind::Ec => json!({"keyType": "EC", "curve": "P-256"}),
        KeyKind::Rsa => json!({"keyType": "RSA", "keySize": 2048}),
    };
    let mut spec = json!({
        "vaultUrl": vault_url,
        "keyName": key_name,
        "keyOps": ["sign", "verify"],
        "tags": {"bench": "convergence"},
        "rotationPolicy": {
            "expiresIn": "P90D",
            "lifetimeActions": [
                {"action": "Rotate", "timeAfterCreate": "P30D"},
                {"action": "Notify", "timeBeforeExpiry": "P7D"}
            ]
        }
    });
    if kind == KeyKind::Rsa {
        spec["keyOps"] = json!(["encrypt", "decrypt"]);
    }
    if publish {
        spec["publish"] = json!({});
    }
    for (k, v) in shape.as_object().expect("object") {
        spec[k] = v.clone();
    }
    let mut manifest = json!({
        "apiVersion": "vaultkey.dev/v1alpha1",
        "kind": "VaultKey",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    // As `kubectl apply` (and Argo CD's client-side apply) leave it.
    manifest["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": manifest.to_string(),
    });
    serde_json::from_value(manifest).expect("bench manifest is a VaultKey")
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn distribution(mut values: Vec<f64>) -> Value {
    values.sort_by(|a, b| a.total_cmp(b));
    json!({
        "p50": round(percentile(&values, 50.0), 3),
        "p95": round(percentile(&values, 95.0), 3),
        "max": round(values.last().copied().unwrap_or(f64::NAN), 3),
    })
}

pub(crate) fn vault_client(env: &Env, metrics: Arc<Metrics>, creates: u32) -> Arc<dyn KeyVault> {
    let credential = credential(&CredentialSource::EmulatorStaticToken("bench".into()))
        .expect("static credential");
    let settings = ClientSettings {
        request_timeout: Duration::from_secs(30),
        extra_root_pem: Some(std::fs::read(&env.vault_ca).expect("emulator CA readable")),
        verify_challenge_resource: false,
        vault_hosts: VaultHosts::parse::<&str>(&[], true).expect("loopback hosts"),
        limits: Limits {
            software_creates: creates,
            hsm_creates: creates,
            ..Limits::default()
        },
    };
    AzureVaultProvider::new(credential, settings, metrics)
        .expect("vault provider")
        .vault(&env.vault_url)
        .expect("vault client")
}

/// The floor: what the operator's own plan calls for a new key (create + rotation policy),
/// sent directly with the same concurrency and the same client library.
pub(crate) async fn floor(
    env: &Env,
    sc: &Scenario,
    ns: &str,
    concurrency: usize,
) -> Result<Value, String> {
    let metrics = Arc::new(Metrics::new());
    let vault = vault_client(env, metrics.clone(), UNPACED_CREATES);
    let before = sample(env, None);
    let start = Instant::now();
    let results: Vec<Result<f64, String>> = futures::stream::iter(0..sc.n)
        .map(|i| {
            let vault = vault.clone();
            let name = format!("k-{i:05}");
            let vk = manifest(
                &env.vault_url,
                ns,
                &name,
                &format!("floor-{ns}-{i:05}"),
                sc.kind,
                false,
            );
            async move {
                let desired = validate(&vk).map_err(|e| e.to_string())?;
                let owner = Owner {
                    namespace: ns.to_owned(),
                    name: name.clone(),
                    uid: format!("floor-{i}"),
                };
                let steps = match plan(&PlanInput {
                    desired: &desired,
                    owner: &owner,
                    observed: &Observed::default(),
                    remembered: &Remembered::default(),
                    material: None,
                    now: Utc::now(),
                }) {
                    Plan::Steps(steps) => steps,
                    Plan::Blocked(b) => return Err(format!("plan blocked: {b:?}")),
                };
                for step in steps {
                    match step {
                        Step::Create(create) => {
                            when_paced_wait(|| vault.create_key(&desired.key_name, &create))
                                .await?;
                        }
                        Step::SetRotationPolicy(policy) => {
                            when_paced_wait(|| {
                                vault.set_rotation_policy(&desired.key_name, &policy)
                            })
                            .await?;
                        }
                        other => return Err(format!("unexpected step for a new key: {other:?}")),
                    }
                }
                Ok(start.elapsed().as_secs_f64())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let total = start.elapsed().as_secs_f64();
    let after = sample(env, None);
    let latencies = results.into_iter().collect::<Result<Vec<f64>, String>>()?;
    let calls = Scrape::parse(&metrics.render());
    let ops = calls.by("vaultkey_keyvault_requests_total", "operation");
    Ok(json!({
        "total_seconds": round(total, 3),
        "per_key_seconds_from_start": distribution(latencies),
        "keys_per_second": round(sc.n as f64 / total, 1),
        "kv_requests_per_key": per_key(&ops, sc.n as f64),
        "cpu_seconds": cpu_between(&before, &after, clock_ticks()),
    }))
}

/// Sends a request; when the client's budget has no slot soon, waits the promised time and
/// asks again, as the operator's requeue does.
pub(crate) async fn when_paced_wait<T, F, Fut>(request: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, VaultError>>,
{
    loop {
        match request().await {
            Err(VaultError {
                kind: VaultErrorKind::Paced { retry_in },
                ..
            }) => tokio::time::sleep(retry_in).await,
            other => return other.map_err(|e| e.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) ready_at: Instant,
    pub(crate) created: Option<i64>,
    pub(crate) transitioned: Option<i64>,
}

#[derive(Default)]
pub(crate) struct Tracker {
    pub(crate) ready: HashMap<String, Seen>,
    /// Each VaultKey's status.currentVersion, and when the watch first showed it.
    pub(crate) versions: HashMap<String, (String, Instant)>,
    /// Not-ready reasons seen, and on how many keys.
    pub(crate) reasons: BTreeMap<String, std::collections::BTreeSet<String>>,
}

pub(crate) fn watch_readiness(
    client: Client,
    ns: &str,
) -> (Arc<Mutex<Tracker>>, tokio::task::JoinHandle<()>) {
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let api: Api<VaultKey> = Api::namespaced(client, ns);
    let t = tracker.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Ok(Some(vk)) = stream.try_next().await {
            let Some(cond) = vk.ready_condition() else {
                continue;
            };
            let mut tracker = t.lock().unwrap();
            if let Some(version) = vk.status.as_ref().and_then(|s| s.current_version.clone())
                && tracker.versions.get(&vk.name_any()).map(|(v, _)| v) != Some(&version)
            {
                tracker
                    .versions
                    .insert(vk.name_any(), (version, Instant::now()));
            }
            if cond.status == "True" && cond.observed_generation == vk.metadata.generation {
                let name = vk.name_any();
                tracker.ready.entry(name).or_insert_with(|| Seen {
                    ready_at: Instant::now(),
                    created: vk
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_millisecond()),
                    transitioned: Some(cond.last_transition_time.0.as_millisecond()),
                });
            } else if cond.status != "True" {
                tracker
                    .reasons
                    .entry(cond.reason.clone())
                    .or_default()
                    .insert(vk.name_any());
            }
        }
    });
    (tracker, task)
}

pub(crate) async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    name
}

/// Creates the VaultKeys with bounded concurrency, retrying what the apiserver sheds (429,
/// 5xx). Returns when each create returned.
pub(crate) async fn apply_all(
    client: &Client,
    env: &Env,
    ns: &str,
    sc: &Scenario,
    concurrency: usize,
) -> HashMap<String, Instant> {
    let api: Api<VaultKey> = Api::namespaced(client.clone(), ns);
    // The first vault's keys, then the second vault's.
    futures::stream::iter(0..sc.n + sc.second_vault)
        .map(|i| {
            let api = api.clone();
            // Without throttling the keys alternate between two vaults: each vault's list
            // then holds half of them (the throttled scenario keeps one vault's budget).
            let (name, url) = if i < sc.n && (sc.throttle.is_some() || i % 2 == 0) {
                (format!("k-{i:05}"), &env.vault_url)
            } else if i < sc.n {
                (format!("k-{i:05}"), &env.listed_vault_url)
            } else {
                (format!("p-{:05}", i - sc.n), &env.second_vault_url)
            };
            let vk = manifest(url, ns, &name, &format!("{ns}-{name}"), sc.kind, sc.publish);
            async move {
                let mut attempt = 0;
                loop {
                    match api.create(&PostParams::default(), &vk).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 && attempt > 0 => break,
                        Err(e) if attempt < 8 => {
                            attempt += 1;
                            eprintln!("  create {name}: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                        }
                        Err(e) => panic!("cannot create VaultKey {name}: {e}"),
                    }
                }
                (name, Instant::now())
            }
        })
        .buffered(concurrency)
        .collect()
        .await
}

/// Waits until the operator's Key Vault request and reconcile counters stop moving for
/// `quiet`, at most `limit`. Returns the last scrape and whether it was quiet.
pub(crate) async fn settle(op: &Operator, quiet: Duration, limit: Duration) -> (Scrape, bool) {
    let deadline = Instant::now() + limit;
    let mut last = op.scrape().await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = op.scrape().await;
        let moved = now.kv_requests() != last.kv_requests()
            || now.reconciles() != last.reconciles()
            || now.kube_writes() != last.kube_writes();
        if moved {
            since = Instant::now();
        }
        last = now;
        if since.elapsed() >= quiet {
            return (last, true);
        }
        if Instant::now() >= deadline {
            return (last, false);
        }
    }
}

/// The emulator's request counts by operation (all vaults), 401 challenges separately.
pub(crate) fn emulator_ops(stats: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in stats["requests"].as_array().into_iter().flatten() {
        let op = r["operation"].as_str().unwrap_or("?").to_owned();
        *out.entry(op).or_default() += r["count"].as_f64().unwrap_or(0.0);
    }
    out
}
