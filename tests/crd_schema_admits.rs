//! Everything the committed CRD's structural schema admits decodes into `VaultKey`, and
//! `validate` on it answers Ok or an error naming a spec field, never a panic.
//!
//! The objects come from the schema in `crds/vaultkey.yaml` (interpreted by
//! `tests/schema_values`), not from our Rust types: this is what the API server would store.
//! CEL rules are not evaluated. An object the schema admits but serde refuses is one that makes
//! a freshly started operator unable to list VaultKeys.
//!
//! `VAULTKEY_CRD=path` runs the same test against another CRD file, e.g. an older one:
//!   git show main:crds/vaultkey.yaml > /tmp/old.yaml
//!   VAULTKEY_CRD=/tmp/old.yaml cargo test --test crd_schema_admits

mod schema_values;

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use vaultkey_operator::api::VaultKey;
use vaultkey_operator::validate::validate;

const CASES: u32 = 2000;

fn crd_path() -> PathBuf {
    std::env::var_os("VAULTKEY_CRD")
        .map(PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/crds/vaultkey.yaml").into())
}

/// The served version's `openAPIV3Schema`.
fn schema() -> Value {
    let path = crd_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()));
    let crd: Value = serde_norway::from_str(&text).expect("CRD is YAML");
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "one version");
    versions[0]["schema"]["openAPIV3Schema"].clone()
}

/// metadata.name as the API server admits it: a DNS-1123 subdomain.
fn object_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,2}"
        .prop_filter("253 characters at most", |n| n.len() <= 253)
}

