//! The Argo CD health check (deploy/argocd/vaultkey-health.lua) run by a real Lua interpreter
//! against VaultKey objects: ones captured from the operator running against the test
//! environment (tests/env/testenv.sh, kv-emulator), and ones whose status the operator's own
//! `status::build` writes, so that a renamed status field breaks these tests and not Argo CD.
//!
//! The interpreter is Lua 5.1 embedded through the `mlua` dev-dependency (features `lua51`,
//! `vendored`: Lua is compiled from source by the build, no system package), the language
//! version of Argo CD's gopher-lua. The objects are turned into Lua table literals here
//! (`lua_literal`) and run through deploy/argocd/test-harness.lua, which mimics Argo CD's
//! sandbox (no string library).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use mlua::{Function, Lua};
use serde_json::{Value, json};
use vaultkey_operator::api::VaultKey;
use vaultkey_operator::status::{self, Memory, Readiness, VaultFacts};

const HEALTH_KEY: &str = "resource.customizations.health.vaultkey.dev_VaultKey";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn argocd_file(name: &str) -> PathBuf {
    repo().join("deploy/argocd").join(name)
}

fn read_argocd_file(name: &str) -> String {
    let path = argocd_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What Argo CD would show for the object: (hs.status, hs.message). Each call gets a fresh Lua
/// state, as each Argo CD health evaluation does.
fn health(object: &Value) -> (String, String) {
    let lua = Lua::new();
    let version: String = lua.globals().get("_VERSION").expect("_VERSION");
    assert_eq!(
        version, "Lua 5.1",
        "Argo CD's gopher-lua implements Lua 5.1"
    );
    let run: Function = lua
        .load(read_argocd_file("test-harness.lua"))
        .set_name("=test-harness.lua")
        .eval()
        .unwrap_or_else(|e| panic!("deploy/argocd/test-harness.lua does not load: {e}"));
    let script = read_argocd_file("vaultkey-health.lua");
    let chunk = format!("return {}\n", lua_literal(object));
    let (status, message): (mlua::LuaString, mlua::LuaString) = run
        .call((script, "vaultkey-health.lua", chunk))
        .unwrap_or_else(|e| panic!("the health script failed: {e}"));
    let text = |s: mlua::LuaString| String::from_utf8(s.as_bytes().to_vec()).expect("utf-8 output");
    (text(status), text(message))
}

/// A Lua expression for a JSON value, as Argo CD hands objects to Lua: objects and arrays become
/// tables, null becomes nil. Whole numbers are written without a fraction so that `tostring`
/// prints them as gopher-lua (Argo CD's Lua) does: `2`, not `2.0`.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i > i64::MIN => i.to_string(),
            _ => format!("{:?}", n.as_f64().expect("a finite number")),
        },
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// A Lua string literal holding exactly the bytes of `s`: printable ASCII as is, everything
/// else as three-digit decimal escapes (never ambiguous with a following digit).
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).expect("fixture is JSON")
}

fn now() -> DateTime<Utc> {
    "2026-11-25T20:18:22Z".parse().expect("timestamp")
}

/// A VaultKey at `generation` whose status is what the operator writes after a reconcile of
/// `observed` that ended in `readiness`.
fn built(generation: i64, observed: i64, readiness: &Readiness) -> Value {
    let mut vk: VaultKey = serde_norway::from_str(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {name: built, namespace: argocd-health}\nspec:\n  vaultUrl: https://my-vault.vault.azure.net\n  keyType: RSA\n",
    )
    .expect("VaultKey manifest");
    vk.metadata.generation = Some(generation);
    vk.status = Some(status::build(
        None,
        Some(observed),
        &VaultFacts {
            key_name: Some("built"),
            ..Default::default()
        },
        Memory::default(),
        readiness,
        now(),
    ));
    serde_json::to_value(&vk).expect("VaultKey serializes")
}

