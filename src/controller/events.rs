//! Kubernetes Events about VaultKeys.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use tracing::warn;

use super::{Context, FIELD_MANAGER};

/// The API server's limit for an object name (a DNS subdomain).
const MAX_NAME: usize = 253;
/// `.` and 16 hex digits after the object's name.
const SUFFIX: usize = 17;

/// Creates an events.k8s.io Event directly. The runtime's `Recorder` keeps every event it
/// published for six minutes (to count repeats as a series) and scans that cache on each
/// publish: with thousands of VaultKeys that is tens of MiB and a global lock. The operator
/// publishes an event only when something changed, so there are no repeats to aggregate.
pub async fn publish(
    ctx: &Context,
    regarding: ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ns = regarding.namespace.clone().unwrap_or_default();
    let event = K8sEvent {
        metadata: ObjectMeta {
            name: Some(event_name(regarding.name.as_deref().unwrap_or("vaultkey"))),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        action: Some("Reconcile".into()),
        reason: Some(reason.into()),
        note: Some(note.chars().take(1024).collect()),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        regarding: Some(regarding),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(ctx.settings.reporter.clone()),
        ..Default::default()
    };
    match Api::<K8sEvent>::namespaced(ctx.client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
    {
        Ok(_) => ctx.metrics.kube_write("event"),
        Err(e) => warn!(error = %e, reason, "could not publish an event"),
    }
}

/// `<object name>.<random>`, shortened so any legal object name gives a legal event name: a
/// DNS subdomain of at most 253 characters whose labels start and end alphanumeric.
fn event_name(object: &str) -> String {
    let mut prefix: &str = &object[..object.len().min(MAX_NAME - SUFFIX)];
    prefix = prefix.trim_end_matches(['.', '-']);
    format!("{prefix}.{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= MAX_NAME
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    proptest::proptest! {
        /// Every legal VaultKey name (a DNS subdomain) gives a legal event name.
        #[test]
        fn event_names_are_legal_for_every_legal_object_name(
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", 1..8)
        ) {
            let mut object = labels.join(".");
            object.truncate(MAX_NAME);
            let object = object.trim_end_matches(['.', '-']).to_owned();
            proptest::prop_assume!(is_dns_subdomain(&object));
            let name = event_name(&object);
            proptest::prop_assert!(is_dns_subdomain(&name), "{name}");
        }
    }

    #[test]
    fn the_longest_object_name_gives_a_legal_event_name() {
        let object = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(object.len(), 253);
        assert!(is_dns_subdomain(&event_name(&object)));
    }
}
