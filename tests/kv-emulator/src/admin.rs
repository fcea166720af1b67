//! Management API (plain HTTP on loopback, no auth) for the tests: clock,
//! automatic rotation, stats, fault injection, dialects and state dumps.
//!
//! | method | path                         | what                                              |
//! |--------|------------------------------|---------------------------------------------------|
//! | GET    | /health                      | `{"status":"ok"}`                                 |
//! | GET    | /time                        | `{"now","offsetSeconds"}`                         |
//! | POST   | /time-shift?seconds=N        | move the clock forward, run due rotations         |
//! | GET    | /stats                       | request (also per key) and fault counters         |
//! | POST   | /stats/reset                 | zero the counters                                 |
//! | GET    | /faults                      | current fault configuration                       |
//! | PUT    | /faults                      | configure fault injection                         |
//! | DELETE | /faults                      | stop fault injection                              |
//! | GET    | /dialect                     | the dialect of all vaults and per-vault ones      |
//! | PUT    | /dialect[?vault=NAME]        | set the dialect (see `dialect.rs`)                |
//! | DELETE | /dialect[?vault=NAME]        | back to the default dialect                       |
//! | GET    | /vaults                      | vault names, URLs and recovery levels             |
//! | POST   | /identities                  | add a federated credential (see `identity.rs`)    |
//! | GET    | /identities                  | token exchanges and callers per vault             |
//! | GET    | /vaults/{vault}/keys         | live and deleted key names                        |
//! | DELETE | /vaults/{vault}/keys         | forget every key of the vault (a fresh vault)     |
//! | GET    | /vaults/{vault}/keys/{name}  | public state of a key (versions, policy, deleted) |

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Body;
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::app::App;
use crate::dialect::Dialect;
use crate::error::{HttpResponse, json_response};
use crate::faults::FaultConfigIn;

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    json_response(
        status,
        &json!({ "error": { "code": "AdminError", "message": message.into() } }),
    )
}

fn ok(value: &Value) -> HttpResponse {
    json_response(StatusCode::OK, value)
}

fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads a JSON body of type `T`; `what` names it in the 400 answered otherwise.
async fn read_json<B, T>(req: Request<B>, what: &str) -> Result<T, HttpResponse>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T: DeserializeOwned,
{
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(error(StatusCode::BAD_REQUEST, "could not read body")),
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid {what}: {e}")))
}

/// Generic over the body so tests can call it without a connection.
pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let response = route(&app, req, &method, &path).await;
    tracing::info!(admin = true, method = %method, path = %path, status = response.status().as_u16(), "admin request");
    response
}

async fn route<B>(app: &App, req: Request<B>, method: &Method, path: &str) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["health"]) => ok(&json!({ "status": "ok" })),
        (&Method::GET, ["time"]) => {
            ok(&json!({ "now": app.clock.now(), "offsetSeconds": app.clock.offset() }))
        }
        (&Method::POST, ["time-shift"]) => {
            let seconds = query_param(&req, "seconds").and_then(|s| s.parse::<i64>().ok());
            match seconds {
                Some(s) if s >= 0 => {
                    app.clock.advance(s);
                    match app.run_due_rotations().await {
                        Ok(rotated) => ok(&json!({ "rotated": rotated, "now": app.clock.now() })),
                        Err(e) => error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("automatic rotation failed: {}", e.message),
                        ),
                    }
                }
                _ => error(
                    StatusCode::BAD_REQUEST,
                    "seconds must be a non-negative integer",
                ),
            }
        }
        (&Method::POST, ["identities"]) => {
            match read_json::<_, crate::identity::Federation>(req, "federation").await {
                Ok(federation) => {
                    app.identities.add(federation);
                    ok(&app.identities.snapshot())
                }
                Err(response) => response,
            }
        }
        (&Method::GET, ["identities"]) => ok(&app.identities.snapshot()),
        (&Method::GET, ["stats"]) => {
            let mut stats = app.stats.snapshot();
            stats["budget"] = app.faults.budget_counters();
            ok(&stats)
        }
        (&Method::POST, ["stats", "reset"]) => {
            app.stats.reset();
            ok(&app.stats.snapshot())
        }
        (&Method::GET, ["faults"]) => ok(&app.faults.describe()),
        (&Method::PUT, ["faults"]) => {
            match read_json::<_, FaultConfigIn>(req, "fault configuration").await {
                Err(response) => response,
                Ok(cfg) => match app.faults.configure(cfg) {
                    Ok(described) => ok(&described),
                    Err(e) => error(StatusCode::BAD_REQUEST, e),
                },
            }
        }
        (&Method::DELETE, ["faults"]) => {
            app.faults.clear();
            ok(&app.faults.describe())
        }
        (&Method::GET, ["dialect"]) => ok(&app.dialects.describe()),
        (&Method::PUT | &Method::DELETE, ["dialect"]) => {
            let vault = query_param(&req, "vault");
            if let Some(v) = &vault
                && !app.store().vaults.contains_key(v)
            {
                return error(StatusCode::NOT_FOUND, format!("no vault named {v}"));
            }
            if method == Method::DELETE {
                app.dialects.reset(vault.as_deref());
                return ok(&app.dialects.describe());
            }
            match read_json::<_, Dialect>(req, "dialect").await {
                Err(response) => response,
                Ok(dialect) => match app.dialects.set(vault.as_deref(), dialect) {
                    Ok(()) => ok(&app.dialects.describe()),
                    Err(e) => error(StatusCode::BAD_REQUEST, e),
                },
            }
        }
        (&Method::GET, ["vaults"]) => {
            let store = app.store();
            let vaults: serde_json::Map<String, Value> = store
                .vaults
                .values()
                .map(|v| {
                    (
                        v.name.clone(),
                        json!({ "url": v.url, "recoveryLevel": v.recovery.level, "recoverableDays": v.recovery.days }),
                    )
                })
                .collect();
            ok(&Value::Object(vaults))
        }
        (&Method::GET, ["vaults", vault, "keys"]) => match app.store().vaults.get(*vault) {
            Some(v) => ok(&v.names()),
            None => error(StatusCode::NOT_FOUND, format!("no vault named {vault}")),
        },
        (&Method::DELETE, ["vaults", vault, "keys"]) => match app.store().vaults.get_mut(*vault) {
            Some(v) => ok(&json!({ "removed": v.clear() })),
            None => error(StatusCode::NOT_FOUND, format!("no vault named {vault}")),
        },
        (&Method::GET, ["vaults", vault, "keys", name]) => match app.store().vaults.get(*vault) {
            None => error(StatusCode::NOT_FOUND, format!("no vault named {vault}")),
            Some(v) => match v.debug_dump(name) {
                Some(dump) => ok(&dump),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("no key named {name} in vault {vault}"),
                ),
            },
        },
        _ => error(StatusCode::NOT_FOUND, "unknown management endpoint"),
    }
}
