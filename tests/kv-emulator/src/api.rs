//! The emulated Key Vault keys REST API: routing, auth challenge,
//! api-version check, fault injection and the operation handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Body;
use hyper::header::{
    AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::budget::Class;
use crate::dialect::{Flag, Speaking};
use crate::error::{ApiError, HttpResponse, empty_response};
use crate::faults::{Fault, FaultKind};
use crate::identity::Caller;
use crate::keys::{self, KeyShape, Kty};
use crate::model::{
    KeyCreateParameters, KeyImportParameters, KeyUpdateParameters, ListPage, RotationPolicyIn,
};
use crate::rotation;
use crate::stats::{Operation, STATUS_RESET};
use crate::store::{
    MAX_PAGE, NewVersion, VersionUpdate, decode_skiptoken, encode_skiptoken, new_version_id,
    validate_key_name, validate_key_ops, validate_tags,
};

/// api-versions the emulator answers (their `-preview*` variants too).
pub const API_VERSIONS: [&str; 8] = [
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
];
const LATEST_API_VERSION: &str = "2025-07-01";
/// Request bodies above this size are refused.
const MAX_BODY: usize = 1 << 20;

const CHALLENGE: &str = "Bearer authorization=\"https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000\", resource=\"https://vault.azure.net\"";

/// What the connection should do with a request.
pub enum Outcome {
    Respond(HttpResponse),
    /// Drop the connection without answering (the `reset` fault).
    Reset,
}

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    CreateKey(String),
    ImportKey(String),
    GetKey(String, Option<String>),
    UpdateKey(String, Option<String>),
    ListVersions(String),
    ListKeys,
    RotateKey(String),
    GetRotationPolicy(String),
    SetRotationPolicy(String),
    DeleteKey(String),
    GetDeletedKey(String),
    PurgeDeletedKey(String),
    RecoverDeletedKey(String),
    ListDeletedKeys,
    MethodNotAllowed,
    NotFound,
}

impl Route {
    /// Routes like the service: a trailing slash is optional, and an empty
    /// version (`/keys/{name}/`) means the current version.
    pub fn parse(method: &Method, path: &str) -> Route {
        let mut segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments.len() > 1 && segments.last() == Some(&"") {
            segments.pop();
        }
        let m = method;
        let s = |x: &str| x.to_string();
        match segments.as_slice() {
            ["keys"] => match *m {
                Method::GET => Route::ListKeys,
                _ => Route::MethodNotAllowed,
            },
            ["keys", name] => match *m {
                Method::GET => Route::GetKey(s(name), None),
                Method::PATCH => Route::UpdateKey(s(name), None),
                Method::PUT => Route::ImportKey(s(name)),
                Method::DELETE => Route::DeleteKey(s(name)),
                _ => Route::MethodNotAllowed,
            },
            ["keys", name, "create"] => match *m {
                Method::POST => Route::CreateKey(s(name)),
                _ => Route::MethodNotAllowed,
            },
            ["keys", name, "versions"] => match *m {
                Method::GET => Route::ListVersions(s(name)),
                _ => Route::MethodNotAllowed,
            },
            ["keys", name, "rotate"] => match *m {
                Method::POST => Route::RotateKey(s(name)),
                _ => Route::MethodNotAllowed,
            },
            ["keys", name, "rotationpolicy"] => match *m {
                Method::GET => Route::GetRotationPolicy(s(name)),
                Method::PUT => Route::SetRotationPolicy(s(name)),
                _ => Route::MethodNotAllowed,
            },
            ["keys", name, version] => match *m {
                Method::GET => Route::GetKey(s(name), Some(s(version))),
                Method::PATCH => Route::UpdateKey(s(name), Some(s(version))),
                _ => Route::MethodNotAllowed,
            },
            ["deletedkeys"] => match *m {
                Method::GET => Route::ListDeletedKeys,
                _ => Route::MethodNotAllowed,
            },
            ["deletedkeys", name] => match *m {
                Method::GET => Route::GetDeletedKey(s(name)),
                Method::DELETE => Route::PurgeDeletedKey(s(name)),
                _ => Route::MethodNotAllowed,
            },
            ["deletedkeys", name, "recover"] => match *m {
                Method::POST => Route::RecoverDeletedKey(s(name)),
                _ => Route::MethodNotAllowed,
            },
            _ => Route::NotFound,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Route::CreateKey(_) => Operation::CreateKey,
            Route::ImportKey(_) => Operation::ImportKey,
            Route::GetKey(..) => Operation::GetKey,
            Route::UpdateKey(..) => Operation::UpdateKey,
            Route::ListVersions(_) => Operation::ListVersions,
            Route::ListKeys => Operation::ListKeys,
            Route::RotateKey(_) => Operation::RotateKey,
            Route::GetRotationPolicy(_) => Operation::GetRotationPolicy,
            Route::SetRotationPolicy(_) => Operation::SetRotationPolicy,
            Route::DeleteKey(_) => Operation::DeleteKey,
            Route::GetDeletedKey(_) => Operation::GetDeletedKey,
            Route::PurgeDeletedKey(_) => Operation::PurgeDeletedKey,
            Route::RecoverDeletedKey(_) => Operation::RecoverDeletedKey,
            Route::ListDeletedKeys => Operation::ListDeletedKeys,
            Route::MethodNotAllowed | Route::NotFound => Operation::Other,
        }
    }

