//! A minimal Azure AD (Entra ID) for workload identity federation, and who may use which
//! vault.
//!
//! - The token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client-assertion grant) verifies
//!   the assertion as Entra ID verifies a Kubernetes service-account token: RS256 signature by
//!   the API server's service-account key (`--sa-public-key`), issuer (`--sa-issuer`),
//!   audience `api://AzureADTokenExchange`, not expired, and a federated credential
//!   registered (admin `POST /identities`) for that issuer and subject on the client id. It
//!   answers an access token naming the client id, valid for the federation's lifetime.
//! - A vault request bearing such a token acts as that client id, and only on the vaults its
//!   federation grants (403 `ForbiddenByRbac` naming the caller otherwise); an expired or
//!   unknown issued token gets 401. Any other bearer token is the "static" caller (the fixed
//!   token the tests give the operator), allowed everywhere as before.
//! - Who asked is counted per vault and key (`GET /identities`: `callers`), and every exchange with its
//!   outcome (`exchanges`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};

pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Prefix of the access tokens this endpoint issues.
const ISSUED_PREFIX: &str = "kvemu.";
/// The caller of a bearer token this endpoint did not issue.
pub const STATIC_CALLER: &str = "static";

/// A federated credential: the service account `subject` of `issuer` may act as `client_id`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Federation {
    pub tenant_id: String,
    pub client_id: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// Vault names this client id may use.
    #[serde(default)]
    pub vaults: BTreeSet<String>,
    /// Lifetime of the access tokens issued (default 3600 s).
    #[serde(default = "default_lifetime")]
    pub token_lifetime_seconds: u64,
}

fn default_lifetime() -> u64 {
    3600
}

#[derive(Debug)]
struct Issued {
    client_id: String,
    expires_at: u64,
}

#[derive(Debug, Default)]
struct State {
    federations: Vec<Federation>,
    issued: HashMap<String, Issued>,
    /// (client id, outcome) -> count.
    exchanges: BTreeMap<(String, String), u64>,
    /// (vault, key or "", caller) -> count.
    callers: BTreeMap<(String, String, String), u64>,
}

/// The service-account key and issuer the token endpoint trusts.
#[derive(Debug, Clone)]
pub struct Trust {
    /// SubjectPublicKeyInfo DER of the API server's service-account signing key.
    pub public_key_der: Vec<u8>,
    pub issuer: String,
}

#[derive(Debug, Default)]
pub struct Identities {
    trust: Option<Trust>,
    state: Mutex<State>,
}

/// A refused exchange, as Entra ID answers it (`error`, `error_description`, `error_codes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

/// What a vault request's bearer token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A token this endpoint did not issue (the tests' fixed token): allowed everywhere.
    Static,
    /// An issued token, for a vault its federation grants.
    Granted(String),
    /// An issued token, for a vault its federation does not grant.
    NotGranted(String),
    /// An issued token that expired, or one never issued with the prefix.
    Expired,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads a PEM public key (`-----BEGIN PUBLIC KEY-----`) into DER.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("public key PEM: {e}"))
}

impl Identities {
    pub fn new(trust: Option<Trust>) -> Identities {
        Identities {
            trust,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a federated credential (replacing one for the same client id and subject).
    pub fn add(&self, federation: Federation) {
        let mut state = self.lock();
        state
            .federations
            .retain(|f| !(f.client_id == federation.client_id && f.subject == federation.subject));
        state.federations.push(federation);
    }

    /// The client-assertion grant. `form` is the urlencoded body.
    pub fn exchange(&self, tenant: &str, form: &[u8]) -> Result<Value, Refusal> {
        let params: HashMap<String, String> = form_urlencoded::parse(form)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let client_id = params.get("client_id").cloned().unwrap_or_default();
        let result = self.verify(tenant, &client_id, &params);
        let outcome = match &result {
            Ok(_) => "issued".to_owned(),
            Err(r) => format!("AADSTS{}", r.code),
        };
        *self
            .lock()
            .exchanges
            .entry((client_id.clone(), outcome))
            .or_default() += 1;
        let lifetime = result?;
        let token = format!(
            "{ISSUED_PREFIX}{}",
            (0..4)
                .map(|_| format!("{:016x}", rand::random::<u64>()))
                .collect::<String>()
        );
        self.lock().issued.insert(
            token.clone(),
            Issued {
                client_id,
                expires_at: now() + lifetime,
            },
        );
        Ok(json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }))
    }