/// Every reason the operator puts on Ready=False (src/controller.rs: `Failure::reason`,
/// `reason_for`), and whether Argo CD should wait (Progressing) rather than alert (Degraded).
const NOT_READY_REASONS: [(&str, bool); 24] = [
    ("InvalidSpec", false),
    ("KeyExistsNotAdopted", false),
    ("OwnedByAnotherVaultKey", false),
    ("SoftDeletedConflict", false),
    ("ImportSecretMissing", false),
    ("ImportSecretUnreadable", false),
    ("InvalidKeyMaterial", false),
    ("Throttled", true),
    ("Paced", true),
    ("Forbidden", false),
    ("VaultConflict", true),
    ("VaultRejected", false),
    ("VaultServerError", true),
    ("VaultUnreachable", false),
    ("VaultTimeout", true),
    ("VaultError", false),
    ("KeyNotFound", false),
    ("Drifted", false),
    ("VaultNotAllowed", false),
    ("IdentityServiceAccountMissing", false),
    ("IdentityAnnotationMissing", false),
    ("IdentityExchangeRefused", false),
    ("IdentityRequired", false),
    ("IdentityUnavailable", true),
];

#[test]
fn ready_for_the_current_generation_is_healthy() {
    let (status, message) = health(&parse(HEALTHY));
    assert_eq!(status, "Healthy");
    assert_eq!(
        message,
        "key healthy is at version 9ca87cc485a4ecd4f9ba7d5b1f05040b"
    );

    let (status, message) = health(&built(
        3,
        3,
        &Readiness::ready("key built is at version v1"),
    ));
    assert_eq!(status, "Healthy");
    assert_eq!(message, "key built is at version v1");
}

#[test]
fn no_status_yet_is_progressing() {
    let object = parse(NO_STATUS);
    assert!(object.get("status").is_none(), "fixture has no status");
    let (status, message) = health(&object);
    assert_eq!(status, "Progressing");
    assert!(message.contains("Waiting for the operator"), "{message}");

    // Status without a Ready condition (written by something else) is no verdict either.
    let mut object = parse(HEALTHY);
    object["status"]["conditions"][0]["type"] = json!("Synced");
    assert_eq!(health(&object).0, "Progressing");
    object["status"]["conditions"] = json!([]);
    assert_eq!(health(&object).0, "Progressing");
}

#[test]
fn a_generation_the_operator_has_not_observed_is_progressing() {
    let (status, message) = health(&parse(GENERATION_AHEAD));
    assert_eq!(status, "Progressing");
    assert_eq!(
        message,
        "Waiting for the operator to observe generation 2 (status is for generation 1)"
    );

    // Even when the last verdict was a permanent failure: the new spec may fix it.
    let object = built(
        5,
        4,
        &Readiness::not_ready("InvalidSpec", "spec.keySize: bad; fix the spec"),
    );
    assert_eq!(health(&object).0, "Progressing");
    let object = built(5, 4, &Readiness::ready("key built is at version v1"));
    assert_eq!(health(&object).0, "Progressing");
}

#[test]
fn the_conditions_observed_generation_wins_and_status_observed_generation_is_the_fallback() {
    let mut object = parse(HEALTHY);
    object["status"]["observedGeneration"] = json!(0);
    assert_eq!(health(&object).0, "Healthy", "condition says generation 1");

    let mut object = parse(HEALTHY);
    let condition = object["status"]["conditions"][0]
        .as_object_mut()
        .expect("condition");
    condition.remove("observedGeneration");
    assert_eq!(health(&object).0, "Healthy", "status says generation 1");
    object["metadata"]["generation"] = json!(2);
    assert_eq!(health(&object).0, "Progressing");
    object["status"]
        .as_object_mut()
        .expect("status")
        .remove("observedGeneration");
    assert_eq!(
        health(&object).0,
        "Progressing",
        "no observed generation at all"
    );
}

#[test]
fn transient_vault_failures_are_progressing() {
    let (status, message) = health(&parse(THROTTLED));
    assert_eq!(status, "Progressing");
    assert_eq!(
        message,
        "https://127.0.0.1:43147: get_key failed with HTTP 429 (Throttled): Request was not processed because too many requests were received. Reason: injected by kv-emulator."
    );
}

#[test]
fn failures_that_need_a_person_are_degraded() {
    let (status, message) = health(&parse(INVALID_SPEC));
    assert_eq!(status, "Degraded");
    assert_eq!(
        message,
        "spec.rotationPolicy.expiresIn: P1D is shorter than Key Vault's minimum of 28 days; fix the spec"
    );

    let (status, message) = health(&parse(KEY_EXISTS_NOT_ADOPTED));
    assert_eq!(status, "Degraded");
    assert!(message.contains("set spec.adopt: true"), "{message}");
}

