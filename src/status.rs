//! Builds `VaultKey.status` from what the vault holds. Pure: the reconciler decides whether the
//! result differs from what is stored, and writes only then (a steady state writes nothing).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::keyvault_rules::{MAX_UNIX_TIME, MIN_UNIX_TIME};

use crate::api::{
    Condition, KeyVersionStatus, ObservedLifetimeAction, ObservedRotationPolicy, PendingRotation,
    VaultKeyStatus,
};
use crate::keyvault::{KeyVersion, ObservedKey, ObservedPolicy};
use crate::plan::next_rotation_time;

/// How many versions status lists.
pub const MAX_LISTED_VERSIONS: usize = 10;

pub const READY: &str = "Ready";

/// The Ready condition's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl Readiness {
    pub fn ready(message: impl Into<String>) -> Self {
        Readiness {
            ready: true,
            reason: "Reconciled".into(),
            message: message.into(),
        }
    }

    /// Ready, with a reason of its own (e.g. `Observed`).
    pub fn ready_as(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Readiness {
            ready: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Readiness {
            ready: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The vault-side facts status reports.
#[derive(Debug, Clone, Default)]
pub struct VaultFacts<'a> {
    pub key_name: Option<&'a str>,
    pub latest: Option<&'a ObservedKey>,
    pub versions: Option<&'a [KeyVersion]>,
    pub policy: Option<&'a ObservedPolicy>,
}

/// What status remembers for the operator itself.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub observed_rotate_token: Option<String>,
    pub pending_rotation: Option<PendingRotation>,
    pub imported_material: Option<String>,
    pub last_correction: Option<crate::api::CorrectionRecord>,
    /// The key in status was only observed (managementPolicy Observe), never managed.
    pub observe_only: bool,
    pub expiry_warned_version: Option<String>,
}

pub fn build(
    previous: Option<&VaultKeyStatus>,
    generation: Option<i64>,
    facts: &VaultFacts<'_>,
    memory: Memory,
    readiness: &Readiness,
    now: DateTime<Utc>,
) -> VaultKeyStatus {
    let previous_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let status = if readiness.ready { "True" } else { "False" };
    // The transition time moves only when the condition's status does.
    let last_transition_time = match previous_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => k8s_time(now),
    };
    let ready = Condition {
        type_: READY.into(),
        status: status.into(),
        reason: readiness.reason.clone(),
        message: readiness.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };

    let mut out = VaultKeyStatus {
        conditions: vec![ready],
        observed_generation: generation,
        observed_rotate_token: memory.observed_rotate_token,
        pending_rotation: memory.pending_rotation,
        imported_material: memory.imported_material,
        last_correction: memory.last_correction,
        observe_only: memory.observe_only,
        expiry_warned_version: memory.expiry_warned_version,
        ..Default::default()
    };

    // Without fresh vault facts (an error before the vault was read), keep what was known.
    let Some(latest) = facts.latest else {
        if let Some(prev) = previous {
            out.key_name = prev.key_name.clone();
            out.key_id = prev.key_id.clone();
            out.current_version = prev.current_version.clone();
            out.current_key_id = prev.current_key_id.clone();
            out.key_type = prev.key_type.clone();
            out.key_size = prev.key_size;
            out.curve = prev.curve.clone();
            out.public_key_thumbprint = prev.public_key_thumbprint.clone();
            out.versions = prev.versions.clone();
            out.version_count = prev.version_count;
            out.rotation_policy = prev.rotation_policy.clone();
            out.last_rotation_time = prev.last_rotation_time.clone();
            out.next_rotation_time = prev.next_rotation_time.clone();
        }
        out.key_name = facts.key_name.map(str::to_owned).or(out.key_name);
        return out;
    };

    out.key_name = facts.key_name.map(str::to_owned);
    out.key_id = Some(latest.key_id.clone());
    out.current_version = Some(latest.version.clone());
    out.current_key_id = Some(latest.versioned_id());
    out.key_type = Some(latest.key_type.clone());
    out.key_size = latest.key_size;
    out.curve = latest.curve.clone();
    out.public_key_thumbprint = latest.public_thumbprint.clone();

    let versions: Vec<KeyVersionStatus> = match facts.versions {
        Some(versions) => versions.iter().map(version_status).collect(),
        None => previous.map(|p| p.versions.clone()).unwrap_or_default(),
    };
    // A count read for an earlier current version is stale: leave it unknown until listed.
    let count = facts
        .versions
        .map(<[KeyVersion]>::len)
        .and_then(|n| i32::try_from(n).ok())
        .or(previous
            .filter(|p| p.current_version.as_deref() == Some(latest.version.as_str()))
            .and_then(|p| p.version_count));
    // The latest version's entry comes from the freshest read.
    let mut versions: Vec<KeyVersionStatus> = versions
        .into_iter()
        .filter(|v| v.version != latest.version)
        .collect();
    versions.insert(0, latest_version_status(latest));
    versions.truncate(MAX_LISTED_VERSIONS);
    out.version_count = count.map(|c| c.max(1));
    out.last_rotation_time = (out.version_count.unwrap_or(1) > 1)
        .then(|| latest.created.map(k8s_time))
        .flatten();
    out.versions = versions;

    if let Some(policy) = facts.policy {
        out.rotation_policy = Some(policy_status(policy));
        out.next_rotation_time = next_rotation_time(policy, latest).map(k8s_time);
    } else if let Some(prev) = previous {
        out.rotation_policy = prev.rotation_policy.clone();
        out.next_rotation_time = prev.next_rotation_time.clone();
    }
    out
}

