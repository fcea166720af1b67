//! Why a reconcile could not finish: each failure maps to a condition reason, a message that
//! says what to do, and a wait before the next attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use kube::runtime::controller::Action;

use super::lock;
use crate::identity::IdentityError;
use crate::keyvault::{Operation, VaultError, VaultErrorKind};
use crate::plan::Blocker;
use crate::validate::InvalidSpec;

pub enum Failure {
    InvalidSpec(InvalidSpec),
    /// The operator's access policy does not let this namespace use the vault.
    VaultNotAllowed,
    ImportSecret {
        reason: &'static str,
        message: String,
    },
    Blocked(Blocker),
    Vault(VaultError),
    /// The namespace identity (spec.identity) could not be used.
    Identity(IdentityError),
    /// The vault refused a namespace identity.
    IdentityForbidden {
        identity: String,
        error: VaultError,
    },
    /// managementPolicy Observe, and no live key holds the name.
    ObservedMissing {
        soft_deleted: bool,
    },
    /// managementPolicy Observe, and the key differs from the spec in these fields.
    Drifted(Vec<&'static str>),
    /// spec.publish: the ConfigMap could not be written (one the VaultKey does not own holds
    /// the name, the API server refused, a public key that cannot be encoded). `transient`:
    /// retried with backoff; otherwise at the next resync.
    Publish {
        reason: &'static str,
        message: String,
        transient: bool,
    },
}

pub fn reason_for(kind: &VaultErrorKind) -> &'static str {
    match kind {
        VaultErrorKind::NotFound => "KeyNotFound",
        VaultErrorKind::Throttled { .. } => "Throttled",
        VaultErrorKind::Paced { .. } => "Paced",
        VaultErrorKind::Forbidden => "Forbidden",
        VaultErrorKind::Credential => "CredentialError",
        VaultErrorKind::DeletedButRecoverable => "SoftDeletedConflict",
        VaultErrorKind::Conflict => "VaultConflict",
        VaultErrorKind::Rejected => "VaultRejected",
        VaultErrorKind::ServerError => "VaultServerError",
        VaultErrorKind::Unreachable => "VaultUnreachable",
        VaultErrorKind::Tls => "VaultTlsError",
        VaultErrorKind::Timeout => "VaultTimeout",
        VaultErrorKind::Other => "VaultError",
    }
}

