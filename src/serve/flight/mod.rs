//! The Arrow Flight adapter: the service of SPEC §5 ([`service`]) over the
//! access gate and the cluster reader, its message encoding ([`encode`]),
//! the `status` and `preview_policy` ([`preview`]) actions, and the server that runs it (with the Flight SQL
//! adapter on the same port), in clear or over TLS.
//!
//! May use: `serve::gate`, `serve::reader`, `serve::tickets`,
//! `serve::flight_sql` (the calls it hands over), `serve::tls` and
//! `output::columns` (schemas). Nothing here reads the pipeline but through
//! the reader.

pub mod encode;
pub mod preview;
pub mod service;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;

use crate::pipeline::PipelineHandle;
use crate::serve::tls::{self, ServerTls};
pub use service::TrimatchFlight;

/// How often an idle connection is pinged, and how long a ping may go
/// unanswered before the connection is closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent HTTP/2 streams (calls) on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Serves Flight on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    pipeline: PipelineHandle,
    retention: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = TrimatchFlight::new(pipeline, retention);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_service(listener, None, service, shutdown).await
}

/// Serves a configured Flight service (with authentication, cluster peers)
/// on `listener`, over TLS if `tls` is given.
pub async fn serve_service(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerTls>>,
    service: TrimatchFlight,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = FlightServiceServer::new(service)
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024);
    let router = tonic::transport::Server::builder()
        // A peer that vanished (a dropped connection, a sleeping laptop) is
        // found by a ping it does not answer, and its streams end.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
        // Per connection; per caller, the gate bounds open streams.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(service);
    match tls {
        Some(tls) => {
            let incoming = tls::incoming(tls::accept(listener, tls));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
    }
    Ok(())
}
