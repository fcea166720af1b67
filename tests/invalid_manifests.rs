//! The corpus in `tests/fixtures/invalid/`: manifests the real API server must refuse at apply
//! time (`kubectl apply`, as a user would), each with a message naming the field. Every file
//! starts with comment lines `# field: <path>` and `# expect: <fragment>`; both must appear in
//! kubectl's error.
//!
//!   tests/env/testenv.sh run -- cargo test --test invalid_manifests

mod support;

use std::path::{Path, PathBuf};

use support::*;

struct Case {
    path: PathBuf,
    manifest: String,
    field: String,
    expect: String,
    /// Text the refusal must not carry (a rule that does not apply to this manifest).
    absent: Option<String>,
}

fn optional_header(manifest: &str, key: &str) -> Option<String> {
    manifest
        .lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
        .map(str::to_owned)
}

fn header(manifest: &str, path: &Path, key: &str) -> String {
    optional_header(manifest, key)
        .unwrap_or_else(|| panic!("{} has no `# {key}:` line", path.display()))
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/invalid")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let manifest = std::fs::read_to_string(&path).expect("fixture readable");
            Case {
                field: header(&manifest, &path, "field"),
                expect: header(&manifest, &path, "expect"),
                absent: optional_header(&manifest, "absent"),
                path,
                manifest,
            }
        })
        .collect()
}

/// The corpus is well-formed without an API server: each manifest parses as YAML, is a
/// VaultKey, and names the field it expects.
#[test]
fn corpus_is_well_formed() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "{} fixtures", corpus.len());
    for case in &corpus {
        let doc: serde_json::Value = serde_norway::from_str(&case.manifest).unwrap_or_else(|e| {
            panic!("{}: {e}", case.path.display());
        });
        assert_eq!(doc["kind"], "VaultKey", "{}", case.path.display());
        assert!(case.field.starts_with("spec."), "{}", case.path.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_manifest_in_the_corpus_is_refused_naming_its_field() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "corpus").await;

    // A control at the limits, so the refusals below are not the base manifest's fault:
    // 12 tags with 512-character names and 256-character values, the largest exponent.
    let mut tags = String::new();
    for i in 0..12 {
        tags.push_str(&format!(
            "    {:x<512}: \"{}\"\n",
            format!("Tag{i}-vaultkey.dev/"),
            "v".repeat(256)
        ));
    }
    let control = format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata:\n  name: control\nspec:\n  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n  publicExponent: 2147483647\n  attributes:\n    notBefore: \"2026-01-01T00:00:00.123456789+05:30\"\n    expiresOn: \"9998-12-31T23:59:59Z\"\n  tags:\n{tags}"
    );
    kubectl_apply(&env, &ns, &control)
        .await
        .expect("the control manifest at the limits is accepted");

    let mut failures = Vec::new();
    for case in corpus() {
        let name = case
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        match kubectl_apply(&env, &ns, &case.manifest).await {
            Ok(out) => failures.push(format!("{name}: accepted ({})", out.trim())),
            Err(err) => {
                if !err.contains(&case.field) || !err.contains(&case.expect) {
                    failures.push(format!(
                        "{name}: refused, but without {:?} and {:?}: {}",
                        case.field,
                        case.expect,
                        err.trim()
                    ));
                } else if let Some(absent) = case.absent.as_ref().filter(|a| err.contains(*a)) {
                    failures.push(format!(
                        "{name}: refused, but also with {absent:?}: {}",
                        err.trim()
                    ));
                } else {
                    eprintln!("{name}: {}", err.trim());
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// keyName's immutability protects the key's identity, not its spelling: writing out the name
/// the key already has (`metadata.name`) is accepted, and any other name, or dropping a
/// keyName that differs from `metadata.name`, is refused naming `spec.keyName`.
#[tokio::test(flavor = "multi_thread")]
async fn key_name_immutability_is_about_the_name_not_the_spelling() {
    let env = Env::get();
    let client = env.kube().await;
    let ns = fresh_namespace(&client, "keyname").await;
    let manifest = |key_name: Option<&str>, name: &str| {
        format!(
            "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata:\n  name: {name}\nspec:\n  vaultUrl: https://v.vault.azure.net\n  keyType: RSA\n{}",
            key_name
                .map(|k| format!("  keyName: {k}\n"))
                .unwrap_or_default()
        )
    };
    kubectl_apply(&env, &ns, &manifest(None, "payments"))
        .await
        .expect("created without keyName");
    kubectl_apply(&env, &ns, &manifest(Some("payments"), "payments"))
        .await
        .expect("keyName equal to metadata.name, added after creation, is the same key");
    kubectl_apply(&env, &ns, &manifest(None, "payments"))
        .await
        .expect("and removing it again is too");
    let err = kubectl_apply(&env, &ns, &manifest(Some("other"), "payments"))
        .await
        .expect_err("a different keyName is refused");
    assert!(
        err.contains("spec.keyName") && err.contains("immutable"),
        "{err}"
    );

    kubectl_apply(&env, &ns, &manifest(Some("explicit"), "named"))
        .await
        .expect("created with a keyName of its own");
    let err = kubectl_apply(&env, &ns, &manifest(None, "named"))
        .await
        .expect_err("dropping a keyName that differs from metadata.name changes the key");
    assert!(
        err.contains("spec.keyName") && err.contains("immutable"),
        "{err}"
    );

    // The same for vaultUrl: another spelling of the same vault is no change, another vault is.
    let in_vault = |vault_url: &str| {
        format!(
            "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata:\n  name: moved\nspec:\n  vaultUrl: {vault_url}\n  keyType: RSA\n"
        )
    };
    kubectl_apply(&env, &ns, &in_vault("https://v.vault.azure.net"))
        .await
        .expect("created");
    kubectl_apply(&env, &ns, &in_vault("https://V.Vault.Azure.Net/"))
        .await
        .expect("the same vault in capitals and with a trailing slash is the same vault");
    let err = kubectl_apply(&env, &ns, &in_vault("https://w.vault.azure.net"))
        .await
        .expect_err("another vault is refused");
    assert!(
        err.contains("spec.vaultUrl") && err.contains("immutable"),
        "{err}"
    );
}
