//! Arrow Flight: the service of SPEC §5 ([`service`]), its message encoding
//! ([`encode`]), and the server that runs it.

pub mod encode;
pub mod service;

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
    let service = FlightServiceServer::new(TrimatchFlight::new(pipeline, retention))
        .max_encoding_message_size(64 * 1024 * 1024);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_shutdown(addr, shutdown)
        .await
}
