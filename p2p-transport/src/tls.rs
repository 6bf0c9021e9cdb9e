//! rustls configurations whose verifiers accept exactly the current members' keys.
//!
//! # Trust model
//!
//! There is no certificate authority. Trust comes from the registry: a [`Members`] snapshot
//! (a registry version and a set of [`NodeId`]s) held in a shared [`Membership`] handle.
//!
//! **Who is accepted.** A peer completes a handshake with us, in either role, only if
//! - it presents exactly one certificate (no chain), well-formed X.509 DER;
//! - that certificate's public key hashes (SHA-256 of its SubjectPublicKeyInfo DER) to a
//!   [`NodeId`] in the membership snapshot current at the moment its certificate is checked,
//!   and that id is not banned in it ([`Membership::set_banned`]): a banned member is refused
//!   before the handshake completes, before any application data, whatever address it dials
//!   from;
//! - when we dial, that id is also the one we dialed: the expected id travels in the
//!   `ServerName` ([`server_name_for`]) and the verifier pins the key to it; any name inside the
//!   certificate is ignored;
//! - it proves possession of that key: the TLS 1.3 `CertificateVerify` signature is checked with
//!   the certificate's key by the `ring` provider's signature verification
//!   ([`rustls::crypto::verify_tls13_signature`]);
//! - it speaks TLS 1.3 (our configs offer nothing else) and, as a client, authenticates
//!   (client authentication is mandatory).
//!
//! **What is not checked.** Validity dates are not checked at all (revocation is removal from the
//! membership, and nodes need not agree on wall-clock time), and neither is the certificate's own
//! self-signature, its names or its extensions: the certificate is only a carrier for the key,
//! and the handshake signature is what proves the key.
//!
//! **When.** The verifiers read the [`Membership`] handle on every handshake, so the configs
//! built once by [`server_config`] and [`client_config`] follow [`Membership::update`]: after an
//! update, every handshake whose certificate check has not yet run refuses removed members.
//! Connections already established are not touched; the driver closes those of removed members.
//! Session resumption is disabled on both sides (no tickets, no session cache), so every
//! connection runs the full certificate check against the current membership.
//!
//! After a handshake, [`peer_node_id`] tells who the authenticated peer is; when a handshake is
//! refused by our verifier, [`rejection_reason`] recovers the typed [`PeerRejected`] from the
//! rustls error.
//!
//! # Example: a handshake in memory
//!
//! ```
//! use p2p_transport::identity::NodeIdentity;
//! use p2p_transport::tls::{Members, Membership, client_config, peer_node_id, server_config,
//!     server_name_for};
//! use rustls::{ClientConnection, ServerConnection};
//!
//! let (a, b) = (NodeIdentity::generate()?, NodeIdentity::generate()?);
//! let members = Members::new(1, [a.node_id(), b.node_id()]);
//! let (view_a, view_b) = (Membership::new(members.clone()), Membership::new(members));
//!
//! // A dials B, naming the node it expects.
//! let mut client = ClientConnection::new(client_config(&a, &view_a)?, server_name_for(b.node_id()))?;
//! let mut server = ServerConnection::new(server_config(&b, &view_b)?)?;
//! while client.is_handshaking() || server.is_handshaking() {
//!     let mut wire = Vec::new();
//!     client.write_tls(&mut wire)?;
//!     server.read_tls(&mut &wire[..])?;
//!     server.process_new_packets()?;
//!     wire.clear();
//!     server.write_tls(&mut wire)?;
//!     client.read_tls(&mut &wire[..])?;
//!     client.process_new_packets()?;
//! }
//! assert_eq!(peer_node_id(&client), Some(b.node_id()));
//! assert_eq!(peer_node_id(&server), Some(a.node_id()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use p2p_core::NodeId;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::NoServerSessionStorage;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme,
};

pub use crate::identity::server_name_for;
use crate::identity::{NodeIdentity, node_id_from_server_name, node_id_of_cert};

/// One version of the membership: the registry version, the node ids allowed to connect, and
/// those of them currently banned (refused inside the handshake).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Members {
    version: u64,
    nodes: BTreeSet<NodeId>,
    banned: BTreeSet<NodeId>,
}

impl Members {
    /// The members of registry version `version`.
    pub fn new(version: u64, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Members {
            version,
            nodes: nodes.into_iter().collect(),
            banned: BTreeSet::new(),
        }
    }

    /// These members with `banned` (those of them that are members) refused.
    pub fn with_banned(mut self, banned: impl IntoIterator<Item = NodeId>) -> Self {
        self.banned = banned
            .into_iter()
            .filter(|id| self.nodes.contains(id))
            .collect();
        self
    }

