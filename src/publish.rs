//! `spec.publish`: the ConfigMap that hands a key to its consumers (SOPS, Dapr, AKS KMS, JWT
//! verifiers). Pure: what the ConfigMap holds is built from what the vault holds; the
//! controller reads, compares and writes (`src/controller/publish.rs`).
//!
//! The JWKS lists every version that is enabled and not expired, newest first, so a verifier
//! knows a new key before it signs and keeps the old one until it is disabled or expires.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::{PUBLISH_SUFFIX, VaultKey};
use crate::keyvault::{KeyVersion, ObservedKey, PublicKey};
use crate::public_key::{PublicKeyError, jwk, spki_pem};

/// Versioned id of the current version (`https://<vault>/keys/<name>/<version>`): what AKS KMS
/// and a pinned SOPS key take.
pub const KEY_ID: &str = "keyId";
/// Versionless id: what follows rotation (Storage/SQL customer-managed keys, SOPS at encrypt).
pub const KEY_ID_VERSIONLESS: &str = "keyIdVersionless";
pub const KEY_NAME: &str = "keyName";
pub const VERSION: &str = "version";
pub const KEY_TYPE: &str = "keyType";
/// RFC 3339, absent when the current version does not expire.
pub const EXPIRES_ON: &str = "expiresOn";
/// RFC 3339, absent without a rotation policy that rotates.
pub const NEXT_ROTATION_TIME: &str = "nextRotationTime";
/// SubjectPublicKeyInfo PEM of the current version.
pub const PUBLIC_KEY_PEM: &str = "publicKey.pem";
/// JWK of the current version, `kid` = versioned key id.
pub const PUBLIC_KEY_JWK: &str = "publicKey.jwk.json";
/// `{"keys": [...]}`: every enabled, unexpired version, newest first.
pub const JWKS: &str = "jwks.json";

/// Every data key the operator writes. Keys other writers add are left alone and do not count
/// as a difference.
pub const DATA_KEYS: [&str; 10] = [
    KEY_ID,
    KEY_ID_VERSIONLESS,
    KEY_NAME,
    VERSION,
    KEY_TYPE,
    EXPIRES_ON,
    NEXT_ROTATION_TIME,
    PUBLIC_KEY_PEM,
    PUBLIC_KEY_JWK,
    JWKS,
];

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "vaultkey-operator";
/// Names the publishing VaultKey (an annotation: names can exceed a label value's 63 chars).
pub const VAULTKEY_ANNOTATION: &str = "vaultkey.dev/vaultkey";
/// Stakater Reloader's search mode: workloads annotated `reloader.stakater.com/search: "true"`
/// roll when a ConfigMap carrying this annotation changes (its auto mode needs nothing here).
pub const RELOADER_MATCH_ANNOTATION: &str = "reloader.stakater.com/match";

/// The ConfigMap's name, when the VaultKey publishes.
pub fn config_map_name(vk: &VaultKey) -> Option<String> {
    let publish = vk.spec.publish.as_ref()?;
    Some(
        publish
            .config_map_name
            .clone()
            .unwrap_or_else(|| format!("{}{PUBLISH_SUFFIX}", vk.name_any())),
    )
}

/// The versions the JWKS lists, newest first: enabled and not expired at `now`. The current
/// version's attributes come from its own read (fresher than the list's).
pub fn listed_versions(
    current: &ObservedKey,
    versions: &[KeyVersion],
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut all: Vec<KeyVersion> = versions
        .iter()
        .filter(|v| v.version != current.version)
        .cloned()
        .collect();
    all.push(KeyVersion {
        version: current.version.clone(),
        enabled: current.enabled,
        created: current.created,
        expires_on: current.expires_on,
        not_before: current.not_before,
    });
    // The current version is the newest whatever the times say: Key Vault's times have
    // whole seconds, and a rotation right after a creation shares its second. Versions
    // created within one second otherwise go by version id (the vault gives no order).
    let current_first = |v: &KeyVersion| v.version != current.version;
    all.sort_by(|a, b| {
        current_first(a)
            .cmp(&current_first(b))
            .then_with(|| b.created.cmp(&a.created))
            .then_with(|| a.version.cmp(&b.version))
    });
    all.into_iter()
        .filter(|v| v.enabled && v.expires_on.is_none_or(|exp| exp > now))
        .map(|v| v.version)
        .collect()
}

