//! spec.retention in the reconcile: disables the versions [`crate::retention`] picks, one
//! update and one event each.

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::failure::Failure;
use super::{Context, events};
use crate::api::{OWNER_UID_TAG, VaultKey};
use crate::keyvault::{KeyProperties, KeyVault, KeyVersion, ObservedKey};
use crate::period::Period;
use crate::retention;

/// Disables the versions superseded longer ago than `grace`, and marks them disabled in
/// `versions` so status and the published JWKS follow at this pass. Only on a key whose owner
/// tag names this VaultKey: the plan has made sure of that by now, and it is checked again
/// because nothing undoes a disable by itself.
pub async fn disable_superseded(
    vk: &VaultKey,
    ctx: &Context,
    vault: &dyn KeyVault,
    key_name: &str,
    latest: &ObservedKey,
    versions: &mut [KeyVersion],
    grace: Period,
) -> Result<(), Failure> {
    let uid = vk.uid().unwrap_or_default();
    if latest.tags.get(OWNER_UID_TAG) != Some(&uid) {
        return Ok(());
    }
    for old in retention::to_disable(&latest.version, versions, grace, ctx.settings.now()) {
        let properties = KeyProperties {
            enabled: Some(false),
            ..KeyProperties::default()
        };
        vault
            .update_key(key_name, &old.version, &properties)
            .await
            .map_err(Failure::Vault)?;
        info!(version = %old.version, by = %old.by, "disabled a superseded version");
        if let Some(listed) = versions.iter_mut().find(|v| v.version == old.version) {
            listed.enabled = false;
        }
        events::publish(
            ctx,
            vk.object_ref(&()),
            EventType::Normal,
            "VersionDisabled",
            format!(
                "disabled version {} of key {key_name}: superseded by {} at {}, longer ago than spec.retention.disableSupersededAfter {grace}",
                old.version,
                old.by,
                old.at.to_rfc3339()
            ),
        )
        .await;
    }
    Ok(())
}
