//! The reconcile loop: dereference (Secret, vault state) → validate → plan → apply → status.
//!
//! Every outcome a person can act on becomes the `Ready` condition, with a Warning event when
//! the condition changes; each error kind chooses its own wait (a bad spec waits for a change,
//! 429 honours Retry-After, 403 backs off long, transient faults back off exponentially).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::access::AccessPolicy;
use crate::api::{
    DeletionPolicy, IMPORTED_MATERIAL_TAG, OWNER_TAG, PendingRotation, VaultKey, VaultKeyStatus,
};
use crate::key_material::KeyMaterial;
use crate::keyvault::{
    ImportKey, KeyVault, ObservedKey, VaultError, VaultErrorKind, VaultProvider,
};
use crate::plan::{
    Blocker, MaterialSummary, Observed, Owner, Plan, PlanInput, Remembered, Step, plan,
};
use crate::status::{self, Memory, Readiness, VaultFacts};
use crate::telemetry::{Metrics, ReasonLabels};
use crate::validate::{DesiredKey, InvalidSpec, Material, validate};

pub const FINALIZER: &str = "vaultkey.dev/cleanup";
pub const FIELD_MANAGER: &str = "vaultkey-operator";
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Set to "true" to let a VaultKey go without touching the vault (the vault is gone or the
/// credentials were revoked); the key, if any, is left as it is.
pub const ABANDON_ANNOTATION: &str = "vaultkey.dev/abandon";

#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a converged VaultKey is compared with the vault again.
    pub resync_interval: Duration,
    /// Watch only these namespaces; empty watches all.
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
    pub concurrency: u16,
    pub reporter: String,
    /// Which namespaces may use which vaults.
    pub access: AccessPolicy,
}

/// Everything a reconcile needs, built once.
pub struct Context {
    pub client: Client,
    pub vaults: Arc<dyn VaultProvider>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Consecutive transient failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Until when each VaultKey (by uid) needs no vault reads: it matched the vault (until its
    /// resync is due) or it waits for a budget slot it was promised. Watch events the operator
    /// causes itself (its status writes) then cost nothing.
    quiet: Mutex<HashMap<String, Quiet>>,
}

impl Context {
    pub fn new(
        client: Client,
        vaults: Arc<dyn VaultProvider>,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Context {
            client,
            vaults,
            metrics,
            settings,
            failures: Mutex::new(HashMap::new()),
            quiet: Mutex::new(HashMap::new()),
        }
    }

    /// How long this VaultKey may stay quiet, when nothing the operator does not know about
    /// changed since it was marked: its generation, and status still saying Ready when it
    /// matched the vault.
    fn quiet_for(&self, vk: &VaultKey) -> Option<Duration> {
        let uid = vk.uid()?;
        let quiet = self.quiet.lock().unwrap_or_else(|p| p.into_inner());
        let entry = quiet.get(&uid)?;
        if entry.generation != vk.meta().generation {
            return None;
        }
        if entry.matched && !is_ready_now(vk) {
            return None;
        }
        entry
            .until
            .checked_duration_since(Instant::now())
            .filter(|left| *left > Duration::from_secs(1))
    }

    /// It matches the vault: no reads until its resync is due.
    fn mark_matched(&self, vk: &VaultKey, resync: Duration) {
        self.mark_quiet(vk, resync, true);
    }

    /// It waits for a budget slot promised `retry_in` from now.
    fn mark_paced(&self, vk: &VaultKey, retry_in: Duration) {
        self.mark_quiet(vk, retry_in, false);
    }

    fn mark_quiet(&self, vk: &VaultKey, wait: Duration, matched: bool) {
        let Some(uid) = vk.uid() else { return };
        let quiet = Quiet {
            generation: vk.meta().generation,
            until: Instant::now() + wait,
            matched,
        };
        self.quiet
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid, quiet);
    }

