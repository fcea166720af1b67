//! How the operator authenticates to Key Vault: the credential it was configured with and,
//! per vault, whether the challenge's resource is checked and which token scope may be asked
//! for.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;

use crate::vault_hosts::known_endpoint;

/// How the operator authenticates to Key Vault.
#[derive(Clone)]
pub enum CredentialSource {
    /// Azure Workload Identity (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE).
    WorkloadIdentity,
    /// Managed identity of the node or pod; optionally a user-assigned client id.
    ManagedIdentity { client_id: Option<String> },
    /// A service principal with a client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: String,
    },
    /// The signed-in Azure CLI user (local development).
    AzureCli,
    /// A fixed bearer token, for Key Vault emulators only.
    EmulatorStaticToken(String),
}

pub fn credential(source: &CredentialSource) -> azure_core::Result<Arc<dyn TokenCredential>> {
    Ok(match source {
        CredentialSource::WorkloadIdentity => {
            azure_identity::WorkloadIdentityCredential::new(None)?
        }
        CredentialSource::ManagedIdentity { client_id } => {
            let options = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                ..Default::default()
            };
            azure_identity::ManagedIdentityCredential::new(Some(options))?
        }
        CredentialSource::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => azure_identity::ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            Secret::new(secret.clone()),
            None,
        )?,
        CredentialSource::AzureCli => azure_identity::AzureCliCredential::new(None)?,
        CredentialSource::EmulatorStaticToken(token) => Arc::new(StaticToken(token.clone())),
    })
}

/// A credential that always answers the same token; emulators accept any value.
#[derive(Debug)]
struct StaticToken(String);

#[async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            self.0.clone(),
            OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// How the SDK authenticates to one vault: whether it checks the challenge's resource against
/// the vault host, and, for a host of a known cloud, the one token scope it may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VaultAuth {
    pub(super) verify_challenge_resource: bool,
    pub(super) pinned_scope: Option<String>,
}

pub(super) fn vault_auth(vault_url: &str, verify_challenge_resource: bool) -> VaultAuth {
    match known_endpoint(vault_url) {
        Some((_, endpoint)) => VaultAuth {
            verify_challenge_resource: true,
            pinned_scope: Some(endpoint.token_scope()),
        },
        None => VaultAuth {
            verify_challenge_resource,
            pinned_scope: None,
        },
    }
}

/// A credential that answers only for one scope: the SDK takes the scope from the vault's 401
/// challenge, and its resource check only asks that the vault host ends with the scope's host,
/// so for a known cloud the operator also holds the scope to the one that cloud's service uses.
#[derive(Debug)]
pub(super) struct PinnedScope {
    pub(super) inner: Arc<dyn TokenCredential>,
    pub(super) scope: String,
}

#[async_trait]
impl TokenCredential for PinnedScope {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if scopes != [self.scope.as_str()] {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!(
                    "the vault's challenge asked for a token for {scopes:?}; this vault's service uses {}",
                    self.scope
                ),
            ));
        }
        self.inner.get_token(scopes, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cloud_hosts_always_check_the_challenge_and_pin_their_scope() {
        for (url, scope) in [
            (
                "https://my-vault.vault.azure.net",
                "https://vault.azure.net/.default",
            ),
            (
                "https://my-vault.vault.azure.cn",
                "https://vault.azure.cn/.default",
            ),
            (
                "https://my-vault.vault.usgovcloudapi.net",
                "https://vault.usgovcloudapi.net/.default",
            ),
            (
                "https://my-hsm.managedhsm.azure.net",
                "https://managedhsm.azure.net/.default",
            ),
            (
                "https://my-hsm.managedhsm.azure.cn",
                "https://managedhsm.azure.cn/.default",
            ),
            (
                "https://my-hsm.managedhsm.usgovcloudapi.net",
                "https://managedhsm.usgovcloudapi.net/.default",
            ),
        ] {
            // The emulator setting (verify off) does not reach a real cloud host.
            for setting in [true, false] {
                assert_eq!(
                    vault_auth(url, setting),
                    VaultAuth {
                        verify_challenge_resource: true,
                        pinned_scope: Some(scope.to_owned())
                    },
                    "{url}"
                );
            }
        }
        for setting in [true, false] {
            assert_eq!(
                vault_auth("https://127.0.0.1:8443", setting),
                VaultAuth {
                    verify_challenge_resource: setting,
                    pinned_scope: None
                }
            );
        }
    }

    #[tokio::test]
    async fn a_pinned_credential_answers_only_for_its_scope() {
        let pinned = PinnedScope {
            inner: Arc::new(StaticToken("t".into())),
            scope: "https://managedhsm.azure.net/.default".into(),
        };
        let token = pinned
            .get_token(&["https://managedhsm.azure.net/.default"], None)
            .await
            .unwrap();
        assert_eq!(token.token.secret(), "t");
        for other in [
            &["https://vault.azure.net/.default"][..],
            &["https://management.azure.com/.default"][..],
            &[][..],
        ] {
            let e = pinned.get_token(other, None).await.unwrap_err();
            assert!(e.to_string().contains("managedhsm.azure.net"), "{e}");
        }
    }
}
