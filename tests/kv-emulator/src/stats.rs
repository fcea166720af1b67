//! Request and fault counters for `/stats`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Stable operation names used in `/stats` and in the fault filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    CreateKey,
    ImportKey,
    GetKey,
    UpdateKey,
    ListVersions,
    ListKeys,
    RotateKey,
    GetRotationPolicy,
    SetRotationPolicy,
    DeleteKey,
    GetDeletedKey,
    PurgeDeletedKey,
    RecoverDeletedKey,
    ListDeletedKeys,
    Unauthorized,
    Other,
}

impl Operation {
    pub const ALL: [Operation; 16] = [
        Operation::CreateKey,
        Operation::ImportKey,
        Operation::GetKey,
        Operation::UpdateKey,
        Operation::ListVersions,
        Operation::ListKeys,
        Operation::RotateKey,
        Operation::GetRotationPolicy,
        Operation::SetRotationPolicy,
        Operation::DeleteKey,
        Operation::GetDeletedKey,
        Operation::PurgeDeletedKey,
        Operation::RecoverDeletedKey,
        Operation::ListDeletedKeys,
        Operation::Unauthorized,
        Operation::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateKey => "create_key",
            Operation::ImportKey => "import_key",
            Operation::GetKey => "get_key",
            Operation::UpdateKey => "update_key",
            Operation::ListVersions => "list_versions",
            Operation::ListKeys => "list_keys",
            Operation::RotateKey => "rotate_key",
            Operation::GetRotationPolicy => "get_rotation_policy",
            Operation::SetRotationPolicy => "set_rotation_policy",
            Operation::DeleteKey => "delete_key",
            Operation::GetDeletedKey => "get_deleted_key",
            Operation::PurgeDeletedKey => "purge_deleted_key",
            Operation::RecoverDeletedKey => "recover_deleted_key",
            Operation::ListDeletedKeys => "list_deleted_keys",
            Operation::Unauthorized => "unauthorized",
            Operation::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Self::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

/// Status recorded for a connection dropped by the `reset` fault.
pub const STATUS_RESET: u16 = 0;

#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<(String, String, Operation, u16), u64>,
    /// (vault, key, operation) -> count: what one key cost, whatever else runs alongside.
    keys: BTreeMap<(String, String, Operation), u64>,
    faults: BTreeMap<&'static str, u64>,
    dialect: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Counters>,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record_request(&self, vault: &str, method: &str, op: Operation, status: u16) {
        *self
            .lock()
            .requests
            .entry((vault.to_string(), method.to_string(), op, status))
            .or_default() += 1;
    }

    /// A request whose path names key `key` (the unauthenticated challenge round included).
    pub fn record_key_request(&self, vault: &str, key: &str, op: Operation) {
        *self
            .lock()
            .keys
            .entry((vault.to_string(), key.to_string(), op))
            .or_default() += 1;
    }

    pub fn record_fault(&self, kind: &'static str) {
        *self.lock().faults.entry(kind).or_default() += 1;
    }

    /// A request whose answer the dialect flag `flag` changed.
    pub fn record_dialect(&self, flag: &'static str) {
        *self.lock().dialect.entry(flag).or_default() += 1;
    }

    pub fn reset(&self) {
        *self.lock() = Counters::default();
    }

    pub fn snapshot(&self) -> Value {
        let counters = self.lock();
        let requests: Vec<Value> = counters
            .requests
            .iter()
            .map(|((vault, method, op, status), count)| {
                json!({
                    "vault": vault,
                    "method": method,
                    "operation": op.as_str(),
                    "status": status,
                    "count": count,
                })
            })
            .collect();
        let keys: Vec<Value> = counters
            .keys
            .iter()
            .map(|((vault, key, op), count)| {
                json!({ "vault": vault, "key": key, "operation": op.as_str(), "count": count })
            })
            .collect();
        json!({ "requests": requests, "keys": keys, "faults": counters.faults, "dialect": counters.dialect })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let stats = Stats::default();
        stats.record_request("default", "POST", Operation::CreateKey, 200);
        stats.record_request("default", "POST", Operation::CreateKey, 200);
        stats.record_request("default", "POST", Operation::Unauthorized, 401);
        stats.record_key_request("default", "k1", Operation::CreateKey);
        stats.record_fault("throttle");
        stats.record_dialect("hideDisabledKeys");
        let snap = stats.snapshot();
        assert_eq!(snap["requests"].as_array().unwrap().len(), 2);
        assert_eq!(snap["requests"][0]["operation"], "create_key");
        assert_eq!(snap["requests"][0]["count"], 2);
        assert_eq!(snap["keys"][0]["key"], "k1");
        assert_eq!(snap["keys"][0]["count"], 1);
        assert_eq!(snap["faults"]["throttle"], 1);
        assert_eq!(snap["dialect"]["hideDisabledKeys"], 1);
        stats.reset();
        assert_eq!(
            stats.snapshot(),
            json!({"requests": [], "keys": [], "faults": {}, "dialect": {}})
        );
    }

    #[test]
    fn operation_names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
        assert_eq!(Operation::parse("nope"), None);
    }
}
