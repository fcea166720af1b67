//! The `VaultKey` API (`vaultkey.dev/v1alpha1`): what a platform team declares and what the
//! operator reports back. The CRD in `crds/` is generated from these types.
//!
//! Rules the API server can enforce live here as CEL, so bad manifests are refused at apply
//! time; rules CEL cannot express (ISO-8601 duration arithmetic) live in [`crate::validate`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tag on every key the operator creates or adopts, naming its VaultKey as `namespace/name`.
pub const OWNER_TAG: &str = "vaultkey.dev/owner";
/// Tag holding the owning VaultKey's uid (Key Vault tag values are limited to 256 characters,
/// so the uid gets a tag of its own).
pub const OWNER_UID_TAG: &str = "vaultkey.dev/owner-uid";
/// Tag holding the thumbprint of the public part of the last imported material; written in
/// the same call as the import, so the vault itself records what was imported.
pub const IMPORTED_MATERIAL_TAG: &str = "vaultkey.dev/imported-material";
/// Prefix reserved for the operator's own tags; users cannot set tags under it, in any letter
/// case (Key Vault tag names are case-insensitive).
pub const RESERVED_TAG_PREFIX: &str = "vaultkey.dev/";
/// Key Vault's limits on one tag (from the table in [`crate::keyvault_rules`]).
pub use crate::keyvault_rules::{MAX_TAG_NAME_LEN, MAX_TAG_VALUE_LEN};
use crate::keyvault_rules::{MAX_USER_TAGS, OCT_KEY_SIZES, RSA_KEY_SIZES};

/// RFC 3339 date-times as both the API server and our parsers (chrono for the spec, jiff for
/// `metav1.Time` in the status) accept them. The API server's `date-time` format alone also
/// admits times without an offset, offsets such as `+99:99`, any separator before the fraction,
/// trailing text after a second `t`, and the year 9999, which `jiff::Timestamp` cannot hold
/// past 9999-12-30: an object carrying one of those could not be decoded at all.
pub const DATE_TIME_PATTERN: &str = r"^([0-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";
/// ISO-8601 periods as [`crate::period::Period`] parses them: whole years, months, weeks and
/// days in that order, up to 6 digits each (with `minLength: 3`, at least one of them).
pub const PERIOD_PATTERN: &str = r"^P([0-9]{1,6}Y)?([0-9]{1,6}M)?([0-9]{1,6}W)?([0-9]{1,6}D)?$";
/// Upper bound of the int64 fields: the largest integer a float64 holds exactly. The API
/// server compares against `maximum` as a float64 and also admits integral floats, so a bound
/// of i64::MAX (2^63 as a float64) would let 2^63 through, which i64 cannot hold.
/// The message of the CEL rule that checks [`DATE_TIME_PATTERN`] on spec fields: the pattern
/// alone would show a person only the regular expression.
pub const DATE_TIME_MESSAGE: &str = "must be an RFC 3339 time with seconds and Z or a ±hh:mm offset, years 0000-9998, e.g. 2027-11-25T00:00:00Z";
/// The same for [`PERIOD_PATTERN`].
pub const PERIOD_MESSAGE: &str = "must be an ISO-8601 period of whole years, months, weeks and days (up to 6 digits each), e.g. P90D, P1Y, P1Y6M";
pub use crate::keyvault_rules::KEY_NAME_PATTERN;

fn date_time_rule() -> String {
    format!("self.matches(r'{DATE_TIME_PATTERN}')")
}

fn period_rule() -> String {
    format!("self.matches(r'{PERIOD_PATTERN}')")
}

pub const MAX_INT64_FIELD: i64 = (1 << 53) - 1;