    /// The key the request names, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Route::CreateKey(name)
            | Route::ImportKey(name)
            | Route::GetKey(name, _)
            | Route::UpdateKey(name, _)
            | Route::ListVersions(name)
            | Route::RotateKey(name)
            | Route::GetRotationPolicy(name)
            | Route::SetRotationPolicy(name)
            | Route::DeleteKey(name)
            | Route::GetDeletedKey(name)
            | Route::PurgeDeletedKey(name)
            | Route::RecoverDeletedKey(name) => Some(name),
            Route::ListKeys
            | Route::ListDeletedKeys
            | Route::MethodNotAllowed
            | Route::NotFound => None,
        }
    }
}

/// Query parameters the API looks at.
#[derive(Debug, Default)]
struct Query {
    api_version: Option<String>,
    maxresults: Option<String>,
    skiptoken: Option<String>,
}

impl Query {
    fn parse(raw: &str) -> Query {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            match k.as_ref() {
                "api-version" => q.api_version = Some(v.into_owned()),
                "maxresults" => q.maxresults = Some(v.into_owned()),
                "$skiptoken" => q.skiptoken = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }

    fn page_size(&self) -> Result<usize, ApiError> {
        match &self.maxresults {
            None => Ok(MAX_PAGE),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_parameter(format!(
                    "Invalid maxresults '{}': it must be an integer between 1 and {MAX_PAGE}.",
                    raw.chars().take(20).collect::<String>()
                ))),
            },
        }
    }

    fn cursor(&self) -> Result<Option<String>, ApiError> {
        self.skiptoken.as_deref().map(decode_skiptoken).transpose()
    }
}

fn check_api_version(version: Option<&str>) -> Result<String, ApiError> {
    let Some(v) = version.filter(|v| !v.is_empty()) else {
        return Err(ApiError::bad_parameter(
            "The api-version query parameter is missing.",
        ));
    };
    let known = API_VERSIONS.iter().any(|s| {
        v == *s
            || v.strip_prefix(s)
                .is_some_and(|rest| rest.starts_with("-preview"))
    });
    if known
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        Ok(v.to_string())
    } else {
        Err(ApiError::bad_parameter(format!(
            "The specified version ({}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION}).",
            v.chars().take(40).collect::<String>()
        )))
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim().to_owned())
}

/// Key Vault's answer to a caller without a role on the vault (Azure RBAC), naming the caller.
fn not_granted(vault: &str, client_id: &str, op: Operation) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        code: "Forbidden".into(),
        message: format!(
            "Caller is not authorized to perform action on resource. If role assignments, deny assignments or role definitions were changed recently, please observe propagation time. Caller: appid={client_id}. Action: 'Microsoft.KeyVault/vaults/keys/{}'. Resource: 'vaults/{vault}'. Assignment: (not found). Vault: {vault}.",
            op.as_str()
        ),
        inner_code: Some("ForbiddenByRbac".into()),
    }
}

fn unauthorized() -> HttpResponse {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "AKV10000: Request is missing a Bearer or PoP token.",
    )
    .to_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    response
}

