//! A node's TLS identity: its key pair, its self-signed certificate, and the [`NodeId`] they
//! stand for.
//!
//! A [`NodeId`] is the SHA-256 of the node's public key encoded as SubjectPublicKeyInfo DER
//! ([`NodeId::from_public_key_der`]). The certificate is only a carrier for that key in the TLS
//! handshake: it is self-signed, its names, dates and self-signature are never relied upon
//! (see [`crate::tls`] for what the handshake checks). [`node_id_of_cert`] recovers the id that
//! any certificate stands for.
//!
//! [`NodeIdentity::generate`] creates an Ed25519 key (verified by rustls' `ring` provider for
//! TLS 1.3 signatures). [`NodeIdentity::from_pem`] also accepts any other key type the `ring`
//! provider can sign with (ECDSA P-256/P-384, RSA), as long as it matches the certificate.

use std::fmt;
use std::sync::Arc;

use p2p_core::NodeId;
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// Why an identity could not be created, loaded or read from a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Generating the key pair or signing the certificate failed.
    #[error("cannot generate a node identity: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate PEM holds no parsable `CERTIFICATE` section.
    #[error("invalid certificate PEM: {0}")]
    CertPem(rustls_pki_types::pem::Error),
    /// The key PEM holds no parsable private key section (PKCS#8, SEC1 or PKCS#1).
    #[error("invalid private key PEM: {0}")]
    KeyPem(rustls_pki_types::pem::Error),
    /// The certificate is not well-formed X.509 DER.
    #[error("malformed certificate: {0}")]
    BadCertificate(rustls::Error),
    /// The private key is of a type or encoding the crypto provider cannot sign with.
    #[error("unsupported private key: {0}")]
    UnsupportedKey(rustls::Error),
    /// A generated key came in an encoding other than the expected PKCS#8 form of an Ed25519
    /// key, so it cannot be rewritten in the form common tools read.
    #[error("the generated key has an unexpected encoding")]
    KeyEncoding,
    /// The private key's public half is not the key in the certificate.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
}

/// The DER prefix of a version 1 PKCS#8 Ed25519 private key (RFC 8410 section 7), up to its
/// 32-byte seed: `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET
/// STRING (32 bytes) } }`.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The DER prefix of a version 2 PKCS#8 Ed25519 private key with its public key (RFC 5958),
/// as `ring` generates it, up to its seed; the seed is followed by `[1] { 0x00, 32 bytes }`.
const ED25519_PKCS8_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The version 1 PKCS#8 DER of an Ed25519 key given as version 1 or 2 PKCS#8 DER, or `None` if
/// `der` is neither. Version 1 carries the seed only; OpenSSL 3.0 refuses `ring`'s version 2.
fn ed25519_pkcs8_v1(der: &[u8]) -> Option<Vec<u8>> {
    let v1 = der.len() == 48 && der[..16] == ED25519_PKCS8_V1_PREFIX;
    let v2 = der.len() == 83
        && der[..16] == ED25519_PKCS8_V2_PREFIX
        && der[48..51] == [0x81, 0x21, 0x00];
    if !(v1 || v2) {
        return None;
    }
    let seed = &der[16..48];
    let mut v1 = Vec::with_capacity(48);
    v1.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
    v1.extend_from_slice(seed);
    Some(v1)
}

/// The [`NodeId`] a certificate stands for: the SHA-256 of its SubjectPublicKeyInfo DER.
///
/// Only the certificate's structure is parsed; its signature, names and dates are not checked.
pub fn node_id_of_cert(cert_der: &[u8]) -> Result<NodeId, IdentityError> {
    let der = CertificateDer::from(cert_der);
    let parsed = ParsedCertificate::try_from(&der).map_err(IdentityError::BadCertificate)?;
    Ok(NodeId::from_public_key_der(
        parsed.subject_public_key_info().as_ref(),
    ))
}

/// The DNS name used as the TLS `ServerName` when dialing `node`:
/// `<first 32 hex digits>.<last 32 hex digits>.node.p2p`.
///
/// It encodes the whole id (a DNS label holds at most 63 characters, so it takes two labels).
/// The verifiers in [`crate::tls`] read the expected peer back from it with
/// [`node_id_from_server_name`] and pin the peer's key to it; no name in the certificate is
/// consulted.
pub fn server_name_for(node: NodeId) -> ServerName<'static> {
    // 32 lowercase hex digits per label, 74 characters in all: always a valid DNS name.
    match ServerName::try_from(dns_name_for(node)) {
        Ok(name) => name,
        Err(_) => unreachable!("a hex-labelled name is a valid DNS name"),
    }
}

