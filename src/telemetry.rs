//! Logs and Prometheus metrics.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber. `level` is an `EnvFilter` directive (e.g. `info`,
/// `vaultkey_operator=debug`); `RUST_LOG` overrides it.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_ansi(false).with_current_span(true))
            .init(),
        LogFormat::Text => {
            // Text logs go to stderr; colour them only when that is a terminal.
            let ansi = use_ansi(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            registry
                .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
                .init()
        }
    }
}

/// Whether text logs carry ANSI colours: only on a terminal (in a pod, `kubectl logs` would
/// show the escape codes), and not when `NO_COLOR` is set to a non-empty value.
pub fn use_ansi(to_terminal: bool, no_color: Option<&OsStr>) -> bool {
    to_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VaultRequestLabels {
    pub operation: String,
    /// HTTP status, or `timeout` / `transport` when there was none.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VaultLabels {
    pub vault: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// One series per VaultKey: the gauges below cost one series each per VaultKey, removed when
/// the VaultKey goes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub namespace: String,
    pub name: String,
}

/// What the per-VaultKey gauges show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGauges {
    pub ready: bool,
    /// Unix time the current version expires, if it does.
    pub expires: Option<i64>,
    /// Unix time of the next automatic rotation, if one is scheduled.
    pub next_rotation: Option<i64>,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub reconciles: Family<OutcomeLabels, Counter>,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub vault_requests: Family<VaultRequestLabels, Counter>,
    pub vault_request_duration: Family<OperationLabels, Histogram>,
    pub vault_throttled: Family<VaultLabels, Counter>,
    pub vault_paced: Family<VaultLabels, Counter>,
    pub kube_writes: Family<KindLabels, Counter>,
    pub managed_keys: Gauge,
    pub undecodable_objects: Gauge,
    pub rotations_observed: Family<KindLabels, Counter>,
    pub listing_wakes: Counter,
    pub overdue_retries: Counter,
    pub key_ready: Family<KeyLabels, Gauge>,
    pub key_expiry: Family<KeyLabels, Gauge>,
    pub key_next_rotation: Family<KeyLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 14)
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vaultkey");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations by outcome (ready, not_ready, error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that ended in an error, by condition reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(duration_buckets());
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        let vault_requests = Family::<VaultRequestLabels, Counter>::default();
        registry.register(
            "keyvault_requests",
            "Key Vault requests by operation and HTTP status",
            vault_requests.clone(),
        );
        let vault_request_duration =
            Family::<OperationLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(duration_buckets())
            });
        registry.register(
            "keyvault_request_duration_seconds",
            "Key Vault request latency by operation",
            vault_request_duration.clone(),
        );
        let vault_throttled = Family::<VaultLabels, Counter>::default();
        registry.register(
            "keyvault_throttled",
            "Key Vault answers of 429 Too Many Requests, by vault",
            vault_throttled.clone(),
        );
        let vault_paced = Family::<VaultLabels, Counter>::default();
        registry.register(
            "keyvault_paced",
            "Requests not sent because the vault's request budget had no slot soon (the reconcile comes back at a promised time), by vault",
            vault_paced.clone(),
        );
        let kube_writes = Family::<KindLabels, Counter>::default();
        registry.register(
            "kubernetes_writes",
            "Writes to the Kubernetes API by kind (status, finalizer, event)",
            kube_writes.clone(),
        );
        let managed_keys = Gauge::default();
        registry.register(
            "managed_keys",
            "VaultKeys currently known to this operator",
            managed_keys.clone(),
        );
        let listing_wakes = Counter::default();
        registry.register(
            "listing_wakes",
            "Converged VaultKeys woken for a full read because their vault's key list showed a change (or the vault went back to per-key reads)",
            listing_wakes.clone(),
        );
        let overdue_retries = Counter::default();
        registry.register(
            "overdue_retries",
            "VaultKeys whose retry after a failure had not begun a resync after it was due, started by the observer (should stay 0)",
            overdue_retries.clone(),
        );
        let undecodable_objects = Gauge::default();
        registry.register(
            "undecodable_objects",
            "VaultKeys the API server holds that this operator cannot decode (isolated, reported on the object)",
            undecodable_objects.clone(),
        );
        let rotations_observed = Family::<KindLabels, Counter>::default();
        registry.register(
            "rotations_observed",
            "New key versions seen, by kind (manual, automatic, import)",
            rotations_observed.clone(),
        );
        let key_ready = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "key_ready",
            "1 when the VaultKey is Ready, 0 when not (one series per VaultKey)",
            key_ready.clone(),
        );
        let key_expiry = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "key_expiry_timestamp_seconds",
            "Unix time the VaultKey's current version expires (no series when it does not)",
            key_expiry.clone(),
        );
        let key_next_rotation = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "key_next_rotation_timestamp_seconds",
            "Unix time Key Vault next rotates the VaultKey's key (no series when no rotation is scheduled)",
            key_next_rotation.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            key_ready,
            key_expiry,
            key_next_rotation,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            vault_requests,
            vault_request_duration,
            vault_throttled,
            vault_paced,
            kube_writes,
            managed_keys,
            undecodable_objects,
            listing_wakes,
            overdue_retries,
            rotations_observed,
        }
    }

    pub fn vault_request(&self, operation: &str, status: &str, elapsed: Duration) {
        self.vault_requests
            .get_or_create(&VaultRequestLabels {
                operation: operation.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.vault_request_duration
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A new key version seen: `manual` (rotateToken), `automatic` (Key Vault), `import`.
    pub fn rotation(&self, kind: &str) {
        self.rotations_observed
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// How a reconcile ended: ready, not_ready, paced or error.
    pub fn reconcile_outcome(&self, outcome: &str) {
        self.reconciles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn kube_write(&self, kind: &str) {
        self.kube_writes
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Sets the VaultKey's gauges; a time that is not known has no series.
    pub fn key_state(&self, namespace: &str, name: &str, state: KeyGauges) {
        let labels = KeyLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.key_ready
            .get_or_create(&labels)
            .set(i64::from(state.ready));
        for (family, value) in [
            (&self.key_expiry, state.expires),
            (&self.key_next_rotation, state.next_rotation),
        ] {
            match value {
                Some(at) => {
                    family.get_or_create(&labels).set(at);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
    }

    /// The VaultKey is gone: its series go too.
    pub fn forget_key(&self, namespace: &str, name: &str) {
        let labels = KeyLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.key_ready.remove(&labels);
        self.key_expiry.remove(&labels);
        self.key_next_rotation.remove(&labels);
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vaultkey_has_one_series_per_gauge_until_it_goes() {
        let metrics = Metrics::new();
        let series = |m: &Metrics, name: &str| {
            m.render()
                .lines()
                .filter(|l| l.starts_with(name))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let state = KeyGauges {
            ready: true,
            expires: Some(1_800_000_000),
            next_rotation: Some(1_790_000_000),
        };
        metrics.key_state("ns", "a", state);
        metrics.key_state("ns", "a", state);
        metrics.key_state(
            "ns",
            "b",
            KeyGauges {
                ready: false,
                expires: None,
                next_rotation: None,
            },
        );
        assert_eq!(
            series(&metrics, "vaultkey_key_expiry_timestamp_seconds{"),
            [r#"vaultkey_key_expiry_timestamp_seconds{namespace="ns",name="a"} 1800000000"#]
        );
        assert_eq!(series(&metrics, "vaultkey_key_ready{").len(), 2);
        assert!(
            series(&metrics, "vaultkey_key_ready{")
                .contains(&r#"vaultkey_key_ready{namespace="ns",name="b"} 0"#.to_owned())
        );
        // The rotation no longer scheduled: its series goes, the others stay.
        metrics.key_state(
            "ns",
            "a",
            KeyGauges {
                next_rotation: None,
                ..state
            },
        );
        assert!(series(&metrics, "vaultkey_key_next_rotation_timestamp_seconds{").is_empty());
        assert_eq!(
            series(&metrics, "vaultkey_key_expiry_timestamp_seconds{").len(),
            1
        );
        metrics.forget_key("ns", "a");
        metrics.forget_key("ns", "b");
        assert!(series(&metrics, "vaultkey_key_").is_empty());
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_ansi(true, None));
        assert!(use_ansi(true, Some(OsStr::new(""))));
        assert!(!use_ansi(true, Some(OsStr::new("1"))));
        assert!(!use_ansi(false, None));
        assert!(!use_ansi(false, Some(OsStr::new(""))));
    }
}
