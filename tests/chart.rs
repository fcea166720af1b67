//! The Helm chart (charts/vaultkey-operator) and the manifest rendered from it
//! (deploy/vaultkey-operator.yaml):
//! - `helm lint` is clean, every value is documented, the CRD copy and deploy/ are not stale;
//! - the rendered Deployment is hardened and configured from values; RBAC follows the values;
//! - against the real kube-apiserver of `tests/env/testenv.sh`: the manifests pass a server-side
//!   dry run (and the "restricted" Pod Security Standard), `helm install` is accepted, the
//!   chart's ServiceAccount may do exactly what the operator needs (impersonation), and the real
//!   operator binary, authenticated with a token of that ServiceAccount, runs the how-to flow
//!   with leader election.
//!
//! helm comes from tests/env/helm.sh, which builds it from the Go module proxy on first use
//! (about a minute on 2 cores). Nothing here skips: a missing helm, go or environment fails with
//! the reason. Run: `tests/env/testenv.sh run -- cargo test --test chart`.

#[path = "support/command.rs"]
mod command;
mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use command::{ok, output};
use vaultkey_operator::api::VaultKey;

use support::{Env, events_once, eventually, fresh_namespace, get_vk};

const RELEASE: &str = "vaultkey-operator";
const DEPLOY_NAMESPACE: &str = "vaultkey-system";
/// The values deploy/vaultkey-operator.yaml is rendered with (tests/env/render-deploy.sh): a
/// static manifest cannot take a client id at install, so it relies on the Azure Workload
/// Identity webhook, and the ServiceAccount is annotated afterwards (deploy/README.md).
const DEPLOY_VALUES: &[&str] = &["--set", "azure.workloadIdentity.webhook=true"];
const WAIT: Duration = Duration::from_secs(60);

// -------------------------------------------------------------------------------------------
// Tools: helm, kubectl, processes
// -------------------------------------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/vaultkey-operator")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The helm binary from tests/env/helm.sh (built and cached on first use), once per process.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = repo().join("tests/env/helm.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} could not provide helm ({}); it builds helm from the Go module proxy and needs go \
             (see its stderr above)",
            script.display(),
            out.status
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            path.is_file(),
            "tests/env/helm.sh printed {}, which is not a file",
            path.display()
        );
        path
    })
}

/// helm with a private home (no user repositories or plugins) under the target directory.
fn helm_cmd() -> Command {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut cmd = Command::new(helm());
    cmd.env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// kubectl within the supported skew of the test apiserver (1.34): $KUBECTL, else a versioned
/// kubectl.1.<minor> next to `kubectl` (the Google Cloud SDK ships several), else `kubectl`.
fn kubectl_path() -> &'static Path {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL.get_or_init(|| {
        if let Some(k) = std::env::var_os("KUBECTL").filter(|k| !k.is_empty()) {
            return PathBuf::from(k);
        }
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|dir| dir.join("kubectl"))
            .find(|k| k.is_file())
            .unwrap_or_else(|| panic!("kubectl is not installed (not on PATH)"));
        let real = std::fs::canonicalize(&found).unwrap_or(found.clone());
        let dir = real.parent().expect("kubectl has a folder");
        for minor in [34, 33, 35] {
            let versioned = dir.join(format!("kubectl.1.{minor}"));
            if versioned.is_file() {
                return versioned;
            }
        }
        found
    })
}

fn kubectl(env: &Env) -> Command {
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .arg("--request-timeout=30s");
    cmd
}

fn values_file(values: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    file.write_all(values.as_bytes()).expect("values written");
    file
}

/// The credential every rendering below starts from (`-f` before the test's own values, which
/// may override it): workload identity with the token mounted by the chart. The chart's
/// defaults alone choose no credential and fail (`default_values_fail_with_the_credential_choices`).
const IDENTITY: &str = "azure:\n  workloadIdentity:\n    clientId: 11111111-1111-1111-1111-111111111111\n    tenantId: 22222222-2222-2222-2222-222222222222\n";

/// `helm template` of the chart with [`IDENTITY`] and then `values` (YAML); Err carries helm's
/// stderr.
fn try_template(release: &str, namespace: &str, values: &str) -> Result<String, String> {
    try_template_from(release, namespace, &[IDENTITY, values])
}

/// `helm template` with these values files only, in order (later ones override).
fn try_template_from(release: &str, namespace: &str, values: &[&str]) -> Result<String, String> {
    let files: Vec<_> = values.iter().map(|v| values_file(v)).collect();
    let mut cmd = helm_cmd();
    cmd.args(["template", release])
        .arg(chart())
        .args(["--namespace", namespace]);
    for file in &files {
        cmd.arg("-f").arg(file.path());
    }
    let out = output(&mut cmd, None);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn template(release: &str, namespace: &str, values: &str) -> String {
    try_template(release, namespace, values)
        .unwrap_or_else(|e| panic!("helm template with values\n{values}\nfailed: {e}"))
}

/// The documents of a multi-document YAML stream, as JSON values (empty ones dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind} in the rendering");
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn container(docs: &[Value]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    strings(&container(docs)["args"])
}

/// (apiGroup, resource, resourceName or "", verb) granted by a rendered (Cluster)Role.
type Grant = (String, String, String, String);

fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let names = strings(&rule["resourceNames"]);
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for name in &names {
                        out.insert((group.clone(), resource.clone(), name.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    out
}

fn grant_set(items: &[(&str, &str, &str, &[&str])]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for (group, resource, name, verbs) in items {
        for verb in *verbs {
            out.insert((
                group.to_string(),
                resource.to_string(),
                name.to_string(),
                verb.to_string(),
            ));
        }
    }
    out
}

/// What the operator needs in every namespace it watches (see src/controller.rs).
fn watched_grants(import_secrets: bool) -> BTreeSet<Grant> {
    watched_grants_with(import_secrets, false)
}

/// [`watched_grants`], with or without the rules of namespace identities.
fn watched_grants_with(import_secrets: bool, namespace_identities: bool) -> BTreeSet<Grant> {
    let mut items: Vec<(&str, &str, &str, &[&str])> = vec![
        (
            "vaultkey.dev",
            "vaultkeys",
            "",
            &["get", "list", "watch", "patch"],
        ),
        ("vaultkey.dev", "vaultkeys/status", "", &["patch"]),
        ("vaultkey.dev", "vaultkeys/finalizers", "", &["update"]),
        ("events.k8s.io", "events", "", &["create", "patch"]),
        ("", "configmaps", "", &["get", "create", "patch"]),
    ];
    if import_secrets {
        items.push(("", "secrets", "", &["get"]));
    }
    if namespace_identities {
        items.push(("", "serviceaccounts", "", &["get"]));
        items.push(("", "serviceaccounts/token", "", &["create"]));
    }
    grant_set(&items)
}

/// What leader election needs in the release namespace (see src/leader.rs).
fn lease_grants(lease: &str) -> BTreeSet<Grant> {
    grant_set(&[
        ("coordination.k8s.io", "leases", "", &["create"]),
        (
            "coordination.k8s.io",
            "leases",
            lease,
            &["get", "update", "patch"],
        ),
    ])
}

// -------------------------------------------------------------------------------------------
// Static checks: lint, drift, documentation, rendering
// -------------------------------------------------------------------------------------------

/// Every option the chart has, for lint and rendering checks.
const ALL_OPTIONS: &str = r#"
watchNamespaces: [team-a, team-b]
vaultAccess:
  default: []
  namespaces:
    team-a: ["https://team-a.vault.azure.net"]
    team-b: ["https://*.vault.azure.net"]
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
imagePullSecrets: [{name: registry}]
operator:
  resyncSeconds: 42
  verifyIntervalSeconds: 600
  logLevel: "info,vaultkey_operator=debug"
  logFormat: json
  concurrency: 3
  vaultConcurrency: 4
  labelSelector: "team in (a,b)"
  requestTimeoutSeconds: 7
  createsPer10s: 5
  extraArgs: ["--lease-duration-seconds=9"]
  extraEnv: [{name: RUST_BACKTRACE, value: "1"}]
azure:
  credential: workload-identity
  workloadIdentity: {clientId: 00000000-0000-0000-0000-000000000001, tenantId: 00000000-0000-0000-0000-000000000002}
leaderElection: {leaseName: custom-lease, leaseDurationSeconds: 20}
serviceAccount: {annotations: {example.com/owner: platform}, labels: {team: platform}}
metrics:
  port: 9090
  service: {annotations: {prometheus.io/scrape: "true"}}
  serviceMonitor: {enabled: true, interval: 15s, scrapeTimeout: 5s, labels: {release: prometheus}}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  apiServer: {ports: [6443, 16443], cidrs: [10.0.0.1/32]}
podDisruptionBudget: {maxUnavailable: 1}
podAnnotations: {example.com/a: b}
podLabels: {team: platform}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Exists}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app.kubernetes.io/name: vaultkey-operator}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector: {matchLabels: {app.kubernetes.io/name: vaultkey-operator}}
"#;

/// `helm lint --strict` with these values files, in order.
fn lint(values: &[&str]) -> Output {
    let mut cmd = helm_cmd();
    cmd.args(["lint", "--strict"]).arg(chart());
    let files: Vec<_> = values.iter().map(|v| values_file(v)).collect();
    for file in &files {
        cmd.arg("-f").arg(file.path());
    }
    output(&mut cmd, None)
}

#[test]
fn helm_lint_is_clean() {
    for values in [&[IDENTITY][..], &[IDENTITY, ALL_OPTIONS]] {
        let out = lint(values);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "helm lint --strict failed:\n{text}");
        assert!(text.contains("0 chart(s) failed"), "{text}");
        for line in text.lines().filter(|l| l.starts_with('[')) {
            // The only remark allowed: no icon (the project has none to point at).
            assert_eq!(
                line, "[INFO] Chart.yaml: icon is recommended",
                "helm lint remark:\n{text}"
            );
        }
    }
    // The values schema catches typos and bad enums instead of rendering a broken Deployment.
    for bad in [
        "operator: {logFormat: xml}",
        "azure: {credential: password}",
        // The operator's auto and azure-cli are no chart credentials: auto is what crash-looped
        // without the webhook, and the image has no Azure CLI.
        "azure: {credential: auto}",
        "azure: {credential: azure-cli}",
        "azure: {workloadIdentity: {enabled: true}}",
        "azure: {workloadIdentity: {authorityHost: \"http://login.example\"}}",
        "replicas: 2",
        "operator: {resyncSeconds: \"5m\"}",
        "vaultAccess: {namespace: {}}",
    ] {
        let out = lint(&[IDENTITY, bad]);
        assert!(
            !out.status.success(),
            "helm lint accepted the invalid values {bad:?}"
        );
    }
}

