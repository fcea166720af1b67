//! Turns a `VaultKey` spec into the [`DesiredKey`] the plan works with, checking what the CRD
//! schema cannot: duration arithmetic against Key Vault's rotation-policy minimums, timestamps,
//! and anything a client that skipped the schema (an old CRD) could send. Pure.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::api::{
    Curve, DeletionPolicy, ImportSource, KeyOperation, KeyType, LifetimeActionType,
    RESERVED_TAG_PREFIX, ReleasePolicy, VaultKey, VaultKeySpec,
};
use crate::key_material::MaterialKind;
use crate::keyvault_rules::{
    self as rules, DAY_SECONDS, MAX_UNIX_TIME, MAX_USER_TAGS, OCT_KEY_SIZES, PolicyAction,
    PolicyPart, PolicyTrigger, RSA_KEY_SIZES,
};
use crate::period::Period;
use crate::vault_hosts::{VaultHosts, VaultService, known_endpoint};

/// Why a spec cannot be acted on; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {message}")]
pub struct InvalidSpec {
    pub field: &'static str,
    pub message: String,
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field,
        message: message.into(),
    }
}

/// What the vault should hold, in the vault's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredKey {
    pub vault_url: String,
    pub key_name: String,
    pub key_type: KeyType,
    pub material: Material,
    /// `None`: leave the operations as Key Vault chose them.
    pub key_ops: Option<BTreeSet<KeyOperation>>,
    pub enabled: bool,
    pub expiry: Expiry,
    pub not_before: Option<DateTime<Utc>>,
    pub exportable: Option<bool>,
    pub release_policy: Option<ReleasePolicy>,
    pub tags: BTreeMap<String, String>,
    pub rotation_policy: Option<DesiredRotationPolicy>,
    pub rotate_token: Option<String>,
    pub adopt: bool,
    pub deletion_policy: DeletionPolicy,
    pub recover_soft_deleted: bool,
    pub recreate_if_gone: bool,
    /// spec.retention.disableSupersededAfter: how long a superseded version stays enabled.
    pub disable_superseded_after: Option<Period>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// Key Vault generates the key. Size and curve are as the spec states them: unset ones
    /// take Key Vault's defaults at creation and are not compared afterwards, so adopting a
    /// key never replaces it just because the spec left its size out.
    Generated {
        size: Option<i32>,
        curve: Option<Curve>,
        public_exponent: Option<i32>,
    },
    Imported(ImportSource),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    None,
    At(DateTime<Utc>),
    /// Counted from each version's creation.
    AfterCreation(Period),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRotationPolicy {
    pub expires_in: Option<Period>,
    pub actions: Vec<DesiredLifetimeAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredLifetimeAction {
    pub action: LifetimeActionType,
    pub trigger: Trigger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    AfterCreate(PeriodKey),
    BeforeExpiry(PeriodKey),
}

/// A [`Period`] with a total order, so actions compare as sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeriodKey {
    pub years: u32,
    pub months: u32,
    pub days: u32,
}

impl From<Period> for PeriodKey {
    fn from(p: Period) -> Self {
        PeriodKey {
            years: p.years,
            months: p.months,
            days: p.days,
        }
    }
}

impl From<PeriodKey> for Period {
    fn from(p: PeriodKey) -> Self {
        Period {
            years: p.years,
            months: p.months,
            days: p.days,
        }
    }
}

/// [`validate_at`] with the current time.
pub fn validate(vk: &VaultKey) -> Result<DesiredKey, InvalidSpec> {
    validate_at(vk, Utc::now())
}

/// Validates the spec as of `now`: expiries are checked against the clock (a key must not be
/// expired when it is created, nor expire beyond the dates Key Vault and the status hold).
pub fn validate_at(vk: &VaultKey, now: DateTime<Utc>) -> Result<DesiredKey, InvalidSpec> {
    let key_name = vk.key_name().to_owned();
    validate_spec_at(&vk.spec, key_name, now)
}

/// [`validate_spec_at`] with the current time.
pub fn validate_spec(spec: &VaultKeySpec, key_name: String) -> Result<DesiredKey, InvalidSpec> {
    validate_spec_at(spec, key_name, Utc::now())
}

