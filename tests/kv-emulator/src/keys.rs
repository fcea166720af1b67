//! Key types, key generation (aws-lc-rs) and JSON Web Key import/export.
//!
//! Private material is kept only as an opaque blob that is never serialised,
//! logged or echoed in error messages.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;

use crate::error::ApiError;
// Key Vault's sizes, from the operator's table of its rules (one source for both).
use crate::keyvault_rules::{OCT_KEY_SIZES, RSA_KEY_SIZES};
use crate::model::JsonWebKeyIn;

/// Every key operation the REST API knows.
pub const KNOWN_OPS: [&str; 8] = [
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kty {
    Rsa,
    RsaHsm,
    Ec,
    EcHsm,
    OctHsm,
}

impl Kty {
    pub fn parse(s: &str) -> Result<Kty, ApiError> {
        match s {
            "RSA" => Ok(Kty::Rsa),
            "RSA-HSM" => Ok(Kty::RsaHsm),
            "EC" => Ok(Kty::Ec),
            "EC-HSM" => Ok(Kty::EcHsm),
            "oct-HSM" => Ok(Kty::OctHsm),
            "oct" => Err(ApiError::bad_parameter(
                "Key type 'oct' is not supported; symmetric keys must be created as 'oct-HSM'.",
            )),
            other => Err(ApiError::bad_parameter(format!(
                "Invalid kty '{other}'. Supported key types are RSA, RSA-HSM, EC, EC-HSM and oct-HSM."
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kty::Rsa => "RSA",
            Kty::RsaHsm => "RSA-HSM",
            Kty::Ec => "EC",
            Kty::EcHsm => "EC-HSM",
            Kty::OctHsm => "oct-HSM",
        }
    }

    /// Operations Key Vault grants when a create request has no `key_ops`.
    pub fn default_ops(self) -> Vec<String> {
        let ops: &[&str] = match self {
            Kty::Rsa | Kty::RsaHsm => &[
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ],
            Kty::Ec | Kty::EcHsm => &["sign", "verify"],
            Kty::OctHsm => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
        };
        ops.iter().map(|s| s.to_string()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P256K,
    P384,
    P521,
}

impl Curve {
    pub fn parse(s: &str) -> Result<Curve, ApiError> {
        match s {
            "P-256" => Ok(Curve::P256),
            "P-256K" => Ok(Curve::P256K),
            "P-384" => Ok(Curve::P384),
            "P-521" => Ok(Curve::P521),
            other => Err(ApiError::bad_parameter(format!(
                "Invalid curve name '{other}'. Supported curves are P-256, P-256K, P-384 and P-521."
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P256K => "P-256K",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// Length in bytes of a coordinate / private scalar.
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn algorithm(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P256K => &sig::ECDSA_P256K1_SHA256_ASN1_SIGNING,
            Curve::P384 => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
            Curve::P521 => &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        }
    }
}

/// What a rotation needs to produce a new key "like" the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyShape {
    Rsa { bits: u32 },
    Ec { curve: Curve },
    Oct { bits: u32 },
}

impl KeyShape {
    /// Resolves `kty` + `key_size` + `crv` of a create request into a shape,
    /// applying Key Vault's defaults (RSA 2048, P-256, oct-HSM 256).
    pub fn for_create(
        kty: Kty,
        key_size: Option<i64>,
        crv: Option<&str>,
    ) -> Result<KeyShape, ApiError> {
        match kty {
            Kty::Rsa | Kty::RsaHsm => {
                if crv.is_some() {
                    return Err(ApiError::bad_parameter(format!(
                        "The parameter 'crv' is not valid for key type {}.",
                        kty.as_str()
                    )));
                }
                match key_size.unwrap_or(2048) {
                    size if RSA_KEY_SIZES.iter().any(|s| i64::from(*s) == size) => {
                        Ok(KeyShape::Rsa { bits: size as u32 })
                    }
                    other => Err(ApiError::bad_parameter(format!(
                        "Invalid key size {other} for key type {}. Supported sizes are {RSA_KEY_SIZES:?}.",
                        kty.as_str()
                    ))),
                }
            }
            Kty::Ec | Kty::EcHsm => {
                if key_size.is_some() {
                    return Err(ApiError::bad_parameter(format!(
                        "The parameter 'key_size' is not valid for key type {}; use 'crv' to choose the curve.",
                        kty.as_str()
                    )));
                }
                let curve = Curve::parse(crv.unwrap_or("P-256"))?;
                Ok(KeyShape::Ec { curve })
            }
            Kty::OctHsm => {
                if crv.is_some() {
                    return Err(ApiError::bad_parameter(
                        "The parameter 'crv' is not valid for key type oct-HSM.",
                    ));
                }
                match key_size.unwrap_or(256) {
                    size if OCT_KEY_SIZES.iter().any(|s| i64::from(*s) == size) => {
                        Ok(KeyShape::Oct { bits: size as u32 })
                    }
                    other => Err(ApiError::bad_parameter(format!(
                        "Invalid key size {other} for key type oct-HSM. Supported sizes are {OCT_KEY_SIZES:?}."
                    ))),
                }
            }
        }
    }
}

/// Opaque private key material. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateMaterial(Vec<u8>);

impl fmt::Debug for PrivateMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateMaterial(<redacted>)")
    }
}

/// Public JWK members of a key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// Symmetric keys have no public part.
    Oct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    pub public: PublicKey,
    #[allow(dead_code)] // held like the service holds it; no crypto operation is emulated
    private: PrivateMaterial,
}

impl KeyMaterial {
    /// Public members as `(n, e, crv, x, y)` base64url strings.
    pub fn public_members(&self) -> PublicMembers {
        let b64 = |v: &Vec<u8>| Some(URL_SAFE_NO_PAD.encode(v));
        match &self.public {
            PublicKey::Rsa { n, e } => PublicMembers {
                n: b64(n),
                e: b64(e),
                ..PublicMembers::default()
            },
            PublicKey::Ec { curve, x, y } => PublicMembers {
                crv: Some(curve.as_str()),
                x: b64(x),
                y: b64(y),
                ..PublicMembers::default()
            },
            PublicKey::Oct => PublicMembers::default(),
        }
    }

    /// Cheap material for unit tests of the store.
    #[cfg(test)]
    pub fn test_oct() -> KeyMaterial {
        KeyMaterial {
            public: PublicKey::Oct,
            private: PrivateMaterial(vec![0; 32]),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublicMembers {
    pub n: Option<String>,
    pub e: Option<String>,
    pub crv: Option<&'static str>,
    pub x: Option<String>,
    pub y: Option<String>,
}

fn internal(what: &str) -> ApiError {
    ApiError::new(
        hyper::StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("Key generation failed ({what})."),
    )
}

/// Generates new key material of `shape`. CPU bound: call it off the async runtime.
pub fn generate(shape: KeyShape) -> Result<KeyMaterial, ApiError> {
    match shape {
        KeyShape::Rsa { bits } => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                _ => {
                    return Err(ApiError::bad_parameter(format!(
                        "Unsupported RSA key size {bits}."
                    )));
                }
            };
            let pair = RsaKeyPair::generate(size).map_err(|_| internal("RSA"))?;
            let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            let der: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| internal("RSA encoding"))?;
            Ok(KeyMaterial {
                public: PublicKey::Rsa {
                    n: components.n,
                    e: components.e,
                },
                private: PrivateMaterial(der.as_ref().to_vec()),
            })
        }
        KeyShape::Ec { curve } => {
            let pair = EcdsaKeyPair::generate(curve.algorithm()).map_err(|_| internal("EC"))?;
            let (x, y) = split_point(curve, pair.public_key().as_ref())?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| internal("EC encoding"))?;
            Ok(KeyMaterial {
                public: PublicKey::Ec { curve, x, y },
                private: PrivateMaterial(pkcs8.as_ref().to_vec()),
            })
        }
        KeyShape::Oct { bits } => {
            let mut k = vec![0u8; (bits / 8) as usize];
            rand::rng().fill_bytes(&mut k);
            Ok(KeyMaterial {
                public: PublicKey::Oct,
                private: PrivateMaterial(k),
            })
        }
    }
}

/// Splits an uncompressed SEC1 point `04 || X || Y`.
fn split_point(curve: Curve, point: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    let len = curve.coordinate_len();
    if point.len() != 1 + 2 * len || point[0] != 4 {
        return Err(internal("EC point"));
    }
    Ok((point[1..1 + len].to_vec(), point[1 + len..].to_vec()))
}

/// The outcome of a successful import.
#[derive(Debug)]
pub struct ImportedKey {
    pub kty: Kty,
    pub shape: KeyShape,
    pub material: KeyMaterial,
}

/// Decodes a base64url JWK member without ever echoing its value.
fn decode_member(name: &str, value: &Option<String>) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let cleaned: String = value
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    match URL_SAFE_NO_PAD.decode(cleaned) {
        Ok(bytes) if !bytes.is_empty() => Ok(Some(bytes)),
        _ => Err(ApiError::bad_parameter(format!(
            "The JSON Web Key member '{name}' is not valid base64url-encoded data."
        ))),
    }
}

fn require(name: &str, value: Option<Vec<u8>>, kty: &str) -> Result<Vec<u8>, ApiError> {
    value.ok_or_else(|| {
        ApiError::bad_parameter(format!(
            "The JSON Web Key of type {kty} to import is missing the '{name}' member (private key material is required)."
        ))
    })
}

fn strip_leading_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[first..]
}

fn bit_len(v: &[u8]) -> u32 {
    let v = strip_leading_zeros(v);
    match v.first() {
        None => 0,
        Some(b) => (v.len() as u32 - 1) * 8 + (8 - b.leading_zeros()),
    }
}

/// Validates an import request's JWK and turns it into stored material.
pub fn import(jwk: &JsonWebKeyIn, hsm: bool) -> Result<ImportedKey, ApiError> {
    let kty = jwk
        .kty
        .as_deref()
        .ok_or_else(|| ApiError::bad_parameter("The JSON Web Key to import has no 'kty'."))?;
    if jwk.t.is_some() {
        return Err(ApiError::bad_parameter(
            "Bring-your-own-key imports ('key_hsm') are not supported by the emulator.",
        ));
    }
    match kty {
        "RSA" | "RSA-HSM" => import_rsa(jwk, hsm || kty == "RSA-HSM"),
        "EC" | "EC-HSM" => import_ec(jwk, hsm || kty == "EC-HSM"),
        "oct" | "oct-HSM" => import_oct(jwk),
        other => Err(ApiError::bad_parameter(format!(
            "Invalid kty '{other}' for import. Supported key types are RSA, RSA-HSM, EC, EC-HSM, oct and oct-HSM."
        ))),
    }
}

fn import_rsa(jwk: &JsonWebKeyIn, hsm: bool) -> Result<ImportedKey, ApiError> {
    let n = require("n", decode_member("n", &jwk.n)?, "RSA")?;
    let e = require("e", decode_member("e", &jwk.e)?, "RSA")?;
    let d = require("d", decode_member("d", &jwk.d)?, "RSA")?;
    let bits = bit_len(&n);
    if !crate::keyvault_rules::rsa_size_ok(bits as usize) {
        return Err(ApiError::bad_parameter(format!(
            "The RSA key to import has a {bits}-bit modulus; supported sizes are {RSA_KEY_SIZES:?}."
        )));
    }
    if bit_len(&d) > bits || bit_len(&e) > bits {
        return Err(ApiError::bad_parameter(
            "The RSA key to import is inconsistent: 'd' or 'e' is larger than the modulus.",
        ));
    }
    let crt: Vec<Option<Vec<u8>>> = vec![
        decode_member("p", &jwk.p)?,
        decode_member("q", &jwk.q)?,
        decode_member("dp", &jwk.dp)?,
        decode_member("dq", &jwk.dq)?,
        decode_member("qi", &jwk.qi)?,
    ];
    let private = if crt.iter().all(Option::is_none) {
        // Only n, e, d: keep them as given.
        let mut blob = Vec::new();
        for part in [&n, &e, &d] {
            blob.extend_from_slice(&der_unsigned_integer(part));
        }
        der_sequence(&blob)
    } else {
        if crt.iter().any(Option::is_none) {
            return Err(ApiError::bad_parameter(
                "The RSA key to import has only some of the CRT members; give all of p, q, dp, dq and qi, or none.",
            ));
        }
        let crt: Vec<Vec<u8>> = crt.into_iter().flatten().collect();
        let der = rsa_private_key_der(&n, &e, &d, &crt);
        RsaKeyPair::from_der(&der).map_err(|_| {
            ApiError::bad_parameter("The RSA key to import is not a consistent RSA private key.")
        })?;
        der
    };
    Ok(ImportedKey {
        kty: if hsm { Kty::RsaHsm } else { Kty::Rsa },
        shape: KeyShape::Rsa { bits },
        material: KeyMaterial {
            public: PublicKey::Rsa {
                n: strip_leading_zeros(&n).to_vec(),
                e: strip_leading_zeros(&e).to_vec(),
            },
            private: PrivateMaterial(private),
        },
    })
}

fn import_ec(jwk: &JsonWebKeyIn, hsm: bool) -> Result<ImportedKey, ApiError> {
    let crv = jwk
        .crv
        .as_deref()
        .ok_or_else(|| ApiError::bad_parameter("The EC key to import has no 'crv'."))?;
    let curve = Curve::parse(crv)?;
    let len = curve.coordinate_len();
    let fixed = |name: &str, value: Vec<u8>| -> Result<Vec<u8>, ApiError> {
        if value.len() > len {
            return Err(ApiError::bad_parameter(format!(
                "The EC key member '{name}' is longer than {len} bytes, the size for curve {}.",
                curve.as_str()
            )));
        }
        let mut out = vec![0u8; len - value.len()];
        out.extend_from_slice(&value);
        Ok(out)
    };
    let x = fixed("x", require("x", decode_member("x", &jwk.x)?, "EC")?)?;
    let y = fixed("y", require("y", decode_member("y", &jwk.y)?, "EC")?)?;
    let d = fixed("d", require("d", decode_member("d", &jwk.d)?, "EC")?)?;
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let pair = EcdsaKeyPair::from_private_key_and_public_key(curve.algorithm(), &d, &point)
        .map_err(|_| {
            ApiError::bad_parameter(format!(
                "The EC key to import is not a consistent {} private key (d does not match x/y).",
                curve.as_str()
            ))
        })?;
    let pkcs8 = pair.to_pkcs8v1().map_err(|_| internal("EC encoding"))?;
    Ok(ImportedKey {
        kty: if hsm { Kty::EcHsm } else { Kty::Ec },
        shape: KeyShape::Ec { curve },
        material: KeyMaterial {
            public: PublicKey::Ec { curve, x, y },
            private: PrivateMaterial(pkcs8.as_ref().to_vec()),
        },
    })
}

fn import_oct(jwk: &JsonWebKeyIn) -> Result<ImportedKey, ApiError> {
    let k = require("k", decode_member("k", &jwk.k)?, "oct")?;
    let bits = (k.len() * 8) as u32;
    if !crate::keyvault_rules::oct_size_ok(bits as usize) {
        return Err(ApiError::bad_parameter(format!(
            "The symmetric key to import is {bits} bits long; supported sizes are {OCT_KEY_SIZES:?}."
        )));
    }
    Ok(ImportedKey {
        kty: Kty::OctHsm,
        shape: KeyShape::Oct { bits },
        material: KeyMaterial {
            public: PublicKey::Oct,
            private: PrivateMaterial(k),
        },
    })
}

// ------------------------------------------------------------ tiny DER writer

fn der_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn der_unsigned_integer(value: &[u8]) -> Vec<u8> {
    let mut content = strip_leading_zeros(value).to_vec();
    if content.first().is_none_or(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    let mut out = vec![0x02];
    out.extend(der_length(content.len()));
    out.extend(content);
    out
}

fn der_sequence(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x30];
    out.extend(der_length(content.len()));
    out.extend_from_slice(content);
    out
}

/// RFC 8017 `RSAPrivateKey` (version 0) from its components; `crt` is
/// `[p, q, dp, dq, qi]`.
fn rsa_private_key_der(n: &[u8], e: &[u8], d: &[u8], crt: &[Vec<u8>]) -> Vec<u8> {
    let mut content = der_unsigned_integer(&[0]);
    for part in [n, e, d].into_iter().chain(crt.iter().map(Vec::as_slice)) {
        content.extend(der_unsigned_integer(part));
    }
    der_sequence(&content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_shapes_follow_key_vault_defaults_and_rules() {
        assert_eq!(
            KeyShape::for_create(Kty::Rsa, None, None).unwrap(),
            KeyShape::Rsa { bits: 2048 }
        );
        assert_eq!(
            KeyShape::for_create(Kty::RsaHsm, Some(4096), None).unwrap(),
            KeyShape::Rsa { bits: 4096 }
        );
        assert!(KeyShape::for_create(Kty::Rsa, Some(1024), None).is_err());
        assert!(KeyShape::for_create(Kty::Rsa, None, Some("P-256")).is_err());
        assert_eq!(
            KeyShape::for_create(Kty::Ec, None, None).unwrap(),
            KeyShape::Ec { curve: Curve::P256 }
        );
        assert!(KeyShape::for_create(Kty::Ec, Some(256), None).is_err());
        assert!(KeyShape::for_create(Kty::EcHsm, None, Some("P-999")).is_err());
        assert_eq!(
            KeyShape::for_create(Kty::OctHsm, None, None).unwrap(),
            KeyShape::Oct { bits: 256 }
        );
        assert!(KeyShape::for_create(Kty::OctHsm, Some(512), None).is_err());
        assert!(Kty::parse("oct").is_err());
        assert!(Kty::parse("rsa").is_err());
    }

    #[test]
    fn generates_every_curve_and_oct() {
        for curve in [Curve::P256, Curve::P256K, Curve::P384, Curve::P521] {
            let m = generate(KeyShape::Ec { curve }).unwrap();
            match m.public {
                PublicKey::Ec { x, y, .. } => {
                    assert_eq!(x.len(), curve.coordinate_len());
                    assert_eq!(y.len(), curve.coordinate_len());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let m = generate(KeyShape::Oct { bits: 192 }).unwrap();
        assert_eq!(m.private.0.len(), 24);
        assert_eq!(m.public_members(), PublicMembers::default());
    }

    #[test]
    fn generated_rsa_round_trips_through_import() {
        let m = generate(KeyShape::Rsa { bits: 2048 }).unwrap();
        let PublicKey::Rsa { n, e } = &m.public else {
            panic!("not RSA")
        };
        assert_eq!(bit_len(n), 2048);
        assert_eq!(e, &vec![1, 0, 1]);
        // A JWK missing the private exponent is refused without echoing anything.
        let jwk = JsonWebKeyIn {
            kty: Some("RSA".into()),
            n: Some(URL_SAFE_NO_PAD.encode(n)),
            e: Some(URL_SAFE_NO_PAD.encode(e)),
            ..JsonWebKeyIn::default()
        };
        let err = import(&jwk, false).unwrap_err();
        assert!(err.message.contains("'d'"));
        assert!(!err.message.contains(&URL_SAFE_NO_PAD.encode(n)[..16]));
    }

    #[test]
    fn ec_import_checks_consistency() {
        let m = generate(KeyShape::Ec { curve: Curve::P256 }).unwrap();
        let PublicKey::Ec { x, y, .. } = &m.public else {
            panic!("not EC")
        };
        // d must match (x, y): a random scalar does not.
        let jwk = JsonWebKeyIn {
            kty: Some("EC".into()),
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(x)),
            y: Some(URL_SAFE_NO_PAD.encode(y)),
            d: Some(URL_SAFE_NO_PAD.encode([7u8; 32])),
            ..JsonWebKeyIn::default()
        };
        assert!(import(&jwk, false).is_err());
        let no_crv = JsonWebKeyIn { crv: None, ..jwk };
        assert!(import(&no_crv, true).is_err());
    }

    #[test]
    fn oct_import_checks_length_and_base64() {
        let ok = JsonWebKeyIn {
            kty: Some("oct".into()),
            k: Some(URL_SAFE_NO_PAD.encode([1u8; 16])),
            ..JsonWebKeyIn::default()
        };
        let imported = import(&ok, false).unwrap();
        assert_eq!(imported.kty, Kty::OctHsm);
        assert_eq!(imported.shape, KeyShape::Oct { bits: 128 });
        let bad = JsonWebKeyIn {
            kty: Some("oct".into()),
            k: Some("!!not base64!!".into()),
            ..JsonWebKeyIn::default()
        };
        let err = import(&bad, false).unwrap_err();
        assert!(!err.message.contains("not base64"));
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der_unsigned_integer(&[0, 0, 5]), vec![2, 1, 5]);
        assert_eq!(der_unsigned_integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(der_unsigned_integer(&[]), vec![2, 1, 0]);
        assert_eq!(der_length(0x1234), vec![0x82, 0x12, 0x34]);
    }
}
