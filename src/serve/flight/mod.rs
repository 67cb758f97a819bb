//! Arrow Flight: the service of SPEC §5 ([`service`]), its subscriptions,
//! its message encoding ([`encode`]), the cluster peers it asks for their
//! shards, and the server that runs it.

pub mod encode;
mod peers;
pub mod service;
mod subscribe;

use std::net::SocketAddr;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;

use crate::pipeline::PipelineHandle;
pub use service::TrimatchFlight;

/// Serves Flight on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    pipeline: PipelineHandle,
    retention: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_service(addr, TrimatchFlight::new(pipeline, retention), shutdown).await
}

/// Serves a configured Flight service (e.g. with cluster peers) on `addr`.
pub async fn serve_service(
    addr: SocketAddr,
    service: TrimatchFlight,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = FlightServiceServer::new(service)
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_shutdown(addr, shutdown)
        .await
}