pub fn validate_spec_at(
    spec: &VaultKeySpec,
    key_name: String,
    now: DateTime<Utc>,
) -> Result<DesiredKey, InvalidSpec> {
    let vault_url = vault_url(&spec.vault_url)?;
    if !rules::key_name_ok(&key_name) {
        return Err(invalid(
            "keyName",
            format!(
                "{key_name:?} is not a valid Key Vault key name (1-127 letters, digits and dashes); set spec.keyName"
            ),
        ));
    }

    let material = match &spec.import {
        Some(source) => {
            if !(spec.key_type.is_rsa() || spec.key_type.is_ec()) {
                return Err(invalid(
                    "import",
                    "import supports RSA and EC material only",
                ));
            }
            if spec.key_size.is_some() || spec.curve.is_some() || spec.public_exponent.is_some() {
                return Err(invalid(
                    "import",
                    "an imported key takes its size or curve from the material",
                ));
            }
            if spec.rotate_token.is_some() {
                return Err(invalid(
                    "rotateToken",
                    "rotateToken cannot be combined with import",
                ));
            }
            let auto_rotates = spec.rotation_policy.as_ref().is_some_and(|p| {
                p.lifetime_actions
                    .iter()
                    .any(|a| a.action == LifetimeActionType::Rotate)
            });
            if auto_rotates {
                return Err(invalid(
                    "rotationPolicy",
                    "a Rotate action would replace the imported material with key material Key Vault generates; use Notify only, and change the Secret to import a new version",
                ));
            }
            Material::Imported(source.clone())
        }
        None => generated_material(spec)?,
    };

    let key_ops = if spec.key_ops.is_empty() {
        None
    } else {
        Some(spec.key_ops.iter().copied().collect())
    };

    let attrs = &spec.attributes;
    let expiry = match (&attrs.expires_on, &attrs.expires_after) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "attributes",
                "set either expiresOn or expiresAfter, not both",
            ));
        }
        (Some(at), None) => {
            // An expiry that has passed is refused when a version would be created with it (the
            // plan's `ExpiredAtCreation`), not here: the key that exists keeps its spec valid.
            Expiry::At(timestamp("attributes.expiresOn", at)?)
        }
        (None, Some(after)) => {
            let field = "attributes.expiresAfter";
            let period = Period::parse(after).map_err(|e| invalid(field, e.to_string()))?;
            if period.approx_days() == 0 {
                return Err(invalid(
                    field,
                    format!(
                        "{after} would make every version expired at creation; give a period of at least one day (e.g. P1Y)"
                    ),
                ));
            }
            within_time_limit(field, after, period, now)?;
            Expiry::AfterCreation(period)
        }
        (None, None) => Expiry::None,
    };
    let not_before = attrs
        .not_before
        .as_deref()
        .map(|t| timestamp("attributes.notBefore", t))
        .transpose()?;
    let first_expiry = match expiry {
        Expiry::None => None,
        Expiry::At(at) => Some(at),
        Expiry::AfterCreation(period) => period.after(now),
    };
    if let (Some(exp), Some(nbf)) = (first_expiry, not_before)
        && nbf >= exp
    {
        return Err(invalid(
            "attributes.notBefore",
            format!(
                "notBefore {} is not earlier than the expiry {}: the key would never be usable; set notBefore earlier, or the expiry later",
                nbf.to_rfc3339(),
                exp.to_rfc3339()
            ),
        ));
    }
    if let Err(message) = rules::check_exportable(
        attrs.exportable.unwrap_or(false),
        spec.release_policy.is_some(),
    ) {
        return Err(invalid(
            "attributes.exportable",
            format!("{message}: add spec.releasePolicy, or remove exportable"),
        ));
    }
    if let Some(policy) = &spec.release_policy
        && serde_json::from_str::<serde_json::Value>(&policy.data).map_or(true, |v| !v.is_object())
    {
        return Err(invalid(
            "releasePolicy.data",
            "the release policy must be a JSON object, e.g. {\"version\":\"1.0.0\",\"anyOf\":[...]}",
        ));
    }

    if spec.tags.len() > MAX_USER_TAGS {
        return Err(invalid(
            "tags",
            format!("at most {MAX_USER_TAGS} tags (Key Vault allows 15, the operator uses 3)"),
        ));
    }
    if let Some(reserved) = spec.tags.keys().find(|k| is_reserved_tag(k)) {
        return Err(invalid(
            "tags",
            format!(
                "tag {reserved:?} is under the reserved prefix {RESERVED_TAG_PREFIX} (in any letter case)"
            ),
        ));
    }
    if let Err(e) = rules::check_tags(spec.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        return Err(invalid("tags", e.message));
    }

    let rotation_policy = spec
        .rotation_policy
        .as_ref()
        .map(|p| rotation_policy(p, now))
        .transpose()?;

    let disable_superseded_after = spec
        .retention
        .as_ref()
        .map(|r| {
            let field = "retention.disableSupersededAfter";
            let text = &r.disable_superseded_after;
            let period = Period::parse(text).map_err(|e| invalid(field, e.to_string()))?;
            if period.approx_days() == 0 {
                return Err(invalid(
                    field,
                    format!(
                        "{text} would disable every version the moment it is superseded; give consumers at least one day (e.g. P1D)"
                    ),
                ));
            }
            Ok(period)
        })
        .transpose()?;

    Ok(DesiredKey {
        vault_url,
        key_name,
        key_type: spec.key_type,
        material,
        key_ops,
        enabled: attrs.enabled,
        expiry,
        not_before,
        exportable: attrs.exportable,
        release_policy: spec.release_policy.clone(),
        tags: spec.tags.clone(),
        rotation_policy,
        rotate_token: spec.rotate_token.clone(),
        adopt: spec.adopt,
        deletion_policy: spec.deletion_policy,
        recover_soft_deleted: spec.recover_soft_deleted,
        recreate_if_gone: spec.recreate_if_gone,
        disable_superseded_after,
    })
}

/// Key Vault tag names are case-insensitive, so `Vaultkey.dev/owner` would be the operator's tag.
fn is_reserved_tag(name: &str) -> bool {
    name.get(..RESERVED_TAG_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_TAG_PREFIX))
}

