//! Key Vault's rules, in one table: the limits and checks Azure Key Vault applies to keys,
//! tags, dates and rotation policies. The operator's CRD (schema and CEL in `api.rs`), its
//! `validate` (the checks the API server cannot make) and the Key Vault emulator
//! (`tests/kv-emulator`, which includes this very file with `#[path]`) all take their numbers
//! and rule checks from here, so the three cannot drift apart.
//!
//! This file depends on `std` only: the emulator includes it as a module of its own crate
//! rather than depending on the operator library, so the emulator stays a stand-alone stand-in
//! for Key Vault that does not compile (or share types with) the code it tests.
//!
//! Sources:
//! - Keys - Create Key / Import Key / Update Key (REST 7.4/7.5):
//!   <https://learn.microsoft.com/rest/api/keyvault/keys/create-key/create-key>
//!   (`kty`, `key_size`, `crv`, `public_exponent`, `attributes.exp`/`nbf` as Unix time in
//!   seconds, `attributes.exportable` needs a `release_policy`).
//! - Key Vault service limits and tags:
//!   <https://learn.microsoft.com/azure/key-vault/general/service-limits> and
//!   <https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates>
//!   (15 tags per object, tag names of up to 512 characters, values of up to 256; key names
//!   1-127 characters of `0-9a-zA-Z-`).
//! - Keys - Update Key Rotation Policy:
//!   <https://learn.microsoft.com/rest/api/keyvault/keys/update-key-rotation-policy>
//!   and <https://learn.microsoft.com/azure/key-vault/keys/how-to-configure-key-rotation>
//!   (expiryTime at least 28 days; a rotation at least 7 days after creation and at least 7
//!   days before expiry; one Rotate and one Notify action at most; Notify only with
//!   timeBeforeExpiry; a Rotate on timeBeforeExpiry needs an expiry time).

/// Seconds in a day; periods are compared in days as Key Vault documents its limits (a year
/// counts 365 days, a month 30, a week 7).
pub const DAY_SECONDS: i64 = 86_400;

/// Key names: 1-127 characters of `0-9`, `a-z`, `A-Z` and `-`.
pub const KEY_NAME_MAX_LEN: usize = 127;
/// The same as a regular expression (for the CRD).
pub const KEY_NAME_PATTERN: &str = "^[0-9a-zA-Z-]{1,127}$";

/// Tags per object.
pub const MAX_TAGS: usize = 15;
/// Tags the operator itself may put on a key (owner, owner uid, imported material).
pub const OPERATOR_TAGS: usize = 3;
/// Tags a VaultKey's spec may set: what Key Vault allows, less the operator's own.
pub const MAX_USER_TAGS: usize = MAX_TAGS - OPERATOR_TAGS;
/// Characters in a tag name (1 at least).
pub const MAX_TAG_NAME_LEN: usize = 512;
/// Characters in a tag value.
pub const MAX_TAG_VALUE_LEN: usize = 256;

/// RSA modulus sizes Key Vault generates.
pub const RSA_KEY_SIZES: [i32; 3] = [2048, 3072, 4096];
/// oct-HSM key sizes (Managed HSM).
pub const OCT_KEY_SIZES: [i32; 3] = [128, 192, 256];

/// Whether Key Vault generates or imports an RSA modulus of `bits` bits (the same sizes both ways).
pub fn rsa_size_ok(bits: usize) -> bool {
    RSA_KEY_SIZES
        .iter()
        .any(|size| usize::try_from(*size) == Ok(bits))
}

/// Whether Key Vault (Managed HSM) holds an oct-HSM key of `bits` bits.
pub fn oct_size_ok(bits: usize) -> bool {
    OCT_KEY_SIZES
        .iter()
        .any(|size| usize::try_from(*size) == Ok(bits))
}

/// The latest `exp`/`nbf` the operator sends or shows: 9998-12-31T23:59:59Z. Key Vault takes
/// Unix seconds, but `metav1.Time` in the status goes through `jiff`, whose timestamps end at
/// 9999-12-30, and the CRD's date-time pattern admits years 0000-9998: one bound for all.
pub const MAX_UNIX_TIME: i64 = 253_370_764_799;
/// The earliest: 0000-01-01T00:00:00Z.
pub const MIN_UNIX_TIME: i64 = -62_167_219_200;

