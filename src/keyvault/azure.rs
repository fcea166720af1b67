//! The production [`KeyVault`] over the official Azure SDK (`azure_security_keyvault_keys`).
//!
//! Every call goes through [`AzureVault::call`]: the vault's request budget, a timeout, a
//! metric, and error classification. The SDK's own retry policy is off: a retried create can
//! make a second version, so retries are decided by the reconciler after re-reading the vault.

mod auth;
mod failure;
mod model;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Pager, RequestContent, RetryOptions, Transport};
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, ImportKeyParameters, JsonWebKey, KeyClientGetKeyOptions,
    KeyClientUpdateKeyPropertiesOptions, KeyType as SdkKeyType, ListKeyPropertiesResult,
    UpdateKeyPropertiesParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use futures::TryStreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::budget::{Budget, Limits, RequestClass};
use super::{
    CreateKey, DeletedKey, ImportKey, KeyListing, KeyProperties, KeySummary, KeyVault, KeyVersion,
    ObservedKey, ObservedPolicy, Operation, VaultError, VaultErrorKind, VaultIdentity,
    VaultProvider, VaultResult, tags_digest,
};
use crate::key_material::JwkKty;
use crate::telemetry::{Metrics, VaultLabels};
use crate::validate::{DesiredRotationPolicy, InvalidSpec};
use crate::vault_hosts::VaultHosts;
pub use auth::{CredentialSource, credential};
use auth::{PinnedScope, vault_auth};
use failure::classify;
use model::{
    RawPolicy, hash_tags, listed_key_name, observed_key, sdk_attributes, sdk_curve, sdk_key_type,
    sdk_ops, sdk_policy, sdk_release_policy, split_kid, to_chrono,
};

/// Client settings shared by every vault.
#[derive(Clone)]
pub struct ClientSettings {
    pub request_timeout: Duration,
    /// Extra root certificates (PEM), for emulators with their own CA.
    pub extra_root_pem: Option<Vec<u8>>,
    /// Key Vault's challenge names the resource; checking it against the vault's domain stops
    /// a token leaking to a host posing as a vault. Only emulators turn it off, and only for
    /// hosts outside the known clouds: a known cloud's host is always checked.
    pub verify_challenge_resource: bool,
    /// Vault hosts allowed besides the known clouds' endpoints; no client (and no token) is
    /// made for any other host.
    pub vault_hosts: VaultHosts,
    pub limits: Limits,
}

impl AzureVaultProvider {
    /// Whether the operator may use the vault at `vault_url`: a known cloud's Key Vault or
    /// Managed HSM endpoint, or a host of `--allowed-vault-hosts`.
    pub fn check_vault_url(&self, vault_url: &str) -> Result<(), InvalidSpec> {
        self.settings.vault_hosts.check(vault_url)
    }
}

pub struct AzureVaultProvider {
    credential: Arc<dyn TokenCredential>,
    settings: ClientSettings,
    transport: Option<Transport>,
    metrics: Arc<Metrics>,
    /// Clients per (vault, identity key; empty for the operator's own identity).
    vaults: Mutex<HashMap<(String, String), Arc<AzureVault>>>,
    /// One request budget per vault, whichever identity sends the request.
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
}

impl AzureVaultProvider {
    pub fn new(
        credential: Arc<dyn TokenCredential>,
        settings: ClientSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let transport = match &settings.extra_root_pem {
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("reading the extra CA certificates: {e}"))?;
                let client = reqwest::Client::builder()
                    .tls_certs_merge(certs)
                    .build()
                    .map_err(|e| format!("building the HTTPS client: {e}"))?;
                Some(Transport::new(Arc::new(client)))
            }
            None => None,
        };
        Ok(AzureVaultProvider {
            credential,
            settings,
            transport,
            metrics,
            vaults: Mutex::default(),
            budgets: Mutex::default(),
        })
    }
}

impl VaultProvider for AzureVaultProvider {
    fn vault(&self, vault_url: &str) -> Result<Arc<dyn KeyVault>, VaultError> {
        self.client_for(vault_url, "", &self.credential)
    }

