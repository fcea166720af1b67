//! `kv-emulator`: a test-only emulator of the Azure Key Vault keys REST API
//! (key management operations, rotation policies, soft delete), served over
//! HTTPS for the operator's end-to-end tests, plus a plain-HTTP management
//! API to shift time, read request counters, inject faults and switch dialects.
//!
//! ```text
//! kv-emulator --ready-file PATH [--bind 127.0.0.1] [--vault NAME=RECOVERY_LEVEL[:DAYS]]...
//! ```
//!
//! Without `--vault`, two vaults exist: `default` (Recoverable) and
//! `purgeable` (Recoverable+Purgeable). Every vault gets its own TLS listener
//! on a free port. Once all listeners are bound, the ready file is written
//! atomically as JSON (`pid`, `caFile`, `adminUrl`, `vaults`), and the CA
//! certificate clients must trust is written next to it as
//! `kv-emulator-ca.pem`. SIGTERM/SIGINT stop the process (exit code 0).

mod admin;
mod api;
mod app;
mod budget;
mod dialect;
mod error;
mod faults;
mod identity;
mod keys;
/// Key Vault's rules: the operator's table itself (`src/keyvault_rules.rs`, `std` only),
/// included rather than depended on, so the emulator does not build the operator it tests
/// and its checks cannot drift from the operator's. Not every entry is an emulator check.
#[allow(dead_code)]
#[path = "../../../src/keyvault_rules.rs"]
mod keyvault_rules;
mod model;
mod rotation;
mod server;
mod stats;
mod store;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::store::{Recovery, Store, Vault};

const USAGE: &str =
    "usage: kv-emulator --ready-file PATH [--bind IP] [--vault NAME=RECOVERY_LEVEL[:DAYS]]...

  --ready-file PATH   JSON file written once every listener is bound
                      (the CA certificate goes next to it as kv-emulator-ca.pem)
  --bind IP           address to listen on (default 127.0.0.1)
  --sa-public-key F   PEM public key of the Kubernetes service-account signing key: the
                      Azure AD token endpoint (loginUrl) then exchanges service-account
                      tokens of --sa-issuer for access tokens (workload identity)
  --sa-issuer URL     the service-account issuer those tokens name
  --vault SPEC        NAME=LEVEL or NAME=LEVEL:DAYS, repeatable; LEVEL is one of
                      Purgeable, Recoverable+Purgeable, Recoverable,
                      Recoverable+ProtectedSubscription, CustomizedRecoverable+Purgeable,
                      CustomizedRecoverable, CustomizedRecoverable+ProtectedSubscription
                      (default: default=Recoverable and purgeable=Recoverable+Purgeable)";

#[derive(Debug, Clone, PartialEq, Eq)]
struct VaultSpec {
    name: String,
    recovery: Recovery,
}

#[derive(Debug)]
struct Args {
    ready_file: PathBuf,
    bind: IpAddr,
    vaults: Vec<VaultSpec>,
    sa_public_key: Option<PathBuf>,
    sa_issuer: Option<String>,
}