/// A key in Azure Key Vault, managed declaratively.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vaultkey.dev",
    version = "v1alpha1",
    kind = "VaultKey",
    namespaced,
    shortname = "vk",
    status = "VaultKeyStatus",
    printcolumn = r#"{"name":"Vault","type":"string","jsonPath":".spec.vaultUrl"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".status.keyName"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.keyType"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.currentVersion"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("(has(self.spec.keyName) ? self.spec.keyName : self.metadata.name) == (has(oldSelf.spec.keyName) ? oldSelf.spec.keyName : oldSelf.metadata.name)").field_path(".spec.keyName").message("spec.keyName is immutable: the key keeps the name it was created with (spec.keyName, or metadata.name when unset); spelling out that same name is fine"),
    validation = Rule::new(format!("!has(self.spec.publish) || has(self.spec.publish.configMapName) || size(self.metadata.name) <= {}", 253 - PUBLISH_SUFFIX.len())).field_path(".spec.publish").message(format!("the default ConfigMap name <metadata.name>{PUBLISH_SUFFIX} would be longer than 253 characters: set spec.publish.configMapName").as_str())
)]
#[x_kube(
    validation = Rule::new("!has(self.keySize) || self.keyType in ['RSA', 'RSA-HSM', 'oct-HSM']").field_path(".keySize").message("keySize applies only to RSA, RSA-HSM and oct-HSM keys; EC keys take a curve"),
    validation = Rule::new("!has(self.curve) || self.keyType in ['EC', 'EC-HSM']").field_path(".curve").message("curve applies only to EC and EC-HSM keys"),
    validation = Rule::new("!has(self.publicExponent) || self.keyType in ['RSA', 'RSA-HSM']").field_path(".publicExponent").message("publicExponent applies only to RSA keys"),
    validation = Rule::new(format!("!has(self.keySize) || self.keyType != 'oct-HSM' || self.keySize in {OCT_KEY_SIZES:?}")).field_path(".keySize").message(format!("oct-HSM keySize must be one of {OCT_KEY_SIZES:?} (e.g. keySize: 256)").as_str()),
    validation = Rule::new(format!("!has(self.keySize) || !(self.keyType in ['RSA', 'RSA-HSM']) || self.keySize in {RSA_KEY_SIZES:?}")).field_path(".keySize").message(format!("RSA keySize must be one of {RSA_KEY_SIZES:?} (e.g. keySize: 2048)").as_str()),
    validation = Rule::new("!has(self.attributes) || !has(self.attributes.exportable) || !self.attributes.exportable || has(self.releasePolicy)").field_path(".attributes.exportable").message("spec.attributes.exportable: Key Vault refuses an exportable key without a release policy: add spec.releasePolicy, or remove exportable"),
    validation = Rule::new("self.keyType != 'oct-HSM' || !self.vaultUrl.matches('^(?i)https://[^/:]+\\\\.vault\\\\.(azure\\\\.net|azure\\\\.cn|usgovcloudapi\\\\.net)(:[0-9]+)?/?$')").message("oct-HSM keys exist only in a Managed HSM, and vaultUrl is a Key Vault: use a Managed HSM URL (https://<hsm>.managedhsm.azure.net) or keyType RSA-HSM / EC-HSM").field_path(".keyType"),
    validation = Rule::new("!has(self.import) || self.keyType in ['RSA', 'RSA-HSM', 'EC', 'EC-HSM']").message("import supports RSA and EC material only"),
    validation = Rule::new("!has(self.import) || (!has(self.keySize) && !has(self.curve) && !has(self.publicExponent))").message("an imported key takes its size or curve from the material: remove keySize, curve and publicExponent"),
    validation = Rule::new("!has(self.import) || !has(self.rotateToken)").message("rotateToken makes Key Vault generate new material, which conflicts with import: change the Secret to import a new version instead"),
    validation = Rule::new("!has(self.import) || !has(self.rotationPolicy) || self.rotationPolicy.lifetimeActions.all(a, a.action != 'Rotate')").message("an imported key cannot have a Rotate action: Key Vault would replace the imported material; use Notify, and change the Secret to import a new version"),
    validation = Rule::new("!has(self.managementPolicy) || self.managementPolicy != 'Observe' || !has(self.deletionPolicy) || self.deletionPolicy == 'Retain'").field_path(".deletionPolicy").message("managementPolicy Observe never writes to the vault, so deleting the VaultKey cannot delete or purge the key: set deletionPolicy: Retain, or managementPolicy: Manage"),
)]
#[serde(rename_all = "camelCase")]
pub struct VaultKeySpec {
    /// URL of the vault, e.g. `https://my-vault.vault.azure.net`. Immutable.
    #[x_kube(
        validation = Rule::new(r"self.matches(r'^https://[^/?#\s]+/?$')").message("vaultUrl must be the vault's https URL with no path, e.g. https://my-vault.vault.azure.net"),
        // The same vault in another spelling (letter case, a trailing slash) is no change:
        // immutability protects the vault, not its spelling (as validate::vault_url reads it).
        validation = Rule::new("(self.endsWith('/') ? self.substring(0, size(self) - 1) : self).lowerAscii() == (oldSelf.endsWith('/') ? oldSelf.substring(0, size(oldSelf) - 1) : oldSelf).lowerAscii()").message("vaultUrl is immutable: to move a key to another vault, create a new VaultKey"),
    )]
    #[schemars(length(max = 512))]
    pub vault_url: String,

    /// Name of the key in the vault; defaults to `metadata.name`. Immutable. Key Vault allows
    /// 1-127 letters, digits and dashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 127))]
    #[x_kube(validation = Rule::new(format!("self.matches(r'{KEY_NAME_PATTERN}')")).message("keyName must be 1-127 letters, digits and dashes (Key Vault's rule), e.g. payments-key"))]
    pub key_name: Option<String>,

    /// Key type. Changing it creates a new version of the same key (Key Vault keeps the history).
    pub key_type: KeyType,

    /// RSA modulus size (2048, 3072, 4096; default 2048) or oct-HSM size (128, 192, 256; default
    /// 256). Changing it creates a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 4096))]
    pub key_size: Option<i32>,

    /// Elliptic curve for EC and EC-HSM keys (default P-256). Changing it creates a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<Curve>,

    /// RSA public exponent: odd, at least 3 (default 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 2147483647))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("publicExponent must be odd, e.g. 65537"))]
    pub public_exponent: Option<i32>,

    /// Operations the key permits. Empty means Key Vault's default for the key type, and the
    /// operator then leaves the operations as the vault has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 8))]
    pub key_ops: Vec<KeyOperation>,

    /// Attributes applied to the key's current version.
    #[serde(default)]
    pub attributes: KeyAttributes,

    /// Tags on the key. Names under `vaultkey.dev/` (in any letter case) are reserved for the
    /// operator; Key Vault allows 15 tags in all, of which the operator uses up to 3, names of
    /// 1-512 characters and values of up to 256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(
        validation = Rule::new(format!("self.all(k, size(k) >= 1 && size(k) <= {MAX_TAG_NAME_LEN})")).message(format!("tag names must have 1-{MAX_TAG_NAME_LEN} characters").as_str()),
        validation = Rule::new("self.all(k, !k.lowerAscii().startsWith('vaultkey.dev/'))").message("tags under vaultkey.dev/ (in any letter case) are reserved for the operator"),
    )]
    #[schemars(extend("maxProperties" = MAX_USER_TAGS, "additionalProperties" = {"type": "string", "maxLength": MAX_TAG_VALUE_LEN}))]
    pub tags: BTreeMap<String, String>,

    /// Secure key release policy, passed to Key Vault when a version is created or imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<ReleasePolicy>,

    /// Key Vault's automatic rotation policy for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_policy: Option<RotationPolicy>,

    /// Every change of this value asks for exactly one manual rotation (a new key version), so
    /// both GitOps and `kubectl patch` can rotate declaratively. Setting it on creation does not
    /// rotate; only later changes do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rotate_token: Option<String>,

    /// Import key material from a Secret instead of letting Key Vault generate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportSource>,

    /// Manage a key that already exists in the vault but was not created for this VaultKey.
    /// Without it such a key is reported (KeyExistsNotAdopted) and left untouched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,

    /// What happens to the key when the VaultKey is deleted: Retain (default) leaves it,
    /// Delete soft-deletes it, Purge soft-deletes then purges it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// When the key this VaultKey manages is found soft-deleted (deleted by hand, or a VaultKey
    /// with deletionPolicy Delete created again), recover it: the same key material comes back
    /// and no version is made. Only a deleted key whose owner tag names this VaultKey (or, with
    /// `adopt`, one with no owner tag) is recovered. Default true.
    #[serde(default = "default_true")]
    pub recover_soft_deleted: bool,

    /// Publish the key's identifiers and public part in a ConfigMap of this namespace, owned by
    /// the VaultKey: versioned and versionless key id, version, key type, PEM, JWK, the JWKS of
    /// the enabled and unexpired versions, expiry and next rotation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publish>,

    /// Opt-in: disable versions that were superseded longer ago than a grace window. Nothing is
    /// ever deleted, the current version is never touched, and each disable is an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,

    /// When the key this VaultKey managed is gone from the vault (neither live nor soft-deleted:
    /// purged), create a new key under the same name. Without it the VaultKey reports KeyGone
    /// and waits, because data encrypted under the old key cannot be decrypted by a new one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recreate_if_gone: bool,

    /// Manage (default): the operator creates and corrects the key. Observe: the operator only
    /// reads the key and reports it in status (a `Drifted` reason lists the properties that
    /// differ from the spec); it never writes to the vault, and deleting the VaultKey never
    /// touches it. Switching from Observe to Manage takes the key over only with `adopt: true`
    /// (or when it carries this VaultKey's owner tag).
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// Act with the Azure identity of a ServiceAccount of this VaultKey's namespace (workload
    /// identity federation) instead of the operator's own. Unset: the operator's identity,
    /// unless the operator requires a namespace identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<KeyIdentity>,
}