    fn vault_as(
        &self,
        vault_url: &str,
        identity: &VaultIdentity,
    ) -> Result<Arc<dyn KeyVault>, VaultError> {
        // A namespace identity never shares a client (and its token cache) with the
        // operator's: the empty key is the operator's own.
        let key = format!("ns:{}", identity.key);
        self.client_for(vault_url, &key, &identity.credential)
    }
}

impl AzureVaultProvider {
    /// The HTTPS transport (with an emulator's extra CA), for other Azure clients.
    pub fn transport(&self) -> Option<Transport> {
        self.transport.clone()
    }

    fn client_for(
        &self,
        vault_url: &str,
        identity_key: &str,
        credential: &Arc<dyn TokenCredential>,
    ) -> Result<Arc<dyn KeyVault>, VaultError> {
        let mut vaults = self.vaults.lock().unwrap_or_else(|p| p.into_inner());
        let cache_key = (vault_url.to_owned(), identity_key.to_owned());
        if let Some(vault) = vaults.get(&cache_key) {
            return Ok(vault.clone());
        }
        self.settings.vault_hosts.check(vault_url).map_err(|e| {
            VaultError::new(VaultErrorKind::Rejected, Operation::GetKey, e.to_string())
        })?;
        let auth = vault_auth(vault_url, self.settings.verify_challenge_resource);
        let credential: Arc<dyn TokenCredential> = match auth.pinned_scope {
            Some(scope) => Arc::new(PinnedScope {
                inner: credential.clone(),
                scope,
            }),
            None => credential.clone(),
        };
        let options = KeyClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions::none(),
                transport: self.transport.clone(),
                ..Default::default()
            },
            verify_challenge_resource: Some(auth.verify_challenge_resource),
            ..Default::default()
        };
        let client = KeyClient::new(vault_url, credential, Some(options)).map_err(|e| {
            VaultError::new(
                VaultErrorKind::Other,
                Operation::GetKey,
                format!("creating a client for {vault_url}: {e}"),
            )
        })?;
        let vault = Arc::new(AzureVault {
            client,
            vault_url: vault_url.to_owned(),
            budget: self
                .budgets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(vault_url.to_owned())
                .or_insert_with(|| Arc::new(Budget::new(self.settings.limits)))
                .clone(),
            timeout: self.settings.request_timeout,
            metrics: self.metrics.clone(),
        });
        vaults.insert(cache_key, vault.clone());
        Ok(vault)
    }
}

pub struct AzureVault {
    client: KeyClient,
    vault_url: String,
    budget: Arc<Budget>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl AzureVault {
    /// Runs one SDK call under the budget, a timeout and a metric, classifying its error.
    async fn call<T, F>(
        &self,
        operation: Operation,
        class: RequestClass,
        request: F,
    ) -> VaultResult<T>
    where
        F: Future<Output = azure_core::Result<T>>,
    {
        // Held until the answer is in: the slot's 10 s start then (see `budget`).
        let _permit = self.budget.acquire(class).await.map_err(|retry_in| {
            self.count(&self.metrics.vault_paced);
            VaultError::new(
                VaultErrorKind::Paced { retry_in },
                operation,
                format!(
                    "is waiting for a free slot in the operator's {} budget for this vault (kept under Key Vault's throttling limits); nothing was sent yet",
                    class.describe()
                ),
            )
        })?;
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, request).await;
        let elapsed = start.elapsed();
        match result {
            Err(_) => {
                self.metrics
                    .vault_request(operation.as_str(), "timeout", elapsed);
                Err(VaultError::new(
                    VaultErrorKind::Timeout,
                    operation,
                    format!(
                        "no answer from {} within {:?}, so the outcome is unknown; if this persists, check network policy and firewall rules that drop (not refuse) traffic to the vault, and the vault's health",
                        self.vault_url, self.timeout
                    ),
                ))
            }
            Ok(Ok(value)) => {
                self.metrics
                    .vault_request(operation.as_str(), "200", elapsed);
                Ok(value)
            }
            Ok(Err(err)) => {
                let error = classify(operation, &self.vault_url, &err);
                let status = error
                    .status
                    .map_or_else(|| "transport".to_owned(), |s| s.to_string());
                self.metrics
                    .vault_request(operation.as_str(), &status, elapsed);
                if let VaultErrorKind::Throttled { retry_after } = error.kind {
                    self.count(&self.metrics.vault_throttled);
                    self.budget.pause(retry_after).await;
                }
                Err(error)
            }
        }
    }