fn parse_vault_spec(spec: &str) -> Result<VaultSpec, String> {
    let (name, level) = spec
        .split_once('=')
        .ok_or_else(|| format!("--vault '{spec}': expected NAME=RECOVERY_LEVEL"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!(
            "--vault '{spec}': the name must be letters, digits and '-'"
        ));
    }
    let (level, days) = match level.split_once(':') {
        None => (level, None),
        Some((level, days)) => (
            level,
            Some(
                days.parse::<i64>()
                    .map_err(|_| format!("--vault '{spec}': DAYS must be an integer"))?,
            ),
        ),
    };
    let recovery = Recovery::new(level, days).map_err(|e| format!("--vault '{spec}': {e}"))?;
    Ok(VaultSpec {
        name: name.to_string(),
        recovery,
    })
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut ready_file = None;
    let mut bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut vaults: Vec<VaultSpec> = Vec::new();
    let mut sa_public_key = None;
    let mut sa_issuer = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--ready-file" => ready_file = Some(PathBuf::from(value("--ready-file")?)),
            "--bind" => {
                let raw = value("--bind")?;
                bind = raw
                    .parse()
                    .map_err(|_| format!("--bind '{raw}' is not an IP address"))?;
            }
            "--vault" => {
                let spec = parse_vault_spec(&value("--vault")?)?;
                if vaults.iter().any(|v| v.name == spec.name) {
                    return Err(format!("vault '{}' given twice", spec.name));
                }
                vaults.push(spec);
            }
            "--sa-public-key" => sa_public_key = Some(PathBuf::from(value("--sa-public-key")?)),
            "--sa-issuer" => sa_issuer = Some(value("--sa-issuer")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if vaults.is_empty() {
        vaults = vec![
            parse_vault_spec("default=Recoverable")?,
            parse_vault_spec("purgeable=Recoverable+Purgeable")?,
        ];
    }
    Ok(Args {
        ready_file: ready_file.ok_or("--ready-file is required")?,
        bind,
        vaults,
        sa_public_key,
        sa_issuer,
    })
}

/// Writes `contents` to `path` via a temporary file and a rename.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Host part of the URLs clients use for a listener bound to `addr`.
fn url_host(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => format!("127.0.0.1:{}", addr.port()),
        ip if ip.is_unspecified() => format!("[::1]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

/// Registers the SIGTERM/SIGINT handlers (before the ready file exists, so a
/// signal sent right after it appears is not lost) and returns a future that
/// resolves on the first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn run(args: Args) -> Result<(), String> {
    let shutdown = shutdown_signal()?;
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| "could not install the aws-lc-rs crypto provider".to_string())?;

    let ready_file =
        std::path::absolute(&args.ready_file).map_err(|e| format!("ready file path: {e}"))?;
    let dir = ready_file
        .parent()
        .map(Path::to_path_buf)
        .ok_or("the ready file has no parent directory")?;
    // A stale ready file would make a waiting test read old ports.
    let _ = std::fs::remove_file(&ready_file);

    let tls = tls::generate(args.bind)?;
    let ca_file = dir.join("kv-emulator-ca.pem");
    write_atomically(&ca_file, tls.ca_pem.as_bytes())
        .map_err(|e| format!("writing {}: {e}", ca_file.display()))?;
    let acceptor = TlsAcceptor::from(tls.server_config);

    let mut store = Store::default();
    let mut listeners = Vec::new();
    let mut ready_vaults = serde_json::Map::new();
    for spec in &args.vaults {
        let listener = TcpListener::bind(SocketAddr::new(args.bind, 0))
            .await
            .map_err(|e| format!("binding vault {}: {e}", spec.name))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let url = format!("https://{}", url_host(addr));
        store.vaults.insert(
            spec.name.clone(),
            Vault::new(&spec.name, &url, spec.recovery.clone()),
        );
        ready_vaults.insert(
            spec.name.clone(),
            json!({ "url": url, "recoveryLevel": spec.recovery.level, "recoverableDays": spec.recovery.days }),
        );
        listeners.push((spec.name.clone(), listener));
    }
    let admin_listener = TcpListener::bind(SocketAddr::new(args.bind, 0))
        .await
        .map_err(|e| format!("binding the management API: {e}"))?;
    let admin_url = format!(
        "http://{}",
        url_host(admin_listener.local_addr().map_err(|e| e.to_string())?)
    );

    let trust = match (&args.sa_public_key, &args.sa_issuer) {
        (Some(path), Some(issuer)) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("reading --sa-public-key {}: {e}", path.display()))?;
            Some(identity::Trust {
                public_key_der: identity::pem_to_der(&pem)?,
                issuer: issuer.clone(),
            })
        }
        (None, None) => None,
        _ => return Err("--sa-public-key and --sa-issuer go together".into()),
    };
    let login_listener = TcpListener::bind(SocketAddr::new(args.bind, 0))
        .await
        .map_err(|e| format!("binding the token endpoint: {e}"))?;
    let login_url = format!(
        "https://{}",
        url_host(login_listener.local_addr().map_err(|e| e.to_string())?)
    );
    let app = Arc::new(App::with_identities(
        store,
        identity::Identities::new(trust),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    for (name, listener) in listeners {
        tracing::info!(vault = %name, url = %ready_vaults[&name]["url"], "vault listening");
        tokio::spawn(server::serve_vault(
            listener,
            acceptor.clone(),
            app.clone(),
            Arc::from(name.as_str()),
            shutdown_rx.clone(),
        ));
    }
    tracing::info!(url = %login_url, "Azure AD token endpoint listening");
    tokio::spawn(server::serve_login(
        login_listener,
        acceptor.clone(),
        app.clone(),
        shutdown_rx.clone(),
    ));
    tracing::info!(url = %admin_url, "management API listening");
    tokio::spawn(server::serve_admin(
        admin_listener,
        app.clone(),
        shutdown_rx,
    ));

    let ready = json!({
        "pid": std::process::id(),
        "caFile": ca_file,
        "adminUrl": admin_url,
        "loginUrl": login_url,
        "vaults": ready_vaults,
    });
    let ready_bytes = serde_json::to_vec_pretty(&ready).map_err(|e| e.to_string())?;
    write_atomically(&ready_file, &ready_bytes)
        .map_err(|e| format!("writing {}: {e}", ready_file.display()))?;
    tracing::info!(ready_file = %ready_file.display(), "ready");

    shutdown.await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = std::fs::remove_file(&ready_file);
    Ok(())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                std::process::exit(0);
            }
            eprintln!("kv-emulator: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    match run(args).await {
        // Exit right away: connections held by a `timeout_after_commit` fault
        // must not delay the shutdown.
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("kv-emulator: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn default_vaults() {
        let a = args(&["--ready-file", "/tmp/r.json"]).unwrap();
        assert_eq!(a.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let names: Vec<_> = a
            .vaults
            .iter()
            .map(|v| (v.name.as_str(), v.recovery.level.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("default", "Recoverable"),
                ("purgeable", "Recoverable+Purgeable")
            ]
        );
    }

    #[test]
    fn explicit_vaults_and_errors() {
        let a = args(&[
            "--ready-file=/tmp/r.json",
            "--vault",
            "a=Recoverable+Purgeable",
            "--vault=b=CustomizedRecoverable:30",
            "--bind",
            "0.0.0.0",
        ])
        .unwrap();
        assert_eq!(a.vaults.len(), 2);
        assert_eq!(a.vaults[1].recovery.days, 30);
        assert!(args(&[]).is_err());
        assert!(args(&["--ready-file", "x", "--vault", "a=Nope"]).is_err());
        assert!(
            args(&[
                "--ready-file",
                "x",
                "--vault",
                "a=Recoverable",
                "--vault",
                "a=Recoverable"
            ])
            .is_err()
        );
        assert!(args(&["--ready-file", "x", "--bind", "localhost"]).is_err());
        assert!(args(&["--ready-file", "x", "--what"]).is_err());
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("127.0.0.1:8443".parse().unwrap()),
            "127.0.0.1:8443"
        );
        assert_eq!(url_host("0.0.0.0:1".parse().unwrap()), "127.0.0.1:1");
        assert_eq!(url_host("[::1]:2".parse().unwrap()), "[::1]:2");
    }
}
