//! Per-namespace workload identity: a VaultKey may act with the Azure identity of a
//! ServiceAccount of its own namespace instead of the operator's.
//!
//! The ServiceAccount carries the standard workload identity annotations
//! (`azure.workload.identity/client-id`, `azure.workload.identity/tenant-id`); the operator
//! asks the API server for a short-lived token of that ServiceAccount (TokenRequest, audience
//! `api://AzureADTokenExchange`) and exchanges it at Azure AD for an access token (the
//! client-assertion grant, azure_identity's `ClientAssertionCredential`). Credentials are kept
//! per identity, and azure_identity's cache renews a token five minutes before it expires.
//! Tokens never reach a log, an event or status.
//!
//! Trust model: a VaultKey names only a ServiceAccount *name*; the namespace is always the
//! VaultKey's own, so a team can act only with identities of its own namespace. Azure AD
//! decides (through the federated credential on the application) which ServiceAccount may act
//! as which client id, and Key Vault's role assignments decide what that client id may do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientMethodOptions, ClientOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use crate::vault_hosts::known_endpoint;

pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// The audience Azure AD expects on a federated ServiceAccount token.
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Lifetime asked for the ServiceAccount token (the API server's minimum is 10 minutes); it
/// is used once, for one exchange.
const ASSERTION_SECONDS: i64 = 600;
/// The token scope of Key Vault in the public cloud; also what emulators challenge for.
const DEFAULT_SCOPE: &str = "https://vault.azure.net/.default";

/// Whose identity a VaultKey acts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The operator's own identity.
    Operator,
    /// This ServiceAccount of the VaultKey's namespace, named by the VaultKey.
    ServiceAccount(String),
    /// The namespace default (`--namespace-identity-service-account`): this ServiceAccount of
    /// the VaultKey's namespace when it exists, else [`without_default`].
    NamespaceDefault(String),
    /// None named, and the operator may not act with its own (`--require-namespace-identity`).
    Required,
}

/// Pure: the identity a VaultKey acts with. `namespace_default` is the ServiceAccount name
/// every namespace may provide for VaultKeys that name none.
pub fn choose(
    service_account: Option<&str>,
    namespace_default: Option<&str>,
    require_namespace_identity: bool,
) -> Choice {
    match (service_account, namespace_default) {
        (Some(name), _) => Choice::ServiceAccount(name.to_owned()),
        (None, Some(name)) => Choice::NamespaceDefault(name.to_owned()),
        (None, None) => without_default(require_namespace_identity),
    }
}

/// Pure: the identity of a VaultKey that names none, in a namespace without the default
/// ServiceAccount: the operator's own, unless it may not act for namespaces.
pub fn without_default(require_namespace_identity: bool) -> Choice {
    if require_namespace_identity {
        Choice::Required
    } else {
        Choice::Operator
    }
}

fn required_message(default: &Option<String>) -> String {
    let or_default = match default {
        Some(name) => format!(
            ", or create ServiceAccount {name} in this namespace (the operator's namespace default) with those annotations"
        ),
        None => String::new(),
    };
    format!(
        "the operator requires a namespace identity (--require-namespace-identity) and this VaultKey has none: set spec.identity.serviceAccountName to a ServiceAccount of this namespace that carries the {CLIENT_ID_ANNOTATION} and {TENANT_ID_ANNOTATION} annotations{or_default}"
    )
}

/// A ServiceAccount's Azure identity, as its annotations name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resolved {
    pub namespace: String,
    pub service_account: String,
    pub client_id: String,
    pub tenant_id: String,
}

impl std::fmt::Display for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServiceAccount {}/{} (client id {})",
            self.namespace, self.service_account, self.client_id
        )
    }
}

