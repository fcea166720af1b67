//! managementPolicy Observe: what one reconcile reads, and how it reports the key. The
//! comparison itself is pure (`crate::observe`).

use chrono::Utc;

use super::Session;
use crate::controller::failure::Failure;
use crate::keyvault::KeyVault;
use crate::observe::Observation;
use crate::validate::DesiredKey;

impl Session<'_> {
    /// managementPolicy Observe: reads only (the key, its versions when they changed, the
    /// policy when the spec has one, the deleted key when the live one is missing) and
    /// reports how the key differs from the spec. No vault write is reachable from here.
    pub(super) async fn observe_only(
        &mut self,
        desired: &DesiredKey,
        vault: &dyn KeyVault,
    ) -> Result<(), Failure> {
        let mut observed = self.observe(desired, vault).await.map_err(Failure::Vault)?;
        self.memory.observe_only = true;
        // Observe never rotates: the token describes the key as it is, so a later switch to
        // Manage does not take it for a rotation request.
        self.memory.observed_rotate_token = desired.rotate_token.clone();
        self.memory.pending_rotation = None;
        if observed.latest.is_none() && observed.deleted.is_none() {
            observed.deleted = vault
                .get_deleted_key(&desired.key_name)
                .await
                .map_err(Failure::Vault)?;
        }
        self.latest = observed.latest.clone();
        self.policy = observed.policy.clone();
        let observation = crate::observe::compare(desired, &observed, Utc::now());
        if let Observation::Missing { deleted } = observation {
            return Err(Failure::ObservedMissing {
                soft_deleted: deleted.is_some(),
            });
        }
        self.refresh_versions(vault).await.map_err(Failure::Vault)?;
        // Publishing what the vault holds writes to Kubernetes only, never to the vault.
        self.publish(vault).await?;
        match observation {
            Observation::Differs(fields) => Err(Failure::Drifted(fields)),
            _ => Ok(()),
        }
    }
}
