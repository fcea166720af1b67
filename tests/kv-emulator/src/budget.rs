//! Key Vault's request budget (rate-limit mode), for throughput benchmarks.
//!
//! Key Vault throttles per vault per 10 seconds: 20 software-key creates (RSA 2048, EC), 10 HSM
//! creates, 4,000 other transactions; beyond that it answers 429 `Throttled` with `Retry-After`.
//! `PUT /faults {"createBudget": {"perTenSeconds": 20}}` enables the same here:
//!
//! * each vault counts admitted requests per class over a **sliding** 10-second window
//!   (`create_key` and `rotate_key` of software keys; the same of HSM keys; everything else
//!   when `otherPerTenSeconds` is set), and answers 429 with `Retry-After` = whole seconds until
//!   the oldest request in the window leaves it (at least 1) when the class is full. A refused
//!   request does not count against the window;
//! * every 429 opens a Retry-After window on its vault; each authenticated request that
//!   arrives inside one is counted (`inRetryAfterWindow`), and separately when it arrives more
//!   than `graceMillis` (default 250) after the 429 was sent (`inRetryAfterWindowAfterGrace`):
//!   a request that was already in flight when the client heard of the 429 is not the client's
//!   fault, one sent later is.
//!
//! The counters are in `GET /stats` under `budget` and in `GET /faults`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

const WINDOW: Duration = Duration::from_secs(10);

/// Body of `createBudget` in `PUT /faults`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetConfigIn {
    /// Software-key creates (create_key, rotate_key) per vault per 10 s (Key Vault: 20).
    pub per_ten_seconds: u32,
    /// HSM-key creates per vault per 10 s (Key Vault: 10); default 10.
    pub hsm_per_ten_seconds: Option<u32>,
    /// Every other request per vault per 10 s (Key Vault: 4,000); default unlimited.
    pub other_per_ten_seconds: Option<u32>,
    /// Requests arriving this soon after a 429 are counted as in flight (default 250 ms).
    pub grace_millis: Option<u64>,
}

/// Which limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    SoftwareCreate,
    HsmCreate,
    Other,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::SoftwareCreate => "softwareCreate",
            Class::HsmCreate => "hsmCreate",
            Class::Other => "other",
        }
    }
}

#[derive(Debug, Default)]
struct VaultState {
    admitted: HashMap<Class, VecDeque<Instant>>,
    /// Open Retry-After windows: (429 sent at, until).
    windows: VecDeque<(Instant, Instant)>,
}

#[derive(Debug)]
pub struct Budget {
    software: u32,
    hsm: u32,
    other: Option<u32>,
    grace: Duration,
    vaults: HashMap<String, VaultState>,
    throttled: BTreeMap<String, u64>,
    in_window: BTreeMap<String, u64>,
    in_window_after_grace: BTreeMap<String, u64>,
    admitted_total: BTreeMap<(String, Class), u64>,
}

impl Budget {
    pub fn new(cfg: &BudgetConfigIn) -> Result<Budget, String> {
        if cfg.per_ten_seconds == 0 {
            return Err("createBudget.perTenSeconds must be at least 1".into());
        }
        if cfg.hsm_per_ten_seconds == Some(0) || cfg.other_per_ten_seconds == Some(0) {
            return Err("createBudget limits must be at least 1".into());
        }
        Ok(Budget {
            software: cfg.per_ten_seconds,
            hsm: cfg.hsm_per_ten_seconds.unwrap_or(10),
            other: cfg.other_per_ten_seconds,
            grace: Duration::from_millis(cfg.grace_millis.unwrap_or(250)),
            vaults: HashMap::new(),
            throttled: BTreeMap::new(),
            in_window: BTreeMap::new(),
            in_window_after_grace: BTreeMap::new(),
            admitted_total: BTreeMap::new(),
        })
    }

    /// Records the arrival of an authenticated request; counts it when it falls inside a
    /// Retry-After window this vault announced.
    pub fn arrival(&mut self, vault: &str, now: Instant) {
        let state = self.vaults.entry(vault.to_owned()).or_default();
        while state
            .windows
            .front()
            .is_some_and(|(_, until)| *until <= now)
        {
            state.windows.pop_front();
        }
        let inside = state.windows.iter().any(|(_, until)| now < *until);
        if inside {
            *self.in_window.entry(vault.to_owned()).or_default() += 1;
            let late = state
                .windows
                .iter()
                .any(|(sent, until)| now < *until && now >= *sent + self.grace);
            if late {
                *self
                    .in_window_after_grace
                    .entry(vault.to_owned())
                    .or_default() += 1;
            }
        }
    }