/// Whose Azure identity the operator acts with for a VaultKey.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyIdentity {
    /// A ServiceAccount of the VaultKey's own namespace carrying the annotations
    /// `azure.workload.identity/client-id` and `azure.workload.identity/tenant-id`. The
    /// operator requests a token for it (audience `api://AzureADTokenExchange`) and exchanges
    /// it at Azure AD; the application needs a federated credential for
    /// `system:serviceaccount:<namespace>:<name>`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be the plain name of a ServiceAccount in the VaultKey's own namespace (a DNS subdomain, e.g. payments-keys); a ServiceAccount of another namespace cannot be used"))]
    pub service_account_name: String,
}

/// Whether the operator may write to the vault for a VaultKey.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ManagementPolicy {
    /// Create the key, correct its properties and policy, rotate and import as the spec says.
    #[default]
    Manage,
    /// Read only: report the key and how it differs from the spec; never write to the vault.
    Observe,
}

/// Key Vault key types.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum KeyType {
    #[serde(rename = "RSA")]
    Rsa,
    #[serde(rename = "RSA-HSM")]
    RsaHsm,
    #[serde(rename = "EC")]
    Ec,
    #[serde(rename = "EC-HSM")]
    EcHsm,
    #[serde(rename = "oct-HSM")]
    OctHsm,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::RsaHsm => "RSA-HSM",
            KeyType::Ec => "EC",
            KeyType::EcHsm => "EC-HSM",
            KeyType::OctHsm => "oct-HSM",
        }
    }

    pub fn is_hsm(self) -> bool {
        matches!(self, KeyType::RsaHsm | KeyType::EcHsm | KeyType::OctHsm)
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa | KeyType::RsaHsm)
    }

    pub fn is_ec(self) -> bool {
        matches!(self, KeyType::Ec | KeyType::EcHsm)
    }
}

