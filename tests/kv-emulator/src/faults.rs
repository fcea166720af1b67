//! Fault injection for reliability tests (`PUT/GET/DELETE /faults`).

use std::collections::BTreeSet;
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::budget::{Budget, BudgetConfigIn, Class};
use crate::stats::Operation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// 429 with `Retry-After`, code "Throttled".
    Throttle,
    /// 500 before doing anything.
    Error500,
    /// 503 before doing anything.
    Error503,
    /// Do the operation, then hold the response (the client times out).
    TimeoutAfterCommit,
    /// Drop the connection without a response, before doing the operation.
    Reset,
    /// Delay, then answer normally.
    Slow,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Throttle,
        FaultKind::Error500,
        FaultKind::Error503,
        FaultKind::TimeoutAfterCommit,
        FaultKind::Reset,
        FaultKind::Slow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Throttle => "throttle",
            FaultKind::Error500 => "error500",
            FaultKind::Error503 => "error503",
            FaultKind::TimeoutAfterCommit => "timeout_after_commit",
            FaultKind::Reset => "reset",
            FaultKind::Slow => "slow",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Body of `PUT /faults`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultConfigIn {
    /// Probability of a random fault; may be left out (0) when only `createBudget` is set.
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub kinds: Vec<String>,
    pub seed: Option<u64>,
    pub retry_after_seconds: Option<u64>,
    pub slow_millis: Option<u64>,
    /// How long `timeout_after_commit` holds the response (default 60 s).
    pub hold_seconds: Option<u64>,
    pub operations: Option<Vec<String>>,
    /// Key Vault's per-vault request budget (rate-limit mode, see `budget.rs`).
    #[serde(default)]
    pub create_budget: Option<BudgetConfigIn>,
}

/// One injected fault and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub retry_after_seconds: u64,
    pub slow_millis: u64,
    pub hold_seconds: u64,
}

#[derive(Debug)]
struct ActiveFaults {
    rate: f64,
    kinds: Vec<FaultKind>,
    seed: u64,
    retry_after_seconds: u64,
    slow_millis: u64,
    hold_seconds: u64,
    operations: Option<BTreeSet<Operation>>,
    rng: StdRng,
}

