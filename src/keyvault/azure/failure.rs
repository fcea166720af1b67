//! What went wrong with a call to the vault, from the SDK's error: the HTTP status and Key
//! Vault's error code, or what failed on the way to the vault (DNS, refused, reset, TLS,
//! timeouts), each with a message saying what to check.

use std::time::Duration;

use azure_core::http::StatusCode;

use crate::keyvault::{Operation, VaultError, VaultErrorKind};

/// Maps an SDK error to a [`VaultError`]. Request bodies are never part of the message, and
/// neither is the SDK's own text for transport failures (it names only `reqwest`).
pub(super) fn classify(
    operation: Operation,
    vault_url: &str,
    err: &azure_core::Error,
) -> VaultError {
    use azure_core::error::ErrorKind;
    match err.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let body = raw_response.as_ref().map(|r| r.body().as_ref());
            let (inner_code, message) = body
                .map(|b| error_details(&String::from_utf8_lossy(b)))
                .unwrap_or_default();
            // Without a Key Vault body the SDK makes the status itself the code ("500").
            let code = inner_code.or_else(|| {
                error_code
                    .clone()
                    .filter(|c| c.parse::<u16>().ok() != Some(u16::from(*status)))
            });
            let retry_after = raw_response
                .as_ref()
                .and_then(|r| {
                    r.headers()
                        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(10), Duration::from_secs);
            let kind = match *status {
                StatusCode::NotFound => VaultErrorKind::NotFound,
                StatusCode::TooManyRequests => VaultErrorKind::Throttled { retry_after },
                StatusCode::Unauthorized | StatusCode::Forbidden => VaultErrorKind::Forbidden,
                StatusCode::Conflict
                    if code.as_deref() == Some("ObjectIsDeletedButRecoverable") =>
                {
                    VaultErrorKind::DeletedButRecoverable
                }
                StatusCode::Conflict => VaultErrorKind::Conflict,
                StatusCode::BadRequest => VaultErrorKind::Rejected,
                s if u16::from(s) >= 500 => VaultErrorKind::ServerError,
                _ => VaultErrorKind::Other,
            };
            let message = message
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| foreign_body_message(*status, body.unwrap_or_default()));
            VaultError::http(kind, operation, u16::from(*status), code, message)
        }
        ErrorKind::Io | ErrorKind::Connection => {
            let (kind, message) = transport_failure(err).describe(vault_url);
            VaultError::new(kind, operation, message)
        }
        // No token: the identity's configuration, the token service, or (azure_core 1.1) a
        // token invalidated by a concurrent 401 challenge. Not the vault refusing the identity.
        ErrorKind::Credential => VaultError::new(
            VaultErrorKind::Credential,
            operation,
            format!("could not get a token for Key Vault: {err}"),
        ),
        _ => VaultError::new(VaultErrorKind::Other, operation, err.to_string()),
    }
}

/// An error answer whose body is not Key Vault's JSON error (a proxy, gateway or load
/// balancer page): the reason phrase and a short, sanitised extract of the body.
fn foreign_body_message(status: StatusCode, body: &[u8]) -> String {
    let reason = status.canonical_reason();
    let snippet = crate::keyvault::message::body_snippet(body);
    if snippet.is_empty() {
        format!("{reason} (empty body)")
    } else {
        format!("{reason}; the body is not a Key Vault error: \"{snippet}\"")
    }
}

/// What failed on the way to the vault, read from the error's `source()` chain
/// (azure_core → reqwest → hyper-util → io / rustls).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TransportFailure {
    /// The resolver's own words, e.g. "Name or service not known".
    Dns(String),
    Refused,
    /// Reset or closed; `sent` when the request may already have reached the vault.
    Reset {
        sent: bool,
    },
    ConnectTimeout,
    /// An answer did not come within the HTTP client's read timeout.
    ReadTimeout,
    TlsUntrusted(String),
    TlsNameMismatch,
    TlsValidity(String),
    TlsHandshake(String),
    Other {
        sent: bool,
        detail: String,
    },
}

/// The error and its causes, outermost first. `io::Error::source` skips the error it wraps
/// (rustls puts its error there), so that one is taken with `get_ref`.
fn error_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut chain = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        chain.push(e);
        if chain.len() >= 32 {
            break;
        }
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        next = wrapped.or_else(|| e.source());
    }
    chain
}