/// Elliptic curves Key Vault supports.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Curve {
    #[serde(rename = "P-256")]
    P256,
    #[serde(rename = "P-256K")]
    P256K,
    #[serde(rename = "P-384")]
    P384,
    #[serde(rename = "P-521")]
    P521,
}

impl Curve {
    pub fn as_str(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P256K => "P-256K",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
}

/// Operations a key can permit.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum KeyOperation {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    WrapKey,
    UnwrapKey,
    Import,
    Export,
}

impl KeyOperation {
    pub const ALL: [KeyOperation; 8] = [
        KeyOperation::Encrypt,
        KeyOperation::Decrypt,
        KeyOperation::Sign,
        KeyOperation::Verify,
        KeyOperation::WrapKey,
        KeyOperation::UnwrapKey,
        KeyOperation::Import,
        KeyOperation::Export,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyOperation::Encrypt => "encrypt",
            KeyOperation::Decrypt => "decrypt",
            KeyOperation::Sign => "sign",
            KeyOperation::Verify => "verify",
            KeyOperation::WrapKey => "wrapKey",
            KeyOperation::UnwrapKey => "unwrapKey",
            KeyOperation::Import => "import",
            KeyOperation::Export => "export",
        }
    }

    pub fn from_name(name: &str) -> Option<KeyOperation> {
        KeyOperation::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// Attributes of the key's current version.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!(has(self.expiresOn) && has(self.expiresAfter))").message("set either expiresOn or expiresAfter, not both"),
    validation = Rule::new("!has(self.expiresOn) || !has(self.notBefore) || timestamp(self.notBefore) < timestamp(self.expiresOn)").message("notBefore must be earlier than expiresOn"),
)]
#[serde(rename_all = "camelCase")]
pub struct KeyAttributes {
    /// Whether the key may be used for cryptographic operations (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Absolute expiry (RFC 3339), e.g. `2027-11-25T00:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 35))]
    #[x_kube(validation = Rule::new(date_time_rule()).message(DATE_TIME_MESSAGE))]
    pub expires_on: Option<String>,

    /// Relative expiry applied to each new version: an ISO-8601 duration counted from the
    /// version's creation, e.g. `P1Y` ("now + 1 year" in the how-to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 29))]
    #[x_kube(validation = Rule::new(period_rule()).message(PERIOD_MESSAGE))]
    pub expires_after: Option<String>,