#[test]
fn chart_crd_is_the_repository_crd() {
    let repo_crd = std::fs::read(repo().join("crds/vaultkey.yaml")).expect("crds/vaultkey.yaml");
    let chart_crd = std::fs::read(chart().join("crds/vaultkey.yaml"))
        .expect("charts/vaultkey-operator/crds/vaultkey.yaml");
    assert!(
        repo_crd == chart_crd,
        "charts/vaultkey-operator/crds/vaultkey.yaml differs from crds/vaultkey.yaml: \
         cp crds/vaultkey.yaml charts/vaultkey-operator/crds/ && tests/env/render-deploy.sh"
    );
    let entries: Vec<_> = std::fs::read_dir(chart().join("crds"))
        .expect("chart crds/")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(entries.len(), 1, "the chart ships exactly one CRD file");
}

#[test]
fn committed_deploy_manifest_matches_a_fresh_render() {
    let stale =
        "deploy/vaultkey-operator.yaml is stale: regenerate it with tests/env/render-deploy.sh";
    let committed = read(repo().join("deploy/vaultkey-operator.yaml"));
    let fresh = ok(
        Command::new(repo().join("tests/env/render-deploy.sh"))
            .arg("--stdout")
            .env("HELM", helm()),
        None,
    );
    assert!(committed == fresh, "{stale}");
    // Independently of the script: the file holds the plain `helm template` rendering with
    // default values and the CRD, both verbatim.
    let rendered = ok(
        helm_cmd()
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", DEPLOY_NAMESPACE])
            .args(DEPLOY_VALUES),
        None,
    );
    assert!(committed.contains(&rendered), "{stale}");
    assert!(committed.ends_with(&rendered), "{stale}");
    assert!(
        committed.contains(&read(repo().join("crds/vaultkey.yaml"))),
        "{stale}"
    );
    let docs = documents(&committed);
    let namespace = one(&docs, "Namespace");
    assert_eq!(namespace["metadata"]["name"], DEPLOY_NAMESPACE);
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    assert_eq!(
        one(&docs, "CustomResourceDefinition")["metadata"]["name"],
        "vaultkeys.vaultkey.dev"
    );
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        if !matches!(
            kind,
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        ) {
            assert_eq!(
                doc["metadata"]["namespace"], DEPLOY_NAMESPACE,
                "{kind} in {DEPLOY_NAMESPACE}"
            );
        }
    }
}

/// Paths of the values that values.yaml documents with a `# --` comment. A documented map
/// (e.g. podSecurityContext) is one value; an undocumented map only groups documented values.
fn documented_values() -> Vec<String> {
    let text = read(chart().join("values.yaml"));
    let mut stack: Vec<(usize, String, bool)> = Vec::new();
    let mut documented = Vec::new();
    let mut in_doc = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            in_doc = false;
            continue;
        }
        if trimmed.starts_with('#') {
            // A comment block documents the key below it if it starts with "# --".
            if trimmed.starts_with("# --") {
                in_doc = true;
            }
            continue;
        }
        let indent = line.len() - trimmed.len();
        let was_doc = std::mem::take(&mut in_doc);
        while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
            stack.pop();
        }
        if stack.iter().any(|(_, _, doc)| *doc) || trimmed.starts_with('-') {
            continue; // inside a documented value
        }
        let Some((key, rest)) = trimmed.split_once(':') else {
            panic!("values.yaml line {}: cannot read {line:?}", n + 1);
        };
        let path = stack
            .iter()
            .map(|(_, k, _)| k.as_str())
            .chain([key])
            .collect::<Vec<_>>()
            .join(".");
        if was_doc {
            documented.push(path);
        } else {
            assert!(
                rest.trim().is_empty(),
                "values.yaml line {}: `{path}` has no `# --` comment",
                n + 1
            );
        }
        stack.push((indent, key.to_owned(), was_doc));
    }
    documented
}

#[test]
fn every_value_is_documented() {
    let documented = documented_values();
    assert!(documented.len() > 40, "values.yaml parsed: {documented:?}");
    let readme = read(chart().join("README.md"));
    let values_section = readme
        .split_once("\n## Values\n")
        .expect("README.md has a ## Values section")
        .1;
    let table: BTreeSet<String> = values_section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(path, _)| path.to_owned()))
        .collect();
    for path in &documented {
        assert!(
            table.contains(path),
            "charts/vaultkey-operator/README.md has no row | `{path}` | in its values table"
        );
    }
    for path in &table {
        assert!(
            documented.contains(path),
            "README.md documents `{path}`, which values.yaml does not have (or does not document)"
        );
    }
    // The schema knows every top-level value, and nothing else.
    let schema: Value =
        serde_json::from_str(&read(chart().join("values.schema.json"))).expect("schema JSON");
    let top: BTreeSet<&str> = documented
        .iter()
        .map(|p| p.split('.').next().unwrap())
        .collect();
    let in_schema: BTreeSet<&str> = schema["properties"]
        .as_object()
        .expect("schema properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, in_schema, "values.yaml and values.schema.json");
}

