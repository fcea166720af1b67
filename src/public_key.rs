//! The public half of a key version in the two standard shapes consumers take: a JWK
//! (RFC 7517/7518, `kid` = the versioned key id) and a PEM SubjectPublicKeyInfo (RFC 5280,
//! `BEGIN PUBLIC KEY`). Pure conversions; the encodings come from the RustCrypto crates the
//! import parser already uses, so PEM and JWK describe the same key by construction.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::BigUint;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Map, Value, json};

use crate::api::Curve;
use crate::keyvault::PublicKey;

/// Why a public key the vault returned cannot be published. The messages name the defect,
/// never the key's bytes (a public key is not secret, but a message stays short and stable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("the vault's RSA public key is not valid: {0}")]
    InvalidRsa(String),
    #[error("the vault's {curve} public key is not a point on the curve")]
    InvalidPoint { curve: &'static str },
    #[error("the public key could not be encoded as SubjectPublicKeyInfo: {0}")]
    Encoding(String),
}

/// The JWK `crv` name. Key Vault says `P-256K`; JOSE registered `secp256k1` (RFC 8812), which
/// is what JWT libraries look for.
pub fn jwk_curve(curve: Curve) -> &'static str {
    match curve {
        Curve::P256K => "secp256k1",
        other => other.as_str(),
    }
}

/// The public JWK, members in RFC 7638 order after `kid`. Integers are unsigned big-endian
/// without leading zeros (RFC 7518 §6.3.1.1: some vaults send the modulus with a sign byte);
/// coordinates are padded to the curve's length (§6.2.1.2).
pub fn jwk(key: &PublicKey, kid: &str) -> Map<String, Value> {
    let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
    let mut out = Map::new();
    out.insert("kid".into(), json!(kid));
    match key {
        PublicKey::Rsa { n, e } => {
            out.insert("kty".into(), json!("RSA"));
            out.insert("n".into(), b64(unsigned(n)));
            out.insert("e".into(), b64(unsigned(e)));
        }
        PublicKey::Ec { curve, x, y } => {
            let len = curve.coordinate_len();
            out.insert("kty".into(), json!("EC"));
            out.insert("crv".into(), json!(jwk_curve(*curve)));
            out.insert("x".into(), b64(&padded(unsigned(x), len)));
            out.insert("y".into(), b64(&padded(unsigned(y), len)));
        }
    }
    out
}

/// The SubjectPublicKeyInfo as PEM (`-----BEGIN PUBLIC KEY-----`, LF line endings).
pub fn spki_pem(key: &PublicKey) -> Result<String, PublicKeyError> {
    let encoded = match key {
        PublicKey::Rsa { n, e } => {
            let key = rsa::RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                .map_err(|e| PublicKeyError::InvalidRsa(e.to_string()))?;
            key.to_public_key_pem(LineEnding::LF)
        }
        PublicKey::Ec { curve, x, y } => {
            let len = curve.coordinate_len();
            // SEC1 uncompressed point: 0x04 ‖ x ‖ y.
            let mut point = vec![0x04];
            point.extend(padded(unsigned(x), len));
            point.extend(padded(unsigned(y), len));
            let invalid = || PublicKeyError::InvalidPoint {
                curve: curve.as_str(),
            };
            match curve {
                Curve::P256 => p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| invalid())?
                    .to_public_key_pem(LineEnding::LF),
                Curve::P256K => k256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| invalid())?
                    .to_public_key_pem(LineEnding::LF),
                Curve::P384 => p384::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| invalid())?
                    .to_public_key_pem(LineEnding::LF),
                Curve::P521 => p521::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| invalid())?
                    .to_public_key_pem(LineEnding::LF),
            }
        }
    };
    encoded.map_err(|e| PublicKeyError::Encoding(e.to_string()))
}

