//! Cluster mode's data plane (SPEC §9): the connections between the
//! processes of one timely computation, authenticated and encrypted.
//!
//! Timely's own networking takes anyone on its port: its first 8 bytes name
//! the process, and then everything is trusted. So this process owns the
//! sockets and timely never touches the network:
//!
//! 1. `links::connect_all` listens on this process's hostfile address and
//!    dials the processes before it (timely's order). Every connection is
//!    TLS 1.3 (`transport`), then a `handshake` in which both sides prove
//!    they hold the cluster token, bound to that TLS session, and check that
//!    they were started for the same cluster (processes, workers, topics).
//!    A connection that fails any of it (a port scanner, garbage, a stranger
//!    claiming to be a process) is dropped with a log line and the listener
//!    goes on; a peer that proves the token but was started for another
//!    cluster stops the start with both configurations in the error.
//! 2. For each peer, timely gets one end of a `UnixStream` pair
//!    (`initialize_networking_from_sockets`), and `pump` copies between
//!    the other end and the TLS connection.
//! 3. A peer lost later is seen by the pump, which reports it ([`LostPeer`])
//!    and keeps timely's end open: timely's channels would otherwise panic
//!    and abort the process. The pipeline fails, and `serve` exits with
//!    status 2 so that the orchestrator restarts the cluster.

mod handshake;
mod links;
mod pump;
mod transport;

use std::any::Any;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use anyhow::{Context, Result};
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};

pub use handshake::{HandshakeError, Shape};
pub use links::{dial, DialError};

/// What this process needs to join its cluster.
#[derive(Clone, Debug)]
pub struct ClusterLink {
    /// This process's index, from 0.
    pub process: usize,
    /// `host:port` of every process's cluster listener, in process order.
    pub addresses: Vec<String>,
    /// What every process must have been started with.
    pub shape: Shape,
    /// The secret every process holds (`--cluster-token-file`). Without one
    /// (loopback clusters only) the handshake still checks the shape, but
    /// anyone who can reach the port could join.
    pub token: Option<ClusterToken>,
}

/// The cluster token; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterToken(pub String);

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterToken(..)")
    }
}

/// Told why a connected peer was lost; answers whether that was expected
/// (this process is stopping too).
pub type LostPeer = Arc<dyn Fn(String) -> bool + Send + Sync>;

/// Connects to every other process of the cluster and hands timely the
/// connections, as `timely::execute_from` takes them. Blocks until every
/// peer is connected. The returned guard owns the pumps: keep it as long as
/// the computation runs.
pub fn build(
    link: &ClusterLink,
    threads: usize,
    on_lost: LostPeer,
) -> Result<(Vec<AllocatorBuilder>, Box<dyn Any + Send>)> {
    // One thread carries every peer's traffic: it only copies bytes and
    // runs TLS, which a core does at several GB/s.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("trimatch-cluster")
        .enable_all()
        .build()
        .context("cannot start the cluster transport's runtime")?;
    let peers = runtime.block_on(links::connect_all(link))?;
    let mut sockets: Vec<Option<UnixStream>> = Vec::with_capacity(link.addresses.len());
    for (index, peer) in peers.into_iter().enumerate() {
        let Some(peer) = peer else {
            sockets.push(None);
            continue;
        };
        let (ours, timelys) = UnixStream::pair().context("cannot make a socket pair")?;
        ours.set_nonblocking(true)?;
        let ours = {
            let _entered = runtime.enter();
            tokio::net::UnixStream::from_std(ours)?
        };
        let address = link.addresses[index].clone();
        runtime.spawn(pump::run(index, address, peer, ours, on_lost.clone()));
        sockets.push(Some(timelys));
    }
    let hooks = timely::communication::initialize::Hooks::default();
    let local =
        ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
    let (builders, comms) =
        initialize_networking_from_sockets(local, sockets, link.process, threads, hooks)
            .context("cannot start timely's channels to the other processes")?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    Ok((
        builders,
        Box::new(Transport {
            comms: Some(comms),
            runtime: Some(runtime),
        }),
    ))
}

/// Timely's send and receive threads and the pumps under them.
struct Transport {
    comms: Option<timely::communication::allocator::zero_copy::initialize::CommsGuard>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        // Timely's threads first, so that what they send still crosses the
        // pumps; then the pumps, without waiting for a peer that is gone.
        drop(self.comms.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