#[test]
fn deployment_is_hardened_and_configured_from_values() {
    let appversion = read(chart().join("Chart.yaml"))
        .lines()
        .find_map(|l| l.strip_prefix("appVersion: "))
        .expect("appVersion")
        .trim_matches('"')
        .to_owned();
    let docs = documents(&template(RELEASE, "ops", ""));
    let deployment = one(&docs, "Deployment");
    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];
    let c = container(&docs);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        c["image"],
        format!("ghcr.io/vaultkey-dev/vaultkey-operator:{appversion}")
    );
    // Hardened pod.
    let psc = &spec["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65532);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert_eq!(spec["automountServiceAccountToken"], true);
    assert_eq!(spec["serviceAccountName"], RELEASE);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }
    assert!(spec["hostNetwork"].is_null());
    // The only volume: the workload identity token (see each_credential_setup_renders_what_it_needs).
    assert_eq!(
        strings(
            &spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["name"].clone())
                .collect()
        ),
        ["azure-identity-token"]
    );
    // Probes on the metrics port.
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    // Identity of the instance from the downward API, then the workload identity; leader
    // election on.
    assert_eq!(
        c["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "AZURE_CLIENT_ID", "value": "11111111-1111-1111-1111-111111111111"},
            {"name": "AZURE_TENANT_ID", "value": "22222222-2222-2222-2222-222222222222"},
            {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/tokens/azure-identity-token"},
        ])
    );
    assert_eq!(
        args(&docs),
        [
            "run",
            "--metrics-addr=0.0.0.0:8080",
            "--resync-seconds=300",
            "--verify-interval-seconds=86400",
            "--log-level=info",
            "--log-format=text",
            "--concurrency=32",
            "--vault-concurrency=16",
            "--request-timeout-seconds=30",
            "--azure-credential=workload-identity",
            "--leader-election",
            "--leader-election-namespace=ops",
            "--leader-election-lease=vaultkey-operator",
            "--lease-duration-seconds=15",
        ]
    );
    // The chart mounts the token itself: no webhook label; the ServiceAccount names the identity.
    assert!(pod["metadata"]["labels"]["azure.workload.identity/use"].is_null());
    assert_eq!(
        one(&docs, "ServiceAccount")["metadata"]["annotations"],
        json!({"azure.workload.identity/client-id": "11111111-1111-1111-1111-111111111111",
               "azure.workload.identity/tenant-id": "22222222-2222-2222-2222-222222222222"})
    );
    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        one(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    assert!(of_kind(&docs, "NetworkPolicy").is_empty());
    assert!(of_kind(&docs, "ConfigMap").is_empty());

    // Every option.
    let docs = documents(&template("ops", "ops", ALL_OPTIONS));
    let c = container(&docs);
    assert_eq!(
        c["image"],
        "ghcr.io/vaultkey-dev/vaultkey-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        args(&docs),
        [
            "run",
            "--metrics-addr=0.0.0.0:9090",
            "--resync-seconds=42",
            "--verify-interval-seconds=600",
            "--log-level=info,vaultkey_operator=debug",
            "--log-format=json",
            "--concurrency=3",
            "--vault-concurrency=4",
            "--request-timeout-seconds=7",
            "--azure-credential=workload-identity",
            "--creates-per-10s=5",
            "--vault-access-file=/etc/vaultkey/vault-access.yaml",
            "--namespace=team-a,team-b",
            "--label-selector=team in (a,b)",
            "--leader-election",
            "--leader-election-namespace=ops",
            "--leader-election-lease=custom-lease",
            "--lease-duration-seconds=20",
            "--lease-duration-seconds=9",
        ]
    );
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "ops-vaultkey-operator");
    assert_eq!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "00000000-0000-0000-0000-000000000001"
    );
    assert_eq!(
        sa["metadata"]["annotations"]["azure.workload.identity/tenant-id"],
        "00000000-0000-0000-0000-000000000002"
    );
    assert_eq!(
        sa["metadata"]["annotations"]["example.com/owner"],
        "platform"
    );
    // The access policy reaches the operator as a file, unchanged.
    let cm = one(&docs, "ConfigMap");
    let policy: Value =
        serde_norway::from_str(cm["data"]["vault-access.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        policy,
        json!({"default": [], "namespaces": {
            "team-a": ["https://team-a.vault.azure.net"],
            "team-b": ["https://*.vault.azure.net"]}})
    );
    assert_eq!(
        c["volumeMounts"],
        json!([
            {"name": "vault-access", "mountPath": "/etc/vaultkey", "readOnly": true},
            {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true},
        ])
    );
    let pod_annotations = &one(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"];
    assert!(pod_annotations["checksum/vault-access"].is_string());
    assert_eq!(pod_annotations["example.com/a"], "b");
    assert_eq!(one(&docs, "Service")["spec"]["ports"][0]["port"], 9090);
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    // NetworkPolicy: ingress only to the metrics port; egress DNS, API server, 443.
    let policy = one(&docs, "NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": 9090, "protocol": "TCP"}])
    );
    let egress_ports: BTreeSet<(i64, String)> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().clone())
        .map(|p| {
            (
                p["port"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(i64, String)> = [
        (53, "UDP"),
        (53, "TCP"),
        (6443, "TCP"),
        (16443, "TCP"),
        (443, "TCP"),
    ]
    .into_iter()
    .map(|(p, proto)| (p, proto.to_owned()))
    .collect();
    assert_eq!(egress_ports, expected);

    // Guard rails fail the rendering with a reason.
    let docs = documents(&template(
        "ops",
        "ops",
        "replicaCount: 1\nleaderElection: {enabled: false}",
    ));
    assert!(
        !args(&docs)
            .iter()
            .any(|a| a.starts_with("--leader-election"))
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    let err = try_template("ops", "ops", "leaderElection: {enabled: false}").unwrap_err();
    assert!(
        err.contains("replicaCount > 1 needs leaderElection.enabled"),
        "{err}"
    );
}

/// The credential setups the READMEs document, as `--set` arguments with placeholders:
/// (name, values, --azure-credential, env the chart sets, pod labelled for the webhook,
/// ServiceAccount annotations).
type CredentialSetup = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
    &'static [&'static str],
);
const CREDENTIAL_SETUPS: &[CredentialSetup] = &[
    (
        "workload identity, token mounted by the chart",
        "--set azure.workloadIdentity.clientId=<client id>,azure.workloadIdentity.tenantId=<tenant id>",
        "workload-identity",
        &[
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
        ],
        false,
        &[
            "azure.workload.identity/client-id",
            "azure.workload.identity/tenant-id",
        ],
    ),
    (
        "workload identity through the webhook",
        "--set azure.workloadIdentity.webhook=true,azure.workloadIdentity.clientId=<client id>",
        "workload-identity",
        &[],
        true,
        &["azure.workload.identity/client-id"],
    ),
    (
        "managed identity",
        "--set azure.credential=managed-identity,azure.managedIdentityClientId=<client id>",
        "managed-identity",
        &[],
        false,
        &[],
    ),
    (
        "client secret",
        "--set azure.credential=client-secret,azure.clientSecretName=<secret name>",
        "client-secret",
        &[],
        false,
        &[],
    ),
];

/// `helm template` with the chart's own defaults and these extra arguments.
fn try_template_args(release: &str, namespace: &str, extra: &[&str]) -> Result<String, String> {
    let out = output(
        helm_cmd()
            .args(["template", release])
            .arg(chart())
            .args(["--namespace", namespace])
            .args(extra),
        None,
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The chart's defaults choose no credential that can work (no client id): install fails at
/// once, naming the values to set and every alternative, instead of pods that crash-loop
/// "no Azure credential configured" (`helm install` against the API server:
/// manifests_pass_a_server_dry_run_and_helm_install_is_accepted).
#[test]
fn default_values_fail_with_the_credential_choices() {
    // (helm lint reports a template's `fail` as INFO in lint mode and passes, by design.)
    let err = try_template_from(RELEASE, "ops", &[""]).unwrap_err();
    let text = err.as_str();
    for needed in [
        "No Azure credential",
        "azure.workloadIdentity.clientId and azure.workloadIdentity.tenantId are empty",
        "Azure credentials",
    ] {
        assert!(text.contains(needed), "{needed:?} missing from:\n{text}");
    }
    for (name, values, ..) in CREDENTIAL_SETUPS {
        let values = values.replace(
            "<secret name>",
            "<Secret with AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET>",
        );
        let values = values.replace(
            ",azure.managedIdentityClientId=<client id>",
            "[,azure.managedIdentityClientId=<client id>]",
        );
        assert!(
            text.contains(&values),
            "the message lacks {name}: {values}\n{text}"
        );
    }
    // Half a workload identity names what is missing.
    let err = try_template_args(
        RELEASE,
        "ops",
        &[
            "--set",
            "azure.workloadIdentity.clientId=11111111-1111-1111-1111-111111111111",
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("azure.workloadIdentity.tenantId is empty")
            && !err.contains("clientId is empty"),
        "{err}"
    );
    // A client secret needs the Secret's name.
    let err = try_template_args(RELEASE, "ops", &["--set", "azure.credential=client-secret"])
        .unwrap_err();
    assert!(
        err.contains("azure.credential client-secret needs azure.clientSecretName")
            && err.contains("AZURE_CLIENT_SECRET"),
        "{err}"
    );
}

/// Each credential setup the READMEs document (the same `--set` text) renders what it needs and
/// nothing else: the --azure-credential flag, the environment, the projected token only where
/// the chart mounts it, the webhook label only in webhook mode, the ServiceAccount annotations;
/// the pod stays hardened and no secret material is in the rendering.
#[test]
fn each_credential_setup_renders_what_it_needs() {
    let chart_readme = read(chart().join("README.md"));
    let readme = read(repo().join("README.md"));
    let client = "11111111-1111-1111-1111-111111111111";
    let tenant = "22222222-2222-2222-2222-222222222222";
    for (name, values, credential, env, webhook_label, annotations) in CREDENTIAL_SETUPS {
        for (file, text) in [
            ("charts/vaultkey-operator/README.md", &chart_readme),
            ("README.md", &readme),
        ] {
            assert!(
                text.contains(values),
                "{file} does not document {name}: `{values}`"
            );
        }
        let set = values
            .strip_prefix("--set ")
            .unwrap()
            .replace("<client id>", client)
            .replace("<tenant id>", tenant)
            .replace("<secret name>", "azure-sp");
        let rendered = try_template_args(RELEASE, "ops", &["--set", &set])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let docs = documents(&rendered);
        let pod = &one(&docs, "Deployment")["spec"]["template"];
        let c = container(&docs);
        let args = args(&docs);
        assert!(
            args.contains(&format!("--azure-credential={credential}")),
            "{name}: {args:?}"
        );
        assert_eq!(
            args.iter()
                .any(|a| a.starts_with("--managed-identity-client-id")),
            *credential == "managed-identity",
            "{name}: {args:?}"
        );
        let env_names: Vec<String> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .filter(|n| !n.starts_with("POD_"))
            .collect();
        assert_eq!(env_names, *env, "{name}: env");
        let chart_token = !env.is_empty();
        if chart_token {
            let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
            let value = |n: &str| env.iter().find(|e| e["name"] == n).unwrap()["value"].clone();
            assert_eq!(value("AZURE_CLIENT_ID"), client);
            assert_eq!(value("AZURE_TENANT_ID"), tenant);
            assert_eq!(
                value("AZURE_FEDERATED_TOKEN_FILE"),
                "/var/run/secrets/azure/tokens/azure-identity-token"
            );
            assert_eq!(
                pod["spec"]["volumes"],
                json!([{"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}]}}])
            );
            assert_eq!(
                c["volumeMounts"],
                json!([{"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}])
            );
        } else {
            assert!(pod["spec"]["volumes"].is_null(), "{name}: volumes");
            assert!(c["volumeMounts"].is_null(), "{name}: volumeMounts");
        }
        assert_eq!(
            pod["metadata"]["labels"]["azure.workload.identity/use"].as_str() == Some("true"),
            *webhook_label,
            "{name}: webhook label"
        );
        let sa = one(&docs, "ServiceAccount");
        let found: Vec<&str> = sa["metadata"]["annotations"]
            .as_object()
            .map(|a| a.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(found, *annotations, "{name}: ServiceAccount annotations");
        assert_eq!(
            c["envFrom"],
            if *credential == "client-secret" {
                json!([{"secretRef": {"name": "azure-sp"}}])
            } else {
                Value::Null
            },
            "{name}: envFrom"
        );
        // Hardening is the same in every setup.
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{name}"
        );
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            json!(["ALL"]),
            "{name}"
        );
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"], true,
            "{name}"
        );
        // No secret material: no Secret object, no secret value in an env var.
        assert!(of_kind(&docs, "Secret").is_empty(), "{name}");
        assert!(!rendered.contains("AZURE_CLIENT_SECRET"), "{name}");
        assert!(!rendered.contains("BEGIN "), "{name}");
    }

    // Sovereign clouds: the authority host reaches the operator only with the chart's token
    // (the webhook sets its own).
    let authority = "azure.workloadIdentity.authorityHost=https://login.microsoftonline.us";
    let docs = documents(
        &try_template_args(
            RELEASE,
            "ops",
            &[
                "-f",
                values_file(IDENTITY).path().to_str().unwrap(),
                "--set",
                authority,
            ],
        )
        .unwrap(),
    );
    assert!(container(&docs)["env"].as_array().unwrap().contains(
        &json!({"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.us"})
    ));
    // System-assigned managed identity: no client id flag.
    let docs = documents(
        &try_template_args(
            RELEASE,
            "ops",
            &["--set", "azure.credential=managed-identity"],
        )
        .unwrap(),
    );
    assert!(
        !args(&docs)
            .iter()
            .any(|a| a.starts_with("--managed-identity-client-id"))
    );
    // Values of another credential are ignored, not half-applied.
    let docs = documents(
        &try_template_args(
            RELEASE,
            "ops",
            &["--set", "azure.credential=managed-identity,azure.clientSecretName=sp,azure.workloadIdentity.clientId=x,azure.workloadIdentity.tenantId=y"],
        )
        .unwrap(),
    );
    assert!(container(&docs)["envFrom"].is_null());
    assert!(container(&docs)["volumeMounts"].is_null());
    assert!(one(&docs, "ServiceAccount")["metadata"]["annotations"].is_null());
}

/// The optional PrometheusRule: off by default; when on, its three alerts use the thresholds
/// from the values and only metric names the operator exports (a renamed gauge would leave an
/// alert that never fires).
#[test]
fn the_prometheus_rule_alerts_on_gauges_the_operator_exports() {
    assert!(of_kind(&documents(&template(RELEASE, "ops", "")), "PrometheusRule").is_empty());
    let docs = documents(&template(
        RELEASE,
        "ops",
        "metrics: {prometheusRule: {enabled: true, labels: {release: prometheus}, notReadyFor: 20m, expiryWithinSeconds: 1000, rotationOverdueAfterSeconds: 2000}}",
    ));
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        alerts,
        [
            "VaultKeyNotReady",
            "VaultKeyExpiringWithoutRotation",
            "VaultKeyRotationOverdue"
        ]
    );
    assert_eq!(rules[0]["for"], "20m");
    assert!(rules[1]["expr"].as_str().unwrap().contains("< 1000"));
    assert!(rules[2]["expr"].as_str().unwrap().contains("> 2000"));
    // What the operator renders for one VaultKey with every gauge set.
    let metrics = vaultkey_operator::telemetry::Metrics::new();
    metrics.key_state(
        "ns",
        "k",
        vaultkey_operator::telemetry::KeyGauges {
            ready: true,
            expires: Some(1),
            next_rotation: Some(1),
        },
    );
    let exported = metrics.render();
    let names = regex::Regex::new(r"vaultkey_[a-z_]+").unwrap();
    for rule in rules {
        let expr = rule["expr"].as_str().unwrap();
        for name in names.find_iter(expr) {
            assert!(
                exported.contains(&format!(
                    "\n{}{{namespace=\"ns\",name=\"k\"}}",
                    name.as_str()
                )),
                "{} in {expr} is not a series the operator exports",
                name.as_str()
            );
        }
        // Alert texts name the VaultKey through the gauges' labels.
        assert!(
            rule["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("$labels.namespace")
        );
    }
    // The gauges' namespace label survives the scrape.
    let docs = documents(&template(
        RELEASE,
        "ops",
        "metrics: {serviceMonitor: {enabled: true}}",
    ));
    assert_eq!(
        one(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"],
        true
    );
}

#[test]
fn rbac_follows_the_values() {
    // All namespaces: one ClusterRole (bound to the chart's ServiceAccount) and the Lease Role.
    let text = template(RELEASE, "ops", "");
    let docs = documents(&text);
    let cluster_role = one(&docs, "ClusterRole");
    assert_eq!(grants(cluster_role), watched_grants(true));
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": "ops"}])
    );
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "ops");
    assert_eq!(grants(role), lease_grants(RELEASE));
    let role_binding = one(&docs, "RoleBinding");
    assert_eq!(role_binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(role_binding["roleRef"]["kind"], "Role");
    // Every rule says why: the line before each rule is a comment.
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            rules += 1;
            assert!(
                lines[i - 1].trim_start().starts_with('#'),
                "RBAC rule without a comment: {line} (after {:?})",
                lines[i - 1]
            );
        }
    }
    assert_eq!(rules, 9);

    // Watched namespaces: a Role and RoleBinding in each, nothing cluster-wide.
    let docs = documents(&template(
        RELEASE,
        "ops",
        "watchNamespaces: [team-a, team-b]",
    ));
    assert!(of_kind(&docs, "ClusterRole").is_empty());
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    for ns in ["team-a", "team-b"] {
        let role = of_kind(&docs, "Role")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("a Role in {ns}"));
        assert_eq!(grants(role), watched_grants(true), "Role in {ns}");
        let binding = of_kind(&docs, "RoleBinding")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("a RoleBinding in {ns}"));
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": "ops"}])
        );
    }
    let lease_role = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| r["metadata"]["namespace"] == "ops")
        .expect("the Lease Role in the release namespace");
    assert_eq!(grants(lease_role), lease_grants(RELEASE));
    assert_eq!(of_kind(&docs, "Role").len(), 3);

    // No Secrets at all without imports; no Lease Role without leader election; no RBAC at all
    // when the cluster admin provides it.
    let docs = documents(&template(RELEASE, "ops", "rbac: {importSecrets: false}"));
    assert_eq!(grants(one(&docs, "ClusterRole")), watched_grants(false));
    // Namespace identities: ServiceAccounts by name and their tokens, only when asked for, and
    // each rule commented; requiring them is a flag.
    let text = template(
        RELEASE,
        "ops",
        "rbac: {namespaceIdentities: true}\noperator: {requireNamespaceIdentity: true, namespaceIdentityServiceAccount: vaultkeys}",
    );
    let docs = documents(&text);
    assert_eq!(
        grants(one(&docs, "ClusterRole")),
        watched_grants_with(true, true)
    );
    assert!(args(&docs).contains(&"--require-namespace-identity".to_owned()));
    assert!(args(&docs).contains(&"--namespace-identity-service-account=vaultkeys".to_owned()));
    assert!(
        !args(&documents(&template(RELEASE, "ops", "")))
            .contains(&"--require-namespace-identity".to_owned())
    );
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            assert!(
                lines[i - 1].trim_start().starts_with('#'),
                "RBAC rule without a comment: {line}"
            );
        }
    }
    let docs = documents(&template(
        RELEASE,
        "ops",
        "replicaCount: 1\nleaderElection: {enabled: false}",
    ));
    assert!(of_kind(&docs, "Role").is_empty());
    let docs = documents(&template(RELEASE, "ops", "rbac: {create: false}"));
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "{kind} with rbac.create false"
        );
    }
    let docs = documents(&template(
        RELEASE,
        "ops",
        "serviceAccount: {create: false, name: existing}",
    ));
    assert!(of_kind(&docs, "ServiceAccount").is_empty());
    assert_eq!(
        one(&docs, "ClusterRoleBinding")["subjects"][0]["name"],
        "existing"
    );

    // Whatever the values: no wildcards, no list/watch of Secrets.
    for values in ["", ALL_OPTIONS] {
        for doc in documents(&template(RELEASE, "ops", values)) {
            if !matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
                continue;
            }
            for (group, resource, _, verb) in grants(&doc) {
                assert!(group != "*" && resource != "*" && verb != "*");
                assert!(
                    !(resource == "secrets" && verb != "get"),
                    "secrets {verb} granted"
                );
            }
        }
    }
}

