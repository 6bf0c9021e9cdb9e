//! Helpers shared by the threaded driver's tests: identities, payloads, waits, and raw TLS
//! connections of a member that the test speaks for.
#![allow(
    clippy::disallowed_methods,
    reason = "the raw member speaks the wire format by hand"
)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use p2p_threads::ThreadedNode;
use p2p_transport::codec::{self, HELLO_LEN, Hello};
use p2p_transport::identity::NodeIdentity;
use p2p_transport::tls::{self, Members, Membership, server_name_for};
use rustls::{ClientConnection, StreamOwned};

/// Upper bound of any single wait.
pub const WAIT: Duration = Duration::from_secs(20);

/// A raw member's TLS stream.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// `n` fresh identities in ascending node-id order.
pub fn identities(n: usize) -> Vec<NodeIdentity> {
    let mut ids: Vec<NodeIdentity> = (0..n)
        .map(|_| NodeIdentity::generate().expect("identity"))
        .collect();
    ids.sort_by_key(|i| i.node_id());
    ids
}

/// `len` bytes that differ with `tag`.
pub fn bytes(tag: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
        .collect::<Vec<u8>>()
        .into()
}

/// Waits until `cond` holds, failing the test after [`WAIT`].
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A TLS connection of `identity` to `target` that has sent our hello (reads wait at most 5 s).
pub fn open_raw_member(
    identity: &NodeIdentity,
    members: &Members,
    target: &ThreadedNode,
) -> io::Result<Tls> {
    open_raw_member_as(identity, members, target, Hello::new(1))
}

/// [`open_raw_member`] announcing `ours`.
pub fn open_raw_member_as(
    identity: &NodeIdentity,
    members: &Members,
    target: &ThreadedNode,
    ours: Hello,
) -> io::Result<Tls> {
    let cfg = tls::client_config(identity, &Membership::new(members.clone())).unwrap();
    let conn = ClientConnection::new(cfg, server_name_for(target.node_id())).unwrap();
    let sock = TcpStream::connect(target.local_addr())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = StreamOwned::new(conn, sock);
    let mut hello = BytesMut::new();
    codec::encode_hello(&ours, &mut hello);
    tls.write_all(&hello)?;
    Ok(tls)
}

/// [`raw_member`], or the error that ended the handshake or the hello exchange.
pub fn try_raw_member(
    identity: &NodeIdentity,
    members: &Members,
    target: &ThreadedNode,
) -> io::Result<Tls> {
    let mut tls = open_raw_member(identity, members, target)?;
    let mut theirs = [0u8; HELLO_LEN];
    tls.read_exact(&mut theirs)?;
    codec::decode_hello(&theirs).map_err(io::Error::other)?;
    Ok(tls)
}

/// A raw TLS connection of `identity` to `target`, past both hellos.
pub fn raw_member(identity: &NodeIdentity, members: &Members, target: &ThreadedNode) -> Tls {
    try_raw_member(identity, members, target).unwrap()
}
