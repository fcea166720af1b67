//! Translation between the operator's types and the Azure SDK's models: what is sent
//! (key types, curves, operations, attributes, rotation and release policies) and what is read
//! back (keys, rotation policies, times).

use std::collections::{BTreeMap, HashMap};

use azure_core::time::OffsetDateTime;
use azure_security_keyvault_keys::models::{
    CurveName, Key, KeyAttributes as SdkAttributes, KeyOperation as SdkOperation, KeyReleasePolicy,
    KeyRotationPolicy, KeyRotationPolicyAction, KeyRotationPolicyAttributes, KeyType as SdkKeyType,
    LifetimeAction, LifetimeActionTrigger, LifetimeActionType,
};
use chrono::{DateTime, Utc};

use crate::api::{KeyType, LifetimeActionType as SpecAction};
use crate::key_material::{Curve as MaterialCurve, ec_jwk_thumbprint, rsa_jwk_thumbprint};
use crate::keyvault::{
    KeyProperties, ObservedAction, ObservedKey, ObservedPolicy, Operation, PublicKey, VaultError,
    VaultErrorKind, VaultResult,
};
use crate::validate::{DesiredRotationPolicy, Trigger};

/// The rotation policy as JSON, read leniently: action names in any case.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawPolicy {
    #[serde(default)]
    lifetime_actions: Vec<RawAction>,
    #[serde(default)]
    attributes: Option<RawPolicyAttributes>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicyAttributes {
    expiry_time: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAction {
    trigger: Option<RawTrigger>,
    action: Option<RawActionType>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrigger {
    time_after_create: Option<String>,
    time_before_expiry: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawActionType {
    #[serde(rename = "type")]
    type_: Option<String>,
}

impl From<RawPolicy> for ObservedPolicy {
    fn from(raw: RawPolicy) -> Self {
        ObservedPolicy {
            expires_in: raw.attributes.and_then(|a| a.expiry_time),
            actions: raw
                .lifetime_actions
                .into_iter()
                .map(|a| {
                    let trigger = a.trigger.unwrap_or(RawTrigger {
                        time_after_create: None,
                        time_before_expiry: None,
                    });
                    ObservedAction {
                        action: a.action.and_then(|t| t.type_).unwrap_or_default(),
                        time_after_create: trigger.time_after_create,
                        time_before_expiry: trigger.time_before_expiry,
                    }
                })
                .collect(),
        }
    }
}

pub(super) fn sdk_policy(policy: &DesiredRotationPolicy) -> KeyRotationPolicy {
    KeyRotationPolicy {
        attributes: Some(KeyRotationPolicyAttributes {
            expiry_time: policy.expires_in.map(|p| p.to_string()),
            ..Default::default()
        }),
        lifetime_actions: Some(
            policy
                .actions
                .iter()
                .map(|a| {
                    let trigger = match a.trigger {
                        Trigger::AfterCreate(p) => LifetimeActionTrigger {
                            time_after_create: Some(crate::period::Period::from(p).to_string()),
                            time_before_expiry: None,
                        },
                        Trigger::BeforeExpiry(p) => LifetimeActionTrigger {
                            time_after_create: None,
                            time_before_expiry: Some(crate::period::Period::from(p).to_string()),
                        },
                    };
                    LifetimeAction {
                        action: Some(LifetimeActionType {
                            type_prop: Some(match a.action {
                                SpecAction::Rotate => KeyRotationPolicyAction::Rotate,
                                SpecAction::Notify => KeyRotationPolicyAction::Notify,
                            }),
                        }),
                        trigger: Some(trigger),
                    }
                })
                .collect(),
        ),
        ..Default::default()
    }
}

pub(super) fn sdk_key_type(key_type: KeyType) -> SdkKeyType {
    match key_type {
        KeyType::Rsa => SdkKeyType::Rsa,
        KeyType::RsaHsm => SdkKeyType::RsaHsm,
        KeyType::Ec => SdkKeyType::Ec,
        KeyType::EcHsm => SdkKeyType::EcHsm,
        KeyType::OctHsm => SdkKeyType::OctHsm,
    }
}

pub(super) fn sdk_curve(name: &str) -> CurveName {
    name.parse()
        .unwrap_or(CurveName::UnknownValue(name.to_owned()))
}

pub(super) fn sdk_ops(
    ops: &std::collections::BTreeSet<crate::api::KeyOperation>,
) -> Vec<SdkOperation> {
    ops.iter()
        .map(|op| {
            op.as_str()
                .parse()
                .unwrap_or(SdkOperation::UnknownValue(op.as_str().to_owned()))
        })
        .collect()
}

pub(super) fn sdk_attributes(properties: &KeyProperties) -> SdkAttributes {
    SdkAttributes {
        enabled: properties.enabled,
        not_before: properties.not_before.and_then(to_offset),
        expires: properties.expires_on.and_then(to_offset),
        exportable: properties.exportable,
        ..Default::default()
    }
}

pub(super) fn sdk_release_policy(policy: &crate::api::ReleasePolicy) -> KeyReleasePolicy {
    KeyReleasePolicy {
        content_type: Some(
            policy
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json; charset=utf-8".into()),
        ),
        encoded_policy: Some(policy.data.clone().into_bytes()),
        immutable: policy.immutable,
    }
}

pub(super) fn hash_tags(tags: &BTreeMap<String, String>) -> HashMap<String, String> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_offset(t: DateTime<Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()
}

pub(super) fn to_chrono(t: Option<OffsetDateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), 0))
}