// -------------------------------------------------------------------------------------------
// Against the real apiserver
// -------------------------------------------------------------------------------------------

/// A helm release installed into a fresh namespace of the test environment.
struct Release {
    name: String,
    namespace: String,
    /// The chart's ServiceAccount as an RBAC user name.
    user: String,
    /// Prefix of the release's object names (Deployment, ServiceAccount, ConfigMap, Lease).
    fullname: String,
    service_account: String,
    docs: Vec<Value>,
    /// What `helm install` printed (the NOTES).
    notes: String,
}

async fn install(env: &Env, client: &kube::Client, prefix: &str, values: &str) -> Release {
    let namespace = fresh_namespace(client, prefix).await;
    // Release names are unique, so cluster-scoped objects (ClusterRole) never collide.
    let name = namespace.clone();
    let (identity, file) = (values_file(IDENTITY), values_file(values));
    let started = Instant::now();
    let stdout = ok(
        helm_cmd()
            .env("KUBECONFIG", &env.kubeconfig)
            .args(["install", &name])
            .arg(chart())
            .args(["--namespace", &namespace, "--timeout", "60s", "-f"])
            .arg(identity.path())
            .arg("-f")
            .arg(file.path()),
        None,
    );
    eprintln!("helm install {name}: {:?}", started.elapsed());
    let docs = documents(&template(&name, &namespace, values));
    let fullname = format!("{name}-vaultkey-operator");
    let service_account = fullname.clone();
    Release {
        user: format!("system:serviceaccount:{namespace}:{service_account}"),
        fullname,
        name,
        namespace,
        service_account,
        docs,
        notes: stdout,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_pass_a_server_dry_run_and_helm_install_is_accepted() {
    let env = Env::get();
    let client = env.kube().await;

    // deploy/: the namespace for real (namespaced objects of a dry run need it), then everything
    // in a dry run. The namespace warns on the "restricted" Pod Security Standard, so a
    // Deployment whose pod breaks it would print a warning.
    let deploy = read(repo().join("deploy/vaultkey-operator.yaml"));
    let docs = documents(&deploy);
    let namespace = serde_json::to_string(one(&docs, "Namespace")).unwrap();
    ok(kubectl(&env).args(["apply", "-f", "-"]), Some(&namespace));
    // Server-side, as deploy/README.md says. Forcing conflicts only matters where another test
    // or the environment (the CRD) already applied the same objects; nothing is written.
    let apply = [
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=chart-test",
        "--dry-run=server",
        "-f",
        "-",
    ];
    let out = output(kubectl(&env).args(apply), Some(&deploy));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl apply --server-side --dry-run=server -f deploy/vaultkey-operator.yaml: {stderr}"
    );
    assert!(!stderr.contains("would violate"), "{stderr}");
    let applied = String::from_utf8_lossy(&out.stdout);
    for doc in &docs {
        let name = doc["metadata"]["name"].as_str().unwrap();
        assert!(applied.contains(name), "{name} not applied:\n{applied}");
    }
    // The warning mechanism is live: a privilege-escalating Deployment is warned about.
    let mut bad = one(&docs, "Deployment").clone();
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
        json!(true);
    let out = output(kubectl(&env).args(apply), Some(&bad.to_string()));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would violate PodSecurity"),
        "no PodSecurity warning for a bad Deployment: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The pod itself is admitted where "restricted" is enforced (the namespace above enforces
    // it), and the same pod with privilege escalation is not.
    let pod_template = &one(&docs, "Deployment")["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator", "namespace": DEPLOY_NAMESPACE, "labels": pod_template["metadata"]["labels"]},
        "spec": pod_template["spec"],
    });
    ok(
        kubectl(&env).args(["create", "--dry-run=server", "-f", "-"]),
        Some(&pod.to_string()),
    );
    let mut privileged = pod.clone();
    privileged["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
        json!(true);
    let out = output(
        kubectl(&env).args(["create", "--dry-run=server", "-f", "-"]),
        Some(&privileged.to_string()),
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("violates PodSecurity"),
        "a privilege-escalating pod was admitted in a restricted namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every option (except the ServiceMonitor: no Prometheus Operator CRDs here), rendered into
    // fresh namespaces, passes a server-side dry run.
    let release_ns = fresh_namespace(&client, "chart-dry").await;
    let watched = fresh_namespace(&client, "chart-dry-w").await;
    let values = ALL_OPTIONS
        .replace("[team-a, team-b]", &format!("[{watched}]"))
        .replace("team-a:", &format!("{watched}:"))
        .replace(
            "serviceMonitor: {enabled: true,",
            "serviceMonitor: {enabled: false,",
        )
        .replace(
            "priorityClassName: system-cluster-critical",
            "priorityClassName: \"\"",
        );
    let rendered = template(&release_ns, &release_ns, &values);
    let kinds: BTreeSet<String> = documents(&rendered)
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in ["NetworkPolicy", "ConfigMap", "Role", "PodDisruptionBudget"] {
        assert!(kinds.contains(kind), "{kind} rendered: {kinds:?}");
    }
    let out = ok(
        kubectl(&env).args(["apply", "--dry-run=server", "-f", "-"]),
        Some(&rendered),
    );
    assert_eq!(out.lines().count(), documents(&rendered).len(), "{out}");

    // `helm install` with the chart's defaults alone stops before creating anything and says
    // which values to set (no pods to crash-loop).
    let bare = fresh_namespace(&client, "chart-bare").await;
    let out = output(
        helm_cmd()
            .env("KUBECONFIG", &env.kubeconfig)
            .args(["install", &bare])
            .arg(chart())
            .args(["--namespace", &bare]),
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "helm install with defaults succeeded"
    );
    assert!(
        stderr.contains("No Azure credential")
            && stderr.contains("azure.workloadIdentity.webhook=true"),
        "{stderr}"
    );
    let listed = ok(
        helm_cmd()
            .env("KUBECONFIG", &env.kubeconfig)
            .args(["list", "-a", "-q", "-n", &bare]),
        None,
    );
    assert!(listed.trim().is_empty(), "a release was recorded: {listed}");
    let left = ok(
        kubectl(&env).args([
            "get",
            "all,serviceaccounts",
            "-n",
            &bare,
            "-o",
            "name",
            "-l",
            &format!("app.kubernetes.io/instance={bare}"),
        ]),
        None,
    );
    assert!(left.trim().is_empty(), "objects were created: {left}");

    // A real install with a workload identity: every object is there afterwards.
    let release = install(&env, &client, "chart-install", "").await;
    assert!(
        release
            .notes
            .contains("Azure credential: workload identity, token mounted by the chart")
            && release.notes.contains(&format!(
                "subject system:serviceaccount:{}:{}",
                release.namespace, release.service_account
            )),
        "NOTES:\n{}",
        release.notes
    );
    // Its pod, with the projected token, is admitted where "restricted" is enforced.
    let pod_template = &one(&release.docs, "Deployment")["spec"]["template"];
    assert!(pod_template["spec"]["volumes"][0]["projected"].is_object());
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-chart-token", "namespace": DEPLOY_NAMESPACE, "labels": pod_template["metadata"]["labels"]},
        "spec": pod_template["spec"],
    });
    ok(
        kubectl(&env).args(["create", "--dry-run=server", "-f", "-"]),
        Some(&pod.to_string()),
    );
    for doc in &release.docs {
        let kind = doc["kind"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let mut cmd = kubectl(&env);
        cmd.args(["get", kind, name, "-o", "name"]);
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            cmd.args(["-n", ns]);
        }
        ok(&mut cmd, None);
    }
    let status = ok(
        helm_cmd().env("KUBECONFIG", &env.kubeconfig).args([
            "status",
            &release.name,
            "-n",
            &release.namespace,
            "-o",
            "json",
        ]),
        None,
    );
    let status: Value = serde_json::from_str(&status).expect("helm status JSON");
    assert_eq!(status["info"]["status"], "deployed");
}

