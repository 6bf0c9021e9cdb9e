//! The network: connections between nodes, each node's uplink and downlink, and the frames on
//! their way (see the network model in the module docs of [`super`]).
//!
//! Invariants:
//! - there is one [`Conn`] per link of the topology, keyed by (smaller, larger) node, and the
//!   adjacency lists name each link at both ends;
//! - a message belongs to the connection epoch it was queued on: once that connection closed, the
//!   uplink drops it when its turn comes and [`Network::carries`] refuses its frames in flight, so
//!   it is never delivered on a later connection between the same pair;
//! - the frames of one direction of a connection arrive in the order they left;
//! - per direction, the bytes sent and not yet through the receiver's downlink stay within the
//!   window (twice the bandwidth-delay product, at least [`MIN_WINDOW`]), except that a single
//!   frame always fits an empty window;
//! - each direction of a connection queues its messages in a [`Scheduler`], the real
//!   multiplexer's frame scheduler, so frames leave in the order and sizes a real connection
//!   cuts them; a node's uplink serves its connections round-robin, a frame at a time, skipping
//!   those whose window is full (as TCP shares a link among connections);
//! - every message and every bare first frame ([`Network::enqueue_partial`]) of a direction
//!   gets the next stream number of that direction, carried by each of its frames, so the
//!   receiver can account for a message from its first frame to its last;
//! - a watched sender ([`Network::new`]'s `write_stall`) arms one [`EvKind::WriteStall`] check
//!   per direction when its window is full; `progress` is when the direction last had a frame
//!   accepted (or turned busy);
//! - a direction turns congested when its queued bytes reach the high water mark and clears
//!   when they fall to the low one (the rule of the connection layer's `ConnSender`); each
//!   change is returned once, to be told to the sender;
//! - a sender that runs the connection layer ([`Layer`]) sends its hello (the codec's
//!   [`HELLO_LEN`] bytes, unframed) before any other frame of a connection, and its keepalive
//!   timer (`p2p_transport::conn::KeepaliveTimer`) restarts at every frame it starts; an
//!   honest receiver's hello and idle timers (`p2p_transport::conn::ReceiveTimers`) hear every
//!   frame through its downlink; a connection with timers has one [`EvKind::ConnTimer`] check
//!   pending, at its earliest deadline or later (never earlier than needed);
//! - while a partition cuts a link ([`Network::set_cut`]), its frames leave the uplinks and
//!   wait, in order, until it heals (as TCP retransmits them); a connection that ends
//!   meanwhile loses them.

use super::queue::{Delivery, EvKind, FrameEv, Queue};
use super::rng::Rng;
use super::scenario::CpuCost;
use super::{FIRST_FRAME_HEADER, FRAME_PAYLOAD, encoded_len, wire_len};
use hashbrown::HashMap;
use p2p_core::{Class, Message, Revocable, Time};
use p2p_transport::codec::HELLO_LEN;
use p2p_transport::conn::{ConnConfig, ConnError, KeepaliveTimer, ReceiveTimers};
use p2p_transport::mux::MuxConfig;
use p2p_transport::sched::Scheduler;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Smallest per-connection window (bytes sent and not yet through the receiver's downlink).
const MIN_WINDOW: u64 = 64 * 1024;

/// The connection on one link; index 0 of each pair is the direction from the smaller node.
struct Conn {
    up: bool,
    epoch: u32,
    latency: u64,
    /// Each direction's messages, waiting to be cut into frames (`None` while there are none:
    /// an idle scheduler holds no state, and most directions are idle most of the time).
    sched: [Option<Box<Scheduler<Queued>>>; 2],
    /// Whether each direction is in its sender's round-robin list.
    listed: [bool; 2],
    congested: [bool; 2],
    last_arrival: [u64; 2],
    /// Bytes sent and not yet through the receiver's downlink (bounded by the window).
    inflight: [u64; 2],
    /// The next stream number of each direction.
    next_stream: [u32; 2],
    /// Bare first frames to send before the scheduler's (class and announced total).
    bare: [Vec<(Class, u32)>; 2],
    /// When each direction last had a frame accepted by the link, or turned busy.
    progress: [u64; 2],
    /// Whether a write stall check is scheduled for each direction.
    stall_armed: [bool; 2],
    /// Whether each direction's hello waits to be sent.
    hello: [bool; 2],
    /// Whether each direction's hello went through its receiver's downlink (or its sender
    /// sends none).
    hello_through: [bool; 2],
    /// Each direction's keepalive timer at its sender, if the sender runs the connection layer.
    keepalive: [Option<KeepaliveTimer>; 2],
    /// Each direction's hello and idle timers at its receiver, if the receiver is honest.
    arrival: [Option<ReceiveTimers>; 2],
    /// When the pending [`EvKind::ConnTimer`] check is due.
    timer_at: Option<u64>,
    /// Whether a partition cuts the link.
    cut: bool,
    /// Each direction's frames sent while the link is cut, in order.
    held: [Vec<FrameEv>; 2],
    /// Until when each direction recovers a frame its receiver's downlink dropped (see
    /// [`TailDrop`]): its frames reach the downlink again from then, in order.
    recover_until: [u64; 2],
}

impl Conn {
    fn carries(&self, epoch: u32) -> bool {
        self.up && self.epoch == epoch
    }

    /// Whether direction `d` has bytes waiting to be sent (its hello, frames).
    fn busy(&self, d: usize) -> bool {
        self.hello[d] || self.sched[d].is_some() || !self.bare[d].is_empty()
    }

    /// The window of a sender with an uplink of `bps`.
    fn window(&self, bps: u64) -> u64 {
        ((bps as u128 * 2 * self.latency as u128 / 8_000_000_000) as u64).max(MIN_WINDOW)
    }
}

/// A message in a direction's scheduler, with its stream number.
struct Queued {
    msg: Message,
    stream: u32,
}

/// A direction's scheduler, with the real multiplexer's default weights and interleaving and
/// the simulator's frame size.
fn scheduler() -> Box<Scheduler<Queued>> {
    let mux = MuxConfig::default();
    Box::new(Scheduler::new(FRAME_PAYLOAD, mux.weights, mux.max_active))
}

/// The frame leaving an uplink.
struct Frame {
    to: u32,
    epoch: u32,
    bytes: u32,
    class: Class,
    stream: u32,
    first_of: Option<u32>,
    ends_partial: bool,
    hello: bool,
    last: Option<Message>,
}

/// What one end of a connection runs of the connection layer's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layer {
    /// An honest node: its hello and keepalives as a sender, the hello and idle timeouts as a
    /// receiver.
    Honest,
    /// A byzantine actor over a real connection layer: its hello and keepalives as a sender.
    Sender,
    /// Nothing: no hello, no keepalive, no timeout (a mute actor).
    Bare,
}

