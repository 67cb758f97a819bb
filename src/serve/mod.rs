//! Serving a running pipeline: the Arrow Flight service of SPEC §5
//! ([`flight`]) with its tickets ([`tickets`]) and cluster peers, and the
//! Prometheus metrics, `/healthz` and `/readyz` endpoint ([`metrics`]).
//!
//! This layer reads through [`crate::pipeline::PipelineHandle`] and encodes
//! with [`crate::output`]; it knows nothing about Kafka or the matching rules,
//! and nothing below it knows about serving.

pub mod flight;
pub mod metrics;
pub mod tickets;
