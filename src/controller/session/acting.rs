//! Which identity a reconcile acts with: the operator's own, or the namespace identity the
//! VaultKey names (see `crate::identity`), resolved and with a token at hand before any vault
//! request, so a missing ServiceAccount or a refused exchange is reported as such.

use std::sync::Arc;

use kube::ResourceExt;

use super::Session;
use crate::controller::failure::Failure;
use crate::controller::listing::Scope;
use crate::identity::{self, Choice, IdentityError};
use crate::keyvault::{KeyVault, VaultIdentity};
use crate::validate::validate_with_hosts;

impl Session<'_> {
    /// The vault client to act with: the operator's identity, or the namespace identity the
    /// spec names (returned too, for messages).
    #[allow(clippy::type_complexity)]
    pub async fn vault(
        &self,
        vault_url: &str,
    ) -> Result<(Arc<dyn KeyVault>, Option<(String, VaultIdentity)>), Failure> {
        let identity = self.identity(vault_url).await?;
        let vault = match &identity {
            Some((_, identity)) => self.ctx.vaults.vault_as(vault_url, identity),
            None => self.ctx.vaults.vault(vault_url),
        }
        .map_err(Failure::Vault)?;
        Ok((vault, identity))
    }

    /// The vault and identity a reconcile would act with now (no vault request; a
    /// ServiceAccount read when a namespace identity applies).
    pub async fn acting_scope(&self) -> Result<Scope, Failure> {
        let desired = validate_with_hosts(self.vk, &self.ctx.settings.vault_hosts)
            .map_err(Failure::InvalidSpec)?;
        let identity = self.identity(&desired.vault_url).await?;
        Ok(Scope {
            vault_url: desired.vault_url,
            identity: identity.map(|(_, identity)| identity),
        })
    }

    /// The identity to act with: `None` for the operator's own, else a namespace identity
    /// (its description for messages, and its credential) with a token at hand.
    async fn identity(&self, vault_url: &str) -> Result<Option<(String, VaultIdentity)>, Failure> {
        let named = self
            .vk
            .spec
            .identity
            .as_ref()
            .map(|i| i.service_account_name.as_str());
        let settings = &self.ctx.settings;
        let require = settings.require_namespace_identity;
        match identity::choose(
            named,
            settings.namespace_identity_service_account.as_deref(),
            require,
        ) {
            Choice::Operator => Ok(None),
            Choice::Required => Err(Failure::Identity(IdentityError::Required { default: None })),
            Choice::ServiceAccount(name) => {
                self.namespace_identity(&name, vault_url).await.map(Some)
            }
            // A namespace without the default ServiceAccount is one that names no identity.
            Choice::NamespaceDefault(name) => match self.namespace_identity(&name, vault_url).await
            {
                Err(Failure::Identity(IdentityError::ServiceAccountMissing { .. })) => {
                    match identity::without_default(require) {
                        Choice::Operator => Ok(None),
                        _ => Err(Failure::Identity(IdentityError::Required {
                            default: Some(name),
                        })),
                    }
                }
                other => other.map(Some),
            },
        }
    }

    /// ServiceAccount `name` of the VaultKey's namespace, resolved, with a token at hand.
    async fn namespace_identity(
        &self,
        name: &str,
        vault_url: &str,
    ) -> Result<(String, VaultIdentity), Failure> {
        let namespace = self.vk.namespace().unwrap_or_default();
        let identities = &self.ctx.identities;
        let resolved = identities
            .resolve(&namespace, name)
            .await
            .map_err(Failure::Identity)?;
        let credential = identities
            .credential(&resolved)
            .map_err(Failure::Identity)?;
        identities
            .token_for(&resolved, &credential, vault_url)
            .await
            .map_err(Failure::Identity)?;
        Ok((
            resolved.to_string(),
            VaultIdentity {
                key: format!(
                    "{}/{}/{}/{}",
                    resolved.namespace,
                    resolved.service_account,
                    resolved.tenant_id,
                    resolved.client_id
                ),
                credential,
            },
        ))
    }
}