    /// Its next reconcile reads the vault.
    fn forget_quiet(&self, vk: &VaultKey) {
        if let Some(uid) = vk.uid() {
            self.quiet
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
        }
    }

    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 2u64.saturating_pow((*n).min(8)).min(300);
        Duration::from_secs(secs)
    }

    fn reset_backoff(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

struct Quiet {
    generation: Option<i64>,
    until: Instant,
    /// It matched the vault (rather than waiting for a budget slot).
    matched: bool,
}

/// Status says Ready for the current generation.
fn is_ready_now(vk: &VaultKey) -> bool {
    vk.ready_condition()
        .is_some_and(|c| c.status == "True" && c.observed_generation == vk.meta().generation)
}

/// Errors that escape a reconcile (Kubernetes API failures); vault and spec problems are
/// reported through status instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("deleting the key: {0}")]
    Cleanup(#[source] VaultError),
    #[error("the VaultKey has no namespace")]
    NoNamespace,
    #[error("the reconcile panicked: {0}")]
    Panic(String),
}

impl Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) | Error::Finalizer(_) => "KubernetesError",
            Error::Cleanup(e) => reason_for(&e.kind),
            Error::NoNamespace => "InvalidObject",
            Error::Panic(_) => "Panic",
        }
    }
}

/// Why a reconcile could not finish; each maps to a condition reason and a wait.
enum Failure {
    InvalidSpec(InvalidSpec),
    /// The operator's access policy does not let this namespace use the vault.
    VaultNotAllowed,
    ImportSecret {
        reason: &'static str,
        message: String,
    },
    Blocked(Blocker),
    Vault(VaultError),
}

fn reason_for(kind: &VaultErrorKind) -> &'static str {
    match kind {
        VaultErrorKind::NotFound => "KeyNotFound",
        VaultErrorKind::Throttled { .. } => "Throttled",
        VaultErrorKind::Paced { .. } => "Paced",
        VaultErrorKind::Forbidden => "Forbidden",
        VaultErrorKind::DeletedButRecoverable => "SoftDeletedConflict",
        VaultErrorKind::Conflict => "VaultConflict",
        VaultErrorKind::Rejected => "VaultRejected",
        VaultErrorKind::ServerError => "VaultServerError",
        VaultErrorKind::Unreachable => "VaultUnreachable",
        VaultErrorKind::Timeout => "VaultTimeout",
        VaultErrorKind::Other => "VaultError",
    }
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::InvalidSpec(_) => "InvalidSpec",
            Failure::VaultNotAllowed => "VaultNotAllowed",
            Failure::ImportSecret { reason, .. } => reason,
            Failure::Blocked(Blocker::KeyExistsNotAdopted) => "KeyExistsNotAdopted",
            Failure::Blocked(Blocker::OwnedByAnotherVaultKey { .. }) => "OwnedByAnotherVaultKey",
            Failure::Vault(e) => reason_for(&e.kind),
        }
    }

    fn message(&self, vault: &str, key: &str) -> String {
        match self {
            Failure::InvalidSpec(e) => format!("{e}; fix the spec"),
            Failure::VaultNotAllowed => format!(
                "this namespace may not use {vault} under the operator's vault access policy; use an allowed vault or ask the platform team to allow this one"
            ),
            Failure::ImportSecret { message, .. } => message.clone(),
            Failure::Blocked(Blocker::KeyExistsNotAdopted) => format!(
                "key {key} already exists in {vault} and was not created for this VaultKey; set spec.adopt: true to manage it, or choose another keyName"
            ),
            Failure::Blocked(Blocker::OwnedByAnotherVaultKey { owner }) => format!(
                "key {key} in {vault} is managed by VaultKey {owner}; two VaultKeys must not manage one key"
            ),
            Failure::Vault(e) => match e.kind {
                VaultErrorKind::DeletedButRecoverable => format!(
                    "key {key} in {vault} is soft-deleted; recover it (az keyvault key recover) or purge it (az keyvault key purge) before it can be managed again ({e})"
                ),
                VaultErrorKind::Forbidden => format!(
                    "the operator's identity may not perform {} on {vault}: grant it the Key Vault Crypto Officer role or the matching access policy ({e})",
                    e.operation.as_str()
                ),
                VaultErrorKind::Unreachable => format!("{vault} cannot be reached: {e}"),
                VaultErrorKind::Paced { .. } => {
                    format!("{vault}: {} {}", e.operation.as_str(), e.message)
                }
                _ => format!("{vault}: {e}"),
            },
        }
    }

    /// How long until a promised budget slot, when that is all that stopped the reconcile.
    fn paced(&self) -> Option<Duration> {
        match self {
            Failure::Vault(VaultError {
                kind: VaultErrorKind::Paced { retry_in },
                ..
            }) => Some(*retry_in),
            _ => None,
        }
    }

    /// How long to wait before trying again.
    fn wait(&self, ctx: &Context, object_key: &str) -> Action {
        match self {
            // Only a change of the spec (or the Secret, seen at the next resync) can help.
            Failure::InvalidSpec(_) => Action::await_change(),
            Failure::ImportSecret { .. } | Failure::Blocked(_) | Failure::VaultNotAllowed => {
                Action::requeue(ctx.settings.resync_interval)
            }
            Failure::Vault(e) => match &e.kind {
                VaultErrorKind::Throttled { retry_after } => Action::requeue(*retry_after),
                VaultErrorKind::Forbidden
                | VaultErrorKind::DeletedButRecoverable
                | VaultErrorKind::Rejected => {
                    Action::requeue(ctx.settings.resync_interval.max(Duration::from_secs(300)))
                }
                _ => Action::requeue(ctx.backoff(object_key)),
            },
        }
    }
}

