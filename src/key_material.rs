//! Parser for the private key material the operator imports into Key Vault.
//!
//! Users hand the operator a key through a Kubernetes Secret, in whatever shape
//! their tooling produced: a private JWK (JSON) or a PEM file (PKCS#8, PKCS#1 or
//! SEC1). Key Vault's import API only takes a private JWK, so this module turns
//! every accepted shape into one validated [`PrivateJwk`] and a stable
//! fingerprint the controller can put in status and compare across reconciles.
//!
//! Secrecy is the main design constraint: the input bytes and the private members
//! never reach `Debug`, `Display` or error messages (every error carries only
//! fixed text and numbers), and private buffers are wiped on drop.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use p256::elliptic_curve::subtle::ConstantTimeEq;
use rsa::pkcs8::ObjectIdentifier;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};
use serde::Deserialize;
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Largest accepted input. Real keys are a few KiB; the cap bounds parser and
/// big-number work on hostile Secrets before anything is decoded.
pub const MAX_INPUT_LEN: usize = 64 * 1024;

/// The API's curve type: the curves Key Vault can hold, as its JWKs name them.
pub use crate::api::Curve;

impl Curve {
    /// Maps a JWK `crv` value to a curve. Accepts RFC 8812's "secp256k1" as well
    /// as Key Vault's "P-256K" so JWKs from either world import.
    pub fn from_jwk_crv(crv: &str) -> Option<Curve> {
        match crv {
            "P-256" => Some(Curve::P256),
            "P-256K" | "secp256k1" => Some(Curve::P256K),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    /// Byte length of a coordinate (and of the private scalar) on this curve.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn from_oid(oid: ObjectIdentifier) -> Option<Curve> {
        match oid {
            OID_P256 => Some(Curve::P256),
            OID_SECP256K1 => Some(Curve::P256K),
            OID_P384 => Some(Curve::P384),
            OID_P521 => Some(Curve::P521),
            _ => None,
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of key the material holds; public information, safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaterialKind {
    /// RSA key whose modulus has `bits` bits.
    Rsa { bits: usize },
    /// EC key on `curve`.
    Ec { curve: Curve },
}

impl fmt::Display for MaterialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaterialKind::Rsa { bits } => write!(f, "RSA {bits}"),
            MaterialKind::Ec { curve } => write!(f, "EC {curve}"),
        }
    }
}

/// JWK key type of importable material (symmetric keys are never accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwkKty {
    Rsa,
    Ec,
}

impl JwkKty {
    /// The JWK `kty` value ("RSA" or "EC"); the importer picks the "-HSM" form.
    pub fn as_str(self) -> &'static str {
        match self {
            JwkKty::Rsa => "RSA",
            JwkKty::Ec => "EC",
        }
    }
}

/// A private key as JWK members, each as raw big-endian bytes (not base64).
///
/// RSA keys fill `n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi`; EC keys fill `crv`,
/// `x`, `y`, `d`. When produced by [`KeyMaterial::parse`]: `n` and `e` are
/// minimal (RFC 7518 Base64urlUInt), `d` is padded to the modulus length and the
/// CRT members to half of it, because strict importers (.NET `RSAParameters`)
/// insist on those fixed lengths; EC `x`, `y`, `d` have the curve's full length
/// as RFC 7518 requires. Private members are wiped on drop.
#[derive(Clone)]
pub struct PrivateJwk {
    pub kty: JwkKty,
    pub crv: Option<Curve>,
    pub n: Option<Vec<u8>>,
    pub e: Option<Vec<u8>>,
    pub d: Option<Zeroizing<Vec<u8>>>,
    pub p: Option<Zeroizing<Vec<u8>>>,
    pub q: Option<Zeroizing<Vec<u8>>>,
    pub dp: Option<Zeroizing<Vec<u8>>>,
    pub dq: Option<Zeroizing<Vec<u8>>>,
    pub qi: Option<Zeroizing<Vec<u8>>>,
    pub x: Option<Vec<u8>>,
    pub y: Option<Vec<u8>>,
}

impl PrivateJwk {
    /// RFC 7638 thumbprint of the public members, or `None` if they are missing.
    pub fn public_thumbprint(&self) -> Option<String> {
        match self.kty {
            JwkKty::Rsa => Some(rsa_jwk_thumbprint(self.n.as_deref()?, self.e.as_deref()?)),
            JwkKty::Ec => Some(ec_jwk_thumbprint(
                self.crv?,
                self.x.as_deref()?,
                self.y.as_deref()?,
            )),
        }
    }
}

impl fmt::Debug for PrivateJwk {
    /// Shows only public facts: the private members must never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.n.as_deref().map(bit_len);
        f.debug_struct("PrivateJwk")
            .field("kty", &self.kty)
            .field("crv", &self.crv)
            .field("bits", &bits)
            .field("thumbprint", &self.public_thumbprint())
            .finish_non_exhaustive()
    }
}

/// Parsed, validated private key material, ready to import.
///
/// `Debug` shows only the kind and the public thumbprint.
#[derive(Clone)]
pub struct KeyMaterial {
    jwk: PrivateJwk,
    kind: MaterialKind,
    thumbprint: String,
}

impl KeyMaterial {
    /// Parses a private JWK (JSON) or a PEM private key (PKCS#8, PKCS#1, SEC1),
    /// detected automatically, and checks that the key is consistent.
    pub fn parse(bytes: &[u8]) -> Result<KeyMaterial, MaterialError> {
        if bytes.len() > MAX_INPUT_LEN {
            return Err(MaterialError::TooLarge {
                len: bytes.len(),
                max: MAX_INPUT_LEN,
            });
        }
        let input = bytes
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(bytes)
            .trim_ascii();
        if input.is_empty() {
            return Err(MaterialError::Empty);
        }
        let jwk = if input[0] == b'{' {
            parse_jwk(input)?
        } else if contains(input, PEM_BEGIN.as_bytes()) {
            let text = std::str::from_utf8(input)
                .map_err(|_| MaterialError::InvalidPem("the PEM text is not valid UTF-8"))?;
            parse_pem(text)?
        } else {
            return Err(MaterialError::UnrecognizedFormat);
        };
        let (kind, thumbprint) = match jwk.kty {
            JwkKty::Rsa => {
                let n = jwk.n.as_deref().unwrap_or_default();
                let e = jwk.e.as_deref().unwrap_or_default();
                (
                    MaterialKind::Rsa { bits: bit_len(n) },
                    rsa_jwk_thumbprint(n, e),
                )
            }
            JwkKty::Ec => {
                let curve = jwk.crv.ok_or(MaterialError::MissingCurve)?;
                let x = jwk.x.as_deref().unwrap_or_default();
                let y = jwk.y.as_deref().unwrap_or_default();
                (MaterialKind::Ec { curve }, ec_jwk_thumbprint(curve, x, y))
            }
        };
        Ok(KeyMaterial {
            jwk,
            kind,
            thumbprint,
        })
    }

    /// Key type and size or curve.
    pub fn kind(&self) -> MaterialKind {
        self.kind
    }

    /// The private JWK members to send to Key Vault.
    pub fn jwk(&self) -> &PrivateJwk {
        &self.jwk
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of the public
    /// members; equal for every encoding of the same key.
    pub fn public_thumbprint(&self) -> String {
        self.thumbprint.clone()
    }

    /// `"sha256:" + thumbprint`, recorded in status to notice changed material.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", self.thumbprint)
    }
}

impl fmt::Debug for KeyMaterial {
    /// Shows only public facts: the private members must never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kind", &self.kind)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// RFC 7638 thumbprint of an RSA public key; leading zero bytes are ignored.
/// Public so the controller can fingerprint the key Key Vault returns.
pub fn rsa_jwk_thumbprint(n: &[u8], e: &[u8]) -> String {
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(uint_bytes(e)),
        URL_SAFE_NO_PAD.encode(uint_bytes(n)),
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// RFC 7638 thumbprint of an EC public key; coordinates are left-padded to the
/// curve's length as the RFC 7518 encoding requires.
pub fn ec_jwk_thumbprint(curve: Curve, x: &[u8], y: &[u8]) -> String {
    let len = curve.coordinate_len();
    let canonical = format!(
        r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
        curve.as_str(),
        URL_SAFE_NO_PAD.encode(left_pad(uint_bytes(x), len)),
        URL_SAFE_NO_PAD.encode(left_pad(uint_bytes(y), len)),
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Why key material was rejected. Messages are fixed text plus numbers and
/// never echo the input, so they are safe to put in events and status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaterialError {
    #[error("key material is empty")]
    Empty,
    #[error("key material is {len} bytes; the limit is {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error(
        "unrecognized key material format; expected a private JWK as JSON (kty RSA or EC) \
         or an unencrypted PEM private key: PKCS#8 (BEGIN PRIVATE KEY), PKCS#1 \
         (BEGIN RSA PRIVATE KEY) or SEC1 (BEGIN EC PRIVATE KEY)"
    )]
    UnrecognizedFormat,
    #[error("key material looks like JSON but is not valid JSON (line {line}, column {column})")]
    InvalidJson { line: usize, column: usize },
    #[error("invalid JWK: {0}")]
    InvalidJwk(&'static str),
    #[error("JWK is missing the required member \"{0}\"")]
    MissingMember(&'static str),
    #[error("JWK member \"{member}\" {problem}")]
    InvalidMember {
        member: &'static str,
        problem: &'static str,
    },
    #[error(
        "symmetric (oct) material is not supported for import; only RSA and EC private keys \
         can be imported"
    )]
    Symmetric,
    #[error("encrypted private keys are not supported; store the key unencrypted in the Secret")]
    Encrypted,
    #[error("key material contains only {0}; a private key is required for import")]
    PublicOnly(&'static str),
    #[error("invalid PEM: {0}")]
    InvalidPem(&'static str),
    #[error("malformed {0}: its DER structure could not be decoded")]
    InvalidDer(&'static str),
    #[error("unsupported key format: {0}")]
    UnsupportedFormat(&'static str),
    #[error(
        "unsupported key algorithm ({0}); only RSA and EC keys on P-256, P-256K, P-384 or P-521 \
         can be imported"
    )]
    UnsupportedAlgorithm(&'static str),
    #[error(
        "unsupported elliptic curve; Key Vault supports P-256, P-256K (secp256k1), P-384 and P-521"
    )]
    UnsupportedCurve,
    #[error("EC private key does not name its curve (explicit curve parameters are not supported)")]
    MissingCurve,
    #[error(
        "RSA key is {bits} bits; Key Vault imports RSA keys of {:?} bits",
        crate::keyvault_rules::RSA_KEY_SIZES
    )]
    RsaKeySize { bits: usize },
    #[error("RSA JWK must include the CRT parameters p, q, dp, dq, qi")]
    MissingCrtParameters,
    #[error("inconsistent RSA key: {0}")]
    InconsistentRsa(&'static str),
    #[error("inconsistent EC key: {0}")]
    InconsistentEc(&'static str),
    #[error("key material contains more than one private key; store exactly one")]
    MultiplePrivateKeys,
}

// ---------------------------------------------------------------------------
// JWK

/// Standard alphabet, padding optional: JWK members are normalized to it so
/// both base64url (RFC 7517) and Node's `Buffer` base64 (Azure's sample) work.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A JSON string member, wiped on drop because it may hold private material.
struct Member(Zeroizing<String>);

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| Member(Zeroizing::new(s)))
    }
}

