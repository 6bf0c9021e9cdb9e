//! The node thread: the only owner of the [`Node`] and the [`PeerPolicy`]. It takes one event
//! at a time from a bounded channel, feeds the core and the policy, drains their outputs and
//! actions, and waits until the earliest of their timers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread;
use std::time::Duration;

use p2p_core::{
    Artifact, ArtifactId, DisconnectReason, Input, InputError, Node, NodeId, Output, Time,
};
use p2p_transport::admission::AdmissionView;
use p2p_transport::codec::Hello;
use p2p_transport::mux::PushError;
use p2p_transport::peers::{Admit, CloseCause, PeerPolicy, PolicyAction};
use p2p_transport::tls::Membership;
use tracing::{debug, info, warn};

use crate::Delivered;
use crate::config::Registry;
use crate::conn::{self, AcceptMsg, ConnEnd, Link, Shared, inc};
use crate::error::Error;

/// How often the node thread retries pending deliveries while the channel is full.
const DELIVERY_RETRY: Duration = Duration::from_millis(2);

/// What the node thread receives: the handle's commands and the connections' events.
pub(crate) enum Event {
    Command(Command),
    /// A connection completed TLS and received the peer's hello.
    Established {
        link: Arc<Link>,
        hello: Hello,
    },
    /// Messages wait in the inbox (sent at most once per look of the node thread).
    Inbox,
    Congestion {
        conn: u64,
        peer: NodeId,
        congested: bool,
    },
    /// A connection (or a dial) ended on its own.
    Closed {
        conn: u64,
        peer: Option<NodeId>,
        dialed: bool,
        end: ConnEnd,
    },
}

/// What the handle asks of the node thread.
pub(crate) enum Command {
    /// An artifact and its manifest if it is chunked (both computed on the caller's thread).
    Publish(
        Artifact,
        Option<p2p_core::Manifest>,
        SyncSender<Result<ArtifactId, Error>>,
    ),
    Peers(SyncSender<Vec<NodeId>>),
    UpdateRegistry(Registry, SyncSender<Result<(), Error>>),
    Shutdown,
}

/// Everything the node thread owns.
pub(crate) struct NodeThread {
    pub core: Node,
    pub policy: PeerPolicy,
    pub shared: Arc<Shared>,
    pub membership: Membership,
    pub registry: Registry,
    pub deliveries: SyncSender<Delivered>,
    /// Admitted connections, one per peer.
    links: HashMap<NodeId, Arc<Link>>,
    /// Dials under way: connection number -> peer.
    dialing: HashMap<u64, NodeId>,
    /// The registry addresses and bans last told to the accept thread and the TLS verifiers.
    admission_view: Option<AdmissionView>,
    pending: VecDeque<Delivered>,
    deliveries_open: bool,
    follow_up: VecDeque<Input>,
}

impl NodeThread {
    pub fn new(
        core: Node,
        policy: PeerPolicy,
        shared: Arc<Shared>,
        membership: Membership,
        deliveries: SyncSender<Delivered>,
    ) -> Self {
        NodeThread {
            core,
            policy,
            shared,
            membership,
            registry: Registry::default(),
            deliveries,
            links: HashMap::new(),
            dialing: HashMap::new(),
            admission_view: None,
            pending: VecDeque::new(),
            deliveries_open: true,
            follow_up: VecDeque::new(),
        }
    }

    fn now(&self) -> Time {
        self.shared.now()
    }

