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
    /// The private key's public half is not the key in the certificate.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
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
    pub fn generate() -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
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