/// Key Vault times have second precision; so does status. A time outside the range the CRD's
/// date-time pattern admits (years 0000-9998, [`MIN_UNIX_TIME`]..=[`MAX_UNIX_TIME`]) is clamped
/// to that range: a vault date of 9999-12-31 shows as 9998-12-31T23:59:59Z, never as a
/// different, possible-looking time such as 1970-01-01.
pub fn k8s_time(t: DateTime<Utc>) -> Time {
    let seconds = t.timestamp().clamp(MIN_UNIX_TIME, MAX_UNIX_TIME);
    Time(
        k8s_openapi::jiff::Timestamp::from_second(seconds)
            .expect("the clamped range lies within jiff's"),
    )
}

fn version_status(v: &KeyVersion) -> KeyVersionStatus {
    KeyVersionStatus {
        version: v.version.clone(),
        created: v.created.map(k8s_time),
        enabled: v.enabled,
        expires_on: v.expires_on.map(k8s_time),
        not_before: v.not_before.map(k8s_time),
    }
}

fn latest_version_status(latest: &ObservedKey) -> KeyVersionStatus {
    KeyVersionStatus {
        version: latest.version.clone(),
        created: latest.created.map(k8s_time),
        enabled: latest.enabled,
        expires_on: latest.expires_on.map(k8s_time),
        not_before: latest.not_before.map(k8s_time),
    }
}

fn policy_status(policy: &ObservedPolicy) -> ObservedRotationPolicy {
    ObservedRotationPolicy {
        expires_in: policy.expires_in.clone(),
        lifetime_actions: policy
            .actions
            .iter()
            .map(|a| ObservedLifetimeAction {
                action: capitalise(&a.action),
                time_after_create: a.time_after_create.clone(),
                time_before_expiry: a.time_before_expiry.clone(),
            })
            .collect(),
    }
}

