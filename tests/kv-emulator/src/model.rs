//! JSON shapes of the Key Vault keys REST API (requests and responses).
//!
//! Field names follow the REST API (`key_ops`, `recoveryLevel`, `nextLink`, ...).
//! Unknown request fields are ignored; `null` is treated like an absent field.
//! Request types that can carry private key material deliberately do not
//! implement `Debug`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub type Tags = BTreeMap<String, String>;

/// Accepts a Unix timestamp given as an integer (what the SDKs send) or as a
/// number with a fractional part (truncated).
fn unix_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value = Option::<serde_json::Number>::deserialize(d)?;
    Ok(match value {
        None => None,
        Some(n) => match n.as_i64() {
            Some(i) => Some(i),
            None => Some(
                n.as_f64()
                    .ok_or_else(|| serde::de::Error::custom("timestamp out of range"))?
                    as i64,
            ),
        },
    })
}

// ---------------------------------------------------------------- requests

#[derive(Deserialize, Default, Debug, Clone)]
pub struct KeyAttributesIn {
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "unix_time")]
    pub nbf: Option<i64>,
    #[serde(default, deserialize_with = "unix_time")]
    pub exp: Option<i64>,
    pub exportable: Option<bool>,
}

/// Body of `POST /keys/{name}/create`.
#[derive(Deserialize, Default, Debug)]
pub struct KeyCreateParameters {
    pub kty: Option<String>,
    pub key_size: Option<i64>,
    pub public_exponent: Option<i64>,
    pub crv: Option<String>,
    pub key_ops: Option<Vec<String>>,
    pub attributes: Option<KeyAttributesIn>,
    pub tags: Option<Tags>,
    pub release_policy: Option<Value>,
}

/// A JSON Web Key as sent to import. Binary members stay base64url strings
/// here so that decoding errors are reported without echoing them.
#[derive(Deserialize, Default)]
pub struct JsonWebKeyIn {
    pub kty: Option<String>,
    pub key_ops: Option<Vec<String>>,
    pub crv: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    pub d: Option<String>,
    pub dp: Option<String>,
    pub dq: Option<String>,
    pub qi: Option<String>,
    pub p: Option<String>,
    pub q: Option<String>,
    pub k: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    #[serde(rename = "key_hsm")]
    pub t: Option<String>,
}

/// Body of `PUT /keys/{name}` (import).
#[derive(Deserialize, Default)]
pub struct KeyImportParameters {
    pub key: Option<JsonWebKeyIn>,
    #[serde(rename = "Hsm", alias = "hsm")]
    pub hsm: Option<bool>,
    pub attributes: Option<KeyAttributesIn>,
    pub tags: Option<Tags>,
    pub release_policy: Option<Value>,
}

/// Body of `PATCH /keys/{name}/{version}`.
#[derive(Deserialize, Default, Debug)]
pub struct KeyUpdateParameters {
    pub key_ops: Option<Vec<String>>,
    pub attributes: Option<KeyAttributesIn>,
    pub tags: Option<Tags>,
    pub release_policy: Option<Value>,
}

/// Body of `PUT /keys/{name}/rotationpolicy`.
#[derive(Deserialize, Default, Debug, Clone)]
pub struct RotationPolicyIn {
    #[serde(rename = "lifetimeActions")]
    pub lifetime_actions: Option<Vec<PolicyLifetimeActionIn>>,
    pub attributes: Option<PolicyAttributesIn>,
}

#[derive(Deserialize, Default, Debug, Clone)]
pub struct PolicyLifetimeActionIn {
    pub trigger: Option<TriggerIn>,
    pub action: Option<PolicyActionIn>,
}