    /// Not-before time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 35))]
    #[x_kube(validation = Rule::new(date_time_rule()).message(DATE_TIME_MESSAGE))]
    pub not_before: Option<String>,

    /// Whether the private key can be exported (needs a release policy). Set when a version is
    /// created; Key Vault does not allow changing it afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
}

impl Default for KeyAttributes {
    fn default() -> Self {
        KeyAttributes {
            enabled: true,
            expires_on: None,
            expires_after: None,
            not_before: None,
            exportable: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Secure key release policy, passed through to Key Vault.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasePolicy {
    /// Content type of the policy, default `application/json; charset=utf-8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The policy document (JSON text).
    pub data: String,
    /// Whether the policy can never be changed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// Key Vault's automatic rotation policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.lifetimeActions.filter(a, a.action == 'Rotate').size() <= 1").message("at most one Rotate action"),
    validation = Rule::new("self.lifetimeActions.filter(a, a.action == 'Notify').size() <= 1").message("at most one Notify action"),
    validation = Rule::new("self.lifetimeActions.all(a, a.action != 'Notify' || has(a.timeBeforeExpiry))").message("a Notify action takes timeBeforeExpiry"),
    validation = Rule::new("has(self.expiresIn) || self.lifetimeActions.all(a, !has(a.timeBeforeExpiry))").message("timeBeforeExpiry needs expiresIn: without an expiry there is nothing to count back from"),
)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    /// Expiry of each new version (ISO-8601 duration, at least 28 days), e.g. `P90D`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 29))]
    #[x_kube(validation = Rule::new(period_rule()).message(PERIOD_MESSAGE))]
    pub expires_in: Option<String>,

    /// What Key Vault does, and when.
    #[serde(default)]
    #[schemars(length(max = 2))]
    pub lifetime_actions: Vec<LifetimeAction>,
}

/// One lifetime action: exactly one of `timeAfterCreate` and `timeBeforeExpiry`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.timeAfterCreate) != has(self.timeBeforeExpiry)").message("set exactly one of timeAfterCreate and timeBeforeExpiry"),
)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeAction {
    /// Rotate (make a new version) or Notify (Event Grid near-expiry event).
    pub action: LifetimeActionType,
    /// ISO-8601 duration after the version's creation, e.g. `P30D` (at least 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 29))]
    #[x_kube(validation = Rule::new(period_rule()).message(PERIOD_MESSAGE))]
    pub time_after_create: Option<String>,
    /// ISO-8601 duration before the version's expiry, e.g. `P7D` (at least 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 29))]
    #[x_kube(validation = Rule::new(period_rule()).message(PERIOD_MESSAGE))]
    pub time_before_expiry: Option<String>,
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum LifetimeActionType {
    Rotate,
    Notify,
}

/// Where imported key material comes from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportSource {
    /// A key of a Secret in the VaultKey's own namespace, holding a private JWK (JSON) or an
    /// unencrypted PEM private key (RSA or EC). Changed material is imported as a new version.
    pub secret_ref: SecretKeyRef,
}

/// A key within a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name: a plain name in the VaultKey's own namespace (a DNS subdomain such as
    /// `payments-key`, not `namespace/name`).
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be the plain name of a Secret in the VaultKey's own namespace (a DNS subdomain: lower-case letters, digits, '-' and '.', e.g. payments-key); a Secret in another namespace cannot be referenced"))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Suffix of the default published ConfigMap's name: `<metadata.name>-vaultkey`.
pub const PUBLISH_SUFFIX: &str = "-vaultkey";

/// Where the key's public part is published.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Publish {
    /// Name of the ConfigMap, in the VaultKey's namespace; default `<metadata.name>-vaultkey`.
    /// A ConfigMap of that name that this VaultKey does not own is never overwritten. After a
    /// change of name the old ConfigMap stays until the VaultKey is deleted (it owns it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be a ConfigMap name (a DNS subdomain: lower-case letters, digits, '-' and '.', e.g. payments-key-public)"))]
    pub config_map_name: Option<String>,
}

/// Version retention: how long a superseded version stays enabled.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// ISO-8601 period, at least one day: a version replaced by a newer one longer ago than
    /// this is disabled (never deleted; the current version never). Give consumers the time
    /// they need to move: Storage and SQL customer-managed keys ask for 24 hours (`P1D`), JWT
    /// verifiers the lifetime of the longest token signed by the old version.
    #[schemars(length(min = 3, max = 29))]
    #[x_kube(validation = Rule::new(period_rule()).message(PERIOD_MESSAGE))]
    pub disable_superseded_after: String,
}

