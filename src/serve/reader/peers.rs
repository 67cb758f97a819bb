//! The other processes of a cluster, as the reader reaches them: their
//! Flight services, asked for their shards of a read at the same `as_of`
//! (SPEC §4 across processes). This is the one fan-out: snapshots, a
//! statement's tables, offsets, change feeds and a policy preview's reads
//! all open their requests to the other processes here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::{Action, FlightClient, Ticket};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Status;
use trimatch_dataflows::Time;

use crate::output::filter::RowFilter;
use crate::output::OFFSETS_KEY;

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

/// Every process's Flight address, in process order, and this process's
/// index; empty outside a cluster.
#[derive(Debug, Default)]
pub(super) struct Cluster {
    pub peers: Vec<String>,
    pub process: usize,
    pub link: PeerLink,
}

/// The other processes' shards of a snapshot.
pub(super) struct Shards {
    pub batches: Vec<RecordBatch>,
    /// The offsets their `source_progress` shards report.
    pub offsets: BTreeMap<String, i64>,
}

impl Cluster {
    /// Whether there are other processes to ask.
    pub fn is_cluster(&self) -> bool {
        self.peers.len() > 1
    }

    /// Opens `ticket`'s read (with `filter`'s tenant set, as a shard read,
    /// at `as_of` if given) on every other process: one reply stream each,
    /// with the process's index.
    pub async fn open(
        &self,
        ticket: &[u8],
        filter: &RowFilter,
        as_of: Option<Time>,
    ) -> Result<Vec<(usize, FlightRecordBatchStream)>, Status> {
        let mut request = forwarded_ticket(ticket, filter)?;
        if let Some(as_of) = as_of {
            request["as_of"] = json!(as_of);
        }
        let mut streams = Vec::new();
        for (process, peer) in self.peers.iter().enumerate() {
            if process == self.process {
                continue;
            }
            let mut client = self.link.connect(process, peer).await?;
            let stream = client
                .do_get(Ticket::new(request.to_string()))
                .await
                .map_err(|error| match error {
                    // A refusal (another tenant, a bad filter) is the peer's answer.
                    arrow_flight::error::FlightError::Tonic(status) => *status,
                    other => peer_unavailable(process, peer, &other),
                })?;
            streams.push((process, stream));
        }
        Ok(streams)
    }

    /// Sends the action (`kind`, `body`) to every other process and gathers
    /// each one's `Result` bodies: a policy preview's shard reads.
    pub async fn actions(&self, kind: &str, body: &[u8]) -> Result<Vec<Vec<u8>>, Status> {
        let mut bodies = Vec::new();
        for (process, peer) in self.peers.iter().enumerate() {
            if process == self.process {
                continue;
            }
            let mut client = self.link.connect(process, peer).await?;
            let results = client
                .do_action(Action::new(kind.to_string(), body.to_vec()))
                .await
                .map_err(|error| match error {
                    arrow_flight::error::FlightError::Tonic(status) => *status,
                    other => peer_unavailable(process, peer, &other),
                })?;
            let results: Vec<_> = results
                .try_collect()
                .await
                .map_err(|error| peer_unavailable(process, peer, &error))?;
            bodies.extend(results.into_iter().map(|bytes| bytes.to_vec()));
        }
        Ok(bodies)
    }

    /// The other processes' shards of a snapshot at `as_of`: their record
    /// batches, and the offsets their shards of `source_progress` report.
    pub async fn shards(
        &self,
        ticket: &[u8],
        filter: &RowFilter,
        as_of: Time,
    ) -> Result<Shards, Status> {
        let mut shards = Shards {
            batches: Vec::new(),
            offsets: BTreeMap::new(),
        };
        for (process, mut stream) in self.open(ticket, filter, Some(as_of)).await? {
            let peer = &self.peers[process];
            while let Some(batch) = stream.next().await {
                shards
                    .batches
                    .push(batch.map_err(|error| peer_unavailable(process, peer, &error))?);
            }
            if let Some(text) = stream
                .schema()
                .and_then(|schema| schema.metadata().get(OFFSETS_KEY))
            {
                let offsets: BTreeMap<String, i64> =
                    serde_json::from_str(text).map_err(|error| {
                        peer_unavailable(process, peer, &format!("unreadable offsets ({error})"))
                    })?;
                shards.offsets.extend(offsets);
            }
        }
        Ok(shards)
    }
}

/// The ticket to forward to the other processes of a cluster for a read:
/// the caller's ticket, with the tenant set its filter was limited to, as a
/// shard read.
fn forwarded_ticket(ticket: &[u8], filter: &RowFilter) -> Result<serde_json::Value, Status> {
    let mut request: serde_json::Value = if ticket.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice(ticket)
            .map_err(|error| Status::invalid_argument(error.to_string()))?
    } else {
        json!({ "collection": String::from_utf8_lossy(ticket).trim() })
    };
    if let Some(tenants) = filter.tenants() {
        request["tenants"] = json!(tenants);
    }
    request["shard"] = json!(true);
    Ok(request)
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
    async fn connect(&self, process: usize, peer: &str) -> Result<FlightClient, Status> {
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
