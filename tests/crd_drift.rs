//! The committed CRD must be exactly what the Rust types generate.

#[test]
fn committed_crd_matches_the_types() {
    let generated = vaultkey_operator::api::crd_yaml().expect("CRD renders");
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/vaultkey.yaml"))
            .expect("crds/vaultkey.yaml exists");
    assert!(
        generated == committed,
        "crds/vaultkey.yaml is stale: regenerate it with `cargo run -- crd > crds/vaultkey.yaml`"
    );
}