/// Normalises the vault URL to `https://host[:port]` (no trailing slash) so one vault has one
/// client and one request budget however it is spelled.
pub fn vault_url(raw: &str) -> Result<String, InvalidSpec> {
    let parsed = url::Url::parse(raw).map_err(|_| {
        invalid(
            "vaultUrl",
            format!("{raw:?} is not a URL; expected https://<vault>.vault.azure.net"),
        )
    })?;
    if parsed.scheme() != "https" {
        return Err(invalid("vaultUrl", "Key Vault is reached over https only"));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(
            "vaultUrl",
            "the vault URL takes no path, query or fragment",
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| invalid("vaultUrl", "the vault URL has no host"))?
        .to_ascii_lowercase();
    Ok(match parsed.port() {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    })
}

/// [`validate`], then the vault URL against the known clouds and the operator's vault host
/// setting: the vault name, and oct-HSM keys only in a Managed HSM (CEL checks that too, for
/// the known Key Vault suffixes; this covers clients that skipped the schema).
pub fn validate_with_hosts(vk: &VaultKey, hosts: &VaultHosts) -> Result<DesiredKey, InvalidSpec> {
    let desired = validate(vk)?;
    hosts.check(&desired.vault_url)?;
    if desired.key_type == KeyType::OctHsm
        && let Some((_, endpoint)) = known_endpoint(&desired.vault_url)
        && endpoint.service == VaultService::KeyVault
    {
        return Err(invalid(
            "keyType",
            format!(
                "oct-HSM keys exist only in a Managed HSM, and spec.vaultUrl {} is a Key Vault; use a Managed HSM URL (https://<hsm>.managedhsm.azure.net) or an RSA-HSM / EC-HSM key",
                desired.vault_url
            ),
        ));
    }
    Ok(desired)
}

fn generated_material(spec: &VaultKeySpec) -> Result<Material, InvalidSpec> {
    let kt = spec.key_type;
    if spec.curve.is_some() && !kt.is_ec() {
        return Err(invalid("curve", "curve applies only to EC and EC-HSM keys"));
    }
    if spec.public_exponent.is_some() && !kt.is_rsa() {
        return Err(invalid(
            "publicExponent",
            "publicExponent applies only to RSA keys",
        ));
    }
    let size = match (kt, spec.key_size) {
        (KeyType::Ec | KeyType::EcHsm, Some(_)) => {
            return Err(invalid(
                "keySize",
                "keySize applies only to RSA and oct-HSM keys; EC keys take a curve",
            ));
        }
        (_, None) => None,
        (KeyType::OctHsm, Some(size)) => {
            if !OCT_KEY_SIZES.contains(&size) {
                return Err(invalid(
                    "keySize",
                    format!("oct-HSM keySize must be one of {OCT_KEY_SIZES:?}"),
                ));
            }
            Some(size)
        }
        (KeyType::Rsa | KeyType::RsaHsm, Some(size)) => {
            if !RSA_KEY_SIZES.contains(&size) {
                return Err(invalid(
                    "keySize",
                    format!("RSA keySize must be one of {RSA_KEY_SIZES:?}"),
                ));
            }
            Some(size)
        }
    };
    if let Some(e) = spec.public_exponent
        && (e < 3 || e % 2 == 0)
    {
        return Err(invalid(
            "publicExponent",
            "publicExponent must be an odd number of at least 3 (usually 65537)",
        ));
    }
    let curve = spec.curve;
    Ok(Material::Generated {
        size,
        curve,
        public_exponent: spec.public_exponent,
    })
}

/// Key Vault keeps whole seconds; truncating here keeps a sub-second spec from looking like
/// drift forever.
fn timestamp(field: &'static str, text: &str) -> Result<DateTime<Utc>, InvalidSpec> {
    let t = DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| DateTime::from_timestamp(t.timestamp(), 0))
        .ok_or_else(|| {
            invalid(
                field,
                format!("{text:?} is not an RFC 3339 timestamp (e.g. 2027-11-25T00:00:00Z)"),
            )
        })?;
    if !rules::unix_time_ok(t.timestamp()) {
        return Err(invalid(
            field,
            format!(
                "{text:?} is outside 0000-01-01 to 9998-12-31, the dates Key Vault and the status hold (e.g. 2027-11-25T00:00:00Z)"
            ),
        ));
    }
    Ok(t)
}

/// A period counted from `now` must end by [`MAX_UNIX_TIME`] (9998-12-31T23:59:59Z): Key
/// Vault's `exp` is a Unix time and the status shows it as a `metav1.Time`.
fn within_time_limit(
    field: &'static str,
    text: &str,
    period: Period,
    now: DateTime<Utc>,
) -> Result<(), InvalidSpec> {
    if period
        .after(now)
        .is_none_or(|t| t.timestamp() > MAX_UNIX_TIME)
    {
        return Err(invalid(
            field,
            format!(
                "{text} from now ends after 9998-12-31, the latest expiry Key Vault dates and the status hold; use a shorter period (e.g. P1Y, P10Y)"
            ),
        ));
    }
    Ok(())
}

fn period_seconds(p: Period) -> i64 {
    i64::try_from(p.approx_days()).unwrap_or(i64::MAX / DAY_SECONDS) * DAY_SECONDS
}

fn rotation_policy(
    policy: &crate::api::RotationPolicy,
    now: DateTime<Utc>,
) -> Result<DesiredRotationPolicy, InvalidSpec> {
    let expires_in = policy
        .expires_in
        .as_deref()
        .map(|p| Period::parse(p).map_err(|e| invalid("rotationPolicy.expiresIn", e.to_string())))
        .transpose()?;
    if let (Some(exp), Some(text)) = (expires_in, policy.expires_in.as_deref()) {
        within_time_limit("rotationPolicy.expiresIn", text, exp, now)?;
    }
    let field = "rotationPolicy.lifetimeActions";
    let mut actions = Vec::new();
    let mut checked = Vec::new();
    for (i, action) in policy.lifetime_actions.iter().enumerate() {
        let parse = |name: &str, text: &str| {
            Period::parse(text).map_err(|e| invalid(field, format!("[{i}].{name}: {e}")))
        };
        let trigger = match (&action.time_after_create, &action.time_before_expiry) {
            (Some(after), None) => Trigger::AfterCreate(parse("timeAfterCreate", after)?.into()),
            (None, Some(before)) => {
                let before = parse("timeBeforeExpiry", before)?;
                // The operator's own rule, stricter than Key Vault's for Notify: a period
                // before expiry needs an expiry in the policy, and must be shorter than it.
                let Some(exp) = expires_in else {
                    return Err(invalid(
                        field,
                        format!(
                            "[{i}].timeBeforeExpiry needs rotationPolicy.expiresIn (e.g. P90D): without an expiry there is nothing to count back from"
                        ),
                    ));
                };
                if before.approx_days() >= exp.approx_days() {
                    return Err(invalid(
                        field,
                        format!(
                            "[{i}].timeBeforeExpiry {before} must be shorter than expiresIn {exp}"
                        ),
                    ));
                }
                Trigger::BeforeExpiry(before.into())
            }
            _ => {
                return Err(invalid(
                    field,
                    format!("[{i}]: set exactly one of timeAfterCreate and timeBeforeExpiry"),
                ));
            }
        };
        checked.push((
            match action.action {
                LifetimeActionType::Rotate => PolicyAction::Rotate,
                LifetimeActionType::Notify => PolicyAction::Notify,
            },
            match trigger {
                Trigger::AfterCreate(p) => PolicyTrigger::AfterCreate(period_seconds(p.into())),
                Trigger::BeforeExpiry(p) => PolicyTrigger::BeforeExpiry(period_seconds(p.into())),
            },
        ));
        actions.push(DesiredLifetimeAction {
            action: action.action,
            trigger,
        });
    }
    rules::check_rotation_policy(expires_in.map(period_seconds), &checked).map_err(
        |e| match e.part {
            PolicyPart::ExpiryTime => invalid("rotationPolicy.expiresIn", e.message),
            PolicyPart::Action(i) => invalid(field, format!("[{i}]: {}", e.message)),
            PolicyPart::Actions => invalid(field, e.message),
        },
    )?;
    actions.sort();
    Ok(DesiredRotationPolicy {
        expires_in,
        actions,
    })
}