fn transport_failure(err: &(dyn std::error::Error + 'static)) -> TransportFailure {
    use rustls::CertificateError as Cert;
    use std::io::ErrorKind as Io;
    let chain = error_chain(err);
    let reqwest = chain
        .iter()
        .find_map(|e| e.downcast_ref::<reqwest::Error>());
    // Whether the failure came while connecting (TCP or TLS): then nothing was sent.
    let connecting = reqwest.is_none_or(reqwest::Error::is_connect);
    let innermost = chain.last().map(|e| e.to_string()).unwrap_or_default();

    if let Some(tls) = chain.iter().find_map(|e| e.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                    TransportFailure::TlsNameMismatch
                }
                Cert::Expired
                | Cert::ExpiredContext { .. }
                | Cert::NotValidYet
                | Cert::NotValidYetContext { .. } => {
                    TransportFailure::TlsValidity(short_cert_error(cert))
                }
                _ => TransportFailure::TlsUntrusted(short_cert_error(cert)),
            },
            other => TransportFailure::TlsHandshake(other.to_string()),
        };
    }
    // reqwest marks resolver failures; hyper-util calls them "dns error".
    if reqwest.is_some_and(reqwest::Error::is_dns)
        || chain.iter().any(|e| e.to_string() == "dns error")
    {
        let detail = innermost
            .trim_start_matches("failed to lookup address information: ")
            .to_owned();
        return TransportFailure::Dns(detail);
    }
    if reqwest.is_some_and(reqwest::Error::is_timeout)
        || chain
            .iter()
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == Io::TimedOut)
    {
        return if connecting {
            TransportFailure::ConnectTimeout
        } else {
            TransportFailure::ReadTimeout
        };
    }
    let io_kind = chain
        .iter()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
        .next();
    match io_kind {
        Some(Io::ConnectionRefused) => TransportFailure::Refused,
        Some(Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof) => {
            TransportFailure::Reset { sent: !connecting }
        }
        _ if chain.iter().any(|e| {
            // hyper's own words when the peer closes without answering.
            let text = e.to_string();
            text.contains("connection closed before message completed")
                || text.contains("IncompleteMessage")
        }) =>
        {
            TransportFailure::Reset { sent: !connecting }
        }
        _ => TransportFailure::Other {
            sent: !connecting,
            detail: innermost,
        },
    }
}