/// Why a namespace identity could not be used; each is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "ServiceAccount {namespace}/{name} (spec.identity.serviceAccountName) does not exist: create it with the {CLIENT_ID_ANNOTATION} and {TENANT_ID_ANNOTATION} annotations of the Azure identity this VaultKey should act with"
    )]
    ServiceAccountMissing { namespace: String, name: String },
    #[error(
        "ServiceAccount {namespace}/{name} has no {annotation} annotation: annotate it with the {what} of the Azure identity this VaultKey should act with"
    )]
    AnnotationMissing {
        namespace: String,
        name: String,
        annotation: &'static str,
        what: &'static str,
    },
    #[error("{}", required_message(default))]
    Required {
        /// The namespace default ServiceAccount, when the operator has one.
        default: Option<String>,
    },
    #[error(
        "Azure AD refused the token exchange for {identity} towards {vault}: {message}; add a federated credential for subject system:serviceaccount:{namespace}:{name} (audience {EXCHANGE_AUDIENCE}, the cluster's service-account issuer) to that application, and check the client and tenant id annotations"
    )]
    ExchangeRefused {
        identity: String,
        vault: String,
        namespace: String,
        name: String,
        message: String,
    },
    #[error("no token could be had for {identity} towards {vault}: {message}")]
    Unavailable {
        identity: String,
        vault: String,
        message: String,
    },
    #[error("cannot read ServiceAccount {namespace}/{name}: {message}")]
    Unreadable {
        namespace: String,
        name: String,
        message: String,
    },
}

impl IdentityError {
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::ServiceAccountMissing { .. } => "IdentityServiceAccountMissing",
            IdentityError::AnnotationMissing { .. } => "IdentityAnnotationMissing",
            IdentityError::Required { .. } => "IdentityRequired",
            IdentityError::ExchangeRefused { .. } => "IdentityExchangeRefused",
            IdentityError::Unavailable { .. } | IdentityError::Unreadable { .. } => {
                "IdentityUnavailable"
            }
        }
    }

    /// Only a person can fix these (the ServiceAccount, the federated credential); the rest
    /// are retried with backoff.
    pub fn needs_a_person(&self) -> bool {
        !matches!(
            self,
            IdentityError::Unavailable { .. } | IdentityError::Unreadable { .. }
        )
    }
}

/// Pure: the identity a ServiceAccount names, or what is missing.
pub fn resolve(
    namespace: &str,
    name: &str,
    service_account: Option<&ServiceAccount>,
) -> Result<Resolved, IdentityError> {
    let Some(service_account) = service_account else {
        return Err(IdentityError::ServiceAccountMissing {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    };
    let annotation = |key: &'static str, what: &'static str| {
        service_account
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| IdentityError::AnnotationMissing {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                annotation: key,
                what,
            })
    };
    Ok(Resolved {
        namespace: namespace.to_owned(),
        service_account: name.to_owned(),
        client_id: annotation(CLIENT_ID_ANNOTATION, "client id")?,
        tenant_id: annotation(TENANT_ID_ANNOTATION, "tenant id")?,
    })
}

/// The token scope a vault's service uses.
pub fn scope_for(vault_url: &str) -> String {
    known_endpoint(vault_url)
        .map(|(_, endpoint)| endpoint.token_scope())
        .unwrap_or_else(|| DEFAULT_SCOPE.to_owned())
}

/// The assertion a `ClientAssertionCredential` presents: a fresh ServiceAccount token from
/// the TokenRequest API each time Azure AD is asked (the token is short-lived and single-use).
#[derive(Clone)]
struct ServiceAccountToken {
    api: Api<ServiceAccount>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for ServiceAccountToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAccountToken({}/{})", self.namespace, self.name)
    }
}

#[async_trait]
impl ClientAssertion for ServiceAccountToken {
    async fn secret(
        &self,
        _options: Option<ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![EXCHANGE_AUDIENCE.to_owned()],
                expiration_seconds: Some(ASSERTION_SECONDS),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let answer = self
            .api
            .create_token_request(&self.name, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    format!(
                        "TokenRequest for ServiceAccount {}/{}: {e}",
                        self.namespace, self.name
                    ),
                )
            })?;
        answer.status.map(|s| s.token).ok_or_else(|| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "the TokenRequest answer carries no token",
            )
        })
    }
}

/// The credentials of namespace identities, one per identity, kept for the process's life (a
/// changed annotation is another identity).
pub struct NamespaceIdentities {
    client: kube::Client,
    transport: Option<Transport>,
    authority_host: Option<String>,
    credentials: Mutex<HashMap<Resolved, Arc<dyn TokenCredential>>>,
}

impl NamespaceIdentities {
    /// `authority_host`: Azure AD's host; `None` takes azure_identity's default (the
    /// `AZURE_AUTHORITY_HOST` environment variable the workload identity webhook sets, else
    /// the public cloud). `transport`: the HTTPS client (an emulator's CA).
    pub fn new(
        client: kube::Client,
        transport: Option<Transport>,
        authority_host: Option<String>,
    ) -> Self {
        NamespaceIdentities {
            client,
            transport,
            authority_host,
            credentials: Mutex::default(),
        }
    }