#[derive(Debug, Default)]
pub struct Faults {
    active: Mutex<Option<ActiveFaults>>,
    budget: Mutex<Option<Budget>>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ActiveFaults>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, Option<Budget>> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Validates and installs a configuration (replacing any previous one, budget included).
    pub fn configure(&self, cfg: FaultConfigIn) -> Result<Value, String> {
        if !(0.0..=1.0).contains(&cfg.rate) {
            return Err("rate must be between 0 and 1".into());
        }
        let budget = cfg.create_budget.as_ref().map(Budget::new).transpose()?;
        if cfg.kinds.is_empty() && (budget.is_none() || cfg.rate > 0.0) {
            return Err("kinds must name at least one fault kind".into());
        }
        let kinds = cfg
            .kinds
            .iter()
            .map(|k| {
                FaultKind::parse(k).ok_or_else(|| {
                    format!(
                        "unknown fault kind '{k}' (expected {})",
                        FaultKind::ALL.map(FaultKind::as_str).join(", ")
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let operations = match cfg.operations {
            None => None,
            Some(ops) => Some(
                ops.iter()
                    .map(|o| {
                        Operation::parse(o)
                            .filter(|op| *op != Operation::Unauthorized)
                            .ok_or_else(|| format!("unknown or ineligible operation '{o}'"))
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?,
            ),
        };
        *self.lock_budget() = budget;
        if cfg.kinds.is_empty() {
            *self.lock() = None;
            return Ok(self.describe());
        }
        let seed = cfg.seed.unwrap_or_else(rand::random);
        *self.lock() = Some(ActiveFaults {
            rate: cfg.rate,
            kinds,
            seed,
            retry_after_seconds: cfg.retry_after_seconds.unwrap_or(1),
            slow_millis: cfg.slow_millis.unwrap_or(1_000),
            hold_seconds: cfg.hold_seconds.unwrap_or(60),
            operations,
            rng: StdRng::seed_from_u64(seed),
        });
        Ok(self.describe())
    }

    pub fn clear(&self) {
        *self.lock() = None;
        *self.lock_budget() = None;
    }

    /// The budget's counters (`null` when no budget is set).
    pub fn budget_counters(&self) -> Value {
        self.lock_budget()
            .as_ref()
            .map_or(Value::Null, Budget::describe)
    }

    /// Rate-limit mode: counts the request's arrival (Retry-After windows) and admits it, or
    /// answers the Retry-After seconds of a 429. Always admits when no budget is set.
    pub fn admit(&self, vault: &str, class: Class) -> Result<(), u64> {
        let mut guard = self.lock_budget();
        let Some(budget) = guard.as_mut() else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        budget.arrival(vault, now);
        budget.admit(vault, class, now)
    }

    pub fn describe(&self) -> Value {
        let mut described = self.describe_random();
        if let Some(budget) = self.lock_budget().as_ref() {
            described["createBudget"] = budget.describe();
        }
        described
    }

    fn describe_random(&self) -> Value {
        match &*self.lock() {
            None => json!({ "enabled": false }),
            Some(a) => json!({
                "enabled": true,
                "rate": a.rate,
                "kinds": a.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "seed": a.seed,
                "retryAfterSeconds": a.retry_after_seconds,
                "slowMillis": a.slow_millis,
                "holdSeconds": a.hold_seconds,
                "operations": a.operations.as_ref().map(|ops| ops.iter().map(|o| o.as_str()).collect::<Vec<_>>()),
            }),
        }
    }

    /// Draws whether the request for `op` gets a fault, and which.
    pub fn decide(&self, op: Operation) -> Option<Fault> {
        let mut guard = self.lock();
        let active = guard.as_mut()?;
        if op == Operation::Unauthorized {
            return None;
        }
        if let Some(ops) = &active.operations
            && !ops.contains(&op)
        {
            return None;
        }
        if active.rng.random::<f64>() >= active.rate {
            return None;
        }
        let kind = active.kinds[active.rng.random_range(0..active.kinds.len())];
        Some(Fault {
            kind,
            retry_after_seconds: active.retry_after_seconds,
            slow_millis: active.slow_millis,
            hold_seconds: active.hold_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rate: f64, kinds: &[&str], ops: Option<&[&str]>) -> FaultConfigIn {
        FaultConfigIn {
            rate,
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
            seed: Some(42),
            retry_after_seconds: Some(2),
            slow_millis: None,
            hold_seconds: None,
            operations: ops.map(|o| o.iter().map(|s| s.to_string()).collect()),
            create_budget: None,
        }
    }

    #[test]
    fn validates_configuration() {
        let f = Faults::default();
        assert!(f.configure(cfg(1.5, &["throttle"], None)).is_err());
        assert!(f.configure(cfg(0.5, &[], None)).is_err());
        assert!(f.configure(cfg(0.5, &["explode"], None)).is_err());
        assert!(
            f.configure(cfg(0.5, &["reset"], Some(&["unauthorized"])))
                .is_err()
        );
        assert_eq!(f.describe()["enabled"], false);
    }

    #[test]
    fn a_budget_alone_is_a_valid_configuration() {
        let f = Faults::default();
        let cfg: FaultConfigIn =
            serde_json::from_str(r#"{"createBudget": {"perTenSeconds": 1}}"#).unwrap();
        let described = f.configure(cfg).unwrap();
        assert_eq!(described["enabled"], false);
        assert_eq!(described["createBudget"]["perTenSeconds"], 1);
        assert_eq!(f.decide(Operation::CreateKey), None);
        assert_eq!(f.admit("default", Class::SoftwareCreate), Ok(()));
        assert!(f.admit("default", Class::SoftwareCreate).is_err());
        assert_eq!(f.admit("default", Class::Other), Ok(()));
        assert_eq!(f.budget_counters()["throttled"]["default"], 1);
        // A random-fault configuration without a budget replaces it.
        f.configure(cfg_of(0.5, &["slow"])).unwrap();
        assert_eq!(f.budget_counters(), Value::Null);
        assert_eq!(f.admit("default", Class::SoftwareCreate), Ok(()));
        let zero: FaultConfigIn =
            serde_json::from_str(r#"{"createBudget": {"perTenSeconds": 0}}"#).unwrap();
        assert!(f.configure(zero).is_err());
        f.clear();
        assert_eq!(f.describe(), json!({ "enabled": false }));
    }

    fn cfg_of(rate: f64, kinds: &[&str]) -> FaultConfigIn {
        cfg(rate, kinds, None)
    }

    #[test]
    fn seeded_decisions_are_reproducible_and_filtered() {
        let draw = || {
            let f = Faults::default();
            f.configure(cfg(0.3, &["throttle", "error503", "slow"], None))
                .unwrap();
            (0..200)
                .map(|_| f.decide(Operation::GetKey).map(|x| x.kind))
                .collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        let hits = a.iter().filter(|x| x.is_some()).count();
        assert!(
            (30..=90).contains(&hits),
            "{hits} faults out of 200 at rate 0.3"
        );

        let f = Faults::default();
        f.configure(cfg(1.0, &["reset"], Some(&["create_key"])))
            .unwrap();
        assert_eq!(f.decide(Operation::GetKey), None);
        assert_eq!(f.decide(Operation::Unauthorized), None);
        let fault = f.decide(Operation::CreateKey).unwrap();
        assert_eq!(
            (fault.kind, fault.retry_after_seconds),
            (FaultKind::Reset, 2)
        );
        f.clear();
        assert_eq!(f.decide(Operation::CreateKey), None);
    }
}