/// (resource as kubectl prints it, resource name or "", verb) from `kubectl auth can-i --list`.
type Allowed = BTreeSet<(String, String, String)>;

fn can_i_list(env: &Env, user: &str, namespace: &str) -> Allowed {
    let out = ok(
        kubectl(env)
            .args(["auth", "can-i", "--list", "-n", namespace])
            .arg(format!("--as={user}")),
        None,
    );
    let mut allowed = BTreeSet::new();
    for line in out.lines().skip(1) {
        let Some(open) = line.find('[') else { continue };
        let resource = line[..open].trim();
        if resource.is_empty() {
            continue; // non-resource URLs
        }
        let groups: Vec<Vec<String>> = line[open..]
            .split(']')
            .filter_map(|g| g.trim().strip_prefix('['))
            .map(|g| g.split_whitespace().map(str::to_owned).collect())
            .collect();
        assert_eq!(
            groups.len(),
            3,
            "cannot read `kubectl auth can-i --list` line {line:?}"
        );
        let names = if groups[1].is_empty() {
            vec![String::new()]
        } else {
            groups[1].clone()
        };
        for name in names {
            for verb in &groups[2] {
                allowed.insert((resource.to_owned(), name.clone(), verb.clone()));
            }
        }
    }
    allowed
}

/// What `user` may do in `namespace` beyond what every authenticated user may.
fn own_permissions(env: &Env, user: &str, namespace: &str) -> Allowed {
    let everyone = can_i_list(
        env,
        "system:serviceaccount:default:no-such-account",
        namespace,
    );
    can_i_list(env, user, namespace)
        .difference(&everyone)
        .cloned()
        .collect()
}