/// Splits `{vault}/keys/{name}/{version}` into the versionless id and the version.
pub(super) fn split_kid(kid: &str) -> Option<(String, String)> {
    let (base, version) = kid.trim_end_matches('/').rsplit_once('/')?;
    if version.is_empty() || !base.contains("/keys/") {
        return None;
    }
    Some((base.to_owned(), version.to_owned()))
}

/// The key name in a list item's versionless id `{vault}/keys/{name}`, in lower case.
pub(super) fn listed_key_name(kid: &str) -> Option<String> {
    let (_, name) = kid.trim_end_matches('/').split_once("/keys/")?;
    (!name.is_empty() && !name.contains('/')).then(|| name.to_lowercase())
}

pub(super) fn observed_key(operation: Operation, key: &Key) -> VaultResult<ObservedKey> {
    let jwk = key.key.as_ref().ok_or_else(|| {
        VaultError::new(
            VaultErrorKind::Other,
            operation,
            "the vault answered without a key",
        )
    })?;
    let kid = jwk.kid.as_deref().unwrap_or_default();
    let (key_id, version) = split_kid(kid).ok_or_else(|| {
        VaultError::new(
            VaultErrorKind::Other,
            operation,
            format!("the vault answered an unexpected key id {kid:?}"),
        )
    })?;
    let key_type = jwk
        .kty
        .as_ref()
        .map(|t| <&str>::from(t).to_owned())
        .unwrap_or_default();
    let curve = jwk.crv.as_ref().map(|c| <&str>::from(c).to_owned());
    let key_size = jwk.n.as_ref().map(|n| {
        let significant = n.iter().skip_while(|b| **b == 0).count();
        i32::try_from(significant * 8).unwrap_or(i32::MAX)
    });
    let public_thumbprint = match (&jwk.n, &jwk.e, &curve, &jwk.x, &jwk.y) {
        (Some(n), Some(e), _, _, _) => Some(rsa_jwk_thumbprint(n, e)),
        (_, _, Some(crv), Some(x), Some(y)) => {
            MaterialCurve::from_jwk_crv(crv).map(|crv| ec_jwk_thumbprint(crv, x, y))
        }
        _ => None,
    };
    let public_key = match (&jwk.n, &jwk.e, &curve, &jwk.x, &jwk.y) {
        (Some(n), Some(e), _, _, _) => Some(PublicKey::Rsa {
            n: n.clone(),
            e: e.clone(),
        }),
        (_, _, Some(crv), Some(x), Some(y)) => {
            MaterialCurve::from_jwk_crv(crv).map(|curve| PublicKey::Ec {
                curve,
                x: x.clone(),
                y: y.clone(),
            })
        }
        _ => None,
    };
    let attrs = key.attributes.clone().unwrap_or_default();
    Ok(ObservedKey {
        key_id,
        version,
        key_type,
        key_size,
        curve,
        public_exponent: jwk.e.clone(),
        key_ops: jwk
            .key_ops
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        enabled: attrs.enabled.unwrap_or(true),
        not_before: to_chrono(attrs.not_before),
        expires_on: to_chrono(attrs.expires),
        created: to_chrono(attrs.created),
        updated: to_chrono(attrs.updated),
        tags: key.tags.clone().unwrap_or_default().into_iter().collect(),
        public_thumbprint,
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::super::failure::error_details;
    use super::*;

    #[test]
    fn key_ids_split_into_base_and_version() {
        assert_eq!(
            split_kid("https://v.vault.azure.net/keys/k/0123abcd"),
            Some(("https://v.vault.azure.net/keys/k".into(), "0123abcd".into()))
        );
        assert_eq!(split_kid("https://v.vault.azure.net/other/k"), None);
    }

    #[test]
    fn list_items_name_their_key_in_lower_case() {
        for kid in [
            "https://v.vault.azure.net/keys/My-Key",
            "https://v.vault.azure.net/keys/my-key/",
        ] {
            assert_eq!(listed_key_name(kid).as_deref(), Some("my-key"), "{kid}");
        }
        for kid in [
            "https://v.vault.azure.net/keys/",
            "https://v.vault.azure.net/keys/k/0123abcd",
            "https://v.vault.azure.net/secrets/k",
        ] {
            assert_eq!(listed_key_name(kid), None, "{kid}");
        }
    }

    #[test]
    fn lenient_policy_reading_keeps_action_names() {
        let raw: RawPolicy = serde_json::from_str(
            r#"{"id":"x","lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"rotate"}}],"attributes":{"expiryTime":"P90D"}}"#,
        )
        .unwrap();
        let policy = ObservedPolicy::from(raw);
        assert_eq!(policy.expires_in.as_deref(), Some("P90D"));
        assert_eq!(policy.actions[0].action, "rotate");
        assert_eq!(policy.actions[0].time_after_create.as_deref(), Some("P30D"));
    }

    /// Shapes other Key Vault dialects answer (see tests/kv-emulator/README.md, "Dialects";
    /// end to end in tests/dialects.rs): `n` with a leading zero byte, no `key_ops`, no
    /// `exportable`, and error codes that are not Key Vault's around Key Vault's inner code.
    #[test]
    fn dialect_shapes_read_as_key_vault_shapes() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let modulus: Vec<u8> = (0..256u32).map(|i| (i as u8) | 0x80).collect();
        let bundle = |n: &[u8]| -> Key {
            serde_json::from_value(serde_json::json!({
                "key": {"kid": "https://v.vault.azure.net/keys/k/0123abcd", "kty": "RSA",
                        "n": b64(n), "e": "AQAB"},
                "attributes": {"enabled": true, "created": 1700000000, "updated": 1700000000,
                               "recoveryLevel": "Recoverable"}
            }))
            .unwrap()
        };
        let plain = observed_key(Operation::GetKey, &bundle(&modulus)).unwrap();
        let mut signed = vec![0u8];
        signed.extend_from_slice(&modulus);
        let zero = observed_key(Operation::GetKey, &bundle(&signed)).unwrap();
        assert_eq!(zero.key_size, Some(2048));
        assert_eq!(zero.public_thumbprint, plain.public_thumbprint);
        assert!(zero.key_ops.is_empty());
        assert!(zero.enabled);

        let body = r#"{"error":{"code":"com.example.keyvault.ConflictException","message":"m","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#;
        assert_eq!(
            error_details(body).0.as_deref(),
            Some("ObjectIsDeletedButRecoverable")
        );
    }
}
