//! The `vaultkey-operator` binary: flags, wiring and the HTTP endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::{Parser, Subcommand, ValueEnum};
use futures::FutureExt;
use tracing::{error, info};

use vaultkey_operator::access::AccessPolicy;
use vaultkey_operator::controller::{self, Context, Settings};
use vaultkey_operator::health::Health;
use vaultkey_operator::identity::NamespaceIdentities;
use vaultkey_operator::keyvault::azure::{
    AzureVaultProvider, ClientSettings, CredentialSource, credential,
};
use vaultkey_operator::keyvault::budget::Limits;
use vaultkey_operator::leader::{LeaderElector, LeaseSettings};
use vaultkey_operator::telemetry::{self, LogFormat, Metrics};
use vaultkey_operator::vault_hosts::VaultHosts;

/// jemalloc instead of glibc's allocator: with 10,000 VaultKeys replaced in the cache as their
/// status changes, glibc's per-thread arenas held the operator at 101 MiB peak RSS, jemalloc at
/// 63 MiB (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Azure Key Vault keys managed as Kubernetes VaultKey resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the VaultKey CustomResourceDefinition as YAML.
    Crd,
    /// Run the operator.
    Run(Box<RunArgs>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CredentialKind {
    /// Workload identity when AZURE_FEDERATED_TOKEN_FILE is set, else an error.
    Auto,
    WorkloadIdentity,
    ManagedIdentity,
    ClientSecret,
    AzureCli,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Seconds between comparisons of a converged VaultKey with its vault (one key list per
    /// vault, 25 keys a page; each key read when the vault is not listed).
    #[arg(long, env = "VAULTKEY_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds between full reads (key_ops, rotation policy) of a converged key whose vault's
    /// list shows no change: what Key Vault's list does not show is found within this time.
    #[arg(
        long,
        env = "VAULTKEY_VERIFY_INTERVAL_SECONDS",
        default_value_t = 86_400
    )]
    verify_interval_seconds: u64,
    /// Watch only these namespaces (repeat the flag, or comma-separate); default: all.
    #[arg(long = "namespace", env = "VAULTKEY_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Watch only VaultKeys matching this label selector.
    #[arg(long, env = "VAULTKEY_LABEL_SELECTOR")]
    label_selector: Option<String>,
    /// VaultKeys reconciled in parallel (across all vaults; a reconcile also waits on
    /// Kubernetes, so this is above --vault-concurrency).
    #[arg(long, env = "VAULTKEY_CONCURRENCY", default_value_t = 32)]
    concurrency: u16,
    /// Key Vault requests in flight at once, per vault.
    #[arg(long, env = "VAULTKEY_VAULT_CONCURRENCY", default_value_t = Limits::default().in_flight)]
    vault_concurrency: u32,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "VAULTKEY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log filter (tracing EnvFilter syntax), e.g. info or vaultkey_operator=debug.
    #[arg(long, env = "VAULTKEY_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[arg(long, env = "VAULTKEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// How the operator authenticates to Key Vault.
    #[arg(long, env = "VAULTKEY_AZURE_CREDENTIAL", value_enum, default_value_t = CredentialKind::Auto)]
    azure_credential: CredentialKind,
    /// Client id of a user-assigned managed identity.
    #[arg(long, env = "VAULTKEY_MANAGED_IDENTITY_CLIENT_ID")]
    managed_identity_client_id: Option<String>,
    /// Seconds before a Key Vault request is abandoned (its outcome is then unknown and the
    /// next attempt re-reads the vault first).
    #[arg(long, env = "VAULTKEY_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    request_timeout_seconds: u64,
    /// Software-key creates allowed per vault per 10 seconds (Key Vault's limit is 20).
    #[arg(long, env = "VAULTKEY_CREATES_PER_10S", default_value_t = Limits::default().software_creates)]
    creates_per_10s: u32,
    /// Name of this instance in events and in the leader Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "vaultkey-operator")]
    instance: String,
    /// YAML file mapping namespaces to the vaults they may use (see README); without it every
    /// namespace may use every vault.
    #[arg(long, env = "VAULTKEY_VAULT_ACCESS_FILE")]
    vault_access_file: Option<PathBuf>,
    /// Reconcile only while holding a Lease, so several replicas can run for availability.
    #[arg(long, env = "VAULTKEY_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader Lease; instances with different selectors use different Leases.
    #[arg(
        long,
        env = "VAULTKEY_LEADER_ELECTION_LEASE",
        default_value = "vaultkey-operator"
    )]
    leader_election_lease: String,
    /// Seconds a Lease stays valid without renewal; a new leader takes over after this.
    #[arg(long, env = "VAULTKEY_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// After SIGTERM, how long in-flight reconciles may finish before the process exits
    /// (keep it under the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "VAULTKEY_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    shutdown_grace_seconds: u64,
    /// Vault hosts allowed besides the Key Vault and Managed HSM endpoints of the Azure public,
    /// China and US Government clouds: exact hosts (any port) or `*.domain` (any host below
    /// it), repeated or comma-separated — private DNS names, emulators. A VaultKey naming any
    /// other host is refused (no token is ever sent to it).
    #[arg(long, env = "VAULTKEY_ALLOWED_VAULT_HOSTS", value_delimiter = ',')]
    allowed_vault_hosts: Vec<String>,
    /// VaultKeys must act with a namespace identity (spec.identity.serviceAccountName): the
    /// operator's own identity no longer acts for a VaultKey that names none.
    #[arg(long, env = "VAULTKEY_REQUIRE_NAMESPACE_IDENTITY")]
    require_namespace_identity: bool,
    /// The namespace default identity: a VaultKey that names no identity acts with the
    /// ServiceAccount of this name in its own namespace when one exists (else the operator's
    /// identity, or IdentityRequired with --require-namespace-identity).
    #[arg(long, env = "VAULTKEY_NAMESPACE_IDENTITY_SERVICE_ACCOUNT")]
    namespace_identity_service_account: Option<String>,
    /// EMULATOR ONLY: the Azure AD authority host namespace identities exchange their tokens
    /// at, e.g. https://127.0.0.1:8444; only https and a loopback host are accepted (a real
    /// cloud's authority comes from AZURE_AUTHORITY_HOST, which the workload identity webhook
    /// sets, else the public cloud).
    #[arg(long, env = "VAULTKEY_EMULATOR_AUTHORITY_HOST")]
    emulator_authority_host: Option<String>,
    /// EMULATOR ONLY: trust this extra CA (PEM) for vault connections.
    #[arg(long, env = "VAULTKEY_EMULATOR_CA_FILE")]
    emulator_ca_file: Option<PathBuf>,
    /// EMULATOR ONLY: send this fixed bearer token instead of a real credential.
    #[arg(long, env = "VAULTKEY_EMULATOR_STATIC_TOKEN", hide_env_values = true)]
    emulator_static_token: Option<String>,
    /// EMULATOR ONLY: accept authentication challenges whose resource does not match the
    /// vault's domain, for hosts outside the known clouds (a known cloud's host is always
    /// checked); also allows loopback vault hosts (localhost, 127.0.0.0/8, [::1]).
    #[arg(long, env = "VAULTKEY_EMULATOR_SKIP_CHALLENGE_RESOURCE_CHECK")]
    emulator_skip_challenge_resource_check: bool,
    /// EMULATOR ONLY: the operator's clock for retention and the published JWKS runs this many
    /// seconds ahead, to follow an emulator whose clock was shifted forward.
    #[arg(
        long,
        env = "VAULTKEY_EMULATOR_CLOCK_OFFSET_SECONDS",
        default_value_t = 0
    )]
    emulator_clock_offset_seconds: u32,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match vaultkey_operator::api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the CRD: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            telemetry::init_logging(&args.log_level, args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the async runtime");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(run(*args));
            // A blocking task (a DNS lookup, say) must not hold the exit past the grace period.
            runtime.shutdown_timeout(Duration::from_secs(2));
            match result {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn credential_source(args: &RunArgs) -> Result<CredentialSource, String> {
    if let Some(token) = &args.emulator_static_token {
        return Ok(CredentialSource::EmulatorStaticToken(token.clone()));
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Ok(match args.azure_credential {
        CredentialKind::Auto if env("AZURE_FEDERATED_TOKEN_FILE").is_some() => {
            CredentialSource::WorkloadIdentity
        }
        CredentialKind::Auto => {
            return Err("no Azure credential configured: run with Azure Workload Identity (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE) or pass --azure-credential managed-identity | client-secret | azure-cli".into());
        }
        CredentialKind::WorkloadIdentity => {
            let missing: Vec<&str> = [
                "AZURE_TENANT_ID",
                "AZURE_CLIENT_ID",
                "AZURE_FEDERATED_TOKEN_FILE",
            ]
            .into_iter()
            .filter(|name| env(name).is_none())
            .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "--azure-credential workload-identity needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE; not set: {}. In a cluster either the chart sets them with a token it mounts (azure.workloadIdentity.webhook=false, clientId and tenantId), or the Azure Workload Identity webhook injects them into pods labelled azure.workload.identity/use: \"true\" whose ServiceAccount has the azure.workload.identity/client-id annotation (is the webhook installed?)",
                    missing.join(", ")
                ));
            }
            CredentialSource::WorkloadIdentity
        }
        CredentialKind::ManagedIdentity => CredentialSource::ManagedIdentity {
            client_id: args.managed_identity_client_id.clone(),
        },
        CredentialKind::ClientSecret => {
            let (Some(tenant_id), Some(client_id), Some(secret)) = (
                env("AZURE_TENANT_ID"),
                env("AZURE_CLIENT_ID"),
                env("AZURE_CLIENT_SECRET"),
            ) else {
                return Err("--azure-credential client-secret needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET".into());
            };
            CredentialSource::ClientSecret {
                tenant_id,
                client_id,
                secret,
            }
        }
        CredentialKind::AzureCli => CredentialSource::AzureCli,
    })
}

