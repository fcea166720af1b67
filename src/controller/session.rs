//! One reconcile of a valid VaultKey: dereference (Secret, vault state) → validate → plan →
//! apply → status. The vault is read before every decision, and a read that contradicts what
//! status remembers is confirmed by a second, different read before anything is written.

mod acting;
mod observing;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::config_map::{self, KeyState};
use super::failure::Failure;
use super::retire;
use super::{Context, FIELD_MANAGER, events};
use crate::api::{
    CorrectionRecord, IMPORTED_MATERIAL_TAG, ManagementPolicy, PendingRotation, VaultKey,
    VaultKeyStatus,
};
use crate::key_material::KeyMaterial;
use crate::keyvault::{
    DeletedKey, ImportKey, KeyVault, KeyVersion, ObservedKey, ObservedPolicy, Operation,
    VaultError, VaultErrorKind, VaultIdentity,
};
use crate::plan::{
    Blocker, MaterialSummary, Observed, Owner, Plan, PlanInput, Remembered, Step, fingerprint_key,
    fingerprint_properties, next_rotation_time, plan,
};
use crate::status::{self, Memory, Readiness, VaultFacts};
use crate::telemetry::KeyGauges;
use crate::validate::{DesiredKey, Material, check_material, validate_with_hosts};

/// Condition reasons after which a missing key is looked up among the deleted ones.
const CONFLICT_REASONS: [&str; 2] = ["SoftDeletedConflict", "VaultConflict"];

/// The state of one reconcile: what was read, what was done.
pub struct Session<'a> {
    vk: &'a VaultKey,
    ctx: &'a Context,
    pub key_name: String,
    /// The vault, once the spec is valid.
    pub vault_url: Option<String>,
    /// The namespace identity the reconcile acted with (`None`: the operator's own).
    pub identity: Option<VaultIdentity>,
    pub latest: Option<ObservedKey>,
    versions: Option<Vec<KeyVersion>>,
    policy: Option<ObservedPolicy>,
    memory: Memory,
    /// This reconcile made a version itself (so a new version is not an automatic rotation).
    made_version: bool,
    /// This reconcile created the key (it did not exist before).
    created_new: bool,
    /// This reconcile recovered the soft-deleted key: the next pass checks it against the spec.
    pub recovered: bool,
}

impl<'a> Session<'a> {
    pub fn new(vk: &'a VaultKey, ctx: &'a Context) -> Self {
        let previous = vk.status.as_ref();
        Session {
            vk,
            ctx,
            key_name: vk.key_name().to_owned(),
            vault_url: None,
            identity: None,
            latest: None,
            versions: None,
            policy: None,
            memory: Memory {
                observed_rotate_token: previous.and_then(|s| s.observed_rotate_token.clone()),
                pending_rotation: previous.and_then(|s| s.pending_rotation.clone()),
                imported_material: previous.and_then(|s| s.imported_material.clone()),
                last_correction: previous.and_then(|s| s.last_correction.clone()),
                observe_only: previous.is_some_and(|s| s.observe_only),
                expiry_warned_version: previous.and_then(|s| s.expiry_warned_version.clone()),
            },
            made_version: false,
            created_new: false,
            recovered: false,
        }
    }

    pub async fn event(&self, type_: EventType, reason: &str, note: String) {
        events::publish(self.ctx, self.vk.object_ref(&()), type_, reason, note).await;
    }

    /// The version this VaultKey managed before. A version status shows from observing only
    /// (managementPolicy Observe) does not count: switching to Manage takes over a key only
    /// through `adopt` or this VaultKey's owner tags.
    fn remembered_version(&self) -> Option<&str> {
        self.vk
            .status
            .as_ref()
            .filter(|s| !s.observe_only)
            .and_then(|s| s.current_version.as_deref())
    }

    pub fn observing(&self) -> bool {
        self.vk.spec.management_policy == ManagementPolicy::Observe
    }

    pub async fn converge(&mut self, api: &Api<VaultKey>) -> Result<(), Failure> {
        let desired = validate_with_hosts(self.vk, &self.ctx.settings.vault_hosts)
            .map_err(Failure::InvalidSpec)?;
        self.vault_url = Some(desired.vault_url.clone());
        let namespace = self.vk.namespace().unwrap_or_default();
        if !self
            .ctx
            .settings
            .access
            .allows(&namespace, &desired.vault_url)
        {
            return Err(Failure::VaultNotAllowed);
        }
        let (vault, identity) = self.vault(&desired.vault_url).await?;
        self.identity = identity.as_ref().map(|(_, identity)| identity.clone());
        let result = if self.observing() {
            self.observe_only(&desired, vault.as_ref()).await
        } else {
            self.manage(&desired, vault.as_ref(), api).await
        };
        // A vault that refuses a namespace identity is told apart from one that refuses the
        // operator's: the message names the identity to grant.
        result.map_err(|failure| match (failure, identity.map(|i| i.0)) {
            (
                Failure::Vault(
                    error @ VaultError {
                        kind: VaultErrorKind::Forbidden,
                        ..
                    },
                ),
                Some(label),
            ) => Failure::IdentityForbidden {
                identity: label,
                error,
            },
            (failure, _) => failure,
        })
    }

