//! The decision of what to do: a pure function of the desired key, what the vault holds, and
//! what status remembers. No I/O here, so every combination is unit-tested without a network.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use sha2::{Digest, Sha256};

use crate::api::{
    CorrectionRecord, Curve, IMPORTED_MATERIAL_TAG, KeyType, LifetimeActionType, OWNER_TAG,
    OWNER_UID_TAG, PendingRotation, RESERVED_TAG_PREFIX,
};
use crate::keyvault::{CreateKey, DeletedKey, KeyProperties, ObservedKey, ObservedPolicy};
use crate::period::Period;
use crate::validate::{
    DesiredKey, DesiredLifetimeAction, DesiredRotationPolicy, Expiry, Material, Trigger,
};

/// Which VaultKey is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    /// The value of the owner tag ([`OWNER_TAG`]): `namespace/name` when it fits Key Vault's
    /// tag value limit (256 characters), else — a namespace may have 63 characters and a name
    /// 253 — `namespace/<start of name>~<hash>`, where the hash (SHA-256 of `namespace/name`,
    /// 16 hex digits) tells long names apart. Kubernetes names never contain `~`, so a
    /// shortened value never equals a full one. Every comparison with the owner tag (plan,
    /// cleanup) must use this function.
    pub fn tag_value(&self) -> String {
        owner_tag_value(&self.namespace, &self.name)
    }
}

/// [`Owner::tag_value`] for a namespace and name.
pub fn owner_tag_value(namespace: &str, name: &str) -> String {
    use crate::keyvault_rules::MAX_TAG_VALUE_LEN;
    let full = format!("{namespace}/{name}");
    if full.chars().count() <= MAX_TAG_VALUE_LEN {
        return full;
    }
    let hash = fingerprint(&full);
    // namespace, '/', part of the name, '~', 16 hex digits.
    let room = MAX_TAG_VALUE_LEN.saturating_sub(namespace.chars().count() + 1 + 1 + hash.len());
    let start: String = name.chars().take(room).collect();
    let value = format!("{namespace}/{start}~{hash}");
    // Only an illegal namespace (over 63 characters) could still be too long.
    value.chars().take(MAX_TAG_VALUE_LEN).collect()
}

/// What the vault holds for the key's name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub latest: Option<ObservedKey>,
    /// `None` when not read (the spec does not manage the policy).
    pub policy: Option<ObservedPolicy>,
    /// The soft-deleted key holding the name. Read only when there is no live key and the
    /// answer matters: status remembers a version, or the last create met a conflict.
    pub deleted: Option<DeletedKey>,
}

/// What status remembers between reconciles.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Remembered {
    /// The version status showed: the VaultKey has managed the key before.
    pub current_version: Option<String>,
    pub observed_rotate_token: Option<String>,
    pub pending_rotation: Option<PendingRotation>,
    pub last_correction: Option<CorrectionRecord>,
}

impl Remembered {
    fn managed_before(&self) -> bool {
        self.current_version.is_some()
    }
}

/// Import material, summarised: the plan needs only its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialSummary {
    pub thumbprint: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing may be done until a person acts; the reason says what.
    Blocked(Blocker),
    /// Steps in order. Empty means the vault matches the spec.
    Steps(Vec<Step>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// The key exists, was not created for this VaultKey, and `adopt` is false.
    KeyExistsNotAdopted,
    /// The key is tagged for another VaultKey.
    OwnedByAnotherVaultKey { owner: String },
    /// A soft-deleted key holds the name and the spec does not let the operator recover it.
    SoftDeleted {
        /// Whose it was, from its owner tag.
        owner: Option<String>,
    },
    /// The key status recorded is neither live nor soft-deleted, and the spec does not ask
    /// for a new one.
    KeyGone { version: String },
    /// The vault answered the last correction of these fields without keeping it, and nothing
    /// changed since: writing it again would only repeat that.
    CorrectionNotKept { fields: Vec<String> },
    /// A version would be created with `spec.attributes.expiresOn` already passed.
    ExpiredAtCreation { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create a version (a new key, or a changed type, size or curve).
    Create(CreateKey),
    /// Import the material as a new version.
    Import {
        properties: KeyProperties,
        hsm: bool,
    },
    /// Correct the latest version's properties.
    UpdateProperties {
        version: String,
        properties: KeyProperties,
        drift: Vec<&'static str>,
    },
    SetRotationPolicy(DesiredRotationPolicy),
    /// Recover the soft-deleted key this VaultKey owns.
    Recover,
    /// One manual rotation for a new rotateToken value.
    Rotate {
        token: String,
        from_version: String,
    },
    /// A rotation recorded as pending already happened; remember its token.
    RecordRotation {
        token: String,
    },
    /// Remember the token without rotating (first sight: creation is not a rotation request).
    AdoptRotateToken {
        token: String,
    },
}

pub struct PlanInput<'a> {
    pub desired: &'a DesiredKey,
    pub owner: &'a Owner,
    pub observed: &'a Observed,
    pub remembered: &'a Remembered,
    /// Present when the spec imports material and the Secret was read.
    pub material: Option<&'a MaterialSummary>,
    /// The clock, for expiries relative to a version's creation.
    pub now: DateTime<Utc>,
}