/// Imported material must be of the family `keyType` names: Key Vault would otherwise make a
/// key of the material's type (EC material under `keyType: RSA` becomes an EC key) and the
/// VaultKey would report Ready for a key it does not describe. The controller calls this with
/// the parsed Secret before planning (`MaterialKind` is public information, safe to report).
pub fn check_material(desired: &DesiredKey, kind: MaterialKind) -> Result<(), InvalidSpec> {
    let Material::Imported(source) = &desired.material else {
        return Ok(());
    };
    let fits = match kind {
        MaterialKind::Rsa { .. } => desired.key_type.is_rsa(),
        MaterialKind::Ec { .. } => desired.key_type.is_ec(),
    };
    if fits {
        return Ok(());
    }
    let (family, hsm) = match kind {
        MaterialKind::Rsa { .. } => ("RSA", "RSA-HSM"),
        MaterialKind::Ec { .. } => ("EC", "EC-HSM"),
    };
    Err(invalid(
        "keyType",
        format!(
            "import.secretRef (Secret {:?}, key {:?}) holds {kind} material, but keyType is {}: set keyType to {family} or {hsm}, or point import.secretRef at {} material",
            source.secret_ref.name,
            source.secret_ref.key,
            desired.key_type.as_str(),
            desired.key_type.as_str().trim_end_matches("-HSM"),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> VaultKeySpec {
        serde_norway::from_str(yaml).expect("test spec parses")
    }

    /// The clock the tests validate at.
    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn check(yaml: &str) -> Result<DesiredKey, InvalidSpec> {
        validate_spec_at(&spec(yaml), "my-key".into(), now())
    }

    const HOW_TO: &str = r#"
vaultUrl: https://My-Vault.vault.azure.net/
keyType: RSA
keySize: 2048
keyOps: [encrypt, decrypt]
attributes:
  expiresAfter: P1Y
tags:
  project: test-project
rotationPolicy:
  expiresIn: P90D
  lifetimeActions:
    - action: Rotate
      timeAfterCreate: P30D
    - action: Notify
      timeBeforeExpiry: P7D
"#;

    #[test]
    fn how_to_spec_is_valid_and_normalised() {
        let d = check(HOW_TO).unwrap();
        assert_eq!(d.vault_url, "https://my-vault.vault.azure.net");
        assert_eq!(
            d.material,
            Material::Generated {
                size: Some(2048),
                curve: None,
                public_exponent: None
            }
        );
        assert_eq!(
            d.key_ops,
            Some([KeyOperation::Encrypt, KeyOperation::Decrypt].into())
        );
        assert_eq!(
            d.expiry,
            Expiry::AfterCreation(Period {
                years: 1,
                months: 0,
                days: 0
            })
        );
        let policy = d.rotation_policy.unwrap();
        assert_eq!(
            policy.expires_in,
            Some(Period {
                years: 0,
                months: 0,
                days: 90
            })
        );
        assert_eq!(policy.actions.len(), 2);
        assert!(
            policy.actions.contains(&DesiredLifetimeAction {
                action: LifetimeActionType::Rotate,
                trigger: Trigger::AfterCreate(
                    Period {
                        years: 0,
                        months: 0,
                        days: 30
                    }
                    .into()
                ),
            })
        );
        assert_eq!(d.deletion_policy, DeletionPolicy::Retain);
        assert!(d.enabled);
    }

    #[test]
    fn unset_sizes_and_curves_stay_unset() {
        // Key Vault's defaults are named at creation (plan), never compared against.
        let unset = Material::Generated {
            size: None,
            curve: None,
            public_exponent: None,
        };
        let d = check("vaultUrl: https://v.vault.azure.net\nkeyType: EC").unwrap();
        assert_eq!(d.material, unset);
        let d = check("vaultUrl: https://v.vault.azure.net\nkeyType: oct-HSM").unwrap();
        assert_eq!(d.material, unset);
        let d = check("vaultUrl: https://v.vault.azure.net\nkeyType: EC\ncurve: P-384").unwrap();
        assert!(matches!(
            d.material,
            Material::Generated {
                curve: Some(Curve::P384),
                ..
            }
        ));
        let d = check("vaultUrl: https://v.vault.azure.net:8443\nkeyType: RSA-HSM").unwrap();
        assert_eq!(d.vault_url, "https://v.vault.azure.net:8443");
        assert_eq!(d.key_ops, None);
    }

    #[test]
    fn rejects_what_key_vault_would_refuse() {
        let cases: &[(&str, &str)] = &[
            (
                "vaultUrl: http://v.vault.azure.net\nkeyType: RSA",
                "vaultUrl",
            ),
            (
                "vaultUrl: https://v.vault.azure.net/keys\nkeyType: RSA",
                "vaultUrl",
            ),
            ("vaultUrl: not a url\nkeyType: RSA", "vaultUrl"),
            ("vaultUrl: https://v\nkeyType: EC\nkeySize: 2048", "keySize"),
            (
                "vaultUrl: https://v\nkeyType: RSA\nkeySize: 1024",
                "keySize",
            ),
            (
                "vaultUrl: https://v\nkeyType: oct-HSM\nkeySize: 2048",
                "keySize",
            ),
            ("vaultUrl: https://v\nkeyType: RSA\ncurve: P-256", "curve"),
            (
                "vaultUrl: https://v\nkeyType: RSA\npublicExponent: 4",
                "publicExponent",
            ),
            (
                "vaultUrl: https://v\nkeyType: EC\npublicExponent: 3",
                "publicExponent",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nattributes: {expiresOn: tomorrow}",
                "attributes.expiresOn",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nattributes: {expiresAfter: 1 year}",
                "attributes.expiresAfter",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nattributes: {expiresOn: '2027-01-01T00:00:00Z', expiresAfter: P1Y}",
                "attributes",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nattributes: {expiresOn: '2027-01-01T00:00:00Z', notBefore: '2028-01-01T00:00:00Z'}",
                "attributes.notBefore",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\ntags: {vaultkey.dev/owner: x}",
                "tags",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\ntags: {Vaultkey.dev/owner: x}",
                "tags",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\ntags: {VAULTKEY.DEV/x: x}",
                "tags",
            ),
            ("vaultUrl: https://v\nkeyType: RSA\ntags: {'': x}", "tags"),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {expiresIn: P27D}",
                "rotationPolicy.expiresIn",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {expiresIn: 90 days}",
                "rotationPolicy.expiresIn",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P6D}]}",
                "rotationPolicy.lifetimeActions",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P84D}]}",
                "rotationPolicy.lifetimeActions",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeBeforeExpiry: P6D}]}",
                "rotationPolicy.lifetimeActions",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {lifetimeActions: [{action: Rotate, timeBeforeExpiry: P30D}]}",
                "rotationPolicy.lifetimeActions",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Notify, timeAfterCreate: P30D}]}",
                "rotationPolicy.lifetimeActions",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D, timeBeforeExpiry: P30D}]}",
                "rotationPolicy.lifetimeActions",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D}, {action: Rotate, timeAfterCreate: P40D}]}",
                "rotationPolicy.lifetimeActions",
            ),
            (
                "vaultUrl: https://v\nkeyType: oct-HSM\nimport: {secretRef: {name: s, key: k}}",
                "import",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nkeySize: 2048\nimport: {secretRef: {name: s, key: k}}",
                "import",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nrotateToken: a\nimport: {secretRef: {name: s, key: k}}",
                "rotateToken",
            ),
            (
                "vaultUrl: https://v\nkeyType: RSA\nimport: {secretRef: {name: s, key: k}}\nrotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeAfterCreate: P30D}]}",
                "rotationPolicy",
            ),
        ];
        for (yaml, field) in cases {
            let err = check(yaml).expect_err(yaml);
            assert_eq!(err.field, *field, "{yaml}: {err}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn tag_lengths_are_key_vaults() {
        let tags = |name: &str, value: &str| {
            let mut spec = spec("vaultUrl: https://v\nkeyType: RSA");
            spec.tags.insert(name.to_owned(), value.to_owned());
            validate_spec(&spec, "k".into())
        };
        // Characters, not bytes: "é" is two bytes.
        assert!(tags(&"é".repeat(512), &"é".repeat(256)).is_ok());
        assert!(tags("vaultkey.dev", "x").is_ok());
        let err = tags(&"n".repeat(513), "x").unwrap_err();
        assert_eq!(err.field, "tags");
        assert!(err.message.contains("1-512"), "{err}");
        let err = tags("n", &"v".repeat(257)).unwrap_err();
        assert_eq!(err.field, "tags");
        assert!(err.message.contains("256"), "{err}");
    }

    #[test]
    fn rejects_invalid_key_names() {
        let s = spec("vaultUrl: https://v\nkeyType: RSA");
        for name in ["", "has.dot", "under_score", &"x".repeat(128)] {
            assert_eq!(
                validate_spec(&s, name.to_string()).unwrap_err().field,
                "keyName"
            );
        }
        assert!(validate_spec(&s, "ok-Name-1".into()).is_ok());
    }

    #[test]
    fn import_spec_is_valid() {
        let d = check(
            "vaultUrl: https://v\nkeyType: RSA-HSM\nimport: {secretRef: {name: s, key: jwk}}",
        )
        .unwrap();
        assert!(matches!(d.material, Material::Imported(ref src) if src.secret_ref.name == "s"));
    }

    /// Issue 11: each class reached the vault, or became Ready, with the old checks.
    #[test]
    fn refuses_what_key_vault_or_the_clock_would_refuse() {
        let cases: &[(&str, &str, &str)] = &[
            // Periods beyond the dates Key Vault and the status hold.
            (
                "attributes: {expiresAfter: P9000Y}",
                "attributes.expiresAfter",
                "9998-12-31",
            ),
            (
                "rotationPolicy: {expiresIn: P9000Y}",
                "rotationPolicy.expiresIn",
                "9998-12-31",
            ),
            // Rotates 5 days after creation: Key Vault refuses the policy after the create.
            (
                "rotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeBeforeExpiry: P85D}]}",
                "rotationPolicy.lifetimeActions",
                "at most 83 days",
            ),
            (
                "attributes: {exportable: true}",
                "attributes.exportable",
                "releasePolicy",
            ),
            (
                "attributes: {exportable: true}\nreleasePolicy: {data: 'not json'}",
                "releasePolicy.data",
                "JSON object",
            ),
            // Expired at creation.
            (
                "attributes: {expiresAfter: P0D}",
                "attributes.expiresAfter",
                "at least one day",
            ),
            (
                "attributes: {expiresOn: '9999-12-31T00:00:00Z'}",
                "attributes.expiresOn",
                "9998-12-31",
            ),
            // A superseded version disabled at once leaves consumers no time to move.
            (
                "retention: {disableSupersededAfter: P0D}",
                "retention.disableSupersededAfter",
                "at least one day",
            ),
            (
                "retention: {disableSupersededAfter: P1H}",
                "retention.disableSupersededAfter",
                "ISO-8601 period",
            ),
            (
                "attributes: {expiresAfter: P30D, notBefore: '2027-01-01T00:00:00Z'}",
                "attributes.notBefore",
                "never be usable",
            ),
        ];
        for (extra, field, fragment) in cases {
            let yaml = format!("vaultUrl: https://v\nkeyType: RSA-HSM\n{extra}");
            let err = check(&yaml).expect_err(&yaml);
            assert_eq!(err.field, *field, "{yaml}: {err}");
            assert!(err.message.contains(fragment), "{yaml}: {err}");
        }
        let ok = "vaultUrl: https://v\nkeyType: RSA-HSM\nattributes: {exportable: true, expiresAfter: P7900Y, notBefore: '2026-12-01T00:00:00Z'}\nreleasePolicy: {data: '{\"version\":\"1.0.0\"}'}\nrotationPolicy: {expiresIn: P90D, lifetimeActions: [{action: Rotate, timeBeforeExpiry: P83D}]}\nretention: {disableSupersededAfter: P1W1D}";
        assert_eq!(
            check(ok).unwrap().disable_superseded_after,
            Some(Period {
                years: 0,
                months: 0,
                days: 8
            })
        );
    }

    #[test]
    fn imported_material_must_match_the_key_type() {
        use crate::key_material::MaterialKind;
        for (key_type, kind, ok) in [
            ("RSA", MaterialKind::Rsa { bits: 2048 }, true),
            ("RSA-HSM", MaterialKind::Rsa { bits: 4096 }, true),
            ("EC", MaterialKind::Ec { curve: Curve::P256 }, true),
            ("EC-HSM", MaterialKind::Ec { curve: Curve::P384 }, true),
            ("RSA", MaterialKind::Ec { curve: Curve::P256 }, false),
            ("RSA-HSM", MaterialKind::Ec { curve: Curve::P521 }, false),
            ("EC", MaterialKind::Rsa { bits: 2048 }, false),
            ("EC-HSM", MaterialKind::Rsa { bits: 3072 }, false),
        ] {
            let d = check(&format!(
                "vaultUrl: https://v\nkeyType: {key_type}\nimport: {{secretRef: {{name: s, key: jwk}}}}"
            ))
            .unwrap();
            let result = check_material(&d, kind);
            assert_eq!(result.is_ok(), ok, "{key_type} with {kind}: {result:?}");
            if let Err(e) = result {
                assert_eq!(e.field, "keyType");
                assert!(e.message.contains("import.secretRef"), "{e}");
            }
        }
    }

    #[test]
    fn a_month_policy_uses_thirty_day_months() {
        // P1M = 30 days >= 28: allowed; Rotate at P23D is 7 days before that.
        let ok = "vaultUrl: https://v\nkeyType: EC\nrotationPolicy: {expiresIn: P1M, lifetimeActions: [{action: Rotate, timeAfterCreate: P23D}]}";
        assert!(check(ok).is_ok());
        let bad = "vaultUrl: https://v\nkeyType: EC\nrotationPolicy: {expiresIn: P1M, lifetimeActions: [{action: Rotate, timeAfterCreate: P24D}]}";
        assert!(check(bad).is_err());
    }

    fn with_url(url: &str, key_type: &str) -> Result<DesiredKey, InvalidSpec> {
        let vk = VaultKey::new(
            "my-key",
            spec(&format!("vaultUrl: {url}\nkeyType: {key_type}\n")),
        );
        validate_with_hosts(&vk, &VaultHosts::parse(&["127.0.0.1"], false).unwrap())
    }

    #[test]
    fn vault_names_under_known_suffixes_follow_azure_rules() {
        for ok in [
            "abc",
            "my-vault",
            "a1-b2-c3",
            "abcdefghijklmnopqrstuvwx",
            "My-Vault",
        ] {
            with_url(&format!("https://{ok}.vault.azure.net"), "RSA").unwrap();
            with_url(&format!("https://{ok}.managedhsm.azure.cn/"), "oct-HSM").unwrap();
        }
        for bad in [
            "ab",
            "abcdefghijklmnopqrstuvwxy",
            "1vault",
            "my--vault",
            "vault-",
            "a.b.c",
            "my_vault",
        ] {
            let e = with_url(&format!("https://{bad}.vault.azure.net"), "RSA").unwrap_err();
            assert_eq!(e.field, "vaultUrl", "{bad}");
            assert!(
                e.message.contains("e.g. https://my-vault.vault.azure.net"),
                "{e}"
            );
        }
        let e = with_url("https://my-vault.vault.azure.net:8443", "RSA").unwrap_err();
        assert_eq!(e.field, "vaultUrl");
        // Other hosts: the operator's host setting decides; the type is not checked.
        with_url("https://127.0.0.1:8443", "oct-HSM").unwrap();
        assert_eq!(
            with_url("https://10.0.0.4", "RSA").unwrap_err().field,
            "vaultUrl"
        );
    }

    #[test]
    fn oct_hsm_needs_a_managed_hsm() {
        for url in [
            "https://my-vault.vault.azure.net",
            "https://my-vault.vault.azure.cn",
            "https://my-vault.vault.usgovcloudapi.net",
        ] {
            let e = with_url(url, "oct-HSM").unwrap_err();
            assert_eq!(e.field, "keyType");
            assert!(
                e.message.contains("spec.vaultUrl") && e.message.contains("Managed HSM"),
                "{e}"
            );
        }
        for kt in ["RSA", "RSA-HSM", "EC", "EC-HSM"] {
            with_url("https://my-vault.vault.azure.net", kt).unwrap();
            with_url("https://my-hsm.managedhsm.azure.net", kt).unwrap();
        }
        with_url("https://my-hsm.managedhsm.azure.net", "oct-HSM").unwrap();
    }
}

