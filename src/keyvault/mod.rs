//! Key Vault access behind one small trait, so the reconcile logic runs without a network in
//! unit tests. [`azure`] is the production implementation over the official Azure SDK.

pub mod azure;
pub mod budget;
pub mod message;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::api::{Curve, KeyOperation, KeyType, ReleasePolicy};
use crate::key_material::KeyMaterial;
use crate::validate::DesiredRotationPolicy;

/// The latest (or a given) version of a key, public parts only.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedKey {
    /// Versionless key id: `{vault}/keys/{name}`.
    pub key_id: String,
    pub version: String,
    /// As the vault reports it (`RSA`, `RSA-HSM`, `EC`, ...).
    pub key_type: String,
    pub key_size: Option<i32>,
    pub curve: Option<String>,
    pub public_exponent: Option<Vec<u8>>,
    pub key_ops: BTreeSet<String>,
    pub enabled: bool,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_on: Option<DateTime<Utc>>,
    pub created: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
    /// RFC 7638 thumbprint of the public key, when the vault returns one (not for oct keys).
    pub public_thumbprint: Option<String>,
    /// The public key itself (none for oct keys), for publishing (PEM, JWK).
    pub public_key: Option<PublicKey>,
}

/// The public half of a version as the vault returns it: big-endian unsigned integers and
/// coordinates, exactly as in the vault's JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

impl ObservedKey {
    pub fn versioned_id(&self) -> String {
        format!("{}/{}", self.key_id, self.version)
    }
}

/// What Key Vault's key list (`GET /keys`) tells of a key: the attributes and tags of its
/// current version, not key_ops, the key itself or the rotation policy. Equal summaries
/// before and after mean no new version (`created` moves), no property change the vault
/// stamped (`updated` moves on every PATCH) and no tag change. Tags are kept as a digest: a
/// summary is held for every managed key, and 10,000 keys' tags would be megabytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    pub enabled: bool,
    pub created: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_on: Option<DateTime<Utc>>,
    pub tags: u64,
}

/// A digest of a tag map, the same whatever order the tags came in.
pub fn tags_digest<'a>(tags: impl IntoIterator<Item = (&'a String, &'a String)>) -> u64 {
    use std::hash::{Hash, Hasher};
    let sorted: BTreeMap<&String, &String> = tags.into_iter().collect();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    sorted.hash(&mut hasher);
    hasher.finish()
}

impl From<&ObservedKey> for KeySummary {
    fn from(key: &ObservedKey) -> Self {
        KeySummary {
            enabled: key.enabled,
            created: key.created,
            updated: key.updated,
            not_before: key.not_before,
            expires_on: key.expires_on,
            tags: tags_digest(&key.tags),
        }
    }
}

/// One walk through a vault's key list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyListing {
    /// By key name in lower case (Key Vault's names are case-insensitive).
    pub keys: HashMap<String, KeySummary>,
    /// Requests it took (25 keys a page at most).
    pub pages: usize,
}

/// A soft-deleted key: its tags tell whose it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedKey {
    pub tags: BTreeMap<String, String>,
}

/// One version from the version list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    pub version: String,
    pub enabled: bool,
    pub created: Option<DateTime<Utc>>,
    pub expires_on: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
}

/// A rotation policy as the vault holds it. Action names are kept as sent back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPolicy {
    pub expires_in: Option<String>,
    pub actions: Vec<ObservedAction>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAction {
    pub action: String,
    pub time_after_create: Option<String>,
    pub time_before_expiry: Option<String>,
}

/// Everything needed to create a version.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateKey {
    pub key_type: KeyType,
    pub size: Option<i32>,
    pub curve: Option<Curve>,
    pub public_exponent: Option<i32>,
    pub properties: KeyProperties,
}

/// Settable properties of a version; `None` leaves a property as the vault has it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyProperties {
    pub key_ops: Option<BTreeSet<KeyOperation>>,
    pub enabled: Option<bool>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_on: Option<DateTime<Utc>>,
    pub exportable: Option<bool>,
    pub release_policy: Option<ReleasePolicy>,
    /// Replaces the whole tag map when set.
    pub tags: Option<BTreeMap<String, String>>,
}

pub struct ImportKey<'a> {
    pub material: &'a KeyMaterial,
    pub hsm: bool,
    pub properties: KeyProperties,
}

