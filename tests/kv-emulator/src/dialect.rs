//! Dialects: response shapes that Azure's REST reference or other Key Vault
//! implementations (e.g. Lowkey Vault) allow besides the one the emulator
//! answers by default, so the operator can be proven tolerant of them.
//!
//! A [`Dialect`] is set at run time through the management API
//! (`PUT /dialect`, optionally for one vault); every flag is off by default.
//! Each request takes a snapshot ([`Speaking`]) that the handlers consult and
//! that records which flags changed the answer, for `/stats`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, HttpResponse, empty_response, json_response};
use crate::rotation::ActionType;
use crate::stats::Operation;
use crate::store::new_version_id;

/// Body of `PUT /dialect`: a whole dialect (fields left out take their default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Dialect {
    pub persistent_error: Option<PersistentError>,
    pub hide_disabled_keys: bool,
    pub conflict_without_inner_code: bool,
    pub policy_action_case: ActionCase,
    pub policy_unset: PolicyUnset,
    pub patch_clears_unsent_dates: bool,
    pub omit_empty_key_ops: bool,
    pub rsa_leading_zero: bool,
    pub foreign_error_codes: bool,
    pub versions_order: VersionsOrder,
    pub omit_exportable: bool,
    #[serde(rename = "purgeRefusedAs500")]
    pub purge_refused_as_500: bool,
    /// A PATCH leaves the version's `updated` attribute as it was.
    pub patch_keeps_updated: bool,
}

/// Every request of `operations` answers this error, nothing performed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentError {
    pub operations: Vec<String>,
    pub status: u16,
    pub code: String,
    #[serde(default)]
    pub inner_code: Option<String>,
    /// A fresh random id in each message, as services that log per request do.
    #[serde(default)]
    pub message_noise: bool,
}

/// Spelling of rotation-policy action types in responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionCase {
    /// `Rotate` / `Notify`, as Key Vault answers.
    #[default]
    Canonical,
    Lower,
    Upper,
    /// The spelling the client sent (`Notify` for the action the service adds).
    AsSent,
}

impl ActionCase {
    pub fn spell(self, action: ActionType, sent: &str) -> String {
        match self {
            ActionCase::Canonical => action.as_str().to_string(),
            ActionCase::Lower => action.as_str().to_ascii_lowercase(),
            ActionCase::Upper => action.as_str().to_ascii_uppercase(),
            ActionCase::AsSent => sent.to_string(),
        }
    }
}

/// GET rotationpolicy of a key that never had one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyUnset {
    /// The service's default policy (see `rotation::default_policy_model`).
    #[default]
    Default,
    EmptyBody,
    NotFound,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionsOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Names of the dialect counters in `/stats` (the JSON field names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flag {
    PersistentError,
    HideDisabledKeys,
    ConflictWithoutInnerCode,
    PolicyActionCase,
    PolicyUnset,
    PatchClearsUnsentDates,
    OmitEmptyKeyOps,
    RsaLeadingZero,
    ForeignErrorCodes,
    VersionsOrder,
    OmitExportable,
    PurgeRefusedAs500,
    PatchKeepsUpdated,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::PersistentError => "persistentError",
            Flag::HideDisabledKeys => "hideDisabledKeys",
            Flag::ConflictWithoutInnerCode => "conflictWithoutInnerCode",
            Flag::PolicyActionCase => "policyActionCase",
            Flag::PolicyUnset => "policyUnset",
            Flag::PatchClearsUnsentDates => "patchClearsUnsentDates",
            Flag::OmitEmptyKeyOps => "omitEmptyKeyOps",
            Flag::RsaLeadingZero => "rsaLeadingZero",
            Flag::ForeignErrorCodes => "foreignErrorCodes",
            Flag::VersionsOrder => "versionsOrder",
            Flag::OmitExportable => "omitExportable",
            Flag::PurgeRefusedAs500 => "purgeRefusedAs500",
            Flag::PatchKeepsUpdated => "patchKeepsUpdated",
        }
    }
}