impl Failure {
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::InvalidSpec(_) => "InvalidSpec",
            Failure::VaultNotAllowed => "VaultNotAllowed",
            Failure::ImportSecret { reason, .. } | Failure::Publish { reason, .. } => reason,
            Failure::Blocked(Blocker::KeyExistsNotAdopted) => "KeyExistsNotAdopted",
            Failure::Blocked(Blocker::OwnedByAnotherVaultKey { .. }) => "OwnedByAnotherVaultKey",
            Failure::Blocked(Blocker::SoftDeleted { .. }) => "SoftDeletedConflict",
            Failure::Blocked(Blocker::KeyGone { .. }) => "KeyGone",
            Failure::Blocked(Blocker::CorrectionNotKept { .. }) => "CorrectionNotKept",
            Failure::Blocked(Blocker::ExpiredAtCreation { .. }) => "InvalidSpec",
            Failure::Vault(e) => reason_for(&e.kind),
            Failure::Identity(e) => e.reason(),
            Failure::IdentityForbidden { .. } => "Forbidden",
            Failure::ObservedMissing { .. } => "KeyNotFound",
            Failure::Drifted(_) => "Drifted",
        }
    }

    pub fn message(&self, vault: &str, key: &str) -> String {
        match self {
            Failure::InvalidSpec(e) => format!("{e}; fix the spec"),
            Failure::VaultNotAllowed => format!(
                "this namespace may not use {vault} under the operator's vault access policy; use an allowed vault or ask the platform team to allow this one"
            ),
            Failure::ImportSecret { message, .. } | Failure::Publish { message, .. } => {
                message.clone()
            }
            Failure::Blocked(Blocker::KeyExistsNotAdopted) => format!(
                "key {key} already exists in {vault} and was not created for this VaultKey; set spec.adopt: true to manage it, or choose another keyName"
            ),
            Failure::Blocked(Blocker::OwnedByAnotherVaultKey { owner }) => format!(
                "key {key} in {vault} is managed by VaultKey {owner}; two VaultKeys must not manage one key"
            ),
            Failure::Blocked(Blocker::SoftDeleted { owner: Some(owner) }) => format!(
                "key {key} in {vault} is soft-deleted and was managed by VaultKey {owner}, not this one; recover it (az keyvault key recover) or purge it (az keyvault key purge), or choose another keyName"
            ),
            Failure::Blocked(Blocker::SoftDeleted { owner: None }) => format!(
                "key {key} in {vault} is soft-deleted; set spec.recoverSoftDeleted: true (with spec.adopt: true for a key not created by a VaultKey) to recover it, recover or purge it yourself, or choose another keyName"
            ),
            Failure::Blocked(Blocker::KeyGone { version }) => format!(
                "key {key} (version {version} in status) is neither live nor soft-deleted in {vault}: it was purged; set spec.recreateIfGone: true to create a new key under that name (data encrypted under the old key cannot be decrypted by a new one)"
            ),
            Failure::Blocked(Blocker::CorrectionNotKept { fields }) => format!(
                "{vault} accepted the correction of {} on key {key} but does not hold it (it answered with other values); the operator stops writing it: change spec fields {} to values the vault keeps",
                fields.join(", "),
                fields.join(", ")
            ),
            Failure::Blocked(Blocker::ExpiredAtCreation { at }) => format!(
                "spec.attributes.expiresOn {} has passed: a version of key {key} created now would be expired at once; set a later time, or remove expiresOn",
                at.to_rfc3339()
            ),
            Failure::Identity(e) => e.to_string(),
            Failure::IdentityForbidden { identity, error } => format!(
                "{vault} refused {identity}: it may not perform {} there; grant that identity the Key Vault Crypto Officer role (or the matching access policy) on this vault, or use a vault it is granted ({error})",
                error.operation.as_str()
            ),
            Failure::ObservedMissing {
                soft_deleted: false,
            } => format!(
                "key {key} does not exist in {vault}; managementPolicy Observe never creates it: create it, correct spec.keyName, or set managementPolicy: Manage to let the operator create it"
            ),
            Failure::ObservedMissing { soft_deleted: true } => format!(
                "key {key} in {vault} is soft-deleted; managementPolicy Observe never recovers it: recover it (az keyvault key recover), or set managementPolicy: Manage with recoverSoftDeleted"
            ),
            Failure::Drifted(fields) => format!(
                "key {key} in {vault} differs from the spec in {}; managementPolicy Observe writes nothing to the vault: change the spec to what the vault holds, or set managementPolicy: Manage (with adopt: true for a key the operator did not create) to correct the vault",
                fields.join(", ")
            ),
            Failure::Vault(e) => match e.kind {
                VaultErrorKind::DeletedButRecoverable => format!(
                    "key {key} in {vault} is soft-deleted; recover it (az keyvault key recover) or purge it (az keyvault key purge) before it can be managed again ({e})"
                ),
                VaultErrorKind::Forbidden => format!(
                    "the operator's identity may not perform {} on {vault}: grant it the Key Vault Crypto Officer role or the matching access policy ({e})",
                    e.operation.as_str()
                ),
                VaultErrorKind::Credential => format!(
                    "{vault}: {e}; check the operator's Azure identity (workload identity federation, client and tenant id, --azure-credential)"
                ),
                VaultErrorKind::Paced { .. } => {
                    format!("{vault}: {} {}", e.operation.as_str(), e.message)
                }
                VaultErrorKind::Rejected => match spec_fields(e.operation) {
                    Some(fields) => format!(
                        "{vault} refused {} for {fields} ({e}); change {fields} to what Key Vault accepts{}",
                        e.operation.as_str(),
                        consequence(e.operation)
                    ),
                    None => format!("{vault}: {e}"),
                },
                _ => format!("{vault}: {e}"),
            },
        }
    }

    /// How long until a promised budget slot, when that is all that stopped the reconcile.
    pub fn paced(&self) -> Option<Duration> {
        match self {
            Failure::Vault(VaultError {
                kind: VaultErrorKind::Paced { retry_in },
                ..
            }) => Some(*retry_in),
            _ => None,
        }
    }

    /// How long to wait before trying again. Nothing the operator writes itself wakes the
    /// VaultKey earlier (the watch passes only changes of spec, deletion and the annotations
    /// it honours), so this is the real schedule.
    pub fn wait(&self, resync: Duration, backoff: &Backoff, object: &str) -> Action {
        let long = resync.max(Duration::from_secs(300));
        match self {
            // Only a change of the spec (or the Secret, seen at the next resync) can help.
            Failure::InvalidSpec(_) => Action::await_change(),
            Failure::ImportSecret { .. }
            | Failure::Blocked(_)
            | Failure::VaultNotAllowed
            | Failure::ObservedMissing { .. }
            | Failure::Drifted(_) => Action::requeue(resync),
            // Azure AD's answer changes only when someone edits the application: like 403.
            Failure::Identity(IdentityError::ExchangeRefused { .. }) => Action::requeue(long),
            // The ServiceAccount is not watched: looked at again at the next resync.
            Failure::Identity(e) if e.needs_a_person() => Action::requeue(resync),
            Failure::Identity(_) => Action::requeue(backoff.next(object)),
            Failure::IdentityForbidden { .. } => Action::requeue(long),
            Failure::Publish {
                transient: false, ..
            } => Action::requeue(resync),
            Failure::Publish {
                transient: true, ..
            } => Action::requeue(backoff.next(object)),
            Failure::Vault(e) => match &e.kind {
                // A vault that keeps answering 429 with a short Retry-After must not be asked
                // faster than any other persistent failure: the later of the two.
                VaultErrorKind::Throttled { retry_after } => {
                    Action::requeue(backoff.next_after(object, *retry_after))
                }
                // A promised budget slot: the operator's own schedule, not a failure.
                VaultErrorKind::Paced { retry_in } => Action::requeue(*retry_in),
                VaultErrorKind::Forbidden
                | VaultErrorKind::DeletedButRecoverable
                | VaultErrorKind::Rejected => Action::requeue(long),
                _ => Action::requeue(backoff.next(object)),
            },
        }
    }
}