    /// Checks the grant and the assertion; answers the lifetime of the token to issue.
    fn verify(
        &self,
        tenant: &str,
        client_id: &str,
        params: &HashMap<String, String>,
    ) -> Result<u64, Refusal> {
        let refuse = |status, error, code, description: String| Refusal {
            status,
            error,
            code,
            description,
        };
        if params.get("grant_type").map(String::as_str) != Some("client_credentials")
            || params.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE)
        {
            return Err(refuse(
                400,
                "invalid_request",
                900144,
                "AADSTS900144: expected grant_type client_credentials with a jwt-bearer client assertion.".into(),
            ));
        }
        let Some(trust) = &self.trust else {
            return Err(refuse(
                400,
                "invalid_client",
                700211,
                "AADSTS700211: no service-account issuer is trusted (kv-emulator started without --sa-public-key).".into(),
            ));
        };
        let assertion = params
            .get("client_assertion")
            .map(String::as_str)
            .unwrap_or("");
        let claims = verify_jwt(assertion, &trust.public_key_der).map_err(|why| {
            refuse(
                401,
                "invalid_client",
                700027,
                format!("AADSTS700027: Client assertion failed signature validation: {why}."),
            )
        })?;
        let issuer = claims["iss"].as_str().unwrap_or_default();
        let subject = claims["sub"].as_str().unwrap_or_default();
        let audiences: Vec<&str> = match &claims["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if claims["exp"].as_u64().is_none_or(|exp| exp <= now()) {
            return Err(refuse(
                400,
                "invalid_client",
                700024,
                "AADSTS700024: Client assertion is not within its valid time range.".into(),
            ));
        }
        if issuer != trust.issuer || !audiences.contains(&EXCHANGE_AUDIENCE) {
            return Err(refuse(
                400,
                "invalid_client",
                700212,
                format!(
                    "AADSTS700212: No matching federated identity record found for presented assertion audience {audiences:?} issuer '{issuer}'."
                ),
            ));
        }
        let state = self.lock();
        let for_client: Vec<&Federation> = state
            .federations
            .iter()
            .filter(|f| f.client_id == client_id && f.tenant_id == tenant)
            .collect();
        if for_client.is_empty() {
            return Err(refuse(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                ),
            ));
        }
        for_client
            .iter()
            .find(|f| f.subject == subject)
            .map(|f| f.token_lifetime_seconds)
            .ok_or_else(|| {
                refuse(
                    400,
                    "invalid_client",
                    70021,
                    format!(
                        "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{EXCHANGE_AUDIENCE}'."
                    ),
                )
            })
    }

    /// Who a vault request's bearer token is, for `vault` (and the key its path names);
    /// counted.
    pub fn caller(&self, vault: &str, key: Option<&str>, token: &str) -> Caller {
        let mut state = self.lock();
        let caller = if !token.starts_with(ISSUED_PREFIX) {
            Caller::Static
        } else {
            match state.issued.get(token) {
                Some(issued) if issued.expires_at > now() => {
                    let granted = state
                        .federations
                        .iter()
                        .any(|f| f.client_id == issued.client_id && f.vaults.contains(vault));
                    if granted {
                        Caller::Granted(issued.client_id.clone())
                    } else {
                        Caller::NotGranted(issued.client_id.clone())
                    }
                }
                _ => Caller::Expired,
            }
        };
        let name = match &caller {
            Caller::Static => STATIC_CALLER.to_owned(),
            Caller::Granted(c) | Caller::NotGranted(c) => c.clone(),
            Caller::Expired => "expired".to_owned(),
        };
        *state
            .callers
            .entry((vault.to_owned(), key.unwrap_or_default().to_owned(), name))
            .or_default() += 1;
        caller
    }

    pub fn snapshot(&self) -> Value {
        let state = self.lock();
        let exchanges: Vec<Value> = state
            .exchanges
            .iter()
            .map(|((client, outcome), n)| json!({"clientId": client, "outcome": outcome, "count": n}))
            .collect();
        let callers: Vec<Value> = state
            .callers
            .iter()
            .map(|((vault, key, caller), n)| {
                json!({"vault": vault, "key": key, "caller": caller, "count": n})
            })
            .collect();
        json!({"exchanges": exchanges, "callers": callers, "federations": state.federations.len()})
    }
}