fn fault_response(fault: Fault) -> Option<HttpResponse> {
    match fault.kind {
        FaultKind::Throttle => {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: injected by kv-emulator.",
            )
            .to_response();
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(fault.retry_after_seconds));
            Some(r)
        }
        FaultKind::Error500 => Some(
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "An internal error occurred (injected by kv-emulator).",
            )
            .to_response(),
        ),
        FaultKind::Error503 => Some(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable (injected by kv-emulator).",
            )
            .to_response(),
        ),
        FaultKind::TimeoutAfterCommit | FaultKind::Reset | FaultKind::Slow => None,
    }
}

fn add_service_headers(response: &mut HttpResponse, client_request_id: Option<HeaderValue>) {
    let headers = response.headers_mut();
    let request_id = new_version_id();
    let request_id = format!(
        "{}-{}-{}-{}-{}",
        &request_id[0..8],
        &request_id[8..12],
        &request_id[12..16],
        &request_id[16..20],
        &request_id[20..32]
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-ms-request-id"), v);
    }
    if let Some(v) = client_request_id {
        headers.insert(HeaderName::from_static("x-ms-client-request-id"), v);
    }
    headers.insert(
        HeaderName::from_static("x-ms-keyvault-service-version"),
        HeaderValue::from_static("kv-emulator/0.1.0"),
    );
    headers.insert(
        HeaderName::from_static("x-ms-keyvault-region"),
        HeaderValue::from_static("local"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
}

/// Handles one request for `vault`. Never logs bodies. Generic over the body
/// so tests can call it without a connection.
pub async fn handle<B>(app: Arc<App>, vault: Arc<str>, req: Request<B>) -> Outcome
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = Route::parse(&method, &path);
    let client_request_id = req.headers().get("x-ms-client-request-id").cloned();
    let dialect = Speaking::new(app.dialects.for_vault(&vault));

    let key = route.key().map(str::to_owned);
    let finish = |op: Operation, status: u16| {
        app.stats
            .record_request(&vault, method.as_str(), op, status);
        if let Some(key) = &key {
            app.stats.record_key_request(&vault, key, op);
        }
        for flag in dialect.take_hits() {
            app.stats.record_dialect(flag.as_str());
        }
        tracing::info!(
            vault = %vault,
            method = %method,
            path = %path,
            operation = op.as_str(),
            status,
            latency_ms = started.elapsed().as_millis() as u64,
            "request"
        );
    };

    let Some(token) = bearer_token(req.headers()) else {
        let mut response = unauthorized();
        add_service_headers(&mut response, client_request_id);
        finish(Operation::Unauthorized, response.status().as_u16());
        return Outcome::Respond(response);
    };

    let op = route.operation();
    match app.identities.caller(&vault, key.as_deref(), &token) {
        Caller::Static | Caller::Granted(_) => {}
        Caller::Expired => {
            let mut response = unauthorized();
            add_service_headers(&mut response, client_request_id);
            finish(Operation::Unauthorized, response.status().as_u16());
            return Outcome::Respond(response);
        }
        Caller::NotGranted(client_id) => {
            let mut response = not_granted(&vault, &client_id, op).to_response();
            add_service_headers(&mut response, client_request_id);
            finish(op, response.status().as_u16());
            return Outcome::Respond(response);
        }
    }
    // The body is read up front: rate-limit mode needs the key type of a create.
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let body = read_body(req).await;
    // Before rate limiting and faults: the dialect is how this server always answers.
    if let Some(e) = dialect.persistent_error(op) {
        let mut response = e.to_response();
        add_service_headers(&mut response, client_request_id);
        finish(op, response.status().as_u16());
        return Outcome::Respond(response);
    }
    if let Err(retry_after) = app
        .faults
        .admit(&vault, budget_class(&app, &vault, &route, &body))
    {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: the vault's request budget (kv-emulator rate-limit mode).",
        )
        .to_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after));
        add_service_headers(&mut response, client_request_id);
        finish(op, response.status().as_u16());
        return Outcome::Respond(response);
    }
    let fault = app.faults.decide(op);
    if let Some(f) = fault {
        app.stats.record_fault(f.kind.as_str());
        tracing::warn!(vault = %vault, operation = op.as_str(), fault = f.kind.as_str(), "injecting fault");
        match f.kind {
            FaultKind::Reset => {
                finish(op, STATUS_RESET);
                return Outcome::Reset;
            }
            FaultKind::Slow => tokio::time::sleep(Duration::from_millis(f.slow_millis)).await,
            _ => {}
        }
        if let Some(mut response) = fault_response(f) {
            add_service_headers(&mut response, client_request_id);
            finish(op, response.status().as_u16());
            return Outcome::Respond(response);
        }
    }

    let result = match check_api_version(query.api_version.as_deref()) {
        Err(e) => Err(e),
        Ok(api_version) => match body {
            Err(e) => Err(e),
            Ok(body) => dispatch(&app, &vault, &dialect, route, &query, &api_version, &body).await,
        },
    };
    let mut response = result.unwrap_or_else(|e| dialect.error(op, e).to_response());
    add_service_headers(&mut response, client_request_id);
    // Counted now: a client that gives up during a hold closes the connection,
    // which drops this future.
    finish(op, response.status().as_u16());
    if let Some(f) = fault.filter(|f| f.kind == FaultKind::TimeoutAfterCommit) {
        // The operation is done; make the client give up before it hears so.
        tokio::time::sleep(Duration::from_secs(f.hold_seconds)).await;
    }
    Outcome::Respond(response)
}

