//! VaultKeys the API server holds but the operator's types cannot decode (a value the schema
//! of an older CRD admitted, or a hand-made object). kube's `DeserializeGuard` keeps them from
//! failing the whole list; here each is reported on the object itself, naming the field, and
//! left alone: no vault is touched for an object whose spec cannot be read.

use chrono::Utc;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{Context, Error, FIELD_MANAGER, FINALIZER, Watched, events, is_abandoned};
use crate::api::VaultKey;

pub const REASON: &str = "InvalidObject";

/// Where decoding fails and why, e.g. `spec.publicExponent: invalid value: integer
/// `4294967297`, expected i32`.
pub fn undecodable_field(object: Value) -> Option<String> {
    match serde_path_to_error::deserialize::<_, VaultKey>(object) {
        Ok(_) => None,
        Err(e) => Some(format!("{}: {}", e.path(), e.inner())),
    }
}

pub async fn report(
    object: &Watched,
    invalid: &InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    let ns = meta.namespace.as_deref().ok_or(Error::NoNamespace)?;
    let name = meta.name.as_deref().unwrap_or_default();
    ctx.metrics.reconcile_outcome("invalid");
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &ApiResource::erase::<VaultKey>(&()));
    let Some(raw) = api.get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    let raw = serde_json::to_value(&raw).unwrap_or(Value::Null);
    let problem = undecodable_field(raw.clone()).unwrap_or_else(|| invalid.error.clone());

    if meta.deletion_timestamp.is_some() && is_abandoned(meta) {
        let finalizers: Vec<&String> = meta
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != FINALIZER)
            .collect();
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "finalizers": finalizers,
                "resourceVersion": meta.resource_version,
            }})),
        )
        .await?;
        ctx.metrics.kube_write("finalizer");
        info!(vaultkey = %format!("{ns}/{name}"), "undecodable VaultKey abandoned: finalizer removed, vault not touched");
        return Ok(Action::await_change());
    }

    let mut message = format!(
        "the operator cannot read this VaultKey: {problem}; the API server accepted a value the operator cannot use: fix that field (kubectl edit vaultkey {name})"
    );
    if meta.deletion_timestamp.is_some() {
        message.push_str(&format!(
            "; it is being deleted: fix the field so its deletionPolicy can be applied, or annotate it {}=true to let it go without touching the vault",
            super::ABANDON_ANNOTATION
        ));
    }
    let ready = raw
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"));
    if ready.is_some_and(|c| c["reason"] == REASON && c["message"] == message.as_str()) {
        return Ok(Action::await_change());
    }
    warn!(vaultkey = %format!("{ns}/{name}"), %problem, "VaultKey cannot be decoded");
    events::publish(
        ctx,
        object.object_ref(&()),
        EventType::Warning,
        REASON,
        message.clone(),
    )
    .await;
    let transition = match ready {
        Some(c) if c["status"] == "False" => c["lastTransitionTime"].clone(),
        _ => json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    };
    // A merge patch of the condition alone: the rest of status (what the vault held when the
    // object was last readable) stays as it is.
    api.patch_status(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"status": {
            "conditions": [{
                "type": "Ready",
                "status": "False",
                "reason": REASON,
                "message": message,
                "observedGeneration": meta.generation,
                "lastTransitionTime": transition,
            }],
            "observedGeneration": meta.generation,
        }})),
    )
    .await?;
    ctx.metrics.kube_write("status");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_that_cannot_be_decoded() {
        let object = json!({
            "apiVersion": "vaultkey.dev/v1alpha1",
            "kind": "VaultKey",
            "metadata": {"name": "k", "namespace": "ns"},
            "spec": {"vaultUrl": "https://v.vault.azure.net", "keyType": "RSA", "publicExponent": 4_294_967_297u64},
        });
        let problem = undecodable_field(object).expect("an exponent above i32 does not decode");
        assert!(problem.starts_with("spec.publicExponent: "), "{problem}");
        assert!(problem.contains("4294967297"), "{problem}");
    }

    #[test]
    fn a_decodable_object_has_no_problem() {
        let object = json!({
            "apiVersion": "vaultkey.dev/v1alpha1",
            "kind": "VaultKey",
            "metadata": {"name": "k", "namespace": "ns"},
            "spec": {"vaultUrl": "https://v.vault.azure.net", "keyType": "EC"},
        });
        assert_eq!(undecodable_field(object), None);
    }
}
