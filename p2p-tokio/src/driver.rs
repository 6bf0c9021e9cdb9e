//! The node task: it owns the [`p2p_core::Node`] and the [`PeerPolicy`], feeds them inputs,
//! carries out their outputs (sends, deliveries, dials, closes) and arms their timers. Every
//! decision about peers and connections is the policy's; this task only carries them out.

use std::collections::{HashMap, VecDeque};
#[cfg(feature = "trace")]
use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use p2p_core::{
    Artifact, ArtifactId, ChunkRange, DisconnectReason, Input, InputError, Manifest, Node, NodeId,
    Output, PriorityFnRef, RequestId, Time,
};
#[cfg(feature = "trace")]
use p2p_trace::{DecisionLog, PriorityProfile, TraceWriter};
use p2p_transport::admission::AdmissionView;
use p2p_transport::conn::ConnError;
use p2p_transport::express::{self, ExpressAction, ExpressAdmit, ExpressLanes};
use p2p_transport::mux::PushError;
use p2p_transport::peers::{Admit, CloseCause, PeerPolicy, PolicyAction};
use p2p_transport::tls::Membership;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::Registry;
use crate::conn::{
    self, Clock, Close, CloseReason, ConnCtx, ConnSettings, ConnShared, Event, InboxShared,
};
use crate::error::NodeError;
use crate::handle::{Delivered, DeliveryQueue, PoolEntry, PoolPage, QueueError, TopologyView};
use crate::handshake::{Established, Handshaker};
use crate::metrics::{Counters, inc};
use crate::net::{self, SocketOpts};