/// Runs the controllers (one per watched namespace, or one for all) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown = shutdown.boxed().shared();
    let apis: Vec<Api<VaultKey>> = if ctx.settings.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        ctx.settings
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    let runs = apis
        .into_iter()
        .map(|api| run_one(api, ctx.clone(), shutdown.clone()));
    futures::future::join_all(runs).await;
}

async fn run_one(
    api: Api<VaultKey>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut watch = watcher::Config::default().any_semantic();
    if let Some(selector) = &ctx.settings.label_selector {
        watch = watch.labels(selector);
    }
    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
    // The cache keeps VaultKeys without managedFields (about 40 % of an object) and without
    // kubectl's copy of the last applied manifest (as large as the spec again): the operator
    // never reads them.
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = watcher(api, watch)
        .default_backoff()
        .modify(|vk: &mut VaultKey| {
            vk.managed_fields_mut().clear();
            vk.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
        })
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(objects, reader)
        .with_config(config)
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

fn object_key(vk: &VaultKey) -> String {
    format!("{}/{}", vk.namespace().unwrap_or_default(), vk.name_any())
}

/// A panic in one reconcile becomes an error for that object (retried with backoff) instead
/// of taking the controller, and every other VaultKey, down.
pub async fn reconcile(vk: Arc<VaultKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    match std::panic::AssertUnwindSafe(reconcile_inner(vk, ctx))
        .catch_unwind()
        .await
    {
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

async fn reconcile_inner(vk: Arc<VaultKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", vaultkey = %object_key(&vk), vault = %vk.spec.vault_url, key = %vk.key_name());
    async move {
        let start = Instant::now();
        let ns = vk.namespace().ok_or(Error::NoNamespace)?;
        let api: Api<VaultKey> = Api::namespaced(ctx.client.clone(), &ns);
        let adds_finalizer = vk.meta().deletion_timestamp.is_none()
            && !vk.finalizers().iter().any(|f| f == FINALIZER);
        let result = finalizer(&api, FINALIZER, vk, |event| async {
            match event {
                FinalizerEvent::Apply(vk) => apply(&vk, &ctx, &api).await,
                FinalizerEvent::Cleanup(vk) => cleanup(&vk, &ctx, &api).await,
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

pub fn error_policy(vk: Arc<VaultKey>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(vaultkey = %object_key(&vk), error = %error, "reconcile failed");
    ctx.metrics.reconcile_outcome("error");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: error.reason().into(),
        })
        .inc();
    match error {
        Error::Cleanup(VaultError {
            kind:
                VaultErrorKind::Throttled { retry_after: wait }
                | VaultErrorKind::Paced { retry_in: wait },
            ..
        }) => Action::requeue(*wait),
        _ => Action::requeue(ctx.backoff(&object_key(&vk))),
    }
}

/// One pass of dereference → validate → plan → apply → status.
async fn apply(vk: &VaultKey, ctx: &Context, api: &Api<VaultKey>) -> Result<Action, Error> {
    let key = object_key(vk);
    // Woken by our own status write (or another metadata-only change) right after a
    // successful check, or while waiting for a promised budget slot: nothing new to read.
    if let Some(left) = ctx.quiet_for(vk) {
        return Ok(Action::requeue(left));
    }
    let mut session = Session::new(vk, ctx);
    let outcome = session.converge(api).await;
    if let Err(failure) = &outcome
        && let Some(retry_in) = failure.paced()
    {
        return paced(vk, ctx, api, &session, failure, retry_in).await;
    }
    let (readiness, action) = match &outcome {
        Ok(()) => {
            ctx.reset_backoff(&key);
            let message = match &session.latest {
                Some(latest) => {
                    format!("key {} is at version {}", session.key_name, latest.version)
                }
                None => "the vault matches the spec".into(),
            };
            (
                Readiness::ready(message),
                Action::requeue(jittered(ctx.settings.resync_interval, &key)),
            )
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
                failure.wait(ctx, &key),
            )
        }
    };
    ctx.metrics.reconcile_outcome(if readiness.ready {
        "ready"
    } else {
        "not_ready"
    });
    if !readiness.ready {
        let changed = vk
            .ready_condition()
            .is_none_or(|c| c.reason != readiness.reason || c.message != readiness.message);
        if changed {
            warn!(reason = %readiness.reason, message = %readiness.message, "not ready");
            session
                .event(
                    EventType::Warning,
                    &readiness.reason,
                    readiness.message.clone(),
                )
                .await;
        }
    }
    session.write_status(api, &readiness).await?;
    if readiness.ready {
        ctx.mark_matched(vk, jittered(ctx.settings.resync_interval, &key));
    } else {
        ctx.forget_quiet(vk);
    }
    Ok(action)
}

/// The vault's budget had no slot soon: come back at the promised time. Pacing is the
/// operator keeping itself under Key Vault's limits, not a failure: no Warning event, and a
/// VaultKey that is Ready stays so; one that is not yet says what it waits for.
async fn paced(
    vk: &VaultKey,
    ctx: &Context,
    api: &Api<VaultKey>,
    session: &Session<'_>,
    failure: &Failure,
    retry_in: Duration,
) -> Result<Action, Error> {
    debug!(?retry_in, "waiting for a budget slot");
    ctx.metrics.reconcile_outcome("paced");
    if !is_ready_now(vk) {
        let message = failure.message(&vk.spec.vault_url, &session.key_name);
        session
            .write_status(api, &Readiness::not_ready(failure.reason(), message))
            .await?;
    }
    ctx.mark_paced(vk, retry_in);
    Ok(Action::requeue(retry_in))
}

/// Spreads resyncs over ±10% of the interval so keys created together do not resync together.
fn jittered(interval: Duration, key: &str) -> Duration {
    let hash = key
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let spread = interval.as_millis() as u64 / 5;
    if spread == 0 {
        return interval;
    }
    interval - Duration::from_millis(spread / 2) + Duration::from_millis(hash % spread)
}

/// The state of one reconcile: what was read, what was done.
struct Session<'a> {
    vk: &'a VaultKey,
    ctx: &'a Context,
    key_name: String,
    latest: Option<ObservedKey>,
    versions: Option<Vec<crate::keyvault::KeyVersion>>,
    policy: Option<crate::keyvault::ObservedPolicy>,
    memory: Memory,
    /// This reconcile made a version itself (so a new version is not an automatic rotation).
    made_version: bool,
    /// This reconcile created the key (it did not exist before).
    created_new: bool,
}

impl<'a> Session<'a> {
    fn new(vk: &'a VaultKey, ctx: &'a Context) -> Self {
        let previous = vk.status.as_ref();
        Session {
            vk,
            ctx,
            key_name: vk.key_name().to_owned(),
            latest: None,
            versions: None,
            policy: None,
            memory: Memory {
                observed_rotate_token: previous.and_then(|s| s.observed_rotate_token.clone()),
                pending_rotation: previous.and_then(|s| s.pending_rotation.clone()),
                imported_material: previous.and_then(|s| s.imported_material.clone()),
            },
            made_version: false,
            created_new: false,
        }
    }

    /// Creates an events.k8s.io Event directly. The runtime's `Recorder` keeps every event
    /// it published for six minutes (to count repeats as a series) and scans that cache on
    /// each publish: with thousands of VaultKeys that is tens of MiB and a global lock. The
    /// operator publishes an event only when something changed, so there are no repeats to
    /// aggregate.
    async fn event(&self, type_: EventType, reason: &str, note: String) {
        use k8s_openapi::api::events::v1::Event as K8sEvent;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        let regarding = self.vk.object_ref(&());
        let ns = regarding.namespace.clone().unwrap_or_default();
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:016x}",
                    self.vk.name_any(),
                    rand::random::<u64>()
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            action: Some("Reconcile".into()),
            reason: Some(reason.into()),
            note: Some(note.chars().take(1024).collect()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            regarding: Some(regarding),
            reporting_controller: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.ctx.settings.reporter.clone()),
            ..Default::default()
        };
        match Api::<K8sEvent>::namespaced(self.ctx.client.clone(), &ns)
            .create(&kube::api::PostParams::default(), &event)
            .await
        {
            Ok(_) => self.ctx.metrics.kube_write("event"),
            Err(e) => warn!(error = %e, reason, "could not publish an event"),
        }
    }

    async fn converge(&mut self, api: &Api<VaultKey>) -> Result<(), Failure> {
        let desired = validate(self.vk).map_err(Failure::InvalidSpec)?;
        let namespace = self.vk.namespace().unwrap_or_default();
        if !self
            .ctx
            .settings
            .access
            .allows(&namespace, &desired.vault_url)
        {
            return Err(Failure::VaultNotAllowed);
        }
        let vault = self
            .ctx
            .vaults
            .vault(&desired.vault_url)
            .map_err(Failure::Vault)?;
        let material = self.read_material(&desired).await?;
        let summary = material.as_ref().map(|m| MaterialSummary {
            thumbprint: m.public_thumbprint(),
        });

        let observed = self
            .observe(&desired, vault.as_ref())
            .await
            .map_err(Failure::Vault)?;
        let owner = Owner {
            namespace: self.vk.namespace().unwrap_or_default(),
            name: self.vk.name_any(),
            uid: self.vk.uid().unwrap_or_default(),
        };
        let remembered = Remembered {
            managed_before: self
                .vk
                .status
                .as_ref()
                .is_some_and(|s| s.current_version.is_some()),
            observed_rotate_token: self.memory.observed_rotate_token.clone(),
            pending_rotation: self.memory.pending_rotation.clone(),
        };
        let steps = match plan(&PlanInput {
            desired: &desired,
            owner: &owner,
            observed: &observed,
            remembered: &remembered,
            material: summary.as_ref(),
            now: Utc::now(),
        }) {
            Plan::Blocked(blocker) => return Err(Failure::Blocked(blocker)),
            Plan::Steps(steps) => steps,
        };
        self.latest = observed.latest;
        self.policy = observed.policy;
        let mut steps = steps.into_iter();
        while let Some(step) = steps.next() {
            if let Err(failure) = self
                .apply_step(step, &desired, vault.as_ref(), material.as_ref(), api)
                .await
            {
                // What this observation decided about rotateToken still holds: without it a
                // failed policy write after a create would turn the initial token into a
                // rotation on the next pass.
                for step in steps {
                    if let Step::AdoptRotateToken { token } | Step::RecordRotation { token } = step
                    {
                        self.memory.observed_rotate_token = Some(token);
                        self.memory.pending_rotation = None;
                    }
                }
                return Err(failure);
            }
        }
        // The vault's own record of what was imported: right even when the import's answer
        // was lost to a timeout or a crash.
        if let (Some(material), Some(latest)) = (&material, &self.latest)
            && latest.tags.get(IMPORTED_MATERIAL_TAG) == Some(&material.public_thumbprint())
        {
            self.memory.imported_material = Some(material.fingerprint());
        }
        self.refresh_versions(vault.as_ref())
            .await
            .map_err(Failure::Vault)?;
        Ok(())
    }

    /// Reads and parses the import Secret. The material never reaches a log or a message.
    async fn read_material(&self, desired: &DesiredKey) -> Result<Option<KeyMaterial>, Failure> {
        let Material::Imported(source) = &desired.material else {
            return Ok(None);
        };
        let secret_ref = &source.secret_ref;
        let ns = self.vk.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let secret = match secrets.get_opt(&secret_ref.name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return Err(Failure::ImportSecret {
                    reason: "ImportSecretMissing",
                    message: format!(
                        "Secret {ns}/{} does not exist; create it with the key material under key {:?}",
                        secret_ref.name, secret_ref.key
                    ),
                });
            }
            Err(e) => {
                return Err(Failure::ImportSecret {
                    reason: "ImportSecretUnreadable",
                    message: format!("cannot read Secret {ns}/{}: {e}", secret_ref.name),
                });
            }
        };
        let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(&secret_ref.key)) else {
            return Err(Failure::ImportSecret {
                reason: "ImportSecretMissing",
                message: format!(
                    "Secret {ns}/{} has no key {:?}",
                    secret_ref.name, secret_ref.key
                ),
            });
        };
        KeyMaterial::parse(&bytes.0)
            .map(Some)
            .map_err(|e| Failure::ImportSecret {
                reason: "InvalidKeyMaterial",
                message: format!(
                    "Secret {ns}/{} key {:?}: {e}",
                    secret_ref.name, secret_ref.key
                ),
            })
    }

    async fn observe(
        &self,
        desired: &DesiredKey,
        vault: &dyn KeyVault,
    ) -> Result<Observed, VaultError> {
        let latest = vault.get_key(&desired.key_name).await?;
        let policy = match (&latest, &desired.rotation_policy) {
            (Some(_), Some(_)) => vault.get_rotation_policy(&desired.key_name).await?,
            _ => None,
        };
        Ok(Observed { latest, policy })
    }

    async fn apply_step(
        &mut self,
        step: Step,
        desired: &DesiredKey,
        vault: &dyn KeyVault,
        material: Option<&KeyMaterial>,
        api: &Api<VaultKey>,
    ) -> Result<(), Failure> {
        let name = desired.key_name.as_str();
        match step {
            Step::Create(create) => {
                let existed = self.latest.is_some();
                let key = vault
                    .create_key(name, &create)
                    .await
                    .map_err(Failure::Vault)?;
                let note = if existed {
                    format!(
                        "created version {} of key {name}: the spec's type, size or curve changed",
                        key.version
                    )
                } else {
                    format!(
                        "created key {name} ({}) at version {}",
                        key.key_type, key.version
                    )
                };
                info!(version = %key.version, "created");
                self.event(EventType::Normal, "Created", note).await;
                self.made_version = true;
                self.created_new = !existed;
                self.latest = Some(key);
            }
            Step::Import { properties, hsm } => {
                let Some(material) = material else {
                    return Ok(());
                };
                let import = ImportKey {
                    material,
                    hsm,
                    properties,
                };
                let key = vault
                    .import_key(name, &import)
                    .await
                    .map_err(Failure::Vault)?;
                info!(version = %key.version, fingerprint = %material.fingerprint(), "imported");
                self.event(
                    EventType::Normal,
                    "Imported",
                    format!(
                        "imported key material {} as version {} of key {name}",
                        material.fingerprint(),
                        key.version
                    ),
                )
                .await;
                self.ctx.metrics.rotation("import");
                self.memory.imported_material = Some(material.fingerprint());
                self.made_version = true;
                self.latest = Some(key);
            }
            Step::UpdateProperties {
                version,
                properties,
                drift,
            } => {
                let key = vault
                    .update_key(name, &version, &properties)
                    .await
                    .map_err(Failure::Vault)?;
                let fields = drift.join(", ");
                info!(%fields, "properties corrected");
                self.event(
                    EventType::Normal,
                    "DriftCorrected",
                    format!("set {fields} of key {name} to match the spec"),
                )
                .await;
                self.latest = Some(key);
            }
            Step::SetRotationPolicy(policy) => {
                let observed = vault
                    .set_rotation_policy(name, &policy)
                    .await
                    .map_err(Failure::Vault)?;
                info!("rotation policy set");
                // A new key's policy is part of its creation: the Created event covers it,
                // which keeps a new key at three Kubernetes writes.
                if !self.created_new {
                    self.event(
                        EventType::Normal,
                        "PolicyUpdated",
                        format!("set the rotation policy of key {name}"),
                    )
                    .await;
                }
                self.policy = Some(observed);
            }
            Step::Rotate {
                token,
                from_version,
            } => {
                // Record the intent first: after a crash or a timeout the next reconcile can
                // tell whether the rotation happened, and never rotates twice for one token.
                self.memory.pending_rotation = Some(PendingRotation {
                    token: token.clone(),
                    from_version,
                });
                self.patch_memory(api).await.map_err(|e| {
                    Failure::Vault(VaultError::new(
                        VaultErrorKind::Other,
                        crate::keyvault::Operation::RotateKey,
                        format!("could not record the pending rotation: {e}"),
                    ))
                })?;
                let key = vault.rotate_key(name).await.map_err(Failure::Vault)?;
                info!(version = %key.version, %token, "rotated");
                self.event(
                    EventType::Normal,
                    "Rotated",
                    format!(
                        "rotated key {name} to version {} (rotateToken {token:?})",
                        key.version
                    ),
                )
                .await;
                self.ctx.metrics.rotation("manual");
                self.memory.observed_rotate_token = Some(token);
                self.memory.pending_rotation = None;
                self.made_version = true;
                self.latest = Some(key);
            }
            Step::RecordRotation { token } => {
                self.memory.observed_rotate_token = Some(token);
                self.memory.pending_rotation = None;
            }
            Step::AdoptRotateToken { token } => {
                self.memory.observed_rotate_token = Some(token);
                self.memory.pending_rotation = None;
            }
        }
        Ok(())
    }

    /// Lists versions only when the latest version is not the one status already shows, so a
    /// steady state costs one read.
    async fn refresh_versions(&mut self, vault: &dyn KeyVault) -> Result<(), VaultError> {
        let Some(latest) = &self.latest else {
            return Ok(());
        };
        let previous = self.vk.status.as_ref();
        let shown = previous.and_then(|s| s.current_version.as_deref());
        if shown == Some(latest.version.as_str())
            && previous.is_some_and(|s| !s.versions.is_empty() && s.version_count.is_some())
        {
            return Ok(());
        }
        if let Some(shown) = shown
            && shown != latest.version
            && !self.made_version
        {
            info!(from = %shown, to = %latest.version, "new version made by Key Vault");
            self.event(
                EventType::Normal,
                "Rotated",
                format!(
                    "Key Vault rotated key {} from version {shown} to {}",
                    self.key_name, latest.version
                ),
            )
            .await;
            self.ctx.metrics.rotation("automatic");
        }
        if self.created_new {
            // A key that did not exist has exactly the version just created.
            self.versions = Some(vec![crate::keyvault::KeyVersion {
                version: latest.version.clone(),
                enabled: latest.enabled,
                created: latest.created,
                expires_on: latest.expires_on,
                not_before: latest.not_before,
            }]);
            return Ok(());
        }
        let name = self.key_name.clone();
        self.versions = Some(vault.list_versions(&name).await?);
        Ok(())
    }

    fn build_status(&self, readiness: &Readiness) -> VaultKeyStatus {
        let facts = VaultFacts {
            key_name: Some(&self.key_name),
            latest: self.latest.as_ref(),
            versions: self.versions.as_deref(),
            policy: self.policy.as_ref(),
        };
        status::build(
            self.vk.status.as_ref(),
            self.vk.meta().generation,
            &facts,
            self.memory.clone(),
            readiness,
            Utc::now(),
        )
    }

    /// Writes status when it differs from what is stored.
    async fn write_status(&self, api: &Api<VaultKey>, readiness: &Readiness) -> Result<(), Error> {
        let status = self.build_status(readiness);
        if self.vk.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.patch_status(api, &status).await
    }

    /// Persists the operator's memory (pending rotation) ahead of a vault call.
    async fn patch_memory(&self, api: &Api<VaultKey>) -> Result<(), Error> {
        let mut status = self.vk.status.clone().unwrap_or_default();
        status.pending_rotation = self.memory.pending_rotation.clone();
        status.observed_rotate_token = self.memory.observed_rotate_token.clone();
        self.patch_status(api, &status).await
    }

    async fn patch_status(
        &self,
        api: &Api<VaultKey>,
        status: &VaultKeyStatus,
    ) -> Result<(), Error> {
        let patch = json!({
            "apiVersion": "vaultkey.dev/v1alpha1",
            "kind": "VaultKey",
            "status": status,
        });
        api.patch_status(
            &self.vk.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        self.ctx.metrics.kube_write("status");
        Ok(())
    }
}

/// Deletion: Retain only lets go; Delete and Purge act only on a key this VaultKey owns.
async fn cleanup(vk: &VaultKey, ctx: &Context, api: &Api<VaultKey>) -> Result<Action, Error> {
    let result = cleanup_vault(vk, ctx).await;
    match &result {
        // The object is about to go: forget its failure count.
        Ok(_) => {
            ctx.reset_backoff(&object_key(vk));
            ctx.forget_quiet(vk);
        }
        // Say on the object why it does not go away, and what the way out is.
        Err(e) => {
            let readiness = Readiness::not_ready(
                "DeletionBlocked",
                format!(
                    "the key cannot be removed from {} as deletionPolicy {:?} asks: {e}; restore access to the vault, or annotate the VaultKey {ABANDON_ANNOTATION}=true to let it go without touching the vault",
                    vk.spec.vault_url, vk.spec.deletion_policy
                ),
            );
            let session = Session::new(vk, ctx);
            if vk
                .ready_condition()
                .is_none_or(|c| c.reason != readiness.reason || c.message != readiness.message)
            {
                session
                    .event(
                        EventType::Warning,
                        &readiness.reason,
                        readiness.message.clone(),
                    )
                    .await;
            }
            session.write_status(api, &readiness).await?;
        }
    }
    result
}

async fn cleanup_vault(vk: &VaultKey, ctx: &Context) -> Result<Action, Error> {
    let name = vk.key_name().to_owned();
    if vk
        .annotations()
        .get(ABANDON_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        info!("abandoned: the vault is not touched");
        return Ok(Action::await_change());
    }
    if vk.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy Retain: the key stays in the vault");
        return Ok(Action::await_change());
    }
    let Ok(desired) = validate(vk) else {
        // A spec that never validated never reached a vault.
        return Ok(Action::await_change());
    };
    if !ctx
        .settings
        .access
        .allows(&vk.namespace().unwrap_or_default(), &desired.vault_url)
    {
        info!("the vault is outside this namespace's access policy: not touched");
        return Ok(Action::await_change());
    }
    let vault = ctx
        .vaults
        .vault(&desired.vault_url)
        .map_err(Error::Cleanup)?;
    let session = Session::new(vk, ctx);
    let owner = format!("{}/{}", vk.namespace().unwrap_or_default(), vk.name_any());
    if let Some(latest) = vault.get_key(&name).await.map_err(Error::Cleanup)? {
        if latest.tags.get(OWNER_TAG) != Some(&owner) {
            info!("the key is not owned by this VaultKey: left in the vault");
            return Ok(Action::await_change());
        }
        vault.delete_key(&name).await.map_err(Error::Cleanup)?;
        session
            .event(
                EventType::Normal,
                "Deleted",
                format!("soft-deleted key {name}"),
            )
            .await;
        info!("soft-deleted");
    }
    let deleted = match vk.spec.deletion_policy {
        DeletionPolicy::Purge => vault.get_deleted_key(&name).await.map_err(Error::Cleanup)?,
        _ => None,
    };
    // Purge only what this VaultKey deleted: the deleted key's tags still name its owner.
    if deleted.is_some_and(|d| d.tags.get(OWNER_TAG) == Some(&owner)) {
        // Right after a delete Key Vault may still answer 409 ObjectIsBeingDeleted; the
        // error policy retries.
        vault
            .purge_deleted_key(&name)
            .await
            .map_err(Error::Cleanup)?;
        session
            .event(EventType::Normal, "Purged", format!("purged key {name}"))
            .await;
        info!("purged");
    }
    Ok(Action::await_change())
}