/// Which of Key Vault's limits a request counts against: creates (and rotations, which create
/// a version) by key type, everything else as "other".
fn budget_class(app: &App, vault: &str, route: &Route, body: &Result<Bytes, ApiError>) -> Class {
    let hsm = |kty: &str| kty.ends_with("-HSM");
    match route {
        Route::CreateKey(_) => {
            let kty = body
                .as_ref()
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|v| v.get("kty").and_then(|k| k.as_str()).map(str::to_owned))
                .unwrap_or_default();
            if hsm(&kty) {
                Class::HsmCreate
            } else {
                Class::SoftwareCreate
            }
        }
        Route::RotateKey(name) => {
            let is_hsm = app
                .store()
                .vaults
                .get(vault)
                .and_then(|v| v.record(name).ok().map(|r| r.latest().kty))
                .is_some_and(|kty| matches!(kty, Kty::RsaHsm | Kty::EcHsm | Kty::OctHsm));
            if is_hsm {
                Class::HsmCreate
            } else {
                Class::SoftwareCreate
            }
        }
        _ => Class::Other,
    }
}

async fn read_body<B>(req: Request<B>) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BadParameter",
            "The request body is too large or could not be read.",
        )),
    }
}

/// Parses a JSON body; errors name the position only, never the content.
fn parse_json<T: DeserializeOwned + Default>(body: &[u8], required: bool) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if required {
            Err(ApiError::bad_parameter("The request body is required."))
        } else {
            Ok(T::default())
        };
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "has a field of the wrong type or value",
            _ => "is not valid JSON",
        };
        ApiError::bad_parameter(format!(
            "The request body {what} (line {}, column {}).",
            e.line(),
            e.column()
        ))
    })
}