/// What deleting the VaultKey does to the key.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave the key in the vault; only the finalizer is removed.
    #[default]
    Retain,
    /// Soft-delete the key (recoverable for the vault's retention period).
    Delete,
    /// Soft-delete, then purge the key. Irreversible.
    Purge,
}

/// What the operator observed in the vault, and whether it matches the spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKeyStatus {
    /// Conditions; `Ready` is True only when the vault matches `observedGeneration`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_INT64_FIELD))]
    pub observed_generation: Option<i64>,
    /// The key's name in the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Versionless key id (kid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Current (latest) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Versioned key id of the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_key_id: Option<String>,
    /// Key type as the vault reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// RSA modulus size in bits, from the current public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub key_size: Option<i32>,
    /// Elliptic curve of the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<String>,
    /// RFC 7638 thumbprint (SHA-256) of the current version's public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_thumbprint: Option<String>,
    /// The most recent versions, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<KeyVersionStatus>,
    /// Number of versions the key has in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub version_count: Option<i32>,
    /// The rotation policy as the vault holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_policy: Option<ObservedRotationPolicy>,
    /// Creation time of the current version when it replaced an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DATE_TIME_PATTERN))]
    pub last_rotation_time: Option<Time>,
    /// When Key Vault will next rotate automatically, computed from the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DATE_TIME_PATTERN))]
    pub next_rotation_time: Option<Time>,
    /// The rotateToken value whose rotation has been performed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rotate_token: Option<String>,
    /// A manual rotation in flight: written before the rotate call so a retry after a crash
    /// or timeout can tell whether the rotation already happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_rotation: Option<PendingRotation>,
    /// Thumbprint of the public part of the imported material the vault holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_material: Option<String>,
    /// The last property correction written to the vault, so that a correction the vault does
    /// not keep is reported instead of written again on every pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_correction: Option<CorrectionRecord>,
    /// True while the key in status was only observed (managementPolicy Observe): a VaultKey
    /// switched to Manage then does not take that key for its own unless `adopt` says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observe_only: bool,
    /// The version whose expiry, within the rotation policy's Notify window with no rotation
    /// scheduled before it, has been announced (one Warning event per version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_warned_version: Option<String>,
}

/// A property correction and what the vault held right after it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorrectionRecord {
    /// The version corrected.
    pub version: String,
    /// The spec fields corrected.
    pub fields: Vec<String>,
    /// Fingerprint of the properties sent.
    pub sent: String,
    /// Fingerprint of the version's properties as the vault answered.
    pub answered: String,
}

/// A rotation policy as read from the vault. Unlike [`RotationPolicy`] it carries no
/// validation: the vault's own default policy need not satisfy the spec's rules.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedRotationPolicy {
    /// Expiry of versions Key Vault makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// The policy's actions, as the vault holds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifetime_actions: Vec<ObservedLifetimeAction>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedLifetimeAction {
    /// Rotate or Notify.
    pub action: String,
    /// Period after a version's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_after_create: Option<String>,
    /// Period before a version's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_before_expiry: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRotation {
    /// The rotateToken being served.
    pub token: String,
    /// The version that was current before the rotation.
    pub from_version: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersionStatus {
    /// Version id (the last segment of the versioned kid).
    pub version: String,
    /// When Key Vault created the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DATE_TIME_PATTERN))]
    pub created: Option<Time>,
    /// Whether the version may be used.
    pub enabled: bool,
    /// Expiry of the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DATE_TIME_PATTERN))]
    pub expires_on: Option<Time>,
    /// Not-before time of the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DATE_TIME_PATTERN))]
    pub not_before: Option<Time>,
}

/// A status condition (the shape of `metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type; `Ready` is the one the operator sets.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// Machine-readable cause, e.g. Reconciled, InvalidSpec, Throttled.
    pub reason: String,
    /// What happened and what to do about it.
    pub message: String,
    /// The generation of the spec this condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_INT64_FIELD))]
    pub observed_generation: Option<i64>,
    /// When the status last changed.
    #[schemars(regex(pattern = DATE_TIME_PATTERN))]
    pub last_transition_time: Time,
}

impl VaultKey {
    /// The key's name in the vault: `spec.keyName`, else `metadata.name`.
    pub fn key_name(&self) -> &str {
        self.spec
            .key_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }

    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
    }
}

/// The CRD as YAML, exactly as committed in `crds/vaultkey.yaml`.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    serde_norway::to_string(&VaultKey::crd())
}