    /// Reads the ServiceAccount and resolves the identity it names.
    pub async fn resolve(&self, namespace: &str, name: &str) -> Result<Resolved, IdentityError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let service_account = api
            .get_opt(name)
            .await
            .map_err(|e| IdentityError::Unreadable {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message: e.to_string(),
            })?;
        resolve(namespace, name, service_account.as_ref())
    }

    /// The identity's credential, made once.
    pub fn credential(
        &self,
        identity: &Resolved,
    ) -> Result<Arc<dyn TokenCredential>, IdentityError> {
        let mut credentials = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(credential) = credentials.get(identity) {
            return Ok(credential.clone());
        }
        let mut client_options = ClientOptions {
            transport: self.transport.clone(),
            ..Default::default()
        };
        if let Some(host) = &self.authority_host {
            let mut cloud = CustomConfiguration::default();
            cloud.authority_host = host.clone();
            client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
        }
        let assertion = ServiceAccountToken {
            api: Api::namespaced(self.client.clone(), &identity.namespace),
            namespace: identity.namespace.clone(),
            name: identity.service_account.clone(),
        };
        let credential: Arc<dyn TokenCredential> = ClientAssertionCredential::new(
            identity.tenant_id.clone(),
            identity.client_id.clone(),
            assertion,
            Some(ClientAssertionCredentialOptions { client_options }),
        )
        .map_err(|e| IdentityError::AnnotationMissing {
            namespace: identity.namespace.clone(),
            name: identity.service_account.clone(),
            annotation: if e.to_string().contains("tenant") {
                TENANT_ID_ANNOTATION
            } else {
                CLIENT_ID_ANNOTATION
            },
            what: "valid value",
        })?;
        credentials.insert(identity.clone(), credential.clone());
        Ok(credential)
    }

    /// Has a token ready for the vault (from the cache while it is fresh), so a refused
    /// exchange is reported as such before any vault request.
    pub async fn token_for(
        &self,
        identity: &Resolved,
        credential: &Arc<dyn TokenCredential>,
        vault_url: &str,
    ) -> Result<(), IdentityError> {
        let scope = scope_for(vault_url);
        match credential
            .get_token(&[scope.as_str()], None::<TokenRequestOptions<'_>>)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(exchange_error(identity, vault_url, &e)),
        }
    }
}