    /// Whether `node` is banned.
    pub fn is_banned(&self, node: &NodeId) -> bool {
        self.banned.contains(node)
    }

    /// The banned members in ascending order.
    pub fn banned(&self) -> impl Iterator<Item = &NodeId> {
        self.banned.iter()
    }

    /// The registry version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether `node` is a member.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.nodes.contains(node)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeId> {
        self.nodes.iter()
    }
}

/// Why a membership update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The offered version is older than the current one.
    #[error("membership version {offered} is older than the current version {current}")]
    Stale {
        /// The version in force.
        current: u64,
        /// The refused version.
        offered: u64,
    },
}

/// A shared, updatable handle on the current [`Members`] snapshot.
///
/// Clones share the same snapshot; the verifiers inside the configs of this module hold a clone
/// and read it on every handshake.
#[derive(Clone, Debug)]
pub struct Membership {
    current: Arc<RwLock<Arc<Members>>>,
}

impl Membership {
    /// A handle whose current snapshot is `members`.
    pub fn new(members: Members) -> Self {
        Membership {
            current: Arc::new(RwLock::new(Arc::new(members))),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Members> {
        // The lock only guards an `Arc` swap, which cannot leave it inconsistent: a poisoned
        // lock still holds a valid snapshot.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the snapshot with `members`, unless its version is older than the current one
    /// (an equal version replaces it). Takes effect for every later certificate check. Bans in
    /// force stay for those still members, unless `members` names its own.
    pub fn update(&self, mut members: Members) -> Result<(), MembershipError> {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if members.version < guard.version {
            return Err(MembershipError::Stale {
                current: guard.version,
                offered: members.version,
            });
        }
        if members.banned.is_empty() {
            members = members.with_banned(guard.banned.iter().copied());
        }
        *guard = Arc::new(members);
        Ok(())
    }

    /// Replaces the banned members of the current snapshot (those that are members); takes
    /// effect for every later certificate check.
    pub fn set_banned(&self, banned: impl IntoIterator<Item = NodeId>) {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let next = Members::clone(&guard).with_banned(banned);
        *guard = Arc::new(next);
    }

    /// Whether `node` is a member of the current snapshot.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(node)
    }
}

/// Why our verifier refused a peer's certificate. Carried inside the rustls error as
/// `Error::InvalidCertificate(CertificateError::Other(..))`; see [`rejection_reason`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerRejected {
    /// The certificate's key is not a member of the current membership.
    #[error("peer {peer:?} is not a member of membership version {version}")]
    NotAMember {
        /// The id the certificate's key hashes to.
        peer: NodeId,
        /// The membership version checked.
        version: u64,
    },
    /// The certificate's key is a member that is currently banned.
    #[error("peer {0:?} is banned")]
    Banned(NodeId),
    /// We dialed one node and another answered.
    #[error("dialed {expected:?} but the certificate belongs to {actual:?}")]
    UnexpectedPeer {
        /// The id we dialed.
        expected: NodeId,
        /// The id the certificate's key hashes to.
        actual: NodeId,
    },
    /// The server name was not made by [`server_name_for`], so there is no id to pin.
    #[error("server name {0:?} does not encode a node id")]
    UnpinnedServerName(String),
    /// The peer sent a certificate chain; members send exactly one self-signed certificate.
    #[error("peer sent {0} intermediate certificates; expected none")]
    UnexpectedChain(usize),
    /// The certificate is not well-formed.
    #[error("unreadable certificate: {0}")]
    BadCertificate(#[from] crate::identity::IdentityError),
    /// A TLS 1.2 signature was offered; only TLS 1.3 is accepted.
    #[error("TLS 1.2 handshake signatures are not accepted")]
    Tls12,
}

impl From<PeerRejected> for rustls::Error {
    fn from(reason: PeerRejected) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
    }
}

/// Our verifier's reason for refusing a handshake, if `err` is such a refusal.
pub fn rejection_reason(err: &rustls::Error) -> Option<&PeerRejected> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<PeerRejected>()
        }
        _ => None,
    }
}

/// The authenticated peer of a connection whose handshake completed: the id its certificate's
/// key hashes to. `None` before the handshake has received the peer's certificate.
pub fn peer_node_id(conn: &CommonState) -> Option<NodeId> {
    let cert = conn.peer_certificates()?.first()?;
    node_id_of_cert(cert.as_ref()).ok()
}

