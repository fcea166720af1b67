//! Steady state at one Key Vault request per 25 keys. A converged key is not read on every
//! resync: once per resync each vault's key list (`GET /keys`, 25 keys a page, each with its
//! current version's attributes and tags) is compared with what the last full read of each
//! key saw, and only the VaultKeys whose key changed are woken for a full read. A full read
//! also happens every verify interval, for what the list cannot show (key_ops changed
//! without an `updated` stamp, the rotation policy).
//!
//! A vault falls back to reading each key every resync when its list is refused (no
//! `keys/list` permission: the Ready message says so) or costs more pages than it has
//! managed keys (a vault full of keys the operator does not manage). What the last full
//! read saw is kept in memory: after a restart or a failover every key is read once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{info, warn};

use super::pause::is_paused;
use super::{Context, Watched, is_ready_now, lock};
use crate::keyvault::{KeyListing, KeySummary, VaultErrorKind, VaultIdentity, VaultResult};

/// How the operator learns that a vault's keys changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultMode {
    /// Listed every resync; keys are read in full when their summary changes.
    Listed,
    /// Every key is read every resync.
    PerKey(PerKeyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerKeyReason {
    /// No list has been taken yet.
    NotListedYet,
    /// The vault refused the list (the message says why).
    ListRefused(String),
    /// The list takes more requests than reading each managed key would.
    Sparse { pages: usize, managed: usize },
}

/// A vault as one identity sees it: the operator's own, or a namespace identity (each team's
/// keys are listed with the identity that manages them, never with another's).
#[derive(Clone)]
pub struct Scope {
    pub vault_url: String,
    pub identity: Option<VaultIdentity>,
}

impl Scope {
    /// Tells scopes apart: modes are kept per scope.
    pub fn id(&self) -> String {
        match &self.identity {
            None => self.vault_url.clone(),
            Some(identity) => format!("{} as {}", self.vault_url, identity.key),
        }
    }
}

/// The intervals a converged key's reads follow, and the present.
pub struct Timing {
    pub resync: Duration,
    pub verify: Duration,
    /// The operator's now ([`super::Settings::now`]).
    pub now: DateTime<Utc>,
}

impl Timing {
    /// `wait`, but no later than one resync for a namespace identity (its ServiceAccount is
    /// looked at again) and no later than `check_by`; `None` when `check_by` has come.
    fn capped(
        &self,
        wait: Duration,
        scope: &Scope,
        check_by: Option<DateTime<Utc>>,
    ) -> Option<Duration> {
        let mut wait = wait;
        if scope.identity.is_some() {
            wait = wait.min(self.resync);
        }
        if let Some(at) = check_by {
            wait = wait.min((at - self.now).to_std().ok().filter(|d| !d.is_zero())?);
        }
        Some(wait)
    }
}

/// What the last full read of a VaultKey's key saw.
#[derive(Clone)]
struct Seen {
    scope: Scope,
    /// Lower case, as the listing keys it.
    key_name: String,
    summary: KeySummary,
    /// The spec generation that read converged.
    generation: Option<i64>,
    read_at: Instant,
    /// A list taken after the read showed the key unchanged.
    vouched: bool,
    /// A full read is due then whatever the list says (a time passing shows in no list).
    check_by: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct VaultState {
    mode: VaultMode,
    listed_at: Instant,
}

#[derive(Default)]
pub struct Listings {
    /// By VaultKey uid.
    seen: Mutex<HashMap<String, Seen>>,
    /// By vault URL.
    vaults: Mutex<HashMap<String, VaultState>>,
}

/// A VaultKey the observer may wake.
pub struct Watcher {
    pub object: ObjectRef<Watched>,
    uid: String,
}

impl Listings {
    /// A full read of the key, for spec `generation`, converged and saw `summary`.
    pub fn record(
        &self,
        uid: &str,
        generation: Option<i64>,
        scope: &Scope,
        key_name: &str,
        summary: KeySummary,
        check_by: Option<DateTime<Utc>>,
    ) {
        let seen = Seen {
            check_by,
            scope: scope.clone(),
            key_name: key_name.to_lowercase(),
            summary,
            generation,
            read_at: Instant::now(),
            vouched: false,
        };
        lock(&self.seen).insert(uid.to_owned(), seen);
    }

    /// When the vault's list has vouched for the key since its last full read (same spec
    /// generation, read less than `verify` ago, before its `check_by`), the reconcile needs no
    /// read: how long until the next full read is due, and the scope the read was made in (the
    /// identity acting for the key is not in the vault's list, so the caller checks it still
    /// resolves to the same one, once per resync for a namespace identity). A key read before
    /// its vault was first listed waits here instead of being read once more.
    pub fn vouched_wait(
        &self,
        uid: &str,
        generation: Option<i64>,
        timing: &Timing,
    ) -> Option<(Duration, String)> {
        let seen = lock(&self.seen);
        let entry = seen.get(uid)?;
        let scope = entry.scope.id();
        let listed = self.mode(&scope) == VaultMode::Listed;
        if !(listed && entry.vouched && entry.generation == generation) {
            return None;
        }
        let wait = timing.verify.checked_sub(entry.read_at.elapsed())?;
        let wait = timing.capped(wait, &entry.scope, entry.check_by)?;
        Some((wait, scope))
    }

    /// The VaultKey is not converged (or gone): the list does not speak for it.
    pub fn forget(&self, uid: &str) {
        lock(&self.seen).remove(uid);
    }

    pub fn mode(&self, scope: &str) -> VaultMode {
        lock(&self.vaults)
            .get(scope)
            .map_or(VaultMode::PerKey(PerKeyReason::NotListedYet), |v| {
                v.mode.clone()
            })
    }

    /// How long a converged VaultKey of this vault may wait before its next full read.
    pub fn next_full_read(
        &self,
        scope: &Scope,
        check_by: Option<DateTime<Utc>>,
        timing: &Timing,
    ) -> Duration {
        match self.mode(&scope.id()) {
            VaultMode::Listed => timing
                .capped(timing.verify.max(timing.resync), scope, check_by)
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1)),
            VaultMode::PerKey(_) => timing.resync,
        }
    }

    /// What a person should know about how this vault is watched, for the Ready message.
    pub fn note(&self, scope: &str) -> Option<String> {
        match self.mode(scope) {
            VaultMode::PerKey(PerKeyReason::ListRefused(why)) => Some(format!(
                "the vault refused to list its keys ({why}), so each key is read every resync; grant the operator's identity the keys/list permission (included in Key Vault Crypto Officer) to cut that to one request per 25 keys"
            )),
            _ => None,
        }
    }

    /// One observer round over the converged VaultKeys in `watched`: lists each vault that is
    /// due, and returns the VaultKeys to wake for a full read.
    pub async fn round(
        &self,
        ctx: &Context,
        watched: Vec<Arc<Watched>>,
    ) -> Vec<ObjectRef<Watched>> {
        let live: HashSet<String> = watched.iter().filter_map(|o| o.uid()).collect();
        lock(&self.seen).retain(|uid, _| live.contains(uid));
        let mut by_scope: HashMap<String, Vec<(Watcher, Seen)>> = HashMap::new();
        {
            let seen = lock(&self.seen);
            for obj in &watched {
                let Ok(vk) = &obj.0 else { continue };
                let Some(uid) = obj.uid() else { continue };
                let Some(entry) = seen.get(&uid) else {
                    continue;
                };
                if !is_ready_now(vk) || vk.metadata.deletion_timestamp.is_some() || is_paused(vk) {
                    continue;
                }
                let watcher = Watcher {
                    object: ObjectRef::from_obj(obj.as_ref()),
                    uid,
                };
                by_scope
                    .entry(entry.scope.id())
                    .or_default()
                    .push((watcher, entry.clone()));
            }
        }
        let mut wake = Vec::new();
        for (scope_id, keys) in by_scope {
            if !self.due(&scope_id, ctx.settings.verify_interval, keys.len()) {
                continue;
            }
            let scope = &keys[0].1.scope;
            let vault = match &scope.identity {
                Some(identity) => ctx.vaults.vault_as(&scope.vault_url, identity),
                None => ctx.vaults.vault(&scope.vault_url),
            };
            let listing = match vault {
                Ok(vault) => vault.list_keys().await,
                Err(e) => Err(e),
            };
            let woken = self.take(&scope_id, &keys, listing);
            ctx.metrics
                .listing_wakes
                .inc_by(u64::try_from(woken.len()).unwrap_or(u64::MAX));
            wake.extend(
                keys.into_iter()
                    .filter(|(w, _)| woken.contains(&w.uid))
                    .map(|(w, _)| w.object),
            );
        }
        wake
    }

    /// Takes in one vault's listing (or its failure): sets the vault's mode, marks the keys
    /// it vouches for, and returns the uids of the VaultKeys to wake.
    fn take(
        &self,
        vault_url: &str,
        keys: &[(Watcher, Seen)],
        listing: VaultResult<KeyListing>,
    ) -> HashSet<String> {
        let everyone = || keys.iter().map(|(w, _)| w.uid.clone()).collect();
        let (mode, woken) = match listing {
            Ok(listing) => {
                let (mode, woken) = judge(&listing, keys);
                let mut seen = lock(&self.seen);
                for (watcher, _) in keys {
                    if let Some(entry) = seen.get_mut(&watcher.uid) {
                        entry.vouched = mode == VaultMode::Listed && !woken.contains(&watcher.uid);
                    }
                }
                (mode, woken)
            }
            Err(e) if matches!(e.kind, VaultErrorKind::Forbidden) => {
                self.unvouch(keys);
                (
                    VaultMode::PerKey(PerKeyReason::ListRefused(e.to_string())),
                    everyone(),
                )
            }
            // The vault asked for less traffic: no list this round, and no reads either; the
            // next round lists again.
            Err(e)
                if matches!(
                    e.kind,
                    VaultErrorKind::Throttled { .. } | VaultErrorKind::Paced { .. }
                ) =>
            {
                (self.mode(vault_url), HashSet::new())
            }
            Err(e) => {
                warn!(vault = %vault_url, error = %e, "listing the vault's keys failed");
                match self.mode(vault_url) {
                    // This round reads each key instead; the next one lists again.
                    VaultMode::Listed => {
                        self.unvouch(keys);
                        (VaultMode::Listed, everyone())
                    }
                    // Read every resync anyway.
                    per_key => (per_key, HashSet::new()),
                }
            }
        };
        self.set_mode(vault_url, mode);
        woken
    }

    /// The list no longer speaks for these keys: their next reconcile reads them.
    fn unvouch(&self, keys: &[(Watcher, Seen)]) {
        let mut seen = lock(&self.seen);
        for (watcher, _) in keys {
            if let Some(entry) = seen.get_mut(&watcher.uid) {
                entry.vouched = false;
            }
        }
    }

    /// Listed and never-listed vaults are listed every round; a sparse one as soon as its
    /// converged keys outnumber the pages its list took; the others (and a sparse one
    /// anyway) once per verify interval, to notice that the permission came or the vault
    /// shrank.
    fn due(&self, vault_url: &str, verify: Duration, managed: usize) -> bool {
        lock(&self.vaults)
            .get(vault_url)
            .is_none_or(|v| match v.mode {
                VaultMode::Listed | VaultMode::PerKey(PerKeyReason::NotListedYet) => true,
                VaultMode::PerKey(PerKeyReason::Sparse { pages, .. }) if managed >= pages => true,
                VaultMode::PerKey(_) => v.listed_at.elapsed() >= verify,
            })
    }

    fn set_mode(&self, vault_url: &str, mode: VaultMode) {
        let mut vaults = lock(&self.vaults);
        let previous = vaults.get(vault_url).map(|v| v.mode.clone());
        if previous.as_ref() != Some(&mode) {
            info!(vault = %vault_url, ?mode, "how the vault's keys are watched");
        }
        vaults.insert(
            vault_url.to_owned(),
            VaultState {
                mode,
                listed_at: Instant::now(),
            },
        );
    }
}