impl Dialect {
    fn validate(&self) -> Result<(), String> {
        let Some(p) = &self.persistent_error else {
            return Ok(());
        };
        if p.operations.is_empty() {
            return Err("persistentError.operations must name at least one operation".into());
        }
        if let Some(o) = p
            .operations
            .iter()
            .find(|o| Operation::parse(o).is_none_or(|op| op == Operation::Unauthorized))
        {
            return Err(format!(
                "persistentError.operations: unknown or ineligible operation '{o}'"
            ));
        }
        if !(400..=599).contains(&p.status) {
            return Err("persistentError.status must be between 400 and 599".into());
        }
        if p.code.is_empty() {
            return Err("persistentError.code must not be empty".into());
        }
        Ok(())
    }
}

/// The dialect for all vaults plus per-vault replacements.
#[derive(Debug, Default)]
pub struct Dialects {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    all: Arc<Dialect>,
    vaults: BTreeMap<String, Arc<Dialect>>,
}

impl Dialects {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn for_vault(&self, vault: &str) -> Arc<Dialect> {
        let state = self.lock();
        state.vaults.get(vault).unwrap_or(&state.all).clone()
    }

    /// Installs `dialect` for every vault (`None`; per-vault ones are kept)
    /// or for one vault, replacing what was there.
    pub fn set(&self, vault: Option<&str>, dialect: Dialect) -> Result<(), String> {
        dialect.validate()?;
        let mut state = self.lock();
        match vault {
            None => state.all = Arc::new(dialect),
            Some(v) => {
                state.vaults.insert(v.to_string(), Arc::new(dialect));
            }
        }
        Ok(())
    }

    /// Back to the default: everything (`None`) or one vault's replacement.
    pub fn reset(&self, vault: Option<&str>) {
        let mut state = self.lock();
        match vault {
            None => *state = State::default(),
            Some(v) => {
                state.vaults.remove(v);
            }
        }
    }

    pub fn describe(&self) -> Value {
        let state = self.lock();
        let vaults: BTreeMap<&String, &Dialect> =
            state.vaults.iter().map(|(v, d)| (v, d.as_ref())).collect();
        json!({ "all": state.all.as_ref(), "vaults": vaults })
    }
}

/// One request's dialect and the flags that changed its answer.
#[derive(Debug)]
pub struct Speaking {
    dialect: Arc<Dialect>,
    hits: Mutex<BTreeSet<Flag>>,
}

impl Deref for Speaking {
    type Target = Dialect;

    fn deref(&self) -> &Dialect {
        &self.dialect
    }
}

/// `request <random id>: <message>`: a message that differs on every answer.
fn noisy(message: &str) -> String {
    format!("request {}: {message}", new_version_id())
}

impl Speaking {
    pub fn new(dialect: Arc<Dialect>) -> Speaking {
        Speaking {
            dialect,
            hits: Mutex::new(BTreeSet::new()),
        }
    }

    /// Notes that `flag` changed this request's answer.
    pub fn hit(&self, flag: Flag) {
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(flag);
    }