/// `rotate` and `Rotate` are the same action; status shows Key Vault's documented spelling.
fn capitalise(action: &str) -> String {
    let mut chars = action.chars();
    match chars.next() {
        Some(first) => {
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::ObservedAction;
    use chrono::TimeZone;
    use std::collections::{BTreeMap, BTreeSet};

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).unwrap()
    }

    fn key(version: &str, created: DateTime<Utc>) -> ObservedKey {
        ObservedKey {
            key_id: "https://v/keys/k".into(),
            version: version.into(),
            key_type: "RSA".into(),
            key_size: Some(2048),
            curve: None,
            public_exponent: Some(vec![1, 0, 1]),
            key_ops: BTreeSet::new(),
            enabled: true,
            not_before: None,
            expires_on: None,
            created: Some(created),
            updated: Some(created),
            tags: BTreeMap::new(),
            public_thumbprint: Some("thumb".into()),
            public_key: None,
        }
    }

    fn version(version: &str, created: DateTime<Utc>) -> KeyVersion {
        KeyVersion {
            version: version.into(),
            enabled: true,
            created: Some(created),
            expires_on: None,
            not_before: None,
        }
    }

    fn policy() -> ObservedPolicy {
        ObservedPolicy {
            expires_in: Some("P90D".into()),
            actions: vec![ObservedAction {
                action: "rotate".into(),
                time_after_create: Some("P30D".into()),
                time_before_expiry: None,
            }],
        }
    }

    #[test]
    fn reports_the_latest_version_and_policy() {
        let latest = key("v2", at(10));
        let versions = vec![version("v2", at(10)), version("v1", at(1))];
        let policy = policy();
        let facts = VaultFacts {
            key_name: Some("k"),
            latest: Some(&latest),
            versions: Some(&versions),
            policy: Some(&policy),
        };
        let status = build(
            None,
            Some(3),
            &facts,
            Memory::default(),
            &Readiness::ready("ok"),
            at(11),
        );
        assert_eq!(status.current_version.as_deref(), Some("v2"));
        assert_eq!(
            status.current_key_id.as_deref(),
            Some("https://v/keys/k/v2")
        );
        assert_eq!(status.version_count, Some(2));
        assert_eq!(
            status
                .versions
                .iter()
                .map(|v| v.version.as_str())
                .collect::<Vec<_>>(),
            ["v2", "v1"]
        );
        assert_eq!(status.last_rotation_time, Some(k8s_time(at(10))));
        assert_eq!(
            status.next_rotation_time,
            Some(k8s_time(
                Utc.with_ymd_and_hms(2026, 12, 10, 0, 0, 0).unwrap()
            ))
        );
        assert_eq!(
            status.rotation_policy.unwrap().lifetime_actions[0].action,
            "Rotate"
        );
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].observed_generation, Some(3));
    }

    #[test]
    fn a_single_version_has_no_rotation_time() {
        let latest = key("v1", at(1));
        let versions = vec![version("v1", at(1))];
        let facts = VaultFacts {
            key_name: Some("k"),
            latest: Some(&latest),
            versions: Some(&versions),
            policy: None,
        };
        let status = build(
            None,
            Some(1),
            &facts,
            Memory::default(),
            &Readiness::ready("ok"),
            at(2),
        );
        assert_eq!(status.last_rotation_time, None);
    }

    #[test]
    fn unchanged_facts_build_an_identical_status() {
        let latest = key("v1", at(1));
        let versions = vec![version("v1", at(1))];
        let facts = VaultFacts {
            key_name: Some("k"),
            latest: Some(&latest),
            versions: Some(&versions),
            policy: None,
        };
        let first = build(
            None,
            Some(1),
            &facts,
            Memory::default(),
            &Readiness::ready("ok"),
            at(2),
        );
        // A later resync reuses the stored version list and must not change a thing.
        let again = VaultFacts {
            versions: None,
            ..facts.clone()
        };
        let second = build(
            Some(&first),
            Some(1),
            &again,
            Memory::default(),
            &Readiness::ready("ok"),
            at(20),
        );
        assert_eq!(first, second);
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let facts = VaultFacts::default();
        let failing = build(
            None,
            Some(1),
            &facts,
            Memory::default(),
            &Readiness::not_ready("VaultUnreachable", "x"),
            at(1),
        );
        let still = build(
            Some(&failing),
            Some(1),
            &facts,
            Memory::default(),
            &Readiness::not_ready("Forbidden", "y"),
            at(5),
        );
        assert_eq!(still.conditions[0].last_transition_time, k8s_time(at(1)));
        assert_eq!(still.conditions[0].reason, "Forbidden");
        let latest = key("v1", at(1));
        let ok_facts = VaultFacts {
            key_name: Some("k"),
            latest: Some(&latest),
            versions: None,
            policy: None,
        };
        let ok = build(
            Some(&still),
            Some(1),
            &ok_facts,
            Memory::default(),
            &Readiness::ready("ok"),
            at(6),
        );
        assert_eq!(ok.conditions[0].last_transition_time, k8s_time(at(6)));
    }

    #[test]
    fn errors_keep_the_last_known_vault_facts() {
        let latest = key("v1", at(1));
        let facts = VaultFacts {
            key_name: Some("k"),
            latest: Some(&latest),
            versions: None,
            policy: None,
        };
        let good = build(
            None,
            Some(1),
            &facts,
            Memory::default(),
            &Readiness::ready("ok"),
            at(2),
        );
        let failing = build(
            Some(&good),
            Some(2),
            &VaultFacts::default(),
            Memory::default(),
            &Readiness::not_ready("Throttled", "wait"),
            at(3),
        );
        assert_eq!(failing.current_version.as_deref(), Some("v1"));
        assert_eq!(failing.observed_generation, Some(2));
        assert_eq!(failing.conditions[0].status, "False");
    }

    #[test]
    fn impossible_times_are_clamped_not_wrapped() {
        let far = Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap();
        assert_eq!(
            k8s_time(far).0.to_string(),
            "9998-12-31T23:59:59Z",
            "a date past the status range shows as its last second, not as 1970"
        );
        let early = Utc.with_ymd_and_hms(-5, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(k8s_time(early).0.to_string(), "0000-01-01T00:00:00Z");
        assert_eq!(k8s_time(at(1)).0.as_second(), at(1).timestamp());
    }
}