pub fn plan(input: &PlanInput<'_>) -> Plan {
    let plan = plan_steps(input);
    // A version written with an expiry that has passed would be unusable from the start.
    if let Plan::Steps(steps) = &plan
        && let Some(at) = steps
            .iter()
            .find_map(|step| match step {
                Step::Create(create) => create.properties.expires_on,
                Step::Import { properties, .. } => properties.expires_on,
                _ => None,
            })
            .filter(|at| *at <= input.now)
    {
        return Plan::Blocked(Blocker::ExpiredAtCreation { at });
    }
    plan
}

fn plan_steps(input: &PlanInput<'_>) -> Plan {
    let desired = input.desired;
    let Some(latest) = &input.observed.latest else {
        return no_live_key(input);
    };

    match latest.tags.get(OWNER_TAG) {
        Some(owner) if *owner != input.owner.tag_value() => {
            return Plan::Blocked(Blocker::OwnedByAnotherVaultKey {
                owner: owner.clone(),
            });
        }
        // Someone replaced the key's tags: a key at the version status recorded, or tagged
        // with this VaultKey's uid, is still this VaultKey's own, and its tags are put back.
        None if !desired.adopt
            && input.remembered.current_version.as_deref() != Some(latest.version.as_str())
            && latest.tags.get(OWNER_UID_TAG) != Some(&input.owner.uid) =>
        {
            return Plan::Blocked(Blocker::KeyExistsNotAdopted);
        }
        _ => {}
    }

    let mut steps = Vec::new();
    let new_version = match (&desired.material, input.material) {
        (Material::Generated { .. }, _) => {
            generated_mismatch(desired, latest).then(|| Step::Create(create_step(input)))
        }
        (Material::Imported(_), Some(material))
            if latest.tags.get(IMPORTED_MATERIAL_TAG) != Some(&material.thumbprint) =>
        {
            Some(import_step(input, material))
        }
        (Material::Imported(_), _) => None,
    };
    let creates_version = new_version.is_some();
    if let Some(step) = new_version {
        steps.push(step);
    } else {
        let (properties, drift) = property_drift(input, latest);
        if !drift.is_empty() {
            if correction_not_kept(input.remembered, latest, &properties) {
                return Plan::Blocked(Blocker::CorrectionNotKept {
                    fields: drift.iter().map(|f| (*f).to_owned()).collect(),
                });
            }
            steps.push(Step::UpdateProperties {
                version: latest.version.clone(),
                properties,
                drift,
            });
        }
    }

    if let Some(policy) = &desired.rotation_policy
        && !policy_matches(policy, input.observed.policy.as_ref())
    {
        steps.push(Step::SetRotationPolicy(policy.clone()));
    }

    match rotation_step(desired, latest, input.remembered) {
        // A new version is being made anyway: it is the rotation the token asks for.
        Some(Step::Rotate { token, .. }) if creates_version => {
            steps.push(Step::AdoptRotateToken { token })
        }
        Some(step) => steps.push(step),
        None => {}
    }
    Plan::Steps(steps)
}

/// No live key holds the name. A key status remembers, or one soft-deleted under this
/// VaultKey's name, is recovered or reported rather than replaced by a new key.
fn no_live_key(input: &PlanInput<'_>) -> Plan {
    let desired = input.desired;
    if let Some(deleted) = &input.observed.deleted {
        let owner = deleted.tags.get(OWNER_TAG);
        let ours = match owner {
            Some(owner) => *owner == input.owner.tag_value(),
            None => desired.adopt,
        };
        return if ours && desired.recover_soft_deleted {
            Plan::Steps(vec![Step::Recover])
        } else {
            Plan::Blocked(Blocker::SoftDeleted {
                owner: owner.cloned(),
            })
        };
    }
    match &input.remembered.current_version {
        Some(version) if !desired.recreate_if_gone => Plan::Blocked(Blocker::KeyGone {
            version: version.clone(),
        }),
        _ => Plan::Steps(new_key(input)),
    }
}