    /// The loop: install `registry`, then events until shutdown, waking for the timers.
    pub fn run(mut self, registry: Registry, events: Receiver<Event>) {
        self.install(registry);
        loop {
            self.carry_out_actions();
            self.publish_admission();
            self.flush_deliveries();
            let now = self.now();
            // The end of a ban wakes the thread, so the TLS verifiers stop refusing the member.
            let ban_end = self
                .admission_view
                .as_ref()
                .and_then(|v| v.banned.iter().map(|b| b.1).min());
            let mut deadline = [
                self.core.poll_timeout(),
                self.policy.poll_timeout(),
                ban_end,
            ]
            .into_iter()
            .flatten()
            .min();
            if !self.pending.is_empty() {
                let retry = now + DELIVERY_RETRY;
                deadline = Some(deadline.map_or(retry, |d| d.min(retry)));
            }
            // Readers paused by pending deliveries leave their messages queued too.
            self.shared.inbox_signalled.store(false, Ordering::Release);
            let has_message = self.pending.is_empty() && !self.shared.inbox().is_empty();
            let ev = if has_message {
                events.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                match deadline {
                    Some(t) => events.recv_timeout(t.saturating_since(now)),
                    None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
                }
            };
            match ev {
                Ok(Event::Command(Command::Shutdown)) | Err(RecvTimeoutError::Disconnected) => {
                    break;
                }
                Ok(ev) => self.on_event(ev),
                // Events first; a message only when none waits.
                Err(RecvTimeoutError::Timeout) if has_message => self.next_message(),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = self.now();
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                let _ = self.feed(Input::Timeout);
            }
            if self.policy.poll_timeout().is_some_and(|t| t <= now) {
                self.policy.handle_timeout(now);
            }
        }
        for (_, link) in self.links.drain() {
            link.close();
        }
        info!(node = %self.core.node_id(), "node stopped");
    }

    // ---- the core ----

    /// Feeds `input`, carries out every output, then the inputs the outputs caused.
    fn feed(&mut self, input: Input) -> Result<(), InputError> {
        let result = self.feed_one(input);
        while let Some(next) = self.follow_up.pop_front() {
            let _ = self.feed_one(next);
        }
        result
    }

    /// One input, then the drain: outputs are drained even when the input was refused (the
    /// call still advanced time and ran the scheduler).
    fn feed_one(&mut self, input: Input) -> Result<(), InputError> {
        let now = self.now();
        let result = self.core.handle_input(now, input);
        while let Some(out) = self.core.poll_output() {
            self.carry_out(now, out);
        }
        result
    }

    fn carry_out(&mut self, now: Time, out: Output) {
        match out {
            Output::Send { to, msg, class } => {
                let Some(link) = self.links.get(&to) else {
                    debug!(peer = %to, msg = msg.name(), "send to a peer without connection dropped");
                    return;
                };
                match link.push(class, &msg) {
                    Ok(None) => {}
                    Ok(Some(congested)) => self.follow_up.push_back(Input::Congestion {
                        peer: to,
                        congested,
                    }),
                    Err(PushError::QueueFull { class, queued, .. }) => {
                        inc(&self.shared.counters.send_queue_overflows);
                        warn!(peer = %to, ?class, queued, "send queue full: disconnecting the slow peer");
                        self.drop_link(to);
                        self.policy.closed(now, to, CloseCause::Lost);
                        self.follow_up.push_back(Input::PeerDisconnected(to));
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
                if self.drop_link(peer) {
                    warn!(%peer, %reason, "disconnecting peer");
                }
                let cause = if reason == DisconnectReason::NotMember {
                    CloseCause::Requested
                } else {
                    CloseCause::Misbehaviour
                };
                self.policy.closed(now, peer, cause);
            }
            Output::HashChunk { id, index, data } => {
                // This driver hashes on its node thread (it sets no offload by default).
                let digest = p2p_core::chunks::sha256(&data);
                self.follow_up
                    .push_back(Input::ChunkHashed { id, index, digest });
            }
            Output::Cancel { to, req_id } => {
                let Some(link) = self.links.get(&to) else {
                    return;
                };
                let (dropped, change) = link.cancel(req_id);
                if dropped {
                    debug!(peer = %to, req_id, "queued answer cancelled");
                }
                if let Some(congested) = change {
                    self.follow_up.push_back(Input::Congestion {
                        peer: to,
                        congested,
                    });
                }
            }
            Output::CancelPushes { to, id, ranges } => {
                let Some(link) = self.links.get(&to) else {
                    return;
                };
                let (dropped, change) = link.cancel_pushes(&id, &ranges);
                if dropped > 0 {
                    debug!(peer = %to, dropped, "queued pushes cancelled");
                }
                if let Some(congested) = change {
                    self.follow_up.push_back(Input::Congestion {
                        peer: to,
                        congested,
                    });
                }
            }
            Output::Event(event) => debug!(?event, "core event"),
        }
    }

    /// Hands pending deliveries to the application while the channel has room; readers pause
    /// while some wait.
    fn flush_deliveries(&mut self) {
        while let Some(d) = self.pending.pop_front() {
            if !self.deliveries_open {
                inc(&self.shared.counters.deliveries_discarded);
                continue;
            }
            match self.deliveries.try_send(d) {
                Ok(()) => inc(&self.shared.counters.deliveries),
                Err(TrySendError::Full(d)) => {
                    self.pending.push_front(d);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.deliveries_open = false;
                    inc(&self.shared.counters.deliveries_discarded);
                }
            }
        }
        let paused = !self.pending.is_empty();
        self.shared.paused.store(paused, Ordering::Relaxed);
    }

    // ---- events ----

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Command(cmd) => self.on_command(cmd),
            Event::Established { link, hello } => self.on_established(link, hello),
            Event::Inbox => {}
            Event::Congestion {
                conn,
                peer,
                congested,
            } => {
                if self.is_current(peer, conn) {
                    let _ = self.feed(Input::Congestion { peer, congested });
                }
            }
            Event::Closed {
                conn,
                peer,
                dialed,
                end,
            } => self.on_closed(conn, peer, dialed, end),
        }
    }