/// The JWK members we read; anything else (`kid`, `use`, `alg`, ...) is ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<Member>,
    crv: Option<Member>,
    n: Option<Member>,
    e: Option<Member>,
    d: Option<Member>,
    p: Option<Member>,
    q: Option<Member>,
    dp: Option<Member>,
    dq: Option<Member>,
    qi: Option<Member>,
    x: Option<Member>,
    y: Option<Member>,
    k: Option<IgnoredAny>,
    oth: Option<IgnoredAny>,
    keys: Option<IgnoredAny>,
    key_hsm: Option<IgnoredAny>,
}

fn parse_jwk(input: &[u8]) -> Result<PrivateJwk, MaterialError> {
    // serde_json's own messages can quote input ("invalid type: string ..."),
    // so only its category and position survive.
    let raw: RawJwk = serde_json::from_slice(input).map_err(|err| match err.classify() {
        serde_json::error::Category::Data => MaterialError::InvalidJwk(
            "members must be JSON strings, each given once, in a single JSON object",
        ),
        _ => MaterialError::InvalidJson {
            line: err.line(),
            column: err.column(),
        },
    })?;
    if raw.keys.is_some() {
        return Err(MaterialError::InvalidJwk(
            "a JWK Set (\"keys\") was given; store a single private JWK",
        ));
    }
    if raw.key_hsm.is_some() {
        return Err(MaterialError::UnsupportedFormat(
            "HSM key transfer blobs (\"key_hsm\") are not supported; store the plain private JWK",
        ));
    }
    let kty = match raw.kty.as_ref().map(|m| m.0.as_str()) {
        Some("RSA" | "RSA-HSM") => JwkKty::Rsa,
        Some("EC" | "EC-HSM") => JwkKty::Ec,
        Some("oct" | "oct-HSM") => return Err(MaterialError::Symmetric),
        None if raw.k.is_some() => return Err(MaterialError::Symmetric),
        None => return Err(MaterialError::MissingMember("kty")),
        Some(_) => {
            return Err(MaterialError::InvalidJwk(
                "unsupported \"kty\"; expected RSA, RSA-HSM, EC or EC-HSM",
            ));
        }
    };
    match kty {
        JwkKty::Rsa => rsa_from_jwk(&raw),
        JwkKty::Ec => ec_from_jwk(&raw),
    }
}

fn rsa_from_jwk(raw: &RawJwk) -> Result<PrivateJwk, MaterialError> {
    if raw.oth.is_some() {
        return Err(MaterialError::UnsupportedAlgorithm(
            "multi-prime RSA (\"oth\")",
        ));
    }
    let d = decode_required(&raw.d, "d").map_err(|err| match err {
        MaterialError::MissingMember(_) => MaterialError::PublicOnly("a public JWK (no \"d\")"),
        other => other,
    })?;
    let n = decode_required(&raw.n, "n")?;
    let e = decode_required(&raw.e, "e")?;
    let p = decode_optional(&raw.p, "p")?;
    let q = decode_optional(&raw.q, "q")?;
    let dp = decode_optional(&raw.dp, "dp")?;
    let dq = decode_optional(&raw.dq, "dq")?;
    let qi = decode_optional(&raw.qi, "qi")?;
    rsa_material(RsaParts {
        n: &n,
        e: &e,
        d: &d,
        p: p.as_deref().map(Vec::as_slice),
        q: q.as_deref().map(Vec::as_slice),
        dp: dp.as_deref().map(Vec::as_slice),
        dq: dq.as_deref().map(Vec::as_slice),
        qi: qi.as_deref().map(Vec::as_slice),
    })
}

fn ec_from_jwk(raw: &RawJwk) -> Result<PrivateJwk, MaterialError> {
    let crv = raw
        .crv
        .as_ref()
        .ok_or(MaterialError::MissingMember("crv"))?;
    let curve = Curve::from_jwk_crv(&crv.0).ok_or(MaterialError::UnsupportedCurve)?;
    let d = decode_required(&raw.d, "d").map_err(|err| match err {
        MaterialError::MissingMember(_) => MaterialError::PublicOnly("a public JWK (no \"d\")"),
        other => other,
    })?;
    let x = decode_required(&raw.x, "x")?;
    let y = decode_required(&raw.y, "y")?;
    ec_material(curve, &d, PublicPoint::Affine { x: &x, y: &y })
}

fn decode_required(
    member: &Option<Member>,
    name: &'static str,
) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    decode_optional(member, name)?.ok_or(MaterialError::MissingMember(name))
}

/// Decodes base64url or base64, padded or not; never reports which character
/// was wrong, since that would quote private material.
fn decode_optional(
    member: &Option<Member>,
    name: &'static str,
) -> Result<Option<Zeroizing<Vec<u8>>>, MaterialError> {
    let Some(Member(value)) = member else {
        return Ok(None);
    };
    let trimmed = value.trim_end_matches('=');
    if trimmed.is_empty() {
        return Err(MaterialError::InvalidMember {
            member: name,
            problem: "is empty",
        });
    }
    let mut normalized = Zeroizing::new(String::with_capacity(trimmed.len()));
    normalized.extend(trimmed.chars().map(|c| match c {
        '-' => '+',
        '_' => '/',
        other => other,
    }));
    let decoded =
        B64_LENIENT
            .decode(normalized.as_bytes())
            .map_err(|_| MaterialError::InvalidMember {
                member: name,
                problem: "is not valid base64url",
            })?;
    Ok(Some(Zeroizing::new(decoded)))
}

// ---------------------------------------------------------------------------
// PEM

const PEM_BEGIN: &str = "-----BEGIN ";
const PEM_END: &str = "-----END ";
const PEM_DASHES: &str = "-----";

struct PemBlock<'a> {
    label: &'a str,
    content: &'a str,
}

/// Splits text into PEM blocks. Text between blocks is ignored (RFC 7468
/// allows explanatory text, and openssl writes "Bag Attributes" there).
fn pem_blocks(text: &str) -> Result<Vec<PemBlock<'_>>, MaterialError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let after_begin = &rest[start + PEM_BEGIN.len()..];
        let label_len = after_begin
            .find(PEM_DASHES)
            .ok_or(MaterialError::InvalidPem(
                "a BEGIN line is not closed by dashes",
            ))?;
        let label = &after_begin[..label_len];
        if label.is_empty()
            || !label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ')
        {
            return Err(MaterialError::InvalidPem(
                "a BEGIN line has a malformed label",
            ));
        }
        let body = &after_begin[label_len + PEM_DASHES.len()..];
        let end = body.find(PEM_END).ok_or(MaterialError::InvalidPem(
            "the PEM block is truncated: its END line is missing",
        ))?;
        let content = &body[..end];
        if content.contains(PEM_BEGIN) {
            return Err(MaterialError::InvalidPem(
                "a PEM block is truncated: a BEGIN line appears before its END line",
            ));
        }
        let after_end = &body[end + PEM_END.len()..];
        let end_label_len = after_end.find(PEM_DASHES).ok_or(MaterialError::InvalidPem(
            "an END line is not closed by dashes",
        ))?;
        if &after_end[..end_label_len] != label {
            return Err(MaterialError::InvalidPem(
                "an END line does not match its BEGIN line",
            ));
        }
        blocks.push(PemBlock { label, content });
        rest = &after_end[end_label_len + PEM_DASHES.len()..];
    }
    Ok(blocks)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PemPrivate {
    Pkcs8,
    Pkcs1,
    Sec1,
}