/// Azure AD answered (an HTTP status): refused, a person must act. Anything else (the API
/// server, the network): unavailable, retried.
fn exchange_error(identity: &Resolved, vault_url: &str, e: &azure_core::Error) -> IdentityError {
    let answered = matches!(
        e.kind(),
        azure_core::error::ErrorKind::HttpResponse { status, .. } if status.is_client_error()
    ) || e.to_string().contains("AADSTS");
    // Azure AD puts a trace id, a correlation id and a timestamp in every answer: masked, so an
    // unchanged refusal writes nothing new (the same rule as the vault's messages).
    let message: String = crate::keyvault::message::stable_message(&e.to_string())
        .chars()
        .take(400)
        .collect();
    if answered {
        IdentityError::ExchangeRefused {
            identity: identity.to_string(),
            vault: vault_url.to_owned(),
            namespace: identity.namespace.clone(),
            name: identity.service_account.clone(),
            message,
        }
    } else {
        IdentityError::Unavailable {
            identity: identity.to_string(),
            vault: vault_url.to_owned(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_account(annotations: &[(&str, &str)]) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some("kv".into());
        sa.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        sa
    }

    #[test]
    fn an_unchanged_refusal_reads_the_same_on_every_attempt() {
        let identity = Resolved {
            namespace: "team-a".into(),
            service_account: "kv".into(),
            client_id: "00000000-0000-0000-0000-00000000000a".into(),
            tenant_id: "00000000-0000-0000-0000-00000000000b".into(),
        };
        let refusal = |trace: &str, at: &str| {
            let e = azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!(
                    "AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:team-a:kv'.\r\nTrace ID: {trace}\r\nCorrelation ID: {trace}\r\nTimestamp: {at}"
                ),
            );
            exchange_error(&identity, "https://v.vault.azure.net", &e).to_string()
        };
        let first = refusal(
            "0c5c8a0e-1d2b-4b7a-9f3e-2a1b0c9d8e7f",
            "2026-12-03 20:11:02Z",
        );
        let second = refusal(
            "11111111-2222-4333-8444-555555555555",
            "2026-12-03 20:11:09Z",
        );
        assert_eq!(first, second);
        assert!(first.contains("AADSTS700213"), "the cause stays: {first}");
        assert!(matches!(
            exchange_error(
                &identity,
                "https://v",
                &azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "AADSTS1"
                )
            ),
            IdentityError::ExchangeRefused { .. }
        ));
    }

    #[test]
    fn the_identity_is_the_named_then_the_namespace_default_then_the_operators_unless_required() {
        assert_eq!(choose(None, None, false), Choice::Operator);
        assert_eq!(choose(None, None, true), Choice::Required);
        for require in [false, true] {
            for default in [None, Some("vaultkeys")] {
                assert_eq!(
                    choose(Some("kv"), default, require),
                    Choice::ServiceAccount("kv".into())
                );
            }
            assert_eq!(
                choose(None, Some("vaultkeys"), require),
                Choice::NamespaceDefault("vaultkeys".into())
            );
        }
        assert_eq!(without_default(false), Choice::Operator);
        assert_eq!(without_default(true), Choice::Required);
        let plain = IdentityError::Required { default: None }.to_string();
        assert!(
            plain.contains("spec.identity.serviceAccountName")
                && !plain.contains("namespace default")
        );
        let with_default = IdentityError::Required {
            default: Some("vaultkeys".into()),
        }
        .to_string();
        assert!(
            with_default.contains("create ServiceAccount vaultkeys"),
            "{with_default}"
        );
    }

    #[test]
    fn a_service_account_resolves_only_with_both_annotations() {
        let both = service_account(&[(CLIENT_ID_ANNOTATION, "c1"), (TENANT_ID_ANNOTATION, "t1")]);
        let resolved = resolve("team-a", "kv", Some(&both)).unwrap();
        assert_eq!(resolved.client_id, "c1");
        assert_eq!(resolved.tenant_id, "t1");
        assert_eq!(
            resolved.to_string(),
            "ServiceAccount team-a/kv (client id c1)"
        );

        let missing = resolve("team-a", "kv", None).unwrap_err();
        assert_eq!(missing.reason(), "IdentityServiceAccountMissing");
        assert!(missing.to_string().contains("team-a/kv"));

        for (annotations, named) in [
            (vec![(TENANT_ID_ANNOTATION, "t1")], CLIENT_ID_ANNOTATION),
            (vec![(CLIENT_ID_ANNOTATION, "c1")], TENANT_ID_ANNOTATION),
            (
                vec![(CLIENT_ID_ANNOTATION, " "), (TENANT_ID_ANNOTATION, "t1")],
                CLIENT_ID_ANNOTATION,
            ),
        ] {
            let e = resolve("team-a", "kv", Some(&service_account(&annotations))).unwrap_err();
            assert_eq!(e.reason(), "IdentityAnnotationMissing");
            assert!(e.to_string().contains(named), "{e}");
            assert!(e.needs_a_person());
        }
    }

    #[test]
    fn each_cloud_gets_its_own_scope() {
        assert_eq!(
            scope_for("https://v.vault.azure.net"),
            "https://vault.azure.net/.default"
        );
        assert_eq!(
            scope_for("https://h.managedhsm.azure.cn"),
            "https://managedhsm.azure.cn/.default"
        );
        assert_eq!(scope_for("https://127.0.0.1:8443"), DEFAULT_SCOPE);
    }

    #[test]
    fn an_answer_of_azure_ad_is_a_refusal_anything_else_is_retried() {
        let identity = Resolved {
            namespace: "team-a".into(),
            service_account: "kv".into(),
            client_id: "c1".into(),
            tenant_id: "t1".into(),
        };
        let refused = azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            "ClientAssertionCredential authentication failed. AADSTS70021: No matching federated identity record found",
        );
        let e = exchange_error(&identity, "https://v.vault.azure.net", &refused);
        assert_eq!(e.reason(), "IdentityExchangeRefused");
        let text = e.to_string();
        assert!(text.contains("client id c1") && text.contains("https://v.vault.azure.net"));
        assert!(text.contains("system:serviceaccount:team-a:kv"), "{text}");
        let network =
            azure_core::Error::with_message(azure_core::error::ErrorKind::Io, "connection refused");
        let e = exchange_error(&identity, "https://v.vault.azure.net", &network);
        assert_eq!(e.reason(), "IdentityUnavailable");
        assert!(!e.needs_a_person());
    }
}