    /// The flags hit so far (each once per request), cleared.
    pub fn take_hits(&self) -> BTreeSet<Flag> {
        std::mem::take(&mut *self.hits.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The configured error when `op` is one of `persistentError.operations`.
    pub fn persistent_error(&self, op: Operation) -> Option<ApiError> {
        let p = self.persistent_error.as_ref()?;
        if !p.operations.iter().any(|o| o == op.as_str()) {
            return None;
        }
        self.hit(Flag::PersistentError);
        let message = format!("{} (kv-emulator persistentError)", p.code.to_lowercase());
        Some(ApiError {
            status: StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: p.code.clone(),
            message: if p.message_noise {
                noisy(&message)
            } else {
                message
            },
            inner_code: p.inner_code.clone(),
        })
    }

    /// Rewrites an error answered for `op` the way the dialect would.
    pub fn error(&self, op: Operation, mut e: ApiError) -> ApiError {
        if self.conflict_without_inner_code && e.is_deleted_but_recoverable() {
            self.hit(Flag::ConflictWithoutInnerCode);
            e = ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                noisy("conflict: the name belongs to a deleted key"),
            );
        }
        if self.purge_refused_as_500
            && op == Operation::PurgeDeletedKey
            && e.status == StatusCode::FORBIDDEN
        {
            self.hit(Flag::PurgeRefusedAs500);
            e.status = StatusCode::INTERNAL_SERVER_ERROR;
        }
        if self.foreign_error_codes {
            self.hit(Flag::ForeignErrorCodes);
            // What a Java implementation answering its exception class names would send.
            e.code = format!("com.example.keyvault.{}Exception", e.code);
        }
        e
    }

    /// Key operations of a create/import that sent none: the type's default,
    /// or none at all.
    pub fn unsent_key_ops(&self, default: Vec<String>) -> Vec<String> {
        if self.omit_empty_key_ops {
            self.hit(Flag::OmitEmptyKeyOps);
            Vec::new()
        } else {
            default
        }
    }

    /// How to spell policy action types in this answer.
    pub fn action_case(&self) -> ActionCase {
        if self.policy_action_case != ActionCase::Canonical {
            self.hit(Flag::PolicyActionCase);
        }
        self.policy_action_case
    }

    /// The answer to GET rotationpolicy of a key that never had one, when the
    /// dialect does not answer the service's default.
    pub fn unset_policy(&self, name: &str) -> Option<Result<HttpResponse, ApiError>> {
        let answer = match self.policy_unset {
            PolicyUnset::Default => return None,
            PolicyUnset::EmptyBody => Ok(empty_response(StatusCode::OK)),
            PolicyUnset::NotFound => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "KeyRotationPolicyNotFound",
                format!("Key {name} has no rotation policy."),
            )),
        };
        self.hit(Flag::PolicyUnset);
        Some(answer)
    }

    /// The order versions are listed in (hit when it is not the default).
    pub fn versions_order(&self) -> VersionsOrder {
        if self.dialect.versions_order != VersionsOrder::default() {
            self.hit(Flag::VersionsOrder);
        }
        self.dialect.versions_order
    }

    /// A 200 answer with `value`, reshaped by the key-shape flags.
    pub fn ok<T: Serialize>(&self, value: &T) -> Result<HttpResponse, ApiError> {
        let mut value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.reshape(&mut value);
        Ok(json_response(StatusCode::OK, &value))
    }

    /// Applies the flags that only change how keys are written: to a bundle
    /// or item, or to each entry of a list page.
    fn reshape(&self, value: &mut Value) {
        if let Some(items) = value.get_mut("value").and_then(Value::as_array_mut) {
            items.iter_mut().for_each(|item| self.reshape(item));
            return;
        }
        if let Some(key) = value.get_mut("key").and_then(Value::as_object_mut) {
            if self.omit_empty_key_ops
                && key
                    .get("key_ops")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty)
            {
                self.hit(Flag::OmitEmptyKeyOps);
                key.remove("key_ops");
            }
            if self.rsa_leading_zero
                && let Some(n) = key.get_mut("n")
                && let Some(padded) = n.as_str().and_then(with_leading_zero)
            {
                self.hit(Flag::RsaLeadingZero);
                *n = Value::String(padded);
            }
        }
        // Only key attributes carry `exportable` (policy attributes do not).
        if self.omit_exportable
            && let Some(attributes) = value.get_mut("attributes").and_then(Value::as_object_mut)
            && attributes.remove("exportable").is_some()
        {
            self.hit(Flag::OmitExportable);
        }
    }
}