#[test]
fn every_not_ready_reason_maps_to_progressing_or_degraded() {
    for (reason, transient) in NOT_READY_REASONS {
        let text = format!("{reason} happened");
        let (status, message) = health(&built(2, 2, &Readiness::not_ready(reason, &text)));
        let expected = if transient { "Progressing" } else { "Degraded" };
        assert_eq!(status, expected, "reason {reason}");
        assert_eq!(message, text, "reason {reason}");
    }
    // A reason this list does not know yet (a newer operator) alerts rather than waits.
    let object = built(2, 2, &Readiness::not_ready("SomethingNew", "new failure"));
    assert_eq!(health(&object).0, "Degraded");
}

/// A paused VaultKey, with the status the operator writes for it (`pause::paused_status`):
/// Suspended whatever Ready and the generation say, with the Paused condition's message.
#[test]
fn a_paused_vaultkey_is_suspended() {
    use vaultkey_operator::controller::pause::paused_status;
    for (ready, generation, deleting) in [
        (Readiness::ready("key built is at version v1"), 2, false),
        (Readiness::not_ready("InvalidSpec", "bad"), 2, false),
        (Readiness::ready("key built is at version v1"), 3, false),
        (Readiness::ready("key built is at version v1"), 2, true),
    ] {
        let mut object = built(generation, 2, &ready);
        let vk: VaultKey = serde_json::from_value(object.clone()).unwrap();
        let status = paused_status(vk.status.as_ref(), deleting, now()).expect("paused status");
        object["status"] = serde_json::to_value(&status).unwrap();
        let (health, message) = health(&object);
        assert_eq!(health, "Suspended");
        assert!(
            message.starts_with("paused since 2026-11-25T20:18:22Z"),
            "{message}"
        );
    }
    // Paused before the first reconcile: no Ready condition at all.
    let mut object = parse(NO_STATUS);
    object["status"] = serde_json::to_value(paused_status(None, false, now()).unwrap()).unwrap();
    assert_eq!(health(&object).0, "Suspended");
    // A Paused condition that is not True (never written by the operator) changes nothing.
    let mut object = parse(INVALID_SPEC);
    object["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "Paused", "status": "False", "reason": "x", "message": "y", "lastTransitionTime": "2026-11-25T20:18:22Z"}));
    assert_eq!(health(&object).0, "Degraded");
}

#[test]
fn ready_unknown_is_progressing() {
    let mut object = parse(INVALID_SPEC);
    object["status"]["conditions"][0]["status"] = json!("Unknown");
    assert_eq!(health(&object).0, "Progressing");
}

#[test]
fn the_message_is_the_conditions_message_byte_for_byte() {
    let text = "vault \"kv\" said: C:\\path\nline two\ttab — ünïcödé \u{1} 0123";
    let (status, message) = health(&built(1, 1, &Readiness::not_ready("Forbidden", text)));
    assert_eq!(status, "Degraded");
    assert_eq!(message, text);

    // An empty message falls back to the reason.
    let (_, message) = health(&built(1, 1, &Readiness::not_ready("VaultTimeout", "")));
    assert_eq!(message, "VaultTimeout");
}

#[test]
fn the_argocd_cm_patch_inlines_the_script_unchanged() {
    let script = read_argocd_file("vaultkey-health.lua");
    let patch = read_argocd_file("argocd-cm-patch.yaml");
    let patch: Value = serde_norway::from_str(&patch).expect("argocd-cm-patch.yaml is YAML");
    assert_eq!(patch["apiVersion"], "v1");
    assert_eq!(patch["kind"], "ConfigMap");
    assert_eq!(patch["metadata"]["name"], "argocd-cm");
    let inlined = patch["data"][HEALTH_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("argocd-cm-patch.yaml has no data.{HEALTH_KEY}"));
    assert!(
        inlined == script,
        "the script inlined in deploy/argocd/argocd-cm-patch.yaml differs from \
         deploy/argocd/vaultkey-health.lua; regenerate the block (4-space indent, `|`)"
    );
}

#[test]
fn lua_literals_round_trip_through_lua() {
    // The converter itself, checked by Lua: a message made of every byte class comes back.
    let mut object = parse(HEALTHY);
    let text: String = (1u8..0x80).map(char::from).chain("é✓".chars()).collect();
    object["status"]["conditions"][0]["message"] = json!(text);
    object["status"]["conditions"][0]["observedGeneration"] = json!(1);
    object["status"]["fraction"] = json!(0.25);
    object["status"]["nothing"] = Value::Null;
    let (status, message) = health(&object);
    assert_eq!(status, "Healthy");
    assert_eq!(message, text);
}

// Objects captured with `kubectl get vaultkey -o json` (managedFields dropped) from the operator
// running against tests/env/testenv.sh and the kv-emulator.

/// Ready=True for generation 1 (the operator created the key).
const HEALTHY: &str = r#"{
  "apiVersion": "vaultkey.dev/v1alpha1",
  "kind": "VaultKey",
  "metadata": {
    "annotations": {
      "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"vaultkey.dev/v1alpha1\",\"kind\":\"VaultKey\",\"metadata\":{\"annotations\":{},\"name\":\"healthy\",\"namespace\":\"cap\"},\"spec\":{\"keySize\":2048,\"keyType\":\"RSA\",\"rotationPolicy\":{\"expiresIn\":\"P90D\",\"lifetimeActions\":[{\"action\":\"Rotate\",\"timeAfterCreate\":\"P30D\"}]},\"tags\":{\"project\":\"test\"},\"vaultUrl\":\"https://127.0.0.1:43147\"}}\n"
    },
    "creationTimestamp": "2026-11-25T20:18:21Z",
    "finalizers": [
      "vaultkey.dev/cleanup"
    ],
    "generation": 1,
    "name": "healthy",
    "namespace": "cap",
    "resourceVersion": "215",
    "uid": "736c2bc4-cb36-432f-be26-0572a0188300"
  },
  "spec": {
    "attributes": {
      "enabled": true
    },
    "deletionPolicy": "Retain",
    "keySize": 2048,
    "keyType": "RSA",
    "rotationPolicy": {
      "expiresIn": "P90D",
      "lifetimeActions": [
        {
          "action": "Rotate",
          "timeAfterCreate": "P30D"
        }
      ]
    },
    "tags": {
      "project": "test"
    },
    "vaultUrl": "https://127.0.0.1:43147"
  },
  "status": {
    "conditions": [
      {
        "lastTransitionTime": "2026-11-25T20:18:22Z",
        "message": "key healthy is at version 9ca87cc485a4ecd4f9ba7d5b1f05040b",
        "observedGeneration": 1,
        "reason": "Reconciled",
        "status": "True",
        "type": "Ready"
      }
    ],
    "currentKeyId": "https://127.0.0.1:43147/keys/healthy/9ca87cc485a4ecd4f9ba7d5b1f05040b",
    "currentVersion": "9ca87cc485a4ecd4f9ba7d5b1f05040b",
    "keyId": "https://127.0.0.1:43147/keys/healthy",
    "keyName": "healthy",
    "keySize": 2048,
    "keyType": "RSA",
    "nextRotationTime": "2026-12-25T20:18:22Z",
    "observedGeneration": 1,
    "publicKeyThumbprint": "V8_Lr8A_EuPSQcMKkDKORfKQG5mCVi1ws3cyvOHC7lA",
    "rotationPolicy": {
      "expiresIn": "P90D",
      "lifetimeActions": [
        {
          "action": "Rotate",
          "timeAfterCreate": "P30D"
        },
        {
          "action": "Notify",
          "timeBeforeExpiry": "P30D"
        }
      ]
    },
    "versionCount": 1,
    "versions": [
      {
        "created": "2026-11-25T20:18:22Z",
        "enabled": true,
        "version": "9ca87cc485a4ecd4f9ba7d5b1f05040b"
      }
    ]
  }
}"#;

