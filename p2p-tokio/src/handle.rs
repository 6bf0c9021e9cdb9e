//! The embedder's handle on a running node, and the stream of deliveries.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use p2p_core::{Artifact, ArtifactId, Kind, Manifest, NodeId, PriorityFnRef};
#[cfg(feature = "trace")]
use p2p_trace::PriorityProfile;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Registry;
use crate::driver::Command;
use crate::error::NodeError;
use crate::metrics::{self, Counters, NodeMetrics};

/// A verified artifact delivered to the application, once per artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The artifact (its bytes hash to its id).
    pub artifact: Artifact,
    /// The peer it came from.
    pub from: NodeId,
}

/// One pooled artifact, as [`NodeHandle::pool_list`] lists it (without its bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEntry {
    /// Its id.
    pub id: ArtifactId,
    /// Its kind.
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// Its attribute bytes.
    pub attr: Bytes,
}

/// The mesh as this node sees it ([`NodeHandle::topology`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyView {
    /// The configured topology ([`NodeConfig::topology`](crate::NodeConfig::topology)).
    pub topology: p2p_transport::topology::Topology,
    /// The members in force, in registry order.
    pub members: Vec<NodeId>,
    /// The members this node connects to, in ascending order.
    pub neighbours: Vec<NodeId>,
}

impl TopologyView {
    /// The whole subnet's graph that every member derives (`None` for an explicit list, which
    /// each member sets for itself).
    pub fn graph(&self) -> Option<p2p_transport::topology::Graph> {
        self.topology.graph(&self.members)
    }
}

/// A page of the pool in pooling order, from [`NodeHandle::pool_list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolPage {
    /// The artifacts of this page.
    pub entries: Vec<PoolEntry>,
    /// Where the next page starts (pass it as `from`), if any artifact is left.
    pub next: Option<u64>,
}

/// A delivery in the channel, holding its share of the byte budget until the application
/// takes it.
#[derive(Debug)]
pub(crate) struct Queued {
    delivered: Delivered,
    _bytes: OwnedSemaphorePermit,
}

/// The sending side of the delivery channel: bounded in count and in bytes.
#[derive(Clone, Debug)]
pub(crate) struct DeliveryQueue {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    max_bytes: u32,
}

/// Why a delivery could not be queued without waiting.
pub(crate) enum QueueError {
    /// The channel is full (in count or in bytes).
    Full,
    /// The application dropped its [`Deliveries`].
    Closed,
}

impl DeliveryQueue {
    /// A channel of `count` deliveries and `max_bytes` bytes, and its receiving side.
    pub(crate) fn channel(count: usize, max_bytes: u64) -> (Self, Deliveries) {
        let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX).max(1);
        let (tx, rx) = mpsc::channel(count);
        let bytes = Arc::new(Semaphore::new(max_bytes as usize));
        let queue = DeliveryQueue {
            tx,
            bytes,
            max_bytes,
        };
        (queue, Deliveries { rx })
    }

    /// The bytes a delivery holds: its size, capped at the budget so that an artifact larger
    /// than the budget still goes through alone.
    fn permits(&self, d: &Delivered) -> u32 {
        u32::try_from(d.artifact.data.len())
            .unwrap_or(u32::MAX)
            .min(self.max_bytes)
    }

    /// Queues a copy of `d` (its bytes are shared) if there is room in count and bytes now.
    pub(crate) fn try_send(&self, d: &Delivered) -> Result<(), QueueError> {
        let slot = match self.tx.try_reserve() {
            Ok(slot) => slot,
            Err(mpsc::error::TrySendError::Full(())) => return Err(QueueError::Full),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(QueueError::Closed),
        };
        match Arc::clone(&self.bytes).try_acquire_many_owned(self.permits(d)) {
            Ok(bytes) => {
                slot.send(Queued {
                    delivered: d.clone(),
                    _bytes: bytes,
                });
                Ok(())
            }
            Err(_) => Err(QueueError::Full),
        }
    }

    /// Waits until `d` fits (in count and bytes) and queues it; hands it back if the
    /// application dropped its [`Deliveries`].
    pub(crate) async fn send(&self, d: Delivered) -> Result<(), Delivered> {
        let Ok(slot) = self.tx.reserve().await else {
            return Err(d);
        };
        let Ok(bytes) = Arc::clone(&self.bytes)
            .acquire_many_owned(self.permits(&d))
            .await
        else {
            return Err(d);
        };
        slot.send(Queued {
            delivered: d,
            _bytes: bytes,
        });
        Ok(())
    }
}