/// Shortest rotation-policy `expiryTime`.
pub const MIN_POLICY_EXPIRY_DAYS: i64 = 28;
/// Least distance of a rotation from the version's creation and from its expiry, and the
/// shortest trigger period.
pub const MIN_ROTATION_MARGIN_DAYS: i64 = 7;

/// Whether `name` is a valid Key Vault key name.
pub fn key_name_ok(name: &str) -> bool {
    (1..=KEY_NAME_MAX_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether an `exp` or `nbf` (Unix seconds) is one the operator and its status can hold.
pub fn unix_time_ok(t: i64) -> bool {
    (MIN_UNIX_TIME..=MAX_UNIX_TIME).contains(&t)
}

/// A tag check's failure: which tag, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagError {
    pub name: String,
    pub message: String,
}

/// Key Vault's limits on an object's tags: count, name and value lengths (in characters).
pub fn check_tags<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), TagError> {
    let mut count = 0;
    for (name, value) in tags {
        count += 1;
        let name_len = name.chars().count();
        if name_len == 0 || name_len > MAX_TAG_NAME_LEN {
            return Err(TagError {
                name: name.to_owned(),
                message: format!(
                    "tag names must have 1-{MAX_TAG_NAME_LEN} characters; {name:?} has {name_len}"
                ),
            });
        }
        if value.chars().count() > MAX_TAG_VALUE_LEN {
            return Err(TagError {
                name: name.to_owned(),
                message: format!(
                    "the value of tag {name:?} is longer than {MAX_TAG_VALUE_LEN} characters"
                ),
            });
        }
    }
    if count > MAX_TAGS {
        return Err(TagError {
            name: String::new(),
            message: format!("{count} tags; Key Vault allows at most {MAX_TAGS}"),
        });
    }
    Ok(())
}

/// An exportable key must carry a release policy.
pub fn check_exportable(exportable: bool, has_release_policy: bool) -> Result<(), &'static str> {
    if exportable && !has_release_policy {
        Err("an exportable key needs a release policy (releasePolicy)")
    } else {
        Ok(())
    }
}

/// A lifetime action's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    Rotate,
    Notify,
}

/// When a lifetime action fires, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyTrigger {
    AfterCreate(i64),
    BeforeExpiry(i64),
}

/// Which part of a rotation policy a rule refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyPart {
    ExpiryTime,
    /// The action at this index.
    Action(usize),
    Actions,
}

/// A rotation-policy rule broken: where, and a message saying what a valid value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub part: PolicyPart,
    pub message: String,
}

fn days(seconds: i64) -> String {
    if seconds % DAY_SECONDS == 0 {
        format!("{} days", seconds / DAY_SECONDS)
    } else {
        format!("{seconds} seconds")
    }
}

