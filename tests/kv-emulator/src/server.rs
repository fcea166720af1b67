//! Listeners and connections: one HTTPS listener per vault, one plain HTTP
//! management listener. HTTP/1.1 over hyper.

use std::convert::Infallible;
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::api::{self, Outcome};
use crate::app::App;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections for `vault` until `shutdown` changes.
pub async fn serve_vault(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    vault: Arc<str>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(vault = %vault, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let (acceptor, app, vault) = (acceptor.clone(), app.clone(), vault.clone());
        tokio::spawn(async move { serve_tls_connection(tcp, acceptor, app, vault).await });
    }
}

async fn serve_tls_connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    vault: Arc<str>,
) {
    let _ = tcp.set_nodelay(true);
    // A second descriptor of the socket: the `reset` fault sets SO_LINGER=0 on
    // it so that the final close aborts the connection with a TCP RST.
    let socket: Option<Arc<OwnedFd>> = tcp.as_fd().try_clone_to_owned().ok().map(Arc::new);
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(vault = %vault, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(vault = %vault, "TLS handshake timed out");
            return;
        }
    };
    let reset = Arc::new(Notify::new());
    let service = {
        let reset = reset.clone();
        let socket = socket.clone();
        service_fn(move |req: Request<Incoming>| {
            let (app, vault, reset, socket) =
                (app.clone(), vault.clone(), reset.clone(), socket.clone());
            async move {
                match api::handle(app, vault, req).await {
                    Outcome::Respond(response) => Ok::<_, Infallible>(response),
                    Outcome::Reset => {
                        if let Some(fd) = &socket {
                            let _ = socket2::SockRef::from(fd.as_ref())
                                .set_linger(Some(Duration::ZERO));
                        }
                        reset.notify_one();
                        std::future::pending().await
                    }
                }
            }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = reset.notified() => {
            tracing::debug!("connection reset by fault injection");
        }
    }
    drop(socket);
}

/// Accepts connections until `shutdown` changes, each served on its own task.
async fn accept_until<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        tokio::spawn(serve(tcp));
    }
}

/// Serves the management API until `shutdown` changes.
pub async fn serve_admin(listener: TcpListener, app: Arc<App>, shutdown: watch::Receiver<bool>) {
    accept_until(listener, shutdown, "admin", move |tcp| {
        let app = app.clone();
        async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(admin::handle(app, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        }
    })
    .await;
}

/// Serves the Azure AD token endpoint (HTTPS, the emulator's CA) until `shutdown` changes.
pub async fn serve_login(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
) {
    accept_until(listener, shutdown, "login", move |tcp| {
        let (acceptor, app) = (acceptor.clone(), app.clone());
        async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(login(&app, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(error = %e, "login connection ended with an error");
            }
        }
    })
    .await;
}

/// `POST /{tenant}/oauth2/v2.0/token`. Never logs the assertion or the token.
async fn login(app: &App, req: Request<Incoming>) -> crate::error::HttpResponse {
    use http_body_util::{BodyExt as _, Limited};
    use hyper::StatusCode;
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let tenant = match (req.method(), segments.as_slice()) {
        (&hyper::Method::POST, [tenant, "oauth2", "v2.0", "token"]) => (*tenant).to_owned(),
        _ => {
            return crate::error::json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not_found", "error_description": "only POST /{tenant}/oauth2/v2.0/token", "error_codes": []}),
            );
        }
    };
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return crate::error::json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request", "error_description": "unreadable body", "error_codes": []}),
            );
        }
    };
    match app.identities.exchange(&tenant, &body) {
        Ok(answer) => {
            tracing::info!(tenant = %tenant, "token issued");
            crate::error::json_response(StatusCode::OK, &answer)
        }
        Err(refusal) => {
            tracing::info!(tenant = %tenant, code = refusal.code, "token exchange refused");
            crate::error::json_response(
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST),
                &serde_json::json!({
                    "error": refusal.error,
                    "error_description": refusal.description,
                    "error_codes": [refusal.code],
                }),
            )
        }
    }
}