async fn dispatch(
    app: &App,
    vault: &str,
    d: &Speaking,
    route: Route,
    query: &Query,
    api_version: &str,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    match route {
        Route::CreateKey(name) => create_key(app, vault, d, &name, body).await,
        Route::ImportKey(name) => import_key(app, vault, d, &name, body),
        Route::GetKey(name, version) => {
            validate_key_name(&name)?;
            let bundle = app
                .store()
                .vault_mut(vault)?
                .bundle_for(&name, version.as_deref())?;
            // Lowkey Vault: a key whose current version is disabled is not found by name.
            if d.hide_disabled_keys
                && version.as_deref().is_none_or(str::is_empty)
                && !bundle.attributes.enabled
            {
                d.hit(Flag::HideDisabledKeys);
                return Err(ApiError::key_not_found(&name));
            }
            d.ok(&bundle)
        }
        Route::UpdateKey(name, version) => {
            update_key(app, vault, d, &name, version.as_deref(), body)
        }
        Route::ListVersions(name) => {
            validate_key_name(&name)?;
            let max = query.page_size()?;
            let cursor = query.cursor()?;
            let mut store = app.store();
            let v = store.vault_mut(vault)?;
            let page = v.list_versions(&name, max, cursor.as_deref(), d.versions_order())?;
            let record = v.record(&name)?;
            let value = page
                .items
                .iter()
                .map(|kv| v.item(record, kv, true))
                .collect();
            let base = format!("{}/keys/{}/versions", v.url, record.name);
            d.ok(&ListPage {
                value,
                next_link: page
                    .next_cursor
                    .map(|c| next_link(&base, api_version, &c, max)),
            })
        }
        Route::ListKeys => {
            let max = query.page_size()?;
            let cursor = query.cursor()?;
            let mut store = app.store();
            let v = store.vault_mut(vault)?;
            let page = v.list_keys(max, cursor.as_deref());
            let value = page
                .items
                .iter()
                .map(|r| v.item(r, r.latest(), false))
                .collect();
            let base = format!("{}/keys", v.url);
            d.ok(&ListPage {
                value,
                next_link: page
                    .next_cursor
                    .map(|c| next_link(&base, api_version, &c, max)),
            })
        }
        Route::ListDeletedKeys => {
            let max = query.page_size()?;
            let cursor = query.cursor()?;
            let mut store = app.store();
            let v = store.vault_mut(vault)?;
            let page = v.list_deleted(max, cursor.as_deref());
            let value = page.items.iter().map(|d| v.deleted_item(d)).collect();
            let base = format!("{}/deletedkeys", v.url);
            d.ok(&ListPage {
                value,
                next_link: page
                    .next_cursor
                    .map(|c| next_link(&base, api_version, &c, max)),
            })
        }
        Route::RotateKey(name) => {
            validate_key_name(&name)?;
            d.ok(&app.rotate(vault, &name, None).await?)
        }
        Route::GetRotationPolicy(name) => {
            validate_key_name(&name)?;
            let mut store = app.store();
            let v = store.vault_mut(vault)?;
            if v.record(&name)?.policy.is_none()
                && let Some(answer) = d.unset_policy(&name)
            {
                return answer;
            }
            d.ok(&v.policy_model(&name, d.action_case())?)
        }
        Route::SetRotationPolicy(name) => {
            validate_key_name(&name)?;
            let input: RotationPolicyIn = parse_json(body, true)?;
            let spec = rotation::validate(&input).map_err(ApiError::bad_parameter)?;
            let now = app.clock.now();
            let mut store = app.store();
            let v = store.vault_mut(vault)?;
            v.set_policy(&name, spec, now)?;
            d.ok(&v.policy_model(&name, d.action_case())?)
        }
        Route::DeleteKey(name) => {
            validate_key_name(&name)?;
            let now = app.clock.now();
            d.ok(&app.store().vault_mut(vault)?.delete(&name, now)?)
        }
        Route::GetDeletedKey(name) => {
            validate_key_name(&name)?;
            let mut store = app.store();
            let v = store.vault_mut(vault)?;
            let deleted = v.deleted_record(&name)?;
            d.ok(&v.deleted_bundle(deleted))
        }
        Route::PurgeDeletedKey(name) => {
            validate_key_name(&name)?;
            app.store().vault_mut(vault)?.purge(&name)?;
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        Route::RecoverDeletedKey(name) => {
            validate_key_name(&name)?;
            d.ok(&app.store().vault_mut(vault)?.recover(&name)?)
        }
        Route::MethodNotAllowed => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The requested resource does not support this HTTP method.",
        )),
        Route::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested resource is not supported by this emulator (only key management operations are emulated).",
        )),
    }
}

fn next_link(base: &str, api_version: &str, cursor: &str, max: usize) -> String {
    format!(
        "{base}?api-version={api_version}&$skiptoken={}&maxresults={max}",
        encode_skiptoken(cursor)
    )
}

/// Attributes / tags / key_ops / release policy common to create and import.
struct CommonParams {
    key_ops: Vec<String>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    exportable: bool,
    tags: crate::model::Tags,
    release_policy: Option<serde_json::Value>,
}

fn common_params(
    d: &Speaking,
    kty: Kty,
    key_ops: Option<Vec<String>>,
    attributes: Option<crate::model::KeyAttributesIn>,
    tags: Option<crate::model::Tags>,
    release_policy: Option<serde_json::Value>,
) -> Result<CommonParams, ApiError> {
    let key_ops = match key_ops {
        Some(ops) => {
            validate_key_ops(&ops)?;
            ops
        }
        None => d.unsent_key_ops(kty.default_ops()),
    };
    validate_tags(&tags)?;
    let attributes = attributes.unwrap_or_default();
    let exportable = attributes.exportable.unwrap_or(false);
    crate::keyvault_rules::check_exportable(exportable, release_policy.is_some()).map_err(
        |_| ApiError::bad_parameter("An exportable key must be created with a release policy."),
    )?;
    for (name, t) in [("nbf", attributes.nbf), ("exp", attributes.exp)] {
        if let Some(t) = t
            && !crate::keyvault_rules::unix_time_ok(t)
        {
            return Err(ApiError::bad_parameter(format!(
                "Invalid attributes.{name} {t}: not a date Key Vault holds."
            )));
        }
    }
    Ok(CommonParams {
        key_ops,
        enabled: attributes.enabled.unwrap_or(true),
        nbf: attributes.nbf,
        exp: attributes.exp,
        exportable,
        tags: tags.unwrap_or_default(),
        release_policy,
    })
}

