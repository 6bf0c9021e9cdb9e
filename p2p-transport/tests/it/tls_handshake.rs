//! Real rustls handshakes over in-memory buffers between nodes with registry-pinned configs.

use std::io::{Read, Write};
use std::sync::Arc;

use p2p_core::NodeId;
use p2p_transport::identity::NodeIdentity;
use p2p_transport::tls::{
    MemberServerVerifier, Members, Membership, MembershipError, PeerRejected, client_config,
    peer_node_id, rejection_reason, server_config, server_name_for,
};
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection,
    SignatureScheme,
};
use rustls_pki_types::ServerName;

/// What happened to each side of a handshake.
#[derive(Debug, Default)]
struct Outcome {
    client_err: Option<rustls::Error>,
    server_err: Option<rustls::Error>,
}

impl Outcome {
    fn completed(&self) -> bool {
        self.client_err.is_none() && self.server_err.is_none()
    }
}

fn drain<D>(conn: &mut ConnectionCommon<D>) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)
            .expect("writing to a Vec cannot fail");
    }
    out
}

fn feed<D>(conn: &mut ConnectionCommon<D>, bytes: &[u8]) -> Result<(), rustls::Error> {
    let mut rest = bytes;
    while !rest.is_empty() {
        conn.read_tls(&mut rest)
            .expect("reading TLS records from a slice cannot fail");
        conn.process_new_packets()?;
    }
    Ok(())
}

/// Moves bytes between the two connections until both finished their handshake, both sides
/// failed, or nothing moves any more; records each side's error.
fn run(client: &mut ClientConnection, server: &mut ServerConnection) -> Outcome {
    let mut outcome = Outcome::default();
    for _ in 0..64 {
        let to_server = drain(client);
        if outcome.server_err.is_none()
            && !to_server.is_empty()
            && let Err(e) = feed(server, &to_server)
        {
            outcome.server_err = Some(e);
        }
        let to_client = drain(server);
        if outcome.client_err.is_none()
            && !to_client.is_empty()
            && let Err(e) = feed(client, &to_client)
        {
            outcome.client_err = Some(e);
        }
        // Both sides were drained: if neither had anything to send, nothing more will move.
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
    }
    if outcome.completed() && (client.is_handshaking() || server.is_handshaking()) {
        panic!("handshake stalled without an error");
    }
    outcome
}

fn connect(
    client_cfg: Arc<ClientConfig>,
    server_cfg: Arc<ServerConfig>,
    name: ServerName<'static>,
) -> (ClientConnection, ServerConnection, Outcome) {
    let mut client = ClientConnection::new(client_cfg, name).expect("client connection");
    let mut server = ServerConnection::new(server_cfg).expect("server connection");
    let outcome = run(&mut client, &mut server);
    (client, server, outcome)
}

/// A node with its own identity, its own view of the membership, and configs built from them.
struct Node {
    id: NodeIdentity,
    membership: Membership,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl Node {
    fn new(id: NodeIdentity, members: &[NodeId]) -> Node {
        let membership = Membership::new(Members::new(1, members.iter().copied()));
        let client = client_config(&id, &membership).expect("client config");
        let server = server_config(&id, &membership).expect("server config");
        Node {
            id,
            membership,
            client,
            server,
        }
    }

    fn node_id(&self) -> NodeId {
        self.id.node_id()
    }
}

/// `dialer` dials `listener`, expecting `listener`'s id.
fn dial(dialer: &Node, listener: &Node) -> (ClientConnection, ServerConnection, Outcome) {
    connect(
        dialer.client.clone(),
        listener.server.clone(),
        server_name_for(listener.node_id()),
    )
}

fn identities(n: usize) -> Vec<NodeIdentity> {
    (0..n)
        .map(|_| NodeIdentity::generate().expect("generate identity"))
        .collect()
}

fn reason(err: &Option<rustls::Error>) -> &PeerRejected {
    let err = err.as_ref().expect("this side should have failed");
    rejection_reason(err).unwrap_or_else(|| panic!("not a verifier refusal: {err:?}"))
}

#[test]
fn members_connect_both_ways_and_learn_each_others_node_id() {
    let ids = identities(2);
    let members = [ids[0].node_id(), ids[1].node_id()];
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);

