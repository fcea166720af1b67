//! Shared emulator state and the flows used by both the REST API and the
//! management API (rotation, automatic rotation).

use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::dialect::Dialects;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::identity::Identities;
use crate::keys::{self, KeyMaterial, KeyShape};
use crate::model::KeyBundle;
use crate::stats::Stats;
use crate::store::{Clock, Store, new_version_id};

/// Upper bound of automatic rotations one `/time-shift` performs.
const MAX_AUTO_ROTATIONS: usize = 10_000;

#[derive(Debug, Default)]
pub struct App {
    pub clock: Clock,
    store: Mutex<Store>,
    pub stats: Stats,
    pub faults: Faults,
    pub dialects: Dialects,
    /// The Azure AD token endpoint's federations, and who may use which vault.
    pub identities: Identities,
    /// Serialises automatic-rotation runs so a due rotation happens once.
    auto_rotation: tokio::sync::Mutex<()>,
}

impl App {
    #[cfg(test)]
    pub fn new(store: Store) -> App {
        App {
            store: Mutex::new(store),
            ..App::default()
        }
    }

    pub fn with_identities(store: Store, identities: Identities) -> App {
        App {
            store: Mutex::new(store),
            identities,
            ..App::default()
        }
    }

    /// The store, with expired soft-deleted keys already purged.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        for vault in store.vaults.values_mut() {
            vault.sweep(now);
        }
        store
    }

    /// Generates key material on the blocking pool (RSA 4096 takes a while).
    pub async fn generate(shape: KeyShape) -> Result<KeyMaterial, ApiError> {
        tokio::task::spawn_blocking(move || keys::generate(shape))
            .await
            .map_err(|_| {
                ApiError::new(
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "Key generation task failed.",
                )
            })?
    }

    /// Rotates `name`: a new version like the current one, created `at` (now
    /// for `/rotate`, the due time for automatic rotations).
    pub async fn rotate(
        &self,
        vault: &str,
        name: &str,
        at: Option<i64>,
    ) -> Result<KeyBundle, ApiError> {
        let template = self.store().vault_mut(vault)?.rotation_template(name)?;
        let material = Self::generate(template.shape).await?;
        let mut store = self.store();
        let v = store.vault_mut(vault)?;
        let at = at.unwrap_or_else(|| self.clock.now());
        let version = new_version_id();
        v.add_rotated_version(name, template, material, at, version.clone())?;
        v.bundle_for(name, Some(&version))
    }

    /// Performs every automatic rotation that is due, earliest first, each at
    /// its due time, until none is due. Returns what was rotated.
    pub async fn run_due_rotations(&self) -> Result<Vec<Value>, ApiError> {
        let _serial = self.auto_rotation.lock().await;
        let mut rotated = Vec::new();
        while rotated.len() < MAX_AUTO_ROTATIONS {
            let now = self.clock.now();
            let next = {
                let store = self.store();
                store
                    .vaults
                    .values()
                    .filter_map(|v| {
                        v.next_due_rotation(now)
                            .map(|(name, due)| (v.name.clone(), name, due))
                    })
                    .min_by_key(|(_, _, due)| *due)
            };
            let Some((vault, name, due)) = next else {
                break;
            };
            let bundle = self.rotate(&vault, &name, Some(due)).await?;
            let version = bundle
                .key
                .kid
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            tracing::info!(vault = %vault, key = %name, version = %version, at = due, "automatic rotation");
            rotated.push(json!({ "vault": vault, "name": name, "version": version, "at": due }));
        }
        Ok(rotated)
    }
}