fn expected(grants: &BTreeSet<Grant>) -> Allowed {
    grants
        .iter()
        .map(|(group, resource, name, verb)| {
            let (plural, sub) = match resource.split_once('/') {
                Some((p, s)) => (p, Some(s)),
                None => (resource.as_str(), None),
            };
            let mut printed = if group.is_empty() {
                plural.to_owned()
            } else {
                format!("{plural}.{group}")
            };
            if let Some(sub) = sub {
                printed = format!("{printed}/{sub}");
            }
            (printed, name.clone(), verb.clone())
        })
        .collect()
}

fn can_i(env: &Env, user: &str, args: &[&str]) -> bool {
    let out = output(
        kubectl(env)
            .args(["auth", "can-i"])
            .args(args)
            .arg(format!("--as={user}")),
        None,
    );
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {args:?}: {other} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Checks `kubectl auth can-i` as `user` for each line of `table`: "yes|no ARGS...".
fn assert_can_i(env: &Env, user: &str, table: &str) {
    for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let allowed = match words[0] {
            "yes" => true,
            "no" => false,
            other => panic!("bad can-i table line {line:?} ({other})"),
        };
        assert_eq!(
            can_i(env, user, &words[1..]),
            allowed,
            "{user}: `kubectl auth can-i {}` must say {}",
            words[1..].join(" "),
            words[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_account_may_do_exactly_what_the_operator_uses() {
    let env = Env::get();
    let client = env.kube().await;
    let e = fresh_namespace(&client, "chart-other").await;

    // Cluster-wide release: the whole set, exactly, anywhere; the Lease only at home.
    let r = install(&env, &client, "chart-rbac", "").await;
    let (u, home, lease) = (&r.user, &r.namespace, &r.fullname);
    let watched = expected(&watched_grants(true));
    let mut at_home = watched.clone();
    at_home.extend(expected(&lease_grants(lease)));
    assert_eq!(own_permissions(&env, u, &e), watched);
    assert_eq!(own_permissions(&env, u, home), at_home);
    assert_can_i(
        &env,
        u,
        &format!(
            "
            yes list vaultkeys.vaultkey.dev --all-namespaces
            yes watch vaultkeys.vaultkey.dev --all-namespaces
            yes patch vaultkeys.vaultkey.dev -n {e}
            yes patch vaultkeys.vaultkey.dev --subresource=status -n {e}
            yes update vaultkeys.vaultkey.dev --subresource=finalizers -n {e}
            yes create events.events.k8s.io -n {e}
            yes patch events.events.k8s.io -n {e}
            yes get secrets/material -n {e}
            no list secrets -n {e}
            no watch secrets -n {e}
            no list secrets --all-namespaces
            no create secrets -n {e}
            no delete vaultkeys.vaultkey.dev -n {e}
            no create vaultkeys.vaultkey.dev -n {e}
            no update vaultkeys.vaultkey.dev -n {e}
            no update vaultkeys.vaultkey.dev --subresource=status -n {e}
            no create clusterroles
            no create rolebindings -n {home}
            no create events -n {e}
            yes get configmaps/published -n {e}
            yes create configmaps -n {e}
            yes patch configmaps/published -n {e}
            no list configmaps -n {e}
            no watch configmaps -n {e}
            no update configmaps/published -n {e}
            no delete configmaps/published -n {e}
            no create pods -n {e}
            no impersonate serviceaccounts -n {e}
            no get serviceaccounts/kv -n {e}
            no create serviceaccounts/kv --subresource=token -n {e}
            yes create leases.coordination.k8s.io -n {home}
            yes get leases.coordination.k8s.io/{lease} -n {home}
            yes update leases.coordination.k8s.io/{lease} -n {home}
            yes patch leases.coordination.k8s.io/{lease} -n {home}
            no update leases.coordination.k8s.io/another-lease -n {home}
            no delete leases.coordination.k8s.io/{lease} -n {home}
            no list leases.coordination.k8s.io -n {home}
            no create leases.coordination.k8s.io -n {e}
            "
        ),
    );

    // Release watching one namespace: the set there, the Lease at home, nothing elsewhere.
    let team = fresh_namespace(&client, "chart-team").await;
    let r = install(
        &env,
        &client,
        "chart-rbac-ns",
        &format!("watchNamespaces: [{team}]"),
    )
    .await;
    let (u, home) = (&r.user, &r.namespace);
    assert_eq!(own_permissions(&env, u, &team), watched);
    assert_eq!(
        own_permissions(&env, u, home),
        expected(&lease_grants(&r.fullname))
    );
    assert_eq!(own_permissions(&env, u, &e), Allowed::new());
    assert_can_i(
        &env,
        u,
        &format!(
            "
            yes get secrets/material -n {team}
            no get secrets/material -n {e}
            no get secrets/material -n {home}
            no get secrets/material -n kube-system
            no list secrets -n {team}
            no watch secrets -n {team}
            yes list vaultkeys.vaultkey.dev -n {team}
            no list vaultkeys.vaultkey.dev --all-namespaces
            no list vaultkeys.vaultkey.dev -n {e}
            no delete vaultkeys.vaultkey.dev -n {team}
            yes patch configmaps/published -n {team}
            no get configmaps/published -n {e}
            no create configmaps -n {home}
            no create events.events.k8s.io -n {e}
            no create clusterroles
            "
        ),
    );

    // Without imports, no Secret anywhere.
    let r = install(
        &env,
        &client,
        "chart-rbac-nosec",
        "rbac: {importSecrets: false}",
    )
    .await;
    assert_eq!(
        own_permissions(&env, &r.user, &e),
        expected(&watched_grants(false))
    );
    assert_can_i(&env, &r.user, &format!("no get secrets/material -n {e}"));

    // Namespace identities, in a watched namespace: ServiceAccounts by name and their tokens
    // there, nothing more, nowhere else.
    let team = fresh_namespace(&client, "chart-ids").await;
    let r = install(
        &env,
        &client,
        "chart-rbac-ids",
        &format!("watchNamespaces: [{team}]\nrbac: {{namespaceIdentities: true}}"),
    )
    .await;
    assert_eq!(
        own_permissions(&env, &r.user, &team),
        expected(&watched_grants_with(true, true))
    );
    assert_can_i(
        &env,
        &r.user,
        &format!(
            "
            yes get serviceaccounts/kv -n {team}
            yes create serviceaccounts/kv --subresource=token -n {team}
            no list serviceaccounts -n {team}
            no watch serviceaccounts -n {team}
            no create serviceaccounts -n {team}
            no update serviceaccounts/kv -n {team}
            no get serviceaccounts/kv -n {e}
            no create serviceaccounts/kv --subresource=token -n {e}
            no create serviceaccounts/kv --subresource=token -n kube-system
            "
        ),
    );
}

// -------------------------------------------------------------------------------------------
// The operator binary as the chart's ServiceAccount
// -------------------------------------------------------------------------------------------

/// The operator binary started as one replica of the installed chart would: the Deployment's
/// own args and environment, the ServiceAccount's token, plus the emulator flags.
struct Replica {
    child: Child,
    pod: String,
    log: PathBuf,
}

impl Replica {
    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut out);
        }
        out
    }

    /// SIGTERM, as the kubelet stops a pod; waits until the process has exited.
    fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM sent to {}", self.pod);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().expect("wait").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not stop within 15 s of SIGTERM", self.pod);
    }

    /// Log lines that show the operator lacking a permission or failing a Kubernetes write.
    fn permission_problems(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| {
                let lower = l.to_ascii_lowercase();
                lower.contains("forbidden")
                    || lower.contains("unauthorized")
                    || lower.contains("could not publish an event")
                    || lower.contains("cannot read or write the lease")
                    || lower.contains("could not renew")
                    || lower.contains("could not release")
                    || lower.contains("reconcile failed")
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.pod,
                self.log.display(),
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

/// A kubeconfig for the environment's apiserver that authenticates with `token`.
fn token_kubeconfig(env: &Env, dir: &Path, token: &str) -> PathBuf {
    let mut config: Value =
        serde_norway::from_str(&read(&env.kubeconfig)).expect("kubeconfig parses");
    config["users"] = json!([{"name": "chart-sa", "user": {"token": token}}]);
    config["contexts"][0]["context"]["user"] = json!("chart-sa");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).expect("kubeconfig");
    path
}

struct Deployed {
    kubeconfig: PathBuf,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

/// Reads the installed Deployment back, creates a ServiceAccount token (TokenRequest API) and
/// checks that the apiserver takes it as the chart's ServiceAccount.
fn deployed(env: &Env, release: &Release) -> Deployed {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = ok(
        kubectl(env).args([
            "create",
            "token",
            &release.service_account,
            "-n",
            &release.namespace,
            "--duration=1h",
        ]),
        None,
    );
    let kubeconfig = token_kubeconfig(env, dir.path(), token.trim());
    let whoami = ok(
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ]),
        None,
    );
    assert_eq!(
        whoami, release.user,
        "the token authenticates as the chart's ServiceAccount"
    );

    let deployment: Value = serde_json::from_str(&ok(
        kubectl(env).args([
            "get",
            "deployment",
            &release.fullname,
            "-n",
            &release.namespace,
            "-o",
            "json",
        ]),
        None,
    ))
    .expect("Deployment JSON");
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    // The workload identity (AZURE_*) and its token volume are not used here: the emulator
    // takes a static token, and the operator cannot reach Azure AD from this machine.
    assert_eq!(
        c["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
            {"name": "AZURE_CLIENT_ID", "value": "11111111-1111-1111-1111-111111111111"},
            {"name": "AZURE_TENANT_ID", "value": "22222222-2222-2222-2222-222222222222"},
            {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/tokens/azure-identity-token"},
        ])
    );
    let mut args = Vec::new();
    for arg in strings(&c["args"]) {
        if arg.starts_with("--metrics-addr=") {
            continue; // each replica gets a free loopback port below
        }
        if let Some(path) = arg.strip_prefix("--vault-access-file=") {
            // What the kubelet would mount: the ConfigMap's file.
            let cm: Value = serde_json::from_str(&ok(
                kubectl(env).args([
                    "get",
                    "configmap",
                    &format!("{}-vault-access", release.fullname),
                    "-n",
                    &release.namespace,
                    "-o",
                    "json",
                ]),
                None,
            ))
            .unwrap();
            let file = Path::new(path).file_name().unwrap().to_str().unwrap();
            let local = dir.path().join(file);
            std::fs::write(
                &local,
                cm["data"][file].as_str().expect("policy in the ConfigMap"),
            )
            .unwrap();
            args.push(format!("--vault-access-file={}", local.display()));
            continue;
        }
        args.push(arg);
    }
    Deployed {
        kubeconfig,
        args,
        dir,
    }
}

