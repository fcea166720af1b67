//! TLS material: a throw-away CA and a leaf certificate for `localhost`, `127.0.0.1` and the
//! `--bind` address, and the rustls server configuration (aws-lc-rs provider).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TlsMaterial {
    /// PEM of the CA certificate clients must trust.
    pub ca_pem: String,
    pub server_config: Arc<ServerConfig>,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// `bind`: the address the listeners serve on; it is a SAN too, so clients that reach the
/// emulator there (pods of the test node, tests/env/node.sh) verify it like a real vault.
pub fn generate(bind: IpAddr) -> Result<TlsMaterial, String> {
    let ca_key = KeyPair::generate().map_err(|e| err("CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA params", e))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kv-emulator test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| err("CA cert", e))?;
    let ca_issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(|e| err("leaf key", e))?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| err("leaf params", e))?;
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    if bind != IpAddr::V4(Ipv4Addr::LOCALHOST) && !bind.is_unspecified() {
        leaf_params.subject_alt_names.push(SanType::IpAddress(bind));
    }
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &ca_issuer)
        .map_err(|e| err("leaf cert", e))?;

    let chain = vec![
        CertificateDer::from(leaf_cert.der().to_vec()),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| err("TLS certificate", e))?;
    // HTTP/1.1 only (the SDK's client works with it; faults map cleanly onto connections).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(config),
    })
}
