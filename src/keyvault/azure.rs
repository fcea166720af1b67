//! The production [`KeyVault`] over the official Azure SDK (`azure_security_keyvault_keys`).
//!
//! Every call goes through [`AzureVault::call`]: the vault's request budget, a timeout, a
//! metric, and error classification. The SDK's own retry policy is off: a retried create can
//! make a second version, so retries are decided by the reconciler after re-reading the vault.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, RequestContent, RetryOptions, StatusCode, Transport};
use azure_core::time::OffsetDateTime;
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, ImportKeyParameters, JsonWebKey, Key,
    KeyAttributes as SdkAttributes, KeyClientGetKeyOptions, KeyClientUpdateKeyPropertiesOptions,
    KeyOperation as SdkOperation, KeyReleasePolicy, KeyRotationPolicy, KeyRotationPolicyAction,
    KeyRotationPolicyAttributes, KeyType as SdkKeyType, LifetimeAction, LifetimeActionTrigger,
    LifetimeActionType, UpdateKeyPropertiesParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::budget::{Budget, Limits, RequestClass};
use super::{
    CreateKey, DeletedKey, ImportKey, KeyProperties, KeyVault, KeyVersion, ObservedAction,
    ObservedKey, ObservedPolicy, Operation, VaultError, VaultErrorKind, VaultProvider, VaultResult,
};
use crate::api::{KeyType, LifetimeActionType as SpecAction};
use crate::key_material::{Curve as MaterialCurve, JwkKty, ec_jwk_thumbprint, rsa_jwk_thumbprint};
use crate::telemetry::{Metrics, VaultLabels};
use crate::validate::{DesiredRotationPolicy, Trigger};

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

/// Client settings shared by every vault.
#[derive(Clone)]
pub struct ClientSettings {
    pub request_timeout: Duration,
    /// Extra root certificates (PEM), for emulators with their own CA.
    pub extra_root_pem: Option<Vec<u8>>,
    /// Key Vault's challenge names the resource; checking it against the vault's domain stops
    /// a token leaking to a host posing as a vault. Only emulators turn it off.
    pub verify_challenge_resource: bool,
    pub limits: Limits,
}

pub struct AzureVaultProvider {
    credential: Arc<dyn TokenCredential>,
    settings: ClientSettings,
    transport: Option<Transport>,
    metrics: Arc<Metrics>,
    vaults: Mutex<HashMap<String, Arc<AzureVault>>>,
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
            vaults: Mutex::new(HashMap::new()),
        })
    }
}

impl VaultProvider for AzureVaultProvider {
    fn vault(&self, vault_url: &str) -> Result<Arc<dyn KeyVault>, VaultError> {
        let mut vaults = self.vaults.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(vault) = vaults.get(vault_url) {
            return Ok(vault.clone());
        }
        let options = KeyClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions::none(),
                transport: self.transport.clone(),
                ..Default::default()
            },
            verify_challenge_resource: Some(self.settings.verify_challenge_resource),
            ..Default::default()
        };
        let client =
            KeyClient::new(vault_url, self.credential.clone(), Some(options)).map_err(|e| {
                VaultError::new(
                    VaultErrorKind::Other,
                    Operation::GetKey,
                    format!("creating a client for {vault_url}: {e}"),
                )
            })?;
        let vault = Arc::new(AzureVault {
            client,
            vault_url: vault_url.to_owned(),
            budget: Budget::new(self.settings.limits),
            timeout: self.settings.request_timeout,
            metrics: self.metrics.clone(),
        });
        vaults.insert(vault_url.to_owned(), vault.clone());
        Ok(vault)
    }
}

pub struct AzureVault {
    client: KeyClient,
    vault_url: String,
    budget: Budget,
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
                        "no answer from {} within {:?}; the outcome is unknown",
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
                let error = classify(operation, &err);
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