/// Key Vault's rules for a rotation policy: `expiry` is `attributes.expiryTime` in seconds,
/// `actions` the lifetime actions in order. Every rule Key Vault applies when the policy is
/// set, so a policy this accepts is one Key Vault accepts.
pub fn check_rotation_policy(
    expiry: Option<i64>,
    actions: &[(PolicyAction, PolicyTrigger)],
) -> Result<(), PolicyError> {
    let min_expiry = MIN_POLICY_EXPIRY_DAYS * DAY_SECONDS;
    let margin = MIN_ROTATION_MARGIN_DAYS * DAY_SECONDS;
    if let Some(exp) = expiry
        && exp < min_expiry
    {
        return Err(PolicyError {
            part: PolicyPart::ExpiryTime,
            message: format!(
                "the expiry time is {}; Key Vault's minimum is {MIN_POLICY_EXPIRY_DAYS} days (e.g. P28D, P90D)",
                days(exp)
            ),
        });
    }
    for kind in [PolicyAction::Rotate, PolicyAction::Notify] {
        if actions.iter().filter(|(a, _)| *a == kind).count() > 1 {
            return Err(PolicyError {
                part: PolicyPart::Actions,
                message: format!("at most one {kind:?} action"),
            });
        }
    }
    for (i, (action, trigger)) in actions.iter().enumerate() {
        let err = |message: String| PolicyError {
            part: PolicyPart::Action(i),
            message,
        };
        match (action, *trigger) {
            (PolicyAction::Notify, PolicyTrigger::AfterCreate(_)) => {
                return Err(err(
                    "a Notify action takes timeBeforeExpiry (e.g. P30D), not timeAfterCreate"
                        .into(),
                ));
            }
            (PolicyAction::Rotate, PolicyTrigger::AfterCreate(after)) => {
                if after < margin {
                    return Err(err(format!(
                        "timeAfterCreate is {}; a rotation must be at least {MIN_ROTATION_MARGIN_DAYS} days after creation (e.g. P30D)",
                        days(after)
                    )));
                }
                if let Some(exp) = expiry
                    && after > exp - margin
                {
                    return Err(err(format!(
                        "timeAfterCreate is {}; a rotation must be at least {MIN_ROTATION_MARGIN_DAYS} days before the expiry ({}), so at most {}",
                        days(after),
                        days(exp),
                        days(exp - margin)
                    )));
                }
            }
            (kind, PolicyTrigger::BeforeExpiry(before)) => {
                if before < margin {
                    return Err(err(format!(
                        "timeBeforeExpiry is {}; Key Vault's minimum is {MIN_ROTATION_MARGIN_DAYS} days (e.g. P30D)",
                        days(before)
                    )));
                }
                if *kind == PolicyAction::Rotate {
                    let Some(exp) = expiry else {
                        return Err(err(
                            "a Rotate action on timeBeforeExpiry needs an expiry time (expiresIn): without one there is nothing to count back from".into(),
                        ));
                    };
                    if before > exp - margin {
                        return Err(err(format!(
                            "timeBeforeExpiry is {}: with an expiry of {} the rotation would come {} after creation; it must be at least {MIN_ROTATION_MARGIN_DAYS} days after, so timeBeforeExpiry at most {}",
                            days(before),
                            days(exp),
                            days((exp - before).max(0)),
                            days(exp - margin)
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = DAY_SECONDS;

    #[test]
    fn policy_rules() {
        use PolicyAction::*;
        use PolicyTrigger::*;
        let ok = |e: Option<i64>, a: &[(PolicyAction, PolicyTrigger)]| {
            check_rotation_policy(e, a).is_ok()
        };
        assert!(ok(
            Some(90 * D),
            &[(Rotate, AfterCreate(30 * D)), (Notify, BeforeExpiry(7 * D))]
        ));
        assert!(ok(Some(28 * D), &[]));
        assert!(!ok(Some(27 * D), &[]));
        assert!(ok(Some(90 * D), &[(Rotate, BeforeExpiry(83 * D))]));
        // The example: rotates 5 days after creation.
        assert!(!ok(Some(90 * D), &[(Rotate, BeforeExpiry(85 * D))]));
        assert!(!ok(Some(90 * D), &[(Rotate, AfterCreate(84 * D))]));
        assert!(!ok(None, &[(Rotate, AfterCreate(6 * D))]));
        assert!(!ok(None, &[(Rotate, BeforeExpiry(30 * D))]));
        assert!(ok(None, &[(Notify, BeforeExpiry(30 * D))]));
        assert!(!ok(None, &[(Notify, AfterCreate(30 * D))]));
        assert!(!ok(None, &[(Notify, BeforeExpiry(6 * D))]));
        assert!(!ok(
            None,
            &[(Rotate, AfterCreate(30 * D)), (Rotate, AfterCreate(40 * D))]
        ));
    }

    #[test]
    fn tags_and_times() {
        assert!(check_tags([("a", "b")]).is_ok());
        assert!(check_tags([("", "b")]).is_err());
        let long = "v".repeat(257);
        assert!(check_tags([("a", long.as_str())]).is_err());
        let names: Vec<String> = (0..16).map(|i| i.to_string()).collect();
        assert!(check_tags(names.iter().map(|n| (n.as_str(), ""))).is_err());
        assert!(check_tags(names[..15].iter().map(|n| (n.as_str(), ""))).is_ok());
        assert!(unix_time_ok(MAX_UNIX_TIME) && !unix_time_ok(MAX_UNIX_TIME + 1));
        assert!(key_name_ok("a-B-1") && !key_name_ok("a.b") && !key_name_ok(""));
        assert!(check_exportable(true, false).is_err() && check_exportable(true, true).is_ok());
    }
}
