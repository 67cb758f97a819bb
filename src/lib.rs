//! The `trimatch` service: the job that runs Kafka sources into the matching
//! engine ([`pipeline`]), the output collections as Arrow ([`columns`]), and the
//! bounded run's Parquet output ([`parquet_output`]).

pub mod bench;
pub mod client;
pub mod columns;
pub mod demo;
pub mod flight;
pub mod metrics;
pub mod parquet_output;
pub mod pipeline;
pub mod query;
pub mod subscriptions;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what container runtimes send).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