/// The spec fields a vault write carries, so a refusal names what the person should change.
fn spec_fields(operation: Operation) -> Option<&'static str> {
    match operation {
        Operation::CreateKey => Some(
            "spec.keyType, keySize, curve, publicExponent, keyOps, attributes, tags or releasePolicy",
        ),
        Operation::ImportKey => {
            Some("spec.import (the key material) or spec.keyType, attributes, tags")
        }
        Operation::UpdateKey => Some("spec.attributes, keyOps, tags or releasePolicy"),
        Operation::SetRotationPolicy => Some("spec.rotationPolicy"),
        Operation::RotateKey => Some("spec.rotateToken (the rotation it asks for)"),
        Operation::RecoverDeletedKey => Some("spec.recoverSoftDeleted"),
        Operation::DeleteKey | Operation::PurgeDeletedKey => Some("spec.deletionPolicy"),
        Operation::GetKey
        | Operation::ListKeys
        | Operation::ListVersions
        | Operation::GetRotationPolicy
        | Operation::GetDeletedKey => None,
    }
}

/// What stands meanwhile, when the refused write follows others that were kept.
fn consequence(operation: Operation) -> &'static str {
    match operation {
        Operation::SetRotationPolicy => {
            "; meanwhile the key keeps the rotation policy it had (a key just created has none)"
        }
        _ => "",
    }
}

/// Exponential backoff per object: 5 s, 10 s, 20 s ... up to 5 minutes, so a failure that
/// persists costs at most six attempts in its first five minutes. It also knows when each
/// retry is due, so a retry that never began is noticed and started (a VaultKey left
/// unretried for minutes was seen in 1 of 9 loaded runs of the fault test, not explained).
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
    due: Mutex<HashMap<String, Instant>>,
}