    for (dialer, listener) in [(&a, &b), (&b, &a)] {
        let (mut client, mut server, outcome) = dial(dialer, listener);
        assert!(outcome.completed(), "{outcome:?}");
        assert_eq!(peer_node_id(&client), Some(listener.node_id()));
        assert_eq!(peer_node_id(&server), Some(dialer.node_id()));
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        // Resumption is disabled: a repeated connection runs the full certificate check.
        let (again, _s, outcome) = dial(dialer, listener);
        assert!(outcome.completed(), "{outcome:?}");
        assert_eq!(again.handshake_kind(), Some(rustls::HandshakeKind::Full));

        // Application data flows over the authenticated connection.
        client.writer().write_all(b"hello member").unwrap();
        let bytes = drain(&mut client);
        feed(&mut server, &bytes).unwrap();
        let mut got = vec![0u8; 64];
        let n = server.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"hello member");
    }
}

#[test]
fn an_ecdsa_p256_identity_loaded_from_pem_is_accepted() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["p256.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let p256 = NodeIdentity::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
    let ed = NodeIdentity::generate().unwrap();
    let members = [p256.node_id(), ed.node_id()];
    let a = Node::new(p256, &members);
    let b = Node::new(ed, &members);
    for (dialer, listener) in [(&a, &b), (&b, &a)] {
        let (client, server, outcome) = dial(dialer, listener);
        assert!(outcome.completed(), "{outcome:?}");
        assert_eq!(peer_node_id(&client), Some(listener.node_id()));
        assert_eq!(peer_node_id(&server), Some(dialer.node_id()));
    }
}

#[test]
fn a_non_member_dialing_in_is_refused_by_the_server() {
    let ids = identities(3);
    let (a_id, b_id, outsider_id) = (ids[0].node_id(), ids[1].node_id(), ids[2].node_id());
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &[a_id, b_id]);
    let _b = ids.next();
    // The outsider trusts A, but A's membership does not include the outsider.
    let outsider = Node::new(ids.next().unwrap(), &[a_id, outsider_id]);

    let (_client, server, outcome) = dial(&outsider, &a);
    assert!(
        outcome.client_err.is_some(),
        "the dialer must see the refusal"
    );
    match reason(&outcome.server_err) {
        PeerRejected::NotAMember { peer, version } => {
            assert_eq!(*peer, outsider_id);
            assert_eq!(*version, 1);
        }
        other => panic!("unexpected reason {other:?}"),
    }
    assert!(server.is_handshaking());
}

#[test]
fn dialing_a_non_member_is_refused_by_the_client() {
    let ids = identities(3);
    let (a_id, b_id, outsider_id) = (ids[0].node_id(), ids[1].node_id(), ids[2].node_id());
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &[a_id, b_id]);
    let _b = ids.next();
    // The outsider would accept A, but A does not accept the outsider as a server.
    let outsider = Node::new(ids.next().unwrap(), &[a_id, outsider_id]);

    let (client, _server, outcome) = dial(&a, &outsider);
    match reason(&outcome.client_err) {
        PeerRejected::NotAMember { peer, .. } => assert_eq!(*peer, outsider_id),
        other => panic!("unexpected reason {other:?}"),
    }
    assert!(client.is_handshaking());
}

#[test]
fn a_member_answering_for_another_node_id_is_refused() {
    let ids = identities(3);
    let members: Vec<NodeId> = ids.iter().map(NodeIdentity::node_id).collect();
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);
    let impostor = Node::new(ids.next().unwrap(), &members);

    // A dials B's name, but the impostor (a member itself) answers.
    let (_client, _server, outcome) = connect(
        a.client.clone(),
        impostor.server.clone(),
        server_name_for(b.node_id()),
    );
    match reason(&outcome.client_err) {
        PeerRejected::UnexpectedPeer { expected, actual } => {
            assert_eq!(*expected, b.node_id());
            assert_eq!(*actual, impostor.node_id());
        }
        other => panic!("unexpected reason {other:?}"),
    }
}

