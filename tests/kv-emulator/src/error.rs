//! Key Vault style errors (`{"error":{"code","message","innererror"?}}`) and the
//! small helpers that turn values into HTTP responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

/// Inner code of the 409 for a create/import over a soft-deleted name.
const DELETED_BUT_RECOVERABLE: &str = "ObjectIsDeletedButRecoverable";

/// Help link the real service appends to its not-found messages.
const NOT_FOUND_HELP: &str = "If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182";

pub type HttpResponse = Response<Full<Bytes>>;

/// An error answered to a REST client.
///
/// Messages are written by the emulator itself and never contain request
/// bodies (which may carry private key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub inner_code: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            inner_code: None,
        }
    }

    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    /// 404 for a live key (or key version) that does not exist.
    pub fn key_not_found(name_or_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!(
                "A key with (name/id) {name_or_id} was not found in this key vault. {NOT_FOUND_HELP}"
            ),
        )
    }

    /// 404 for `/deletedkeys/{name}` when the key is not in the deleted state.
    pub fn deleted_key_not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!("Deleted Key not found: {name}"),
        )
    }

    /// 409 when a create/import targets a name that is deleted but recoverable.
    pub fn deleted_but_recoverable(name: &str) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "Conflict".into(),
            message: format!(
                "Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."
            ),
            inner_code: Some(DELETED_BUT_RECOVERABLE.into()),
        }
    }

    pub fn is_deleted_but_recoverable(&self) -> bool {
        self.inner_code.as_deref() == Some(DELETED_BUT_RECOVERABLE)
    }

    /// 403 for a purge in a vault whose recovery level does not contain "Purgeable".
    pub fn purge_forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
        )
    }

    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(inner) = &self.inner_code {
            error["innererror"] = json!({ "code": inner });
        }
        json!({ "error": error })
    }

    pub fn to_response(&self) -> HttpResponse {
        json_response(self.status, &self.body())
    }
}

/// Serialises `value` as the JSON body of a response with `status`.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> HttpResponse {
    // Serialising our own model types cannot fail; fall back to an empty object anyway.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// A response without a body (e.g. 204 for a purge).
pub fn empty_response(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_error_has_inner_error() {
        let body = ApiError::deleted_but_recoverable("k1").body();
        assert_eq!(body["error"]["code"], "Conflict");
        assert_eq!(
            body["error"]["innererror"]["code"],
            "ObjectIsDeletedButRecoverable"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Key k1 is currently in a deleted but recoverable state")
        );
    }

    #[test]
    fn plain_error_has_no_inner_error() {
        let body = ApiError::bad_parameter("nope").body();
        assert_eq!(
            body,
            json!({"error": {"code": "BadParameter", "message": "nope"}})
        );
    }
}