const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Backoff {
    pub fn next(&self, object: &str) -> Duration {
        self.next_after(object, Duration::ZERO)
    }

    /// The later of `at_least` (a vault's Retry-After) and the backoff.
    pub fn next_after(&self, object: &str, at_least: Duration) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(object.to_owned()).or_insert(0);
        let wait = BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow((*n).min(16)))
            .min(BACKOFF_MAX)
            .max(at_least);
        *n = n.saturating_add(1);
        lock(&self.due).insert(object.to_owned(), Instant::now() + wait);
        wait
    }

    pub fn reset(&self, object: &str) {
        lock(&self.failures).remove(object);
        lock(&self.due).remove(object);
    }

    /// A reconcile of `object` began: its retry is not overdue.
    pub fn started(&self, object: &str) {
        lock(&self.due).remove(object);
    }

    /// The objects whose retry was due more than `grace` ago and has not begun; each is
    /// returned once.
    pub fn overdue(&self, grace: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut due = lock(&self.due);
        let late: Vec<String> = due
            .iter()
            .filter(|(_, at)| **at + grace < now)
            .map(|(object, _)| object.clone())
            .collect();
        for object in &late {
            due.remove(object);
        }
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault_failure(kind: VaultErrorKind, operation: Operation) -> Failure {
        Failure::Vault(VaultError::new(
            kind,
            operation,
            "Bad Request: the policy is invalid",
        ))
    }

    #[test]
    fn a_refused_write_names_the_spec_field_to_change() {
        let policy = vault_failure(VaultErrorKind::Rejected, Operation::SetRotationPolicy)
            .message("https://v.vault.azure.net", "k");
        assert!(policy.contains("spec.rotationPolicy"), "{policy}");
        assert!(
            policy.contains("the policy is invalid"),
            "the vault's cause stays: {policy}"
        );
        assert!(policy.contains("a key just created has none"), "{policy}");
        for operation in [
            Operation::CreateKey,
            Operation::ImportKey,
            Operation::UpdateKey,
            Operation::RotateKey,
            Operation::RecoverDeletedKey,
            Operation::DeleteKey,
            Operation::PurgeDeletedKey,
        ] {
            let message =
                vault_failure(VaultErrorKind::Rejected, operation).message("https://v", "k");
            assert!(message.contains("spec."), "{operation:?}: {message}");
        }
    }

    #[test]
    fn a_short_retry_after_never_outruns_the_backoff() {
        let backoff = Backoff::default();
        let throttled = vault_failure(
            VaultErrorKind::Throttled {
                retry_after: Duration::from_secs(1),
            },
            Operation::CreateKey,
        );
        let resync = Duration::from_secs(300);
        let waits: Vec<Action> = (0..4)
            .map(|_| throttled.wait(resync, &backoff, "ns/a"))
            .collect();
        let expected = [5, 10, 20, 40].map(|s| Action::requeue(Duration::from_secs(s)));
        assert_eq!(waits, expected);
        let long = vault_failure(
            VaultErrorKind::Throttled {
                retry_after: Duration::from_secs(120),
            },
            Operation::CreateKey,
        );
        assert_eq!(
            long.wait(resync, &backoff, "ns/b"),
            Action::requeue(Duration::from_secs(120))
        );
    }

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        let backoff = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| backoff.next("ns/a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // Attempts at 0, 5, 15, 35, 75, 155 s: six in the first five minutes.
        let starts: Vec<u64> = waits
            .iter()
            .scan(0, |t, w| {
                let at = *t;
                *t += w;
                Some(at)
            })
            .take_while(|at| *at < 300)
            .collect();
        assert_eq!(starts.len(), 6);
        backoff.reset("ns/a");
        assert_eq!(backoff.next("ns/a").as_secs(), 5);
        assert_eq!(backoff.next("ns/b").as_secs(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_never_began_is_reported_once_when_overdue() {
        let backoff = Backoff::default();
        let grace = Duration::from_secs(5);
        backoff.next_after("ns/throttled", Duration::from_secs(60));
        backoff.next("ns/lost");
        backoff.next("ns/started");
        backoff.next("ns/recovered");
        backoff.reset("ns/recovered");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(backoff.overdue(grace).is_empty(), "due at 5 s, grace 5 s");
        backoff.started("ns/started");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(backoff.overdue(grace), ["ns/lost"]);
        assert!(backoff.overdue(grace).is_empty(), "reported once");
    }
}
