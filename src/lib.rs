//! The `trimatch` service: the job that runs Kafka sources into the matching
//! engine ([`pipeline`]), the output collections as Arrow ([`columns`]), and the
//! bounded run's Parquet output ([`parquet_output`]).

pub mod client;
pub mod columns;
pub mod demo;
pub mod flight;
pub mod parquet_output;
pub mod pipeline;
pub mod query;
pub mod subscriptions;
