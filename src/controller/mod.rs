//! The reconcile loop: dereference (Secret, vault state) → validate → plan → apply → status.
//!
//! Every outcome a person can act on becomes the `Ready` condition, with a Warning event when
//! the condition's reason changes (or the spec does); each failure chooses its own wait (a bad
//! spec waits for a change, 429 honours Retry-After, 403 backs off long, transient faults back
//! off exponentially). The watch passes only what a person or another controller changed
//! (spec, deletion, labels, finalizers, the annotations the operator honours), so the
//! operator's own status writes never wake a VaultKey before its wait is over.

mod cleanup;
mod config_map;
mod events;
mod failure;
pub mod invalid;
mod key_locks;
mod listing;
mod own_writes;
pub mod pause;
mod retire;
mod session;
mod tracker;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{Instrument, debug, info_span, warn};

use crate::access::AccessPolicy;
use crate::api::VaultKey;
use crate::health::Health;
use crate::identity::NamespaceIdentities;
use crate::keyvault::{VaultError, VaultErrorKind, VaultProvider};
use crate::status::Readiness;
use crate::telemetry::{Metrics, ReasonLabels};
use crate::vault_hosts::VaultHosts;
use failure::{Backoff, reason_for};
use key_locks::KeyLocks;
use listing::Listings;
use session::Session;
use tracker::WatchTracker;

pub const FINALIZER: &str = "vaultkey.dev/cleanup";
pub const FIELD_MANAGER: &str = "vaultkey-operator";
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Annotations under this prefix are the operator's to honour: changing one wakes the VaultKey.
const ANNOTATION_PREFIX: &str = "vaultkey.dev/";
/// Set to "true" to let a VaultKey go without touching the vault (the vault is gone or the
/// credentials were revoked); the key, if any, is left as it is.
pub const ABANDON_ANNOTATION: &str = "vaultkey.dev/abandon";
/// How soon a recovered key is checked against the spec.
const AFTER_RECOVERY: Duration = Duration::from_secs(5);

/// What the watch delivers: a VaultKey, or the metadata and error of one that does not decode.
pub type Watched = DeserializeGuard<VaultKey>;

#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a converged VaultKey is compared with the vault again: through its vault's
    /// key list, or by reading the key when the vault is not listed.
    pub resync_interval: Duration,
    /// How often a converged key of a listed vault is read in full anyway (key_ops, rotation
    /// policy: what the list does not show).
    pub verify_interval: Duration,
    /// Watch only these namespaces; empty watches all.
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
    pub concurrency: u16,
    pub reporter: String,
    /// Which namespaces may use which vaults.
    pub access: AccessPolicy,
    /// After a shutdown is asked for, how long in-flight reconciles may take before the
    /// controller stops anyway (within Kubernetes' termination grace period).
    pub shutdown_grace: Duration,
    /// Vault hosts a spec may name: the known clouds' endpoints and what the operator allows.
    pub vault_hosts: VaultHosts,
    /// VaultKeys that name no namespace identity may not use the operator's own.
    pub require_namespace_identity: bool,
    /// The ServiceAccount name each namespace may provide as the identity of its VaultKeys
    /// that name none (`--namespace-identity-service-account`).
    pub namespace_identity_service_account: Option<String>,
    /// Emulators only (zero otherwise): how far ahead of the system clock [`Settings::now`]
    /// runs, to follow an emulator whose clock was shifted.
    pub clock_offset: chrono::Duration,
}

impl Settings {
    /// Now, for the decisions that compare the vault's times with the present (retention, the
    /// published JWKS's expiry filter).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.clock_offset
    }
}

/// Everything a reconcile needs, built once.
pub struct Context {
    pub client: Client,
    pub vaults: Arc<dyn VaultProvider>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub health: Arc<Health>,
    /// Credentials of namespace identities (spec.identity).
    pub identities: Arc<NamespaceIdentities>,
    backoff: Backoff,
    key_locks: KeyLocks,
    listings: Listings,
    public_keys: config_map::PublicKeys,
    own_writes: own_writes::OwnWrites,
}