fn new_version(
    kty: Kty,
    shape: KeyShape,
    material: keys::KeyMaterial,
    c: CommonParams,
) -> NewVersion {
    NewVersion {
        kty,
        shape,
        material,
        key_ops: c.key_ops,
        enabled: c.enabled,
        nbf: c.nbf,
        exp: c.exp,
        exportable: c.exportable,
        tags: c.tags,
        release_policy: c.release_policy,
    }
}

async fn create_key(
    app: &App,
    vault: &str,
    d: &Speaking,
    name: &str,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    validate_key_name(name)?;
    let p: KeyCreateParameters = parse_json(body, true)?;
    let kty = Kty::parse(
        p.kty
            .as_deref()
            .ok_or_else(|| ApiError::bad_parameter("The parameter 'kty' is required."))?,
    )?;
    let shape = KeyShape::for_create(kty, p.key_size, p.crv.as_deref())?;
    if let Some(exponent) = p.public_exponent {
        if !matches!(shape, KeyShape::Rsa { .. }) {
            return Err(ApiError::bad_parameter(
                "The parameter 'public_exponent' is only valid for RSA keys.",
            ));
        }
        if exponent != 65_537 {
            return Err(ApiError::bad_parameter(format!(
                "Unsupported public_exponent {exponent}: the emulator only generates RSA keys with exponent 65537."
            )));
        }
    }
    let common = common_params(d, kty, p.key_ops, p.attributes, p.tags, p.release_policy)?;
    // Fail fast (409) before spending time on key generation.
    app.store().vault_mut(vault)?.ensure_name_usable(name)?;
    let material = App::generate(shape).await?;
    let now = app.clock.now();
    let mut store = app.store();
    let v = store.vault_mut(vault)?;
    let version = new_version_id();
    v.add_version(
        name,
        new_version(kty, shape, material, common),
        now,
        version.clone(),
    )?;
    d.ok(&v.bundle_for(name, Some(&version))?)
}

fn import_key(
    app: &App,
    vault: &str,
    d: &Speaking,
    name: &str,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    validate_key_name(name)?;
    let p: KeyImportParameters = parse_json(body, true)?;
    let jwk = p
        .key
        .ok_or_else(|| ApiError::bad_parameter("The parameter 'key' is required."))?;
    let imported = keys::import(&jwk, p.hsm.unwrap_or(false))?;
    let common = common_params(
        d,
        imported.kty,
        jwk.key_ops,
        p.attributes,
        p.tags,
        p.release_policy,
    )?;
    let now = app.clock.now();
    let mut store = app.store();
    let v = store.vault_mut(vault)?;
    let version = new_version_id();
    v.add_version(
        name,
        new_version(imported.kty, imported.shape, imported.material, common),
        now,
        version.clone(),
    )?;
    d.ok(&v.bundle_for(name, Some(&version))?)
}