    /// managementPolicy Manage: plan against what the vault holds, and apply.
    async fn manage(
        &mut self,
        desired: &DesiredKey,
        vault: &dyn KeyVault,
        api: &Api<VaultKey>,
    ) -> Result<(), Failure> {
        let material = self.read_material(desired).await?;
        if let Some(material) = &material {
            // Either the spec or the Secret may be the one to fix; the Secret is re-read at
            // each resync.
            check_material(desired, material.kind()).map_err(|e| Failure::ImportSecret {
                reason: "InvalidKeyMaterial",
                message: e.to_string(),
            })?;
        }
        let summary = material.as_ref().map(|m| MaterialSummary {
            thumbprint: m.public_thumbprint(),
        });
        // From the first read to the last write, no other VaultKey works on this key.
        let _key_lock = self
            .ctx
            .key_locks
            .lock(&desired.vault_url, &desired.key_name)
            .await;

        let mut observed = self.observe(desired, vault).await.map_err(Failure::Vault)?;
        let owner = Owner {
            namespace: self.vk.namespace().unwrap_or_default(),
            name: self.vk.name_any(),
            uid: self.vk.uid().unwrap_or_default(),
        };
        let remembered = self.remembered();
        // At most two rounds: a create refused because a soft-deleted key holds the name is
        // planned once more with that key in view (recover it, or say whose it is).
        for round in 0..2 {
            let input = PlanInput {
                desired,
                owner: &owner,
                observed: &observed,
                remembered: &remembered,
                material: summary.as_ref(),
                now: Utc::now(),
            };
            let steps = match plan(&input) {
                Plan::Blocked(blocker) => return Err(Failure::Blocked(blocker)),
                Plan::Steps(steps) => steps,
            };
            self.latest = observed.latest.clone();
            self.policy = observed.policy.clone();
            match self
                .apply_steps(steps, desired, vault, material.as_ref(), api)
                .await
            {
                Ok(()) => break,
                Err(StepError::SoftDeleted(deleted)) if round == 0 => {
                    observed = Observed {
                        latest: None,
                        policy: None,
                        deleted: Some(deleted),
                    };
                }
                Err(StepError::SoftDeleted(_)) => {
                    return Err(Failure::Vault(VaultError::new(
                        VaultErrorKind::DeletedButRecoverable,
                        Operation::CreateKey,
                        "a soft-deleted key holds the name",
                    )));
                }
                Err(StepError::Failed(failure)) => return Err(failure),
            }
        }
        if self.recovered {
            return Ok(());
        }
        self.check_correction_kept(desired, &owner, &remembered, summary.as_ref())?;
        // The vault's own record of what was imported: right even when the import's answer
        // was lost to a timeout or a crash.
        if let (Some(material), Some(latest)) = (&material, &self.latest)
            && latest.tags.get(IMPORTED_MATERIAL_TAG) == Some(&material.public_thumbprint())
        {
            self.memory.imported_material = Some(material.fingerprint());
        }
        self.refresh_versions(vault).await.map_err(Failure::Vault)?;
        // The key is this VaultKey's own now (created, adopted, or carrying its owner tags).
        self.memory.observe_only = false;
        self.retain(desired, vault).await?;
        self.publish(vault).await?;
        self.warn_unrotated_expiry().await;
        Ok(())
    }

    /// One Warning per version that is inside the policy's Notify window and expires before any
    /// rotation: status remembers the version announced, so resyncs do not repeat it.
    /// When a full read must happen whatever the vault's list says: the current version
    /// entering its Notify window (a time passing changes nothing the list shows), unless its
    /// warning was already given.
    pub fn check_by(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let (policy, latest) = (self.policy.as_ref()?, self.latest.as_ref()?);
        if self.memory.expiry_warned_version.as_deref() == Some(latest.version.as_str()) {
            return None;
        }
        crate::expiry::notify_window(policy, latest).map(|(start, _)| start)
    }

