//! Hostile members on the wire, over real TLS on loopback: partial messages held open by
//! colluders, and a member that never reads. Each test runs the attack and checks that honest
//! artifacts still arrive within a stated bound while the node's state stays bounded.
#![allow(
    clippy::disallowed_methods,
    reason = "the tests play hostile peers that speak the wire format by hand"
)]

use std::time::{Duration, Instant};

use crate::support::*;
use bytes::{BufMut, Bytes, BytesMut};
use p2p_core::chunks::DEFAULT_CHUNK_SIZE;
use p2p_core::{Class, Kind, Message, Priority};
use p2p_tokio::NodeHandle;
use p2p_transport::codec::{self, HELLO_LEN, Hello};
use p2p_transport::identity::NodeIdentity;
use p2p_transport::mux::{MuxConfig, MuxSender};
use p2p_transport::tls::{self, Members, Membership, server_name_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type Tls = TlsStream<TcpStream>;

/// A raw TLS connection of a member to `target` with a receive buffer of `rcvbuf` bytes, past
/// both hellos.
async fn raw_member(
    identity: &NodeIdentity,
    members: &Members,
    target: &NodeHandle,
    rcvbuf: Option<u32>,
) -> Tls {
    let cfg = tls::client_config(identity, &Membership::new(members.clone())).unwrap();
    let sock = TcpSocket::new_v4().unwrap();
    if let Some(size) = rcvbuf {
        sock.set_recv_buffer_size(size).unwrap();
    }
    let tcp = sock.connect(target.local_addr()).await.unwrap();
    let mut tls = TlsConnector::from(cfg)
        .connect(server_name_for(target.node_id()), tcp)
        .await
        .unwrap();
    let mut hello = BytesMut::new();
    codec::encode_hello(&Hello::new(2), &mut hello);
    tls.write_all(&hello).await.unwrap();
    let mut theirs = [0u8; HELLO_LEN];
    tls.read_exact(&mut theirs).await.unwrap();
    codec::decode_hello(&theirs).unwrap();
    tls
}

/// The first frame of a message of `total` bytes on `stream`, carrying `len` filler bytes: it
/// announces (and makes the receiver reserve) the whole message.
fn first_frame(stream: u32, total: u32, len: u32) -> BytesMut {
    let mut f = BytesMut::new();
    f.put_u32_le(stream);
    f.put_u8(3 | 0x04); // bulk, FIRST
    f.put_u32_le(len);
    f.put_u32_le(total);
    f.put_bytes(0x5a, len as usize);
    f
}

/// Publishes three artifacts of 100 KB and one of 1 MiB (tagged from `tag`) on `from` and
/// returns how long until `to` delivered them all.
async fn honest_batch(
    from: &NodeHandle,
    rx: &mut p2p_tokio::Deliveries,
    tag: u8,
    extra: &[p2p_core::ArtifactId],
) -> Duration {
    let start = Instant::now();
    let mut ids = extra.to_vec();
    for (i, len) in [100_000, 100_000, 100_000, 1 << 20].into_iter().enumerate() {
        ids.push(
            from.publish(Kind(1), Bytes::new(), bytes(tag + i as u8, len))
                .await
                .unwrap(),
        );
    }
    ids.sort();
    assert_eq!(ids_of(&receive(rx, ids.len()).await), ids);
    start.elapsed()
}

/// Encodes `msgs` as the multiplexer sends them.
fn frames(mux: &mut MuxSender, msgs: &[(Class, Message)]) -> BytesMut {
    let mut out = BytesMut::new();
    for (class, msg) in msgs {
        mux.push(*class, msg).unwrap();
        while mux.poll_transmit(&mut out, 1 << 20) > 0 {}
    }
    out
}

/// Plays a colluder holding partial messages open: sends `heads` first frames of 4 MiB
/// messages, then a keepalive every 200 ms, reading (and dropping) whatever the node sends.
/// Returns how long after the heads the node ended the connection.
async fn hold_partials(mut tls: Tls, heads: u32, stream_base: u32) -> Duration {
    let mut out = BytesMut::new();
    for i in 0..heads {
        out.extend_from_slice(&first_frame(stream_base + i, 4 << 20, 16 << 10));
    }
    tls.write_all(&out).await.unwrap();
    let sent = Instant::now();
    let mut mux = MuxSender::new(MuxConfig::default()).unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            r = tls.read(&mut sink) => match r {
                Ok(0) | Err(_) => return sent.elapsed(),
                Ok(_) => {}
            },
            _ = tick.tick() => {
                let ka = frames(&mut mux, &[(Class::Control, Message::Adverts(Vec::new()))]);
                if tls.write_all(&ka).await.is_err() {
                    return sent.elapsed();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colluders_holding_partial_messages_are_cut_at_the_stall_deadline_and_honest_artifacts_flow()
 {
    init_log();
    // Stall timeout 1.8 s: a message with no frame for 1.8 s fails the connection; the
    // colluders send the first frame of each message and then only keepalives. Node-wide cap 64 MiB; with
    // four connections (b and three colluders) 8 MiB is reserved for each.
    let cap = 64 << 20;
    let stall = Duration::from_millis(1800);
    let (rogues, members, nodes) = nodes_and_rogues(3, |c| {
        c.mux.partial_timeout = stall;
        c.reassembly_cap = cap;
        // Artifacts up to 8 MiB travel whole, so the colluders' 4 MiB messages are within the
        // limits and only the budget and the stall rule hold them.
        whole_up_to(c, 8 << 20);
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rx_a = a.take_deliveries().unwrap();
    let baseline = honest_batch(b, &mut rx_a, 30, &[]).await;
    let mut conns = Vec::new();
    for r in &rogues {
        conns.push(raw_member(r, &members, a, None).await);
    }
    wait_metrics(a, "colluders admitted", |m| m.peers_connected == 4).await;

    // Each colluder announces 6 x 4 MiB and sends 16 KiB of each: 72 MiB wanted in total.
    let mut attacks = Vec::new();
    for (k, tls) in conns.into_iter().enumerate() {
        attacks.push(tokio::spawn(hold_partials(tls, 6, 1000 * (k as u32 + 1))));
    }
    // The first two get 24 MiB each (their shares and the free half); the third its 8 MiB
    // share, then a refusal (not a ban): what is left is b's share.
    wait_metrics(a, "partials reserved", |m| m.reassembly_bytes >= 48 << 20).await;
    let attack_on = Instant::now();

    // During the attack b's artifacts reach a: three of 100 KB and one of 1 MiB.
    let honest = honest_batch(b, &mut rx_a, 40, &[]).await;
    let reserved_meanwhile = a.metrics().reassembly_bytes;
    let during = attack_on.elapsed();

    let mut cut_after = Vec::new();
    for t in attacks {
        cut_after.push(within(1, "colluder cut", t).await.unwrap());
    }
    let m = a.metrics();
    eprintln!(
        "honest delivery {honest:?} (without attack {baseline:?}; attack on for {during:?}, {} MiB reserved then); colluders cut after {cut_after:?}; peak {} MiB of {} MiB",
        reserved_meanwhile >> 20,
        m.reassembly_peak_bytes >> 20,
        cap >> 20
    );
    assert!(
        during < stall,
        "the honest artifacts arrived while the partials were held"
    );
    assert!(
        honest < Duration::from_secs(3),
        "honest artifacts within one request timeout of the 1 MiB artifact (3 s): {honest:?}"
    );
    assert_eq!(m.core.retries, 0, "no honest request failed");
    assert!(
        m.reassembly_peak_bytes <= cap as u64,
        "the node-wide cap holds"
    );
    // Each colluder is either refused by the budget at once (not a misbehaviour: the third
    // in line, or a second one if b's honest transfers hold part of the shared half at that
    // moment) or cut for stalling (a misbehaviour), one timeout after its only frame.
    let early = cut_after
        .iter()
        .filter(|c| **c < stall - Duration::from_millis(100));
    let early = early.count();
    for c in &cut_after {
        assert!(
            *c < stall - Duration::from_millis(100)
                || (*c >= stall - Duration::from_millis(100)
                    && *c < stall + Duration::from_millis(1500)),
            "cut at once or at the stall deadline: {c:?}"
        );
    }
    assert!(
        early >= 1,
        "a colluder was refused by the budget: {cut_after:?}"
    );
    assert!(
        early < 3,
        "a colluder held its partials until the stall deadline: {cut_after:?}"
    );
    assert_eq!(
        m.protocol_errors,
        (3 - early) as u64,
        "the stalls, and only they, counted as misbehaviour"
    );
    wait_metrics(a, "partials released", |m| m.reassembly_bytes == 0).await;
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_not_cut_for_a_write_stall_shorter_than_the_keepalive_interval() {
    init_log();
    // Only bytes that wait for the socket arm the write stall timer: the hellos, written
    // during the handshake, and the keepalives are on the wire, so connections with nothing to
    // send outlive many stall timeouts.
    let stall = Duration::from_millis(200);
    let keepalive = Duration::from_millis(700);
    let nodes = subnet(
        identities(2)
            .into_iter()
            .map(|id| {
                let mut c = config(id);
                c.write_stall_timeout = stall;
                c.keepalive_interval = keepalive;
                c
            })
            .collect(),
    )
    .await;
    wait_connected(&nodes, 1).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Two keepalive intervals (seven stall timeouts) with nothing but keepalives to send.
    tokio::time::sleep(2 * keepalive).await;
    for n in &nodes {
        let m = n.metrics();
        assert_eq!(m.write_stalls, 0, "an idle connection was cut: {m:#?}");
        assert_eq!(m.disconnects, 0, "{m:#?}");
        assert!(m.keepalives_sent >= 1, "the connection was idle: {m:#?}");
    }
    // And the connection still carries artifacts.
    let mut rx_b = b.take_deliveries().unwrap();
    let id = a
        .publish(Kind(1), Bytes::new(), bytes(7, 1 << 20))
        .await
        .unwrap();
    assert_eq!(ids_of(&receive(&mut rx_b, 1).await), vec![id]);
    assert_eq!(a.metrics().write_stalls, 0);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_is_cut_after_the_write_stall_timeout_while_honest_artifacts_flow()
 {
    init_log();
    let stall = Duration::from_millis(500);
    let (rogues, members, nodes) = nodes_and_rogues(1, |c| {
        c.write_stall_timeout = stall;
        c.socket_buffer = Some(64 << 10);
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rx_b = b.take_deliveries().unwrap();
    let baseline = honest_batch(a, &mut rx_b, 30, &[]).await;
    // a holds a 4 MiB artifact (32 chunks); the rogue sees its advert, asks for every chunk,
    // and never reads another byte: 4 MiB wait for a socket whose buffers hold a few hundred
    // KiB.
    let mut tls = raw_member(&rogues[0], &members, a, Some(64 << 10)).await;
    wait_metrics(a, "rogue admitted", |m| m.peers_connected == 2).await;
    let big_len = 4u32 << 20;
    let big = a
        .publish(Kind(1), Bytes::new(), bytes(60, big_len as usize))
        .await
        .unwrap();
    let mut mux = MuxSender::new(MuxConfig::default()).unwrap();
    let requests: Vec<(Class, Message)> = (0..big_len / DEFAULT_CHUNK_SIZE)
        .map(|index| {
            let msg = Message::ChunkRequest {
                req_id: u64::from(index),
                id: big,
                index,
                priority: Priority(0),
            };
            (Class::Control, msg)
        })
        .collect();
    tls.write_all(&frames(&mut mux, &requests)).await.unwrap();
    let asked = Instant::now();
    // Keep the rogue's side alive with keepalives (it sends, it only never reads).
    let keepalive = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let ka = frames(&mut mux, &[(Class::Control, Message::Adverts(Vec::new()))]);
            if tls.write_all(&ka).await.is_err() {
                return tls;
            }
        }
    });

    // Meanwhile a's artifacts reach b: three of 100 KB and one of 1 MiB (and the 4 MiB one).
    let honest = honest_batch(a, &mut rx_b, 50, &[big]).await;

    wait_metrics(a, "the rogue cut", |m| {
        m.write_stalls == 1 && m.peers_connected == 1
    })
    .await;
    let cut = asked.elapsed();
    let m = a.metrics();
    eprintln!(
        "honest delivery {honest:?} (without attack {baseline:?}); rogue cut {cut:?} after its requests; {} bytes written in all",
        m.bytes_written
    );
    assert!(
        honest < Duration::from_secs(7),
        "honest artifacts within one request timeout of the 4 MiB artifact (6 s): {honest:?}"
    );
    assert!(cut >= stall, "not before the stall timeout: {cut:?}");
    assert!(
        cut < Duration::from_secs(5),
        "cut soon after the stall: {cut:?}"
    );
    // Not a ban, and nothing else cut it: its send queue never hit its cap.
    assert_eq!(m.protocol_errors, 0);
    assert_eq!(m.send_queue_overflows, 0);
    assert_eq!(a.connected_peers().await.unwrap(), vec![b.node_id()]);
    keepalive.abort();
    for n in &nodes {
        n.shutdown().await;
    }
}