/// Listed versions whose public part is not known yet: the only versions read by id, so the
/// public parts of older versions are read when the set of listed versions changes, not on
/// every resync.
pub fn to_read(listed: &[String], known: &BTreeMap<String, PublicKey>) -> Vec<String> {
    listed
        .iter()
        .filter(|v| !known.contains_key(*v))
        .cloned()
        .collect()
}

/// What the published ConfigMap is built from.
pub struct Published<'a> {
    pub key_name: &'a str,
    pub current: &'a ObservedKey,
    /// From the version list, any order.
    pub versions: &'a [KeyVersion],
    /// Public keys by version (at least those of [`listed_versions`] that have one).
    pub public_keys: &'a BTreeMap<String, PublicKey>,
    pub next_rotation: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// The ConfigMap's data. A key without a public part (oct-HSM) publishes its identifiers only.
pub fn data(p: &Published<'_>) -> Result<BTreeMap<String, String>, PublicKeyError> {
    let current = p.current;
    let mut out = BTreeMap::new();
    out.insert(KEY_ID.to_owned(), current.versioned_id());
    out.insert(KEY_ID_VERSIONLESS.to_owned(), current.key_id.clone());
    out.insert(KEY_NAME.to_owned(), p.key_name.to_owned());
    out.insert(VERSION.to_owned(), current.version.clone());
    out.insert(KEY_TYPE.to_owned(), current.key_type.clone());
    if let Some(exp) = current.expires_on {
        out.insert(EXPIRES_ON.to_owned(), rfc3339(exp));
    }
    if let Some(next) = p.next_rotation {
        out.insert(NEXT_ROTATION_TIME.to_owned(), rfc3339(next));
    }
    let Some(public) = &current.public_key else {
        return Ok(out);
    };
    out.insert(PUBLIC_KEY_PEM.to_owned(), spki_pem(public)?);
    out.insert(
        PUBLIC_KEY_JWK.to_owned(),
        Value::Object(jwk(public, &current.versioned_id())).to_string(),
    );
    let keys: Vec<Value> = listed_versions(current, p.versions, p.now)
        .iter()
        .filter_map(|version| {
            let key = p.public_keys.get(version)?;
            Some(Value::Object(jwk(
                key,
                &format!("{}/{version}", current.key_id),
            )))
        })
        .collect();
    out.insert(JWKS.to_owned(), json!({ "keys": keys }).to_string());
    Ok(out)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The ConfigMap as the operator applies it: data, its label and annotations, and the
/// VaultKey as controlling owner (the ConfigMap is garbage-collected with it).
pub fn config_map(vk: &VaultKey, name: &str, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: vk.namespace(),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (VAULTKEY_ANNOTATION.to_owned(), vk.name_any()),
                (RELOADER_MATCH_ANNOTATION.to_owned(), "true".to_owned()),
            ])),
            owner_references: vk.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Whether the VaultKey with `uid` owns the ConfigMap. One it does not own (made by hand, or
/// by another VaultKey) is never overwritten.
pub fn owned_by(cm: &ConfigMap, uid: &str) -> bool {
    cm.owner_references().iter().any(|o| o.uid == uid)
}

/// Whether `existing` already holds what `desired` says: the operator's data keys (present
/// with the same value, or absent in both), its label and annotations, and the owner. What
/// other writers added is not a difference, so it never causes a write.
pub fn up_to_date(existing: &ConfigMap, desired: &ConfigMap) -> bool {
    let empty = BTreeMap::new();
    let have = existing.data.as_ref().unwrap_or(&empty);
    let want = desired.data.as_ref().unwrap_or(&empty);
    let contains = |have: Option<&BTreeMap<String, String>>,
                    want: Option<&BTreeMap<String, String>>| {
        want.unwrap_or(&empty)
            .iter()
            .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
    };
    DATA_KEYS.iter().all(|k| have.get(*k) == want.get(*k))
        && contains(
            existing.metadata.labels.as_ref(),
            desired.metadata.labels.as_ref(),
        )
        && contains(
            existing.metadata.annotations.as_ref(),
            desired.metadata.annotations.as_ref(),
        )
        && desired
            .owner_references()
            .iter()
            .all(|o| existing.owner_references().contains(o))
}

#[cfg(test)]
mod tests;
