//! Cluster peers: the other processes' Flight services, which a read asks
//! for their shards at the same `as_of` (SPEC §4 across processes).

use std::time::Duration;

use arrow_flight::FlightClient;
use tonic::transport::{Channel, ClientTlsConfig};
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

/// How this process reaches the others: over TLS if they serve it, with
/// the cluster token if authentication is on.
#[derive(Clone, Default)]
pub struct PeerLink {
    pub tls: Option<ClientTlsConfig>,
    pub cluster_token: Option<String>,
}

impl PeerLink {
    /// A Flight client of cluster process `process` at `peer` (`host:port`).
    pub(super) async fn connect(&self, process: usize, peer: &str) -> Result<FlightClient, Status> {
        let unavailable = |error: &dyn std::fmt::Display| peer_unavailable(process, peer, error);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{peer}"))
            .map_err(|error| unavailable(&error))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|error| unavailable(&error))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| unavailable(&error))?;
        let mut client = FlightClient::new(channel);
        if let Some(token) = &self.cluster_token {
            client
                .add_header("authorization", &format!("Bearer {token}"))
                .map_err(|error| unavailable(&error))?;
        }
        Ok(client)
    }
}