fn update_key(
    app: &App,
    vault: &str,
    d: &Speaking,
    name: &str,
    version: Option<&str>,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    validate_key_name(name)?;
    let p: KeyUpdateParameters = parse_json(body, false)?;
    if let Some(ops) = &p.key_ops {
        validate_key_ops(ops)?;
    }
    validate_tags(&p.tags)?;
    let attributes = p.attributes.unwrap_or_default();
    // Lowkey Vault sets nbf and exp as a pair: sending one clears the other.
    let clears =
        d.patch_clears_unsent_dates && attributes.nbf.is_some() != attributes.exp.is_some();
    if clears {
        d.hit(Flag::PatchClearsUnsentDates);
    }
    let date = |sent: Option<i64>| (clears || sent.is_some()).then_some(sent);
    let update = VersionUpdate {
        key_ops: p.key_ops,
        enabled: attributes.enabled,
        nbf: date(attributes.nbf),
        exp: date(attributes.exp),
        tags: p.tags,
        release_policy: p.release_policy,
    };
    // Azure stamps every change; an implementation that does not hides the change from the
    // key list, whose `updated` then says nothing happened.
    let stamp = if d.patch_keeps_updated {
        d.hit(Flag::PatchKeepsUpdated);
        None
    } else {
        Some(app.clock.now())
    };
    let mut store = app.store();
    let v = store.vault_mut(vault)?;
    let version = v
        .update_version(name, version, update, stamp)?
        .version
        .clone();
    d.ok(&v.bundle_for(name, Some(&version))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_like_the_service() {
        let get = Method::GET;
        assert_eq!(Route::parse(&get, "/keys"), Route::ListKeys);
        assert_eq!(Route::parse(&get, "/keys/"), Route::ListKeys);
        assert_eq!(
            Route::parse(&get, "/keys/k"),
            Route::GetKey("k".into(), None)
        );
        assert_eq!(
            Route::parse(&get, "/keys/k/"),
            Route::GetKey("k".into(), None)
        );
        assert_eq!(
            Route::parse(&get, "/keys/k/abc"),
            Route::GetKey("k".into(), Some("abc".into()))
        );
        assert_eq!(
            Route::parse(&get, "/keys/k/versions"),
            Route::ListVersions("k".into())
        );
        assert_eq!(
            Route::parse(&Method::PATCH, "/keys/k/"),
            Route::UpdateKey("k".into(), None)
        );
        assert_eq!(
            Route::parse(&Method::POST, "/keys/k/create"),
            Route::CreateKey("k".into())
        );
        assert_eq!(
            Route::parse(&Method::POST, "/keys/k/rotate/"),
            Route::RotateKey("k".into())
        );
        assert_eq!(
            Route::parse(&Method::PUT, "/keys/k/rotationpolicy"),
            Route::SetRotationPolicy("k".into())
        );
        assert_eq!(
            Route::parse(&Method::DELETE, "/deletedkeys/k"),
            Route::PurgeDeletedKey("k".into())
        );
        assert_eq!(
            Route::parse(&Method::POST, "/deletedkeys/k/recover"),
            Route::RecoverDeletedKey("k".into())
        );
        assert_eq!(
            Route::parse(&Method::POST, "/keys/k"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            Route::parse(&get, "/keys/k/create"),
            Route::MethodNotAllowed
        );
        assert_eq!(Route::parse(&get, "/secrets/s"), Route::NotFound);
        assert_eq!(
            Route::parse(&Method::POST, "/keys/k/v/sign"),
            Route::NotFound
        );
    }

    #[test]
    fn api_versions() {
        assert!(check_api_version(Some("2025-07-01")).is_ok());
        assert!(check_api_version(Some("7.4")).is_ok());
        assert!(check_api_version(Some("7.6-preview.2")).is_ok());
        assert!(check_api_version(Some("7.7")).is_err());
        assert!(check_api_version(Some("")).is_err());
        assert!(check_api_version(None).is_err());
    }

    #[test]
    fn bearer_detection() {
        let mut h = HeaderMap::new();
        assert!(bearer_token(&h).is_none());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(bearer_token(&h).is_none());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer_token(&h).is_none());
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer x"));
        assert!(bearer_token(&h).is_some());
    }

    #[test]
    fn json_errors_do_not_echo_the_body() {
        let err = parse_json::<KeyImportParameters>(br#"{"key":{"kty":"RSA","d":12345678}}"#, true)
            .err()
            .unwrap();
        assert!(!err.message.contains("12345678"), "{}", err.message);
        let err = parse_json::<KeyImportParameters>(b"{\"key\": SECRETSECRET", true)
            .err()
            .unwrap();
        assert!(!err.message.contains("SECRET"));
        assert!(parse_json::<KeyUpdateParameters>(b"", false).is_ok());
        assert!(parse_json::<KeyCreateParameters>(b"  ", true).is_err());
    }

    #[test]
    fn page_size_bounds() {
        let q = |m: &str| Query {
            maxresults: Some(m.into()),
            ..Query::default()
        };
        assert_eq!(Query::default().page_size().unwrap(), 25);
        assert_eq!(q("5").page_size().unwrap(), 5);
        assert!(q("0").page_size().is_err());
        assert!(q("26").page_size().is_err());
        assert!(q("x").page_size().is_err());
    }
}
