//! Leader election through a `coordination.k8s.io/v1` Lease, so two replicas never reconcile
//! at once (two reconcilers could both create a version for one intent).
//!
//! The holder renews the Lease every `renew_every`; a candidate takes it over once it has not
//! been renewed for `lease_duration`. A leader that cannot renew within the lease duration
//! stops leading at once (the caller exits), so two leaders never overlap by design.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// Waits until this instance holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(lease = %self.settings.name, identity = %self.settings.identity, "became leader");
                    return;
                }
                Ok(false) => debug!("another instance leads; waiting"),
                Err(e) => warn!(error = %e, "leader election: cannot read or write the Lease"),
            }
            tokio::time::sleep(self.settings.renew_every).await;
        }
    }

    /// Renews until a renewal fails for longer than the lease duration (or another instance
    /// took the Lease); then returns, and the caller must stop reconciling.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.settings.renew_every).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("the Lease was taken over by another instance");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "could not renew the Lease");
                    // Stop a margin before the lease runs out, so the next leader never overlaps.
                    if last_renewal.elapsed() + self.settings.renew_every
                        >= self.settings.lease_duration
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up on shutdown so a successor need not wait out the lease duration.
    pub async fn release(&self) {
        let patch = json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": 1}});
        if let Ok(lease) = self.api.get(&self.settings.name).await
            && self.holder(&lease) == Some(self.settings.identity.as_str())
        {
            let params = kube::api::PatchParams::default();
            match self
                .api
                .patch(
                    &self.settings.name,
                    &params,
                    &kube::api::Patch::Merge(patch),
                )
                .await
            {
                Ok(_) => info!("released the Lease"),
                Err(e) => warn!(error = %e, "could not release the Lease"),
            }
        }
    }

    fn holder<'a>(&self, lease: &'a Lease) -> Option<&'a str> {
        lease
            .spec
            .as_ref()?
            .holder_identity
            .as_deref()
            .filter(|h| !h.is_empty())
    }

    /// Takes or renews the Lease when free, expired or ours. Updates carry the read
    /// resourceVersion, so two candidates racing for an expired Lease cannot both win.
    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let duration_secs =
            i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
                "spec": {
                    "holderIdentity": self.settings.identity,
                    "leaseDurationSeconds": duration_secs,
                    "acquireTime": micro_now(),
                    "renewTime": micro_now(),
                    "leaseTransitions": 0,
                }
            }))
            .map_err(kube::Error::SerdeError)?;
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = self.holder(&lease) == Some(self.settings.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => {
                let renewed_at = renewed.0.as_second();
                Utc::now().timestamp() > renewed_at + i64::from(secs)
            }
            _ => true,
        };
        if !ours && !expired && self.holder(&lease).is_some() {
            return Ok(false);
        }
        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(self.settings.identity.clone());
        new_spec.lease_duration_seconds = Some(duration_secs);
        new_spec.renew_time = Some(micro_now());
        if !ours {
            new_spec.acquire_time = Some(micro_now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