fn new_key(input: &PlanInput<'_>) -> Vec<Step> {
    let desired = input.desired;
    let mut steps = match (&desired.material, input.material) {
        (Material::Generated { .. }, _) => vec![Step::Create(create_step(input))],
        (Material::Imported(_), Some(material)) => vec![import_step(input, material)],
        // Unreachable in the reconciler, which reports a missing or unreadable Secret before
        // planning; without material there is nothing to create.
        (Material::Imported(_), None) => return Vec::new(),
    };
    if let Some(policy) = &desired.rotation_policy {
        steps.push(Step::SetRotationPolicy(policy.clone()));
    }
    if let Some(token) = &desired.rotate_token
        && input.remembered.observed_rotate_token.as_ref() != Some(token)
    {
        steps.push(Step::AdoptRotateToken {
            token: token.clone(),
        });
    }
    steps
}

/// The tags the key should carry: the spec's, the owner's, and the imported-material record.
fn desired_tags(input: &PlanInput<'_>, imported: Option<&str>) -> BTreeMap<String, String> {
    let mut tags = input.desired.tags.clone();
    tags.insert(OWNER_TAG.to_owned(), input.owner.tag_value());
    tags.insert(OWNER_UID_TAG.to_owned(), input.owner.uid.clone());
    if let Some(thumbprint) = imported {
        tags.insert(IMPORTED_MATERIAL_TAG.to_owned(), thumbprint.to_owned());
    }
    tags
}

/// Properties for a version about to be created; a relative expiry counts from `input.now`.
fn creation_properties(input: &PlanInput<'_>, imported: Option<&str>) -> KeyProperties {
    let desired = input.desired;
    KeyProperties {
        key_ops: desired.key_ops.clone(),
        enabled: Some(desired.enabled),
        not_before: desired.not_before,
        expires_on: match desired.expiry {
            Expiry::None => None,
            Expiry::At(at) => Some(at),
            Expiry::AfterCreation(period) => period.after(input.now),
        },
        exportable: desired.exportable,
        release_policy: desired.release_policy.clone(),
        tags: Some(desired_tags(input, imported)),
    }
}

fn create_step(input: &PlanInput<'_>) -> CreateKey {
    let (size, curve, public_exponent) = match input.desired.material {
        Material::Generated {
            size,
            curve,
            public_exponent,
        } => (size, curve, public_exponent),
        Material::Imported(_) => (None, None, None),
    };
    // Name Key Vault's defaults explicitly, so the request says what will be made.
    let key_type = input.desired.key_type;
    let size = size.or(match key_type {
        KeyType::Rsa | KeyType::RsaHsm => Some(2048),
        KeyType::OctHsm => Some(256),
        KeyType::Ec | KeyType::EcHsm => None,
    });
    let curve = curve.or(key_type.is_ec().then_some(Curve::P256));
    CreateKey {
        key_type: input.desired.key_type,
        size,
        curve,
        public_exponent,
        properties: creation_properties(input, None),
    }
}

fn import_step(input: &PlanInput<'_>, material: &MaterialSummary) -> Step {
    Step::Import {
        properties: creation_properties(input, Some(&material.thumbprint)),
        hsm: input.desired.key_type.is_hsm(),
    }
}

/// Whether the latest version's type, size, curve or exponent differ from the spec, which
/// takes a new version (Key Vault cannot change them in place).
fn generated_mismatch(desired: &DesiredKey, latest: &ObservedKey) -> bool {
    matches!(desired.material, Material::Generated { .. })
        && !material_differences(desired, latest).is_empty()
}