/// `healthy` after `kubectl patch` changed spec.tags while the operator was stopped:
/// generation 2, status still for generation 1.
const GENERATION_AHEAD: &str = r#"{
  "apiVersion": "vaultkey.dev/v1alpha1",
  "kind": "VaultKey",
  "metadata": {
    "annotations": {
      "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"vaultkey.dev/v1alpha1\",\"kind\":\"VaultKey\",\"metadata\":{\"annotations\":{},\"name\":\"healthy\",\"namespace\":\"cap\"},\"spec\":{\"keySize\":2048,\"keyType\":\"RSA\",\"rotationPolicy\":{\"expiresIn\":\"P90D\",\"lifetimeActions\":[{\"action\":\"Rotate\",\"timeAfterCreate\":\"P30D\"}]},\"tags\":{\"project\":\"test\"},\"vaultUrl\":\"https://127.0.0.1:43147\"}}\n"
    },
    "creationTimestamp": "2026-11-25T20:18:21Z",
    "finalizers": [
      "vaultkey.dev/cleanup"
    ],
    "generation": 2,
    "name": "healthy",
    "namespace": "cap",
    "resourceVersion": "226",
    "uid": "736c2bc4-cb36-432f-be26-0572a0188300"
  },
  "spec": {
    "attributes": {
      "enabled": true
    },
    "deletionPolicy": "Retain",
    "keySize": 2048,
    "keyType": "RSA",
    "rotationPolicy": {
      "expiresIn": "P90D",
      "lifetimeActions": [
        {
          "action": "Rotate",
          "timeAfterCreate": "P30D"
        }
      ]
    },
    "tags": {
      "project": "changed"
    },
    "vaultUrl": "https://127.0.0.1:43147"
  },
  "status": {
    "conditions": [
      {
        "lastTransitionTime": "2026-11-25T20:18:22Z",
        "message": "key healthy is at version 9ca87cc485a4ecd4f9ba7d5b1f05040b",
        "observedGeneration": 1,
        "reason": "Reconciled",
        "status": "True",
        "type": "Ready"
      }
    ],
    "currentKeyId": "https://127.0.0.1:43147/keys/healthy/9ca87cc485a4ecd4f9ba7d5b1f05040b",
    "currentVersion": "9ca87cc485a4ecd4f9ba7d5b1f05040b",
    "keyId": "https://127.0.0.1:43147/keys/healthy",
    "keyName": "healthy",
    "keySize": 2048,
    "keyType": "RSA",
    "nextRotationTime": "2026-12-25T20:18:22Z",
    "observedGeneration": 1,
    "publicKeyThumbprint": "V8_Lr8A_EuPSQcMKkDKORfKQG5mCVi1ws3cyvOHC7lA",
    "rotationPolicy": {
      "expiresIn": "P90D",
      "lifetimeActions": [
        {
          "action": "Rotate",
          "timeAfterCreate": "P30D"
        },
        {
          "action": "Notify",
          "timeBeforeExpiry": "P30D"
        }
      ]
    },
    "versionCount": 1,
    "versions": [
      {
        "created": "2026-11-25T20:18:22Z",
        "enabled": true,
        "version": "9ca87cc485a4ecd4f9ba7d5b1f05040b"
      }
    ]
  }
}"#;