impl Context {
    pub fn new(
        client: Client,
        vaults: Arc<dyn VaultProvider>,
        metrics: Arc<Metrics>,
        settings: Settings,
        health: Arc<Health>,
        identities: Arc<NamespaceIdentities>,
    ) -> Self {
        Context {
            client,
            vaults,
            metrics,
            settings,
            health,
            identities,
            backoff: Backoff::default(),
            key_locks: KeyLocks::default(),
            listings: Listings::default(),
            public_keys: config_map::PublicKeys::default(),
            own_writes: own_writes::OwnWrites::default(),
        }
    }
}

/// Status says Ready for the current generation.
fn is_ready_now(vk: &VaultKey) -> bool {
    vk.ready_condition()
        .is_some_and(|c| c.status == "True" && c.observed_generation == vk.meta().generation)
}

fn is_abandoned(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ABANDON_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Errors that escape a reconcile (Kubernetes API failures, cleanup failures); vault and
/// spec problems of a live VaultKey are reported through status instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("deleting the key: {0}")]
    Cleanup(#[source] VaultError),
    #[error("{0}")]
    Identity(String, &'static str),
    #[error("the VaultKey has no namespace")]
    NoNamespace,
    #[error("the reconcile panicked: {0}")]
    Panic(String),
}

impl Error {
    /// The error the finalizer helper wrapped, if it wrapped one of ours.
    fn inner(&self) -> &Error {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(boxed) => match boxed.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            _ => self,
        }
    }

    fn reason(&self) -> &'static str {
        match self.inner() {
            Error::Kube(_) | Error::Finalizer(_) => "KubernetesError",
            Error::Cleanup(e) => reason_for(&e.kind),
            Error::Identity(_, reason) => reason,
            Error::NoNamespace => "InvalidObject",
            Error::Panic(_) => "Panic",
        }
    }

    /// When to try again: a promised budget slot when that is all that stopped it, else the
    /// backoff — for a 429 the later of Retry-After and the backoff, so a vault that keeps
    /// throttling with a short Retry-After is not asked faster than any other failure.
    fn retry_in(&self, backoff: &Backoff, object: &str) -> Duration {
        match self.inner() {
            Error::Cleanup(VaultError {
                kind: VaultErrorKind::Paced { retry_in },
                ..
            }) => *retry_in,
            Error::Cleanup(VaultError {
                kind: VaultErrorKind::Throttled { retry_after },
                ..
            }) => backoff.next_after(object, *retry_after),
            _ => backoff.next(object),
        }
    }
}

/// Runs the controllers (one per watched namespace, or one for all) until `shutdown`
/// resolves; in-flight reconciles get `shutdown_grace` to finish.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown = shutdown.boxed().shared();
    let apis: Vec<Api<Watched>> = if ctx.settings.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        ctx.settings
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    ctx.health.start_leading(apis.len());
    let mut observed = Vec::new();
    let mut runs = Vec::new();
    for (index, api) in apis.into_iter().enumerate() {
        let (reader, writer) = kube::runtime::reflector::store();
        let (trigger, woken) = futures::channel::mpsc::unbounded();
        observed.push((reader.clone(), trigger));
        let watch = Watch {
            index,
            api,
            reader,
            writer,
            woken,
        };
        runs.push(run_one(watch, ctx.clone(), shutdown.clone()));
    }
    let observer = tokio::spawn(listing::observe(ctx.clone(), observed));
    let grace = ctx.settings.shutdown_grace;
    let deadline = async {
        shutdown.clone().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        _ = futures::future::join_all(runs) => {}
        () = deadline => warn!(?grace, "stopping with reconciles or watches still in flight"),
    }
    observer.abort();
}

