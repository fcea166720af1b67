//! The pause annotation: `vaultkey.dev/paused: "true"` stops all work on one VaultKey. While
//! it is set the operator makes no vault call and no Kubernetes write for the object, except
//! one status write that adds a `Paused` condition (since when, and what to do); a spec change
//! made meanwhile is applied once the annotation is removed, like any other change.
//!
//! Deletion while paused: a VaultKey whose deletion would not touch the vault anyway
//! (deletionPolicy Retain, managementPolicy Observe, or the abandon annotation) lets its
//! finalizer go; one that would delete or purge the key waits, with the `Paused` condition
//! saying so, until the annotation is removed (the deletionPolicy then applies) or the abandon
//! annotation is set (the key is left as it is). Pausing is "hands off", so a paused object
//! never deletes a key.

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::info;

use super::{Context, Error, FIELD_MANAGER, FINALIZER, is_abandoned};
use crate::api::{Condition, DeletionPolicy, ManagementPolicy, VaultKey, VaultKeyStatus};
use crate::status::k8s_time;

/// Set to "true" to stop all work on a VaultKey until it is removed.
pub const PAUSED_ANNOTATION: &str = "vaultkey.dev/paused";
/// The condition type that says a VaultKey is paused.
pub const PAUSED: &str = "Paused";

/// What the reconcile of a paused VaultKey does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    /// Not paused: reconcile as usual.
    No,
    /// Paused: record it in status (once) and wait for a change.
    Hold { deleting: bool },
    /// Being deleted, and letting go touches no vault: the finalizer runs as usual.
    LetGo,
}

pub fn is_paused(vk: &VaultKey) -> bool {
    vk.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Pure: what a VaultKey's pause annotation asks for.
pub fn decide(vk: &VaultKey) -> Paused {
    if !is_paused(vk) {
        return Paused::No;
    }
    let deleting = vk.metadata.deletion_timestamp.is_some();
    let holds_finalizer = vk.finalizers().iter().any(|f| f == FINALIZER);
    let touches_no_vault = is_abandoned(&vk.metadata)
        || vk.spec.deletion_policy == DeletionPolicy::Retain
        || vk.spec.management_policy == ManagementPolicy::Observe;
    if deleting && (!holds_finalizer || touches_no_vault) {
        Paused::LetGo
    } else {
        Paused::Hold { deleting }
    }
}

/// Pure: the status to write for a paused VaultKey, or `None` when the stored one already
/// says so. Everything else in status is kept as it is (it describes the last reconcile);
/// the condition's transition time is when the pause was first seen.
pub fn paused_status(
    previous: Option<&VaultKeyStatus>,
    deleting: bool,
    now: DateTime<Utc>,
) -> Option<VaultKeyStatus> {
    let mut status = previous.cloned().unwrap_or_default();
    let existing = status.conditions.iter().find(|c| c.type_ == PAUSED);
    let since = match existing {
        Some(c) if c.status == "True" => c.last_transition_time.clone(),
        _ => k8s_time(now),
    };
    let since_text = since.0.to_string();
    let (reason, message) = if deleting {
        (
            "DeletionWaits",
            format!(
                "paused since {since_text} ({PAUSED_ANNOTATION}=true) and being deleted: the deletionPolicy would touch the vault, so deletion waits; remove the annotation to apply the deletionPolicy, or annotate {}=true to let the VaultKey go and leave the key as it is",
                super::ABANDON_ANNOTATION
            ),
        )
    } else {
        (
            "Annotation",
            format!(
                "paused since {since_text} ({PAUSED_ANNOTATION}=true): no Key Vault call and no write until the annotation is removed; spec changes are applied then"
            ),
        )
    };
    let condition = Condition {
        type_: PAUSED.into(),
        status: "True".into(),
        reason: reason.into(),
        message,
        // The generation that was current when the pause was seen; not bumped by spec
        // changes made while paused (each would be a write, and none of them is applied).
        observed_generation: existing
            .and_then(|c| c.observed_generation)
            .or(status.observed_generation),
        last_transition_time: since,
    };
    if existing == Some(&condition) {
        return None;
    }
    status.conditions.retain(|c| c.type_ != PAUSED);
    status.conditions.push(condition);
    Some(status)
}

/// Whether status carries a `Paused` condition (to be dropped by the next write).
pub fn shows_paused(vk: &VaultKey) -> bool {
    vk.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == PAUSED))
}