/// base64url of `0x00 || n`, as encoders that write the modulus as a signed
/// integer do (RFC 7518 asks for the unsigned form, but readers should cope).
fn with_leading_zero(n: &str) -> Option<String> {
    let mut bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
    if bytes.first() != Some(&0) {
        bytes.insert(0, 0);
    }
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::{Method, Request};
    use serde_json::{Value, json};

    use super::*;
    use crate::api::{self, Outcome};
    use crate::app::App;
    use crate::store::{Recovery, Store, Vault};
    use crate::{admin, error::HttpResponse};

    /// An emulator without listeners: requests go straight to the handlers.
    struct Emulator(Arc<App>);

    async fn read(response: HttpResponse) -> (u16, Value) {
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (status, json)
    }

    fn request(method: Method, uri: &str, body: Option<Value>) -> Request<Full<Bytes>> {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::AUTHORIZATION, "Bearer token")
            .body(Full::new(body))
            .unwrap()
    }

    impl Emulator {
        fn new() -> Emulator {
            let mut store = Store::default();
            for (name, level) in [
                ("default", "Recoverable"),
                ("purgeable", "Recoverable+Purgeable"),
            ] {
                let recovery = Recovery::new(level, None).unwrap();
                store.vaults.insert(
                    name.into(),
                    Vault::new(name, "https://127.0.0.1:1", recovery),
                );
            }
            Emulator(Arc::new(App::new(store)))
        }

        /// A Key Vault request to `vault` (api-version added).
        async fn call_in(
            &self,
            vault: &str,
            method: Method,
            path: &str,
            body: Option<Value>,
        ) -> (u16, Value) {
            let sep = if path.contains('?') { '&' } else { '?' };
            let req = request(method, &format!("{path}{sep}api-version=7.4"), body);
            match api::handle(self.0.clone(), Arc::from(vault), req).await {
                Outcome::Respond(response) => read(response).await,
                Outcome::Reset => panic!("connection reset"),
            }
        }

        async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
            self.call_in("default", method, path, body).await
        }

        async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
            read(admin::handle(self.0.clone(), request(method, path, body)).await).await
        }

        async fn speak(&self, dialect: Value) {
            let (status, body) = self.admin(Method::PUT, "/dialect", Some(dialect)).await;
            assert_eq!(status, 200, "{body}");
        }

        async fn create(&self, name: &str, body: Value) -> Value {
            let (status, bundle) = self
                .call(Method::POST, &format!("/keys/{name}/create"), Some(body))
                .await;
            assert_eq!(status, 200, "{bundle}");
            bundle
        }

        async fn create_ec(&self, name: &str) -> Value {
            self.create(name, json!({"kty": "EC", "crv": "P-256"}))
                .await
        }

        /// How many requests `flag` changed.
        async fn hits(&self, flag: &str) -> u64 {
            let (_, stats) = self.admin(Method::GET, "/stats", None).await;
            stats["dialect"][flag].as_u64().unwrap_or(0)
        }
    }

    fn message(body: &Value) -> &str {
        body["error"]["message"].as_str().unwrap()
    }

    #[tokio::test]
    async fn admin_api_shows_sets_and_resets_dialects() {
        let e = Emulator::new();
        let (status, shown) = e.admin(Method::GET, "/dialect", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            shown,
            json!({"all": {
                "persistentError": null, "hideDisabledKeys": false,
                "conflictWithoutInnerCode": false, "policyActionCase": "canonical",
                "policyUnset": "default", "patchClearsUnsentDates": false,
                "omitEmptyKeyOps": false, "rsaLeadingZero": false, "foreignErrorCodes": false,
                "versionsOrder": "newest-first", "omitExportable": false, "purgeRefusedAs500": false,
                "patchKeepsUpdated": false,
            }, "vaults": {}})
        );
        for bad in [
            json!({"hideDisabledKey": true}),
            json!({"policyUnset": "nothing"}),
            json!({"persistentError": {"operations": ["create_keys"], "status": 409, "code": "Conflict"}}),
            json!({"persistentError": {"operations": ["unauthorized"], "status": 409, "code": "Conflict"}}),
            json!({"persistentError": {"operations": ["create_key"], "status": 200, "code": "Conflict"}}),
        ] {
            let (status, _) = e.admin(Method::PUT, "/dialect", Some(bad.clone())).await;
            assert_eq!(status, 400, "{bad}");
        }
        let (status, _) = e
            .admin(Method::PUT, "/dialect?vault=nope", Some(json!({})))
            .await;
        assert_eq!(status, 404);

        // Per vault: only `purgeable` hides disabled keys.
        let (status, shown) = e
            .admin(
                Method::PUT,
                "/dialect?vault=purgeable",
                Some(json!({"hideDisabledKeys": true})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(shown["vaults"]["purgeable"]["hideDisabledKeys"], true);
        assert_eq!(shown["all"]["hideDisabledKeys"], false);
        for vault in ["default", "purgeable"] {
            let body = json!({"kty": "EC", "attributes": {"enabled": false}});
            e.call_in(vault, Method::POST, "/keys/k/create", Some(body))
                .await;
        }
        assert_eq!(
            e.call_in("default", Method::GET, "/keys/k", None).await.0,
            200
        );
        assert_eq!(
            e.call_in("purgeable", Method::GET, "/keys/k", None).await.0,
            404
        );

        let (_, shown) = e.admin(Method::DELETE, "/dialect", None).await;
        assert_eq!(shown["vaults"], json!({}));
        assert_eq!(
            e.call_in("purgeable", Method::GET, "/keys/k", None).await.0,
            200
        );
    }

    #[tokio::test]
    async fn persistent_error_answers_every_named_request_and_is_counted() {
        let e = Emulator::new();
        e.create_ec("other").await;
        e.speak(json!({"persistentError": {
            "operations": ["create_key", "delete_key"], "status": 409, "code": "Conflict",
            "innerCode": "SomethingElse", "messageNoise": true,
        }}))
        .await;
        let mut messages = Vec::new();
        for _ in 0..2 {
            let (status, body) = e
                .call(Method::POST, "/keys/k/create", Some(json!({"kty": "EC"})))
                .await;
            assert_eq!(status, 409);
            assert_eq!(body["error"]["code"], "Conflict");
            assert_eq!(body["error"]["innererror"]["code"], "SomethingElse");
            assert!(message(&body).starts_with("request "), "{body}");
            messages.push(message(&body).to_string());
        }
        assert_ne!(messages[0], messages[1]);
        // Nothing was performed, and other operations are untouched.
        assert_eq!(e.call(Method::GET, "/keys/k", None).await.0, 404);
        assert_eq!(e.call(Method::DELETE, "/keys/other", None).await.0, 409);
        assert_eq!(e.call(Method::GET, "/keys/other", None).await.0, 200);

        let (_, stats) = e.admin(Method::GET, "/stats", None).await;
        let creates: Vec<_> = stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["operation"] == "create_key")
            .map(|r| (r["status"].as_u64().unwrap(), r["count"].as_u64().unwrap()))
            .collect();
        assert_eq!(creates, [(200, 1), (409, 2)]);
        assert_eq!(e.hits("persistentError").await, 3);

        // Without noise the message is the same every time.
        e.speak(json!({"persistentError": {"operations": ["get_key"], "status": 503, "code": "ServiceUnavailable"}}))
            .await;
        let (status, first) = e.call(Method::GET, "/keys/other", None).await;
        let (_, second) = e.call(Method::GET, "/keys/other", None).await;
        assert_eq!(status, 503);
        assert!(first["error"].get("innererror").is_none());
        assert_eq!(first, second);
    }

    #[tokio::test]
    async fn hide_disabled_keys_hides_only_the_versionless_get() {
        let e = Emulator::new();
        e.speak(json!({"hideDisabledKeys": true})).await;
        let kid = e.create_ec("k").await["key"]["kid"]
            .as_str()
            .unwrap()
            .to_string();
        let version = kid.rsplit('/').next().unwrap();
        assert_eq!(e.call(Method::GET, "/keys/k", None).await.0, 200);
        assert_eq!(e.hits("hideDisabledKeys").await, 0);

        let disable = json!({"attributes": {"enabled": false}});
        assert_eq!(e.call(Method::PATCH, "/keys/k", Some(disable)).await.0, 200);
        let (status, body) = e.call(Method::GET, "/keys/k", None).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!("KeyNotFound"))
        );
        assert_eq!(
            e.call(Method::GET, &format!("/keys/k/{version}"), None)
                .await
                .0,
            200
        );
        let (status, list) = e.call(Method::GET, "/keys/k/versions", None).await;
        assert_eq!((status, list["value"].as_array().unwrap().len()), (200, 1));
        assert_eq!(e.hits("hideDisabledKeys").await, 1);
    }

    #[tokio::test]
    async fn conflict_without_inner_code_over_a_deleted_name() {
        let e = Emulator::new();
        e.speak(json!({"conflictWithoutInnerCode": true})).await;
        e.create_ec("k").await;
        assert_eq!(e.call(Method::DELETE, "/keys/k", None).await.0, 200);
        let (s1, create) = e
            .call(Method::POST, "/keys/k/create", Some(json!({"kty": "EC"})))
            .await;
        let import = json!({"key": {"kty": "oct-HSM", "k": "AAECAwQFBgcICQoLDA0ODw"}});
        let (s2, import) = e.call(Method::PUT, "/keys/k", Some(import)).await;
        for body in [&create, &import] {
            assert_eq!(body["error"]["code"], "Conflict");
            assert!(body["error"].get("innererror").is_none(), "{body}");
            assert!(message(body).starts_with("request "));
        }
        assert_eq!((s1, s2), (409, 409));
        assert_ne!(message(&create), message(&import));
        assert_eq!(e.hits("conflictWithoutInnerCode").await, 2);
    }

    #[tokio::test]
    async fn policy_action_case_spells_answers_and_accepts_any_input() {
        let e = Emulator::new();
        e.create_ec("k").await;
        let policy = json!({"lifetimeActions": [
            {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "rOtAtE"}},
        ], "attributes": {"expiryTime": "P90D"}});
        let types = |body: &Value| -> Vec<String> {
            body["lifetimeActions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["action"]["type"].as_str().unwrap().to_string())
                .collect()
        };
        let (status, set) = e
            .call(Method::PUT, "/keys/k/rotationpolicy", Some(policy))
            .await;
        assert_eq!(
            (status, types(&set)),
            (200, vec!["Rotate".into(), "Notify".into()])
        );
        for (case, expected) in [
            ("lower", ["rotate", "notify"]),
            ("upper", ["ROTATE", "NOTIFY"]),
            ("as-sent", ["rOtAtE", "Notify"]),
        ] {
            e.speak(json!({"policyActionCase": case})).await;
            let (_, got) = e.call(Method::GET, "/keys/k/rotationpolicy", None).await;
            assert_eq!(types(&got), expected, "{case}");
        }
        assert_eq!(e.hits("policyActionCase").await, 3);
    }

    #[tokio::test]
    async fn policy_unset_answers_for_a_key_without_a_policy() {
        let e = Emulator::new();
        e.create_ec("k").await;
        let (status, default) = e.call(Method::GET, "/keys/k/rotationpolicy", None).await;
        assert_eq!(status, 200);
        assert_eq!(default["lifetimeActions"][0]["action"]["type"], "Notify");

        e.speak(json!({"policyUnset": "empty-body"})).await;
        assert_eq!(
            e.call(Method::GET, "/keys/k/rotationpolicy", None).await,
            (200, Value::Null)
        );
        e.speak(json!({"policyUnset": "not-found"})).await;
        let (status, _) = e.call(Method::GET, "/keys/k/rotationpolicy", None).await;
        assert_eq!(status, 404);
        assert_eq!(e.hits("policyUnset").await, 2);

        // A key that has a policy answers it.
        let policy = json!({"lifetimeActions": [], "attributes": {"expiryTime": "P90D"}});
        e.call(Method::PUT, "/keys/k/rotationpolicy", Some(policy))
            .await;
        let (status, set) = e.call(Method::GET, "/keys/k/rotationpolicy", None).await;
        assert_eq!(
            (status, &set["attributes"]["expiryTime"]),
            (200, &json!("P90D"))
        );
        assert_eq!(e.hits("policyUnset").await, 2);
    }

    #[tokio::test]
    async fn patch_keeps_updated_hides_a_change_from_the_key_list() {
        let e = Emulator::new();
        e.create_ec("k").await;
        let listed_updated = |list: &Value| list["value"][0]["attributes"]["updated"].clone();
        let (_, before) = e.call(Method::GET, "/keys", None).await;
        // Default: every PATCH stamps `updated`, and the list shows it.
        e.0.clock.advance(10);
        e.call(Method::PATCH, "/keys/k", Some(json!({"key_ops": ["sign"]})))
            .await;
        let (_, stamped) = e.call(Method::GET, "/keys", None).await;
        assert_ne!(listed_updated(&stamped), listed_updated(&before));

        e.speak(json!({"patchKeepsUpdated": true})).await;
        e.0.clock.advance(10);
        let (_, patched) = e
            .call(
                Method::PATCH,
                "/keys/k",
                Some(json!({"key_ops": ["verify"]})),
            )
            .await;
        assert_eq!(patched["key"]["key_ops"], json!(["verify"]));
        let (_, unstamped) = e.call(Method::GET, "/keys", None).await;
        assert_eq!(listed_updated(&unstamped), listed_updated(&stamped));
        assert_eq!(e.hits("patchKeepsUpdated").await, 1);
    }

    #[tokio::test]
    async fn patch_clears_unsent_dates() {
        let e = Emulator::new();
        let dates = json!({"kty": "EC", "attributes": {"nbf": 1_000, "exp": 2_000_000_000}});
        e.create("k", dates).await;
        // Default: an unsent date is kept.
        let (_, kept) = e
            .call(
                Method::PATCH,
                "/keys/k",
                Some(json!({"attributes": {"nbf": 1_001}})),
            )
            .await;
        assert_eq!(kept["attributes"]["exp"], 2_000_000_000);

        e.speak(json!({"patchClearsUnsentDates": true})).await;
        let (_, only_nbf) = e
            .call(
                Method::PATCH,
                "/keys/k",
                Some(json!({"attributes": {"nbf": 1_002}})),
            )
            .await;
        assert_eq!(only_nbf["attributes"]["nbf"], 1_002);
        assert!(only_nbf["attributes"].get("exp").is_none(), "{only_nbf}");
        let (_, only_exp) = e
            .call(
                Method::PATCH,
                "/keys/k",
                Some(json!({"attributes": {"exp": 2_000_000_001}})),
            )
            .await;
        assert_eq!(only_exp["attributes"]["exp"], 2_000_000_001);
        assert!(only_exp["attributes"].get("nbf").is_none(), "{only_exp}");
        // Sending neither (or both) clears nothing.
        let (_, tags) = e
            .call(Method::PATCH, "/keys/k", Some(json!({"tags": {"a": "b"}})))
            .await;
        assert_eq!(tags["attributes"]["exp"], 2_000_000_001);
        assert_eq!(e.hits("patchClearsUnsentDates").await, 2);
    }

    #[tokio::test]
    async fn omit_empty_key_ops() {
        let e = Emulator::new();
        assert!(e.create_ec("typed").await["key"]["key_ops"].is_array());
        e.speak(json!({"omitEmptyKeyOps": true})).await;
        let bundle = e.create_ec("k").await;
        assert!(bundle["key"].get("key_ops").is_none(), "{bundle}");
        let (_, got) = e.call(Method::GET, "/keys/k", None).await;
        assert!(got["key"].get("key_ops").is_none());
        let explicit = e
            .create("signer", json!({"kty": "EC", "key_ops": ["sign"]}))
            .await;
        assert_eq!(explicit["key"]["key_ops"], json!(["sign"]));
        // The create and the GET of `k`: a request counts once however often a flag applies.
        assert_eq!(e.hits("omitEmptyKeyOps").await, 2);
    }

    #[tokio::test]
    async fn rsa_leading_zero() {
        let e = Emulator::new();
        let modulus = |bundle: &Value| {
            URL_SAFE_NO_PAD
                .decode(bundle["key"]["n"].as_str().unwrap())
                .unwrap()
        };
        let plain = modulus(&e.create("plain", json!({"kty": "RSA"})).await);
        assert_eq!(plain.len(), 256);
        e.speak(json!({"rsaLeadingZero": true})).await;
        let (_, got) = e.call(Method::GET, "/keys/plain", None).await;
        let padded = modulus(&got);
        assert_eq!((padded.len(), padded[0]), (257, 0));
        assert_eq!(padded[1..], plain[..]);
        // EC keys have no `n` and are left alone.
        e.create_ec("ec").await;
        assert_eq!(e.hits("rsaLeadingZero").await, 1);
    }

    #[tokio::test]
    async fn foreign_error_codes_keep_statuses() {
        let e = Emulator::new();
        e.speak(json!({"foreignErrorCodes": true})).await;
        let (status, body) = e.call(Method::GET, "/keys/missing", None).await;
        assert_eq!(status, 404);
        assert_eq!(
            body["error"]["code"],
            "com.example.keyvault.KeyNotFoundException"
        );
        let (status, body) = e
            .call(Method::POST, "/keys/k/create", Some(json!({"kty": "nope"})))
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["error"]["code"],
            "com.example.keyvault.BadParameterException"
        );
        assert_eq!(e.hits("foreignErrorCodes").await, 2);
    }

    #[tokio::test]
    async fn versions_order_oldest_first() {
        let e = Emulator::new();
        let mut kids = Vec::new();
        for _ in 0..3 {
            kids.push(e.create_ec("k").await["key"]["kid"].clone());
        }
        let listed = |body: &Value| -> Vec<Value> {
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["kid"].clone())
                .collect()
        };
        let (_, newest) = e.call(Method::GET, "/keys/k/versions", None).await;
        let mut reversed = kids.clone();
        reversed.reverse();
        assert_eq!(listed(&newest), reversed);
        e.speak(json!({"versionsOrder": "oldest-first"})).await;
        let (_, page1) = e
            .call(Method::GET, "/keys/k/versions?maxresults=2", None)
            .await;
        let next = page1["nextLink"].as_str().unwrap();
        let path = &next[next.find("/keys").unwrap()..];
        let (_, page2) = e.call(Method::GET, path, None).await;
        assert_eq!([listed(&page1), listed(&page2)].concat(), kids);
        assert_eq!(e.hits("versionsOrder").await, 2);
    }

    #[tokio::test]
    async fn omit_exportable_in_bundles_and_lists() {
        let e = Emulator::new();
        assert_eq!(e.create_ec("k").await["attributes"]["exportable"], false);
        e.speak(json!({"omitExportable": true})).await;
        let (_, got) = e.call(Method::GET, "/keys/k", None).await;
        assert!(got["attributes"].get("exportable").is_none());
        let (_, list) = e.call(Method::GET, "/keys", None).await;
        assert!(list["value"][0]["attributes"].get("exportable").is_none());
        assert_eq!(e.hits("omitExportable").await, 2);
    }

    #[tokio::test]
    async fn purge_refused_as_500() {
        let e = Emulator::new();
        for name in ["a", "b"] {
            e.create_ec(name).await;
            e.call(Method::DELETE, &format!("/keys/{name}"), None).await;
        }
        assert_eq!(e.call(Method::DELETE, "/deletedkeys/a", None).await.0, 403);
        e.speak(json!({"purgeRefusedAs500": true})).await;
        assert_eq!(e.call(Method::DELETE, "/deletedkeys/b", None).await.0, 500);
        // A purge that is allowed still succeeds.
        e.call_in(
            "purgeable",
            Method::POST,
            "/keys/c/create",
            Some(json!({"kty": "EC"})),
        )
        .await;
        e.call_in("purgeable", Method::DELETE, "/keys/c", None)
            .await;
        let (status, _) = e
            .call_in("purgeable", Method::DELETE, "/deletedkeys/c", None)
            .await;
        assert_eq!(status, 204);
        assert_eq!(e.hits("purgeRefusedAs500").await, 1);
    }
}
