//! Cluster peers: the other processes' Flight services, which a read asks
//! for their shards at the same `as_of` (SPEC §4 across processes).

use std::time::Duration;

use arrow_flight::FlightClient;
use tonic::transport::Channel;
use tonic::Status;

/// How long a shard request from a peer waits for its `as_of` to be complete
/// here (see [`crate::pipeline::PipelineHandle::wait_until_complete`]).
pub(super) const PEER_COMPLETION_WAIT: Duration = Duration::from_secs(5);

/// The error for a cluster peer that could not be reached or failed midway.
pub(super) fn peer_unavailable(
    process: usize,
    peer: &str,
    error: &dyn std::fmt::Display,
) -> Status {
    Status::unavailable(format!(
        "process {process} of the cluster ({peer}) did not answer: {error}"
    ))
}

/// A Flight client of cluster process `process` at `peer` (`host:port`).
pub(super) async fn connect_peer(process: usize, peer: &str) -> Result<FlightClient, Status> {
    let unavailable = |error: &dyn std::fmt::Display| peer_unavailable(process, peer, error);
    let channel = Channel::from_shared(format!("http://{peer}"))
        .map_err(|error| unavailable(&error))?
        .connect()
        .await
        .map_err(|error| unavailable(&error))?;
    Ok(FlightClient::new(channel))
}