fn parse_pem(text: &str) -> Result<PrivateJwk, MaterialError> {
    let mut private: Option<(PemPrivate, &str)> = None;
    let mut public_only = None;
    for block in pem_blocks(text)? {
        let kind = match block.label {
            "PRIVATE KEY" => PemPrivate::Pkcs8,
            "RSA PRIVATE KEY" => PemPrivate::Pkcs1,
            "EC PRIVATE KEY" => PemPrivate::Sec1,
            "ENCRYPTED PRIVATE KEY" => return Err(MaterialError::Encrypted),
            "OPENSSH PRIVATE KEY" => {
                return Err(MaterialError::UnsupportedFormat(
                    "OpenSSH private keys are not supported; convert with \
                     `ssh-keygen -p -m PKCS8 -f <file>`",
                ));
            }
            "DSA PRIVATE KEY" => return Err(MaterialError::UnsupportedAlgorithm("DSA")),
            "CERTIFICATE" | "TRUSTED CERTIFICATE" | "X509 CERTIFICATE" => {
                public_only = Some("a certificate");
                continue;
            }
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                public_only = public_only.or(Some("a public key"));
                continue;
            }
            // EC PARAMETERS precede the key in `openssl ecparam -genkey` output;
            // other blocks (CRLs, requests) carry no key material for us.
            _ => continue,
        };
        if block.content.contains(':') {
            // RFC 1421 headers: "Proc-Type: 4,ENCRYPTED" / "DEK-Info: ...".
            if block.content.contains("ENCRYPTED") || block.content.contains("DEK-Info") {
                return Err(MaterialError::Encrypted);
            }
            return Err(MaterialError::InvalidPem(
                "a private key block has unsupported headers",
            ));
        }
        if private.is_some() {
            return Err(MaterialError::MultiplePrivateKeys);
        }
        private = Some((kind, block.content));
    }
    let Some((kind, content)) = private else {
        return Err(match public_only {
            Some(what) => MaterialError::PublicOnly(what),
            None => MaterialError::InvalidPem("no private key block found"),
        });
    };
    let der = pem_body(content)?;
    match kind {
        PemPrivate::Pkcs8 => parse_pkcs8(&der),
        PemPrivate::Pkcs1 => parse_pkcs1(&der),
        PemPrivate::Sec1 => parse_sec1(&der, None, None),
    }
}

/// Decodes a PEM body. Besides whitespace it drops literal `\n`/`\r`/`\t`
/// escapes, which appear when a PEM was pasted through a JSON or YAML string;
/// backslash is not in the base64 alphabet, so this cannot change a valid body.
fn pem_body(content: &str) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    let bytes = content.as_bytes();
    let mut compact = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b if b.is_ascii_whitespace() => {}
            b'\\' if matches!(bytes.get(i + 1), Some(b'n' | b'r' | b't')) => i += 1,
            b => compact.push(b),
        }
        i += 1;
    }
    if compact.is_empty() {
        return Err(MaterialError::InvalidPem("the private key block is empty"));
    }
    B64_LENIENT
        .decode(compact.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| MaterialError::InvalidPem("the private key block is not valid base64"))
}

// ---------------------------------------------------------------------------
// DER

const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const OID_X448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.111");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

fn parse_pkcs8(der: &[u8]) -> Result<PrivateJwk, MaterialError> {
    let info = rsa::pkcs8::PrivateKeyInfo::try_from(der)
        .map_err(|_| MaterialError::InvalidDer("PKCS#8 private key"))?;
    match info.algorithm.oid {
        OID_RSA_ENCRYPTION => parse_pkcs1(info.private_key),
        OID_EC_PUBLIC_KEY => {
            let curve_oid = info
                .algorithm
                .parameters_oid()
                .map_err(|_| MaterialError::MissingCurve)?;
            let curve = Curve::from_oid(curve_oid).ok_or(MaterialError::UnsupportedCurve)?;
            parse_sec1(info.private_key, Some(curve), info.public_key)
        }
        OID_RSASSA_PSS => Err(MaterialError::UnsupportedAlgorithm(
            "RSASSA-PSS-restricted RSA key; convert it to a plain rsaEncryption key",
        )),
        OID_ED25519 | OID_ED448 => Err(MaterialError::UnsupportedAlgorithm("EdDSA")),
        OID_X25519 | OID_X448 => Err(MaterialError::UnsupportedAlgorithm("X25519/X448")),
        OID_DSA => Err(MaterialError::UnsupportedAlgorithm("DSA")),
        _ => Err(MaterialError::UnsupportedAlgorithm(
            "unknown algorithm identifier",
        )),
    }
}

fn parse_pkcs1(der: &[u8]) -> Result<PrivateJwk, MaterialError> {
    let key = rsa::pkcs1::RsaPrivateKey::try_from(der)
        .map_err(|_| MaterialError::InvalidDer("PKCS#1 RSA private key"))?;
    if key.other_prime_infos.is_some() {
        return Err(MaterialError::UnsupportedAlgorithm("multi-prime RSA"));
    }
    rsa_material(RsaParts {
        n: key.modulus.as_bytes(),
        e: key.public_exponent.as_bytes(),
        d: key.private_exponent.as_bytes(),
        p: Some(key.prime1.as_bytes()),
        q: Some(key.prime2.as_bytes()),
        dp: Some(key.exponent1.as_bytes()),
        dq: Some(key.exponent2.as_bytes()),
        qi: Some(key.coefficient.as_bytes()),
    })
}

/// `outer_curve` and `outer_public` come from an enclosing PKCS#8 structure,
/// where the SEC1 key usually omits its own parameters.
fn parse_sec1(
    der: &[u8],
    outer_curve: Option<Curve>,
    outer_public: Option<&[u8]>,
) -> Result<PrivateJwk, MaterialError> {
    let key = sec1::EcPrivateKey::try_from(der)
        .map_err(|_| MaterialError::InvalidDer("SEC1 EC private key"))?;
    let inner_curve = match key.parameters {
        Some(params) => {
            let oid = params.named_curve().ok_or(MaterialError::MissingCurve)?;
            Some(Curve::from_oid(oid).ok_or(MaterialError::UnsupportedCurve)?)
        }
        None => None,
    };
    let curve = match (outer_curve, inner_curve) {
        (Some(outer), Some(inner)) if outer != inner => {
            return Err(MaterialError::InconsistentEc(
                "the PKCS#8 and SEC1 structures name different curves",
            ));
        }
        (Some(curve), _) | (None, Some(curve)) => curve,
        (None, None) => return Err(MaterialError::MissingCurve),
    };
    let public = match key.public_key.or(outer_public) {
        Some(point) => PublicPoint::Sec1(point),
        None => PublicPoint::Absent,
    };
    ec_material(curve, key.private_key, public)
}

// ---------------------------------------------------------------------------
// RSA

/// Big-endian RSA components as found in a JWK or PKCS#1 structure.
struct RsaParts<'a> {
    n: &'a [u8],
    e: &'a [u8],
    d: &'a [u8],
    p: Option<&'a [u8]>,
    q: Option<&'a [u8]>,
    dp: Option<&'a [u8]>,
    dq: Option<&'a [u8]>,
    qi: Option<&'a [u8]>,
}

/// Validates RSA components and completes the CRT members Key Vault requires.
fn rsa_material(parts: RsaParts<'_>) -> Result<PrivateJwk, MaterialError> {
    let n_bytes = uint_bytes(parts.n);
    let bits = bit_len(n_bytes);
    if !crate::keyvault_rules::rsa_size_ok(bits) {
        return Err(MaterialError::RsaKeySize { bits });
    }
    // Bound every component by the modulus so big-number work on crafted input stays cheap.
    let members = [
        ("e", Some(parts.e)),
        ("d", Some(parts.d)),
        ("p", parts.p),
        ("q", parts.q),
        ("dp", parts.dp),
        ("dq", parts.dq),
        ("qi", parts.qi),
    ];
    for (member, value) in members {
        if value.is_some_and(|v| uint_bytes(v).len() > n_bytes.len()) {
            return Err(MaterialError::InvalidMember {
                member,
                problem: "is larger than the modulus",
            });
        }
    }
    if parts.d.iter().all(|&b| b == 0) {
        return Err(MaterialError::InvalidMember {
            member: "d",
            problem: "is zero",
        });
    }
    let n = BigUint::from_bytes_be(n_bytes);
    let primes = match (parts.p, parts.q) {
        (Some(p), Some(q)) => vec![BigUint::from_bytes_be(p), BigUint::from_bytes_be(q)],
        (Some(known), None) | (None, Some(known)) => {
            let known = BigUint::from_bytes_be(known);
            if known <= BigUint::from(1u8) || !(&n % &known).eq(&BigUint::default()) {
                return Err(MaterialError::InconsistentRsa(
                    "the given prime does not divide the modulus",
                ));
            }
            let other = &n / &known;
            if parts.p.is_some() {
                vec![known, other]
            } else {
                vec![other, known]
            }
        }
        (None, None) => Vec::new(),
    };
    let recovering = primes.is_empty();
    let key = RsaPrivateKey::from_components(
        n,
        BigUint::from_bytes_be(parts.e),
        BigUint::from_bytes_be(parts.d),
        primes,
    )
    .map_err(|err| {
        if recovering {
            MaterialError::MissingCrtParameters
        } else {
            rsa_inconsistency(&err)
        }
    })?;
    key.validate().map_err(|err| rsa_inconsistency(&err))?;
    if key.primes().len() != 2 {
        return Err(MaterialError::UnsupportedAlgorithm("multi-prime RSA"));
    }
    let computed_dp = key.dp().map(|v| Zeroizing::new(v.to_bytes_be()));
    let computed_dq = key.dq().map(|v| Zeroizing::new(v.to_bytes_be()));
    let computed_qi = key
        .crt_coefficient()
        .map(|v| Zeroizing::new(v.to_bytes_be()));
    let (Some(dp), Some(dq), Some(qi)) = (computed_dp, computed_dq, computed_qi) else {
        return Err(MaterialError::InconsistentRsa(
            "the CRT parameters cannot be computed from p and q",
        ));
    };
    let checks = [
        (parts.dp, &dp, "dp is not d mod (p-1)"),
        (parts.dq, &dq, "dq is not d mod (q-1)"),
        (parts.qi, &qi, "qi is not the inverse of q mod p"),
    ];
    for (given, computed, problem) in checks {
        if let Some(given) = given
            && !bool::from(uint_bytes(given).ct_eq(uint_bytes(computed)))
        {
            return Err(MaterialError::InconsistentRsa(problem));
        }
    }
    let n_len = n_bytes.len();
    let half = n_len.div_ceil(2);
    let secret = |v: &BigUint, len: usize| left_pad_secret(Zeroizing::new(v.to_bytes_be()), len);
    Ok(PrivateJwk {
        kty: JwkKty::Rsa,
        crv: None,
        n: Some(key.n().to_bytes_be()),
        e: Some(key.e().to_bytes_be()),
        d: Some(secret(key.d(), n_len)),
        p: Some(secret(&key.primes()[0], half)),
        q: Some(secret(&key.primes()[1], half)),
        dp: Some(left_pad_secret(dp, half)),
        dq: Some(left_pad_secret(dq, half)),
        qi: Some(left_pad_secret(qi, half)),
        x: None,
        y: None,
    })
}