    async fn list_versions(&self, name: &str) -> VaultResult<Vec<KeyVersion>> {
        let versions = self
            .read(Operation::ListVersions, async {
                let mut pager = self.client.list_key_properties_versions(name, None)?;
                let mut out = Vec::new();
                while let Some(item) = pager.try_next().await? {
                    out.push(item);
                }
                Ok(out)
            })
            .await?
            .unwrap_or_default();
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

    async fn rotate_key(&self, name: &str) -> VaultResult<ObservedKey> {
        // A rotation creates a version; it counts against the create budget.
        let rotated = self
            .call(Operation::RotateKey, RequestClass::SoftwareCreate, async {
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

/// The rotation policy as JSON, read leniently: action names in any case.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
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

fn sdk_policy(policy: &DesiredRotationPolicy) -> KeyRotationPolicy {
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

fn sdk_key_type(key_type: KeyType) -> SdkKeyType {
    match key_type {
        KeyType::Rsa => SdkKeyType::Rsa,
        KeyType::RsaHsm => SdkKeyType::RsaHsm,
        KeyType::Ec => SdkKeyType::Ec,
        KeyType::EcHsm => SdkKeyType::EcHsm,
        KeyType::OctHsm => SdkKeyType::OctHsm,
    }
}

fn sdk_curve(name: &str) -> CurveName {
    name.parse()
        .unwrap_or(CurveName::UnknownValue(name.to_owned()))
}

fn sdk_ops(ops: &std::collections::BTreeSet<crate::api::KeyOperation>) -> Vec<SdkOperation> {
    ops.iter()
        .map(|op| {
            op.as_str()
                .parse()
                .unwrap_or(SdkOperation::UnknownValue(op.as_str().to_owned()))
        })
        .collect()
}

fn sdk_attributes(properties: &KeyProperties) -> SdkAttributes {
    SdkAttributes {
        enabled: properties.enabled,
        not_before: properties.not_before.and_then(to_offset),
        expires: properties.expires_on.and_then(to_offset),
        exportable: properties.exportable,
        ..Default::default()
    }
}

fn sdk_release_policy(policy: &crate::api::ReleasePolicy) -> KeyReleasePolicy {
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

fn hash_tags(tags: &BTreeMap<String, String>) -> HashMap<String, String> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_offset(t: DateTime<Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()
}

fn to_chrono(t: Option<OffsetDateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), 0))
}

/// Splits `{vault}/keys/{name}/{version}` into the versionless id and the version.
fn split_kid(kid: &str) -> Option<(String, String)> {
    let (base, version) = kid.trim_end_matches('/').rsplit_once('/')?;
    if version.is_empty() || !base.contains("/keys/") {
        return None;
    }
    Some((base.to_owned(), version.to_owned()))
}

fn observed_key(operation: Operation, key: &Key) -> VaultResult<ObservedKey> {
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
    })
}

/// Maps an SDK error to a [`VaultError`]. Request bodies are never part of the message.
fn classify(operation: Operation, err: &azure_core::Error) -> VaultError {
    use azure_core::error::ErrorKind;
    match err.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let body = raw_response
                .as_ref()
                .map(|r| String::from_utf8_lossy(r.body()).into_owned());
            let (inner_code, message) = body.as_deref().map(error_details).unwrap_or_default();
            let code = inner_code.or_else(|| error_code.clone());
            let retry_after = raw_response
                .as_ref()
                .and_then(|r| {
                    r.headers()
                        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(10), Duration::from_secs);
            let kind = match *status {
                StatusCode::NotFound => VaultErrorKind::NotFound,
                StatusCode::TooManyRequests => VaultErrorKind::Throttled { retry_after },
                StatusCode::Unauthorized | StatusCode::Forbidden => VaultErrorKind::Forbidden,
                StatusCode::Conflict
                    if code.as_deref() == Some("ObjectIsDeletedButRecoverable") =>
                {
                    VaultErrorKind::DeletedButRecoverable
                }
                StatusCode::Conflict => VaultErrorKind::Conflict,
                StatusCode::BadRequest => VaultErrorKind::Rejected,
                s if u16::from(s) >= 500 => VaultErrorKind::ServerError,
                _ => VaultErrorKind::Other,
            };
            VaultError {
                kind,
                operation,
                status: Some(u16::from(*status)),
                code,
                message: message.unwrap_or_else(|| format!("HTTP {}", u16::from(*status))),
            }
        }
        ErrorKind::Io | ErrorKind::Connection => VaultError::new(
            VaultErrorKind::Unreachable,
            operation,
            format!("cannot reach the vault: {err}"),
        ),
        ErrorKind::Credential => VaultError::new(
            VaultErrorKind::Forbidden,
            operation,
            format!("could not get a token for Key Vault: {err}"),
        ),
        _ => VaultError::new(VaultErrorKind::Other, operation, err.to_string()),
    }
}

/// Key Vault error bodies: `{"error":{"code","message","innererror":{"code"}}}`; the innermost
/// code is the most specific.
fn error_details(body: &str) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return (None, None);
    };
    let mut error = &value["error"];
    let message = error["message"].as_str().map(str::to_owned);
    let mut code = error["code"].as_str().map(str::to_owned);
    while let Some(inner) = error.get("innererror").filter(|v| v.is_object()) {
        if let Some(c) = inner["code"].as_str() {
            code = Some(c.to_owned());
        }
        error = inner;
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn innermost_error_code_wins() {
        let body = r#"{"error":{"code":"Conflict","message":"Key k is currently in a deleted but recoverable state","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#;
        let (code, message) = error_details(body);
        assert_eq!(code.as_deref(), Some("ObjectIsDeletedButRecoverable"));
        assert!(message.unwrap().contains("deleted but recoverable"));
        assert_eq!(error_details("not json"), (None, None));
    }

    #[test]
    fn key_ids_split_into_base_and_version() {
        assert_eq!(
            split_kid("https://v.vault.azure.net/keys/k/0123abcd"),
            Some(("https://v.vault.azure.net/keys/k".into(), "0123abcd".into()))
        );
        assert_eq!(split_kid("https://v.vault.azure.net/other/k"), None);
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
}