    fn count(&self, per_vault: &Family<VaultLabels, Counter>) {
        per_vault
            .get_or_create(&VaultLabels {
                vault: self.vault_url.clone(),
            })
            .inc();
    }

    /// Reads that answer 404 become `None`.
    async fn read<T, F>(&self, operation: Operation, request: F) -> VaultResult<Option<T>>
    where
        F: Future<Output = azure_core::Result<T>>,
    {
        match self.call(operation, RequestClass::Other, request).await {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.kind == VaultErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Walks a key or version list (nothing when the first page answers 404), handing each
    /// page to `each`; each page is one request under the budget, a timeout and the metric
    /// (`keyvault_requests_total` counts pages, as the vault does). The last page is the one
    /// without a `nextLink`. Returns the pages walked.
    async fn pages(
        &self,
        operation: Operation,
        start: impl FnOnce() -> azure_core::Result<Pager<ListKeyPropertiesResult>>,
        mut each: impl FnMut(ListKeyPropertiesResult),
    ) -> VaultResult<usize> {
        let mut iter = start()
            .map_err(|e| classify(operation, &self.vault_url, &e))?
            .into_pages();
        let mut walked = 0;
        loop {
            let page = self
                .read(operation, async {
                    match iter.try_next().await? {
                        Some(page) => page.into_model().map(Some),
                        None => Ok(None),
                    }
                })
                .await?;
            let Some(Some(page)) = page else { break };
            walked += 1;
            let more = page.next_link.as_deref().is_some_and(|l| !l.is_empty());
            each(page);
            if !more {
                break;
            }
        }
        Ok(walked)
    }

    /// The latest version, or the given one.
    async fn get_key_at(
        &self,
        name: &str,
        version: Option<String>,
    ) -> VaultResult<Option<ObservedKey>> {
        let options = KeyClientGetKeyOptions {
            key_version: version,
            ..Default::default()
        };
        let key = self
            .read(Operation::GetKey, async {
                model(self.client.get_key(name, Some(options)).await?)
            })
            .await?;
        key.map(|k| observed_key(Operation::GetKey, &k)).transpose()
    }
}

/// Which create budget a new version counts against.
fn create_class(hsm: bool) -> RequestClass {
    if hsm {
        RequestClass::HsmCreate
    } else {
        RequestClass::SoftwareCreate
    }
}

fn model<T: serde::de::DeserializeOwned>(
    response: azure_core::http::Response<T>,
) -> azure_core::Result<T> {
    response.into_model()
}

#[async_trait]
impl KeyVault for AzureVault {
    async fn get_key(&self, name: &str) -> VaultResult<Option<ObservedKey>> {
        self.get_key_at(name, None).await
    }

    async fn get_key_version(&self, name: &str, version: &str) -> VaultResult<Option<ObservedKey>> {
        self.get_key_at(name, Some(version.to_owned())).await
    }

    async fn list_keys(&self) -> VaultResult<KeyListing> {
        let mut listing = KeyListing::default();
        // Page by page into summaries: 10,000 keys' full list items are tens of megabytes.
        listing.pages = self
            .pages(
                Operation::ListKeys,
                || self.client.list_key_properties(None),
                |page| {
                    for item in page.value {
                        let Some(name) = item.kid.as_deref().and_then(listed_key_name) else {
                            continue;
                        };
                        let attrs = item.attributes.unwrap_or_default();
                        let summary = KeySummary {
                            enabled: attrs.enabled.unwrap_or(true),
                            created: to_chrono(attrs.created),
                            updated: to_chrono(attrs.updated),
                            not_before: to_chrono(attrs.not_before),
                            expires_on: to_chrono(attrs.expires),
                            tags: tags_digest(item.tags.iter().flatten()),
                        };
                        listing.keys.insert(name, summary);
                    }
                },
            )
            .await?;
        Ok(listing)
    }

    async fn list_versions(&self, name: &str) -> VaultResult<Vec<KeyVersion>> {
        let mut versions = Vec::new();
        self.pages(
            Operation::ListVersions,
            || self.client.list_key_properties_versions(name, None),
            |page| versions.extend(page.value),
        )
        .await?;
        let mut out: Vec<KeyVersion> = versions
            .into_iter()
            .filter_map(|item| {
                let (_, version) = split_kid(item.kid.as_deref()?)?;
                let attrs = item.attributes.unwrap_or_default();
                Some(KeyVersion {
                    version,
                    enabled: attrs.enabled.unwrap_or(true),
                    created: to_chrono(attrs.created),
                    expires_on: to_chrono(attrs.expires),
                    not_before: to_chrono(attrs.not_before),
                })
            })
            .collect();
        // Key Vault does not promise an order; newest first is what status shows.
        out.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| a.version.cmp(&b.version))
        });
        Ok(out)
    }

    async fn get_rotation_policy(&self, name: &str) -> VaultResult<Option<ObservedPolicy>> {
        // Read the raw body: some emulators answer an unset policy with an empty 200.
        let body = self
            .read(Operation::GetRotationPolicy, async {
                let response = self.client.get_key_rotation_policy(name, None).await?;
                response.into_body().into_string()
            })
            .await?;
        let Some(body) = body else { return Ok(None) };
        if body.trim().is_empty() {
            return Ok(Some(ObservedPolicy::default()));
        }
        let policy: RawPolicy = serde_json::from_str(&body).map_err(|e| {
            VaultError::new(
                VaultErrorKind::Other,
                Operation::GetRotationPolicy,
                format!("unreadable rotation policy: {e}"),
            )
        })?;
        Ok(Some(policy.into()))
    }

    async fn get_deleted_key(&self, name: &str) -> VaultResult<Option<DeletedKey>> {
        Ok(self
            .read(Operation::GetDeletedKey, async {
                model(self.client.get_deleted_key(name, None).await?)
            })
            .await?
            .map(|deleted| DeletedKey {
                tags: deleted.tags.unwrap_or_default().into_iter().collect(),
            }))
    }

    async fn create_key(&self, name: &str, key: &CreateKey) -> VaultResult<ObservedKey> {
        let params = CreateKeyParameters {
            kty: Some(sdk_key_type(key.key_type)),
            key_size: key.size,
            curve: key.curve.map(|c| sdk_curve(c.as_str())),
            public_exponent: key.public_exponent,
            key_ops: key.properties.key_ops.as_ref().map(sdk_ops),
            key_attributes: Some(sdk_attributes(&key.properties)),
            tags: key.properties.tags.as_ref().map(hash_tags),
            release_policy: key
                .properties
                .release_policy
                .as_ref()
                .map(sdk_release_policy),
        };
        let body: RequestContent<_> = params
            .try_into()
            .map_err(|e| encoding_error(Operation::CreateKey, e))?;
        let created = self
            .call(
                Operation::CreateKey,
                create_class(key.key_type.is_hsm()),
                async { model(self.client.create_key(name, body, None).await?) },
            )
            .await?;
        observed_key(Operation::CreateKey, &created)
    }

    async fn import_key(&self, name: &str, key: &ImportKey<'_>) -> VaultResult<ObservedKey> {
        let jwk = key.material.jwk();
        let bytes = |b: &Option<_>| b.as_ref().map(|v: &zeroize::Zeroizing<Vec<u8>>| v.to_vec());
        let web_key = JsonWebKey {
            kty: Some(match (jwk.kty, key.hsm) {
                (JwkKty::Rsa, false) => SdkKeyType::Rsa,
                (JwkKty::Rsa, true) => SdkKeyType::RsaHsm,
                (JwkKty::Ec, false) => SdkKeyType::Ec,
                (JwkKty::Ec, true) => SdkKeyType::EcHsm,
            }),
            crv: jwk.crv.map(|c| sdk_curve(c.as_str())),
            n: jwk.n.clone(),
            e: jwk.e.clone(),
            d: bytes(&jwk.d),
            p: bytes(&jwk.p),
            q: bytes(&jwk.q),
            dp: bytes(&jwk.dp),
            dq: bytes(&jwk.dq),
            qi: bytes(&jwk.qi),
            x: jwk.x.clone(),
            y: jwk.y.clone(),
            key_ops: key
                .properties
                .key_ops
                .as_ref()
                .map(|ops| ops.iter().map(|op| op.as_str().to_owned()).collect()),
            ..Default::default()
        };
        let params = ImportKeyParameters {
            key: Some(web_key),
            hsm: key.hsm.then_some(true),
            key_attributes: Some(sdk_attributes(&key.properties)),
            tags: key.properties.tags.as_ref().map(hash_tags),
            release_policy: key
                .properties
                .release_policy
                .as_ref()
                .map(sdk_release_policy),
        };
        let body: RequestContent<_> = params
            .try_into()
            .map_err(|e| encoding_error(Operation::ImportKey, e))?;
        let imported = self
            .call(Operation::ImportKey, create_class(key.hsm), async {
                model(self.client.import_key(name, body, None).await?)
            })
            .await?;
        observed_key(Operation::ImportKey, &imported)
    }

    async fn update_key(
        &self,
        name: &str,
        version: &str,
        properties: &KeyProperties,
    ) -> VaultResult<ObservedKey> {
        let params = UpdateKeyPropertiesParameters {
            key_ops: properties.key_ops.as_ref().map(sdk_ops),
            key_attributes: Some(sdk_attributes(properties)),
            tags: properties.tags.as_ref().map(hash_tags),
            release_policy: None,
        };
        let body: RequestContent<_> = params
            .try_into()
            .map_err(|e| encoding_error(Operation::UpdateKey, e))?;
        // Always name the version: PATCH on a versionless URL is not routed by every
        // implementation, and naming it makes the write hit exactly the version we read.
        let options = KeyClientUpdateKeyPropertiesOptions {
            key_version: Some(version.to_owned()),
            ..Default::default()
        };
        let updated = self
            .call(Operation::UpdateKey, RequestClass::Other, async {
                model(
                    self.client
                        .update_key_properties(name, body, Some(options))
                        .await?,
                )
            })
            .await?;
        observed_key(Operation::UpdateKey, &updated)
    }

    async fn set_rotation_policy(
        &self,
        name: &str,
        policy: &DesiredRotationPolicy,
    ) -> VaultResult<ObservedPolicy> {
        let body: RequestContent<_> = sdk_policy(policy)
            .try_into()
            .map_err(|e| encoding_error(Operation::SetRotationPolicy, e))?;
        let response = self
            .call(Operation::SetRotationPolicy, RequestClass::Other, async {
                let response = self
                    .client
                    .update_key_rotation_policy(name, body, None)
                    .await?;
                response.into_body().into_string()
            })
            .await?;
        let policy: RawPolicy = serde_json::from_str(&response).map_err(|e| {
            VaultError::new(
                VaultErrorKind::Other,
                Operation::SetRotationPolicy,
                format!("unreadable rotation policy: {e}"),
            )
        })?;
        Ok(policy.into())
    }

    async fn rotate_key(&self, name: &str, hsm: bool) -> VaultResult<ObservedKey> {
        // A rotation creates a version; it counts against the create budget of its key type.
        let rotated = self
            .call(Operation::RotateKey, create_class(hsm), async {
                model(self.client.rotate_key(name, None).await?)
            })
            .await?;
        observed_key(Operation::RotateKey, &rotated)
    }

    async fn delete_key(&self, name: &str) -> VaultResult<()> {
        self.read(Operation::DeleteKey, async {
            model(self.client.delete_key(name, None).await?)
        })
        .await
        .map(|_| ())
    }

    async fn recover_deleted_key(&self, name: &str) -> VaultResult<()> {
        self.read(Operation::RecoverDeletedKey, async {
            model(self.client.recover_deleted_key(name, None).await?)
        })
        .await
        .map(|_| ())
    }

    async fn purge_deleted_key(&self, name: &str) -> VaultResult<()> {
        self.read(Operation::PurgeDeletedKey, async {
            self.client.purge_deleted_key(name, None).await?;
            Ok(())
        })
        .await
        .map(|_| ())
    }
}