#[test]
fn a_server_name_without_a_node_id_is_refused() {
    let ids = identities(2);
    let members: Vec<NodeId> = ids.iter().map(NodeIdentity::node_id).collect();
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);
    let name = ServerName::try_from("example.com").unwrap();
    let (_c, _s, outcome) = connect(a.client.clone(), b.server.clone(), name);
    assert!(matches!(
        reason(&outcome.client_err),
        PeerRejected::UnpinnedServerName(n) if n == "example.com"
    ));
}

#[test]
fn a_removed_member_is_refused_after_the_update_with_the_same_configs() {
    let ids = identities(2);
    let members = [ids[0].node_id(), ids[1].node_id()];
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);

    let (_c, _s, before) = dial(&b, &a);
    assert!(before.completed(), "{before:?}");

    a.membership.update(Members::new(2, [a.node_id()])).unwrap();
    assert_eq!(a.membership.snapshot().version(), 2);

    // B dialing A: A's server refuses it.
    let (_c, _s, inbound) = dial(&b, &a);
    match reason(&inbound.server_err) {
        PeerRejected::NotAMember { peer, version } => {
            assert_eq!(*peer, b.node_id());
            assert_eq!(*version, 2);
        }
        other => panic!("unexpected reason {other:?}"),
    }
    // A dialing B: A's client refuses B's certificate.
    let (_c, _s, outbound) = dial(&a, &b);
    assert!(matches!(
        reason(&outbound.client_err),
        PeerRejected::NotAMember { version: 2, .. }
    ));
}

#[test]
fn an_older_membership_version_is_refused_and_leaves_the_current_one() {
    let ids = identities(1);
    let me = ids[0].node_id();
    let membership = Membership::new(Members::new(5, [me]));
    assert_eq!(
        membership.update(Members::new(4, [])),
        Err(MembershipError::Stale {
            current: 5,
            offered: 4
        })
    );
    assert!(membership.contains(&me));
    assert_eq!(membership.snapshot().version(), 5);
    membership.update(Members::new(5, [])).unwrap();
    assert!(!membership.contains(&me));
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let ids = identities(2);
    let members: Vec<NodeId> = ids.iter().map(NodeIdentity::node_id).collect();
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let anonymous = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MemberServerVerifier::new(
            b.membership.clone(),
            &provider,
        )))
        .with_no_client_auth();
    let (_c, server, outcome) = connect(
        Arc::new(anonymous),
        a.server.clone(),
        server_name_for(a.node_id()),
    );
    assert!(
        matches!(
            outcome.server_err,
            Some(rustls::Error::NoCertificatesPresented)
        ),
        "{outcome:?}"
    );
    assert_eq!(peer_node_id(&server), None);
}

#[test]
fn a_tls12_only_client_is_refused() {
    let ids = identities(2);
    let members: Vec<NodeId> = ids.iter().map(NodeIdentity::node_id).collect();
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MemberServerVerifier::new(
            b.membership.clone(),
            &provider,
        )))
        .with_client_auth_cert(vec![b.id.cert_der().clone()], b.id.key_der())
        .unwrap();
    let (_c, server, outcome) = connect(
        Arc::new(tls12),
        a.server.clone(),
        server_name_for(a.node_id()),
    );
    assert!(
        matches!(outcome.server_err, Some(rustls::Error::PeerIncompatible(_))),
        "{outcome:?}"
    );
    assert!(outcome.client_err.is_some(), "{outcome:?}");
    assert!(server.is_handshaking());
}

/// Presents one identity's certificate but signs with another identity's key.
#[derive(Debug)]
struct MismatchedKey(Arc<CertifiedKey>);