/// Property tests: arbitrary VaultKeySpec-like JSON (known fields with plausible, edge and
/// wrong-typed values, unknown fields, random nesting). Whatever deserialises (what the CRD
/// schema would let through, and more: the schema is stricter than serde) must validate to Ok
/// or to an `InvalidSpec` naming a field the input has, never panic.
#[cfg(test)]
pub(crate) mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    /// Every field `validate_spec` may name.
    const REPORTED: &[&str] = &[
        "vaultUrl",
        "keyName",
        "keySize",
        "curve",
        "publicExponent",
        "attributes",
        "attributes.expiresOn",
        "attributes.expiresAfter",
        "attributes.notBefore",
        "tags",
        "rotationPolicy",
        "rotationPolicy.expiresIn",
        "rotationPolicy.lifetimeActions",
        "import",
        "rotateToken",
        "releasePolicy.data",
        "attributes.exportable",
    ];

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,24}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z./]{1,12}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A plausible value most of the time, anything (usually the wrong type) otherwise.
    fn or_anything(plausible: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
        prop_oneof![40 => plausible, 1 => any_json()].boxed()
    }

    fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = Value> {
        prop::sample::select(values).prop_map(Value::from)
    }

    /// One of the API's values mostly, sometimes a value the API does not have.
    fn enum_value(
        valid: &'static [&'static str],
        invalid: &'static [&'static str],
    ) -> impl Strategy<Value = Value> {
        prop_oneof![12 => one_of(valid), 1 => one_of(invalid)]
    }

    fn period() -> impl Strategy<Value = Value> {
        prop_oneof![
            "P[0-9]{1,3}[DWMY]",
            "P[0-9]{1,2}Y[0-9]{1,2}M[0-9]{1,2}W[0-9]{1,3}D",
            "P[0-9]{6,9}[DWMY]",
            "P(0D)?",
            "P[0-9]{1,2}D[0-9]{1,2}Y",
            "PT[0-9]{1,2}H",
            "[0-9]{1,3} ?days",
            ".{0,12}",
        ]
        .prop_map(Value::from)
    }

    fn timestamp() -> impl Strategy<Value = Value> {
        prop_oneof![
            (
                0i32..10_000,
                0u32..14,
                0u32..33,
                0u32..25,
                0u32..61,
                0u32..61
            )
                .prop_map(|(y, mo, d, h, mi, s)| format!(
                    "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"
                )),
            (1970i32..2200, 1u32..13, 1u32..29, 0u32..1_000_000_000).prop_map(|(y, mo, d, ns)| {
                format!("{y:04}-{mo:02}-{d:02}T12:00:00.{ns:09}+05:30")
            }),
            Just("9999-12-31T23:59:59Z".to_owned()),
            Just("+262143-01-01T00:00:00Z".to_owned()),
            ".{0,25}",
        ]
        .prop_map(Value::from)
    }

    fn vault_url() -> impl Strategy<Value = Value> {
        prop_oneof![
            12 => "https://[a-z0-9-]{1,24}\\.vault\\.azure\\.net/?",
            2 => "https://[a-zA-Z0-9.-]{1,20}(:[0-9]{1,6})?",
            1 => "(http|ftp|HTTPS)://[a-z.]{1,12}",
            1 => "https://v\\.vault\\.azure\\.net/[a-z?#]{1,8}",
            1 => "https://\\[[0-9a-f:]{2,16}\\](:[0-9]{1,5})?",
            1 => ".{0,30}",
        ]
        .prop_map(Value::from)
    }

    fn lifetime_action() -> impl Strategy<Value = Value> {
        (
            or_anything(enum_value(&["Rotate", "Notify"], &["rotate", "Explode"])),
            prop::option::of(or_anything(period())),
            prop::option::of(or_anything(period())),
        )
            .prop_map(|(action, after, before)| {
                let mut m = Map::new();
                m.insert("action".into(), action);
                if let Some(a) = after {
                    m.insert("timeAfterCreate".into(), a);
                }
                if let Some(b) = before {
                    m.insert("timeBeforeExpiry".into(), b);
                }
                Value::Object(m)
            })
    }

    fn rotation_policy() -> impl Strategy<Value = Value> {
        (
            prop::option::of(or_anything(period())),
            prop::option::of(or_anything(
                prop::collection::vec(lifetime_action(), 0..4).prop_map(Value::Array),
            )),
        )
            .prop_map(|(expires_in, actions)| {
                let mut m = Map::new();
                if let Some(e) = expires_in {
                    m.insert("expiresIn".into(), e);
                }
                if let Some(a) = actions {
                    m.insert("lifetimeActions".into(), a);
                }
                Value::Object(m)
            })
    }

    fn attributes() -> impl Strategy<Value = Value> {
        (
            prop::option::of(or_anything(any::<bool>().prop_map(Value::Bool))),
            prop::option::of(or_anything(timestamp())),
            prop::option::of(or_anything(period())),
            prop::option::of(or_anything(timestamp())),
            prop::option::of(or_anything(any::<bool>().prop_map(Value::Bool))),
        )
            .prop_map(|(enabled, exp, after, nbf, exportable)| {
                let mut m = Map::new();
                for (k, v) in [
                    ("enabled", enabled),
                    ("expiresOn", exp),
                    ("expiresAfter", after),
                    ("notBefore", nbf),
                    ("exportable", exportable),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                Value::Object(m)
            })
    }

    fn tags() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(
            prop_oneof![
                "[a-z]{1,8}",
                "vaultkey\\.dev/[a-z-]{0,10}",
                "vaultkey\\.dev",
                ".{0,10}"
            ],
            ".{0,20}".prop_map(Value::from),
            0..16,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn import() -> impl Strategy<Value = Value> {
        (".{0,12}", ".{0,12}")
            .prop_map(|(name, key)| json!({"secretRef": {"name": name, "key": key}}))
    }

    /// A spec-like object: each known field present or not, plus unknown fields.
    pub(crate) fn spec_json() -> impl Strategy<Value = Value> {
        let identity = (
            prop::option::weighted(0.95, or_anything(vault_url())),
            prop::option::weighted(
                0.97,
                or_anything(enum_value(
                    &["RSA", "RSA-HSM", "EC", "EC-HSM", "oct-HSM"],
                    &["oct", "rsa", ""],
                )),
            ),
            prop::option::weighted(
                0.3,
                or_anything(
                    prop::sample::select(
                        &[
                            128i64,
                            192,
                            256,
                            1024,
                            2048,
                            3072,
                            4096,
                            0,
                            -2048,
                            2_147_483_647,
                        ][..],
                    )
                    .prop_map(Value::from),
                ),
            ),
            prop::option::weighted(
                0.3,
                or_anything(enum_value(
                    &["P-256", "P-256K", "P-384", "P-521"],
                    &["P-192", "secp256k1"],
                )),
            ),
            prop::option::weighted(
                0.2,
                or_anything(
                    prop::sample::select(
                        &[3i64, 65537, 4, 1, 0, -3, 2_147_483_647, -2_147_483_648][..],
                    )
                    .prop_map(Value::from),
                ),
            ),
            prop::option::of(or_anything(
                prop::collection::vec(
                    prop_oneof![
                        40 => one_of(&[
                            "encrypt",
                            "decrypt",
                            "sign",
                            "verify",
                            "wrapKey",
                            "unwrapKey",
                            "import",
                            "export",
                        ]),
                        1 => one_of(&["frobnicate", "Encrypt"]),
                    ],
                    0..10,
                )
                .prop_map(Value::Array),
            )),
        );
        let behaviour = (
            prop::option::of(or_anything(attributes())),
            prop::option::of(or_anything(tags())),
            prop::option::of(or_anything(
                (prop_oneof![".{0,30}", Just(r#"{"version":"1.0.0","anyOf":[]}"#.to_owned())], prop::option::of(".{0,20}"), prop::option::of(any::<bool>())).prop_map(
                    |(data, content_type, immutable)| json!({"data": data, "contentType": content_type, "immutable": immutable}),
                ),
            )),
            prop::option::of(or_anything(rotation_policy())),
            prop::option::weighted(0.3, or_anything(".{0,40}".prop_map(Value::from))),
            prop::option::weighted(0.2, or_anything(import())),
            prop::option::of(or_anything(any::<bool>().prop_map(Value::Bool))),
            prop::option::of(or_anything(enum_value(&["Retain", "Delete", "Purge"], &["Shred"]))),
            prop::collection::btree_map("[a-z]{1,10}", any_json(), 0..3),
        );
        (identity, behaviour).prop_map(
            |(
                (vault, key_type, size, curve, exponent, ops),
                (attributes, tags, release, policy, token, import, adopt, deletion, unknown),
            )| {
                let mut m: Map<String, Value> = unknown.into_iter().collect();
                for (k, v) in [
                    ("vaultUrl", vault),
                    ("keyType", key_type),
                    ("keySize", size),
                    ("curve", curve),
                    ("publicExponent", exponent),
                    ("keyOps", ops),
                    ("attributes", attributes),
                    ("tags", tags),
                    ("releasePolicy", release),
                    ("rotationPolicy", policy),
                    ("rotateToken", token),
                    ("import", import),
                    ("adopt", adopt),
                    ("deletionPolicy", deletion),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                Value::Object(m)
            },
        )
    }

    pub(crate) fn key_name() -> impl Strategy<Value = String> {
        prop_oneof![
            10 => "[a-zA-Z0-9-]{1,127}",
            1 => "[a-z]{126,130}",
            1 => ".{0,20}",
        ]
    }

    /// What happened to one generated spec.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Outcome {
        /// serde (and so the CRD schema, which is stricter) refuses it.
        NotASpec,
        Valid,
        Invalid(&'static str),
    }

    /// Runs one case and checks the properties; returns what happened.
    fn check_one(spec: &Value, key_name: String) -> Result<Outcome, TestCaseError> {
        let Ok(parsed) = serde_json::from_value::<VaultKeySpec>(spec.clone()) else {
            return Ok(Outcome::NotASpec);
        };
        let result = std::panic::catch_unwind(|| validate_spec(&parsed, key_name.clone()));
        let Ok(result) = result else {
            return Err(TestCaseError::fail(format!(
                "validate_spec panicked on {spec} (keyName {key_name:?})"
            )));
        };
        match result {
            Ok(desired) => {
                prop_assert!(desired.vault_url.starts_with("https://"));
                prop_assert!(!desired.vault_url.ends_with('/'));
                prop_assert!(
                    !desired.key_name.is_empty()
                        && desired.key_name.len() <= 127
                        && desired
                            .key_name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-')
                );
                prop_assert!(desired.tags.len() <= MAX_USER_TAGS);
                prop_assert!(desired.tags.keys().all(|k| !is_reserved_tag(k)));
                if matches!(desired.material, Material::Imported(_)) {
                    prop_assert!(desired.rotate_token.is_none());
                    prop_assert!(desired.key_type.is_rsa() || desired.key_type.is_ec());
                }
                if let Some(policy) = &desired.rotation_policy
                    && let Some(exp) = policy.expires_in
                {
                    prop_assert!(exp.approx_days() >= rules::MIN_POLICY_EXPIRY_DAYS.unsigned_abs());
                }
                Ok(Outcome::Valid)
            }
            Err(e) => {
                prop_assert!(
                    REPORTED.contains(&e.field),
                    "unexpected field {:?} for {}",
                    e.field,
                    spec
                );
                prop_assert!(!e.message.trim().is_empty());
                prop_assert_eq!(e.to_string(), format!("spec.{}: {}", e.field, e.message));
                // The field named is one the input has (keyName may come from metadata.name).
                let top = e.field.split('.').next().unwrap_or_default();
                prop_assert!(
                    top == "keyName" || spec.get(top).is_some(),
                    "{} names {:?}, which the spec does not have",
                    spec,
                    e.field
                );
                Ok(Outcome::Invalid(e.field))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn validate_spec_never_panics_and_names_a_field(spec in spec_json(), name in key_name()) {
            check_one(&spec, name)?;
        }
    }

    /// The generator reaches deep into validation: valid specs, and rejections for many
    /// different fields (not only serde refusals).
    #[test]
    fn generated_specs_reach_every_kind_of_outcome() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = (spec_json(), key_name());
        let mut outcomes = std::collections::BTreeMap::new();
        for _ in 0..5000 {
            let (spec, name) = strategy.new_tree(&mut runner).unwrap().current();
            let outcome = check_one(&spec, name).unwrap();
            *outcomes.entry(outcome).or_insert(0u32) += 1;
        }
        eprintln!("validate_spec outcomes over 5000 generated specs: {outcomes:?}");
        assert!(
            outcomes.get(&Outcome::Valid).copied().unwrap_or(0) >= 100,
            "{outcomes:?}"
        );
        assert!(
            outcomes.get(&Outcome::NotASpec).copied().unwrap_or(0) >= 100,
            "{outcomes:?}"
        );
        let fields = outcomes
            .keys()
            .filter(|o| matches!(o, Outcome::Invalid(_)))
            .count();
        assert!(
            fields >= 14,
            "only {fields} different fields rejected: {outcomes:?}"
        );
    }
}