fn vaultkeys(schema: &Value) -> impl Strategy<Value = Value> + use<> {
    (schema_values::admitted(schema), object_name()).prop_map(|(mut object, name)| {
        let map = object.as_object_mut().expect("a VaultKey is an object");
        map.insert("apiVersion".into(), json!("vaultkey.dev/v1alpha1"));
        map.insert("kind".into(), json!("VaultKey"));
        map.insert(
            "metadata".into(),
            json!({"name": name, "namespace": "default", "generation": 1, "uid": "5b1d4a7e-0000-4000-8000-000000000001"}),
        );
        object
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Valid,
    Invalid(&'static str),
}

/// The names of the spec's top-level fields, which a validation error must name.
fn spec_fields(schema: &Value) -> Vec<String> {
    schema["properties"]["spec"]["properties"]
        .as_object()
        .expect("spec properties")
        .keys()
        .cloned()
        .collect()
}

fn check(object: &Value, spec_fields: &[String]) -> Result<Outcome, TestCaseError> {
    let pretty = || serde_json::to_string_pretty(object).unwrap();
    let vk: VaultKey = serde_json::from_value(object.clone()).map_err(|e| {
        TestCaseError::fail(format!(
            "the CRD schema admits an object that does not decode into VaultKey: {e}\n{}",
            pretty()
        ))
    })?;
    let result = std::panic::catch_unwind(|| validate(&vk))
        .map_err(|_| TestCaseError::fail(format!("validate panicked on\n{}", pretty())))?;
    match result {
        Ok(_) => Ok(Outcome::Valid),
        Err(e) => {
            let text = e.to_string();
            let top = e.field.split('.').next().unwrap_or_default();
            prop_assert!(
                text.starts_with(&format!("spec.{}: ", e.field))
                    && spec_fields.iter().any(|f| f == top)
                    && !e.message.trim().is_empty(),
                "validate's error does not name a spec field: {text}\n{}",
                pretty()
            );
            Ok(Outcome::Invalid(e.field))
        }
    }
}

#[test]
fn every_object_the_crd_schema_admits_decodes_and_validates_without_panic() {
    let schema = schema();
    let spec_fields = spec_fields(&schema);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: CASES,
        // Generation filters (days of the month, unique list items) reject some values.
        max_global_rejects: CASES * 20,
        ..ProptestConfig::default()
    });
    let outcomes = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let result = runner.run(&vaultkeys(&schema), |object| {
        let outcome = check(&object, &spec_fields)?;
        *outcomes.borrow_mut().entry(outcome).or_insert(0u32) += 1;
        Ok(())
    });
    eprintln!(
        "{}: outcomes of validate over the generated objects (shrinking included): {:?}",
        crd_path().display(),
        outcomes.into_inner()
    );
    if let Err(e) = result {
        panic!("{}: {e}", crd_path().display());
    }
}

/// The generator reaches both sides of validate, so the property above is not vacuous
/// (deterministic, so this cannot flake).
#[test]
fn generated_objects_reach_valid_specs_and_many_invalid_fields() {
    use proptest::strategy::ValueTree;
    let schema = schema();
    let spec_fields = spec_fields(&schema);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = vaultkeys(&schema);
    let mut outcomes = std::collections::BTreeMap::new();
    // Most admitted objects are invalid (the schema admits far more than Key Vault does), so
    // valid ones are rare: draw until one is found, up to ten times the property's cases.
    for i in 0..CASES * 10 {
        let object = strategy.new_tree(&mut runner).unwrap().current();
        if let Ok(outcome) = check(&object, &spec_fields) {
            *outcomes.entry(outcome).or_insert(0u32) += 1;
        }
        if i >= CASES && outcomes.contains_key(&Outcome::Valid) {
            break;
        }
    }
    eprintln!("deterministic outcomes: {outcomes:?}");
    assert!(
        outcomes.get(&Outcome::Valid).copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    let fields = outcomes
        .keys()
        .filter(|o| matches!(o, Outcome::Invalid(_)))
        .count();
    assert!(fields >= 5, "{outcomes:?}");
}

/// The interpreter itself: the date-time port agrees with what kube-openapi is known to
/// accept and refuse, and generated values respect the keywords.
#[test]
fn schema_values_interpreter_follows_the_api_server() {
    use schema_values::is_date_time;
    for ok in [
        "2027-11-25T00:00:00Z",
        "2027-11-25t00:00:00z",
        "2027-11-25T00:00:00.123456789123+05:30",
        "2027-11-25T00:00:00x5Z",
        "2027-11-25T23:59:59+99:99",
        "9999-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "2027-11-25T00:00:00ZTanything",
    ] {
        assert!(is_date_time(ok), "{ok}");
    }
    for bad in [
        "2027-11-25",
        "2027-11-25T00:00:00",
        "2027-11-25T24:00:00Z",
        "2027-11-25T00:60:00Z",
        "2023-02-29T00:00:00Z",
        "2027-13-01T00:00:00Z",
        "2027-11-25 00:00:00Z",
        "2027-11-25T00:00:00+0530",
        "27-11-25T00:00:00Z",
    ] {
        assert!(!is_date_time(bad), "{bad}");
    }

    let schema = json!({
        "type": "object",
        "required": ["n"],
        "properties": {
            "n": {"type": "integer", "format": "int32", "minimum": 3, "maximum": 9},
            "s": {"type": "string", "pattern": "^[a-z]\\d{2}$", "nullable": true},
            "t": {"type": "string", "minLength": 2, "maxLength": 4},
            "set": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "x-kubernetes-list-type": "set", "maxItems": 2},
            "m": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 1}, "maxProperties": 2},
            "d": {"type": "string", "default": "x"}
        }
    });
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = schema_values::admitted(&schema);
    let mut saw_null = false;
    for _ in 0..500 {
        use proptest::strategy::ValueTree;
        let v = strategy.new_tree(&mut runner).unwrap().current();
        let n = v["n"].as_i64().unwrap();
        assert!((3..=9).contains(&n), "{v}");
        match &v.get("s") {
            Some(Value::String(s)) => {
                let b = s.as_bytes();
                assert!(
                    b.len() == 3
                        && b[0].is_ascii_lowercase()
                        && b[1..].iter().all(u8::is_ascii_digit),
                    "{v}"
                );
            }
            Some(Value::Null) => saw_null = true,
            None => {}
            Some(other) => panic!("{other}"),
        }
        if let Some(t) = v.get("t") {
            let n = t.as_str().unwrap().chars().count();
            assert!((2..=4).contains(&n), "{v}");
        }
        if let Some(set) = v.get("set") {
            let set = set.as_array().unwrap();
            assert!(set.len() <= 2 && (set.len() < 2 || set[0] != set[1]), "{v}");
        }
        if let Some(m) = v.get("m") {
            let m = m.as_object().unwrap();
            assert!(
                m.len() <= 2 && m.values().all(|x| x.as_str().unwrap().chars().count() <= 1),
                "{v}"
            );
        }
        assert!(v.get("d").is_some(), "defaults are filled in: {v}");
    }
    assert!(saw_null, "nullable fields are sometimes null");
}