/// Verifies an RS256 JWT's signature with an RSA public key (SubjectPublicKeyInfo DER) and
/// answers its claims. Time and audience are the caller's to check.
pub fn verify_jwt(token: &str, public_key_der: &[u8]) -> Result<Value, String> {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWS compact token".into());
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| format!("{what} is not base64url"))
    };
    let header: Value = serde_json::from_slice(&decode(header, "the header")?)
        .map_err(|_| "the header is not JSON".to_owned())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {} is not RS256", header["alg"]));
    }
    let signed_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key_der)
        .verify(
            &token.as_bytes()[..signed_len],
            &decode(signature, "the signature")?,
        )
        .map_err(|_| "the signature does not verify with the service-account key".to_owned())?;
    serde_json::from_slice(&decode(payload, "the payload")?)
        .map_err(|_| "the payload is not JSON".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    const SUBJECT: &str = "system:serviceaccount:team-a:kv";

    fn key() -> RsaKeyPair {
        RsaKeyPair::generate(KeySize::Rsa2048).unwrap()
    }

    fn spki(key: &RsaKeyPair) -> Vec<u8> {
        use aws_lc_rs::encoding::AsDer;
        key.public_key().as_der().unwrap().as_ref().to_vec()
    }

    fn jwt(key: &RsaKeyPair, claims: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn claims(sub: &str, aud: &str, exp: u64) -> Value {
        json!({"iss": ISSUER, "sub": sub, "aud": [aud], "exp": exp})
    }

    fn form(client: &str, assertion: &str) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", client)
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_assertion", assertion)
            .append_pair("scope", "https://vault.azure.net/.default")
            .finish()
            .into_bytes()
    }

    fn identities(key: &RsaKeyPair) -> Identities {
        let ids = Identities::new(Some(Trust {
            public_key_der: spki(key),
            issuer: ISSUER.into(),
        }));
        ids.add(Federation {
            tenant_id: "t".into(),
            client_id: "client-a".into(),
            subject: SUBJECT.into(),
            vaults: ["default".to_owned()].into(),
            token_lifetime_seconds: 600,
        });
        ids
    }

    #[test]
    fn a_federated_service_account_token_is_exchanged_and_its_grants_hold() {
        let key = key();
        let ids = identities(&key);
        let answer = ids
            .exchange(
                "t",
                &form(
                    "client-a",
                    &jwt(&key, claims(SUBJECT, EXCHANGE_AUDIENCE, now() + 600)),
                ),
            )
            .expect("issued");
        assert_eq!(answer["expires_in"], 600);
        let token = answer["access_token"].as_str().unwrap();
        assert_eq!(
            ids.caller("default", Some("k"), token),
            Caller::Granted("client-a".into())
        );
        assert_eq!(
            ids.caller("purgeable", Some("k"), token),
            Caller::NotGranted("client-a".into())
        );
        assert_eq!(ids.caller("default", None, "e2e-test"), Caller::Static);
        assert_eq!(
            ids.caller("default", Some("k"), "kvemu.forged"),
            Caller::Expired
        );
        let snap = ids.snapshot();
        assert_eq!(snap["exchanges"][0]["outcome"], "issued");
        assert_eq!(snap["callers"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn every_broken_assertion_is_refused_with_entra_ids_code() {
        let key = key();
        let other = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let ids = identities(&key);
        let later = now() + 600;
        let cases = [
            (
                "client-a",
                jwt(&other, claims(SUBJECT, EXCHANGE_AUDIENCE, later)),
                700027,
            ),
            (
                "client-a",
                jwt(&key, claims(SUBJECT, "api://other", later)),
                700212,
            ),
            (
                "client-a",
                jwt(&key, claims(SUBJECT, EXCHANGE_AUDIENCE, now() - 1)),
                700024,
            ),
            (
                "client-a",
                jwt(
                    &key,
                    claims("system:serviceaccount:team-b:kv", EXCHANGE_AUDIENCE, later),
                ),
                70021,
            ),
            (
                "client-x",
                jwt(&key, claims(SUBJECT, EXCHANGE_AUDIENCE, later)),
                700016,
            ),
            ("client-a", "not.a.jwt".to_owned(), 700027),
        ];
        for (client, assertion, code) in cases {
            let refusal = ids.exchange("t", &form(client, &assertion)).unwrap_err();
            assert_eq!(refusal.code, code, "{}", refusal.description);
            assert!(refusal.description.starts_with(&format!("AADSTS{code}")));
        }
        // Another tenant does not know the client.
        let good = jwt(&key, claims(SUBJECT, EXCHANGE_AUDIENCE, later));
        assert_eq!(
            ids.exchange("t2", &form("client-a", &good))
                .unwrap_err()
                .code,
            700016
        );
    }
}