/// One watched scope (a namespace, or all), with its cache and the VaultKeys the list
/// observer wakes.
struct Watch {
    index: usize,
    api: Api<Watched>,
    reader: Store<Watched>,
    writer: Writer<Watched>,
    woken: UnboundedReceiver<ObjectRef<Watched>>,
}

/// The hash of what may ask for work: the spec (generation), deletion, labels (a label
/// selector may bring an object back), finalizers (the finalizer helper waits for its own
/// write to come back) and the operator's annotations. Status is not in it.
fn intent(obj: &Watched) -> Option<u64> {
    let meta = obj.meta();
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    for (key, value) in meta.annotations.iter().flatten() {
        if key.starts_with(ANNOTATION_PREFIX) {
            (key, value).hash(&mut hasher);
        }
    }
    Some(hasher.finish())
}

async fn run_one(
    watch_scope: Watch,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut watch = watcher::Config::default().any_semantic();
    if let Some(selector) = &ctx.settings.label_selector {
        watch = watch.labels(selector);
    }
    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
    let Watch {
        index,
        api,
        reader,
        writer,
        woken,
    } = watch_scope;
    let mut tracker = WatchTracker::new(index, ctx.clone());
    let after_cache = ctx.clone();
    // The cache keeps VaultKeys without managedFields (about 40 % of an object) and without
    // kubectl's copy of the last applied manifest (as large as the spec again): the operator
    // never reads them.
    let objects = watcher(api, watch)
        .default_backoff()
        .modify(|obj: &mut Watched| {
            obj.managed_fields_mut().clear();
            obj.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
        })
        .inspect(move |event| tracker.observe(event))
        .reflect(writer)
        // After the cache holds the object: until then a reconcile reads the status it wrote.
        .inspect(move |event| {
            if let Ok(watcher::Event::Apply(obj)) = event {
                after_cache.own_writes.seen(obj);
            }
        })
        .applied_objects()
        .predicate_filter(intent, PredicateConfig::default());
    let controller = Controller::for_stream(objects, reader)
        .with_config(config)
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    let metrics = ctx.metrics.clone();
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            metrics
                .managed_keys
                .set(i64::try_from(store.len()).unwrap_or(i64::MAX));
            if let Err(e) = result {
                debug!(error = %e, "reconcile did not finish");
            }
            futures::future::ready(())
        })
        .await;
}

/// The controller's maps stay usable after a panic elsewhere held their lock: a reconcile's
/// panic is already reported for its own object.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// A panic in one reconcile becomes an error for that object (retried with backoff) instead
/// of taking the controller, and every other VaultKey, down.
pub async fn reconcile(obj: Arc<Watched>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.backoff.started(&object_key(obj.as_ref()));
    let work = async {
        match &obj.0 {
            Ok(vk) => {
                reconcile_valid(Arc::new(ctx.own_writes.latest(vk.clone())), ctx.clone()).await
            }
            Err(invalid) => invalid::report(&obj, invalid, &ctx).await,
        }
    };
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(Error::Panic(message))
        }
    }
}

