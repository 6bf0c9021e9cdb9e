//! The accept loop: TCP accept, admission before TLS ([`p2p_transport::admission`]), then the
//! admitted sockets' handshakes, each in its own task, aborted when the admission machine
//! evicts it or its pre-authentication deadline passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use p2p_core::Time;
use p2p_transport::admission::{
    Admission, AdmissionView, EvictReason, Eviction, PreTlsRefusal, Ticket,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{self, AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::conn::{Clock, Event};
use crate::handshake::{HandshakeError, Handshaker};
use crate::metrics::{Counters, inc};
use crate::net::SocketOpts;

/// The accept task's own parts.
pub(crate) struct AcceptLoop {
    pub listener: TcpListener,
    pub hs: Handshaker,
    pub sock: SocketOpts,
    pub events: mpsc::Sender<Event>,
    pub admission: Admission,
    pub view: watch::Receiver<Arc<AdmissionView>>,
    pub shutdown: watch::Receiver<bool>,
    pub clock: Clock,
}

fn count_refusal(c: &Counters, why: &PreTlsRefusal) {
    inc(match why {
        PreTlsRefusal::Banned { .. } => &c.refused_pre_tls_banned,
        PreTlsRefusal::NotMemberAddress => &c.refused_pre_tls_not_member_address,
        PreTlsRefusal::AddressFull { .. } => &c.refused_pre_tls_address_full,
        PreTlsRefusal::PoolFull { .. } => &c.refused_pre_tls_pool_full,
    });
}

fn count_eviction(c: &Counters, why: EvictReason) {
    if why == EvictReason::Deadline {
        // A handshake that timed out, as `handshake_failures` counts them.
        inc(&c.handshake_failures);
    }
    inc(match why {
        EvictReason::StrangerForMember => &c.evicted_stranger,
        EvictReason::BusiestForMember => &c.evicted_busiest,
        EvictReason::Deadline => &c.evicted_deadline,
    });
}

impl AcceptLoop {
    fn apply_view(&mut self) {
        let view = Arc::clone(&self.view.borrow_and_update());
        self.admission.set_view(&view);
    }

    /// Accepts connections until `shutdown` turns true (dropping the loop aborts every pending
    /// handshake); a completed handshake is handed to the node task.
    pub(crate) async fn run(mut self) {
        self.apply_view();
        let mut handshakes: JoinSet<Ticket> = JoinSet::new();
        let mut aborts: HashMap<Ticket, AbortHandle> = HashMap::new();
        let mut tickets: HashMap<task::Id, Ticket> = HashMap::new();
        let counters = Arc::clone(&self.hs.counters);
        let sleep = tokio::time::sleep_until(self.clock.instant(Time::MAX));
        tokio::pin!(sleep);
        let evict = |aborts: &mut HashMap<Ticket, AbortHandle>, e: Eviction| {
            if let Some(task) = aborts.remove(&e.ticket) {
                task.abort();
            }
            count_eviction(&counters, e.reason);
            debug!(ip = %e.ip, reason = %e.reason, "pending handshake aborted");
        };
        loop {
            counters
                .pending_handshakes
                .store(self.admission.pending() as u64, Ordering::Relaxed);
            let deadline = self.admission.poll_timeout();
            if let Some(t) = deadline {
                sleep.as_mut().reset(self.clock.instant(t));
            }
            tokio::select! {
                _ = self.shutdown.changed() => return,
                Ok(()) = self.view.changed() => self.apply_view(),
                Some(done) = handshakes.join_next_with_id(), if !handshakes.is_empty() => {
                    let id = match &done {
                        Ok((id, _)) => *id,
                        Err(e) => e.id(),
                    };
                    // An evicted task was already forgotten when it was aborted; any other
                    // ending (a panic included) frees its slot.
                    if let Some(ticket) = tickets.remove(&id)
                        && aborts.remove(&ticket).is_some()
                    {
                        self.admission.finished(ticket);
                    }
                }
                () = &mut sleep, if deadline.is_some() => {
                    for e in self.admission.handle_timeout(self.clock.now()) {
                        evict(&mut aborts, e);
                    }
                }
                r = self.listener.accept() => {
                    let (tcp, remote) = match r {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of descriptors and similar: wait instead of spinning.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // The view may have changed in the same turn as the accept; a socket is
                    // judged against the registry the node holds when it arrives.
                    if self.view.has_changed().unwrap_or(false) {
                        self.apply_view();
                    }
                    let admitted = match self.admission.arrive(self.clock.now(), remote.ip()) {
                        Ok(a) => a,
                        Err(why) => {
                            count_refusal(&counters, &why);
                            debug!(%remote, reason = why.name(), error = %why, "refused before TLS");
                            continue;
                        }
                    };
                    if let Some(e) = admitted.evicted {
                        evict(&mut aborts, e);
                    }
                    if let Err(e) = self.sock.apply_stream(&tcp) {
                        debug!(%remote, error = %e, "cannot set socket options");
                    }
                    let hs = self.hs.clone();
                    let events = self.events.clone();
                    let ticket = admitted.ticket;
                    let task = handshakes.spawn(async move {
                        match hs.accept(tcp, remote).await {
                            Ok(est) => {
                                // Handed over outside this task, so that its slot frees at once.
                                tokio::spawn(async move {
                                    let _ = events.send(Event::Established(Box::new(est))).await;
                                });
                            }
                            Err(e @ HandshakeError::Banned(_)) => {
                                inc(&hs.counters.connections_refused);
                                inc(&hs.counters.refused_in_tls_banned);
                                info!(%remote, error = %e, "banned member refused in TLS");
                            }
                            Err(e) if e.is_refusal() => {
                                inc(&hs.counters.connections_refused);
                                info!(%remote, error = %e, "inbound connection refused");
                            }
                            Err(e) => {
                                inc(&hs.counters.handshake_failures);
                                debug!(%remote, error = %e, "inbound handshake failed");
                            }
                        }
                        ticket
                    });
                    tickets.insert(task.id(), ticket);
                    aborts.insert(ticket, task);
                }
            }
        }
    }
}