/// A certificate problem in a few words ("UnknownIssuer", "Expired").
fn short_cert_error(cert: &rustls::CertificateError) -> String {
    let debug = format!("{cert:?}");
    // Context variants carry times and names; the variant name is what stays the same.
    debug
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `host:port` of a vault URL, for messages.
fn endpoint(vault_url: &str) -> (String, String) {
    match url::Url::parse(vault_url) {
        Ok(url) => {
            let host = url.host_str().unwrap_or(vault_url).to_owned();
            let port = url.port_or_known_default().unwrap_or(443);
            (host.clone(), format!("{host}:{port}"))
        }
        Err(_) => (vault_url.to_owned(), vault_url.to_owned()),
    }
}

impl TransportFailure {
    /// The error kind, and a message saying what failed and what to check.
    fn describe(&self, vault_url: &str) -> (VaultErrorKind, String) {
        let (host, hp) = endpoint(vault_url);
        let unreachable = |m: String| (VaultErrorKind::Unreachable, m);
        let tls = |m: String| (VaultErrorKind::Tls, m);
        match self {
            TransportFailure::Dns(detail) => unreachable(format!(
                "DNS lookup of {host} failed ({detail}): check the vaultUrl spelling and that the cluster's DNS resolves it; for a vault behind a private endpoint, the private DNS zone (privatelink.vaultcore.azure.net) must be linked to the cluster's network"
            )),
            TransportFailure::Refused => unreachable(format!(
                "connection to {hp} refused: check the vaultUrl (host and port), and any network policy, firewall or proxy between the cluster and the vault"
            )),
            TransportFailure::Reset { sent: false } => unreachable(format!(
                "connection to {hp} was closed or reset before the request was sent: a network policy, firewall or proxy may be cutting it; check those and the vault's networking (public access, private endpoint)"
            )),
            TransportFailure::Reset { sent: true } => unreachable(format!(
                "connection to {hp} was closed or reset before an answer came, so the outcome is unknown: a network policy, firewall or proxy may be cutting it; check those and the vault's networking (public access, private endpoint)"
            )),
            TransportFailure::ConnectTimeout => unreachable(format!(
                "connecting to {hp} timed out, nothing was sent: check network policy and firewall egress to the vault, and for a private endpoint that {host} resolves to its private IP and the route to it is open"
            )),
            TransportFailure::ReadTimeout => (
                VaultErrorKind::Timeout,
                format!(
                    "no answer from {hp} within the HTTP client's read timeout; the outcome is unknown"
                ),
            ),
            TransportFailure::TlsUntrusted(detail) => tls(format!(
                "TLS with {hp} failed: its certificate is not trusted ({detail}); a TLS-inspecting proxy or firewall may be in the way (its CA must then be trusted), or the vaultUrl does not point at Key Vault"
            )),
            TransportFailure::TlsNameMismatch => tls(format!(
                "TLS with {hp} failed: its certificate is not valid for {host}; check the vaultUrl spelling (https://<vault>.vault.azure.net) and, for a private endpoint, that {host} resolves to the vault's private endpoint and not to another service"
            )),
            TransportFailure::TlsValidity(detail) => tls(format!(
                "TLS with {hp} failed: its certificate is outside its validity period ({detail}); check the node's clock and any TLS-inspecting proxy"
            )),
            TransportFailure::TlsHandshake(detail) => tls(format!(
                "TLS handshake with {hp} failed ({detail}): check that the vaultUrl is https:// on a port that speaks HTTPS, and that no proxy or firewall interferes"
            )),
            TransportFailure::Other {
                sent: false,
                detail,
            } => unreachable(format!(
                "cannot connect to {hp} ({detail}): check the vaultUrl, network policy, firewall and, for a private endpoint, private DNS"
            )),
            TransportFailure::Other { sent: true, detail } => unreachable(format!(
                "the connection to {hp} failed before an answer came ({detail}), so the outcome is unknown"
            )),
        }
    }
}

/// Key Vault error bodies: `{"error":{"code","message","innererror":{"code"}}}`; the innermost
/// code is the most specific.
pub(super) fn error_details(body: &str) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return (None, None);
    };
    let mut error = &value["error"];
    let message = error["message"].as_str().map(str::to_owned);
    let mut code = error["code"].as_str().map(str::to_owned);
    while let Some(inner) = error.get("innererror").filter(|v| v.is_object()) {
        if let Some(c) = inner["code"].as_str() {
            code = Some(c.to_owned());
        }
        error = inner;
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Constructed chains for what loopback cannot produce without leaving the machine.
    mod constructed_chains {
        use super::*;

        /// hyper-util's resolver error: "dns error" around the resolver's io::Error.
        #[derive(Debug)]
        struct DnsError(std::io::Error);
        impl std::fmt::Display for DnsError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dns error")
            }
        }
        impl std::error::Error for DnsError {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }

        fn sdk_error(
            kind: azure_core::error::ErrorKind,
            inner: impl std::error::Error + Send + Sync + 'static,
        ) -> azure_core::Error {
            azure_core::Error::with_error(kind, inner, "failed to execute `reqwest` request")
        }

        #[test]
        fn dns_failure_points_at_spelling_and_private_dns() {
            let err = sdk_error(
                azure_core::error::ErrorKind::Connection,
                DnsError(std::io::Error::other(
                    "failed to lookup address information: Name or service not known",
                )),
            );
            let e = classify(Operation::GetKey, "https://my-vualt.vault.azure.net", &err);
            assert_eq!(e.kind, VaultErrorKind::Unreachable);
            assert_eq!(
                e.to_string(),
                "get_key failed: DNS lookup of my-vualt.vault.azure.net failed (Name or service not known): check the vaultUrl spelling and that the cluster's DNS resolves it; for a vault behind a private endpoint, the private DNS zone (privatelink.vaultcore.azure.net) must be linked to the cluster's network"
            );
        }

        #[test]
        fn connect_timeout_is_unreachable_and_nothing_was_sent() {
            let err = sdk_error(
                azure_core::error::ErrorKind::Connection,
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"),
            );
            let e = classify(Operation::CreateKey, "https://v.vault.azure.net/", &err);
            assert_eq!(e.kind, VaultErrorKind::Unreachable);
            assert!(
                e.message
                    .starts_with("connecting to v.vault.azure.net:443 timed out, nothing was sent"),
                "{e}"
            );
        }

        #[test]
        fn tls_error_wrapped_in_io_error_is_found() {
            // tokio-rustls hands rustls errors up inside an io::Error, whose source() skips them.
            let err = sdk_error(
                azure_core::error::ErrorKind::Connection,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
                ),
            );
            let e = classify(Operation::GetKey, "https://v.vault.azure.net", &err);
            assert!(e.message.starts_with("TLS with v.vault.azure.net:443 failed: its certificate is outside its validity period (Expired)"), "{e}");
        }

        #[test]
        fn sdk_text_with_ids_is_masked() {
            let err = azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "ClientSecretCredential authentication failed. AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 0c5c8a0e-1d2b-4b7a-9f3e-2a1b0c9d8e7f\r\nCorrelation ID: 5b2f9c1e-7a3d-4e8b-b6c5-1d0e9f8a7b6c\r\nTimestamp: 2024-05-01 12:34:56Z",
            );
            let e = classify(Operation::GetKey, "https://v.vault.azure.net", &err);
            assert_eq!(e.kind, VaultErrorKind::Credential);
            assert_eq!(
                e.message,
                "could not get a token for Key Vault: ClientSecretCredential authentication failed. AADSTS7000215: Invalid client secret provided. Trace ID: <id> Correlation ID: <id> Timestamp: <time>"
            );
        }
    }

    #[test]
    fn innermost_error_code_wins() {
        let body = r#"{"error":{"code":"Conflict","message":"Key k is currently in a deleted but recoverable state","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#;
        let (code, message) = error_details(body);
        assert_eq!(code.as_deref(), Some("ObjectIsDeletedButRecoverable"));
        assert!(message.unwrap().contains("deleted but recoverable"));
        assert_eq!(error_details("not json"), (None, None));
    }
}