/// Maps `rsa` errors to fixed text (they carry none of the key, but this keeps
/// the messages ours and specific).
fn rsa_inconsistency(err: &rsa::Error) -> MaterialError {
    MaterialError::InconsistentRsa(match err {
        rsa::Error::InvalidModulus => "the modulus n is not p*q, is even, or is not larger than e",
        rsa::Error::InvalidExponent => "d is not the inverse of e modulo p-1 and q-1",
        rsa::Error::InvalidPrime | rsa::Error::NprimesTooSmall => "p or q is not a valid factor",
        rsa::Error::PublicExponentTooSmall | rsa::Error::PublicExponentTooLarge => {
            "the public exponent e is out of range"
        }
        rsa::Error::InvalidCoefficient => "the CRT coefficient is invalid",
        rsa::Error::ModulusTooLarge => "the modulus is too large",
        _ => "the components do not form a valid RSA key",
    })
}

// ---------------------------------------------------------------------------
// EC

/// The public point a key format carried, to be checked against `d·G`.
enum PublicPoint<'a> {
    Absent,
    Affine {
        x: &'a [u8],
        y: &'a [u8],
    },
    /// SEC1 encoding: 0x04 || x || y, or 0x02/0x03 || x.
    Sec1(&'a [u8]),
}

fn ec_material(
    curve: Curve,
    d: &[u8],
    public: PublicPoint<'_>,
) -> Result<PrivateJwk, MaterialError> {
    let len = curve.coordinate_len();
    let d_min = uint_bytes(d);
    if d_min.len() > len {
        return Err(MaterialError::InvalidMember {
            member: "d",
            problem: "is longer than the curve's private scalar",
        });
    }
    let d_full = left_pad_secret(Zeroizing::new(d_min.to_vec()), len);
    let (x, y) = ec::public_point(curve, &d_full).ok_or(MaterialError::InconsistentEc(
        "the private scalar d is zero or not below the curve order",
    ))?;
    let matches = match public {
        PublicPoint::Absent => true,
        PublicPoint::Affine {
            x: given_x,
            y: given_y,
        } => uint_bytes(given_x) == uint_bytes(&x) && uint_bytes(given_y) == uint_bytes(&y),
        PublicPoint::Sec1(point) => match point.split_first() {
            Some((0x04, xy)) if xy.len() == 2 * len => xy[..len] == x[..] && xy[len..] == y[..],
            Some((&tag @ (0x02 | 0x03), given_x)) if given_x.len() == len => {
                given_x == &x[..] && (tag & 1) == (y[len - 1] & 1)
            }
            _ => {
                return Err(MaterialError::InconsistentEc(
                    "the embedded public key is not a valid point encoding for the curve",
                ));
            }
        },
    };
    if !matches {
        return Err(MaterialError::InconsistentEc(
            "the public point (x, y) does not match the private scalar d",
        ));
    }
    Ok(PrivateJwk {
        kty: JwkKty::Ec,
        crv: Some(curve),
        n: None,
        e: None,
        d: Some(d_full),
        p: None,
        q: None,
        dp: None,
        dq: None,
        qi: None,
        x: Some(x),
        y: Some(y),
    })
}