fn encoding_error(operation: Operation, err: azure_core::Error) -> VaultError {
    VaultError::new(
        VaultErrorKind::Other,
        operation,
        format!("encoding the request: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures produced by the operator's own client (the provider `main` builds, with the
    /// emulator credential) against loopback servers: what an operator would see.
    mod real_failures {
        use std::net::SocketAddr;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, TcpStream};
        use tokio_rustls::TlsAcceptor;
        use tokio_rustls::rustls::ServerConfig;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

        use super::*;

        fn vault(
            url: &str,
            timeout: Duration,
            extra_root_pem: Option<Vec<u8>>,
        ) -> Arc<dyn KeyVault> {
            let settings = ClientSettings {
                request_timeout: timeout,
                extra_root_pem,
                verify_challenge_resource: false,
                vault_hosts: VaultHosts::parse(&["127.0.0.1", "localhost"], false).unwrap(),
                limits: super::super::super::budget::Limits::default(),
            };
            let credential =
                credential(&CredentialSource::EmulatorStaticToken("token".into())).unwrap();
            AzureVaultProvider::new(credential, settings, Arc::new(Metrics::new()))
                .unwrap()
                .vault(url)
                .unwrap()
        }

        /// Two attempts of the same read: the failure must read the same both times.
        async fn fail_twice(vault: &dyn KeyVault) -> VaultError {
            let first = vault.get_key("k").await.expect_err("must fail");
            let second = vault.get_key("k").await.expect_err("must fail");
            assert_eq!(
                first.to_string(),
                second.to_string(),
                "same failure, same message"
            );
            assert_eq!(first.kind, second.kind);
            first
        }

        async fn listener() -> (TcpListener, SocketAddr) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            (listener, addr)
        }

        /// Reads one request's head (the reads here send no body).
        async fn read_head<S: AsyncReadExt + Unpin>(stream: &mut S) {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        }

        /// A CA and a server configuration for a leaf certificate naming `names`, signed by it.
        fn ca_and_server(names: &[&str]) -> (Vec<u8>, ServerConfig) {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_cert = ca_params.self_signed(&ca_key).unwrap();
            let issuer = Issuer::new(ca_params, ca_key);
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (
                ca_cert.pem().into_bytes(),
                server_config(cert.der().clone(), &key),
            )
        }

        /// An HTTPS server (its CA returned) answering request `n` (from 0) with `answer(n)`
        /// and closing: the operator refuses to send a token over plain HTTP.
        async fn https_server(
            answer: impl Fn(usize) -> (u16, &'static str, &'static str, String) + Send + Sync + 'static,
        ) -> (SocketAddr, Vec<u8>) {
            let (ca_pem, config) = ca_and_server(&["127.0.0.1"]);
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let (listener, addr) = listener().await;
            let count = AtomicUsize::new(0);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        continue;
                    };
                    read_head(&mut stream).await;
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let (status, reason, content_type, body) = answer(n);
                    let response = format!(
                        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\nx-ms-request-id: {n}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            });
            (addr, ca_pem)
        }

        /// A TLS server with the given configuration; the handshake is what the tests see.
        async fn tls_server(config: ServerConfig) -> SocketAddr {
            let (listener, addr) = listener().await;
            let acceptor = TlsAcceptor::from(Arc::new(config));
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = acceptor.accept(stream).await;
                }
            });
            addr
        }

        fn server_config(cert: CertificateDer<'static>, key: &KeyPair) -> ServerConfig {
            let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap()
        }

        fn provider(limits: Limits) -> AzureVaultProvider {
            let settings = ClientSettings {
                request_timeout: Duration::from_secs(10),
                extra_root_pem: None,
                verify_challenge_resource: false,
                vault_hosts: VaultHosts::parse::<&str>(&[], true).unwrap(),
                limits,
            };
            let credential =
                credential(&CredentialSource::EmulatorStaticToken("token".into())).unwrap();
            AzureVaultProvider::new(credential, settings, Arc::new(Metrics::new())).unwrap()
        }

        #[tokio::test]
        async fn rotations_of_hsm_keys_count_against_the_hsm_create_budget() {
            let (listener, addr) = listener().await;
            drop(listener);
            let vault = provider(Limits {
                software_creates: 1,
                hsm_creates: 1,
                other: 100,
                in_flight: 4,
            })
            .vault(&format!("https://{addr}"))
            .unwrap();
            // Each attempt holds its slot for 10 s after its answer, failed or not.
            let first = vault.rotate_key("k", true).await.unwrap_err();
            assert_eq!(first.kind, VaultErrorKind::Unreachable);
            let second = vault.rotate_key("k", true).await.unwrap_err();
            assert!(
                matches!(second.kind, VaultErrorKind::Paced { .. }),
                "{second}"
            );
            assert!(second.message.contains("HSM-key-create"), "{second}");
            // The software-key budget was not touched by the HSM rotations.
            let software = vault.rotate_key("k", false).await.unwrap_err();
            assert_eq!(software.kind, VaultErrorKind::Unreachable, "{software}");
            let again = vault.rotate_key("k", false).await.unwrap_err();
            assert!(
                matches!(again.kind, VaultErrorKind::Paced { .. }),
                "{again}"
            );
            assert!(again.message.contains("key-create"), "{again}");
        }

        #[test]
        fn hosts_outside_the_known_clouds_and_the_allowed_list_get_no_client() {
            let provider = provider(Limits::default());
            let e = provider.vault("https://kv.evil.example").err().unwrap();
            assert_eq!(e.kind, VaultErrorKind::Rejected);
            assert!(
                e.message.starts_with(
                    "spec.vaultUrl: kv.evil.example is not a Key Vault or Managed HSM endpoint"
                ),
                "{e}"
            );
            assert!(provider.check_vault_url("https://kv.evil.example").is_err());
            provider.vault("https://my-vault.vault.azure.net").unwrap();
            provider
                .vault("https://my-hsm.managedhsm.azure.cn")
                .unwrap();
            provider.vault("https://127.0.0.1:8443").unwrap();
            provider.check_vault_url("https://localhost:8443").unwrap();
            let e = provider.vault("https://x.vault.azure.net").err().unwrap();
            assert!(e.message.contains("not a vault name"), "{e}");
        }

        #[tokio::test]
        async fn refused_connection_names_host_and_what_to_check() {
            let (listener, addr) = listener().await;
            drop(listener);
            let url = format!("https://{addr}");
            let e = fail_twice(&*vault(&url, Duration::from_secs(10), None)).await;
            assert_eq!(e.kind, VaultErrorKind::Unreachable);
            assert_eq!(e.status, None);
            assert_eq!(
                e.message,
                format!(
                    "connection to {addr} refused: check the vaultUrl (host and port), and any network policy, firewall or proxy between the cluster and the vault"
                )
            );
        }

        #[tokio::test]
        async fn silent_server_is_a_timeout_with_unknown_outcome() {
            let (listener, addr) = listener().await;
            tokio::spawn(async move {
                let mut held: Vec<TcpStream> = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    held.push(stream);
                }
            });
            // The TLS handshake is never answered.
            let url = format!("https://{addr}");
            let e = fail_twice(&*vault(&url, Duration::from_millis(300), None)).await;
            assert_eq!(e.kind, VaultErrorKind::Timeout);
            assert!(
                e.message.starts_with(&format!(
                    "no answer from {url} within 300ms, so the outcome is unknown"
                )),
                "{e}"
            );
        }

        #[tokio::test]
        async fn untrusted_certificate_is_a_tls_failure() {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let addr = tls_server(server_config(cert.der().clone(), &key)).await;
            let url = format!("https://{addr}");
            let e = fail_twice(&*vault(&url, Duration::from_secs(10), None)).await;
            assert_eq!(e.kind, VaultErrorKind::Tls);
            assert!(
                e.message.starts_with(&format!(
                    "TLS with {addr} failed: its certificate is not trusted (UnknownIssuer)"
                )),
                "{e}"
            );
        }

        #[tokio::test]
        async fn certificate_for_another_name_is_a_name_mismatch() {
            let (ca_pem, config) = ca_and_server(&["other-vault.vault.azure.net"]);
            let addr = tls_server(config).await;
            let url = format!("https://{addr}");
            let e = fail_twice(&*vault(&url, Duration::from_secs(10), Some(ca_pem))).await;
            assert_eq!(e.kind, VaultErrorKind::Tls);
            assert!(
                e.message.starts_with(&format!(
                    "TLS with {addr} failed: its certificate is not valid for {}",
                    addr.ip()
                )),
                "{e}"
            );
        }

        #[tokio::test]
        async fn plain_http_on_an_https_url_is_a_handshake_failure() {
            let (listener, addr) = listener().await;
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    let _ = stream.shutdown().await;
                }
            });
            let url = format!("https://{addr}");
            let e = fail_twice(&*vault(&url, Duration::from_secs(10), None)).await;
            assert_eq!(e.kind, VaultErrorKind::Tls);
            assert!(
                e.message
                    .starts_with(&format!("TLS handshake with {addr} failed (")),
                "{e}"
            );
        }

        #[tokio::test]
        async fn html_error_page_gives_reason_and_a_clean_snippet() {
            // A gateway page naming a fresh request id and time on every answer.
            let (addr, ca_pem) = https_server(|n| {
                (
                    502,
                    "Bad Gateway",
                    "text/html",
                    format!(
                        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<p>Request ID: {n:08x}-1d2b-4b7a-9f3e-2a1b0c9d8e7f at 2025-01-0{}T10:00:00Z</p>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                        n + 1
                    ),
                )
            })
            .await;
            let url = format!("https://{addr}");
            let e = fail_twice(&*vault(&url, Duration::from_secs(10), Some(ca_pem))).await;
            assert_eq!(e.kind, VaultErrorKind::ServerError);
            assert_eq!(e.status, Some(502));
            assert_eq!(e.code, None);
            assert_eq!(
                e.to_string(),
                "get_key failed with HTTP 502: Bad Gateway; the body is not a Key Vault error: \"502 Bad Gateway 502 Bad Gateway Request ID: <id> at <time> nginx\""
            );
        }

        #[tokio::test]
        async fn plain_500_with_a_long_body_is_bounded() {
            let (addr, ca_pem) = https_server(|_| {
                (
                    500,
                    "Internal Server Error",
                    "text/plain",
                    "boom\u{1b}[31m ".repeat(100),
                )
            })
            .await;
            let e = fail_twice(&*vault(
                &format!("https://{addr}"),
                Duration::from_secs(10),
                Some(ca_pem),
            ))
            .await;
            assert_eq!(e.kind, VaultErrorKind::ServerError);
            assert!(
                e.message.starts_with(
                    "Internal Server Error; the body is not a Key Vault error: \"boom[31m boom[31m"
                ),
                "{e}"
            );
            assert!(!e.message.contains('\u{1b}'));
            assert!(e.message.chars().count() < 300, "{e}");
        }

        #[tokio::test]
        async fn conflict_with_a_random_id_reads_the_same_each_time() {
            // Lowkey Vault style: a fresh id in each 409 message.
            let (addr, ca_pem) = https_server(|n| {
                (
                    409,
                    "Conflict",
                    "application/json",
                    format!(
                        r#"{{"error":{{"code":"Conflict","message":"Key k is in a deleted but recoverable state (request id {n:032x}, correlation: {n:08x}-aaaa-4bbb-8ccc-dddddddddddd)","innererror":{{"code":"ObjectIsDeletedButRecoverable"}}}}}}"#
                    ),
                )
            })
            .await;
            let e = fail_twice(&*vault(
                &format!("https://{addr}"),
                Duration::from_secs(10),
                Some(ca_pem),
            ))
            .await;
            assert_eq!(e.kind, VaultErrorKind::DeletedButRecoverable);
            assert_eq!(e.code.as_deref(), Some("ObjectIsDeletedButRecoverable"));
            assert_eq!(
                e.message,
                "Key k is in a deleted but recoverable state (request id <id>, correlation: <id>)"
            );
        }
    }
}
