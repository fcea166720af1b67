//! Readiness: a pod is Ready when the operator can do its work. Every instance needs the API
//! server to answer a list of VaultKeys within [`PROBE_TIMEOUT`], now: a watch that listed
//! once says nothing about a route that has gone since (an idle watch notices only when its
//! connection times out, minutes later). A leader also needs every watch listed and not
//! failing. `/readyz` asks [`Health::check`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;

use crate::api::VaultKey;

/// How long the readiness list may take: under the chart's probe timeout (3 s), so that the
/// probe reads the reason instead of timing out.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Health {
    /// The controller runs (this instance leads, or runs without leader election).
    leading: AtomicBool,
    watches: Mutex<Vec<WatchState>>,
    /// Where the probe lists VaultKeys: the first watched namespace, or all.
    probe_namespace: Option<String>,
}

#[derive(Clone, Default)]
struct WatchState {
    synced: bool,
    /// The last error of this watch, until an event shows it works again.
    failing: Option<String>,
    /// Objects of this watch that do not decode.
    undecodable: usize,
}

impl Health {
    /// `namespaces`: the watched ones (empty: all), so the probe needs no other permission.
    pub fn new(namespaces: &[String]) -> Self {
        Health {
            probe_namespace: namespaces.first().cloned(),
            ..Self::default()
        }
    }

    /// The controller starts `count` watches.
    pub fn start_leading(&self, count: usize) {
        *self.lock() = vec![WatchState::default(); count];
        self.leading.store(true, Ordering::SeqCst);
    }

    pub fn watch_synced(&self, index: usize) {
        if let Some(w) = self.lock().get_mut(index) {
            w.synced = true;
            w.failing = None;
        }
    }

    pub fn watch_event(&self, index: usize) {
        if let Some(w) = self.lock().get_mut(index)
            && w.synced
        {
            w.failing = None;
        }
    }

    pub fn watch_failed(&self, index: usize, error: String) {
        if let Some(w) = self.lock().get_mut(index) {
            w.failing = Some(error);
        }
    }

    pub fn set_undecodable(&self, index: usize, count: usize) {
        if let Some(w) = self.lock().get_mut(index) {
            w.undecodable = count;
        }
    }

    /// Objects that do not decode, over all watches.
    pub fn undecodable(&self) -> usize {
        self.lock().iter().map(|w| w.undecodable).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WatchState>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Ok` when ready, else what is wrong.
    pub async fn check(&self, client: &kube::Client) -> Result<(), String> {
        let failing = if self.leading.load(Ordering::SeqCst) {
            let watches = self.lock().clone();
            if let Some(i) = watches.iter().position(|w| !w.synced) {
                return Err(match &watches[i].failing {
                    Some(e) => format!("the VaultKey watch has not listed yet: {e}"),
                    None => "the VaultKey watch has not listed yet".to_owned(),
                });
            }
            watches.into_iter().find_map(|w| w.failing)
        } else {
            None
        };
        // Asked on every probe, also of a leader whose watches look fine (see the module doc).
        let api: Api<PartialObjectMeta<VaultKey>> = match &self.probe_namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let params = ListParams::default().limit(1);
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, api.list_metadata(&params)).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        answer.map_err(|e| match &failing {
            // A failing watch is retried with backoff; the API server answering a list now
            // says the next attempt will work.
            Some(watch) => {
                format!("the VaultKey watch is failing ({watch}) and a list fails too: {e}")
            }
            None => format!("the API server does not answer a list of VaultKeys: {e}"),
        })?;
        Ok(())
    }
}
