//! `spec.publish`: reads the published ConfigMap, reads the public parts of versions it has not
//! seen, and writes the ConfigMap only when what it should hold differs from what it holds.
//! The content is decided in [`crate::publish`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::Utc;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::info;

use super::failure::Failure;
use super::{Context, FIELD_MANAGER};
use crate::api::VaultKey;
use crate::keyvault::{KeyVault, KeyVersion, ObservedKey, PublicKey};
use crate::publish::{self, Published};

/// Public keys of versions already read, per VaultKey (by uid). A version's key material never
/// changes, so a key read once stays right; the cache holds only the versions a JWKS lists,
/// and after a restart each listed older version is read once more.
#[derive(Default)]
pub struct PublicKeys {
    by_owner: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    key_id: String,
    keys: BTreeMap<String, PublicKey>,
}

impl PublicKeys {
    fn get(&self, uid: &str, key_id: &str) -> BTreeMap<String, PublicKey> {
        let cache = self.by_owner.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(uid)
            .filter(|c| c.key_id == key_id)
            .map(|c| c.keys.clone())
            .unwrap_or_default()
    }

    fn keep(&self, uid: &str, key_id: &str, keys: BTreeMap<String, PublicKey>) {
        let mut cache = self.by_owner.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            uid.to_owned(),
            Cached {
                key_id: key_id.to_owned(),
                keys,
            },
        );
    }

    /// The VaultKey stopped publishing, or is gone.
    pub fn forget(&self, uid: &str) {
        let mut cache = self.by_owner.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(uid);
    }
}

/// What the reconcile knows about the key when it publishes.
pub struct KeyState<'a> {
    pub key_name: &'a str,
    pub latest: &'a ObservedKey,
    pub versions: &'a [KeyVersion],
    pub next_rotation: Option<chrono::DateTime<Utc>>,
}

/// Brings the ConfigMap `name` up to date. A ConfigMap of that name that the VaultKey does not
/// own is left as it is and reported.
pub async fn publish(
    vk: &VaultKey,
    ctx: &Context,
    vault: &dyn KeyVault,
    name: &str,
    key: &KeyState<'_>,
) -> Result<(), Failure> {
    let ns = vk.namespace().unwrap_or_default();
    let uid = vk.uid().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let field = field_name(vk);
    let existing = api.get_opt(name).await.map_err(|e| Failure::Publish {
        reason: "PublishFailed",
        message: format!("cannot read ConfigMap {ns}/{name} ({field}): {e}"),
        transient: true,
    })?;
    if let Some(cm) = &existing
        && !publish::owned_by(cm, &uid)
    {
        return Err(Failure::Publish {
            reason: "ConfigMapNotOwned",
            message: format!(
                "ConfigMap {ns}/{name} ({field}) exists and is not owned by this VaultKey; the operator does not overwrite it: delete or rename it, or choose another spec.publish.configMapName"
            ),
            transient: false,
        });
    }

    let latest = key.latest;
    let now = ctx.settings.now();
    let listed = publish::listed_versions(latest, key.versions, now);
    let mut known = ctx.public_keys.get(&uid, &latest.key_id);
    if let Some(public) = &latest.public_key {
        known.insert(latest.version.clone(), public.clone());
    }
    // Only a key with a public part has public parts of older versions to read.
    if latest.public_key.is_some() {
        for version in publish::to_read(&listed, &known) {
            let read = vault
                .get_key_version(key.key_name, &version)
                .await
                .map_err(Failure::Vault)?;
            if let Some(public) = read.and_then(|k| k.public_key) {
                known.insert(version, public);
            }
        }
    }
    known.retain(|version, _| listed.contains(version));
    let data = publish::data(&Published {
        key_name: key.key_name,
        current: latest,
        versions: key.versions,
        public_keys: &known,
        next_rotation: key.next_rotation,
        now,
    })
    .map_err(|e| Failure::Publish {
        reason: "PublishFailed",
        message: format!(
            "cannot publish version {} in ConfigMap {ns}/{name}: {e}",
            latest.version
        ),
        transient: false,
    })?;
    ctx.public_keys.keep(&uid, &latest.key_id, known);

    let desired = publish::config_map(vk, name, data);
    if existing
        .as_ref()
        .is_some_and(|cm| publish::up_to_date(cm, &desired))
    {
        return Ok(());
    }
    // Server-side apply: creates the ConfigMap or updates the fields this operator owns,
    // leaving what other writers added.
    let mut body = serde_json::to_value(&desired).map_err(|e| Failure::Publish {
        reason: "PublishFailed",
        message: format!("cannot encode ConfigMap {ns}/{name}: {e}"),
        transient: false,
    })?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(|e| Failure::Publish {
        reason: "PublishFailed",
        message: format!("cannot write ConfigMap {ns}/{name} ({field}): {e}"),
        transient: true,
    })?;
    ctx.metrics.kube_write("configmap");
    info!(configmap = %name, version = %latest.version, listed = listed.len(), "published");
    Ok(())
}

/// Names the field that chose the ConfigMap, for messages.
fn field_name(vk: &VaultKey) -> &'static str {
    match vk
        .spec
        .publish
        .as_ref()
        .and_then(|p| p.config_map_name.as_ref())
    {
        Some(_) => "spec.publish.configMapName",
        None => "spec.publish, default name <metadata.name>-vaultkey",
    }
}
