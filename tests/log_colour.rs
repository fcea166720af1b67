//! Text logs written to a pipe (as in a pod, read with `kubectl logs`) carry no ANSI colour.
//!
//! `run` without any Azure credential logs an error and exits before it needs a cluster, so
//! the binary's own logging is exercised without Kubernetes or a network; the same start-up
//! errors are checked for what they tell a person.

use std::process::Command;

#[test]
fn text_logs_to_a_pipe_have_no_escape_codes() {
    let output = Command::new(env!("CARGO_BIN_EXE_vaultkey-operator"))
        .args(["run", "--log-format", "text", "--azure-credential", "auto"])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .env_remove("VAULTKEY_EMULATOR_STATIC_TOKEN")
        .env_remove("VAULTKEY_LOG_FORMAT")
        .env_remove("VAULTKEY_LOG_LEVEL")
        .output()
        .expect("the operator binary runs");
    assert!(
        !output.status.success(),
        "runs without a credential must fail"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no Azure credential configured"),
        "the failure is logged: {stderr:?}"
    );
    assert!(
        !output.stderr.contains(&0x1b) && !output.stdout.contains(&0x1b),
        "no ANSI escape in logs written to a pipe: {stderr:?}"
    );
}

/// Workload identity without its environment (a pod labelled for a webhook the cluster does not
/// have) exits naming the missing variables and what sets them, not an SDK message.
#[test]
fn workload_identity_without_its_environment_says_what_sets_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_vaultkey-operator"))
        .args(["run", "--azure-credential", "workload-identity"])
        .env("NO_COLOR", "1")
        .env("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111")
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .env_remove("VAULTKEY_EMULATOR_STATIC_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("the operator binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needed in [
        "not set: AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE.",
        "azure.workloadIdentity.webhook=false",
        "azure.workload.identity/use",
    ] {
        assert!(stderr.contains(needed), "{needed:?} missing from: {stderr}");
    }
}