/// The bounded stream of deliveries, taken once with [`NodeHandle::take_deliveries`].
///
/// It holds at most [`NodeConfig::delivery_buffer`](crate::NodeConfig::delivery_buffer)
/// deliveries and [`NodeConfig::delivery_buffer_bytes`](crate::NodeConfig::delivery_buffer_bytes)
/// bytes of them (an artifact larger than that goes through alone). While it is full the node
/// stops reading from its peers (nothing is lost; peers are slowed by TCP back-pressure).
/// Dropping it discards later deliveries (counted in [`NodeMetrics::deliveries_discarded`]).
#[derive(Debug)]
pub struct Deliveries {
    rx: mpsc::Receiver<Queued>,
}

impl Deliveries {
    /// The next delivery; `None` once the node has shut down and every delivery was taken.
    pub async fn recv(&mut self) -> Option<Delivered> {
        self.rx.recv().await.map(|q| q.delivered)
    }

    /// The next delivery if one is ready.
    pub fn try_recv(&mut self) -> Option<Delivered> {
        self.rx.try_recv().ok().map(|q| q.delivered)
    }
}

pub(crate) struct Inner {
    pub node_id: NodeId,
    pub local_addr: SocketAddr,
    pub commands: mpsc::Sender<Command>,
    pub counters: Arc<Counters>,
    pub core_metrics: Arc<Mutex<p2p_core::Metrics>>,
    /// The subnet's chunk size: artifacts larger than it are named by their manifest.
    pub chunk_size: u32,
    pub deliveries: Mutex<Option<Deliveries>>,
    pub task: Mutex<Option<JoinHandle<()>>>,
}