    /// Admits the request, or answers the Retry-After (whole seconds) of a 429.
    pub fn admit(&mut self, vault: &str, class: Class, now: Instant) -> Result<(), u64> {
        let limit = match class {
            Class::SoftwareCreate => Some(self.software),
            Class::HsmCreate => Some(self.hsm),
            Class::Other => self.other,
        };
        let state = self.vaults.entry(vault.to_owned()).or_default();
        let window = state.admitted.entry(class).or_default();
        while window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            window.pop_front();
        }
        if let Some(limit) = limit
            && window.len() >= limit as usize
        {
            let oldest = *window.front().expect("a full window is not empty");
            let wait = (oldest + WINDOW).saturating_duration_since(now);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let secs = secs.max(1);
            state
                .windows
                .push_back((now, now + Duration::from_secs(secs)));
            *self.throttled.entry(vault.to_owned()).or_default() += 1;
            return Err(secs);
        }
        window.push_back(now);
        *self
            .admitted_total
            .entry((vault.to_owned(), class))
            .or_default() += 1;
        Ok(())
    }

    pub fn describe(&self) -> Value {
        let admitted: BTreeMap<String, BTreeMap<&str, u64>> =
            self.admitted_total
                .iter()
                .fold(BTreeMap::new(), |mut acc, ((vault, class), n)| {
                    acc.entry(vault.clone())
                        .or_default()
                        .insert(class.as_str(), *n);
                    acc
                });
        json!({
            "perTenSeconds": self.software,
            "hsmPerTenSeconds": self.hsm,
            "otherPerTenSeconds": self.other,
            "graceMillis": self.grace.as_millis() as u64,
            "admitted": admitted,
            "throttled": self.throttled,
            "inRetryAfterWindow": self.in_window,
            "inRetryAfterWindowAfterGrace": self.in_window_after_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per: u32) -> Budget {
        Budget::new(&BudgetConfigIn {
            per_ten_seconds: per,
            hsm_per_ten_seconds: None,
            other_per_ten_seconds: None,
            grace_millis: Some(100),
        })
        .unwrap()
    }

    #[test]
    fn sliding_window_refuses_beyond_the_limit_with_retry_after() {
        let mut b = budget(2);
        let t0 = Instant::now();
        assert_eq!(b.admit("v", Class::SoftwareCreate, t0), Ok(()));
        assert_eq!(
            b.admit("v", Class::SoftwareCreate, t0 + Duration::from_secs(3)),
            Ok(())
        );
        // Full: the oldest leaves the window at t0 + 10 s, 6.5 s from now: 7 whole seconds.
        assert_eq!(
            b.admit("v", Class::SoftwareCreate, t0 + Duration::from_millis(3500)),
            Err(7)
        );
        // Other requests are unlimited unless configured; other vaults have their own window.
        assert_eq!(b.admit("v", Class::Other, t0), Ok(()));
        assert_eq!(b.admit("w", Class::SoftwareCreate, t0), Ok(()));
        // The refused request did not count: at t0 + 10 s one slot is free again.
        assert_eq!(
            b.admit("v", Class::SoftwareCreate, t0 + Duration::from_secs(10)),
            Ok(())
        );
        assert_eq!(b.describe()["throttled"]["v"], 1);
        assert_eq!(b.describe()["admitted"]["v"]["softwareCreate"], 3);
    }

    #[test]
    fn requests_inside_a_retry_after_window_are_counted() {
        let mut b = budget(1);
        let t0 = Instant::now();
        b.admit("v", Class::SoftwareCreate, t0).unwrap();
        let retry = b
            .admit("v", Class::SoftwareCreate, t0 + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(retry, 9);
        let sent = t0 + Duration::from_secs(1);
        b.arrival("v", sent + Duration::from_millis(50)); // in flight: inside, within grace
        b.arrival("v", sent + Duration::from_secs(2)); // sent after the 429: a violation
        b.arrival("w", sent + Duration::from_secs(2)); // another vault: not throttled
        b.arrival("v", sent + Duration::from_secs(9)); // the window has closed
        let d = b.describe();
        assert_eq!(d["inRetryAfterWindow"]["v"], 2);
        assert_eq!(d["inRetryAfterWindowAfterGrace"]["v"], 1);
        assert!(d["inRetryAfterWindow"].get("w").is_none());
    }
}
