//! Follows one watch: readiness (listed, synced, failing), the objects that do not decode, and
//! the objects that went away. What the operator keeps per VaultKey in memory (its gauges, the
//! public keys it published, what its vault's list vouched for) is forgotten when the watch
//! says the object is gone, whether or not a finalizer let cleanup run (a `Retain` VaultKey
//! holds none) and also when a relist shows it was deleted while the watch was away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::watcher;

use super::{Context, Watched};

pub struct WatchTracker {
    index: usize,
    ctx: Arc<Context>,
    undecodable: HashSet<String>,
    /// Every object the watch holds: `namespace/name` → uid.
    present: HashMap<String, String>,
    /// Filled during a (re)list, swapped in when it is done.
    relisting: Option<Relisting>,
}

#[derive(Default)]
struct Relisting {
    undecodable: HashSet<String>,
    present: HashMap<String, String>,
}

fn key(obj: &Watched) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

impl WatchTracker {
    pub fn new(index: usize, ctx: Arc<Context>) -> Self {
        WatchTracker {
            index,
            ctx,
            undecodable: HashSet::new(),
            present: HashMap::new(),
            relisting: None,
        }
    }

    pub fn observe(&mut self, event: &Result<watcher::Event<Watched>, watcher::Error>) {
        use watcher::Event;
        let health = &self.ctx.health;
        match event {
            Err(e) => {
                health.watch_failed(self.index, e.to_string());
                return;
            }
            Ok(Event::Init) => self.relisting = Some(Relisting::default()),
            Ok(Event::InitApply(obj)) => {
                if let Some(relisting) = &mut self.relisting {
                    if obj.0.is_err() {
                        relisting.undecodable.insert(key(obj));
                    }
                    relisting
                        .present
                        .insert(key(obj), obj.uid().unwrap_or_default());
                }
            }
            Ok(Event::InitDone) => {
                let relisted = self.relisting.take().unwrap_or_default();
                self.undecodable = relisted.undecodable;
                let before = std::mem::replace(&mut self.present, relisted.present);
                for (key, uid) in before {
                    if self.present.get(&key) != Some(&uid) {
                        self.forget(&key, &uid);
                    }
                }
                health.watch_synced(self.index);
            }
            Ok(Event::Apply(obj)) => {
                if obj.0.is_err() {
                    self.undecodable.insert(key(obj));
                } else {
                    self.undecodable.remove(&key(obj));
                }
                let uid = obj.uid().unwrap_or_default();
                if let Some(previous) = self.present.insert(key(obj), uid.clone())
                    && previous != uid
                {
                    // Deleted and created again under the same name while the watch was away.
                    self.forget(&key(obj), &previous);
                }
            }
            Ok(Event::Delete(obj)) => {
                self.undecodable.remove(&key(obj));
                self.present.remove(&key(obj));
                self.forget(&key(obj), &obj.uid().unwrap_or_default());
            }
        }
        health.watch_event(self.index);
        health.set_undecodable(self.index, self.undecodable.len());
        self.ctx
            .metrics
            .undecodable_objects
            .set(i64::try_from(health.undecodable()).unwrap_or(i64::MAX));
    }

    /// The VaultKey `namespace/name` with `uid` is gone: what memory held for it goes too.
    fn forget(&self, key: &str, uid: &str) {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        self.ctx.metrics.forget_key(namespace, name);
        self.ctx.public_keys.forget(uid);
        self.ctx.listings.forget(uid);
        self.ctx.backoff.reset(key);
        self.ctx.own_writes.forget(uid);
    }
}