fn start_replica(env: &Env, release: &Release, deployed: &Deployed, pod: &str) -> Replica {
    let log = deployed.dir.path().join(format!("{pod}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_vaultkey-operator"))
        .args(&deployed.args)
        .arg(format!("--metrics-addr=127.0.0.1:{}", support::free_port()))
        .arg("--emulator-ca-file")
        .arg(&env.vault_ca)
        .args([
            "--emulator-static-token",
            "chart-test",
            "--emulator-skip-challenge-resource-check",
        ])
        // What the downward API gives a pod.
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", &release.namespace)
        .env("KUBECONFIG", &deployed.kubeconfig)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1") // plain log lines to search
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .spawn()
        .expect("operator binary starts");
    Replica {
        child,
        pod: pod.to_owned(),
        log,
    }
}

async fn lease_holder(client: &kube::Client, ns: &str, lease: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(lease)
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// The how-to manifest (examples/), pointed at the emulator, with its own key name.
fn howto_manifest(env: &Env, key: &str, labels: &str) -> String {
    let text = read(repo().join("examples/howto-rsa-with-rotation.yaml"));
    let out = text
        .replace("https://my-vault.vault.azure.net", &env.vault_url)
        // Publishing too, so the ServiceAccount's ConfigMap permissions are proven sufficient.
        .replace(
            "\nspec:\n",
            &format!("\nspec:\n  keyName: {key}\n  publish: {{}}\n"),
        )
        .replace(
            "\n  name: howto-rsa\n",
            &format!("\n  name: howto-rsa\n  labels: {labels}\n"),
        );
    assert!(
        out.contains(&env.vault_url) && out.contains(key) && out.contains("labels:"),
        "examples/howto-rsa-with-rotation.yaml changed shape:\n{text}"
    );
    out
}

async fn create_import(env: &Env, client: &kube::Client, ns: &str, key: &str, labels: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "material"},
        "stringData": {"key.json": read(repo().join("tests/fixtures/key_material/azure_doc_rsa.jwk.json"))}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret created");
    let manifest = format!(
        "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata:\n  name: imported\n  labels: {labels}\nspec:\n  vaultUrl: {}\n  keyName: {key}\n  keyType: RSA\n  import: {{secretRef: {{name: material, key: key.json}}}}\n",
        env.vault_url
    );
    support::kubectl_apply(env, ns, &manifest)
        .await
        .expect("import VaultKey applied");
}