async fn run(args: RunArgs) -> Result<(), String> {
    let source = credential_source(&args)?;
    let credential =
        credential(&source).map_err(|e| format!("cannot set up the Azure credential: {e}"))?;
    let extra_root_pem = match &args.emulator_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("cannot read --emulator-ca-file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let access = match &args.vault_access_file {
        Some(path) => AccessPolicy::load(path).map_err(|e| e.to_string())?,
        None => AccessPolicy::AllowAll,
    };
    let metrics = Arc::new(Metrics::new());
    // An emulator on this machine cannot be reached without turning the challenge check off,
    // so that flag also admits loopback hosts.
    let vault_hosts = VaultHosts::parse(
        &args.allowed_vault_hosts,
        args.emulator_skip_challenge_resource_check,
    )
    .map_err(|e| format!("--allowed-vault-hosts: {e}"))?;
    let settings = ClientSettings {
        request_timeout: Duration::from_secs(args.request_timeout_seconds.max(1)),
        extra_root_pem,
        verify_challenge_resource: !args.emulator_skip_challenge_resource_check,
        vault_hosts: vault_hosts.clone(),
        limits: Limits {
            software_creates: args.creates_per_10s,
            in_flight: args.vault_concurrency.max(1),
            ..Limits::default()
        },
    };
    let vaults = AzureVaultProvider::new(credential, settings, metrics.clone())?;
    let authority_host = args
        .emulator_authority_host
        .as_deref()
        .map(emulator_authority_host)
        .transpose()?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach Kubernetes: {e}"))?;
    let identities = Arc::new(NamespaceIdentities::new(
        client.clone(),
        vaults.transport(),
        authority_host,
    ));

    let health = Arc::new(Health::new(&args.namespaces));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_addr))?;
    info!(addr = %listener.local_addr().map_err(|e| e.to_string())?, "serving /metrics, /healthz, /readyz");
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state((metrics.clone(), health.clone(), client.clone()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(vaults),
        metrics,
        Settings {
            resync_interval: Duration::from_secs(args.resync_seconds.max(1)),
            verify_interval: Duration::from_secs(args.verify_interval_seconds.max(1)),
            namespaces: args.namespaces.clone(),
            label_selector: args.label_selector.clone(),
            concurrency: args.concurrency.max(1),
            reporter: args.instance.clone(),
            access,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            vault_hosts,
            require_namespace_identity: args.require_namespace_identity,
            namespace_identity_service_account: args
                .namespace_identity_service_account
                .clone()
                .filter(|name| !name.is_empty()),
            clock_offset: chrono::Duration::seconds(i64::from(args.emulator_clock_offset_seconds)),
        },
        health,
        identities,
    ));
    let shutdown = shutdown_signal().shared();
    let result = if args.leader_election {
        let lease_duration = Duration::from_secs(args.lease_duration_seconds.max(3));
        let elector = LeaderElector::new(
            client,
            LeaseSettings {
                namespace: args.leader_election_namespace.clone(),
                name: args.leader_election_lease.clone(),
                identity: args.instance.clone(),
                lease_duration,
                renew_every: lease_duration / 3,
            },
        );
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.clone() => {
                server.abort();
                return Ok(());
            }
        }
        info!(namespaces = ?args.namespaces, resync_seconds = args.resync_seconds, "starting the VaultKey controller");
        let result = tokio::select! {
            () = controller::run(ctx, shutdown.clone()) => Ok(()),
            () = elector.hold() => Err("lost the leader Lease; exiting so that only one instance reconciles".to_owned()),
        };
        elector.release().await;
        result
    } else {
        info!(namespaces = ?args.namespaces, resync_seconds = args.resync_seconds, "starting the VaultKey controller");
        controller::run(ctx, shutdown).await;
        Ok(())
    };
    info!("stopped");
    server.abort();
    result
}