/// A cheap, cloneable handle on a running node.
///
/// Every `async` method waits for the node task to carry the operation out; they fail with
/// [`NodeError::Closed`] after [`shutdown`](Self::shutdown). When every handle is dropped the
/// node shuts down by itself.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node_id", &self.inner.node_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    pub(crate) fn new(inner: Inner) -> Self {
        NodeHandle {
            inner: Arc::new(inner),
        }
    }

    async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(cmd(tx))
            .await
            .map_err(|_| NodeError::Closed)?;
        rx.await.map_err(|_| NodeError::Closed)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The subnet's chunk size: an artifact larger than it is named by its manifest
    /// ([`p2p_core::chunks::content_id`]).
    pub fn chunk_size(&self) -> u32 {
        self.inner.chunk_size
    }

    /// The address the node listens on (the bound port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Adds an artifact of `kind` with `attr` and `data` to the pool and gossips it; returns
    /// its id: the SHA-256 of `data`, or of its manifest if it is larger than the chunk size.
    /// The hashing runs in the caller's task, or for a chunked artifact on tokio's blocking
    /// pool, never on the node task.
    pub async fn publish(
        &self,
        kind: Kind,
        attr: Bytes,
        data: Bytes,
    ) -> Result<ArtifactId, NodeError> {
        let chunk_size = self.inner.chunk_size;
        if data.len() as u64 <= u64::from(chunk_size) {
            let artifact = Artifact::with_chunk_size(kind, attr, data, chunk_size);
            return self
                .ask(|reply| Command::Publish {
                    artifact,
                    manifest: None,
                    reply,
                })
                .await?;
        }
        let (artifact, manifest) = tokio::task::spawn_blocking(move || {
            let manifest = Manifest::build(&data, chunk_size);
            let id = manifest
                .as_ref()
                .map_or_else(|| ArtifactId::of(&data), Manifest::id);
            let artifact = Artifact {
                id,
                kind,
                attr,
                data,
            };
            (artifact, manifest)
        })
        .await
        .map_err(|_| NodeError::Closed)?;
        self.ask(|reply| Command::Publish {
            artifact,
            manifest,
            reply,
        })
        .await?
    }

    /// Removes an artifact from the pool; peers are told to forget its advert.
    pub async fn remove(&self, id: ArtifactId) -> Result<(), NodeError> {
        self.ask(|reply| Command::Remove { id, reply }).await
    }

    /// The artifact `id` if the local pool holds it (what this node published, and what it
    /// relays). The bytes are shared with the pool, not copied.
    pub async fn get(&self, id: ArtifactId) -> Result<Option<Artifact>, NodeError> {
        self.ask(|reply| Command::Get { id, reply }).await
    }

    /// At most `max` pooled artifacts in pooling order, starting at position `from` (0 for the
    /// first page, then the previous page's [`PoolPage::next`]). The node task walks only the
    /// page, so a large pool is listed a bounded page at a time.
    pub async fn pool_list(&self, from: u64, max: usize) -> Result<PoolPage, NodeError> {
        self.ask(|reply| Command::PoolList { from, max, reply })
            .await
    }

    /// Takes the stream of deliveries; `None` if it was already taken.
    pub fn take_deliveries(&self) -> Option<Deliveries> {
        self.inner
            .deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Replaces the priority function and re-evaluates every kept advert with it.
    ///
    /// A node recording a trace (feature `trace`) records the new function's decisions like the
    /// first one's, so any function replays.
    pub async fn set_priority_fn(&self, f: PriorityFnRef) -> Result<(), NodeError> {
        self.ask(|reply| Command::SetPriority {
            f,
            #[cfg(feature = "trace")]
            profile: None,
            reply,
        })
        .await
    }

    /// Replaces the priority function with a named profile's and re-evaluates every kept
    /// advert. The same as [`set_priority_fn`](Self::set_priority_fn) with the profile's
    /// function, except that the trace also notes the profile's name; kept for compatibility.
    #[cfg(feature = "trace")]
    pub async fn set_priority_profile(&self, profile: PriorityProfile) -> Result<(), NodeError> {
        let f = profile.to_fn();
        self.ask(|reply| Command::SetPriority {
            f,
            profile: Some(profile),
            reply,
        })
        .await
    }

    /// Asks the priority function again about every kept advert (the application's state
    /// moved).
    pub async fn reevaluate(&self) -> Result<(), NodeError> {
        self.ask(|reply| Command::Reevaluate { reply }).await
    }

    /// Installs a new registry version: new members are dialed (when this node has the lower
    /// id), removed members are disconnected at once and refused from then on.
    pub async fn update_registry(&self, registry: Registry) -> Result<(), NodeError> {
        self.ask(|reply| Command::UpdateRegistry { registry, reply })
            .await?
    }

    /// The peers with an established connection, in ascending order.
    pub async fn connected_peers(&self) -> Result<Vec<NodeId>, NodeError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// The configured topology, the members in force and this node's neighbours among them.
    pub async fn topology(&self) -> Result<TopologyView, NodeError> {
        self.ask(|reply| Command::Topology { reply }).await
    }

    /// Drops the connection to `peer` as if the network had cut it (no ban): the core is told
    /// and the lower id reconnects after its back-off. Returns whether a connection existed.
    /// For operators and fault-injection tests.
    pub async fn drop_connection(&self, peer: NodeId) -> Result<bool, NodeError> {
        self.ask(|reply| Command::DropConnection { peer, reply })
            .await
    }

    /// A snapshot of the metrics (cheap: no round trip to the node task).
    pub fn metrics(&self) -> NodeMetrics {
        let core = *self
            .inner
            .core_metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.counters.snapshot(core)
    }

    /// Registers the node's metrics in `registry` (one registry per node: the names carry no
    /// node label), prefixed with `p2p_`: every field of [`NodeMetrics`] and of the core's
    /// [`p2p_core::Metrics`], read afresh on each encoding. The registry does not keep the node
    /// running; after shutdown it reports the last values.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        metrics::register(
            registry,
            Arc::clone(&self.inner.counters),
            Arc::clone(&self.inner.core_metrics),
        );
    }

    /// Shuts the node down gracefully: stops accepting and dialing, closes every connection
    /// with a TLS close_notify, flushes the trace, and waits for the node task to end.
    /// Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