/// The spec fields among type, size, curve and exponent in which the latest version differs:
/// what can change only by creating a version.
pub(crate) fn material_differences(
    desired: &DesiredKey,
    latest: &ObservedKey,
) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if !key_type_matches(desired.key_type, &latest.key_type) {
        fields.push("keyType");
    }
    let Material::Generated {
        size,
        curve,
        public_exponent,
    } = desired.material
    else {
        return fields;
    };
    // oct-HSM keys never reveal their size, so only RSA sizes are compared.
    if desired.key_type.is_rsa()
        && let (Some(size), Some(observed)) = (size, latest.key_size)
        && size != observed
    {
        fields.push("keySize");
    }
    if let (Some(curve), Some(observed)) = (curve, &latest.curve)
        && Curve::from_jwk_crv(observed) != Some(curve)
    {
        fields.push("curve");
    }
    if let (Some(exponent), Some(observed)) = (public_exponent, &latest.public_exponent) {
        let value = observed.iter().fold(0u64, |acc, b| {
            acc.saturating_mul(256).saturating_add(u64::from(*b))
        });
        if u64::try_from(exponent).ok() != Some(value) {
            fields.push("publicExponent");
        }
    }
    fields
}

/// Key Vault reports the type it holds; a software key in a Premium vault stays `RSA`/`EC`.
pub(crate) fn key_type_matches(desired: KeyType, observed: &str) -> bool {
    desired.as_str().eq_ignore_ascii_case(observed)
}

/// The properties to correct on the latest version, and the names of the drifted ones.
pub(crate) fn property_drift(
    input: &PlanInput<'_>,
    latest: &ObservedKey,
) -> (KeyProperties, Vec<&'static str>) {
    let desired = input.desired;
    let mut properties = KeyProperties::default();
    let mut drift = Vec::new();

    if latest.enabled != desired.enabled {
        properties.enabled = Some(desired.enabled);
        drift.push("enabled");
    }
    if let Some(ops) = &desired.key_ops {
        let wanted: BTreeSet<String> = ops.iter().map(|op| op.as_str().to_owned()).collect();
        if wanted != latest.key_ops {
            properties.key_ops = Some(ops.clone());
            drift.push("keyOps");
        }
    }
    if let Some(nbf) = desired.not_before
        && latest.not_before != Some(nbf)
    {
        properties.not_before = Some(nbf);
        drift.push("notBefore");
    }
    if let Some(exp) = managed_expiry(desired, latest)
        && !same_expiry(desired.expiry, latest.expires_on, exp)
    {
        properties.expires_on = Some(exp);
        drift.push("expiresOn");
    }
    // Some vaults clear the date a PATCH does not send: a correction of either date carries
    // both, the other as the spec wants it or, when the spec leaves it alone, as it is.
    if properties.not_before.is_some() || properties.expires_on.is_some() {
        properties.not_before = properties.not_before.or(latest.not_before);
        properties.expires_on = properties.expires_on.or(latest.expires_on);
    }
    let imported = latest.tags.get(IMPORTED_MATERIAL_TAG).map(String::as_str);
    let tags = desired_tags(input, imported);
    let observed_tags: BTreeMap<String, String> = latest
        .tags
        .iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_TAG_PREFIX) || tags.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if observed_tags != tags || latest.tags.len() != observed_tags.len() {
        properties.tags = Some(tags);
        drift.push("tags");
    }
    (properties, drift)
}

/// The expiry the latest version should have, when the operator manages it. With a rotation
/// policy that sets expiresIn, Key Vault owns the expiry of the versions it makes, so the
/// spec's expiry applies only when the operator creates a version.
fn managed_expiry(desired: &DesiredKey, latest: &ObservedKey) -> Option<DateTime<Utc>> {
    let policy_sets_expiry = desired
        .rotation_policy
        .as_ref()
        .is_some_and(|p| p.expires_in.is_some());
    if policy_sets_expiry {
        return None;
    }
    match desired.expiry {
        Expiry::None => None,
        Expiry::At(at) => Some(at),
        Expiry::AfterCreation(period) => latest.created.and_then(|created| period.after(created)),
    }
}

/// A relative expiry was computed from the operator's clock when the version was made, and
/// Key Vault's `created` can fall a second or two later: a minute of tolerance keeps that from
/// reading as drift. Absolute expiries compare exactly (both are whole seconds).
fn same_expiry(expiry: Expiry, observed: Option<DateTime<Utc>>, wanted: DateTime<Utc>) -> bool {
    match (expiry, observed) {
        (Expiry::AfterCreation(_), Some(observed)) => (observed - wanted).num_seconds().abs() <= 60,
        (_, observed) => observed == Some(wanted),
    }
}

