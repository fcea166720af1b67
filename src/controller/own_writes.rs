//! The status the operator last wrote, until its watch cache shows it.
//!
//! A reconcile can start before the cache holds the previous reconcile's status write (a wake
//! that came while the previous one ran is served the moment it ends). Deciding from that older
//! status, it would skip a write it needs, since the stale status already "says" what it found,
//! or act on memory (rotation token, pending rotation) the operator has since moved past. Seen
//! under injected faults: a failure wrote `Ready=False`, the next pass succeeded against the
//! cached `Ready=True`, wrote nothing, and the VaultKey showed the failure for good.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;

use crate::api::{VaultKey, VaultKeyStatus};

#[derive(Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<String, Written>>,
}

struct Written {
    resource_version: u64,
    status: Option<VaultKeyStatus>,
}

/// The API server's resource versions are etcd revisions: for one object, a later write has a
/// larger number. Kubernetes calls them opaque; one that does not parse is taken as current.
fn revision(obj: &impl ResourceExt) -> Option<u64> {
    obj.resource_version()?.parse().ok()
}

impl OwnWrites {
    /// Remembers the object the API server answered a status write with.
    pub fn record(&self, written: &VaultKey) {
        let (Some(uid), Some(resource_version)) = (written.uid(), revision(written)) else {
            return;
        };
        self.lock().insert(
            uid,
            Written {
                resource_version,
                status: written.status.clone(),
            },
        );
    }

    /// `vk` with the status the operator last wrote, when the cache has not caught up with that
    /// write yet; `vk` as it is otherwise (and the memory of the write is dropped).
    pub fn latest(&self, mut vk: VaultKey) -> VaultKey {
        let Some(uid) = vk.uid() else { return vk };
        let mut written = self.lock();
        let Some(own) = written.get(&uid) else {
            return vk;
        };
        match revision(&vk) {
            Some(cached) if cached < own.resource_version => {
                vk.status.clone_from(&own.status);
                if let Some(rv) = vk.metadata.resource_version.as_mut() {
                    *rv = own.resource_version.to_string();
                }
            }
            _ => {
                written.remove(&uid);
            }
        }
        vk
    }

    /// The watch delivered `obj`: a write it holds (or is past) needs no remembering, so the
    /// map holds only writes still on their way to the cache.
    pub fn seen(&self, obj: &impl ResourceExt) {
        let (Some(uid), Some(cached)) = (obj.uid(), revision(obj)) else {
            return;
        };
        let mut written = self.lock();
        if written
            .get(&uid)
            .is_some_and(|own| own.resource_version <= cached)
        {
            written.remove(&uid);
        }
    }

    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Written>> {
        super::lock(&self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VaultKey at `resource_version` whose status shows `version` as current.
    fn vaultkey(resource_version: &str, version: Option<&str>) -> VaultKey {
        let mut vk: VaultKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "vaultkey.dev/v1alpha1",
            "kind": "VaultKey",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": resource_version},
            "spec": {"vaultUrl": "https://v.vault.azure.net", "keyType": "EC"},
        }))
        .unwrap();
        vk.status = version.map(|v| VaultKeyStatus {
            current_version: Some(v.into()),
            ..Default::default()
        });
        vk
    }

    fn shown(vk: &VaultKey) -> Option<&str> {
        vk.status.as_ref()?.current_version.as_deref()
    }

    #[test]
    fn a_cache_older_than_the_last_write_is_read_with_that_write() {
        let own = OwnWrites::default();
        own.record(&vaultkey("12", Some("written")));
        // The cache still holds the object from before the write.
        let seen = own.latest(vaultkey("10", Some("older")));
        assert_eq!(shown(&seen), Some("written"));
        assert_eq!(seen.resource_version().as_deref(), Some("12"));
        // Until the cache catches up (or moves past it): then the cache is the truth.
        assert_eq!(
            shown(&own.latest(vaultkey("12", Some("written")))),
            Some("written")
        );
        assert_eq!(
            shown(&own.latest(vaultkey("10", Some("older")))),
            Some("older")
        );
        own.record(&vaultkey("20", Some("written")));
        assert_eq!(shown(&own.latest(vaultkey("25", None))), None);
        assert!(
            own.lock().is_empty(),
            "nothing kept once the cache caught up"
        );
        // The watch delivering the write ends the memory of it too, whether or not the
        // VaultKey is reconciled again soon.
        own.record(&vaultkey("30", Some("written")));
        own.seen(&vaultkey("29", Some("older")));
        assert_eq!(own.lock().len(), 1);
        own.seen(&vaultkey("30", Some("written")));
        assert!(own.lock().is_empty());
    }

    #[test]
    fn an_unparsable_resource_version_leaves_the_cache_as_it_is() {
        let own = OwnWrites::default();
        own.record(&vaultkey("12", Some("written")));
        assert_eq!(
            shown(&own.latest(vaultkey("x", Some("older")))),
            Some("older")
        );
        own.record(&vaultkey("y", Some("written")));
        assert!(own.lock().is_empty());
        own.record(&vaultkey("12", Some("written")));
        own.forget("u1");
        assert!(own.lock().is_empty());
    }
}