fn unsigned(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

fn padded(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_material::{KeyMaterial, MaterialKind, ec_jwk_thumbprint, rsa_jwk_thumbprint};
    use rsa::pkcs8::DecodePublicKey;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/key_material");

    /// The public half of a fixture's private JWK, as a vault would return it.
    fn fixture(name: &str) -> PublicKey {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
        let jwk: serde_json::Value = serde_json::from_str(&text).unwrap();
        let field = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
        match jwk["kty"].as_str().unwrap() {
            "RSA" => PublicKey::Rsa {
                n: field("n"),
                e: field("e"),
            },
            _ => PublicKey::Ec {
                curve: Curve::from_jwk_crv(jwk["crv"].as_str().unwrap()).unwrap(),
                x: field("x"),
                y: field("y"),
            },
        }
    }

    const ALL: [&str; 7] = [
        "rsa2048.jwk.json",
        "rsa2048_e3.jwk.json",
        "rsa4096.jwk.json",
        "ec_p256.jwk.json",
        "ec_secp256k1.jwk.json",
        "ec_p384.jwk.json",
        "ec_p521.jwk.json",
    ];

    #[test]
    fn the_pem_holds_the_same_key_as_the_jwk_for_every_type_and_curve() {
        for name in ALL {
            let key = fixture(name);
            let pem = spki_pem(&key).unwrap();
            assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{name}");
            // Decoded by the SPKI parser the import path uses for public keys, the key's
            // thumbprint is the thumbprint of the published JWK.
            let jwk = jwk(&key, "https://v/keys/k/1");
            let from_pem = match &key {
                PublicKey::Rsa { .. } => {
                    use rsa::traits::PublicKeyParts;
                    let k = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
                    rsa_jwk_thumbprint(&k.n().to_bytes_be(), &k.e().to_bytes_be())
                }
                PublicKey::Ec { curve, .. } => {
                    let der = pem_der(&pem);
                    let spki = rsa::pkcs8::spki::SubjectPublicKeyInfoRef::try_from(der.as_slice())
                        .unwrap();
                    let point = spki.subject_public_key.raw_bytes();
                    let len = curve.coordinate_len();
                    assert_eq!(point.len(), 1 + 2 * len, "{name}");
                    ec_jwk_thumbprint(*curve, &point[1..=len], &point[1 + len..])
                }
            };
            assert_eq!(from_pem, thumbprint(&jwk), "{name}");
        }
    }

    #[test]
    fn the_jwk_is_the_public_half_of_the_imported_material() {
        // The import parser's thumbprint of the private fixture equals the published JWK's.
        for name in ALL {
            let bytes = std::fs::read(format!("{FIXTURES}/{name}")).unwrap();
            let material = KeyMaterial::parse(&bytes).unwrap();
            let jwk = jwk(&fixture(name), "kid");
            assert_eq!(material.public_thumbprint(), thumbprint(&jwk), "{name}");
            assert!(!jwk.contains_key("d"), "{name}: no private member");
            if let MaterialKind::Ec { curve } = material.kind() {
                assert_eq!(jwk["crv"], jwk_curve(curve));
            }
        }
    }

    #[test]
    fn sign_bytes_and_short_coordinates_are_normalised() {
        let PublicKey::Rsa { n, e } = fixture("rsa2048.jwk.json") else {
            unreachable!()
        };
        let plain = jwk(
            &PublicKey::Rsa {
                n: n.clone(),
                e: e.clone(),
            },
            "k",
        );
        let mut signed = vec![0];
        signed.extend(&n);
        assert_eq!(
            jwk(
                &PublicKey::Rsa {
                    n: signed.clone(),
                    e: e.clone()
                },
                "k"
            ),
            plain
        );
        assert_eq!(
            spki_pem(&PublicKey::Rsa {
                n: signed,
                e: e.clone()
            })
            .unwrap(),
            spki_pem(&PublicKey::Rsa { n, e }).unwrap()
        );
        let PublicKey::Ec { curve, x, y } = fixture("ec_p256.jwk.json") else {
            unreachable!()
        };
        // A vault that drops leading zero bytes of a coordinate: same JWK, same PEM.
        let short = PublicKey::Ec {
            curve,
            x: unsigned(&padded(&x[1..], 31)).to_vec(),
            y: y.clone(),
        };
        let with_zero = PublicKey::Ec {
            curve,
            x: padded(&x[1..], 32),
            y,
        };
        assert_eq!(jwk(&short, "k"), jwk(&with_zero, "k"));
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk(&short, "k")["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }

    #[test]
    fn a_point_off_the_curve_is_refused_naming_the_curve() {
        let PublicKey::Ec { x, y, .. } = fixture("ec_p384.jwk.json") else {
            unreachable!()
        };
        let mut wrong_y = y.clone();
        wrong_y[10] ^= 1;
        assert_eq!(
            spki_pem(&PublicKey::Ec {
                curve: Curve::P384,
                x,
                y: wrong_y
            }),
            Err(PublicKeyError::InvalidPoint { curve: "P-384" })
        );
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    fn thumbprint(jwk: &Map<String, Value>) -> String {
        let field = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
        match jwk["kty"].as_str().unwrap() {
            "RSA" => rsa_jwk_thumbprint(&field("n"), &field("e")),
            _ => {
                let crv = jwk["crv"].as_str().unwrap();
                ec_jwk_thumbprint(Curve::from_jwk_crv(crv).unwrap(), &field("x"), &field("y"))
            }
        }
    }
}
