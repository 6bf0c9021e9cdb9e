//! The accept loop: TCP accept, then a bounded number of concurrent handshakes.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::conn::Event;
use crate::handshake::Handshaker;
use crate::metrics::inc;
use crate::net::SocketOpts;

/// Accepts connections until `shutdown` turns true; each runs its handshake in its own task
/// (at most `max_pending` at once) and, if it completes, is handed to the node task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    hs: Handshaker,
    sock: SocketOpts,
    events: mpsc::Sender<Event>,
    max_pending: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_pending));
    let mut handshakes = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and similar: wait instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        if let Err(e) = sock.apply_stream(&tcp) {
            debug!(%remote, error = %e, "cannot set socket options");
        }
        let hs = hs.clone();
        let events = events.clone();
        handshakes.spawn(async move {
            let _permit = permit;
            match hs.accept(tcp, remote).await {
                Ok(est) => {
                    let _ = events.send(Event::Established(Box::new(est))).await;
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
        });
        // Reap finished handshakes so the set does not grow.
        while handshakes.try_join_next().is_some() {}
    }
}
