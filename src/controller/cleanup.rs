//! Deletion: Retain only lets go; Delete and Purge act only on a key this VaultKey owns.

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::failure::Failure;
use super::session::Session;
use super::{ABANDON_ANNOTATION, Context, Error, is_abandoned, object_key};
use crate::api::{DeletionPolicy, ManagementPolicy, OWNER_TAG, VaultKey};
use crate::plan::owner_tag_value;
use crate::status::Readiness;
use crate::validate::vault_url;

pub async fn cleanup(vk: &VaultKey, ctx: &Context, api: &Api<VaultKey>) -> Result<Action, Error> {
    let result = cleanup_vault(vk, ctx).await;
    match &result {
        // The object is about to go: forget its failure count.
        Ok(_) => {
            ctx.backoff.reset(&object_key(vk));
            ctx.public_keys.forget(&vk.uid().unwrap_or_default());
            ctx.metrics
                .forget_key(&vk.namespace().unwrap_or_default(), &vk.name_any());
        }
        // Say on the object why it does not go away, and what the way out is.
        Err(e) => {
            let readiness = Readiness::not_ready(
                "DeletionBlocked",
                format!(
                    "the key cannot be removed from {} as deletionPolicy {:?} asks: {e}; restore access to the vault, or annotate the VaultKey {ABANDON_ANNOTATION}=true to let it go without touching the vault",
                    vk.spec.vault_url, vk.spec.deletion_policy
                ),
            );
            Session::new(vk, ctx).report(api, &readiness).await?;
        }
    }
    result
}

async fn cleanup_vault(vk: &VaultKey, ctx: &Context) -> Result<Action, Error> {
    let name = vk.key_name().to_owned();
    if is_abandoned(vk.meta()) {
        info!("abandoned: the vault is not touched");
        return Ok(Action::await_change());
    }
    if vk.spec.management_policy == ManagementPolicy::Observe {
        info!("managementPolicy Observe: the vault is not touched");
        return Ok(Action::await_change());
    }
    if vk.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy Retain: the key stays in the vault");
        return Ok(Action::await_change());
    }
    // Deletion needs only the vault: a spec whose expiry has passed since, say, still names it.
    let Some(vault_url) = vault_url(&vk.spec.vault_url)
        .ok()
        .filter(|url| ctx.settings.vault_hosts.check(url).is_ok())
    else {
        // A vault the operator may not use was never reached.
        return Ok(Action::await_change());
    };
    if !ctx
        .settings
        .access
        .allows(&vk.namespace().unwrap_or_default(), &vault_url)
    {
        info!("the vault is outside this namespace's access policy: not touched");
        return Ok(Action::await_change());
    }
    let session = Session::new(vk, ctx);
    // The key is deleted with the identity that manages it (spec.identity), never with the
    // operator's own in its place.
    let (vault, _) = session.vault(&vault_url).await.map_err(|f| match f {
        Failure::Vault(e) => Error::Cleanup(e),
        other => Error::Identity(other.message(&vault_url, &name), other.reason()),
    })?;
    let _key_lock = ctx.key_locks.lock(&vault_url, &name).await;
    let owner = owner_tag_value(&vk.namespace().unwrap_or_default(), &vk.name_any());
    if let Some(latest) = vault.get_key(&name).await.map_err(Error::Cleanup)? {
        if latest.tags.get(OWNER_TAG) != Some(&owner) {
            info!("the key is not owned by this VaultKey: left in the vault");
            return Ok(Action::await_change());
        }
        vault.delete_key(&name).await.map_err(Error::Cleanup)?;
        session
            .event(
                EventType::Normal,
                "Deleted",
                format!("soft-deleted key {name}"),
            )
            .await;
        info!("soft-deleted");
    }
    let deleted = match vk.spec.deletion_policy {
        DeletionPolicy::Purge => vault.get_deleted_key(&name).await.map_err(Error::Cleanup)?,
        _ => None,
    };
    // Purge only what this VaultKey deleted: the deleted key's tags still name its owner.
    if deleted.is_some_and(|d| d.tags.get(OWNER_TAG) == Some(&owner)) {
        // Right after a delete Key Vault may still answer 409 ObjectIsBeingDeleted; the
        // error policy retries.
        vault
            .purge_deleted_key(&name)
            .await
            .map_err(Error::Cleanup)?;
        session
            .event(EventType::Normal, "Purged", format!("purged key {name}"))
            .await;
        info!("purged");
    }
    Ok(Action::await_change())
}