/// What a connection's timer check found.
pub(super) enum Due {
    /// Nothing to do: the check is stale or the connection is gone.
    Stale,
    /// The receiving end `by` ends the connection to `peer` with `error`.
    Expired {
        by: u32,
        peer: u32,
        error: ConnError,
    },
    /// Keepalives to queue now, as (sender, receiver); the caller re-arms the check.
    Check([Option<(u32, u32)>; 2]),
}

/// One node's uplink (its connections with queued messages, served round-robin, and the frame
/// being sent) and downlink.
struct Port {
    up_bps: u64,
    down_bps: u64,
    uplink: VecDeque<u32>,
    current: Option<Frame>,
    /// When the downlink is through with the frames that reached it.
    down_free: u64,
    /// When the processors are through with the last frame that reached it (see [`Cpu`]).
    cpu_done: u64,
}

/// Bounded downlink queues (`Scenario::tail_drop`): a frame that finds its receiver's
/// downlink holding more than `queue` of bytes at its rate plus `extra` bytes is dropped (a
/// frame into an empty queue never is), and its connection's direction recovers it as TCP
/// would: the frame, and every later frame of that direction, reaches the downlink again
/// `recovery` after the drop, in order. Until then the frame counts in the sender's window,
/// so the sender serves its other connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TailDrop {
    /// Queue length in time at the downlink's rate, ns.
    pub(super) queue: u64,
    /// Bytes the queue holds beyond it.
    pub(super) extra: u64,
    /// Time from a drop to the frame's retransmission, ns.
    pub(super) recovery: u64,
}

impl TailDrop {
    /// The queue limit of a downlink of `bps`, bytes.
    fn limit(&self, bps: u64) -> u64 {
        (u128::from(self.queue) * u128::from(bps) / 8_000_000_000) as u64 + self.extra
    }
}

/// The processors the nodes share (`Scenario::cpu`): each frame through a downlink takes the
/// core that is free first, from when the frame is through, for the frame's cost.
///
/// A frame reserves its core when it reaches the downlink, in the order frames arrive, so a
/// core's idle time before a reservation is not given to a frame that arrives later: under
/// load (the case the model is for) cores are rarely idle, and the order is deterministic.
pub(super) struct Cpu {
    /// When each core is free.
    free: Vec<u64>,
    cost: CpuCost,
}

impl Cpu {
    /// `cores` cores (at least one), a frame costing `cost`.
    pub(super) fn new(cores: usize, cost: CpuCost) -> Self {
        Cpu {
            free: vec![0; cores.max(1)],
            cost,
        }
    }

    /// Runs a frame of `bytes` ready at `ready` on the core free first; returns when it ends.
    fn run(&mut self, ready: u64, bytes: u64) -> u64 {
        let core = self.free.iter_mut().min().expect("at least one core");
        let start = ready.max(*core);
        *core = start + self.cost.of(bytes);
        *core
    }
}

/// What became of a message handed to [`Network::enqueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Enqueued {
    /// The two nodes share no link.
    NoLink,
    /// The connection is down: the message is lost.
    Lost,
    /// The message waits in the sender's uplink; `congested` when this direction just turned
    /// congested.
    Waiting { congested: bool },
}

/// Connections, ports and frames of every node.
pub(super) struct Network {
    conns: HashMap<(u32, u32), Conn>,
    adj: Vec<Vec<u32>>,
    ports: Vec<Port>,
    /// Largest extra latency of a frame, drawn uniformly per frame from `rng`.
    jitter: u64,
    rng: Rng,
    /// High and low water marks of queued bytes per direction.
    congestion: Option<(u64, u64)>,
    wire_bytes: u64,
    /// The counted messages and their wire bytes, by message type.
    wire_by_message: BTreeMap<&'static str, (u64, u64)>,
    /// The write stall timeout, and per node whether its sends are watched by it.
    write_stall: Option<(u64, Vec<bool>)>,
    /// The connection layer's timer settings, and per node what it runs of them (none: every
    /// end is [`Layer::Bare`]).
    timers: Option<(ConnConfig, Vec<Layer>)>,
    /// The processors the nodes share, if modelled.
    cpu: Option<Cpu>,
    /// The downlinks' queue limit, if modelled.
    tail_drop: Option<TailDrop>,
    /// Frames the downlinks dropped.
    frames_dropped: u64,
}

