//! Management API (plain HTTP on loopback, no auth) for the tests: clock,
//! automatic rotation, stats, fault injection and state dumps.
//!
//! | method | path                         | what                                              |
//! |--------|------------------------------|---------------------------------------------------|
//! | GET    | /health                      | `{"status":"ok"}`                                 |
//! | GET    | /time                        | `{"now","offsetSeconds"}`                         |
//! | POST   | /time-shift?seconds=N        | move the clock forward, run due rotations         |
//! | GET    | /stats                       | request and fault counters                        |
//! | POST   | /stats/reset                 | zero the counters                                 |
//! | GET    | /faults                      | current fault configuration                       |
//! | PUT    | /faults                      | configure fault injection                         |
//! | DELETE | /faults                      | stop fault injection                              |
//! | GET    | /vaults                      | vault names, URLs and recovery levels             |
//! | GET    | /vaults/{vault}/keys         | live and deleted key names                        |
//! | GET    | /vaults/{vault}/keys/{name}  | public state of a key (versions, policy, deleted) |

use std::sync::Arc;

use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::app::App;
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

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> HttpResponse {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let response = route(&app, req, &method, &path).await;
    tracing::info!(admin = true, method = %method, path = %path, status = response.status().as_u16(), "admin request");
    response
}

async fn route(app: &App, req: Request<Incoming>, method: &Method, path: &str) -> HttpResponse {
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
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::BAD_REQUEST, "could not read body"),
            };
            match serde_json::from_slice::<FaultConfigIn>(&body) {
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid fault configuration: {e}"),
                ),
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