/// What the handle asks of the node task.
pub(crate) enum Command {
    Publish {
        artifact: Artifact,
        /// Its manifest, computed off the node task, if it is chunked.
        manifest: Option<Manifest>,
        reply: oneshot::Sender<Result<ArtifactId, NodeError>>,
    },
    Remove {
        id: ArtifactId,
        reply: oneshot::Sender<()>,
    },
    SetPriority {
        f: PriorityFnRef,
        #[cfg(feature = "trace")]
        profile: Option<PriorityProfile>,
        reply: oneshot::Sender<()>,
    },
    Reevaluate {
        reply: oneshot::Sender<()>,
    },
    UpdateRegistry {
        registry: Registry,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<NodeId>>,
    },
    Topology {
        reply: oneshot::Sender<TopologyView>,
    },
    Get {
        id: ArtifactId,
        reply: oneshot::Sender<Option<Artifact>>,
    },
    PoolList {
        from: u64,
        max: usize,
        reply: oneshot::Sender<PoolPage>,
    },
    DropConnection {
        peer: NodeId,
        reply: oneshot::Sender<bool>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The driver's settings, taken from the node configuration.
pub(crate) struct DriverSettings {
    pub conn: ConnSettings,
    pub sock: SocketOpts,
    pub connect_timeout: Duration,
    /// The address dials leave from: the listening IP when the node listens on one address
    /// (so peers that admit only registry addresses see the address the registry lists), else
    /// the system's choice.
    pub source: Option<std::net::IpAddr>,
    /// Whether express lanes' packets are marked ([`net::mark_express`]).
    pub express_marking: bool,
    /// Where express lanes' tasks run (`None`: the node's runtime).
    pub express_runtime: Option<tokio::runtime::Handle>,
}

/// One TLS connection with its reader and writer tasks.
struct Link {
    id: u64,
    shared: Arc<ConnShared>,
    close: watch::Sender<Close>,
    tasks: [JoinHandle<()>; 2],
}

impl Link {
    /// Tells the tasks to stop (and aborts them unless the close is graceful).
    fn close(&self, how: Close) {
        let _ = self.close.send(how);
        if how == Close::Abort {
            for t in &self.tasks {
                t.abort();
            }
        }
    }
}

/// A peer's connection as the node task sees it: the main connection and, beside it, the
/// express lane for control and urgent messages if both sides take one.
struct Conn {
    main: Link,
    express: Option<Link>,
}

impl Conn {
    /// The link that carries messages of `class`.
    fn link_for(&self, class: p2p_core::Class) -> &Link {
        match &self.express {
            Some(lane) if express::carries(class) => lane,
            _ => &self.main,
        }
    }
}

/// Everything the node task owns.
pub(crate) struct Driver {
    pub id: NodeId,
    pub core: Node,
    #[cfg(feature = "trace")]
    pub trace: Option<TraceWriter<File>>,
    /// The log of the recording wrapper around the core's priority function, while recording
    /// (kept, and drained after every input, even if writing the trace failed).
    #[cfg(feature = "trace")]
    pub decisions: Option<DecisionLog>,
    pub clock: Clock,
    pub policy: PeerPolicy,
    pub settings: DriverSettings,
    pub registry: Registry,
    pub membership: Membership,
    pub handshaker: Handshaker,
    pub counters: Arc<Counters>,
    pub core_metrics: Arc<Mutex<p2p_core::Metrics>>,
    pub events_tx: mpsc::Sender<Event>,
    pub inbox: Arc<InboxShared>,
    pub deliveries_tx: DeliveryQueue,
    pub accept_shutdown: watch::Sender<bool>,
    pub accept_task: Option<JoinHandle<()>>,
    /// What the accept task's admission machine knows of the registry and the bans.
    admission: watch::Sender<Arc<AdmissionView>>,
    conns: HashMap<NodeId, Conn>,
    next_conn: u64,
    /// Dial attempts in progress.
    dials: HashMap<NodeId, JoinHandle<()>>,
    /// The express lanes' rules.
    express: ExpressLanes,
    /// Express lane dials in progress.
    express_dials: HashMap<NodeId, JoinHandle<()>>,
    /// Express lanes that arrived before their main connection (at most one per member).
    held: HashMap<NodeId, Established>,
    pending: VecDeque<Delivered>,
    follow_up: VecDeque<Input>,
}

/// Parts of a [`Driver`] that [`Driver::new`] takes as given.
pub(crate) struct DriverParts {
    pub id: NodeId,
    pub core: Node,
    /// The trace writer and the log of the wrapper already around the core's priority function.
    #[cfg(feature = "trace")]
    pub trace: Option<(TraceWriter<File>, DecisionLog)>,
    pub clock: Clock,
    pub policy: PeerPolicy,
    pub settings: DriverSettings,
    pub registry: Registry,
    pub membership: Membership,
    pub handshaker: Handshaker,
    pub counters: Arc<Counters>,
    pub core_metrics: Arc<Mutex<p2p_core::Metrics>>,
    pub events_tx: mpsc::Sender<Event>,
    pub inbox: Arc<InboxShared>,
    pub deliveries_tx: DeliveryQueue,
    pub accept_shutdown: watch::Sender<bool>,
    pub accept_task: JoinHandle<()>,
    pub admission: watch::Sender<Arc<AdmissionView>>,
    pub express: ExpressLanes,
}

impl Driver {
    pub fn new(p: DriverParts) -> Self {
        #[cfg(feature = "trace")]
        let (trace, decisions) = p.trace.map(|(w, l)| (Some(w), Some(l))).unwrap_or_default();
        Driver {
            id: p.id,
            core: p.core,
            #[cfg(feature = "trace")]
            trace,
            #[cfg(feature = "trace")]
            decisions,
            clock: p.clock,
            policy: p.policy,
            settings: p.settings,
            registry: p.registry,
            membership: p.membership,
            handshaker: p.handshaker,
            counters: p.counters,
            core_metrics: p.core_metrics,
            events_tx: p.events_tx,
            inbox: p.inbox,
            deliveries_tx: p.deliveries_tx,
            accept_shutdown: p.accept_shutdown,
            accept_task: Some(p.accept_task),
            admission: p.admission,
            conns: HashMap::new(),
            next_conn: 1,
            dials: HashMap::new(),
            express: p.express,
            express_dials: HashMap::new(),
            held: HashMap::new(),
            pending: VecDeque::new(),
            follow_up: VecDeque::new(),
        }
    }

    /// The core's time: nanoseconds since the node started.
    fn now(&self) -> Time {
        self.clock.now()
    }

    /// The earliest of the core's and the policy's timers, and of the ends of bans (when the
    /// TLS verifiers stop refusing the member).
    fn next_timer(&self) -> Option<Time> {
        let ban_end = self.admission.borrow().banned.iter().map(|b| b.1).min();
        [
            self.core.poll_timeout(),
            self.policy.poll_timeout(),
            self.express.poll_timeout(),
            ban_end,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Tells the accept task's admission machine and the TLS verifiers of the registry's
    /// addresses and the bans in force, if either changed.
    fn publish_admission(&mut self) {
        let view = AdmissionView::new(&self.registry, self.policy.banned(self.now()));
        if **self.admission.borrow() == view {
            return;
        }
        self.membership.set_banned(view.banned.iter().map(|b| b.0));
        self.admission.send_replace(Arc::new(view));
    }

    /// The node task's loop: commands, connection events, messages from the inbox (one per
    /// turn, so commands and connection events never wait behind peers' messages), deliveries
    /// and the core's timer.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<Event>,
    ) {
        self.install_members();
        let deliveries = self.deliveries_tx.clone();
        let inbox = Arc::clone(&self.inbox);
        let sleep = tokio::time::sleep_until(self.clock.instant(Time::MAX));
        tokio::pin!(sleep);
        let mut armed: Option<Time> = None;
        loop {
            let deadline = self.next_timer();
            if deadline != armed {
                armed = deadline;
                if let Some(t) = deadline {
                    sleep.as_mut().reset(self.clock.instant(t));
                }
            }
            let has_message = !inbox.lock().is_empty();
            tokio::select! {
                // Commands, then connection events, then due timers, then one message in the
                // inbox's fair order.
                biased;
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                ev = events.recv(), if self.pending.is_empty() => {
                    if let Some(ev) = ev {
                        self.on_event(ev);
                    }
                }
                // Timers before messages: a flood never holds back a request's timeout.
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    let now = self.now();
                    if self.core.poll_timeout().is_some_and(|t| t <= now) {
                        let _ = self.feed(Input::Timeout);
                    }
                    self.policy.handle_timeout(now);
                    self.run_policy();
                    self.express.handle_timeout(now);
                    self.run_express();
                }
                () = std::future::ready(()), if self.pending.is_empty() && has_message => {
                    if let Some(m) = inbox.pop()
                        && self.is_current(m.peer, m.conn)
                    {
                        inc(&self.counters.messages_received);
                        let _ = self.feed(Input::Message { from: m.peer, msg: m.msg });
                    }
                }
                () = inbox.ready.notified(), if self.pending.is_empty() && !has_message => {}
                sent = deliver_first(&deliveries, &mut self.pending), if !self.pending.is_empty() => {
                    if sent {
                        inc(&self.counters.deliveries);
                    } else {
                        self.discard_deliveries();
                    }
                }
            }
            self.publish_metrics();
        }
    }

    fn publish_metrics(&self) {
        *self
            .core_metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.core.metrics();
        self.counters.peers_connected.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    // ---- feeding the core ----

    /// Feeds `input` (recorded in the trace), carries out every output, then the follow-up
    /// inputs the outputs caused (congestion, disconnections).
    fn feed(&mut self, input: Input) -> Result<(), InputError> {
        let result = self.feed_one(input);
        while let Some(next) = self.follow_up.pop_front() {
            let _ = self.feed_one(next);
        }
        result
    }

    fn feed_one(&mut self, input: Input) -> Result<(), InputError> {
        let now = self.now();
        #[cfg(feature = "trace")]
        if let Some(t) = &mut self.trace
            && let Err(e) = t.record_input(now, &input)
        {
            warn!(error = %e, "trace recording failed; recording stops");
            self.trace = None;
        }
        let result = self.core.handle_input(now, input);
        #[cfg(feature = "trace")]
        if let (Err(e), Some(t)) = (&result, &mut self.trace) {
            let _ = t.record_input_error(now, e);
        }
        #[cfg(feature = "trace")]
        if let Some(log) = &self.decisions {
            let decisions = log.take();
            if let Some(t) = &mut self.trace {
                let _ = t.record_decisions(now, &decisions);
            }
        }
        // Published before any delivery goes out, so the metrics never lag the deliveries.
        self.publish_metrics();
        while let Some(out) = self.core.poll_output() {
            #[cfg(feature = "trace")]
            if let Some(t) = &mut self.trace {
                let _ = t.record_output(now, &out);
            }
            self.carry_out(out);
        }
        result
    }

    fn carry_out(&mut self, out: Output) {
        match out {
            Output::Send { to, msg, class } => {
                let Some(conn) = self.conns.get(&to) else {
                    debug!(peer = %to, msg = msg.name(), "send to a peer without connection dropped");
                    return;
                };
                let link = conn.link_for(class);
                // Only the main connection's queue speaks for the peer's congestion: the
                // express lane carries small messages the core must send anyway.
                let is_main = link.id == conn.main.id;
                let pushed = {
                    let mut tx = link.shared.lock();
                    tx.push(class, &msg)
                        .map(|()| is_main && tx.poll_congestion() == Some(true))
                };
                match pushed {
                    Ok(newly_congested) => {
                        inc(&self.counters.messages_sent);
                        if !is_main {
                            inc(&self.counters.messages_sent_express);
                        }
                        link.shared.wake.notify_one();
                        if newly_congested {
                            inc(&self.counters.congestion_events);
                            debug!(peer = %to, "send queue congested");
                            self.follow_up.push_back(Input::Congestion {
                                peer: to,
                                congested: true,
                            });
                        }
                    }
                    Err(PushError::QueueFull { class, queued, .. }) => {
                        inc(&self.counters.send_queue_overflows);
                        warn!(peer = %to, ?class, queued, "send queue full: disconnecting the slow peer");
                        self.close_conn(to, Close::Abort);
                        self.follow_up.push_back(Input::PeerDisconnected(to));
                        self.after_close(to, CloseCause::Lost);
                    }
                    Err(e) => {
                        warn!(peer = %to, msg = msg.name(), error = %e, "message cannot be sent; dropped");
                    }
                }
            }
            Output::Deliver { artifact, from } => {
                self.pending.push_back(Delivered { artifact, from });
                self.flush_deliveries();
            }
            Output::Disconnect { peer, reason } => {
                let known = self.close_conn(peer, Close::Abort);
                if known {
                    warn!(%peer, %reason, "disconnecting peer");
                } else {
                    debug!(%peer, %reason, "core refused peer");
                }
                let cause = if reason == DisconnectReason::NotMember {
                    CloseCause::Lost
                } else {
                    warn!(%peer, "peer banned for misbehaviour");
                    CloseCause::Misbehaviour
                };
                self.after_close(peer, cause);
            }
            Output::Cancel { to, req_id } => self.cancel_answer(to, req_id),
            Output::CancelPushes { to, id, ranges } => self.cancel_pushes(to, &id, &ranges),
            Output::HashChunk { id, index, data } => {
                // Bulk hashing runs on tokio's blocking pool, never on this task, which moves
                // the urgent traffic; the digest comes back as an event.
                let events = self.events_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let digest = p2p_core::chunks::sha256(&data);
                    let _ = events.blocking_send(Event::ChunkHashed { id, index, digest });
                });
            }
            Output::Event(event) => debug!(?event, "core event"),
        }
    }

    /// Drops the queued answer to `req_id` for peer `to` if its writer has not started it,
    /// the same way a send reaches the writer: through the connection's shared sending half.
    fn cancel_answer(&mut self, to: NodeId, req_id: RequestId) {
        let Some(conn) = self.conns.get(&to) else {
            return;
        };
        // An answer travels in its requester's class, so it may sit on either link.
        let in_lane = conn
            .express
            .as_ref()
            .is_some_and(|lane| lane.shared.lock().cancel(req_id));
        let (dropped, drained) = if in_lane {
            (true, false)
        } else {
            let mut tx = conn.main.shared.lock();
            let dropped = tx.cancel(req_id);
            (dropped, dropped && tx.poll_congestion() == Some(false))
        };
        if dropped {
            inc(&self.counters.answers_cancelled);
            debug!(peer = %to, req_id, "queued answer cancelled");
        }
        if drained {
            debug!(peer = %to, "send queue drained");
            self.follow_up.push_back(Input::Congestion {
                peer: to,
                congested: false,
            });
        }
    }

    /// Drops the chunks of `id` with indices in `ranges` queued as pushes to `to` that its
    /// writer has not started (the peer holds them), as [`Driver::cancel_answer`] does.
    fn cancel_pushes(&mut self, to: NodeId, id: &ArtifactId, ranges: &[ChunkRange]) {
        let Some(conn) = self.conns.get(&to) else {
            return;
        };
        let mut dropped = conn
            .express
            .as_ref()
            .map_or(0, |lane| lane.shared.lock().cancel_pushes(id, ranges));
        let mut tx = conn.main.shared.lock();
        let main = tx.cancel_pushes(id, ranges);
        dropped += main;
        let drained = main > 0 && tx.poll_congestion() == Some(false);
        drop(tx);
        if dropped > 0 {
            self.counters
                .pushes_cancelled
                .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
            debug!(peer = %to, dropped, "queued pushes cancelled");
        }
        if drained {
            debug!(peer = %to, "send queue drained");
            self.follow_up.push_back(Input::Congestion {
                peer: to,
                congested: false,
            });
        }
    }

    fn flush_deliveries(&mut self) {
        while let Some(d) = self.pending.front() {
            match self.deliveries_tx.try_send(d) {
                Ok(()) => {
                    self.pending.pop_front();
                    inc(&self.counters.deliveries);
                }
                Err(QueueError::Full) => return,
                Err(QueueError::Closed) => {
                    self.discard_deliveries();
                    return;
                }
            }
        }
    }

    fn discard_deliveries(&mut self) {
        for _ in self.pending.drain(..) {
            inc(&self.counters.deliveries_discarded);
        }
    }

    // ---- commands ----

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish {
                artifact,
                manifest,
                reply,
            } => {
                let id = artifact.id;
                let r = self.feed(match manifest {
                    Some(manifest) => Input::PublishChunked { artifact, manifest },
                    None => Input::Publish(artifact),
                });
                let _ = reply.send(r.map(|()| id).map_err(NodeError::from));
            }
            Command::Remove { id, reply } => {
                let _ = self.feed(Input::Remove(id));
                let _ = reply.send(());
            }
            Command::SetPriority {
                f,
                #[cfg(feature = "trace")]
                profile,
                reply,
            } => {
                // While recording, the new function is wrapped like the first one, so the
                // trace keeps recording what the embedder decided.
                #[cfg(feature = "trace")]
                let f = {
                    let now = self.now();
                    if let (Some(p), Some(t)) = (&profile, &mut self.trace) {
                        let _ = t.record_priority_profile(now, p);
                    }
                    match &self.decisions {
                        Some(log) => log.wrap(f),
                        None => f,
                    }
                };
                self.core.set_priority_fn(f);
                let _ = self.feed(Input::Reevaluate);
                let _ = reply.send(());
            }
            Command::Reevaluate { reply } => {
                let _ = self.feed(Input::Reevaluate);
                let _ = reply.send(());
            }
            Command::UpdateRegistry { registry, reply } => {
                let _ = reply.send(self.update_registry(registry));
            }
            Command::Peers { reply } => {
                let mut peers: Vec<NodeId> = self.conns.keys().copied().collect();
                peers.sort();
                let _ = reply.send(peers);
            }
            Command::Topology { reply } => {
                let _ = reply.send(TopologyView {
                    topology: self.policy.config().topology.clone(),
                    members: self.registry.members.iter().map(|m| m.id).collect(),
                    neighbours: self.policy.neighbours().collect(),
                });
            }
            Command::Get { id, reply } => {
                // A clone shares the artifact's bytes.
                let _ = reply.send(self.core.artifact(&id).cloned());
            }
            Command::PoolList { from, max, reply } => {
                let mut entries = Vec::with_capacity(max.min(1024));
                let mut next = None;
                for (seq, a) in self.core.pooled_from(from) {
                    if entries.len() == max {
                        next = Some(seq);
                        break;
                    }
                    entries.push(PoolEntry {
                        id: a.id,
                        kind: a.kind,
                        size: a.data.len() as u64,
                        attr: a.attr.clone(),
                    });
                }
                let _ = reply.send(PoolPage { entries, next });
            }
            Command::DropConnection { peer, reply } => {
                let existed = self.close_conn(peer, Close::Abort);
                if existed {
                    info!(%peer, "connection dropped on request");
                    let _ = self.feed(Input::PeerDisconnected(peer));
                    self.after_close(peer, CloseCause::Requested);
                }
                let _ = reply.send(existed);
            }
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    fn update_registry(&mut self, registry: Registry) -> Result<(), NodeError> {
        let members = registry.tls_members();
        self.membership
            .update(members)
            .map_err(|_| NodeError::StaleRegistry {
                current: self.registry.version,
                offered: registry.version,
            })?;
        self.handshaker
            .registry_version
            .store(registry.version, std::sync::atomic::Ordering::Relaxed);
        self.registry = registry;
        info!(
            version = self.registry.version,
            members = self.registry.members.len(),
            "registry updated"
        );
        self.install_members();
        Ok(())
    }

    /// Gives the registry's members to the core and the policy, and carries out what the
    /// policy decides (dial new members, close removed ones).
    fn install_members(&mut self) {
        let members: Vec<NodeId> = self.registry.members.iter().map(|m| m.id).collect();
        let version = self.registry.version;
        self.policy
            .set_members(self.now(), version, members.iter().copied());
        self.counters.peers_neighbours.store(
            self.policy.neighbours().count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let policy = &self.policy;
        self.dials.retain(|peer, task| {
            let keep = policy.is_neighbour(peer);
            if !keep {
                task.abort();
            }
            keep
        });
        // Removed members are closed before the core hears of the new membership.
        self.run_policy();
        let _ = self.feed(Input::Membership { version, members });
    }

    /// Carries out the policy's actions.
    fn run_policy(&mut self) {
        while let Some(action) = self.policy.poll_action() {
            match action {
                PolicyAction::Dial(peer) => self.dial(peer),
                PolicyAction::Close(peer) => {
                    if let Some(t) = self.dials.remove(&peer) {
                        t.abort();
                    }
                    if self.close_conn(peer, Close::Abort) {
                        info!(%peer, "disconnected: removed from the registry");
                    }
                }
                PolicyAction::Prune(peer) => {
                    if let Some(t) = self.dials.remove(&peer) {
                        t.abort();
                    }
                    if self.close_conn(peer, Close::Abort) {
                        info!(%peer, "disconnected: no longer a neighbour in the topology");
                        let _ = self.feed(Input::PeerDisconnected(peer));
                    }
                }
            }
        }
        self.publish_admission();
        self.publish_metrics();
    }

    // ---- connections ----

    /// Closes the connection to `peer`, if any; returns whether there was one.
    fn close_conn(&mut self, peer: NodeId, how: Close) -> bool {
        let Some(conn) = self.conns.remove(&peer) else {
            return false;
        };
        // The lane goes with its main connection.
        self.express.main_down(peer);
        if let Some(t) = self.express_dials.remove(&peer) {
            t.abort();
        }
        let mut inbox = self.inbox.lock();
        for link in std::iter::once(&conn.main).chain(&conn.express) {
            link.close(how);
            // What it read and the node did not handle yet is dropped with it.
            inbox.remove(link.id);
        }
        drop(inbox);
        inc(&self.counters.disconnects);
        self.count_express();
        true
    }

    /// After a connection to `peer` ended: the policy learns why (and may ban, and schedule a
    /// redial).
    fn after_close(&mut self, peer: NodeId, cause: CloseCause) {
        self.policy.closed(self.now(), peer, cause);
        self.run_policy();
    }

    /// Starts a dial attempt to `peer`, which the policy decided on.
    fn dial(&mut self, peer: NodeId) {
        match self.spawn_dial(peer, false) {
            Some(task) => {
                if let Some(old) = self.dials.insert(peer, task) {
                    old.abort();
                }
            }
            None => self.policy.dial_failed(self.now(), peer),
        }
    }

    /// Starts a dial of `peer`'s express lane, which the express rules decided on.
    fn dial_express(&mut self, peer: NodeId) {
        match self.spawn_dial(peer, true) {
            Some(task) => {
                if let Some(old) = self.express_dials.insert(peer, task) {
                    old.abort();
                }
            }
            None => self.express.dial_failed(self.now(), peer),
        }
    }

    /// Spawns a task that dials `peer`'s registry address (its main connection, or its
    /// `express` lane, marked if so configured), runs the handshake and reports the outcome as
    /// an event; `None` if the registry has no address for it.
    fn spawn_dial(&self, peer: NodeId, express: bool) -> Option<JoinHandle<()>> {
        let addr = self.registry.addr_of(&peer)?;
        let hs = self.handshaker.clone();
        let sock = self.settings.sock;
        let connect_timeout = self.settings.connect_timeout;
        let mark = express && self.settings.express_marking;
        let source = self
            .settings
            .source
            .filter(|ip| ip.is_ipv4() == addr.is_ipv4());
        let events = self.events_tx.clone();
        debug!(%peer, %addr, express, "dialing");
        Some(tokio::spawn(async move {
            let result = match net::dial(addr, source, &sock, connect_timeout).await {
                Ok(tcp) => {
                    if mark && let Err(e) = net::mark_express(&tcp) {
                        debug!(%peer, error = %e, "express lane left unmarked");
                    }
                    hs.connect(tcp, peer, addr, express)
                        .await
                        .map_err(|e| (e.to_string(), e.is_refusal()))
                }
                Err(e) => Err((format!("connect to {addr} failed: {e}"), false)),
            };
            let ev = match result {
                Ok(est) => Event::Established(Box::new(est)),
                Err((error, refused)) => Event::DialFailed {
                    peer,
                    error,
                    refused,
                    express,
                },
            };
            let _ = events.send(ev).await;
        }))
    }

    /// Carries out the express lanes' actions.
    fn run_express(&mut self) {
        while let Some(action) = self.express.poll_action() {
            match action {
                ExpressAction::Dial(peer) => self.dial_express(peer),
                ExpressAction::DropHeld(peer) => {
                    if self.held.remove(&peer).is_some() {
                        inc(&self.counters.express_lanes_failed);
                        debug!(%peer, "express lane dropped: its main connection did not come");
                        self.count_express();
                    }
                }
            }
        }
    }

    /// An express lane completed its handshake: attach it, hold it for its main connection,
    /// or refuse it, as the express rules say.
    fn on_express(&mut self, est: Established) {
        let peer = est.peer;
        if est.dialed {
            self.express_dials.remove(&peer);
        }
        match self.express.admit(self.now(), peer, est.dialed) {
            Ok(ExpressAdmit::Attach) => self.attach_express(est),
            Ok(ExpressAdmit::Hold) => {
                debug!(%peer, "express lane held until its main connection is up");
                if self.held.insert(peer, est).is_some() {
                    inc(&self.counters.express_lanes_failed);
                }
                self.count_express();
            }
            Err(why) => {
                inc(&self.counters.express_lanes_failed);
                info!(%peer, remote = %est.remote, %why, "express lane refused");
            }
        }
        self.run_express();
    }

    /// Runs an express lane beside `est.peer`'s main connection, replacing any lane before it.
    fn attach_express(&mut self, est: Established) {
        let peer = est.peer;
        let id = self.next_conn;
        let mark = self.settings.express_marking && !est.dialed;
        if !self.conns.contains_key(&peer) {
            return;
        }
        if mark && let Err(e) = net::mark_express(est.stream.get_ref().0.get_ref()) {
            debug!(%peer, error = %e, "express lane left unmarked");
        }
        self.next_conn += 1;
        let link = self.spawn_link(peer, id, est, true);
        let old = self
            .conns
            .get_mut(&peer)
            .and_then(|c| c.express.replace(link));
        if let Some(old) = old {
            old.close(Close::Abort);
            self.inbox.lock().remove(old.id);
        }
        inc(&self.counters.express_lanes_opened);
        self.count_express();
        debug!(%peer, "express lane up");
    }

    /// Starts the reader and writer of a connection with number `id` to `peer`: an express
    /// lane's on `express_runtime` if set, the others on the node's runtime.
    fn spawn_link(&self, peer: NodeId, id: u64, est: Established, express: bool) -> Link {
        let shared = Arc::new(ConnShared::new(est.sender));
        let (close_tx, close_rx) = watch::channel(Close::Open);
        let ctx = |close: watch::Receiver<Close>| ConnCtx {
            peer,
            conn: id,
            events: self.events_tx.clone(),
            inbox: Arc::clone(&self.inbox),
            close,
            counters: Arc::clone(&self.counters),
            settings: self.settings.conn,
            clock: self.clock,
        };
        let (rd, wr) = tokio::io::split(est.stream);
        let reader = conn::reader(rd, est.receiver, ctx(close_rx.clone()));
        let writer = conn::writer(wr, Arc::clone(&shared), ctx(close_rx));
        let (reader, writer) = match self.settings.express_runtime.as_ref().filter(|_| express) {
            Some(rt) => (rt.spawn(reader), rt.spawn(writer)),
            None => (tokio::spawn(reader), tokio::spawn(writer)),
        };
        Link {
            id,
            shared,
            close: close_tx,
            tasks: [reader, writer],
        }
    }

    /// Publishes the number of peers with an express lane and of lanes held.
    fn count_express(&self) {
        let n = self.conns.values().filter(|c| c.express.is_some()).count();
        let c = &self.counters;
        c.peers_express
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
        c.express_lanes_held
            .store(self.held.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Established(est) => self.on_established(*est),
            Event::DialFailed {
                peer,
                error,
                refused,
                express: true,
            } => {
                inc(&self.counters.express_lanes_failed);
                self.express_dials.remove(&peer);
                debug!(%peer, %error, refused, "express lane dial failed");
                self.express.dial_failed(self.now(), peer);
                self.run_express();
            }
            Event::DialFailed {
                peer,
                error,
                refused,
                express: false,
            } => {
                inc(&self.counters.dial_failures);
                if refused {
                    inc(&self.counters.connections_refused);
                }
                self.dials.remove(&peer);
                debug!(%peer, %error, "dial failed");
                self.policy.dial_failed(self.now(), peer);
                self.run_policy();
            }
            Event::ChunkHashed { id, index, digest } => {
                let _ = self.feed(Input::ChunkHashed { id, index, digest });
            }
            Event::Drained { peer, conn } => {
                if self.conns.get(&peer).is_some_and(|c| c.main.id == conn) {
                    debug!(%peer, "send queue drained");
                    let _ = self.feed(Input::Congestion {
                        peer,
                        congested: false,
                    });
                }
            }
            Event::Closed { peer, conn, reason } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                self.close_conn(peer, Close::Abort);
                let cause = match &reason {
                    CloseReason::Conn(e) if e.is_misbehaviour() => {
                        inc(&self.counters.protocol_errors);
                        warn!(%peer, %reason, "peer broke the wire protocol: disconnected and banned");
                        CloseCause::Misbehaviour
                    }
                    CloseReason::Conn(ConnError::Idle(_)) => {
                        inc(&self.counters.idle_timeouts);
                        info!(%peer, %reason, "peer idle: disconnected");
                        CloseCause::Lost
                    }
                    CloseReason::Conn(ConnError::WriteStall { .. }) => {
                        info!(%peer, %reason, "peer does not read: disconnected");
                        CloseCause::Lost
                    }
                    _ => {
                        info!(%peer, %reason, "connection closed");
                        CloseCause::Lost
                    }
                };
                let _ = self.feed(Input::PeerDisconnected(peer));
                self.after_close(peer, cause);
            }
        }
    }

    /// Whether `conn` is the main connection or the express lane to `peer` in use (events of
    /// replaced ones are stale).
    fn is_current(&self, peer: NodeId, conn: u64) -> bool {
        self.conns
            .get(&peer)
            .is_some_and(|c| c.main.id == conn || c.express.as_ref().is_some_and(|l| l.id == conn))
    }

    fn on_established(&mut self, est: Established) {
        if est.express {
            return self.on_express(est);
        }
        let peer = est.peer;
        if est.dialed {
            self.dials.remove(&peer);
        }
        if est.registry_version != self.registry.version {
            debug!(%peer, theirs = est.registry_version, ours = self.registry.version, "registry versions differ");
        }
        let admit = match self.policy.admit(self.now(), peer, est.dialed) {
            Ok(admit) => admit,
            Err(why) => {
                inc(&self.counters.connections_refused);
                info!(peer = %est.peer, remote = %est.remote, %why, "connection refused");
                // A refused dial (say, to a banned peer) is retried as the policy decides.
                self.run_policy();
                return;
            }
        };
        if admit == Admit::Replace && self.close_conn(peer, Close::Abort) {
            // A duplicate (a reconnect the old side has not noticed yet): keep the newest.
            info!(%peer, "replacing the previous connection with a newer one");
            let _ = self.feed(Input::PeerDisconnected(peer));
        }
        let conn_id = self.next_conn;
        self.next_conn += 1;
        let (dialed, remote, peer_role) = (est.dialed, est.remote, est.peer_role);
        let main = self.spawn_link(peer, conn_id, est, false);
        self.conns.insert(
            peer,
            Conn {
                main,
                express: None,
            },
        );
        if self.express.main_up(self.now(), peer, dialed, peer_role)
            && let Some(lane) = self.held.remove(&peer)
        {
            self.attach_express(lane);
        }
        self.run_express();
        if dialed {
            inc(&self.counters.connections_dialed);
        } else {
            inc(&self.counters.connections_accepted);
        }
        info!(%peer, %remote, dialed, "peer connected");
        self.publish_metrics();
        let _ = self.feed(Input::PeerConnected(peer));
    }

    // ---- shutdown ----

    async fn shutdown(&mut self) {
        info!(node = %self.id, "shutting down");
        let _ = self.accept_shutdown.send(true);
        for (_, t) in self.dials.drain().chain(self.express_dials.drain()) {
            t.abort();
        }
        self.held.clear();
        let mut tasks = Vec::new();
        let mut closes = Vec::new();
        for (_, conn) in self.conns.drain() {
            for link in std::iter::once(conn.main).chain(conn.express) {
                let _ = link.close.send(Close::Graceful);
                closes.push(link.close);
                tasks.extend(link.tasks);
            }
        }
        if let Some(t) = self.accept_task.take() {
            tasks.push(t);
        }
        let all = async {
            for t in tasks.iter_mut() {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), all)
            .await
            .is_err()
        {
            for t in &tasks {
                t.abort();
            }
        }
        drop(closes);
        #[cfg(feature = "trace")]
        if let Some(mut t) = self.trace.take()
            && let Err(e) = t.flush()
        {
            warn!(error = %e, "flushing the trace failed");
        }
        self.publish_metrics();
    }
}

/// Waits until the first pending delivery fits in the channel and sends it: true if sent, false
/// if the application dropped its stream (the delivery is put back to be discarded). Cancel-safe:
/// the delivery leaves `pending` only once it is sent.
async fn deliver_first(queue: &DeliveryQueue, pending: &mut VecDeque<Delivered>) -> bool {
    let Some(first) = pending.front().cloned() else {
        return true;
    };
    match queue.send(first).await {
        Ok(()) => {
            pending.pop_front();
            true
        }
        Err(_) => false,
    }
}