#[derive(Deserialize, Default, Debug, Clone)]
pub struct TriggerIn {
    #[serde(rename = "timeAfterCreate")]
    pub time_after_create: Option<String>,
    #[serde(rename = "timeBeforeExpiry")]
    pub time_before_expiry: Option<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
pub struct PolicyActionIn {
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
pub struct PolicyAttributesIn {
    #[serde(rename = "expiryTime")]
    pub expiry_time: Option<String>,
}

// --------------------------------------------------------------- responses

/// Public members of a JSON Web Key (never private ones).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct JsonWebKeyOut {
    pub kid: String,
    pub kty: &'static str,
    pub key_ops: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct KeyAttributesOut {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
    #[serde(rename = "recoveryLevel")]
    pub recovery_level: String,
    #[serde(rename = "recoverableDays")]
    pub recoverable_days: i64,
    pub exportable: bool,
}

/// KeyBundle: a key version with its attributes.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct KeyBundle {
    pub key: JsonWebKeyOut,
    pub attributes: KeyAttributesOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<Value>,
}

/// Deletion information shared by deleted bundles and deleted items.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DeletionInfo {
    #[serde(rename = "recoveryId", skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<String>,
    #[serde(rename = "deletedDate", skip_serializing_if = "Option::is_none")]
    pub deleted_date: Option<i64>,
    #[serde(rename = "scheduledPurgeDate", skip_serializing_if = "Option::is_none")]
    pub scheduled_purge_date: Option<i64>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct DeletedKeyBundle {
    #[serde(flatten)]
    pub deletion: DeletionInfo,
    #[serde(flatten)]
    pub bundle: KeyBundle,
}

/// KeyItem: list entry (no key material).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct KeyItem {
    pub kid: String,
    pub attributes: KeyAttributesOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DeletedKeyItem {
    #[serde(flatten)]
    pub deletion: DeletionInfo,
    #[serde(flatten)]
    pub item: KeyItem,
}

/// One page of a list; `nextLink` is `null` on the last page.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ListPage<T> {
    pub value: Vec<T>,
    #[serde(rename = "nextLink")]
    pub next_link: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicyOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "lifetimeActions")]
    pub lifetime_actions: Vec<LifetimeActionOut>,
    pub attributes: PolicyAttributesOut,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct LifetimeActionOut {
    pub trigger: TriggerOut,
    pub action: PolicyActionOut,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TriggerOut {
    #[serde(rename = "timeAfterCreate", skip_serializing_if = "Option::is_none")]
    pub time_after_create: Option<String>,
    #[serde(rename = "timeBeforeExpiry", skip_serializing_if = "Option::is_none")]
    pub time_before_expiry: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PolicyActionOut {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyAttributesOut {
    #[serde(rename = "expiryTime", skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_unknown_fields_and_nulls() {
        let p: KeyCreateParameters = serde_json::from_str(
            r#"{"kty":"RSA","key_size":null,"whatever":{"a":1},"attributes":{"enabled":false,"exp":1700000000.5}}"#,
        )
        .unwrap();
        assert_eq!(p.kty.as_deref(), Some("RSA"));
        assert_eq!(p.key_size, None);
        let attrs = p.attributes.unwrap();
        assert_eq!(attrs.enabled, Some(false));
        assert_eq!(attrs.exp, Some(1_700_000_000));
        assert_eq!(attrs.nbf, None);
    }

    #[test]
    fn deleted_bundle_flattens() {
        let bundle = DeletedKeyBundle {
            deletion: DeletionInfo {
                recovery_id: Some("https://v/deletedkeys/k".into()),
                deleted_date: Some(1),
                scheduled_purge_date: Some(2),
            },
            bundle: KeyBundle {
                key: JsonWebKeyOut {
                    kid: "https://v/keys/k/0".into(),
                    kty: "oct-HSM",
                    key_ops: vec!["wrapKey".into()],
                    n: None,
                    e: None,
                    crv: None,
                    x: None,
                    y: None,
                },
                attributes: KeyAttributesOut {
                    enabled: true,
                    nbf: None,
                    exp: None,
                    created: 1,
                    updated: 1,
                    recovery_level: "Recoverable".into(),
                    recoverable_days: 90,
                    exportable: false,
                },
                tags: None,
                release_policy: None,
            },
        };
        let v = serde_json::to_value(bundle).unwrap();
        assert_eq!(v["recoveryId"], "https://v/deletedkeys/k");
        assert_eq!(v["key"]["kty"], "oct-HSM");
        assert!(v["key"].get("n").is_none());
        assert!(v.get("tags").is_none());
        assert_eq!(v["attributes"]["recoverableDays"], 90);
    }
}