fn dns_name_for(node: NodeId) -> String {
    let hex = node.to_hex();
    format!("{}.{}.node.p2p", &hex[..32], &hex[32..])
}

/// The [`NodeId`] encoded in a name made by [`server_name_for`], or `None` for any other name.
pub fn node_id_from_server_name(name: &ServerName<'_>) -> Option<NodeId> {
    let ServerName::DnsName(dns) = name else {
        return None;
    };
    let rest = dns.as_ref().strip_suffix(".node.p2p")?;
    let (first, second) = rest.split_once('.')?;
    if first.len() != 32 || second.len() != 32 {
        return None;
    }
    let mut hex = String::with_capacity(64);
    hex.push_str(first);
    hex.push_str(second);
    NodeId::from_hex(&hex.to_ascii_lowercase())
}

/// A node's key pair and self-signed certificate, ready for rustls.
///
/// `Debug` shows the node id only, never the key.
pub struct NodeIdentity {
    node_id: NodeId,
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
    certified: Arc<CertifiedKey>,
}

impl NodeIdentity {
    /// Generates a fresh Ed25519 key pair and a self-signed certificate for it.
    ///
    /// The certificate names [`server_name_for`] the new node id and is valid from 1975 to 4096
    /// (rcgen's defaults; dates are not checked by the verifiers anyway).
    ///
    /// The key is kept (and [`key_pem`](Self::key_pem) written) as a version 1 PKCS#8
    /// `PRIVATE KEY` (RFC 5208), which common tools such as `openssl pkey` read.
    pub fn generate() -> Result<Self, IdentityError> {
        let generated = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let v1 = ed25519_pkcs8_v1(generated.serialized_der()).ok_or(IdentityError::KeyEncoding)?;
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(v1),
            &rcgen::PKCS_ED25519,
        )?;
        if key.public_key_der() != generated.public_key_der() {
            return Err(IdentityError::KeyEncoding);
        }
        let node_id = NodeId::from_public_key_der(&key.public_key_der());
        let name = dns_name_for(node_id);
        let mut params = rcgen::CertificateParams::new(vec![name.clone()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Self::assemble(cert.pem(), key.serialize_pem(), cert.der().clone(), key_der)
    }

    /// Loads an identity from a PEM certificate and a PEM private key (PKCS#8, SEC1 or PKCS#1),
    /// checking that the key is the one in the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(IdentityError::CertPem)?;
        let key_der =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(IdentityError::KeyPem)?;
        Self::assemble(cert_pem.to_owned(), key_pem.to_owned(), cert_der, key_der)
    }

    fn assemble(
        cert_pem: String,
        key_pem: String,
        cert_der: CertificateDer<'static>,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        let parsed =
            ParsedCertificate::try_from(&cert_der).map_err(IdentityError::BadCertificate)?;
        let cert_spki = parsed.subject_public_key_info();
        let provider = provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key_der.clone_key())
            .map_err(IdentityError::UnsupportedKey)?;
        match signing_key.public_key() {
            Some(key_spki) if key_spki.as_ref() == cert_spki.as_ref() => {}
            _ => return Err(IdentityError::KeyMismatch),
        }
        let node_id = NodeId::from_public_key_der(cert_spki.as_ref());
        let certified = Arc::new(CertifiedKey::new(vec![cert_der.clone()], signing_key));
        Ok(NodeIdentity {
            node_id,
            cert_pem,
            key_pem,
            cert_der,
            key_der,
            certified,
        })
    }

    /// This node's id: the SHA-256 of its certificate's SubjectPublicKeyInfo DER.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key as PEM. Handle with care: it is the node's secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate as DER, for rustls.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A copy of the private key as DER, for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        self.key_der.clone_key()
    }

    /// The certificate with its loaded signing key, as rustls' certificate resolvers use it.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The crypto provider every identity and configuration of this crate uses: rustls' `ring`.
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_pkcs8_is_rewritten_as_version_1_with_the_same_seed() {
        let v2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_der();
        let v1 = ed25519_pkcs8_v1(&v2).unwrap();
        assert_eq!(v1[..16], ED25519_PKCS8_V1_PREFIX);
        assert_eq!(v1[16..], v2[16..48]);
        assert_eq!(ed25519_pkcs8_v1(&v1), Some(v1.clone()));
        assert_eq!(ed25519_pkcs8_v1(&v2[..82]), None);
        assert_eq!(ed25519_pkcs8_v1(&[0x30; 48]), None);
        let mut other_alg = v1.clone();
        other_alg[11] = 0x71; // Ed448
        assert_eq!(ed25519_pkcs8_v1(&other_alg), None);
    }
}