    /// Handles the next message in the inbox's fair order.
    fn next_message(&mut self) {
        let next = self.shared.inbox().pop();
        if let Some((_, _, m)) = next
            && self.is_current(m.peer, m.conn)
        {
            let _ = self.feed(Input::Message {
                from: m.peer,
                msg: m.msg,
            });
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(artifact, manifest, reply) => {
                let id = artifact.id;
                let r = self.feed(match manifest {
                    Some(manifest) => Input::PublishChunked { artifact, manifest },
                    None => Input::Publish(artifact),
                });
                let _ = reply.try_send(r.map(|()| id).map_err(Error::from));
            }
            Command::Peers(reply) => {
                let _ = reply.try_send(self.policy.connected().collect());
            }
            Command::UpdateRegistry(registry, reply) => {
                let _ = reply.try_send(self.update_registry(registry));
            }
            // Handled by the loop.
            Command::Shutdown => {}
        }
    }

    fn is_current(&self, peer: NodeId, conn: u64) -> bool {
        self.links.get(&peer).is_some_and(|l| l.conn == conn)
    }

    fn on_established(&mut self, link: Arc<Link>, hello: Hello) {
        let now = self.now();
        let peer = link.peer;
        if link.dialed {
            self.dialing.remove(&link.conn);
        }
        let admit = match self.policy.admit(now, peer, link.dialed) {
            Ok(a) => a,
            Err(refusal) => {
                inc(&self.shared.counters.refused);
                info!(%peer, %refusal, "connection refused");
                link.close();
                self.shared.inbox().remove(link.conn);
                return;
            }
        };
        if hello.registry_version != self.registry.version {
            debug!(%peer, theirs = hello.registry_version, ours = self.registry.version, "registry versions differ");
        }
        if admit == Admit::Replace {
            info!(%peer, "replacing the previous connection with a newer one");
            self.drop_link(peer);
            let _ = self.feed(Input::PeerDisconnected(peer));
        }
        inc(&self.shared.counters.admitted);
        info!(%peer, dialed = link.dialed, "peer connected");
        self.links.insert(peer, link);
        let _ = self.feed(Input::PeerConnected(peer));
    }

