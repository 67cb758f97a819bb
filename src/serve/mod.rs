//! Serving a running pipeline: the Arrow Flight service of SPEC §5
//! ([`flight`]) with its tickets ([`tickets`]) and cluster peers, and the
//! Prometheus metrics ([`metrics`]) with `/healthz` and `/readyz` ([`http`]);
//! who may call them ([`auth`], SPEC §9) and the TLS both speak ([`tls`]).
//!
//! This layer reads through [`crate::pipeline::PipelineHandle`] and encodes
//! with [`crate::output`]; it knows nothing about Kafka or the matching rules,
//! and nothing below it knows about serving.

pub mod auth;
pub mod flight;
pub mod http;
pub mod metrics;
pub mod tickets;
pub mod tls;