/// Just created; the operator has not written status yet.
const NO_STATUS: &str = r#"{
  "apiVersion": "vaultkey.dev/v1alpha1",
  "kind": "VaultKey",
  "metadata": {
    "annotations": {
      "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"vaultkey.dev/v1alpha1\",\"kind\":\"VaultKey\",\"metadata\":{\"annotations\":{},\"name\":\"fresh\",\"namespace\":\"cap\"},\"spec\":{\"keyType\":\"EC\",\"vaultUrl\":\"https://127.0.0.1:43147\"}}\n"
    },
    "creationTimestamp": "2026-11-25T20:18:52Z",
    "generation": 1,
    "name": "fresh",
    "namespace": "cap",
    "resourceVersion": "227",
    "uid": "ef8c7bba-eda5-4d50-85ab-f6f1937bdd33"
  },
  "spec": {
    "attributes": {
      "enabled": true
    },
    "deletionPolicy": "Retain",
    "keyType": "EC",
    "vaultUrl": "https://127.0.0.1:43147"
  }
}"#;

/// The vault answered 429 (kv-emulator fault injection: throttle).
const THROTTLED: &str = r#"{
  "apiVersion": "vaultkey.dev/v1alpha1",
  "kind": "VaultKey",
  "metadata": {
    "annotations": {
      "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"vaultkey.dev/v1alpha1\",\"kind\":\"VaultKey\",\"metadata\":{\"annotations\":{},\"name\":\"throttled\",\"namespace\":\"cap\"},\"spec\":{\"keyType\":\"EC\",\"vaultUrl\":\"https://127.0.0.1:43147\"}}\n"
    },
    "creationTimestamp": "2026-11-25T20:18:22Z",
    "finalizers": [
      "vaultkey.dev/cleanup"
    ],
    "generation": 1,
    "name": "throttled",
    "namespace": "cap",
    "resourceVersion": "220",
    "uid": "91cd6d63-ea59-4871-bba8-b71d1aae2fc9"
  },
  "spec": {
    "attributes": {
      "enabled": true
    },
    "deletionPolicy": "Retain",
    "keyType": "EC",
    "vaultUrl": "https://127.0.0.1:43147"
  },
  "status": {
    "conditions": [
      {
        "lastTransitionTime": "2026-11-25T20:18:22Z",
        "message": "https://127.0.0.1:43147: get_key failed with HTTP 429 (Throttled): Request was not processed because too many requests were received. Reason: injected by kv-emulator.",
        "observedGeneration": 1,
        "reason": "Throttled",
        "status": "False",
        "type": "Ready"
      }
    ],
    "keyName": "throttled",
    "observedGeneration": 1
  }
}"#;