    fn on_closed(&mut self, conn: u64, peer: Option<NodeId>, dialed: bool, end: ConnEnd) {
        let now = self.now();
        self.shared.inbox().remove(conn);
        if let Some(peer) = peer.filter(|p| self.is_current(*p, conn)) {
            self.links.remove(&peer);
            inc(&self.shared.counters.disconnects);
            info!(%peer, reason = %end, "connection closed");
            let cause = if end.is_misbehaviour() {
                CloseCause::Misbehaviour
            } else {
                CloseCause::Lost
            };
            self.policy.closed(now, peer, cause);
            let _ = self.feed(Input::PeerDisconnected(peer));
            return;
        }
        if end.is_misbehaviour()
            && let Some(peer) = peer
        {
            self.policy.misbehaved(now, peer);
        }
        if dialed && let Some(peer) = self.dialing.remove(&conn) {
            inc(&self.shared.counters.dial_failures);
            debug!(%peer, reason = %end, "dial failed");
            self.policy.dial_failed(now, peer);
        }
    }

    // ---- connections and membership ----

    /// Closes the admitted connection to `peer`, if any; returns whether there was one.
    fn drop_link(&mut self, peer: NodeId) -> bool {
        let Some(link) = self.links.remove(&peer) else {
            return false;
        };
        link.close();
        // What it read and the node did not handle yet is dropped with it.
        self.shared.inbox().remove(link.conn);
        inc(&self.shared.counters.disconnects);
        true
    }

    /// Tells the accept thread's admission machine and the TLS verifiers of the registry's
    /// addresses and the bans in force, if either changed.
    fn publish_admission(&mut self) {
        let view = AdmissionView::new(&self.registry, self.policy.banned(self.now()));
        if self.admission_view.as_ref() == Some(&view) {
            return;
        }
        self.membership.set_banned(view.banned.iter().map(|b| b.0));
        let _ = self
            .shared
            .settings
            .accept
            .send(AcceptMsg::View(view.clone()));
        self.admission_view = Some(view);
    }

    fn carry_out_actions(&mut self) {
        while let Some(action) = self.policy.poll_action() {
            match action {
                PolicyAction::Dial(peer) => self.dial(peer),
                PolicyAction::Close(peer) => {
                    if self.drop_link(peer) {
                        info!(%peer, "disconnected: removed from the registry");
                    }
                }
                PolicyAction::Prune(peer) => {
                    if self.drop_link(peer) {
                        info!(%peer, "disconnected: no longer a neighbour in the topology");
                        let _ = self.feed(Input::PeerDisconnected(peer));
                    }
                }
            }
        }
    }

    fn dial(&mut self, peer: NodeId) {
        let now = self.now();
        let Some(addr) = self.registry.addr_of(&peer) else {
            self.policy.dial_failed(now, peer);
            return;
        };
        let conn = self.shared.next_conn();
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name(format!("p2p-conn-{conn}"))
            .spawn(move || conn::dial(shared, conn, peer, addr));
        match spawned {
            Ok(_) => {
                debug!(%peer, %addr, "dialing");
                self.dialing.insert(conn, peer);
            }
            Err(e) => {
                warn!(%peer, error = %e, "cannot start a dial thread");
                self.policy.dial_failed(now, peer);
            }
        }
    }

    /// Installs a registry: TLS verifiers, hello version, policy (dials and closes), core.
    fn install(&mut self, registry: Registry) {
        let now = self.now();
        let ids = registry.ids();
        self.shared
            .registry_version
            .store(registry.version, Ordering::Relaxed);
        self.policy
            .set_members(now, registry.version, ids.iter().copied());
        let version = registry.version;
        info!(version, members = ids.len(), "registry installed");
        self.registry = registry;
        self.carry_out_actions();
        let _ = self.feed(Input::Membership {
            version,
            members: ids,
        });
    }

    fn update_registry(&mut self, registry: Registry) -> Result<(), Error> {
        let stale = Error::StaleRegistry {
            current: self.registry.version,
            offered: registry.version,
        };
        if registry.version < self.registry.version {
            return Err(stale);
        }
        let members = registry.tls_members();
        self.membership.update(members).map_err(|_| stale)?;
        self.install(registry);
        Ok(())
    }
}