/// A stable fingerprint of settable properties, to recognise the same correction and the
/// same answer on a later pass.
pub fn fingerprint_properties(properties: &KeyProperties) -> String {
    fingerprint(&format!("{properties:?}"))
}

/// A stable fingerprint of what a version holds of the settable properties.
pub fn fingerprint_key(key: &ObservedKey) -> String {
    fingerprint(&format!(
        "{}|{}|{:?}|{:?}|{:?}|{:?}",
        key.version, key.enabled, key.not_before, key.expires_on, key.key_ops, key.tags
    ))
}

fn fingerprint(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The same correction was sent for this version, and the vault still holds exactly what it
/// answered then: it did not keep the correction, and sending it again changes nothing.
fn correction_not_kept(
    remembered: &Remembered,
    latest: &ObservedKey,
    properties: &KeyProperties,
) -> bool {
    remembered.last_correction.as_ref().is_some_and(|last| {
        last.version == latest.version
            && last.sent == fingerprint_properties(properties)
            && last.answered == fingerprint_key(latest)
    })
}

/// Whether the vault's policy is the desired one. Periods compare by value (`P2W` = `P14D`),
/// action names case-insensitively; a Notify the spec does not ask for is Key Vault's own.
pub fn policy_matches(desired: &DesiredRotationPolicy, observed: Option<&ObservedPolicy>) -> bool {
    let Some(observed) = observed else {
        return false;
    };
    let observed_expiry = observed.expires_in.as_deref().map(Period::parse);
    match (desired.expires_in, observed_expiry) {
        (None, None) => {}
        (Some(want), Some(Ok(have))) if want == have => {}
        _ => return false,
    }
    let mut actions = Vec::new();
    for action in &observed.actions {
        let kind = if action.action.eq_ignore_ascii_case("rotate") {
            LifetimeActionType::Rotate
        } else if action.action.eq_ignore_ascii_case("notify") {
            LifetimeActionType::Notify
        } else {
            return false;
        };
        let trigger = match (&action.time_after_create, &action.time_before_expiry) {
            (Some(after), None) => match Period::parse(after) {
                Ok(p) => Trigger::AfterCreate(p.into()),
                Err(_) => return false,
            },
            (None, Some(before)) => match Period::parse(before) {
                Ok(p) => Trigger::BeforeExpiry(p.into()),
                Err(_) => return false,
            },
            _ => return false,
        };
        actions.push(DesiredLifetimeAction {
            action: kind,
            trigger,
        });
    }
    // Key Vault adds a Notify action (30 days before expiry) to a policy set without one, and
    // a Notify cannot be removed: when the spec has none, the vault's is not drift.
    if !desired
        .actions
        .iter()
        .any(|a| a.action == LifetimeActionType::Notify)
    {
        actions.retain(|a| a.action != LifetimeActionType::Notify);
    }
    actions.sort();
    actions == desired.actions
}

fn rotation_step(
    desired: &DesiredKey,
    latest: &ObservedKey,
    remembered: &Remembered,
) -> Option<Step> {
    let token = desired.rotate_token.as_ref()?;
    if remembered.observed_rotate_token.as_ref() == Some(token) {
        return None;
    }
    if !remembered.managed_before() {
        // First sight of the key with a token (a new or re-created VaultKey, an adopted key):
        // the token describes the key as it is, not a request to rotate it.
        return Some(Step::AdoptRotateToken {
            token: token.clone(),
        });
    }
    if let Some(pending) = &remembered.pending_rotation
        && pending.token == *token
        && pending.from_version != latest.version
    {
        // The rotation went through before the operator could record it.
        return Some(Step::RecordRotation {
            token: token.clone(),
        });
    }
    Some(Step::Rotate {
        token: token.clone(),
        from_version: latest.version.clone(),
    })
}

/// When Key Vault will next rotate the key on its own, from the policy and the latest version.
pub fn next_rotation_time(policy: &ObservedPolicy, latest: &ObservedKey) -> Option<DateTime<Utc>> {
    let rotate = policy
        .actions
        .iter()
        .find(|a| a.action.eq_ignore_ascii_case("rotate"))?;
    if let Some(after) = &rotate.time_after_create {
        return Period::parse(after).ok()?.after(latest.created?);
    }
    let before = Period::parse(rotate.time_before_expiry.as_deref()?).ok()?;
    before.before(latest.expires_on?)
}

#[cfg(test)]
mod tests;