/// Computes `d·G` with the curve crates' own constant-time arithmetic.
mod ec {
    use super::Curve;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    /// Returns the affine `(x, y)` of `d·G`, each `curve.coordinate_len()` bytes, or `None`
    /// unless `0 < d < n`. `d` is big-endian, exactly `coordinate_len()` bytes.
    pub(super) fn public_point(curve: Curve, d: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        // The uncompressed SEC1 encoding is 0x04 || x || y.
        let encoded = match curve {
            Curve::P256 => p256::SecretKey::from_slice(d)
                .ok()?
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Curve::P256K => k256::SecretKey::from_slice(d)
                .ok()?
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Curve::P384 => p384::SecretKey::from_slice(d)
                .ok()?
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Curve::P521 => p521::SecretKey::from_slice(d)
                .ok()?
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        };
        let len = curve.coordinate_len();
        if encoded.len() != 1 + 2 * len || encoded[0] != 0x04 {
            return None;
        }
        Some((encoded[1..=len].to_vec(), encoded[1 + len..].to_vec()))
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Strips leading zero bytes, keeping one byte for zero (RFC 7518 Base64urlUInt).
fn uint_bytes(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

fn bit_len(bytes: &[u8]) -> usize {
    let bytes = uint_bytes(bytes);
    match bytes.first() {
        Some(&first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn left_pad(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

fn left_pad_secret(bytes: Zeroizing<Vec<u8>>, len: usize) -> Zeroizing<Vec<u8>> {
    if bytes.len() >= len {
        return bytes;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.resize(len - bytes.len(), 0);
    out.extend_from_slice(&bytes);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/fixtures/key_material/", $name))
        };
    }

    const EXPECTED: &str = fixture!("expected.json");
    const AZURE_DOC_JWK: &str = fixture!("azure_doc_rsa.jwk.json");
    const RSA2048_PKCS1: &str = fixture!("rsa2048_pkcs1.pem");
    const RSA2048_PKCS8: &str = fixture!("rsa2048_pkcs8.pem");
    const RSA2048_JWK: &str = fixture!("rsa2048.jwk.json");
    const RSA2048_E3_PKCS8: &str = fixture!("rsa2048_e3_pkcs8.pem");
    const RSA2048_E3_JWK: &str = fixture!("rsa2048_e3.jwk.json");
    const EC_P256_SEC1: &str = fixture!("ec_p256_sec1.pem");
    const EC_P256_PKCS8: &str = fixture!("ec_p256_pkcs8.pem");
    const EC_P256_JWK: &str = fixture!("ec_p256.jwk.json");
    const EC_P384_JWK: &str = fixture!("ec_p384.jwk.json");
    const EC_P521_JWK: &str = fixture!("ec_p521.jwk.json");
    const EC_K256_JWK: &str = fixture!("ec_secp256k1.jwk.json");

    /// An accepted input, the expected.json entry describing its key, and that
    /// key's JWK fixture (the ground truth for private members).
    struct Accepted {
        name: &'static str,
        text: &'static str,
        expected: &'static str,
        jwk: &'static str,
    }

    const ACCEPTED: &[Accepted] = &[
        Accepted {
            name: "rsa2048_pkcs1.pem",
            text: RSA2048_PKCS1,
            expected: "rsa2048_pkcs1.pem",
            jwk: RSA2048_JWK,
        },
        Accepted {
            name: "rsa2048_pkcs8.pem",
            text: RSA2048_PKCS8,
            expected: "rsa2048_pkcs1.pem",
            jwk: RSA2048_JWK,
        },
        Accepted {
            name: "rsa2048.jwk.json",
            text: RSA2048_JWK,
            expected: "rsa2048_pkcs1.pem",
            jwk: RSA2048_JWK,
        },
        Accepted {
            name: "rsa2048_e3_pkcs8.pem",
            text: RSA2048_E3_PKCS8,
            expected: "rsa2048_e3_pkcs8.pem",
            jwk: RSA2048_E3_JWK,
        },
        Accepted {
            name: "rsa2048_e3.jwk.json",
            text: RSA2048_E3_JWK,
            expected: "rsa2048_e3_pkcs8.pem",
            jwk: RSA2048_E3_JWK,
        },
        Accepted {
            name: "rsa4096_pkcs8.pem",
            text: fixture!("rsa4096_pkcs8.pem"),
            expected: "rsa4096_pkcs8.pem",
            jwk: fixture!("rsa4096.jwk.json"),
        },
        Accepted {
            name: "rsa4096.jwk.json",
            text: fixture!("rsa4096.jwk.json"),
            expected: "rsa4096_pkcs8.pem",
            jwk: fixture!("rsa4096.jwk.json"),
        },
        Accepted {
            name: "ec_p256_sec1.pem",
            text: EC_P256_SEC1,
            expected: "ec_p256_sec1.pem",
            jwk: EC_P256_JWK,
        },
        Accepted {
            name: "ec_p256_pkcs8.pem",
            text: EC_P256_PKCS8,
            expected: "ec_p256_sec1.pem",
            jwk: EC_P256_JWK,
        },
        Accepted {
            name: "ec_p256.jwk.json",
            text: EC_P256_JWK,
            expected: "ec_p256_sec1.pem",
            jwk: EC_P256_JWK,
        },
        Accepted {
            name: "ec_p384_sec1.pem",
            text: fixture!("ec_p384_sec1.pem"),
            expected: "ec_p384_sec1.pem",
            jwk: EC_P384_JWK,
        },
        Accepted {
            name: "ec_p384_sec1_nopub.pem",
            text: fixture!("ec_p384_sec1_nopub.pem"),
            expected: "ec_p384_sec1.pem",
            jwk: EC_P384_JWK,
        },
        Accepted {
            name: "ec_p384_pkcs8.pem",
            text: fixture!("ec_p384_pkcs8.pem"),
            expected: "ec_p384_sec1.pem",
            jwk: EC_P384_JWK,
        },
        Accepted {
            name: "ec_p384.jwk.json",
            text: EC_P384_JWK,
            expected: "ec_p384_sec1.pem",
            jwk: EC_P384_JWK,
        },
        Accepted {
            name: "ec_p521_sec1.pem",
            text: fixture!("ec_p521_sec1.pem"),
            expected: "ec_p521_sec1.pem",
            jwk: EC_P521_JWK,
        },
        Accepted {
            name: "ec_p521_pkcs8.pem",
            text: fixture!("ec_p521_pkcs8.pem"),
            expected: "ec_p521_sec1.pem",
            jwk: EC_P521_JWK,
        },
        Accepted {
            name: "ec_p521.jwk.json",
            text: EC_P521_JWK,
            expected: "ec_p521_sec1.pem",
            jwk: EC_P521_JWK,
        },
        Accepted {
            name: "ec_secp256k1_sec1.pem",
            text: fixture!("ec_secp256k1_sec1.pem"),
            expected: "ec_secp256k1_sec1.pem",
            jwk: EC_K256_JWK,
        },
        Accepted {
            name: "ec_secp256k1_pkcs8.pem",
            text: fixture!("ec_secp256k1_pkcs8.pem"),
            expected: "ec_secp256k1_sec1.pem",
            jwk: EC_K256_JWK,
        },
        Accepted {
            name: "ec_secp256k1.jwk.json",
            text: EC_K256_JWK,
            expected: "ec_secp256k1_sec1.pem",
            jwk: EC_K256_JWK,
        },
    ];

    const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

    fn b64url(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn unb64url(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(text)
            .expect("fixture members are base64url")
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    fn member(jwk: &serde_json::Value, name: &str) -> Vec<u8> {
        unb64url(jwk[name].as_str().expect("member present"))
    }

    fn parse_ok(text: &str) -> KeyMaterial {
        match KeyMaterial::parse(text.as_bytes()) {
            Ok(material) => material,
            Err(err) => panic!("expected the key to parse, got: {err}"),
        }
    }

    fn parse_err(text: impl AsRef<[u8]>) -> MaterialError {
        match KeyMaterial::parse(text.as_ref()) {
            Ok(material) => panic!("expected an error, parsed {material:?}"),
            Err(err) => err,
        }
    }

    /// Everything that must never show up in output: the private members of a
    /// key in several encodings, and the base64 body lines of a PEM input.
    struct Secrets {
        strings: Vec<String>,
        raw: Vec<Vec<u8>>,
    }

    impl Secrets {
        fn of(jwk_text: &str, input: &str) -> Secrets {
            let jwk = json(jwk_text);
            let mut strings = Vec::new();
            let mut raw = Vec::new();
            for name in PRIVATE_MEMBERS {
                let Some(text) = jwk[name].as_str() else {
                    continue;
                };
                let bytes = unb64url(text);
                strings.push(text.to_owned());
                strings.push(STANDARD.encode(&bytes));
                strings.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
                raw.push(bytes);
            }
            if !input.trim_start().starts_with('{') {
                strings.extend(
                    input
                        .lines()
                        .filter(|line| !line.contains("-----") && line.len() >= 8)
                        .map(str::to_owned),
                );
            }
            Secrets { strings, raw }
        }

        fn add_material(&mut self, material: &KeyMaterial) {
            let jwk = material.jwk();
            for bytes in [&jwk.d, &jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi]
                .into_iter()
                .flatten()
            {
                self.strings.push(b64url(bytes));
                self.raw.push(bytes.to_vec());
            }
        }

        fn assert_absent(&self, what: &str, text: &str) {
            for secret in &self.strings {
                for window in secret.as_bytes().windows(8) {
                    let window = std::str::from_utf8(window).expect("ASCII");
                    assert!(!text.contains(window), "{what} leaks private material");
                }
            }
            for bytes in &self.raw {
                for window in bytes.windows(4) {
                    let listed = format!("{window:?}");
                    let listed = listed.trim_matches(|c| c == '[' || c == ']');
                    assert!(!text.contains(listed), "{what} leaks private bytes");
                }
            }
        }

        fn assert_result_clean(&self, what: &str, result: &Result<KeyMaterial, MaterialError>) {
            match result {
                Ok(material) => {
                    self.assert_absent(what, &format!("{material:?} {:?}", material.jwk()))
                }
                Err(err) => self.assert_absent(what, &format!("{err} {err:?}")),
            }
        }
    }

    /// Deliberately corrupted variants of an accepted input.
    fn corruptions(text: &str) -> Vec<String> {
        let mut out = vec![
            text[..text.len() / 2].to_owned(),
            text[..text.len() - 40].to_owned(),
        ];
        for fraction in [3, 4, 5, 7] {
            let at = text.len() * (fraction - 1) / fraction;
            let mut bytes = text.as_bytes().to_vec();
            for (i, b) in bytes[at..at + 6].iter_mut().enumerate() {
                if b.is_ascii_alphanumeric() {
                    *b = if *b == b'A' + i as u8 {
                        b'B' + i as u8
                    } else {
                        b'A' + i as u8
                    };
                }
            }
            out.push(String::from_utf8(bytes).expect("ASCII"));
        }
        let lines: Vec<&str> = text.lines().collect();
        for drop in [2, lines.len() / 2] {
            if drop < lines.len() {
                let kept: Vec<&str> = lines
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != drop)
                    .map(|(_, l)| *l)
                    .collect();
                out.push(kept.join("\n"));
            }
        }
        out.push(text.replacen('A', "!", 3));
        out.push(text.replacen('-', "*", 12));
        out
    }

    #[test]
    fn accepted_inputs_match_independent_expectations() {
        let expected = json(EXPECTED);
        for case in ACCEPTED {
            let material = parse_ok(case.text);
            let entry = &expected[case.expected];
            let truth = json(case.jwk);
            assert_eq!(
                material.public_thumbprint(),
                entry["thumbprint"].as_str().unwrap(),
                "{}",
                case.name
            );
            assert_eq!(
                material.fingerprint(),
                format!("sha256:{}", material.public_thumbprint())
            );
            let jwk = material.jwk();
            match entry["kind"].as_str().unwrap() {
                "rsa" => {
                    let bits = entry["bits"].as_u64().unwrap() as usize;
                    assert_eq!(material.kind(), MaterialKind::Rsa { bits }, "{}", case.name);
                    assert_eq!(jwk.kty, JwkKty::Rsa);
                    assert_eq!(jwk.crv, None);
                    assert_eq!(
                        jwk.n.as_deref().unwrap(),
                        member(&truth, "n"),
                        "{}",
                        case.name
                    );
                    assert_eq!(
                        jwk.e.as_deref().unwrap(),
                        member(&truth, "e"),
                        "{}",
                        case.name
                    );
                    let n_len = jwk.n.as_ref().unwrap().len();
                    assert_eq!(jwk.d.as_ref().unwrap().len(), n_len);
                    for (name, value) in [
                        ("d", &jwk.d),
                        ("p", &jwk.p),
                        ("q", &jwk.q),
                        ("dp", &jwk.dp),
                        ("dq", &jwk.dq),
                        ("qi", &jwk.qi),
                    ] {
                        let value = value.as_ref().unwrap();
                        assert_eq!(
                            uint_bytes(value),
                            member(&truth, name),
                            "{} {name}",
                            case.name
                        );
                        if name != "d" {
                            assert_eq!(value.len(), n_len / 2, "{} {name}", case.name);
                        }
                    }
                    assert!(jwk.x.is_none() && jwk.y.is_none());
                }
                "ec" => {
                    let curve = Curve::from_jwk_crv(entry["curve"].as_str().unwrap()).unwrap();
                    assert_eq!(material.kind(), MaterialKind::Ec { curve }, "{}", case.name);
                    assert_eq!(jwk.kty, JwkKty::Ec);
                    assert_eq!(jwk.crv, Some(curve));
                    for (name, value) in [("x", &jwk.x), ("y", &jwk.y)] {
                        assert_eq!(value.as_deref().unwrap(), member(&truth, name), "{name}");
                    }
                    assert_eq!(jwk.d.as_deref().unwrap().as_slice(), member(&truth, "d"));
                    assert!(jwk.n.is_none() && jwk.p.is_none() && jwk.qi.is_none());
                }
                other => panic!("unknown kind {other}"),
            }
        }
    }

    #[test]
    fn debug_output_and_errors_of_corrupted_inputs_never_leak() {
        for case in ACCEPTED {
            let material = parse_ok(case.text);
            let mut secrets = Secrets::of(case.jwk, case.text);
            secrets.add_material(&material);
            let debug = format!("{material:?} {:?} {material:#?}", material.jwk());
            assert!(debug.contains(&material.public_thumbprint()));
            secrets.assert_absent(case.name, &debug);
            let mut errors = 0;
            for corrupted in corruptions(case.text) {
                let result = KeyMaterial::parse(corrupted.as_bytes());
                errors += usize::from(result.is_err());
                secrets.assert_result_clean(case.name, &result);
            }
            assert!(
                errors >= 5,
                "{}: only {errors} corruptions were rejected",
                case.name
            );
        }
    }

    #[test]
    fn azure_doc_sample_jwk_is_a_consistent_rsa_2048_key() {
        let material = parse_ok(AZURE_DOC_JWK);
        assert_eq!(material.kind(), MaterialKind::Rsa { bits: 2048 });
        let jwk = material.jwk();
        let n = jwk.n.as_deref().unwrap();
        assert_eq!(n.len(), 256);
        assert_eq!(n[..8], [0xb1, 0x9f, 0x86, 0x28, 0x64, 0xfd, 0x89, 0xc8]);
        assert_eq!(jwk.e.as_deref().unwrap(), [1, 0, 1]);
        // Computed with python3 hashlib over {"e","kty","n"} of the sample.
        assert_eq!(
            material.public_thumbprint(),
            "aOP4f1f3L_JdfFj9fl_TZPakndXBeMlfC20Uxbp_MsI"
        );
        let truth = json(AZURE_DOC_JWK);
        for name in PRIVATE_MEMBERS {
            let value = [&jwk.d, &jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi]
                [PRIVATE_MEMBERS.iter().position(|m| *m == name).unwrap()];
            assert_eq!(
                value.as_deref().unwrap().as_slice(),
                member(&truth, name),
                "{name}"
            );
        }
        let key = RsaPrivateKey::from_components(
            BigUint::from_bytes_be(n),
            BigUint::from_bytes_be(jwk.e.as_deref().unwrap()),
            BigUint::from_bytes_be(jwk.d.as_deref().unwrap()),
            vec![
                BigUint::from_bytes_be(jwk.p.as_deref().unwrap()),
                BigUint::from_bytes_be(jwk.q.as_deref().unwrap()),
            ],
        )
        .unwrap();
        key.validate().unwrap();
        assert_eq!(key.size(), 256);
        let mut secrets = Secrets::of(AZURE_DOC_JWK, AZURE_DOC_JWK);
        secrets.add_material(&material);
        secrets.assert_absent("azure sample", &format!("{material:?}"));
    }

    #[test]
    fn azure_doc_sample_in_node_buffer_base64_form_is_accepted() {
        // Node's Buffer.from(.., "base64") output re-encoded as standard padded base64.
        let truth = json(AZURE_DOC_JWK);
        let mut jwk = serde_json::Map::new();
        for (name, value) in truth.as_object().unwrap() {
            let value = value.as_str().unwrap();
            let converted = if ["kty", "use", "alg"].contains(&name.as_str()) {
                value.to_owned()
            } else {
                STANDARD.encode(unb64url(value))
            };
            jwk.insert(name.clone(), converted.into());
        }
        let text = serde_json::Value::Object(jwk).to_string();
        assert!(text.contains('+') || text.contains('/'));
        assert!(text.contains('='));
        let material = parse_ok(&text);
        assert_eq!(
            material.public_thumbprint(),
            parse_ok(AZURE_DOC_JWK).public_thumbprint()
        );
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6\
                 tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ\
                 5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbIS\
                 D08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-k\
                 EgU8awapJzKnqDKgw";
        let expected = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        assert_eq!(
            rsa_jwk_thumbprint(&unb64url(n), &unb64url("AQAB")),
            expected
        );
        // Leading zero bytes do not change the thumbprint.
        let mut padded = vec![0, 0];
        padded.extend(unb64url(n));
        assert_eq!(rsa_jwk_thumbprint(&padded, &[0, 1, 0, 1]), expected);
        // The RFC's key is public, so it is refused as key material.
        let public =
            format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB","alg":"RS256","kid":"2011-04-29"}}"#);
        assert!(matches!(parse_err(public), MaterialError::PublicOnly(_)));
    }

    #[test]
    fn ec_thumbprint_pads_coordinates() {
        let truth = json(EC_P521_JWK);
        let (x, y) = (member(&truth, "x"), member(&truth, "y"));
        let expected = ec_jwk_thumbprint(Curve::P521, &x, &y);
        assert_eq!(
            ec_jwk_thumbprint(Curve::P521, uint_bytes(&x), uint_bytes(&y)),
            expected
        );
        assert_eq!(expected, parse_ok(EC_P521_JWK).public_thumbprint());
    }

    #[test]
    fn curve_names() {
        for (curve, name, len) in [
            (Curve::P256, "P-256", 32),
            (Curve::P256K, "P-256K", 32),
            (Curve::P384, "P-384", 48),
            (Curve::P521, "P-521", 66),
        ] {
            assert_eq!(curve.as_str(), name);
            assert_eq!(curve.to_string(), name);
            assert_eq!(Curve::from_jwk_crv(name), Some(curve));
            assert_eq!(curve.coordinate_len(), len);
        }
        assert_eq!(Curve::from_jwk_crv("secp256k1"), Some(Curve::P256K));
        assert_eq!(Curve::from_jwk_crv("P-192"), None);
        assert_eq!(MaterialKind::Rsa { bits: 2048 }.to_string(), "RSA 2048");
        assert_eq!(
            MaterialKind::Ec { curve: Curve::P384 }.to_string(),
            "EC P-384"
        );
    }

    #[test]
    fn scalar_multiplication_edge_cases() {
        for curve in [Curve::P256, Curve::P256K, Curve::P384, Curve::P521] {
            let len = curve.coordinate_len();
            assert!(
                ec::public_point(curve, &vec![0; len]).is_none(),
                "d = 0 is refused"
            );
            assert!(
                ec::public_point(curve, &vec![0xff; len]).is_none(),
                "d >= n is refused"
            );
            let (x, y) = ec::public_point(curve, &left_pad(&[1], len)).unwrap();
            assert_eq!((x.len(), y.len()), (len, len));
        }
        // d = 1 gives the generator; P-256's from FIPS 186-4.
        let (gx, _) = ec::public_point(Curve::P256, &left_pad(&[1], 32)).unwrap();
        assert_eq!(gx[..4], [0x6b, 0x17, 0xd1, 0xf2]);
    }

    #[test]
    fn rsa_jwk_crt_parameters_are_derived_when_possible() {
        let full = json(RSA2048_JWK);
        let reference = parse_ok(RSA2048_JWK);
        // Without dp/dq/qi: derived from p and q.
        let mut partial = full.clone();
        for name in ["dp", "dq", "qi"] {
            partial.as_object_mut().unwrap().remove(name);
        }
        let derived = parse_ok(&partial.to_string());
        assert_eq!(derived.jwk().qi, reference.jwk().qi);
        assert_eq!(derived.jwk().dp, reference.jwk().dp);
        // Without q: q = n / p.
        let mut only_p = partial.clone();
        only_p.as_object_mut().unwrap().remove("q");
        assert_eq!(parse_ok(&only_p.to_string()).jwk().q, reference.jwk().q);
        // Without any CRT member: p and q are recovered from n, e, d (e = 65537).
        let mut bare = partial.clone();
        for name in ["p", "q"] {
            bare.as_object_mut().unwrap().remove(name);
        }
        let recovered = parse_ok(&bare.to_string());
        let pair = |m: &KeyMaterial| {
            let mut pair = [
                m.jwk().p.as_ref().unwrap().to_vec(),
                m.jwk().q.as_ref().unwrap().to_vec(),
            ];
            pair.sort();
            pair
        };
        let (primes, expected) = (pair(&recovered), pair(&reference));
        assert_eq!(primes, expected);
        assert_eq!(recovered.public_thumbprint(), reference.public_thumbprint());
    }

    #[test]
    fn rsa_jwk_without_derivable_crt_parameters_is_rejected() {
        // With e = 3 the primes cannot be recovered from n, e, d.
        let mut bare = json(RSA2048_E3_JWK);
        for name in ["p", "q", "dp", "dq", "qi"] {
            bare.as_object_mut().unwrap().remove(name);
        }
        let err = parse_err(bare.to_string());
        assert_eq!(err, MaterialError::MissingCrtParameters);
        assert_eq!(
            err.to_string(),
            "RSA JWK must include the CRT parameters p, q, dp, dq, qi"
        );
        let mut secrets = Secrets::of(RSA2048_E3_JWK, RSA2048_E3_JWK);
        secrets.add_material(&parse_ok(RSA2048_E3_JWK));
        secrets.assert_absent("missing CRT error", &format!("{err} {err:?}"));
    }

    /// Replaces one JWK member and returns the parse error.
    fn jwk_with(base: &str, name: &str, value: Option<&str>) -> MaterialError {
        let mut jwk = json(base);
        let object = jwk.as_object_mut().unwrap();
        match value {
            Some(value) => object.insert(name.to_owned(), value.into()),
            None => object.remove(name),
        };
        let err = parse_err(jwk.to_string());
        let mut secrets = Secrets::of(base, base);
        if let Some(value) = value {
            secrets.strings.push(value.to_owned());
        }
        secrets.assert_absent(name, &format!("{err} {err:?}"));
        err
    }

    /// Changes one character in the middle of a base64url member.
    fn tweaked(base: &str, name: &str) -> String {
        let mut value = json(base)[name].as_str().unwrap().to_owned().into_bytes();
        let mid = value.len() / 2;
        value[mid] = if value[mid] == b'A' { b'B' } else { b'A' };
        String::from_utf8(value).unwrap()
    }

    #[test]
    fn rejects_inconsistent_rsa_jwks() {
        for name in ["d", "p", "q", "dp", "dq", "qi", "n"] {
            let err = jwk_with(RSA2048_JWK, name, Some(&tweaked(RSA2048_JWK, name)));
            assert!(
                matches!(
                    err,
                    MaterialError::InconsistentRsa(_) | MaterialError::RsaKeySize { .. }
                ),
                "{name}: {err}"
            );
        }
        let swapped_e = jwk_with(RSA2048_JWK, "e", Some("AQAD"));
        assert!(
            matches!(swapped_e, MaterialError::InconsistentRsa(_)),
            "{swapped_e}"
        );
        let zero_d = jwk_with(RSA2048_JWK, "d", Some("AAAA"));
        assert_eq!(
            zero_d,
            MaterialError::InvalidMember {
                member: "d",
                problem: "is zero"
            }
        );
        let mut long = vec![1u8; 300];
        long[0] = 0xff;
        let huge_d = jwk_with(RSA2048_JWK, "d", Some(&b64url(&long)));
        assert!(
            matches!(huge_d, MaterialError::InvalidMember { member: "d", .. }),
            "{huge_d}"
        );
    }

    #[test]
    fn rejects_jwk_problems() {
        let oct = parse_err(r#"{"kty":"oct","k":"GawgguFyGrWKav7AX4VKUg"}"#);
        assert_eq!(oct, MaterialError::Symmetric);
        assert_eq!(
            oct.to_string(),
            "symmetric (oct) material is not supported for import; only RSA and EC private keys can be imported"
        );
        assert_eq!(
            parse_err(r#"{"kty":"oct-HSM","k":"AAAA"}"#),
            MaterialError::Symmetric
        );
        assert_eq!(parse_err(r#"{"k":"AAAA"}"#), MaterialError::Symmetric);
        assert_eq!(
            parse_err(r#"{"n":"AAAA"}"#),
            MaterialError::MissingMember("kty")
        );
        assert!(matches!(
            parse_err(r#"{"kty":"OKP","crv":"Ed25519"}"#),
            MaterialError::InvalidJwk(_)
        ));
        assert!(matches!(
            parse_err(format!(r#"{{"keys":[{}]}}"#, RSA2048_JWK)),
            MaterialError::InvalidJwk(_)
        ));
        assert!(matches!(
            jwk_with(RSA2048_JWK, "key_hsm", Some("AAAA")),
            MaterialError::UnsupportedFormat(_)
        ));
        assert!(matches!(
            jwk_with(RSA2048_JWK, "oth", Some("x")),
            MaterialError::UnsupportedAlgorithm(_)
        ));
        // Missing members.
        assert!(matches!(
            jwk_with(RSA2048_JWK, "d", None),
            MaterialError::PublicOnly(_)
        ));
        assert!(matches!(
            jwk_with(EC_P256_JWK, "d", None),
            MaterialError::PublicOnly(_)
        ));
        assert_eq!(
            jwk_with(RSA2048_JWK, "n", None),
            MaterialError::MissingMember("n")
        );
        assert_eq!(
            jwk_with(RSA2048_JWK, "e", None),
            MaterialError::MissingMember("e")
        );
        assert_eq!(
            jwk_with(EC_P256_JWK, "crv", None),
            MaterialError::MissingMember("crv")
        );
        assert_eq!(
            jwk_with(EC_P256_JWK, "x", None),
            MaterialError::MissingMember("x")
        );
        assert_eq!(
            jwk_with(EC_P256_JWK, "y", None),
            MaterialError::MissingMember("y")
        );
        // Bad base64 in private members; the message names the member, not the text.
        for (base, name) in [(RSA2048_JWK, "d"), (RSA2048_JWK, "q"), (EC_P256_JWK, "d")] {
            let mut bad = json(base)[name].as_str().unwrap().to_owned();
            bad.insert_str(10, "!*");
            let err = jwk_with(base, name, Some(&bad));
            assert!(
                matches!(
                    err,
                    MaterialError::InvalidMember {
                        problem: "is not valid base64url",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(!err.to_string().contains("!*"));
        }
        assert!(matches!(
            jwk_with(EC_P256_JWK, "x", Some("")),
            MaterialError::InvalidMember { member: "x", .. }
        ));
        // Wrong JSON types and broken JSON.
        let typed = parse_err(r#"{"kty":"RSA","n":12345678901234567890}"#);
        assert!(matches!(typed, MaterialError::InvalidJwk(_)), "{typed}");
        assert!(!typed.to_string().contains("12345678"));
        let dup = parse_err(r#"{"kty":"EC","d":"secretvalue1","d":"secretvalue2"}"#);
        assert!(!dup.to_string().contains("secretva"), "{dup}");
        let broken = parse_err(&RSA2048_JWK[..RSA2048_JWK.len() - 20]);
        assert!(
            matches!(broken, MaterialError::InvalidJson { .. }),
            "{broken}"
        );
        let syntax = parse_err(r#"{"kty":"RSA","d":"topsecretmaterial" "n":"x"}"#);
        assert!(
            matches!(syntax, MaterialError::InvalidJson { line: 1, .. }),
            "{syntax}"
        );
        assert!(!syntax.to_string().contains("topsecre"));
        // HSM key types import as their plain counterparts.
        let mut hsm = json(EC_P256_JWK);
        hsm["kty"] = "EC-HSM".into();
        assert_eq!(parse_ok(&hsm.to_string()).jwk().kty, JwkKty::Ec);
        let mut hsm = json(RSA2048_JWK);
        hsm["kty"] = "RSA-HSM".into();
        hsm["key_ops"] = serde_json::json!(["sign", "verify"]);
        hsm["kid"] = "https://example.vault.azure.net/keys/k/1".into();
        assert_eq!(parse_ok(&hsm.to_string()).jwk().kty, JwkKty::Rsa);
    }

    #[test]
    fn rejects_inconsistent_ec_jwks() {
        for (base, other) in [(EC_P256_JWK, EC_K256_JWK), (EC_P384_JWK, EC_P256_JWK)] {
            for name in ["x", "y"] {
                let err = jwk_with(base, name, Some(&tweaked(base, name)));
                assert!(matches!(err, MaterialError::InconsistentEc(_)), "{err}");
            }
            let err = jwk_with(base, "d", Some(&tweaked(base, "d")));
            assert!(matches!(err, MaterialError::InconsistentEc(_)), "{err}");
            // The public point of another key.
            let mut mixed = json(base);
            mixed["x"] = json(other)["x"].clone();
            mixed["y"] = json(other)["y"].clone();
            let err = parse_err(mixed.to_string());
            assert!(matches!(err, MaterialError::InconsistentEc(_)), "{err}");
        }
        // x and y swapped.
        let mut swapped = json(EC_P521_JWK);
        let x = swapped["x"].clone();
        swapped["x"] = swapped["y"].clone();
        swapped["y"] = x;
        assert!(matches!(
            parse_err(swapped.to_string()),
            MaterialError::InconsistentEc(_)
        ));
        // d = 0, d = n (P-256 order), and a d longer than the curve allows.
        let zero = b64url(&[0; 32]);
        assert!(matches!(
            jwk_with(EC_P256_JWK, "d", Some(&zero)),
            MaterialError::InconsistentEc(_)
        ));
        // The P-256 group order n (FIPS 186-4).
        let order: Vec<u8> = (0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"
                        [2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect();
        assert!(matches!(
            jwk_with(EC_P256_JWK, "d", Some(&b64url(&order))),
            MaterialError::InconsistentEc(_)
        ));
        let long = b64url(&[7; 33]);
        assert!(matches!(
            jwk_with(EC_P256_JWK, "d", Some(&long)),
            MaterialError::InvalidMember { member: "d", .. }
        ));
        // Unknown and mismatched curves.
        assert_eq!(
            jwk_with(EC_P256_JWK, "crv", Some("P-192")),
            MaterialError::UnsupportedCurve
        );
        assert_eq!(
            jwk_with(EC_P256_JWK, "crv", Some("Ed25519")),
            MaterialError::UnsupportedCurve
        );
        assert!(matches!(
            jwk_with(EC_P256_JWK, "crv", Some("P-256K")),
            MaterialError::InconsistentEc(_)
        ));
        // secp256k1 under its RFC 8812 name.
        let mut k = json(EC_K256_JWK);
        k["crv"] = "secp256k1".into();
        assert_eq!(
            parse_ok(&k.to_string()).kind(),
            MaterialKind::Ec {
                curve: Curve::P256K
            }
        );
    }

    #[test]
    fn rejects_pem_problems() {
        let encrypted = parse_err(fixture!("rsa2048_encrypted_pkcs8.pem"));
        assert_eq!(encrypted, MaterialError::Encrypted);
        assert_eq!(
            encrypted.to_string(),
            "encrypted private keys are not supported; store the key unencrypted in the Secret"
        );
        assert_eq!(
            parse_err(fixture!("rsa2048_encrypted_legacy.pem")),
            MaterialError::Encrypted
        );
        for public in [
            fixture!("rsa2048_public.pem"),
            fixture!("ec_p256_public.pem"),
        ] {
            let err = parse_err(public);
            assert_eq!(err, MaterialError::PublicOnly("a public key"));
            assert!(err.to_string().contains("a private key is required"));
        }
        assert_eq!(
            parse_err(fixture!("ec_p256_cert.pem")),
            MaterialError::PublicOnly("a certificate")
        );
        let small = parse_err(fixture!("rsa1024_pkcs1.pem"));
        assert_eq!(small, MaterialError::RsaKeySize { bits: 1024 });
        assert!(small.to_string().contains("1024"));
        for unknown in [
            fixture!("ec_secp224r1_sec1.pem"),
            fixture!("ec_secp224r1_pkcs8.pem"),
            fixture!("ec_brainpool_pkcs8.pem"),
        ] {
            assert_eq!(parse_err(unknown), MaterialError::UnsupportedCurve);
        }
        assert!(matches!(
            parse_err(fixture!("ec_p256_explicit.pem")),
            MaterialError::InvalidDer(_)
        ));
        assert_eq!(
            parse_err(fixture!("ed25519_pkcs8.pem")),
            MaterialError::UnsupportedAlgorithm("EdDSA")
        );
        // Truncated: END line missing, or a BEGIN line cut short.
        for cut in [RSA2048_PKCS8.len() / 2, RSA2048_PKCS8.len() - 10, 15] {
            let err = parse_err(&RSA2048_PKCS8[..cut]);
            assert!(matches!(err, MaterialError::InvalidPem(_)), "{err}");
        }
        // Body lines lost: the DER no longer decodes.
        let lines: Vec<&str> = RSA2048_PKCS1.lines().collect();
        let short = [&lines[..5], &lines[lines.len() - 1..]].concat().join("\n");
        assert!(matches!(parse_err(short), MaterialError::InvalidDer(_)));
        let bad_body = RSA2048_PKCS1.replacen('M', "*", 1);
        assert!(matches!(parse_err(bad_body), MaterialError::InvalidPem(_)));
        let mismatched =
            RSA2048_PKCS1.replace("-----END RSA PRIVATE KEY-----", "-----END PRIVATE KEY-----");
        assert!(matches!(
            parse_err(mismatched),
            MaterialError::InvalidPem(_)
        ));
        let empty = parse_err("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n");
        assert!(matches!(empty, MaterialError::InvalidPem(_)));
        let two = format!("{RSA2048_PKCS8}{EC_P256_PKCS8}");
        assert_eq!(parse_err(two), MaterialError::MultiplePrivateKeys);
        // A PKCS#8 label around PKCS#1 content, and vice versa.
        let relabeled = RSA2048_PKCS1.replace("RSA PRIVATE KEY", "PRIVATE KEY");
        assert!(matches!(parse_err(relabeled), MaterialError::InvalidDer(_)));
        let relabeled = EC_P256_PKCS8.replace("PRIVATE KEY", "EC PRIVATE KEY");
        assert!(matches!(parse_err(relabeled), MaterialError::InvalidDer(_)));
        let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(matches!(
            parse_err(ssh),
            MaterialError::UnsupportedFormat(_)
        ));
        let dsa =
            "-----BEGIN DSA PRIVATE KEY-----\nMIIBuwIBAAKBgQ\n-----END DSA PRIVATE KEY-----\n";
        assert_eq!(parse_err(dsa), MaterialError::UnsupportedAlgorithm("DSA"));
        let other = "-----BEGIN X509 CRL-----\nMIIBuwIBAAKBgQ\n-----END X509 CRL-----\n";
        assert!(matches!(parse_err(other), MaterialError::InvalidPem(_)));
        let headers = RSA2048_PKCS1.replacen("KEY-----\n", "KEY-----\nComment: hello\n\n", 1);
        assert!(matches!(parse_err(headers), MaterialError::InvalidPem(_)));
    }

    #[test]
    fn pem_layout_variations_are_accepted() {
        let expected = parse_ok(EC_P256_PKCS8).public_thumbprint();
        let variants = [
            // Key bundled with its certificate, cert first.
            format!("{}{}", fixture!("ec_p256_cert.pem"), EC_P256_PKCS8),
            // Explanatory text around the block, CRLF line endings.
            format!(
                "Bag Attributes\r\n    localKeyID: 01\r\n{}",
                EC_P256_PKCS8.replace('\n', "\r\n")
            ),
            // Newlines lost (pasted into a single-line field).
            EC_P256_PKCS8.replace('\n', " "),
            // Literal \n escapes from a JSON/YAML string.
            EC_P256_PKCS8.replace('\n', "\\n"),
            // Leading byte-order mark and surrounding whitespace.
            format!("\u{feff}\n\n  {EC_P256_PKCS8}  \n\t"),
        ];
        for variant in variants {
            assert_eq!(parse_ok(&variant).public_thumbprint(), expected);
        }
    }

    #[test]
    fn rejects_empty_oversized_and_unrecognized_input() {
        assert_eq!(parse_err(""), MaterialError::Empty);
        assert_eq!(parse_err(" \n\t\r\n "), MaterialError::Empty);
        let too_large = vec![b' '; MAX_INPUT_LEN + 1];
        assert_eq!(
            parse_err(&too_large),
            MaterialError::TooLarge {
                len: MAX_INPUT_LEN + 1,
                max: MAX_INPUT_LEN
            }
        );
        // Exactly at the limit is fine.
        let mut at_limit = EC_P256_JWK.as_bytes().to_vec();
        at_limit.resize(MAX_INPUT_LEN, b'\n');
        parse_ok(std::str::from_utf8(&at_limit).unwrap());
        // Binary garbage, raw DER, base64 without armor, arrays.
        let unrecognized = MaterialError::UnrecognizedFormat;
        assert_eq!(
            parse_err([0x30, 0x82, 0x04, 0xa4, 0x02, 0x01, 0x00]),
            unrecognized
        );
        assert_eq!(parse_err([0xff, 0x00, 0xfe, 0x7f, 0x80]), unrecognized);
        assert_eq!(parse_err("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), unrecognized);
        assert_eq!(parse_err("[1,2,3]"), unrecognized);
        let message = unrecognized.to_string();
        for format in ["JWK", "PKCS#8", "PKCS#1", "SEC1"] {
            assert!(message.contains(format), "{message}");
        }
        let non_utf8 = [
            b"-----BEGIN PRIVATE KEY-----\n".as_slice(),
            &[0xff, 0xfe],
            b"\n",
        ]
        .concat();
        assert!(matches!(parse_err(non_utf8), MaterialError::InvalidPem(_)));
    }

    fn arbitrary_jwk() -> impl Strategy<Value = String> {
        let kty = prop::sample::select(vec!["RSA", "EC", "oct", "RSA-HSM", "EC-HSM", "OKP", ""]);
        let crv = prop::sample::select(vec!["P-256", "P-384", "P-521", "P-256K", "secp256k1", "X"]);
        let value = prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| b64url(&b));
        let names = prop::sample::subsequence(
            vec!["n", "e", "d", "p", "q", "dp", "dq", "qi", "x", "y", "k"],
            0..=11,
        );
        (kty, crv, names, prop::collection::vec(value, 11)).prop_map(|(kty, crv, names, values)| {
            let mut jwk = serde_json::Map::new();
            jwk.insert("kty".into(), kty.into());
            jwk.insert("crv".into(), crv.into());
            for (name, value) in names.into_iter().zip(values) {
                jwk.insert(name.into(), value.into());
            }
            serde_json::Value::Object(jwk).to_string()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = KeyMaterial::parse(&bytes);
        }

        #[test]
        fn arbitrary_pem_bodies_never_panic(
            label in prop::sample::select(vec!["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]),
            body in prop::collection::vec(any::<u8>(), 0..1500),
        ) {
            let pem = format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", STANDARD.encode(&body));
            let _ = KeyMaterial::parse(pem.as_bytes());
        }

        #[test]
        fn json_ish_strings_never_panic(text in "[{}\\[\\]\":,a-zA-Z0-9_=+/ \\-]{0,300}") {
            let _ = KeyMaterial::parse(text.as_bytes());
            let _ = KeyMaterial::parse(format!("{{{text}}}").as_bytes());
        }

        #[test]
        fn arbitrary_jwks_never_panic_or_echo_members(jwk in arbitrary_jwk()) {
            if let Err(err) = KeyMaterial::parse(jwk.as_bytes()) {
                let members = json(&jwk);
                let values: Vec<String> = members
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(name, _)| !["kty", "crv"].contains(&name.as_str()))
                    .map(|(_, v)| v.as_str().unwrap().to_owned())
                    .collect();
                let secrets = Secrets { strings: values, raw: Vec::new() };
                secrets.assert_absent("arbitrary JWK error", &format!("{err} {err:?}"));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn mutated_valid_inputs_never_panic_or_leak(
            case in 0..ACCEPTED.len(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
            truncate in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let case = &ACCEPTED[case];
            let mut bytes = case.text.as_bytes().to_vec();
            for (at, mask) in flips {
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
            }
            if let Some(at) = truncate {
                bytes.truncate(at.index(bytes.len()));
            }
            let result = KeyMaterial::parse(&bytes);
            let secrets = Secrets::of(case.jwk, case.text);
            secrets.assert_result_clean(case.name, &result);
        }
    }
}
