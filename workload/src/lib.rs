//! Synthetic accounts-payable workloads, for the demo, the benchmarks and the
//! tests:
//!
//! * [`generate`] — a deterministic stream of AP documents in the upsert
//!   envelope: clean matches, variances, duplicates, credit memos, late POs,
//!   updates, deletes and bad messages;
//! * [`produce`] — producing that stream to Kafka, paced or flat out;
//! * [`present`] — the documents a stream of messages leaves present (the
//!   last valid version per identity), the one model of that every test and
//!   benchmark compares against.
//!
//! This crate uses the engine's documents and the sources' envelope and topic
//! settings; nothing in the product depends on it except the demo and
//! `trimatch generate`.

pub mod generate;
pub mod present;
pub mod produce;

pub use generate::{GeneratedMessage, Workload, WorkloadConfig, DEFAULT_PAYMENT_SHARE};
pub use present::{document_lines, Present};
pub use produce::{ProduceLimits, ProduceReport, WorkloadProducer};