async fn reconcile_valid(vk: Arc<VaultKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", vaultkey = %object_key(vk.as_ref()), vault = %vk.spec.vault_url, key = %vk.key_name());
    async move {
        let start = Instant::now();
        let ns = vk.namespace().ok_or(Error::NoNamespace)?;
        let api: Api<VaultKey> = Api::namespaced(ctx.client.clone(), &ns);
        // Before the finalizer helper, which would otherwise add the finalizer (a write).
        if let pause::Paused::Hold { deleting } = pause::decide(&vk) {
            return pause::hold(&vk, deleting, &ctx, &api).await;
        }
        let has_finalizer = vk.finalizers().iter().any(|f| f == FINALIZER);
        if !has_finalizer && !needs_finalizer(&vk.spec) {
            // Retain leaves the key as it is on deletion: a finalizer would guard nothing and
            // cost a write per new VaultKey. It is added when the policy changes.
            let result = match vk.meta().deletion_timestamp {
                Some(_) => Ok(Action::await_change()),
                None => apply(&vk, &ctx, &api).await,
            };
            ctx.metrics
                .reconcile_duration
                .observe(start.elapsed().as_secs_f64());
            return result;
        }
        let adds_finalizer = vk.meta().deletion_timestamp.is_none() && !has_finalizer;
        let result = finalizer(&api, FINALIZER, vk, |event| async {
            match event {
                FinalizerEvent::Apply(vk) => apply(&vk, &ctx, &api).await,
                FinalizerEvent::Cleanup(vk) => cleanup::cleanup(&vk, &ctx, &api).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        if adds_finalizer {
            ctx.metrics.kube_write("finalizer");
        }
        ctx.metrics
            .reconcile_duration
            .observe(start.elapsed().as_secs_f64());
        result
    }
    .instrument(span)
    .await
}

/// Whether deleting the VaultKey must wait for the operator: only when the vault is to be
/// touched (Delete, Purge). Retain's cleanup does nothing to the vault.
fn needs_finalizer(spec: &crate::api::VaultKeySpec) -> bool {
    spec.deletion_policy != crate::api::DeletionPolicy::Retain
}

pub fn error_policy(obj: Arc<Watched>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(obj.as_ref());
    warn!(vaultkey = %key, error = %error, "reconcile failed");
    ctx.metrics.reconcile_outcome("error");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: error.reason().into(),
        })
        .inc();
    Action::requeue(error.retry_in(&ctx.backoff, &key))
}

/// One pass of dereference → validate → plan → apply → status.
async fn apply(vk: &VaultKey, ctx: &Context, api: &Api<VaultKey>) -> Result<Action, Error> {
    let key = object_key(vk);
    if let Some(wait) = vouched(vk, ctx).await {
        ctx.metrics.reconcile_outcome("vouched");
        // Never early: an early wake-up would be vouched for again, for what is left.
        return Ok(Action::requeue(wait + jitter(wait, &key)));
    }
    let mut session = Session::new(vk, ctx);
    let outcome = session.converge(api).await;
    if let Err(failure) = &outcome
        && failure.paced().is_some()
    {
        return paced(vk, ctx, api, &session, failure).await;
    }
    if outcome.is_err() || session.recovered {
        // Not converged: its own wait decides when it is read again, not the vault's list.
        ctx.listings.forget(&vk.uid().unwrap_or_default());
    }
    let (readiness, action) = match &outcome {
        Ok(()) if session.recovered => (
            Readiness::not_ready(
                "Recovering",
                format!(
                    "recovered the soft-deleted key {}; checking it against the spec",
                    session.key_name
                ),
            ),
            Action::requeue(AFTER_RECOVERY),
        ),
        Ok(()) => {
            ctx.backoff.reset(&key);
            let scope = listing::Scope {
                vault_url: session.vault_url.clone().unwrap_or_default(),
                identity: session.identity.clone(),
            };
            let scope_id = scope.id();
            let mut next_read = ctx.settings.resync_interval;
            let mut message = match (&session.latest, vk.uid()) {
                (Some(latest), Some(uid)) => {
                    let check_by = session.check_by();
                    ctx.listings.record(
                        &uid,
                        vk.meta().generation,
                        &scope,
                        &session.key_name,
                        latest.into(),
                        check_by,
                    );
                    if !reads_every_resync(&vk.spec) {
                        next_read = ctx.listings.next_full_read(&scope, check_by, &timing(ctx));
                    }
                    format!("key {} is at version {}", session.key_name, latest.version)
                }
                _ => "the vault matches the spec".into(),
            };
            if let Some(note) = ctx.listings.note(&scope_id) {
                message = format!("{message}; {note}");
            }
            let readiness = if session.observing() {
                Readiness::ready_as(
                    "Observed",
                    format!(
                        "{message} and matches the spec (managementPolicy Observe: the operator never writes to the vault)"
                    ),
                )
            } else {
                Readiness::ready(message)
            };
            (readiness, Action::requeue(jittered(next_read, &key)))
        }
        Err(failure) => {
            let reason = failure.reason();
            let message = failure.message(&vk.spec.vault_url, &session.key_name);
            ctx.metrics
                .reconcile_errors
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc();
            (
                Readiness::not_ready(reason, message),
                failure.wait(ctx.settings.resync_interval, &ctx.backoff, &key),
            )
        }
    };
    ctx.metrics.reconcile_outcome(if readiness.ready {
        "ready"
    } else {
        "not_ready"
    });
    session.report(api, &readiness).await?;
    Ok(action)
}

/// What the vault's key list cannot vouch for: an import's Secret (not watched, re-read each
/// resync), and the older versions a published JWKS or retention follow (the list shows only
/// the current version, and an older one's expiry or grace window passes without a change).
fn reads_every_resync(spec: &crate::api::VaultKeySpec) -> bool {
    spec.import.is_some() || spec.publish.is_some() || spec.retention.is_some()
}

fn timing(ctx: &Context) -> listing::Timing {
    listing::Timing {
        resync: ctx.settings.resync_interval,
        verify: ctx.settings.verify_interval,
        now: ctx.settings.now(),
    }
}

/// A converged VaultKey whose key the vault's list has shown unchanged since its last full
/// read: nothing to read or write until its verify interval is over.
async fn vouched(vk: &VaultKey, ctx: &Context) -> Option<Duration> {
    if !is_ready_now(vk) || reads_every_resync(&vk.spec) {
        return None;
    }
    if pause::shows_paused(vk) {
        // Only the full pass takes the Paused condition away once the annotation is gone.
        return None;
    }
    let (wait, scope) =
        ctx.listings
            .vouched_wait(&vk.uid()?, vk.meta().generation, &timing(ctx))?;
    // The identity acting for the key (its ServiceAccount, annotations, federation) is not in
    // the vault's list: it must still resolve, to the same one, or the full pass says why not.
    let acting = Session::new(vk, ctx).acting_scope().await.ok()?;
    (acting.id() == scope).then_some(wait)
}

/// The vault's budget had no slot soon: come back at the promised time. Pacing is the
/// operator keeping itself under Key Vault's limits, not a failure: no Warning event, and a
/// VaultKey that is Ready stays so; one that is not yet says what it waits for.
async fn paced(
    vk: &VaultKey,
    ctx: &Context,
    api: &Api<VaultKey>,
    session: &Session<'_>,
    failure: &failure::Failure,
) -> Result<Action, Error> {
    debug!("waiting for a budget slot");
    ctx.metrics.reconcile_outcome("paced");
    let readiness = match vk.ready_condition() {
        // A VaultKey just unpaused drops its Paused condition; Ready stays as it is.
        Some(ready) if is_ready_now(vk) && pause::shows_paused(vk) => Some(Readiness::ready_as(
            ready.reason.clone(),
            ready.message.clone(),
        )),
        _ if is_ready_now(vk) => None,
        _ => Some(Readiness::not_ready(
            failure.reason(),
            failure.message(&vk.spec.vault_url, &session.key_name),
        )),
    };
    if let Some(readiness) = readiness {
        session.write_status(api, &readiness).await?;
    }
    Ok(failure.wait(ctx.settings.resync_interval, &ctx.backoff, &object_key(vk)))
}

/// Spreads resyncs over ±10% of the interval so keys created together do not resync together.
/// A number of the key's own, the same every time: where it falls inside a spread.
fn key_hash(key: &str) -> u64 {
    key.bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// A key's own share of a tenth of `interval` (the same every time for a key), so keys due
/// together spread out.
fn jitter(interval: Duration, key: &str) -> Duration {
    let spread = interval.as_millis() as u64 / 10;
    Duration::from_millis(key_hash(key).checked_rem(spread).unwrap_or(0))
}

/// `interval` ± 10 %, at the key's own place in that spread.
fn jittered(interval: Duration, key: &str) -> Duration {
    let spread = interval.as_millis() as u64 / 5;
    if spread == 0 {
        return interval;
    }
    interval - Duration::from_millis(spread / 2) + Duration::from_millis(key_hash(key) % spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::Operation;
    use kube::runtime::finalizer::Error as FinalizerError;

    fn cleanup_failure(kind: VaultErrorKind) -> Error {
        Error::Finalizer(Box::new(FinalizerError::CleanupFailed(Error::Cleanup(
            VaultError::new(kind, Operation::DeleteKey, "x"),
        ))))
    }

    #[test]
    fn a_failed_cleanup_is_counted_under_its_vault_reason() {
        assert_eq!(
            cleanup_failure(VaultErrorKind::Forbidden).reason(),
            "Forbidden"
        );
        assert_eq!(
            cleanup_failure(VaultErrorKind::Unreachable).reason(),
            "VaultUnreachable"
        );
    }

    #[test]
    fn a_throttled_or_paced_cleanup_waits_as_the_vault_or_the_budget_says() {
        let backoff = Backoff::default();
        let wait = Duration::from_secs(7);
        let paced = cleanup_failure(VaultErrorKind::Paced { retry_in: wait });
        assert_eq!(paced.retry_in(&backoff, "ns/a"), wait);
        assert_eq!(
            paced.retry_in(&backoff, "ns/a"),
            wait,
            "a promise is not a failure"
        );
        let throttled = cleanup_failure(VaultErrorKind::Throttled {
            retry_after: Duration::from_secs(1),
        });
        let waits: Vec<u64> = (0..4)
            .map(|_| throttled.retry_in(&backoff, "ns/b").as_secs())
            .collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40],
            "a short Retry-After never outruns the backoff"
        );
        let long = cleanup_failure(VaultErrorKind::Throttled {
            retry_after: Duration::from_secs(90),
        });
        assert_eq!(long.retry_in(&backoff, "ns/c").as_secs(), 90);
        assert_eq!(
            cleanup_failure(VaultErrorKind::Timeout)
                .retry_in(&backoff, "ns/d")
                .as_secs(),
            5
        );
    }

    #[test]
    fn the_watch_ignores_status_and_foreign_annotations_but_not_intent() {
        let vk: VaultKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "vaultkey.dev/v1alpha1", "kind": "VaultKey",
            "metadata": {"name": "k", "namespace": "ns", "generation": 1},
            "spec": {"vaultUrl": "https://v.vault.azure.net", "keyType": "EC"},
        }))
        .unwrap();
        let hash = |vk: &VaultKey| intent(&DeserializeGuard(Ok(vk.clone())));
        let base = hash(&vk);
        let mut with_status = vk.clone();
        with_status.status = Some(Default::default());
        with_status
            .annotations_mut()
            .insert("example.com/note".into(), "x".into());
        assert_eq!(hash(&with_status), base);
        for change in [
            |v: &mut VaultKey| v.metadata.generation = Some(2),
            |v: &mut VaultKey| {
                v.annotations_mut()
                    .insert(ABANDON_ANNOTATION.into(), "true".into());
            },
            |v: &mut VaultKey| v.finalizers_mut().push(FINALIZER.into()),
            |v: &mut VaultKey| {
                v.labels_mut().insert("team".into(), "a".into());
            },
            |v: &mut VaultKey| {
                v.annotations_mut()
                    .insert(pause::PAUSED_ANNOTATION.into(), "true".into());
            },
        ] {
            let mut changed = vk.clone();
            change(&mut changed);
            assert_ne!(hash(&changed), base);
        }
    }
}