    async fn warn_unrotated_expiry(&mut self) {
        let (Some(policy), Some(latest)) = (&self.policy, &self.latest) else {
            return;
        };
        if self.memory.expiry_warned_version.as_deref() == Some(latest.version.as_str()) {
            return;
        }
        let next = next_rotation_time(policy, latest);
        let Some(warning) =
            crate::expiry::unrotated_expiry(policy, latest, next, self.ctx.settings.now())
        else {
            return;
        };
        let note = format!(
            "version {} of key {} expires at {} (within the rotation policy's Notify window {}) and no rotation is scheduled before: rotate it (spec.rotateToken) or add a Rotate action that comes first",
            latest.version,
            self.key_name,
            warning.expires.to_rfc3339(),
            warning.window
        );
        warn!(version = %latest.version, expires = %warning.expires, "expires without a rotation first");
        self.memory.expiry_warned_version = Some(latest.version.clone());
        self.event(EventType::Warning, "ExpiringWithoutRotation", note)
            .await;
    }

    /// spec.retention: see [`super::retire`].
    async fn retain(&mut self, desired: &DesiredKey, vault: &dyn KeyVault) -> Result<(), Failure> {
        let (Some(grace), Some(latest), Some(versions)) = (
            desired.disable_superseded_after,
            &self.latest,
            self.versions.as_mut(),
        ) else {
            return Ok(());
        };
        retire::disable_superseded(
            self.vk,
            self.ctx,
            vault,
            &self.key_name,
            latest,
            versions,
            grace,
        )
        .await
    }