/// Holds a paused VaultKey: at most one status write, then wait for a change (the watch
/// passes changes of `vaultkey.dev/` annotations, so removing the pause wakes it).
pub async fn hold(
    vk: &VaultKey,
    deleting: bool,
    ctx: &Context,
    api: &Api<VaultKey>,
) -> Result<Action, Error> {
    ctx.metrics.reconcile_outcome("paused");
    if let Some(status) = paused_status(vk.status.as_ref(), deleting, Utc::now()) {
        info!(deleting, "paused: recording it in status");
        let patch = json!({
            "apiVersion": "vaultkey.dev/v1alpha1",
            "kind": "VaultKey",
            "status": status,
        });
        let written = api
            .patch_status(
                &vk.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
        ctx.own_writes.record(&written);
        ctx.metrics.kube_write("status");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ABANDON_ANNOTATION;
    use chrono::TimeZone;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn vaultkey(yaml: &str) -> VaultKey {
        serde_norway::from_str(yaml).unwrap()
    }

    fn base(annotations: &str, finalizers: &str, deleting: bool, spec: &str) -> VaultKey {
        let deletion = if deleting {
            "  deletionTimestamp: 2026-12-01T00:00:00Z\n"
        } else {
            ""
        };
        vaultkey(&format!(
            "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata:\n  name: k\n  namespace: ns\n  generation: 3\n  annotations: {annotations}\n  finalizers: {finalizers}\n{deletion}spec:\n  vaultUrl: https://v.vault.azure.net\n  keyType: EC\n{spec}"
        ))
    }

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, minute, 0).unwrap()
    }

    #[test]
    fn only_the_value_true_pauses() {
        for (value, paused) in [("\"true\"", true), ("\"false\"", false), ("\"yes\"", false)] {
            let vk = base(
                &format!("{{\"{PAUSED_ANNOTATION}\": {value}}}"),
                "[]",
                false,
                "",
            );
            assert_eq!(is_paused(&vk), paused, "{value}");
        }
        assert_eq!(decide(&base("{}", "[]", false, "")), Paused::No);
    }

    #[test]
    fn a_paused_deletion_lets_go_only_when_no_vault_would_be_touched() {
        let paused = format!("{{\"{PAUSED_ANNOTATION}\": \"true\"}}");
        let abandoned =
            format!("{{\"{PAUSED_ANNOTATION}\": \"true\", \"{ABANDON_ANNOTATION}\": \"true\"}}");
        let fin = format!("[\"{FINALIZER}\"]");
        let cases = [
            // (annotations, finalizers, deleting, spec, expected)
            (&paused, "[]", false, "", Paused::Hold { deleting: false }),
            (
                &paused,
                fin.as_str(),
                false,
                "",
                Paused::Hold { deleting: false },
            ),
            (&paused, fin.as_str(), true, "", Paused::LetGo), // Retain by default
            (
                &paused,
                fin.as_str(),
                true,
                "  deletionPolicy: Delete\n",
                Paused::Hold { deleting: true },
            ),
            (
                &paused,
                fin.as_str(),
                true,
                "  deletionPolicy: Purge\n",
                Paused::Hold { deleting: true },
            ),
            (
                &abandoned,
                fin.as_str(),
                true,
                "  deletionPolicy: Purge\n",
                Paused::LetGo,
            ),
            (
                &paused,
                fin.as_str(),
                true,
                "  managementPolicy: Observe\n",
                Paused::LetGo,
            ),
            (
                &paused,
                "[]",
                true,
                "  deletionPolicy: Delete\n",
                Paused::LetGo,
            ),
        ];
        for (annotations, finalizers, deleting, spec, expected) in cases {
            let vk = base(annotations, finalizers, deleting, spec);
            assert_eq!(
                decide(&vk),
                expected,
                "{annotations} {finalizers} {deleting} {spec}"
            );
        }
    }

    fn ready(generation: i64) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Reconciled".into(),
            message: "key k is at version v1".into(),
            observed_generation: Some(generation),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn pausing_writes_once_keeps_status_and_says_since_when() {
        let previous = VaultKeyStatus {
            conditions: vec![ready(2)],
            observed_generation: Some(2),
            current_version: Some("v1".into()),
            ..Default::default()
        };
        let first = paused_status(Some(&previous), false, at(0)).expect("a first write");
        assert_eq!(first.current_version.as_deref(), Some("v1"));
        assert_eq!(first.conditions[0], ready(2), "Ready is left as it was");
        let paused = first.conditions.iter().find(|c| c.type_ == PAUSED).unwrap();
        assert_eq!(paused.reason, "Annotation");
        assert_eq!(paused.last_transition_time, k8s_time(at(0)));
        assert!(
            paused.message.contains("2026-12-01T10:00:00Z"),
            "{}",
            paused.message
        );
        assert!(paused.message.contains(PAUSED_ANNOTATION));
        // Later passes (a resync, a spec change while paused) write nothing.
        assert_eq!(paused_status(Some(&first), false, at(5)), None);
        // Being deleted while paused is said once more, with the same "since".
        let deleting = paused_status(Some(&first), true, at(9)).expect("deletion is recorded");
        let paused = deleting
            .conditions
            .iter()
            .find(|c| c.type_ == PAUSED)
            .unwrap();
        assert_eq!(paused.reason, "DeletionWaits");
        assert_eq!(paused.last_transition_time, k8s_time(at(0)));
        assert!(paused.message.contains(ABANDON_ANNOTATION));
        assert_eq!(deleting.conditions.len(), 2);
        assert_eq!(paused_status(Some(&deleting), true, at(10)), None);
    }

    #[test]
    fn a_vaultkey_paused_before_its_first_reconcile_gets_only_the_condition() {
        let status = paused_status(None, false, at(1)).expect("a write");
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.conditions[0].type_, PAUSED);
        assert_eq!(status.current_version, None);
    }
}
