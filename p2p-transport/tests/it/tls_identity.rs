//! Node identities: generation, PEM round trips, node ids from certificates, typed errors.

use p2p_core::NodeId;
use p2p_transport::identity::{
    IdentityError, NodeIdentity, node_id_from_server_name, node_id_of_cert, server_name_for,
};
use quickcheck::quickcheck;
use rustls_pki_types::ServerName;

#[test]
fn a_pem_round_trip_keeps_the_node_id_and_certificate() {
    let original = NodeIdentity::generate().unwrap();
    let loaded = NodeIdentity::from_pem(original.cert_pem(), original.key_pem()).unwrap();
    assert_eq!(loaded.node_id(), original.node_id());
    assert_eq!(loaded.cert_der(), original.cert_der());
    assert_eq!(loaded.cert_pem(), original.cert_pem());
    assert_eq!(loaded.key_pem(), original.key_pem());
    assert_eq!(
        loaded.key_der().secret_der(),
        original.key_der().secret_der()
    );
}

#[test]
fn the_node_id_is_the_sha256_of_the_keys_subject_public_key_info() {
    let identity = NodeIdentity::generate().unwrap();
    // Recompute from the private key alone, through rcgen rather than the certificate.
    let key = rcgen::KeyPair::from_pem(identity.key_pem()).unwrap();
    let expected = NodeId::from_public_key_der(&key.public_key_der());
    assert_eq!(identity.node_id(), expected);
    assert_eq!(
        node_id_of_cert(identity.cert_der().as_ref()).unwrap(),
        expected
    );
}

#[test]
fn generated_identities_are_distinct() {
    let a = NodeIdentity::generate().unwrap();
    let b = NodeIdentity::generate().unwrap();
    assert_ne!(a.node_id(), b.node_id());
}

#[test]
fn the_generated_certificate_names_the_nodes_server_name() {
    let identity = NodeIdentity::generate().unwrap();
    let ServerName::DnsName(name) = server_name_for(identity.node_id()) else {
        panic!("not a DNS name");
    };
    let needle = name.as_ref().as_bytes();
    let der = identity.cert_der().as_ref();
    assert!(der.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn debug_output_does_not_reveal_the_private_key() {
    let identity = NodeIdentity::generate().unwrap();
    let shown = format!("{identity:?}");
    assert!(shown.contains(&format!("{:?}", identity.node_id())));
    assert!(!shown.contains("PRIVATE"));
    let key_body: String = identity
        .key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!shown.contains(&key_body));
}

#[test]
fn garbage_certificate_pem_is_a_typed_error() {
    let key = NodeIdentity::generate().unwrap();
    let err = NodeIdentity::from_pem("not a pem at all", key.key_pem()).unwrap_err();
    assert!(matches!(err, IdentityError::CertPem(_)), "{err:?}");
}

#[test]
fn garbage_key_pem_is_a_typed_error() {
    let cert = NodeIdentity::generate().unwrap();
    let err = NodeIdentity::from_pem(cert.cert_pem(), "-----BEGIN NOTHING-----\n").unwrap_err();
    assert!(matches!(err, IdentityError::KeyPem(_)), "{err:?}");
    // A certificate in place of the key: no private key section.
    let err = NodeIdentity::from_pem(cert.cert_pem(), cert.cert_pem()).unwrap_err();
    assert!(matches!(err, IdentityError::KeyPem(_)), "{err:?}");
}

#[test]
fn a_well_formed_pem_section_holding_garbage_der_is_a_bad_certificate() {
    let key = NodeIdentity::generate().unwrap();
    let garbage = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    let err = NodeIdentity::from_pem(garbage, key.key_pem()).unwrap_err();
    assert!(matches!(err, IdentityError::BadCertificate(_)), "{err:?}");
}

#[test]
fn a_private_key_section_holding_garbage_is_an_unsupported_key() {
    let cert = NodeIdentity::generate().unwrap();
    let garbage = "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n";
    let err = NodeIdentity::from_pem(cert.cert_pem(), garbage).unwrap_err();
    assert!(matches!(err, IdentityError::UnsupportedKey(_)), "{err:?}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let a = NodeIdentity::generate().unwrap();
    let b = NodeIdentity::generate().unwrap();
    let err = NodeIdentity::from_pem(a.cert_pem(), b.key_pem()).unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch), "{err:?}");
}

#[test]
fn node_id_of_garbage_bytes_is_a_bad_certificate() {
    for bytes in [&b""[..], &b"\x30\x03\x02\x01\x00"[..], &[0xff; 64][..]] {
        let err = node_id_of_cert(bytes).unwrap_err();
        assert!(matches!(err, IdentityError::BadCertificate(_)), "{err:?}");
    }
}

#[test]
fn names_not_made_by_server_name_for_carry_no_node_id() {
    let id = NodeId([0xab; 32]);
    let good = server_name_for(id);
    assert_eq!(node_id_from_server_name(&good), Some(id));
    let hex = id.to_hex();
    for name in [
        "example.com".to_string(),
        format!("{hex}.node.p2p")
            .chars()
            .take(60)
            .collect::<String>(),
        format!("{}.{}.node.p2q", &hex[..32], &hex[32..]),
        format!("{}.{}.node.p2p", &hex[..31], &hex[31..]),
        format!("{}.{}.node.p2p", &hex[..32], "z".repeat(32)),
    ] {
        let name = ServerName::try_from(name).unwrap();
        assert_eq!(node_id_from_server_name(&name), None, "{name:?}");
    }
    let ip = ServerName::try_from("127.0.0.1").unwrap();
    assert_eq!(node_id_from_server_name(&ip), None);
}

quickcheck! {
    fn server_names_round_trip_every_node_id(a: u64, b: u64, c: u64, d: u64) -> bool {
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_mut(8).zip([a, b, c, d]) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let id = NodeId(bytes);
        node_id_from_server_name(&server_name_for(id)) == Some(id)
    }
}

#[test]
fn a_generated_key_is_version_1_pkcs8_private_key_pem() {
    let identity = NodeIdentity::generate().unwrap();
    let pem = identity.key_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    let der = identity.key_der();
    let der = der.secret_der();
    // SEQUENCE of 46 bytes, INTEGER 0 (version 1), the Ed25519 OID, the 32-byte seed.
    assert_eq!(der.len(), 48);
    assert_eq!(
        der[..16],
        [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20
        ]
    );
}

#[test]
fn a_version_2_pkcs8_key_as_ring_writes_it_still_loads() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    // ring's form: version 2 with the public key attached (RFC 5958).
    assert_eq!(key.serialized_der()[4], 0x01);
    assert_eq!(key.serialized_der().len(), 83);
    let cert = rcgen::CertificateParams::new(vec!["x.node.p2p".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let loaded = NodeIdentity::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
    assert_eq!(
        loaded.node_id(),
        NodeId::from_public_key_der(&key.public_key_der())
    );
}