/// rotationPolicy.expiresIn: P1D passes the CRD schema; the operator's validation refuses it.
const INVALID_SPEC: &str = r#"{
  "apiVersion": "vaultkey.dev/v1alpha1",
  "kind": "VaultKey",
  "metadata": {
    "annotations": {
      "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"vaultkey.dev/v1alpha1\",\"kind\":\"VaultKey\",\"metadata\":{\"annotations\":{},\"name\":\"badspec\",\"namespace\":\"cap\"},\"spec\":{\"keyType\":\"RSA\",\"rotationPolicy\":{\"expiresIn\":\"P1D\"},\"vaultUrl\":\"https://127.0.0.1:43147\"}}\n"
    },
    "creationTimestamp": "2026-11-25T20:18:21Z",
    "finalizers": [
      "vaultkey.dev/cleanup"
    ],
    "generation": 1,
    "name": "badspec",
    "namespace": "cap",
    "resourceVersion": "210",
    "uid": "1b56e2a0-c69a-4ce8-9789-c3a193fe58e0"
  },
  "spec": {
    "attributes": {
      "enabled": true
    },
    "deletionPolicy": "Retain",
    "keyType": "RSA",
    "rotationPolicy": {
      "expiresIn": "P1D",
      "lifetimeActions": []
    },
    "vaultUrl": "https://127.0.0.1:43147"
  },
  "status": {
    "conditions": [
      {
        "lastTransitionTime": "2026-11-25T20:18:21Z",
        "message": "spec.rotationPolicy.expiresIn: P1D is shorter than Key Vault's minimum of 28 days; fix the spec",
        "observedGeneration": 1,
        "reason": "InvalidSpec",
        "status": "False",
        "type": "Ready"
      }
    ],
    "keyName": "badspec",
    "observedGeneration": 1
  }
}"#;

/// The key already existed in the vault, created by someone else, and spec.adopt is unset.
const KEY_EXISTS_NOT_ADOPTED: &str = r#"{
  "apiVersion": "vaultkey.dev/v1alpha1",
  "kind": "VaultKey",
  "metadata": {
    "annotations": {
      "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"vaultkey.dev/v1alpha1\",\"kind\":\"VaultKey\",\"metadata\":{\"annotations\":{},\"name\":\"foreign\",\"namespace\":\"cap\"},\"spec\":{\"keyName\":\"foreign\",\"keyType\":\"EC\",\"vaultUrl\":\"https://127.0.0.1:43147\"}}\n"
    },
    "creationTimestamp": "2026-11-25T20:18:21Z",
    "finalizers": [
      "vaultkey.dev/cleanup"
    ],
    "generation": 1,
    "name": "foreign",
    "namespace": "cap",
    "resourceVersion": "212",
    "uid": "81889fee-8b06-4321-82b4-9c6ed9b5507c"
  },
  "spec": {
    "attributes": {
      "enabled": true
    },
    "deletionPolicy": "Retain",
    "keyName": "foreign",
    "keyType": "EC",
    "vaultUrl": "https://127.0.0.1:43147"
  },
  "status": {
    "conditions": [
      {
        "lastTransitionTime": "2026-11-25T20:18:21Z",
        "message": "key foreign already exists in https://127.0.0.1:43147 and was not created for this VaultKey; set spec.adopt: true to manage it, or choose another keyName",
        "observedGeneration": 1,
        "reason": "KeyExistsNotAdopted",
        "status": "False",
        "type": "Ready"
      }
    ],
    "keyName": "foreign",
    "observedGeneration": 1
  }
}"#;