/// Fails at once, with the log lines, when a replica logged a permission problem.
fn assert_no_permission_problems(replicas: &[&Replica]) {
    for replica in replicas {
        let problems = replica.permission_problems();
        assert!(problems.is_empty(), "{}: {problems:#?}", replica.pod);
    }
}

/// Waits until Ready has `status` for the current generation, failing early on a permission
/// problem in the replicas' logs.
async fn ready(
    client: &kube::Client,
    ns: &str,
    name: &str,
    status: &str,
    replicas: &[&Replica],
) -> VaultKey {
    eventually(&format!("{ns}/{name} Ready={status}"), WAIT, || async {
        assert_no_permission_problems(replicas);
        let vk = get_vk(client, ns, name).await;
        let ready = vk.ready_condition()?;
        (ready.status == status && ready.observed_generation == vk.metadata.generation)
            .then_some(vk.clone())
    })
    .await
}

/// Ready, then a rotateToken change: one new version (two in all), status and events agree.
async fn rotate_by_token(
    env: &Env,
    client: &kube::Client,
    ns: &str,
    key: &str,
    replicas: &[&Replica],
) {
    let vk = ready(client, ns, "howto-rsa", "True", replicas).await;
    let before = vk
        .status
        .as_ref()
        .and_then(|s| s.current_version.clone())
        .expect("a current version");
    let vault = env.vault(&env.vault_url);
    assert_eq!(vault.list_versions(key).await.unwrap().len(), 1);
    // As the README tells users.
    ok(
        kubectl(env).args([
            "patch",
            "vk",
            "howto-rsa",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"rotateToken":"2026-11-25"}}"#,
        ]),
        None,
    );
    eventually("the rotateToken served in status", WAIT, || async {
        assert_no_permission_problems(replicas);
        let vk = get_vk(client, ns, "howto-rsa").await;
        let s = vk.status.as_ref()?;
        (s.observed_rotate_token.as_deref() == Some("2026-11-25")
            && s.current_version.as_deref() != Some(before.as_str())
            && s.version_count == Some(2))
        .then_some(())
    })
    .await;
    let vk = ready(client, ns, "howto-rsa", "True", replicas).await;
    let latest = vault.get_key(key).await.unwrap().expect("key in the vault");
    // The ConfigMap, written as the ServiceAccount, follows the rotation: both versions listed.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    eventually(
        "the published ConfigMap at the new version",
        WAIT,
        || async {
            let data = configmaps.get_opt("howto-rsa-vaultkey").await.ok()??.data?;
            let jwks: serde_json::Value = serde_json::from_str(data.get("jwks.json")?).ok()?;
            (data.get("version") == Some(&latest.version) && jwks["keys"].as_array()?.len() == 2)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        vk.status.unwrap().current_version.as_deref(),
        Some(latest.version.as_str())
    );
    assert_eq!(
        vault.list_versions(key).await.unwrap().len(),
        2,
        "two versions"
    );
    let reasons: Vec<String> = events_once(client, ns, "howto-rsa", "Rotated")
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    for reason in ["Created", "Rotated"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "a {reason} event (events.k8s.io, written as the ServiceAccount): {reasons:?}"
        );
    }
}

/// Cluster-wide release, two replicas: the first leads, the second stands by; the how-to key
/// and an import become Ready; SIGTERM hands the Lease over; the new leader rotates.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_as_the_chart_service_account_with_two_replicas() {
    let env = Env::get();
    let client = env.kube().await;
    let id = format!("{:08x}", rand::random::<u32>());
    let labels = format!("{{vaultkey.dev/chart-test: \"{id}\"}}");
    // Cluster-wide RBAC, but only this test's VaultKeys (other tests share the apiserver).
    let release = install(
        &env,
        &client,
        "chart-run",
        &format!(
            "operator: {{resyncSeconds: 5, labelSelector: \"vaultkey.dev/chart-test={id}\", logLevel: \"info,vaultkey_operator=debug\"}}\nleaderElection: {{leaseDurationSeconds: 6}}\n"
        ),
    )
    .await;
    let deployed = deployed(&env, &release);
    let lease = release.fullname.clone();
    assert!(
        deployed
            .args
            .contains(&format!("--leader-election-lease={lease}"))
    );
    assert!(
        deployed
            .args
            .contains(&format!("--label-selector=vaultkey.dev/chart-test={id}"))
    );

    let mut first = start_replica(&env, &release, &deployed, "replica-a");
    let holder = eventually("replica-a leads", WAIT, || {
        lease_holder(&client, &release.namespace, &lease)
    })
    .await;
    assert_eq!(holder, "replica-a");
    let second = start_replica(&env, &release, &deployed, "replica-b");

    let ns = fresh_namespace(&client, "chart-keys").await;
    let key = format!("chart-{ns}");
    support::kubectl_apply(&env, &ns, &howto_manifest(&env, &key, &labels))
        .await
        .expect("how-to manifest applied");
    create_import(&env, &client, &ns, &format!("chart-import-{ns}"), &labels).await;
    ready(&client, &ns, "howto-rsa", "True", &[&first, &second]).await;
    ready(&client, &ns, "imported", "True", &[&first, &second]).await;
    assert_eq!(
        lease_holder(&client, &release.namespace, &lease)
            .await
            .as_deref(),
        Some("replica-a"),
        "the standby did not take the Lease"
    );

    // Handover: the leader releases the Lease on SIGTERM (a patch), the standby takes it.
    first.terminate();
    assert!(
        first.logs().contains("released the Lease"),
        "replica-a released the Lease on SIGTERM"
    );
    eventually("replica-b leads", WAIT, || async {
        (lease_holder(&client, &release.namespace, &lease)
            .await
            .as_deref()
            == Some("replica-b"))
        .then_some(())
    })
    .await;
    rotate_by_token(&env, &client, &ns, &key, &[&first, &second]).await;
    assert!(second.logs().contains("became leader"));
    assert_no_permission_problems(&[&first, &second]);
}

/// Release watching one namespace, with a vault access policy: the how-to flow and an import
/// there; a VaultKey pointing at a vault the policy does not grant is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_as_the_chart_service_account_in_a_watched_namespace() {
    let env = Env::get();
    let client = env.kube().await;
    let team = fresh_namespace(&client, "chart-watched").await;
    let release = install(
        &env,
        &client,
        "chart-run-ns",
        &format!(
            "replicaCount: 1\nwatchNamespaces: [{team}]\noperator: {{resyncSeconds: 5}}\nvaultAccess:\n  default: []\n  namespaces:\n    {team}: [\"{}\"]\n",
            env.vault_url
        ),
    )
    .await;
    let deployed = deployed(&env, &release);
    assert!(deployed.args.contains(&format!("--namespace={team}")));
    assert!(
        deployed
            .args
            .iter()
            .any(|a| a.starts_with("--vault-access-file="))
    );
    let replica = start_replica(&env, &release, &deployed, "replica-0");

    let key = format!("chart-{team}");
    support::kubectl_apply(&env, &team, &howto_manifest(&env, &key, "{}"))
        .await
        .expect("how-to manifest applied");
    create_import(&env, &client, &team, &format!("chart-import-{team}"), "{}").await;
    support::kubectl_apply(
        &env,
        &team,
        &format!(
            "apiVersion: vaultkey.dev/v1alpha1\nkind: VaultKey\nmetadata: {{name: elsewhere}}\nspec:\n  vaultUrl: {}\n  keyName: chart-elsewhere-{team}\n  keyType: EC\n",
            env.purgeable_vault_url
        ),
    )
    .await
    .expect("VaultKey applied");
    ready(&client, &team, "imported", "True", &[&replica]).await;
    rotate_by_token(&env, &client, &team, &key, &[&replica]).await;
    let refused = ready(&client, &team, "elsewhere", "False", &[&replica]).await;
    assert_eq!(support::ready_reason(&refused).0, "VaultNotAllowed");
    assert_eq!(
        lease_holder(&client, &release.namespace, &release.fullname)
            .await
            .as_deref(),
        Some("replica-0")
    );
    assert_no_permission_problems(&[&replica]);
}