    /// spec.publish: the ConfigMap follows what was just read; without it, nothing is kept.
    async fn publish(&self, vault: &dyn KeyVault) -> Result<(), Failure> {
        let Some(name) = crate::publish::config_map_name(self.vk) else {
            self.ctx
                .public_keys
                .forget(&self.vk.uid().unwrap_or_default());
            return Ok(());
        };
        let Some(latest) = &self.latest else {
            return Ok(());
        };
        // As status shows it: computed from the policy read now, else the one shown.
        let next_rotation = match &self.policy {
            Some(policy) => next_rotation_time(policy, latest),
            None => self
                .vk
                .status
                .as_ref()
                .and_then(|s| s.next_rotation_time.as_ref())
                .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0)),
        };
        let key = KeyState {
            key_name: &self.key_name,
            latest,
            versions: self.versions.as_deref().unwrap_or_default(),
            next_rotation,
        };
        config_map::publish(self.vk, self.ctx, vault, &name, &key).await
    }

    fn remembered(&self) -> Remembered {
        Remembered {
            current_version: self.remembered_version().map(str::to_owned),
            observed_rotate_token: self.memory.observed_rotate_token.clone(),
            pending_rotation: self.memory.pending_rotation.clone(),
            last_correction: self.memory.last_correction.clone(),
        }
    }

    /// A correction the vault answered without keeping is reported now, and (remembered in
    /// status) never sent again while the vault stays as it answered.
    fn check_correction_kept(
        &self,
        desired: &DesiredKey,
        owner: &Owner,
        before: &Remembered,
        material: Option<&MaterialSummary>,
    ) -> Result<(), Failure> {
        if self.memory.last_correction == before.last_correction {
            return Ok(());
        }
        let remembered = Remembered {
            last_correction: self.memory.last_correction.clone(),
            ..before.clone()
        };
        let observed = Observed {
            latest: self.latest.clone(),
            policy: self.policy.clone(),
            deleted: None,
        };
        match plan(&PlanInput {
            desired,
            owner,
            observed: &observed,
            remembered: &remembered,
            material,
            now: Utc::now(),
        }) {
            Plan::Blocked(blocker @ Blocker::CorrectionNotKept { .. }) => {
                Err(Failure::Blocked(blocker))
            }
            _ => Ok(()),
        }
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
        let name = desired.key_name.as_str();
        let mut latest = vault.get_key(name).await?;
        let mut deleted = None;
        if latest.is_none() {
            if let Some(remembered) = self.remembered_version() {
                // Status says this VaultKey manages the key, the vault says there is none:
                // a vault that hides disabled keys, a lagging replica, or a key deleted by
                // hand. Other reads decide before anything is written.
                latest = confirm_live(vault, name, remembered).await?;
                if latest.is_none() {
                    deleted = vault.get_deleted_key(name).await?;
                }
                info!(
                    remembered,
                    live = latest.is_some(),
                    soft_deleted = deleted.is_some(),
                    "the key read as missing; confirmed with the version list and the deleted keys"
                );
            } else if self
                .vk
                .ready_condition()
                .is_some_and(|c| CONFLICT_REASONS.contains(&c.reason.as_str()))
            {
                deleted = vault.get_deleted_key(name).await?;
            }
        }
        let policy = match (&latest, &desired.rotation_policy) {
            (Some(_), Some(_)) => vault.get_rotation_policy(name).await?,
            _ => None,
        };
        Ok(Observed {
            latest,
            policy,
            deleted,
        })
    }

    async fn apply_steps(
        &mut self,
        steps: Vec<Step>,
        desired: &DesiredKey,
        vault: &dyn KeyVault,
        material: Option<&KeyMaterial>,
        api: &Api<VaultKey>,
    ) -> Result<(), StepError> {
        let mut steps = steps.into_iter();
        while let Some(step) = steps.next() {
            let creates = matches!(step, Step::Create(_) | Step::Import { .. });
            if let Err(failure) = self.apply_step(step, desired, vault, material, api).await {
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
                return Err(match failure {
                    Failure::Vault(e) if creates && is_conflict(&e) => {
                        classify_conflict(vault, &desired.key_name, e).await
                    }
                    failure => StepError::Failed(failure),
                });
            }
        }
        Ok(())
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
                self.memory.last_correction = Some(CorrectionRecord {
                    version,
                    fields: drift.iter().map(|f| (*f).to_owned()).collect(),
                    sent: fingerprint_properties(&properties),
                    answered: fingerprint_key(&key),
                });
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
            Step::Recover => {
                vault
                    .recover_deleted_key(name)
                    .await
                    .map_err(Failure::Vault)?;
                info!("recovered the soft-deleted key");
                self.event(
                    EventType::Normal,
                    "Recovered",
                    format!("recovered soft-deleted key {name} (spec.recoverSoftDeleted)"),
                )
                .await;
                self.recovered = true;
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
                        Operation::RotateKey,
                        format!("could not record the pending rotation: {e}"),
                    ))
                })?;
                let key = vault
                    .rotate_key(name, desired.key_type.is_hsm())
                    .await
                    .map_err(Failure::Vault)?;
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
            Step::RecordRotation { token } | Step::AdoptRotateToken { token } => {
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
        // A published JWKS follows enable/disable/expiry changes of older versions too, and
        // retention dates supersessions, which only the list shows: with spec.publish or
        // spec.retention the list is read on every pass.
        if shown == Some(latest.version.as_str())
            && previous.is_some_and(|s| !s.versions.is_empty() && s.version_count.is_some())
            && self.vk.spec.publish.is_none()
            && self.vk.spec.retention.is_none()
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
            self.versions = Some(vec![KeyVersion {
                version: latest.version.clone(),
                enabled: latest.enabled,
                created: latest.created,
                expires_on: latest.expires_on,
                not_before: latest.not_before,
            }]);
            return Ok(());
        }
        let name = self.key_name.clone();
        let mut versions = vault.list_versions(&name).await?;
        // Key Vault never deletes a single version: a recorded version missing from the list
        // is a list that lags, confirmed by reading that version itself.
        let recorded = previous.map(|s| s.versions.as_slice()).unwrap_or_default();
        let missing: Vec<&str> = recorded
            .iter()
            .filter(|r| !versions.iter().any(|v| v.version == r.version))
            .map(|r| r.version.as_str())
            .collect();
        for version in missing {
            if let Some(key) = vault.get_key_version(&name, version).await? {
                info!(version = %key.version, "a recorded version missing from the version list exists");
                versions.push(KeyVersion {
                    version: key.version.clone(),
                    enabled: key.enabled,
                    created: key.created,
                    expires_on: key.expires_on,
                    not_before: key.not_before,
                });
            }
        }
        versions.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| a.version.cmp(&b.version))
        });
        self.versions = Some(versions);
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

    /// Records the outcome: for a failure, a Warning event when it warrants one; then status.
    pub async fn report(
        &self,
        api: &Api<VaultKey>,
        readiness: &Readiness,
    ) -> Result<(), kube::Error> {
        if warrants_warning(self.vk, readiness) {
            warn!(reason = %readiness.reason, message = %readiness.message, "not ready");
            self.event(
                EventType::Warning,
                &readiness.reason,
                readiness.message.clone(),
            )
            .await;
        }
        self.write_status(api, readiness).await
    }

    /// Writes status when it differs from what is stored.
    pub async fn write_status(
        &self,
        api: &Api<VaultKey>,
        readiness: &Readiness,
    ) -> Result<(), kube::Error> {
        let status = self.build_status(readiness);
        self.ctx.metrics.key_state(
            &self.vk.namespace().unwrap_or_default(),
            &self.vk.name_any(),
            KeyGauges {
                ready: readiness.ready,
                // versions[0] is the current version.
                expires: status
                    .versions
                    .first()
                    .and_then(|v| v.expires_on.as_ref())
                    .map(|t| t.0.as_second()),
                next_rotation: status.next_rotation_time.as_ref().map(|t| t.0.as_second()),
            },
        );
        if self.vk.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.patch_status(api, &status).await
    }

    /// Persists the operator's memory (pending rotation) ahead of a vault call.
    async fn patch_memory(&self, api: &Api<VaultKey>) -> Result<(), kube::Error> {
        let mut status = self.vk.status.clone().unwrap_or_default();
        status.pending_rotation = self.memory.pending_rotation.clone();
        status.observed_rotate_token = self.memory.observed_rotate_token.clone();
        self.patch_status(api, &status).await
    }

    async fn patch_status(
        &self,
        api: &Api<VaultKey>,
        status: &VaultKeyStatus,
    ) -> Result<(), kube::Error> {
        let patch = json!({
            "apiVersion": "vaultkey.dev/v1alpha1",
            "kind": "VaultKey",
            "status": status,
        });
        let written = api
            .patch_status(
                &self.vk.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
        self.ctx.own_writes.record(&written);
        self.ctx.metrics.kube_write("status");
        Ok(())
    }
}

