//! Cluster peers: the other processes' Flight services, which a read asks
//! for their shards at the same `as_of` (SPEC §4 across processes).

use std::time::Duration;

use arrow_flight::FlightClient;
use std::path::PathBuf;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
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
#[derive(Clone, Debug, Default)]
pub struct PeerLink {
    pub tls: Option<PeerTls>,
    pub cluster_token: Option<String>,
}

/// The files of TLS to the other processes, read at each connection so that
/// a rotated certificate is the one presented.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The CA that signed the peers' certificates (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// This process's certificate and key, presented for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl PeerTls {
    fn config(&self) -> std::io::Result<ClientTlsConfig> {
        let mut config = match &self.ca {
            Some(ca) => {
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                std::fs::read(cert)?,
                std::fs::read(key)?,
            ));
        }
        Ok(config)
    }
}

impl PeerLink {
    /// A Flight client of cluster process `process` at `peer` (`host:port`).
    pub(super) async fn connect(&self, process: usize, peer: &str) -> Result<FlightClient, Status> {
        let unavailable = |error: &dyn std::fmt::Display| peer_unavailable(process, peer, error);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{peer}"))
            .map_err(|error| unavailable(&error))?;
        if let Some(tls) = &self.tls {
            let config = tls.config().map_err(|error| unavailable(&error))?;
            endpoint = endpoint
                .tls_config(config)
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
