//! managementPolicy Observe: the key as the vault holds it, compared with the spec. Pure, so
//! every difference is unit-tested without a network; the reconciler only reads the vault for
//! it, and never writes.
//!
//! What is compared is what Manage would correct or recreate: type, size, curve and exponent
//! (a new version in Manage), the version's attributes and operations, the user's tags (the
//! operator's own `vaultkey.dev/` tags are not expected on an observed key), and the rotation
//! policy when the spec has one. Not compared: `import` (the Secret is not read) and
//! `rotateToken` (Observe never rotates; a token seen while observing describes the key as it
//! is, so switching to Manage does not rotate for it).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::api::RESERVED_TAG_PREFIX;
use crate::keyvault::DeletedKey;
use crate::plan::{
    Observed, Owner, PlanInput, Remembered, material_differences, policy_matches, property_drift,
};
use crate::validate::DesiredKey;

/// What observing found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// No live key holds the name; `deleted` when a soft-deleted one does.
    Missing {
        deleted: Option<DeletedKey>,
    },
    /// The key differs from the spec in these spec fields (in spec order).
    Differs(Vec<&'static str>),
    Matches,
}

pub fn compare(desired: &DesiredKey, observed: &Observed, now: DateTime<Utc>) -> Observation {
    let Some(latest) = &observed.latest else {
        return Observation::Missing {
            deleted: observed.deleted.clone(),
        };
    };
    let mut fields = material_differences(desired, latest);

    // The attribute comparison Manage uses; its tag comparison expects the operator's owner
    // tags, which an observed key does not carry, so tags are compared below instead.
    let nobody = Owner {
        namespace: String::new(),
        name: String::new(),
        uid: String::new(),
    };
    let remembered = Remembered::default();
    let input = PlanInput {
        desired,
        owner: &nobody,
        observed,
        remembered: &remembered,
        material: None,
        now,
    };
    let (_, drift) = property_drift(&input, latest);
    for field in drift {
        match field {
            "enabled" => fields.push("attributes.enabled"),
            "notBefore" => fields.push("attributes.notBefore"),
            "expiresOn" => fields.push(match desired.expiry {
                crate::validate::Expiry::AfterCreation(_) => "attributes.expiresAfter",
                _ => "attributes.expiresOn",
            }),
            "keyOps" => fields.push("keyOps"),
            _ => {}
        }
    }
    let user_tags: BTreeMap<String, String> = latest
        .tags
        .iter()
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with(RESERVED_TAG_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if user_tags != desired.tags {
        fields.push("tags");
    }
    if let Some(policy) = &desired.rotation_policy
        && !policy_matches(policy, observed.policy.as_ref())
    {
        fields.push("rotationPolicy");
    }
    if fields.is_empty() {
        Observation::Matches
    } else {
        Observation::Differs(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::{ObservedAction, ObservedKey, ObservedPolicy};
    use crate::validate::validate_spec;
    use std::collections::BTreeSet;

    const NOW: &str = "2026-12-01T12:00:00Z";

    fn t(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn desired(body: &str) -> DesiredKey {
        let yaml =
            format!("vaultUrl: https://v.vault.azure.net\nmanagementPolicy: Observe\n{body}");
        let spec = serde_norway::from_str(&yaml).expect("test spec parses");
        validate_spec(&spec, "k".into()).expect("test spec is valid")
    }

    /// A key made by someone else: no operator tags, RSA 2048, enabled.
    fn foreign_key() -> ObservedKey {
        ObservedKey {
            key_id: "https://v.vault.azure.net/keys/k".into(),
            version: "v1".into(),
            key_type: "RSA".into(),
            key_size: Some(2048),
            curve: None,
            public_exponent: Some(vec![1, 0, 1]),
            key_ops: ["sign", "verify"].iter().map(|s| (*s).to_owned()).collect(),
            enabled: true,
            not_before: None,
            expires_on: Some(t("2027-06-01T00:00:00Z")),
            created: Some(t("2026-06-01T00:00:00Z")),
            updated: None,
            tags: [("team".to_owned(), "a".to_owned())].into_iter().collect(),
            public_thumbprint: None,
            public_key: None,
        }
    }

    fn observed(latest: Option<ObservedKey>) -> Observed {
        Observed {
            latest,
            policy: None,
            deleted: None,
        }
    }

    const MATCHING: &str = "keyType: RSA\nkeySize: 2048\npublicExponent: 65537\nkeyOps: [sign, verify]\nattributes:\n  expiresOn: 2027-06-01T00:00:00Z\ntags:\n  team: a\n";

    #[test]
    fn a_foreign_key_that_matches_the_spec_matches_without_owner_tags() {
        assert_eq!(
            compare(&desired(MATCHING), &observed(Some(foreign_key())), t(NOW)),
            Observation::Matches
        );
        // A spec that states less than the key holds still matches: unset fields are the
        // vault's to choose, as in Manage.
        assert_eq!(
            compare(
                &desired("keyType: RSA\ntags:\n  team: a\n"),
                &observed(Some(foreign_key())),
                t(NOW)
            ),
            Observation::Matches
        );
    }

    #[test]
    fn every_difference_is_named_by_its_spec_field() {
        // (what the key holds differently, the field named)
        type Change = fn(&mut ObservedKey);
        let cases: [(Change, &str); 8] = [
            (|k| k.enabled = false, "attributes.enabled"),
            (|k| k.expires_on = None, "attributes.expiresOn"),
            (
                |k| k.not_before = Some(t("2026-07-01T00:00:00Z")),
                // The spec does not set notBefore: not a difference.
                "",
            ),
            (|k| k.key_ops = BTreeSet::new(), "keyOps"),
            (
                |k| {
                    k.tags.insert("extra".into(), "x".into());
                },
                "tags",
            ),
            (|k| k.key_size = Some(3072), "keySize"),
            (|k| k.public_exponent = Some(vec![3]), "publicExponent"),
            (|k| k.key_type = "EC".into(), "keyType"),
        ];
        for (change, field) in cases {
            let mut key = foreign_key();
            change(&mut key);
            let got = compare(&desired(MATCHING), &observed(Some(key)), t(NOW));
            if field.is_empty() {
                assert_eq!(got, Observation::Matches);
            } else {
                assert_eq!(got, Observation::Differs(vec![field]), "{field}");
            }
        }
    }

    #[test]
    fn several_differences_are_listed_together() {
        let mut key = foreign_key();
        key.enabled = false;
        key.tags.clear();
        key.tags
            .insert("vaultkey.dev/owner".into(), "someone/else".into());
        assert_eq!(
            compare(&desired(MATCHING), &observed(Some(key)), t(NOW)),
            Observation::Differs(vec!["attributes.enabled", "tags"])
        );
    }

    #[test]
    fn a_curve_and_a_relative_expiry_compare_as_in_manage() {
        let mut key = foreign_key();
        key.key_type = "EC".into();
        key.key_size = None;
        key.public_exponent = None;
        key.curve = Some("P-384".into());
        key.key_ops = BTreeSet::new();
        key.tags = BTreeMap::new();
        let spec = desired("keyType: EC\ncurve: P-256\nattributes:\n  expiresAfter: P1Y\n");
        // Created 2026-06-01, expires 2027-06-01: P1Y after creation matches.
        assert_eq!(
            compare(&spec, &observed(Some(key.clone())), t(NOW)),
            Observation::Differs(vec!["curve"])
        );
        key.expires_on = Some(t("2027-01-01T00:00:00Z"));
        assert_eq!(
            compare(&spec, &observed(Some(key)), t(NOW)),
            Observation::Differs(vec!["curve", "attributes.expiresAfter"])
        );
    }

    #[test]
    fn the_rotation_policy_is_compared_only_when_the_spec_has_one() {
        let key = foreign_key();
        let vault_policy = ObservedPolicy {
            expires_in: Some("P90D".into()),
            actions: vec![ObservedAction {
                action: "Rotate".into(),
                time_after_create: Some("P30D".into()),
                time_before_expiry: None,
            }],
        };
        let with_policy = |policy: Option<ObservedPolicy>| Observed {
            latest: Some(key.clone()),
            policy,
            deleted: None,
        };
        let spec = |policy: &str| desired(&format!("{MATCHING}rotationPolicy:\n{policy}"));
        let same = "  expiresIn: P90D\n  lifetimeActions:\n  - action: Rotate\n    timeAfterCreate: P30D\n";
        let other = "  expiresIn: P60D\n  lifetimeActions:\n  - action: Rotate\n    timeAfterCreate: P30D\n";
        assert_eq!(
            compare(
                &spec(same),
                &with_policy(Some(vault_policy.clone())),
                t(NOW)
            ),
            Observation::Matches
        );
        assert_eq!(
            compare(
                &spec(other),
                &with_policy(Some(vault_policy.clone())),
                t(NOW)
            ),
            Observation::Differs(vec!["rotationPolicy"])
        );
        assert_eq!(
            compare(&spec(same), &with_policy(None), t(NOW)),
            Observation::Differs(vec!["rotationPolicy"])
        );
        assert_eq!(
            compare(&desired(MATCHING), &with_policy(Some(vault_policy)), t(NOW)),
            Observation::Matches
        );
    }

    #[test]
    fn a_missing_key_is_missing_and_says_whether_it_is_soft_deleted() {
        assert_eq!(
            compare(&desired(MATCHING), &observed(None), t(NOW)),
            Observation::Missing { deleted: None }
        );
        let deleted = DeletedKey {
            tags: BTreeMap::new(),
        };
        let soft = Observed {
            latest: None,
            policy: None,
            deleted: Some(deleted.clone()),
        };
        assert_eq!(
            compare(&desired(MATCHING), &soft, t(NOW)),
            Observation::Missing {
                deleted: Some(deleted)
            }
        );
    }
}
