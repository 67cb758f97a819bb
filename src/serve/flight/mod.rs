//! Arrow Flight: the service of SPEC §5 ([`service`]), what each principal
//! may read through it (`authorize`), its subscriptions, the `status` action, its message encoding
//! ([`encode`]), the cluster peers it asks for their shards, and the server
//! that runs it, in clear or over TLS.

mod authorize;
pub mod encode;
mod peers;
pub mod service;
pub mod sql;
mod status;
mod subscribe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;

use crate::pipeline::PipelineHandle;
use crate::serve::tls::{self, ServerTls};
pub use peers::{PeerLink, PeerTls};
pub use service::TrimatchFlight;

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
    let router = tonic::transport::Server::builder().add_service(service);
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