/// One Warning per change of reason, and one per new spec: a failure that persists is not
/// announced again on each attempt, whatever its message says this time. Recovering is
/// progress, not a failure.
fn warrants_warning(vk: &VaultKey, readiness: &Readiness) -> bool {
    !readiness.ready
        && readiness.reason != "Recovering"
        && vk.ready_condition().is_none_or(|c| {
            c.reason != readiness.reason || c.observed_generation != vk.meta().generation
        })
}

/// Why the steps stopped.
enum StepError {
    /// A create or import met a soft-deleted key holding the name.
    SoftDeleted(DeletedKey),
    Failed(Failure),
}

fn is_conflict(e: &VaultError) -> bool {
    matches!(
        e.kind,
        VaultErrorKind::Conflict | VaultErrorKind::DeletedButRecoverable
    )
}

/// A 409 on create is classified by asking the vault: vaults differ in the inner error code
/// they send (or send none), and the deleted-key lookup is the fact.
async fn classify_conflict(vault: &dyn KeyVault, name: &str, conflict: VaultError) -> StepError {
    match vault.get_deleted_key(name).await {
        Ok(Some(deleted)) => StepError::SoftDeleted(deleted),
        Ok(None) => StepError::Failed(Failure::Vault(VaultError {
            kind: VaultErrorKind::Conflict,
            ..conflict
        })),
        Err(lookup) => StepError::Failed(Failure::Vault(lookup)),
    }
}

/// The key as a second read sees it: the newest listed version, read by id; with an empty
/// list, the version status remembers.
async fn confirm_live(
    vault: &dyn KeyVault,
    name: &str,
    remembered: &str,
) -> Result<Option<ObservedKey>, VaultError> {
    let versions = vault.list_versions(name).await?;
    let version = version_to_confirm(&versions, remembered).to_owned();
    vault.get_key_version(name, &version).await
}

/// The newest listed version (the list is newest first). Key Vault stamps `created` in whole
/// seconds, so a rotation in the same second as the create ties: among the newest, the version
/// status remembers wins; taking the other would make an older version current (and correct it).
fn version_to_confirm<'a>(versions: &'a [KeyVersion], remembered: &'a str) -> &'a str {
    let Some(newest) = versions.first() else {
        return remembered;
    };
    versions
        .iter()
        .take_while(|v| v.created == newest.created)
        .find(|v| v.version == remembered)
        .unwrap_or(newest)
        .version
        .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn version(id: &str, second: i64) -> KeyVersion {
        KeyVersion {
            version: id.to_owned(),
            enabled: true,
            created: Utc.timestamp_opt(1_700_000_000 + second, 0).single(),
            expires_on: None,
            not_before: None,
        }
    }

    #[test]
    fn the_confirming_read_takes_the_newest_version_and_status_breaks_a_tie() {
        // Created and rotated in the same second: the list cannot tell which is newer.
        let tied = [version("a1", 5), version("b2", 5), version("c3", 1)];
        assert_eq!(version_to_confirm(&tied, "b2"), "b2");
        assert_eq!(version_to_confirm(&tied, "a1"), "a1");
        // Status remembers an older version: a newer one (a rotation elsewhere) is current.
        assert_eq!(version_to_confirm(&tied, "c3"), "a1");
        assert_eq!(version_to_confirm(&tied, "gone"), "a1");
        assert_eq!(version_to_confirm(&[], "remembered"), "remembered");
    }
}