/// Checks the parts common to both roles and returns the peer's id.
fn check_member(
    membership: &Membership,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<NodeId, PeerRejected> {
    if !intermediates.is_empty() {
        return Err(PeerRejected::UnexpectedChain(intermediates.len()));
    }
    let peer = node_id_of_cert(end_entity.as_ref())?;
    let members = membership.snapshot();
    if !members.contains(&peer) {
        return Err(PeerRejected::NotAMember {
            peer,
            version: members.version(),
        });
    }
    if members.is_banned(&peer) {
        return Err(PeerRejected::Banned(peer));
    }
    Ok(peer)
}

/// The verifier a dialing node uses: accepts the server only if its key hashes to the dialed
/// [`NodeId`] (read from the `ServerName`) and that id is a current member.
#[derive(Debug)]
pub struct MemberServerVerifier {
    membership: Membership,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MemberServerVerifier {
    /// A verifier reading `membership`, checking signatures with `provider`'s algorithms.
    pub fn new(membership: Membership, provider: &CryptoProvider) -> Self {
        MemberServerVerifier {
            membership,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for MemberServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = node_id_from_server_name(server_name)
            .ok_or_else(|| PeerRejected::UnpinnedServerName(server_name.to_str().into_owned()))?;
        let actual = check_member(&self.membership, end_entity, intermediates)?;
        if actual != expected {
            return Err(PeerRejected::UnexpectedPeer { expected, actual }.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerRejected::Tls12.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The verifier an accepting node uses: requires a client certificate and accepts it only if
/// its key hashes to a current member.
#[derive(Debug)]
pub struct MemberClientVerifier {
    membership: Membership,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MemberClientVerifier {
    /// A verifier reading `membership`, checking signatures with `provider`'s algorithms.
    pub fn new(membership: Membership, provider: &CryptoProvider) -> Self {
        MemberClientVerifier {
            membership,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for MemberClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_member(&self.membership, end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerRejected::Tls12.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// rustls refused the provider, the protocol versions or the identity.
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The configuration for accepting connections as `identity`: TLS 1.3 only, client
/// authentication required, clients accepted as described in the [module docs](self), no
/// session resumption. Uses rustls' `ring` provider with its default cipher suites.
pub fn server_config(
    identity: &NodeIdentity,
    membership: &Membership,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    server_config_with_provider(identity, membership, Arc::new(crate::identity::provider()))
}

/// [`server_config`] with a given crypto provider (say, one restricted to a cipher suite).
pub fn server_config_with_provider(
    identity: &NodeIdentity,
    membership: &Membership,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let verifier = Arc::new(MemberClientVerifier::new(membership.clone(), &provider));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert_der().clone()], identity.key_der())?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The configuration for dialing as `identity`: TLS 1.3 only, presents our certificate, and
/// accepts the server as described in the [module docs](self). Dial with
/// [`server_name_for`]`(peer)` as the server name. SNI is not sent (it would reveal the dialed
/// id in clear) and sessions are not resumed. Uses rustls' `ring` provider with its default
/// cipher suites.
pub fn client_config(
    identity: &NodeIdentity,
    membership: &Membership,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    client_config_with_provider(identity, membership, Arc::new(crate::identity::provider()))
}

/// [`client_config`] with a given crypto provider (say, one restricted to a cipher suite).
pub fn client_config_with_provider(
    identity: &NodeIdentity,
    membership: &Membership,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let verifier = Arc::new(MemberServerVerifier::new(membership.clone(), &provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert_der().clone()], identity.key_der())?;
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// An in-memory client/server pair for measuring rustls' bulk throughput on this machine
/// (used by `benches/tls.rs` and `cargo xtask bench`). Not part of any protocol path.
#[doc(hidden)]
pub mod bench_support {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::Arc;
    use std::time::Instant;

    use rustls::crypto::CryptoProvider;
    use rustls::{ClientConnection, ConnectionCommon, ServerConnection};

    use super::{Members, Membership, client_config_with_provider, server_config_with_provider};
    use crate::identity::{IdentityError, NodeIdentity, server_name_for};

    /// Why the in-memory pair could not be set up or could not move data.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum BenchError {
        /// Generating an identity failed.
        #[error(transparent)]
        Identity(#[from] IdentityError),
        /// Building a configuration failed.
        #[error(transparent)]
        Config(#[from] super::TlsConfigError),
        /// rustls reported an error.
        #[error("TLS error: {0}")]
        Tls(#[from] rustls::Error),
        /// Moving bytes in memory failed.
        #[error("in-memory IO error: {0}")]
        Io(#[from] std::io::Error),
        /// A step moved no bytes although data was still expected.
        #[error("the in-memory transfer stalled")]
        Stalled,
    }

    /// A connected client/server pair of two member nodes, TLS 1.3 with
    /// TLS13_AES_128_GCM_SHA256, handshake completed.
    pub struct TlsPair {
        /// The dialing side; it sends in [`TlsPair::transfer`].
        pub client: ClientConnection,
        /// The accepting side; it receives in [`TlsPair::transfer`].
        pub server: ServerConnection,
        wire: Vec<u8>,
        sink: Vec<u8>,
    }

    fn move_records<A, B>(
        from: &mut ConnectionCommon<A>,
        to: &mut ConnectionCommon<B>,
        wire: &mut Vec<u8>,
        sink: &mut [u8],
    ) -> Result<usize, BenchError> {
        wire.clear();
        while from.wants_write() {
            from.write_tls(wire)?;
        }
        let mut rest = &wire[..];
        let mut delivered = 0;
        while !rest.is_empty() {
            to.read_tls(&mut rest)?;
            to.process_new_packets()?;
            loop {
                match to.reader().read(sink) {
                    Ok(0) => break,
                    Ok(n) => delivered += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(delivered)
    }

    impl TlsPair {
        /// Two fresh identities, both members, connected in memory.
        pub fn new() -> Result<Self, BenchError> {
            let provider = Arc::new(CryptoProvider {
                cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
                ..crate::identity::provider()
            });
            let a = NodeIdentity::generate()?;
            let b = NodeIdentity::generate()?;
            let membership = Membership::new(Members::new(1, [a.node_id(), b.node_id()]));
            let client_cfg = client_config_with_provider(&a, &membership, provider.clone())?;
            let server_cfg = server_config_with_provider(&b, &membership, provider)?;
            let mut pair = TlsPair {
                client: ClientConnection::new(client_cfg, server_name_for(b.node_id()))?,
                server: ServerConnection::new(server_cfg)?,
                wire: Vec::with_capacity(1 << 17),
                sink: vec![0; 1 << 16],
            };
            for _ in 0..16 {
                if !pair.client.is_handshaking() && !pair.server.is_handshaking() {
                    return Ok(pair);
                }
                move_records(
                    &mut pair.client,
                    &mut pair.server,
                    &mut pair.wire,
                    &mut pair.sink,
                )?;
                move_records(
                    &mut pair.server,
                    &mut pair.client,
                    &mut pair.wire,
                    &mut pair.sink,
                )?;
            }
            Err(BenchError::Stalled)
        }

        /// Sends `total` bytes from client to server, written `payload.len()` bytes at a time
        /// (the last write may be shorter), and returns the number of bytes the server read.
        pub fn transfer(&mut self, payload: &[u8], total: usize) -> Result<usize, BenchError> {
            if payload.is_empty() {
                return Ok(0);
            }
            let mut sent = 0;
            let mut received = 0;
            while sent < total {
                let mut chunk = &payload[..payload.len().min(total - sent)];
                while !chunk.is_empty() {
                    let n = self.client.writer().write(chunk)?;
                    chunk = &chunk[n..];
                    sent += n;
                    let got = move_records(
                        &mut self.client,
                        &mut self.server,
                        &mut self.wire,
                        &mut self.sink,
                    )?;
                    if n == 0 && got == 0 {
                        return Err(BenchError::Stalled);
                    }
                    received += got;
                }
            }
            received += move_records(
                &mut self.client,
                &mut self.server,
                &mut self.wire,
                &mut self.sink,
            )?;
            Ok(received)
        }
    }

    /// This machine's single-core TLS limit: bytes of application data per second moved from
    /// client to server in memory (TLS 1.3, AES-128-GCM, 1 MiB writes), counting both the
    /// sender's encryption and the receiver's decryption on the calling thread. Sends 1 MiB to
    /// warm up, then times `total_bytes`.
    pub fn measure_tls_throughput(total_bytes: usize) -> Result<f64, BenchError> {
        let payload = vec![0x5a; 1 << 20];
        let mut pair = TlsPair::new()?;
        pair.transfer(&payload, payload.len())?;
        let start = Instant::now();
        let received = pair.transfer(&payload, total_bytes)?;
        let secs = start.elapsed().as_secs_f64();
        if received != total_bytes {
            return Err(BenchError::Stalled);
        }
        Ok(total_bytes as f64 / secs.max(f64::MIN_POSITIVE))
    }
}