impl MismatchedKey {
    fn new(cert_of: &NodeIdentity, key_of: &NodeIdentity) -> Self {
        let key = key_of.certified_key().key.clone();
        MismatchedKey(Arc::new(CertifiedKey::new(
            vec![cert_of.cert_der().clone()],
            key,
        )))
    }
}

impl ResolvesClientCert for MismatchedKey {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for MismatchedKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[test]
fn a_client_certificate_not_matching_the_signing_key_is_refused() {
    let ids = identities(3);
    let members: Vec<NodeId> = ids.iter().map(NodeIdentity::node_id).collect();
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);
    let thief = Node::new(ids.next().unwrap(), &members);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The thief presents B's certificate (a member's) but can only sign with its own key.
    let forged = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MemberServerVerifier::new(
            thief.membership.clone(),
            &provider,
        )))
        .with_client_cert_resolver(Arc::new(MismatchedKey::new(&b.id, &thief.id)));
    let (_c, server, outcome) = connect(
        Arc::new(forged),
        a.server.clone(),
        server_name_for(a.node_id()),
    );
    assert!(
        matches!(
            outcome.server_err,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature
            ))
        ),
        "{outcome:?}"
    );
    assert!(server.is_handshaking());
}

#[test]
fn a_server_certificate_not_matching_the_signing_key_is_refused() {
    let ids = identities(3);
    let members: Vec<NodeId> = ids.iter().map(NodeIdentity::node_id).collect();
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);
    let thief = Node::new(ids.next().unwrap(), &members);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(p2p_transport::tls::MemberClientVerifier::new(
        thief.membership.clone(),
        &provider,
    ));
    // The thief answers as B with B's certificate, signing with its own key.
    let forged = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(MismatchedKey::new(&b.id, &thief.id)));
    let (client, _s, outcome) = connect(
        a.client.clone(),
        Arc::new(forged),
        server_name_for(b.node_id()),
    );
    assert!(
        matches!(
            outcome.client_err,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature
            ))
        ),
        "{outcome:?}"
    );
    assert!(client.is_handshaking());
}

#[test]
fn the_bench_pair_delivers_every_byte_over_tls13_aes128gcm() {
    use p2p_transport::tls::bench_support::{TlsPair, measure_tls_throughput};
    let mut pair = TlsPair::new().unwrap();
    assert_eq!(
        pair.client.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    assert_eq!(pair.transfer(&payload, 250_000).unwrap(), 250_000);
    assert_eq!(pair.transfer(&[], 10).unwrap(), 0);
    let rate = measure_tls_throughput(1 << 16).unwrap();
    assert!(rate.is_finite() && rate > 0.0);
}

#[test]
fn a_banned_member_is_refused_inside_the_handshake_until_the_ban_is_lifted() {
    let ids = identities(3);
    let members = [ids[0].node_id(), ids[1].node_id(), ids[2].node_id()];
    let mut ids = ids.into_iter();
    let a = Node::new(ids.next().unwrap(), &members);
    let b = Node::new(ids.next().unwrap(), &members);
    let c = Node::new(ids.next().unwrap(), &members);

    a.membership.set_banned([b.node_id()]);
    assert!(a.membership.snapshot().is_banned(&b.node_id()));
    let (_c, server, inbound) = dial(&b, &a);
    match reason(&inbound.server_err) {
        PeerRejected::Banned(peer) => assert_eq!(*peer, b.node_id()),
        other => panic!("unexpected reason {other:?}"),
    }
    assert!(
        server.is_handshaking(),
        "the server never completes the handshake"
    );
    // Other members still connect, and a registry update keeps the ban of a member that stays.
    let (_c, _s, other) = dial(&c, &a);
    assert!(other.completed(), "{other:?}");
    a.membership.update(Members::new(2, members)).unwrap();
    assert!(a.membership.snapshot().is_banned(&b.node_id()));

    a.membership.set_banned([]);
    let (_c, _s, after) = dial(&b, &a);
    assert!(after.completed(), "{after:?}");
}