/// The vault's mode after a listing, and the uids of the VaultKeys to wake: those whose key
/// changed or is gone, or all of them when the vault falls back to per-key reads (they wait
/// the verify interval while it is listed).
fn judge(listing: &KeyListing, keys: &[(Watcher, Seen)]) -> (VaultMode, HashSet<String>) {
    if listing.pages > keys.len() {
        let mode = VaultMode::PerKey(PerKeyReason::Sparse {
            pages: listing.pages,
            managed: keys.len(),
        });
        return (mode, keys.iter().map(|(w, _)| w.uid.clone()).collect());
    }
    let changed = keys
        .iter()
        .filter(|(_, seen)| listing.keys.get(&seen.key_name) != Some(&seen.summary))
        .map(|(w, _)| w.uid.clone())
        .collect();
    (VaultMode::Listed, changed)
}

/// Runs observer rounds every resync until the process ends, waking VaultKeys through the
/// controllers' trigger channels (one per watched namespace).
pub async fn observe(
    ctx: Arc<Context>,
    controllers: Vec<(Store<Watched>, UnboundedSender<ObjectRef<Watched>>)>,
) {
    // The first round comes after half a resync: keys converged at start-up are then
    // vouched for before their first resync is due.
    let resync = ctx.settings.resync_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + resync / 2, resync);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let watched: Vec<Arc<Watched>> = controllers.iter().flat_map(|(s, _)| s.state()).collect();
        let mut wake: HashSet<ObjectRef<Watched>> = ctx
            .listings
            .round(&ctx, watched)
            .await
            .into_iter()
            .collect();
        for object in ctx.backoff.overdue(resync) {
            let (namespace, name) = object.split_once('/').unwrap_or(("", &object));
            warn!(vaultkey = %object, "its retry is overdue and never began; starting it");
            ctx.metrics.overdue_retries.inc();
            wake.insert(ObjectRef::new(name).within(namespace));
        }
        for (store, trigger) in &controllers {
            for object in wake.iter().filter(|o| store.get(o).is_some()) {
                let _ = trigger.unbounded_send(object.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::{Operation, VaultError, tags_digest};
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeMap;

    fn summary(updated: i64) -> KeySummary {
        KeySummary {
            enabled: true,
            created: Some(Utc.timestamp_opt(1_700_000_000, 0).unwrap()),
            updated: Some(Utc.timestamp_opt(updated, 0).unwrap()),
            not_before: None,
            expires_on: None,
            tags: tags_digest(&BTreeMap::from([("owner".to_owned(), "ns/a".to_owned())])),
        }
    }

    fn key(uid: &str, name: &str, seen: KeySummary) -> (Watcher, Seen) {
        (
            Watcher {
                object: ObjectRef::new(uid).within("ns"),
                uid: uid.to_owned(),
            },
            Seen {
                scope: Scope {
                    vault_url: "https://v.vault.azure.net".into(),
                    identity: None,
                },
                key_name: name.to_lowercase(),
                summary: seen,
                generation: Some(1),
                read_at: Instant::now(),
                vouched: false,
                check_by: None,
            },
        )
    }

    fn listing(pages: usize, keys: &[(&str, KeySummary)]) -> KeyListing {
        KeyListing {
            keys: keys
                .iter()
                .map(|(n, s)| (n.to_lowercase(), s.clone()))
                .collect(),
            pages,
        }
    }

    #[test]
    fn only_keys_whose_summary_changed_or_went_are_woken() {
        let keys = [
            key("same", "a", summary(10)),
            key("updated", "b", summary(10)),
            key("gone", "c", summary(10)),
            key("case", "D", summary(10)),
        ];
        let mut retagged = summary(10);
        retagged.tags = tags_digest(&BTreeMap::from([
            ("owner".to_owned(), "ns/a".to_owned()),
            ("extra".to_owned(), "x".to_owned()),
        ]));
        let mut disabled = summary(10);
        disabled.enabled = false;
        let (mode, woken) = judge(
            &listing(
                1,
                &[("a", summary(10)), ("b", summary(11)), ("d", summary(10))],
            ),
            &keys,
        );
        assert_eq!(mode, VaultMode::Listed);
        assert_eq!(woken, ["updated", "gone"].map(str::to_owned).into());
        for changed in [retagged, disabled] {
            let (_, woken) = judge(&listing(1, &[("a", changed)]), &keys[..1]);
            assert_eq!(woken, ["same"].map(str::to_owned).into());
        }
    }

    #[test]
    fn a_tag_digest_is_the_same_whatever_order_the_tags_came_in() {
        let pairs = [("b", "2"), ("a", "1"), ("c", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        let listed: std::collections::HashMap<String, String> = pairs.clone().into_iter().collect();
        let read: BTreeMap<String, String> = pairs.into_iter().collect();
        assert_eq!(tags_digest(&listed), tags_digest(&read));
        let mut changed = read.clone();
        changed.insert("a".into(), "x".into());
        assert_ne!(tags_digest(&changed), tags_digest(&read));
    }

    #[test]
    fn a_list_dearer_than_reading_each_key_falls_back_to_per_key_reads() {
        let keys = [key("a", "a", summary(10)), key("b", "b", summary(10))];
        let same = listing(2, &[("a", summary(10)), ("b", summary(10))]);
        assert_eq!(judge(&same, &keys), (VaultMode::Listed, HashSet::new()));
        let (mode, woken) = judge(
            &listing(3, &[("a", summary(10)), ("b", summary(10))]),
            &keys,
        );
        assert_eq!(
            mode,
            VaultMode::PerKey(PerKeyReason::Sparse {
                pages: 3,
                managed: 2
            })
        );
        assert_eq!(woken.len(), 2, "all go back to per-key reads at once");
    }

    #[test]
    fn a_key_the_list_vouched_for_needs_no_read_until_the_verify_interval() {
        let listings = Listings::default();
        let url = "https://v.vault.azure.net";
        let verify = Duration::from_secs(3_600);
        let at = |verify| timing(verify, Utc::now());
        let keys = [key("a", "a", summary(10)), key("b", "b", summary(10))];
        let scope = keys[0].1.scope.clone();
        for (watcher, seen) in &keys {
            listings.record(
                &watcher.uid,
                Some(1),
                &scope,
                &seen.key_name,
                seen.summary.clone(),
                None,
            );
        }
        assert_eq!(
            listings.vouched_wait("a", Some(1), &at(verify)),
            None,
            "not listed yet"
        );
        let woken = listings.take(
            url,
            &keys,
            Ok(listing(1, &[("a", summary(10)), ("b", summary(11))])),
        );
        assert_eq!(woken, ["b"].map(str::to_owned).into());
        let (wait, vouched_scope) = listings
            .vouched_wait("a", Some(1), &at(verify))
            .expect("vouched");
        assert!(wait <= verify && wait > verify - Duration::from_secs(60));
        assert_eq!(vouched_scope, url, "read with the operator's identity");
        assert_eq!(
            listings.vouched_wait("b", Some(1), &at(verify)),
            None,
            "changed: read it"
        );
        // Vouched once, then changed: woken, and no longer vouched for.
        let woken = listings.take(url, &keys, Ok(listing(1, &[("a", summary(12))])));
        assert_eq!(woken, ["a", "b"].map(str::to_owned).into());
        assert_eq!(listings.vouched_wait("a", Some(1), &at(verify)), None);
        listings.take(
            url,
            &keys,
            Ok(listing(1, &[("a", summary(10)), ("b", summary(10))])),
        );
        assert_eq!(
            listings.vouched_wait("a", Some(2), &at(verify)),
            None,
            "a new spec: read it"
        );
        assert_eq!(
            listings.vouched_wait("a", Some(1), &at(Duration::ZERO)),
            None,
            "verify due"
        );
        // A list that fails for another reason wakes a listed vault's keys to be read, and
        // vouches for none until a list does again.
        let unavailable = VaultError::new(VaultErrorKind::ServerError, Operation::ListKeys, "503");
        assert_eq!(listings.take(url, &keys, Err(unavailable)).len(), 2);
        assert_eq!(listings.mode(url), VaultMode::Listed);
        assert_eq!(listings.vouched_wait("a", Some(1), &at(verify)), None);
        listings.take(
            url,
            &keys,
            Ok(listing(1, &[("a", summary(10)), ("b", summary(10))])),
        );
        // Throttled: no list, no reads, nothing changes.
        let throttled = VaultError::new(
            VaultErrorKind::Throttled {
                retry_after: Duration::from_secs(5),
            },
            Operation::ListKeys,
            "429",
        );
        assert!(listings.take(url, &keys, Err(throttled)).is_empty());
        assert!(listings.vouched_wait("a", Some(1), &at(verify)).is_some());
        // A fresh read starts over: vouched again only by the next list.
        listings.record("a", Some(1), &scope, "a", summary(10), None);
        assert_eq!(listings.vouched_wait("a", Some(1), &at(verify)), None);
        // A refused list vouches for nothing and wakes everyone.
        let refused = VaultError::new(VaultErrorKind::Forbidden, Operation::ListKeys, "403");
        assert_eq!(listings.take(url, &keys, Err(refused)).len(), 2);
        assert!(matches!(
            listings.mode(url),
            VaultMode::PerKey(PerKeyReason::ListRefused(_))
        ));
        assert_eq!(listings.vouched_wait("b", Some(1), &at(verify)), None);
        // Not listed: a failing list wakes nobody (they are read every resync anyway).
        let unavailable = VaultError::new(VaultErrorKind::ServerError, Operation::ListKeys, "503");
        assert!(listings.take(url, &keys, Err(unavailable)).is_empty());
    }

    #[test]
    fn a_time_the_list_cannot_show_and_a_namespace_identity_shorten_the_wait() {
        let listings = Listings::default();
        let url = "https://v.vault.azure.net";
        let (verify, now) = (Duration::from_secs(86_400), Utc::now());
        let keys = [key("a", "a", summary(10))];
        let scope = keys[0].1.scope.clone();
        // The Notify window opens in an hour: read then, whatever the list says.
        let notify = now + chrono::Duration::hours(1);
        listings.record("a", Some(1), &scope, "a", summary(10), Some(notify));
        listings.take(url, &keys, Ok(listing(1, &[("a", summary(10))])));
        let (wait, _) = listings
            .vouched_wait("a", Some(1), &timing(verify, now))
            .expect("vouched");
        assert!(wait <= Duration::from_secs(3_600), "{wait:?}");
        assert_eq!(
            listings.next_full_read(&scope, Some(notify), &timing(verify, now)),
            Duration::from_secs(3_600)
        );
        assert_eq!(
            listings.vouched_wait("a", Some(1), &timing(verify, notify)),
            None,
            "the window opened: read it"
        );
        // A namespace identity is looked at again every resync.
        let team = Scope {
            vault_url: url.into(),
            identity: Some(VaultIdentity {
                key: "team-a/kv".into(),
                credential: std::sync::Arc::new(NoToken),
            }),
        };
        assert_eq!(
            listings.next_full_read(&team, None, &timing(verify, now)),
            Duration::from_secs(300),
            "not listed yet: every resync"
        );
        listings.set_mode(&team.id(), VaultMode::Listed);
        assert_eq!(
            listings.next_full_read(&team, None, &timing(verify, now)),
            Duration::from_secs(300)
        );
        assert_eq!(
            listings.next_full_read(&scope, None, &timing(verify, now)),
            verify
        );
    }

    #[derive(Debug)]
    struct NoToken;

    #[async_trait::async_trait]
    impl azure_core::credentials::TokenCredential for NoToken {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "no token in unit tests",
            ))
        }
    }

    fn timing(verify: Duration, now: DateTime<Utc>) -> Timing {
        Timing {
            resync: Duration::from_secs(300),
            verify,
            now,
        }
    }

    #[test]
    fn a_listed_vault_waits_the_verify_interval_and_the_others_the_resync() {
        let listings = Listings::default();
        let (resync, verify) = (Duration::from_secs(300), Duration::from_secs(86_400));
        let url = "https://v.vault.azure.net";
        let scope = Scope {
            vault_url: url.into(),
            identity: None,
        };
        let t = timing(verify, Utc::now());
        assert_eq!(listings.next_full_read(&scope, None, &t), resync);
        listings.set_mode(url, VaultMode::Listed);
        assert_eq!(listings.next_full_read(&scope, None, &t), verify);
        assert!(listings.due(url, verify, 1));
        assert_eq!(listings.note(url), None);
        listings.set_mode(
            url,
            VaultMode::PerKey(PerKeyReason::ListRefused("403 Forbidden".into())),
        );
        assert_eq!(listings.next_full_read(&scope, None, &t), resync);
        assert!(
            !listings.due(url, verify, 1_000),
            "a refused list is retried per verify interval"
        );
        assert!(listings.note(url).unwrap().contains("keys/list"));
        listings.set_mode(
            url,
            VaultMode::PerKey(PerKeyReason::Sparse {
                pages: 40,
                managed: 3,
            }),
        );
        assert!(!listings.due(url, verify, 39));
        assert!(
            listings.due(url, verify, 40),
            "listed again once its keys would fill the pages"
        );
    }
}
