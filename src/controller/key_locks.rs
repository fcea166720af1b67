//! One (vault, key name) is worked on by one reconcile at a time, so two VaultKeys naming the
//! same key can never both create it: the second reads the vault after the first is done,
//! finds the first one's owner tag, and reports OwnedByAnotherVaultKey.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

impl KeyLocks {
    /// Waits for the key's lock. Key Vault names are case-insensitive, and so is the vault host.
    pub async fn lock(&self, vault_url: &str, key_name: &str) -> OwnedMutexGuard<()> {
        let id = format!(
            "{}/keys/{}",
            vault_url.trim_end_matches('/').to_ascii_lowercase(),
            key_name.to_ascii_lowercase()
        );
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            match locks.get(&id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    // Entries of keys nobody works on are dropped as new ones come, so the map
                    // holds only keys in flight.
                    locks.retain(|_, lock| lock.strong_count() > 0);
                    let lock = Arc::new(AsyncMutex::new(()));
                    locks.insert(id, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_one_holder_other_keys_free() {
        let locks = Arc::new(KeyLocks::default());
        let held = locks.lock("https://v.vault.azure.net", "Key-A").await;
        // The same key in another spelling waits ...
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock("https://V.vault.azure.net/", "key-a").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // ... while another key does not.
        let _other = locks.lock("https://v.vault.azure.net", "key-b").await;
        drop(held);
        let guard = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter gets the lock once it is released")
            .expect("the waiter did not panic");
        drop(guard);
        // Nobody holds key-a any more: a later lock creates a fresh entry and drops stale ones.
        drop(_other);
        let _c = locks.lock("https://v.vault.azure.net", "key-c").await;
        assert_eq!(locks.locks.lock().unwrap().len(), 1);
    }
}