/// What went wrong talking to Key Vault, classified so each maps to a condition reason, a
/// backoff and a metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultErrorKind {
    NotFound,
    /// 429: wait at least this long before the next request to this vault.
    Throttled {
        retry_after: Duration,
    },
    /// Not sent: the operator's own request budget for the vault has no slot soon (it keeps
    /// under Key Vault's throttling limits). Ask again after `retry_in`.
    Paced {
        retry_in: Duration,
    },
    /// 401/403: the operator's identity lacks permission.
    Forbidden,
    /// No token could be had for the vault (the identity's configuration or the token
    /// service): retried with backoff, since a token service hiccup clears by itself.
    Credential,
    /// 409 ObjectIsDeletedButRecoverable: the name is held by a soft-deleted key.
    DeletedButRecoverable,
    /// 409 ObjectIsBeingDeleted / ObjectIsBeingRecovered, other 409s: retry shortly.
    Conflict,
    /// 400: Key Vault refused the request as invalid.
    Rejected,
    /// 5xx: retry with backoff.
    ServerError,
    /// DNS or connection failure: the vault cannot be reached. The message says which (DNS,
    /// refused, reset, connect timeout) and what to check.
    Unreachable,
    /// The TLS handshake failed (an untrusted or wrong certificate, a port that does not speak
    /// TLS); the message says which and what to check.
    Tls,
    /// No answer in time: the outcome is unknown, so the next attempt re-reads first.
    Timeout,
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
pub struct VaultError {
    pub kind: VaultErrorKind,
    pub operation: Operation,
    pub status: Option<u16>,
    /// Key Vault's error code (innermost), e.g. `ObjectIsDeletedButRecoverable`.
    pub code: Option<String>,
    /// Key Vault's message, or what failed on the way to it. Never contains request bodies,
    /// and is the same on each attempt for the same failure (see [`message::stable_message`]).
    pub message: String,
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.operation.as_str())?;
        if let Some(status) = self.status {
            write!(f, " with HTTP {status}")?;
        }
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl VaultError {
    /// Every message goes through [`message::stable_message`]: request ids, timestamps and
    /// random ids are masked so that an unchanged failure reads the same on each attempt.
    pub fn new(kind: VaultErrorKind, operation: Operation, message: impl Into<String>) -> Self {
        VaultError {
            kind,
            operation,
            status: None,
            code: None,
            message: message::stable_message(&message.into()),
        }
    }

    /// An error answer from the vault.
    pub fn http(
        kind: VaultErrorKind,
        operation: Operation,
        status: u16,
        code: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        VaultError {
            status: Some(status),
            code: code.map(|c| message::stable_message(&c)),
            ..VaultError::new(kind, operation, message)
        }
    }
}

/// Key Vault operations, named as in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    GetKey,
    ListKeys,
    ListVersions,
    GetRotationPolicy,
    CreateKey,
    ImportKey,
    UpdateKey,
    SetRotationPolicy,
    RotateKey,
    DeleteKey,
    GetDeletedKey,
    RecoverDeletedKey,
    PurgeDeletedKey,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::GetKey => "get_key",
            Operation::ListKeys => "list_keys",
            Operation::ListVersions => "list_versions",
            Operation::GetRotationPolicy => "get_rotation_policy",
            Operation::CreateKey => "create_key",
            Operation::ImportKey => "import_key",
            Operation::UpdateKey => "update_key",
            Operation::SetRotationPolicy => "set_rotation_policy",
            Operation::RotateKey => "rotate_key",
            Operation::DeleteKey => "delete_key",
            Operation::GetDeletedKey => "get_deleted_key",
            Operation::RecoverDeletedKey => "recover_deleted_key",
            Operation::PurgeDeletedKey => "purge_deleted_key",
        }
    }

    /// Whether the operation changes the vault (counted as a write).
    pub fn is_write(self) -> bool {
        !matches!(
            self,
            Operation::GetKey
                | Operation::ListKeys
                | Operation::ListVersions
                | Operation::GetRotationPolicy
                | Operation::GetDeletedKey
        )
    }
}

pub type VaultResult<T> = Result<T, VaultError>;

/// One vault. Reads return `Ok(None)` for 404; deletes treat 404 as done.
#[async_trait]
pub trait KeyVault: Send + Sync {
    async fn get_key(&self, name: &str) -> VaultResult<Option<ObservedKey>>;
    /// One version, by id (a versioned GET: a second read that does not go through the
    /// versionless lookup).
    async fn get_key_version(&self, name: &str, version: &str) -> VaultResult<Option<ObservedKey>>;
    /// Every key of the vault, page by page (`GET /keys`; needs the `keys/list` permission).
    async fn list_keys(&self) -> VaultResult<KeyListing>;
    /// Versions, newest first.
    async fn list_versions(&self, name: &str) -> VaultResult<Vec<KeyVersion>>;
    async fn get_rotation_policy(&self, name: &str) -> VaultResult<Option<ObservedPolicy>>;
    /// The soft-deleted key holding the name, if any.
    async fn get_deleted_key(&self, name: &str) -> VaultResult<Option<DeletedKey>>;
    async fn create_key(&self, name: &str, key: &CreateKey) -> VaultResult<ObservedKey>;
    async fn import_key(&self, name: &str, key: &ImportKey<'_>) -> VaultResult<ObservedKey>;
    async fn update_key(
        &self,
        name: &str,
        version: &str,
        properties: &KeyProperties,
    ) -> VaultResult<ObservedKey>;
    async fn set_rotation_policy(
        &self,
        name: &str,
        policy: &DesiredRotationPolicy,
    ) -> VaultResult<ObservedPolicy>;
    /// `hsm`: the key is an HSM key (its rotation counts against the HSM create budget).
    async fn rotate_key(&self, name: &str, hsm: bool) -> VaultResult<ObservedKey>;
    async fn delete_key(&self, name: &str) -> VaultResult<()>;
    async fn recover_deleted_key(&self, name: &str) -> VaultResult<()>;
    async fn purge_deleted_key(&self, name: &str) -> VaultResult<()>;
}

/// Hands out one client per vault URL, built once and shared.
pub trait VaultProvider: Send + Sync {
    /// The vault, reached with the operator's own identity.
    fn vault(&self, vault_url: &str) -> Result<Arc<dyn KeyVault>, VaultError>;
    /// The vault, reached with another identity (a namespace's); the vault's request budget
    /// is shared with every other identity using it, as Key Vault's limits are per vault.
    fn vault_as(
        &self,
        vault_url: &str,
        identity: &VaultIdentity,
    ) -> Result<Arc<dyn KeyVault>, VaultError>;
}

/// An identity other than the operator's, to act on a vault with.
#[derive(Clone)]
pub struct VaultIdentity {
    /// Tells identities apart (client clients are kept per vault and identity).
    pub key: String,
    pub credential: Arc<dyn azure_core::credentials::TokenCredential>,
}