fn key(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

fn dir(from: u32, to: u32) -> usize {
    usize::from(from > to)
}

fn tx_nanos(bytes: u64, bps: u64) -> u64 {
    (bytes as u128 * 8_000_000_000 / bps.max(1) as u128) as u64
}

/// Nanoseconds of `d`, saturating.
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Network {
    /// A network of nodes with these bandwidths (both directions) and no links yet.
    /// With `write_stall`, the nodes it names close a connection whose queued bytes to the
    /// peer saw no progress for its timeout (see [`Network::write_stalled`]). With `timers`,
    /// each node's ends run the connection layer's hello, keepalive and idle timers as its
    /// [`Layer`] says.
    pub(super) fn new(
        bandwidths: impl IntoIterator<Item = u64>,
        jitter: Duration,
        congestion: Option<(u64, u64)>,
        write_stall: Option<(Duration, Vec<bool>)>,
        timers: Option<(ConnConfig, Vec<Layer>)>,
        rng: Rng,
    ) -> Self {
        let ports: Vec<Port> = bandwidths
            .into_iter()
            .map(|bps| Port {
                up_bps: bps,
                down_bps: bps,
                uplink: Default::default(),
                current: None,
                down_free: 0,
                cpu_done: 0,
            })
            .collect();
        Network {
            conns: HashMap::new(),
            adj: vec![Vec::new(); ports.len()],
            ports,
            jitter: nanos(jitter),
            rng,
            congestion,
            wire_bytes: 0,
            wire_by_message: BTreeMap::new(),
            write_stall: write_stall.map(|(t, w)| (nanos(t).max(1), w)),
            timers,
            cpu: None,
            tail_drop: None,
            frames_dropped: 0,
        }
    }

    /// Bounds every downlink's queue as `tail_drop` says.
    pub(super) fn set_tail_drop(&mut self, tail_drop: TailDrop) {
        self.tail_drop = Some(tail_drop);
    }

    /// Frames the downlinks dropped (each recovered later).
    pub(super) fn frames_dropped(&self) -> u64 {
        self.frames_dropped
    }

    /// Makes every frame through a downlink take its share of `cpu` before it reaches its
    /// receiver.
    pub(super) fn set_cpu(&mut self, cpu: Cpu) {
        self.cpu = Some(cpu);
    }

    /// What node `i` runs of the connection layer's timers.
    fn layer(&self, i: u32) -> Layer {
        self.timers
            .as_ref()
            .and_then(|(_, l)| l.get(i as usize).copied())
            .unwrap_or(Layer::Bare)
    }

    /// Adds a link between `a` and `b` (down), with the latency `latency` gives for its key;
    /// ignores loops, unknown nodes and existing links.
    pub(super) fn add_link(
        &mut self,
        a: usize,
        b: usize,
        latency: impl FnOnce((usize, usize)) -> Duration,
    ) {
        if a == b || a >= self.adj.len() || b >= self.adj.len() {
            return;
        }
        let k = key(a as u32, b as u32);
        if self.conns.contains_key(&k) {
            return;
        }
        self.conns.insert(
            k,
            Conn {
                up: false,
                epoch: 0,
                latency: nanos(latency((k.0 as usize, k.1 as usize))),
                sched: [None, None],
                listed: [false; 2],
                congested: [false; 2],
                last_arrival: [0; 2],
                inflight: [0; 2],
                next_stream: [0; 2],
                bare: [Vec::new(), Vec::new()],
                progress: [0; 2],
                stall_armed: [false; 2],
                hello: [false; 2],
                hello_through: [true; 2],
                keepalive: [None, None],
                arrival: [None, None],
                timer_at: None,
                cut: false,
                held: [Vec::new(), Vec::new()],
                recover_until: [0; 2],
            },
        );
        self.adj[a].push(b as u32);
        self.adj[b].push(a as u32);
    }

    /// The nodes linked to `i`, in the order the links were added.
    pub(super) fn neighbours(&self, i: usize) -> &[u32] {
        &self.adj[i]
    }

    /// The links (as (smaller, larger) node) whose state `up` passes `keep`, sorted.
    pub(super) fn links_where(&self, keep: impl Fn((u32, u32), bool) -> bool) -> Vec<(u32, u32)> {
        let mut links: Vec<(u32, u32)> = self
            .conns
            .iter()
            .filter(|(k, c)| keep(**k, c.up))
            .map(|(k, _)| *k)
            .collect();
        links.sort_unstable();
        links
    }

    /// Bytes queued by the senders counted in [`Network::enqueue`].
    pub(super) fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// The messages counted in [`Network::wire_bytes`] and their wire bytes, by message type.
    pub(super) fn wire_by_message(&self) -> Vec<(&'static str, u64, u64)> {
        self.wire_by_message
            .iter()
            .map(|(name, (n, bytes))| (*name, *n, *bytes))
            .collect()
    }

    /// Sets both directions of `i`'s bandwidth.
    pub(super) fn set_bandwidth(&mut self, i: usize, bps: u64) {
        self.ports[i].up_bps = bps.max(1);
        self.ports[i].down_bps = bps.max(1);
    }

    /// Empties `i`'s uplink (its node went down).
    pub(super) fn clear_uplink(&mut self, i: usize) {
        let port = &mut self.ports[i];
        for to in port.uplink.drain(..) {
            if let Some(conn) = self.conns.get_mut(&key(i as u32, to)) {
                let d = dir(i as u32, to);
                conn.sched[d] = None;
                conn.bare[d].clear();
                conn.listed[d] = false;
            }
        }
        port.current = None;
    }

    /// Brings the link between `a` and `b` up in a new epoch; false when there is no such link
    /// or it is up already. Each end that runs the connection layer queues its hello first and
    /// starts its timers (the caller arms the check with [`Network::arm_timer`] and starts the
    /// frames).
    pub(super) fn connect(&mut self, a: u32, b: u32, now: u64) -> bool {
        let k = key(a, b);
        let layers = [self.layer(k.0), self.layer(k.1)];
        let Some(conn) = self.conns.get_mut(&k) else {
            return false;
        };
        if conn.up {
            return false;
        }
        conn.up = true;
        conn.epoch += 1;
        conn.sched = [None, None];
        conn.congested = [false; 2];
        conn.last_arrival = [now; 2];
        conn.inflight = [0; 2];
        conn.next_stream = [0; 2];
        conn.bare = [Vec::new(), Vec::new()];
        conn.progress = [now; 2];
        conn.timer_at = None;
        conn.cut = false;
        conn.recover_until = [0; 2];
        let t = Time::from_nanos(now);
        // Direction d goes from end d to end 1 - d.
        for d in 0..2 {
            let (sender, receiver) = (layers[d], layers[1 - d]);
            let sends = sender != Layer::Bare;
            conn.hello[d] = sends;
            conn.hello_through[d] = !sends;
            let cfg = self.timers.as_ref().map(|(c, _)| c);
            conn.keepalive[d] = cfg.filter(|_| sends).map(|c| KeepaliveTimer::new(c, t));
            conn.arrival[d] = cfg
                .filter(|_| receiver == Layer::Honest)
                .map(|c| ReceiveTimers::new(c, t));
            if sends && !conn.listed[d] {
                conn.listed[d] = true;
                let from = if d == 0 { k.0 } else { k.1 };
                let to = if d == 0 { k.1 } else { k.0 };
                self.ports[from as usize].uplink.push_back(to);
            }
        }
        true
    }

    /// Schedules the timer check of the connection between `a` and `b` at its earliest
    /// deadline, unless one is pending by then. A direction whose keepalive is overdue while
    /// its bytes wait (a full window) is checked again one interval later: its next frame
    /// restarts the interval.
    pub(super) fn arm_timer(&mut self, a: u32, b: u32, q: &mut Queue) {
        let Some((cfg, _)) = &self.timers else {
            return;
        };
        let k = key(a, b);
        let Some(conn) = self.conns.get_mut(&k).filter(|c| c.up) else {
            return;
        };
        let now = q.now();
        let interval = nanos(cfg.keepalive_interval);
        let mut next: Option<u64> = None;
        for d in 0..2 {
            if let Some(r) = &conn.arrival[d] {
                let t = r.deadline().as_nanos();
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            if let Some(k) = &conn.keepalive[d] {
                let mut t = k.deadline().as_nanos();
                if t <= now && conn.busy(d) {
                    t = now.saturating_add(interval);
                }
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        let Some(t) = next.map(|t| t.max(now)) else {
            return;
        };
        if conn.timer_at.is_some_and(|at| at <= t) {
            return;
        }
        conn.timer_at = Some(t);
        let epoch = conn.epoch;
        q.push(
            t,
            EvKind::ConnTimer {
                a: k.0,
                b: k.1,
                epoch,
            },
        );
    }

    /// The timer check of the connection between `a` and `b` (of `epoch`) at `now`: a
    /// receiver's expired deadline (the first found), else the keepalives due on directions
    /// with nothing waiting (their timers restart now, as `ConnSender` restarts its own when
    /// it queues one).
    pub(super) fn timers_due(&mut self, a: u32, b: u32, epoch: u32, now: u64) -> Due {
        let k = key(a, b);
        let Some(conn) = self.conns.get_mut(&k).filter(|c| c.carries(epoch)) else {
            return Due::Stale;
        };
        if conn.timer_at != Some(now) {
            return Due::Stale;
        }
        conn.timer_at = None;
        let t = Time::from_nanos(now);
        let ends = [k.0, k.1];
        for d in 0..2 {
            if let Some(error) = conn.arrival[d].as_ref().and_then(|r| r.expired(t)) {
                return Due::Expired {
                    by: ends[1 - d],
                    peer: ends[d],
                    error,
                };
            }
        }
        let mut keepalives = [None, None];
        for d in 0..2 {
            let idle = !conn.busy(d);
            if let Some(k) = &mut conn.keepalive[d]
                && idle
                && k.is_due(t)
            {
                k.transmitted(t);
                keepalives[d] = Some((ends[d], ends[1 - d]));
            }
        }
        Due::Check(keepalives)
    }

    /// Whether a receiver's timer watches over something the run must see through: a hello
    /// not yet arrived, or a connection a partition cuts (its idle timeout will end it).
    pub(super) fn timers_watched(&self) -> bool {
        self.conns.values().any(|c| {
            c.up && (0..2).any(|d| {
                c.arrival[d]
                    .as_ref()
                    .is_some_and(|r| c.cut || !r.has_hello())
            })
        })
    }

    /// Cuts the link between `a` and `b` (a partition) or heals it: while cut, frames leave
    /// and wait; healing sends them on, in order, one latency later.
    pub(super) fn set_cut(&mut self, a: u32, b: u32, cut: bool, q: &mut Queue) {
        let Some(conn) = self.conns.get_mut(&key(a, b)).filter(|c| c.up) else {
            return;
        };
        conn.cut = cut;
        if cut {
            return;
        }
        for d in 0..2 {
            for f in std::mem::take(&mut conn.held[d]) {
                let at = (q.now() + conn.latency).max(conn.last_arrival[d]);
                conn.last_arrival[d] = at;
                q.push(at, EvKind::Arrive(f));
            }
        }
    }

    /// Whether the connection between `a` and `b` is established: up, not cut, and both
    /// hellos through.
    pub(super) fn established(&self, a: u32, b: u32) -> bool {
        self.conns
            .get(&key(a, b))
            .is_some_and(|c| c.up && !c.cut && c.hello_through == [true; 2])
    }

    /// Takes the link between `a` and `b` down; false when there is no such link or it is down.
    pub(super) fn close(&mut self, a: u32, b: u32) -> bool {
        let Some(conn) = self.conns.get_mut(&key(a, b)) else {
            return false;
        };
        if !conn.up {
            return false;
        }
        conn.up = false;
        conn.inflight = [0; 2];
        conn.sched = [None, None];
        conn.bare = [Vec::new(), Vec::new()];
        conn.congested = [false; 2];
        conn.hello = [false; 2];
        conn.keepalive = [None, None];
        conn.arrival = [None, None];
        conn.timer_at = None;
        conn.cut = false;
        conn.held = [Vec::new(), Vec::new()];
        true
    }

    /// Whether the connection between `from` and `to` is still the one of `epoch`.
    pub(super) fn carries(&self, from: u32, to: u32, epoch: u32) -> bool {
        self.conns
            .get(&key(from, to))
            .is_some_and(|c| c.carries(epoch))
    }

    /// The epoch of the connection between `a` and `b` if it is up.
    pub(super) fn epoch(&self, a: u32, b: u32) -> Option<u32> {
        self.conns.get(&key(a, b)).filter(|c| c.up).map(|c| c.epoch)
    }

    /// Whether `node`'s uplink is not sending a frame.
    pub(super) fn idle(&self, node: u32) -> bool {
        self.ports[node as usize].current.is_none()
    }

    /// Queues `msg` in `from`'s uplink for `to` at `now`, counting its wire bytes when `count`.
    /// The caller starts a frame if the uplink is [`idle`](Network::idle).
    pub(super) fn enqueue(
        &mut self,
        from: u32,
        to: u32,
        msg: Message,
        class: Class,
        count: bool,
        now: u64,
    ) -> Enqueued {
        let Some(conn) = self.conns.get_mut(&key(from, to)) else {
            return Enqueued::NoLink;
        };
        if !conn.up {
            return Enqueued::Lost;
        }
        let d = dir(from, to);
        if count {
            let len = wire_len(&msg) as u64;
            self.wire_bytes += len;
            let e = self.wire_by_message.entry(msg.name()).or_default();
            e.0 += 1;
            e.1 += len;
        }
        let enc = encoded_len(&msg);
        let stream = conn.next_stream[d];
        conn.next_stream[d] = stream.wrapping_add(1);
        if !conn.busy(d) {
            conn.progress[d] = now;
        }
        let sched = conn.sched[d].get_or_insert_with(scheduler);
        sched.push(class, Queued { msg, stream }, enc);
        let mut congested = false;
        if let Some((high, _)) = self.congestion
            && sched.queued_bytes_total() as u64 >= high
            && !conn.congested[d]
        {
            conn.congested[d] = true;
            congested = true;
        }
        if !conn.listed[d] {
            conn.listed[d] = true;
            self.ports[from as usize].uplink.push_back(to);
        }
        Enqueued::Waiting { congested }
    }

    /// Drops the messages queued in `from`'s direction to `to` whose [`Revocable`] tag `drop`
    /// picks (an answer its requester cancelled, pushes their receiver holds) if none of their
    /// frames left yet (the connection layer's `ConnSender::cancel`); one already started
    /// finishes. A dropped message's wire bytes leave the count again when `count` (they were
    /// counted when queued). Returns whether one was dropped and whether the direction's
    /// congestion just cleared (the queue fell to the low water mark).
    pub(super) fn cancel(
        &mut self,
        (from, to): (u32, u32),
        drop: impl Fn(Revocable) -> bool,
        count: bool,
    ) -> (bool, bool) {
        let d = dir(from, to);
        let Some(conn) = self.conns.get_mut(&key(from, to)) else {
            return (false, false);
        };
        let Some(sched) = conn.sched[d].as_mut() else {
            return (false, false);
        };
        let mut freed = 0u64;
        let by_message = &mut self.wire_by_message;
        let dropped = sched.remove_unstarted(|q| {
            let hit = q.msg.revocable().is_some_and(&drop);
            if hit {
                let len = wire_len(&q.msg) as u64;
                freed += len;
                if count && let Some(e) = by_message.get_mut(q.msg.name()) {
                    e.0 -= 1;
                    e.1 -= len;
                }
            }
            hit
        }) > 0;
        if count {
            self.wire_bytes -= freed;
        }
        let queued = sched.queued_bytes_total() as u64;
        if sched.is_idle() {
            // The uplink skips (and unlists) a direction without a scheduler.
            conn.sched[d] = None;
        }
        let mut cleared = false;
        if let Some((_, low)) = self.congestion
            && dropped
            && conn.congested[d]
            && queued <= low
        {
            conn.congested[d] = false;
            cleared = true;
        }
        (dropped, cleared)
    }

    /// Queues in `from`'s uplink for `to`, ahead of its scheduler's frames, the first frame of a
    /// message of `total` encoded bytes in `class` whose other frames never follow (a full
    /// frame of payload under the first frame header). False when the connection is down.
    /// The caller starts a frame if the uplink is [`idle`](Network::idle).
    pub(super) fn enqueue_partial(&mut self, from: u32, to: u32, class: Class, total: u32) -> bool {
        let Some(conn) = self.conns.get_mut(&key(from, to)).filter(|c| c.up) else {
            return false;
        };
        let d = dir(from, to);
        conn.bare[d].push((class, total));
        if !conn.listed[d] {
            conn.listed[d] = true;
            self.ports[from as usize].uplink.push_back(to);
        }
        true
    }

    /// Whether honest `from`'s bytes queued for `to` on the connection of `epoch` saw no
    /// progress for the write stall timeout: the connection layer's write stall rule
    /// (`p2p_transport::conn::ConnSender`). Otherwise re-arms the check while bytes wait.
    pub(super) fn write_stalled(&mut self, from: u32, to: u32, epoch: u32, q: &mut Queue) -> bool {
        let Some((timeout, _)) = &self.write_stall else {
            return false;
        };
        let Some(conn) = self.conns.get_mut(&key(from, to)) else {
            return false;
        };
        let d = dir(from, to);
        if !conn.carries(epoch) {
            return false;
        }
        conn.stall_armed[d] = false;
        if !conn.busy(d) {
            return false;
        }
        let due = conn.progress[d].saturating_add(*timeout);
        if due <= q.now() {
            return true;
        }
        conn.stall_armed[d] = true;
        q.push(due, EvKind::WriteStall { from, to, epoch });
        false
    }

    /// Whether a write stall check is armed on a direction with bytes waiting.
    pub(super) fn write_watched(&self) -> bool {
        self.conns
            .values()
            .any(|c| (0..2).any(|d| c.stall_armed[d] && c.busy(d)))
    }

    /// Starts `node`'s next frame (from the next connection in round-robin order whose window
    /// has room, the frame its scheduler cuts) and schedules its end for incarnation `inc`.
    /// Returns the peer whose direction stopped being congested, if one did.
    pub(super) fn start_frame(&mut self, node: u32, inc: u32, q: &mut Queue) -> Option<u32> {
        let Network {
            ports,
            conns,
            congestion,
            write_stall,
            ..
        } = self;
        let port = &mut ports[node as usize];
        let watched = write_stall
            .as_ref()
            .filter(|(_, w)| w.get(node as usize).copied().unwrap_or(false))
            .map(|(t, _)| *t);
        for _ in 0..port.uplink.len() {
            let Some(to) = port.uplink.pop_front() else {
                break;
            };
            let d = dir(node, to);
            let Some(conn) = conns.get_mut(&key(node, to)) else {
                continue;
            };
            // A frame always fits an empty window; otherwise it is cut to the room left.
            let window = conn.window(port.up_bps);
            let room = if conn.inflight[d] == 0 {
                usize::MAX
            } else {
                window.saturating_sub(conn.inflight[d]) as usize
            };
            if !conn.up {
                conn.listed[d] = false;
                continue;
            }
            let stream = conn.next_stream[d];
            let bare_len = (FRAME_PAYLOAD + FIRST_FRAME_HEADER) as u64;
            let hello = conn.hello[d];
            let cut = if hello {
                // The hello goes first, unframed; it has no stream number.
                (HELLO_LEN <= room).then(|| {
                    conn.hello[d] = false;
                    (HELLO_LEN as u64, Class::Control, 0, None, false, None)
                })
            } else if let Some(&(class, total)) = conn.bare[d].first() {
                (bare_len as usize <= room).then(|| {
                    conn.bare[d].remove(0);
                    conn.next_stream[d] = stream.wrapping_add(1);
                    (bare_len, class, stream, Some(total), false, None)
                })
            } else if let Some(sched) = conn.sched[d].as_mut() {
                let mut tag = 0;
                sched
                    .next_frame(room, |_, m| tag = m.stream)
                    .map(|(cut, done)| {
                        let first_of = (cut.first() && !cut.last()).then_some(cut.total as u32);
                        let done = done.map(|m| m.msg);
                        let ends_partial = cut.last() && !cut.first();
                        (
                            cut.wire_len() as u64,
                            cut.class,
                            tag,
                            first_of,
                            ends_partial,
                            done,
                        )
                    })
            } else {
                conn.listed[d] = false;
                continue;
            };
            let Some((bytes, class, stream, first_of, ends_partial, done)) = cut else {
                // This connection's window is full: serve another peer's connection.
                port.uplink.push_back(to);
                if let Some(timeout) = watched
                    && !conn.stall_armed[d]
                {
                    conn.stall_armed[d] = true;
                    let due = conn.progress[d].saturating_add(timeout).max(q.now());
                    let epoch = conn.epoch;
                    q.push(
                        due,
                        EvKind::WriteStall {
                            from: node,
                            to,
                            epoch,
                        },
                    );
                }
                continue;
            };
            conn.progress[d] = q.now();
            if let Some(k) = &mut conn.keepalive[d] {
                k.transmitted(Time::from_nanos(q.now()));
            }
            let queued = conn.sched[d]
                .as_ref()
                .map_or(0, |s| s.queued_bytes_total() as u64);
            if conn.sched[d].as_ref().is_some_and(|s| s.is_idle()) {
                conn.sched[d] = None;
            }
            if conn.busy(d) {
                port.uplink.push_back(to);
            } else {
                conn.listed[d] = false;
            }
            conn.inflight[d] += bytes;
            let mut cleared = None;
            if let Some((_, low)) = *congestion
                && conn.congested[d]
                && queued <= low
            {
                conn.congested[d] = false;
                cleared = Some(to);
            }
            port.current = Some(Frame {
                to,
                epoch: conn.epoch,
                bytes: bytes as u32,
                class,
                stream,
                first_of,
                ends_partial,
                hello,
                last: done,
            });
            let t = q.now() + tx_nanos(bytes, port.up_bps);
            q.push(t, EvKind::UplinkDone { node, inc });
            return cleared;
        }
        None
    }

    /// The frame leaving `node`'s uplink is out: it crosses the link (with jitter, never
    /// overtaking an earlier frame) if the connection still carries it. False when the uplink
    /// was not sending; otherwise the caller starts the next frame.
    pub(super) fn frame_sent(&mut self, node: u32, q: &mut Queue) -> bool {
        let Some(f) = self.ports[node as usize].current.take() else {
            return false;
        };
        let j = if self.jitter > 0 {
            self.rng.below(self.jitter + 1)
        } else {
            0
        };
        if let Some(conn) = self.conns.get_mut(&key(node, f.to))
            && conn.carries(f.epoch)
        {
            let d = dir(node, f.to);
            let at = (q.now() + conn.latency + j).max(conn.last_arrival[d]);
            conn.last_arrival[d] = at;
            let last = f.last.map(|msg| {
                Box::new(Delivery {
                    from: node,
                    to: f.to,
                    epoch: f.epoch,
                    msg,
                })
            });
            let frame = FrameEv {
                from: node,
                to: f.to,
                epoch: f.epoch,
                bytes: f.bytes,
                class: f.class,
                stream: f.stream,
                first_of: f.first_of,
                ends_partial: f.ends_partial,
                hello: f.hello,
                last,
            };
            if conn.cut {
                conn.held[d].push(frame);
            } else {
                q.push(at, EvKind::Arrive(frame));
            }
        }
        true
    }

    /// A frame reached its receiver's downlink: it is through once the frames before it are.
    pub(super) fn arrive(&mut self, f: FrameEv, q: &mut Queue) {
        let now = q.now();
        if let Some(drop) = self.tail_drop
            && let Some(conn) = self.conns.get_mut(&key(f.from, f.to))
        {
            let d = dir(f.from, f.to);
            if now < conn.recover_until[d] {
                q.push(conn.recover_until[d], EvKind::Arrive(f));
                return;
            }
            let port = &self.ports[f.to as usize];
            let waiting = (u128::from(port.down_free.saturating_sub(now))
                * u128::from(port.down_bps)
                / 8_000_000_000) as u64;
            if waiting > 0 && waiting + u64::from(f.bytes) > drop.limit(port.down_bps) {
                self.frames_dropped += 1;
                conn.recover_until[d] = now + drop.recovery;
                q.push(conn.recover_until[d], EvKind::Arrive(f));
                return;
            }
        }
        let port = &mut self.ports[f.to as usize];
        let start = q.now().max(port.down_free);
        let mut done = start + tx_nanos(f.bytes as u64, port.down_bps);
        port.down_free = done;
        if let Some(cpu) = &mut self.cpu {
            done = cpu.run(done, f.bytes as u64).max(port.cpu_done);
            port.cpu_done = done;
        }
        q.push(done, EvKind::Through(f));
    }

    /// A frame is through its receiver's downlink at `now` and leaves the window; the
    /// receiver's timers hear it. True when the sender's uplink is idle and the connection
    /// still up: the caller starts its next frame.
    pub(super) fn through(&mut self, f: &FrameEv, now: u64) -> bool {
        let Some(conn) = self.conns.get_mut(&key(f.from, f.to)) else {
            return false;
        };
        if !conn.carries(f.epoch) {
            return false;
        }
        let d = dir(f.from, f.to);
        conn.inflight[d] = conn.inflight[d].saturating_sub(f.bytes as u64);
        if f.hello {
            conn.hello_through[d] = true;
        }
        if let Some(r) = &mut conn.arrival[d] {
            r.heard(Time::from_nanos(now));
            if f.hello {
                r.hello_received();
            }
        }
        self.idle(f.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_core::{ArtifactId, Bytes};

    const MS: u64 = 1_000_000;

    /// Two nodes 10 ms apart at 8 Mb/s (1 byte per microsecond), linked and up.
    fn pair(congestion: Option<(u64, u64)>) -> (Network, Queue) {
        let mut net = Network::new(
            [8_000_000; 2],
            Duration::ZERO,
            congestion,
            None,
            None,
            Rng::new(1),
        );
        net.add_link(0, 1, |_| Duration::from_millis(10));
        assert!(net.connect(0, 1, 0));
        (net, Queue::default())
    }

    /// Three nodes at 8 Mb/s (1 byte per microsecond), node 0 linked to 1 and 2, 10 ms apart,
    /// the links up.
    fn star() -> (Network, Queue) {
        let mut net = Network::new(
            [8_000_000; 3],
            Duration::ZERO,
            None,
            None,
            None,
            Rng::new(1),
        );
        for (a, b) in [(0, 1), (0, 2)] {
            net.add_link(a, b, |_| Duration::from_millis(10));
            assert!(net.connect(a as u32, b as u32, 0));
        }
        (net, Queue::default())
    }

    fn response(size: usize) -> Message {
        Message::Response {
            req_id: size as u64,
            id: ArtifactId([7; 32]),
            data: Bytes::from(vec![0u8; size]),
        }
    }

    fn send(net: &mut Network, q: &mut Queue, from: u32, to: u32, msg: Message, class: Class) {
        let queued = net.enqueue(from, to, msg, class, true, q.now());
        assert!(matches!(queued, Enqueued::Waiting { .. }));
        if net.idle(from) {
            net.start_frame(from, 0, q);
        }
    }

    /// What the network alone did until its queue ran dry.
    #[derive(Default)]
    struct Run {
        /// The messages handed over, with their time.
        got: Vec<(u64, Message)>,
        /// The peers whose direction stopped being congested, in order.
        cleared: Vec<u32>,
    }

    /// Runs the network alone until nothing is scheduled.
    fn drain(net: &mut Network, q: &mut Queue) -> Run {
        let mut run = Run::default();
        while let Some(ev) = q.pop(u64::MAX) {
            match ev {
                EvKind::UplinkDone { node, inc } => {
                    if net.frame_sent(node, q) {
                        run.cleared.extend(net.start_frame(node, inc, q));
                    }
                }
                EvKind::Arrive(f) => net.arrive(f, q),
                EvKind::Through(f) => {
                    if net.through(&f, q.now()) {
                        run.cleared.extend(net.start_frame(f.from, 0, q));
                    }
                    if let Some(d) = f.last.filter(|d| net.carries(d.from, d.to, d.epoch)) {
                        run.got.push((q.now(), d.msg));
                    }
                }
                _ => unreachable!("the network schedules only frame events"),
            }
        }
        run
    }

    #[test]
    fn a_message_arrives_after_its_frames_cross_the_link() {
        let (mut net, mut q) = pair(None);
        let msg = response(40_000);
        let wire = wire_len(&msg) as u64;
        send(&mut net, &mut q, 0, 1, msg.clone(), Class::Bulk);
        let got = drain(&mut net, &mut q).got;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, msg);
        // The first frame crosses the uplink and the link; then the downlink, as fast as the
        // uplink, is busy with the whole message.
        let first_frame = (FRAME_PAYLOAD + FIRST_FRAME_HEADER) as u64;
        assert_eq!(got[0].0, first_frame * 1_000 + 10 * MS + wire * 1_000);
        assert_eq!(net.wire_bytes(), wire);
    }

    #[test]
    fn a_shared_core_is_the_bottleneck_of_two_receivers() {
        // Three nodes at 8 Mb/s (1 byte per microsecond), 10 ms apart; one core at 2 us per
        // byte, twice the link's time: node 0 sends to 1 while 2 sends to 0.
        let (mut net, mut q) = star();
        net.set_cpu(Cpu::new(1, CpuCost::new(2_000.0, 0.0)));
        let (m1, m2) = (response(40_000), response(30_000));
        send(&mut net, &mut q, 0, 1, m1.clone(), Class::Bulk);
        send(&mut net, &mut q, 2, 0, m2.clone(), Class::Bulk);
        let got = drain(&mut net, &mut q).got;
        assert_eq!(got.len(), 2);
        let work = (wire_len(&m1) + wire_len(&m2)) as u64 * 2_000;
        // The core is the bottleneck: it works without a pause from the first frame through
        // (after 16 KiB on the uplink and 10 ms of latency, plus its downlink) to the end.
        let first_through = (FRAME_PAYLOAD + FIRST_FRAME_HEADER) as u64 * 2_000 + 10 * MS;
        let last = got.iter().map(|(t, _)| *t).max().unwrap();
        assert!(last >= first_through + work - 2_000 * 1_000, "{last}");
        assert!(
            last <= first_through + work + (FRAME_PAYLOAD as u64) * 2_000,
            "{last}"
        );
        // Without the core both would be through by 10 ms + their bytes' time (under 80 ms).
        assert!(got.iter().any(|(_, m)| m == &m1) && got.iter().any(|(_, m)| m == &m2));
    }

    #[test]
    fn a_full_downlink_drops_frames_and_their_connections_recover_them_in_order() {
        // Nodes 1 and 2 each send node 0 two messages of 40 KB at 8 Mb/s; node 0's downlink
        // holds at most 20 KB waiting, and a dropped frame comes back 50 ms later.
        let (mut net, mut q) = star();
        net.set_tail_drop(TailDrop {
            queue: 0,
            extra: 20_000,
            recovery: 50 * MS,
        });
        let sent: Vec<(u32, Message)> = (0..4)
            .map(|i| (1 + i % 2, response(40_000 + i as usize)))
            .collect();
        for (from, m) in &sent {
            send(&mut net, &mut q, *from, 0, m.clone(), Class::Bulk);
        }
        let got = drain(&mut net, &mut q).got;
        assert!(net.frames_dropped() > 0, "the queue overflowed");
        // Nothing is lost, and each sender's messages arrive in the order it sent them.
        assert_eq!(got.len(), 4);
        for from in [1, 2] {
            let mine: Vec<&Message> = sent.iter().filter(|s| s.0 == from).map(|s| &s.1).collect();
            let order: Vec<&Message> = got
                .iter()
                .map(|(_, m)| m)
                .filter(|m| mine.contains(m))
                .collect();
            assert_eq!(order, mine);
        }
        // The recovery cost time: the last arrives after the bytes alone would take (10 ms of
        // latency and 160 KB through one 1 MB/s downlink) plus one recovery.
        let last = got.iter().map(|(t, _)| *t).max().unwrap();
        assert!(last >= 10 * MS + 160_000 * 1_000 + 50 * MS, "{last}");
    }

    #[test]
    fn an_urgent_message_waits_for_one_bulk_frame_at_most() {
        let (mut net, mut q) = pair(None);
        send(&mut net, &mut q, 0, 1, response(200_000), Class::Bulk);
        send(
            &mut net,
            &mut q,
            0,
            1,
            Message::Withdraw(ArtifactId([1; 32])),
            Class::Urgent,
        );
        let got = drain(&mut net, &mut q).got;
        assert!(matches!(got[0].1, Message::Withdraw(_)));
        let frame = (FRAME_PAYLOAD + FIRST_FRAME_HEADER) as u64 * 1_000;
        assert!(got[0].0 < 2 * frame + 10 * MS + frame);
        assert!(matches!(got[1].1, Message::Response { .. }));
    }

    #[test]
    fn a_closed_connection_loses_what_it_carried() {
        let (mut net, mut q) = pair(None);
        send(&mut net, &mut q, 0, 1, response(100_000), Class::Bulk);
        assert!(net.close(0, 1));
        assert_eq!(
            net.enqueue(0, 1, response(10), Class::Bulk, true, 0),
            Enqueued::Lost
        );
        assert!(net.connect(0, 1, 0));
        assert!(drain(&mut net, &mut q).got.is_empty());
        assert_eq!(
            net.enqueue(0, 5, response(10), Class::Bulk, true, 0),
            Enqueued::NoLink
        );
    }

    #[test]
    fn congestion_is_reported_once_when_set_and_once_when_cleared() {
        let (mut net, mut q) = pair(Some((50_000, 20_000)));
        let mut set = 0;
        for _ in 0..4 {
            if let Enqueued::Waiting { congested: true } =
                net.enqueue(0, 1, response(20_000), Class::Bulk, true, 0)
            {
                set += 1;
            }
        }
        assert_eq!(set, 1);
        let mut cleared: Vec<u32> = net.start_frame(0, 0, &mut q).into_iter().collect();
        cleared.extend(drain(&mut net, &mut q).cleared);
        assert_eq!(cleared, [1]);
    }

    #[test]
    fn the_hello_goes_first_and_a_cut_link_holds_its_frames_until_it_heals() {
        let timers = Some((ConnConfig::default(), vec![Layer::Honest; 2]));
        let mut net = Network::new(
            [8_000_000; 2],
            Duration::ZERO,
            None,
            None,
            timers,
            Rng::new(1),
        );
        net.add_link(0, 1, |_| Duration::from_millis(10));
        let mut q = Queue::default();
        assert!(net.connect(0, 1, 0));
        assert!(!net.established(0, 1));
        send(&mut net, &mut q, 0, 1, response(1_000), Class::Bulk);
        net.start_frame(1, 0, &mut q);
        // Node 0's hello (15 bytes) is through 15 us + 10 ms after the start, then its message.
        let got = drain(&mut net, &mut q).got;
        assert!(net.established(0, 1));
        let hello = HELLO_LEN as u64 * 1_000;
        let wire = wire_len(&response(1_000)) as u64 * 1_000;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, hello + wire + 10 * MS + wire);
        // A cut link: the frame leaves but arrives only one latency after the heal, in order.
        net.set_cut(0, 1, true, &mut q);
        send(&mut net, &mut q, 0, 1, response(10), Class::Bulk);
        send(&mut net, &mut q, 0, 1, response(20), Class::Bulk);
        assert!(drain(&mut net, &mut q).got.is_empty());
        assert!(!net.established(0, 1));
        let healed = q.now();
        net.set_cut(0, 1, false, &mut q);
        let got = drain(&mut net, &mut q).got;
        let sizes: Vec<u64> = got
            .iter()
            .map(|(_, m)| match m {
                Message::Response { req_id, .. } => *req_id,
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [10, 20]);
        assert!(got[0].0 >= healed + 10 * MS);
        assert!(net.established(0, 1));
    }

    #[test]
    fn the_window_bounds_bytes_in_flight_per_direction() {
        // Node 1's downlink is ten times slower than node 0's uplink.
        let bps = [8_000_000, 800_000, 8_000_000];
        let mut net = Network::new(bps, Duration::ZERO, None, None, None, Rng::new(1));
        for b in [1, 2] {
            net.add_link(0, b, |_| Duration::from_millis(1));
            assert!(net.connect(0, b as u32, 0));
        }
        let mut q = Queue::default();
        // Several windows' worth to node 1, then one message to node 2: node 1's full window
        // lets node 2's message leave before node 1's backlog is through.
        for _ in 0..8 {
            net.enqueue(0, 1, response(60_000), Class::Bulk, true, 0);
        }
        net.enqueue(0, 2, response(1_000), Class::Bulk, true, 0);
        net.start_frame(0, 0, &mut q);
        let got = drain(&mut net, &mut q).got;
        assert_eq!(got.len(), 9);
        let to_two = got
            .iter()
            .position(|(_, m)| matches!(m, Message::Response { req_id: 1_000, .. }));
        assert!(to_two.is_some_and(|p| p < 8), "{to_two:?}");
    }

    #[test]
    fn a_cancelled_answer_never_leaves_unless_it_started() {
        let (mut net, mut q) = pair(Some((50_000, 20_000)));
        // The first response starts at once; two more wait behind it, past the high water.
        send(&mut net, &mut q, 0, 1, response(30_000), Class::Bulk);
        let mut congested = false;
        for size in [30_001, 30_002] {
            if let Enqueued::Waiting { congested: true } =
                net.enqueue(0, 1, response(size), Class::Bulk, true, 0)
            {
                congested = true;
            }
        }
        assert!(congested);
        assert_eq!(
            net.cancel((0, 1), |r| r == Revocable::Answer(30_001), true),
            (true, false),
            "still above low water"
        );
        assert_eq!(
            net.cancel((0, 1), |r| r == Revocable::Answer(30_000), true),
            (false, false),
            "started: it finishes"
        );
        assert_eq!(
            net.cancel((0, 1), |r| r == Revocable::Answer(30_002), true),
            (true, true),
            "down to the low water"
        );
        assert_eq!(
            net.cancel((0, 1), |r| r == Revocable::Answer(30_002), true),
            (false, false)
        );
        assert_eq!(
            net.cancel((1, 0), |r| r == Revocable::Answer(30_000), true),
            (false, false),
            "the other direction"
        );
        let run = drain(&mut net, &mut q);
        let got: Vec<&Message> = run.got.iter().map(|(_, m)| m).collect();
        assert_eq!(got, [&response(30_000)]);
        assert!(
            run.cleared.is_empty(),
            "the clear was reported once, by the cancel"
        );
    }
}