/// `--emulator-authority-host`: https on a loopback host only, so ServiceAccount tokens can
/// never be sent to another machine by a mistyped flag.
fn emulator_authority_host(raw: &str) -> Result<String, String> {
    let url =
        url::Url::parse(raw).map_err(|e| format!("--emulator-authority-host {raw:?}: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() != "https" || !loopback {
        return Err(format!(
            "--emulator-authority-host {raw:?}: an emulator's authority must be https on a loopback host (localhost, 127.0.0.0/8, [::1])"
        ));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

type AppState = (Arc<Metrics>, Arc<Health>, kube::Client);

async fn render_metrics(State((metrics, _, _)): State<AppState>) -> String {
    metrics.render()
}

/// Ready when this instance can do its work: a leader whose watches have listed and are not
/// failing, or a standby that can reach the API server (so a rollout never waits on a standby).
async fn readyz(State((_, health, client)): State<AppState>) -> (StatusCode, String) {
    match health.check(&client).await {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C: finish in-flight reconciles, then stop.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_authority_is_https_on_loopback_only() {
        for ok in [
            "https://127.0.0.1:8444",
            "https://127.1.2.3:1/",
            "https://localhost:9",
            "https://[::1]:8444",
        ] {
            assert!(emulator_authority_host(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            emulator_authority_host("https://127.0.0.1:8444/").unwrap(),
            "https://127.0.0.1:8444"
        );
        for refused in [
            "http://127.0.0.1:8444",
            "https://login.microsoftonline.com",
            "https://10.0.0.1:8444",
            "https://127.0.0.1.evil.example",
            "not a url",
        ] {
            let e = emulator_authority_host(refused).unwrap_err();
            assert!(e.contains("--emulator-authority-host"), "{refused}: {e}");
        }
    }
}
