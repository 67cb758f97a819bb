//! trimatch's sources: Kafka consumers that feed the matching engine.
//!
//! * [`admin`] — creating missing input topics (compacted);
//! * [`retention`] — whether the input topics still hold every document's
//!   latest version (compaction, deleted history);
//! * [`config`] — brokers, topics, envelopes, start positions, bounded mode;
//! * [`envelope`] — message → document change, per envelope (SPEC §1.1): the
//!   upsert envelope's key and tombstone rules, and Debezium events;
//! * [`source`] — one worker's consumer: batches of changes, dead letters and
//!   per-partition progress, with exact offsets (SPEC §4);
//! * `discovery` — metadata, new partitions and start offsets, off the worker thread;
//! * [`ownership`] — which worker reads which partition;
//! * [`SourceError`] — why a source cannot run;
//! * [`dead_letter`] — the optional dead-letter topic;
//! * `poll` — the consumer poll that keeps each error's partition;
//! * [`tenants`] — bounded runs in passes over the tenants: the filter, the
//!   census that weighs tenants, and the balanced split;
//! * [`metrics`] — per-partition counters (consumed = applied +
//!   dead-lettered + skipped), states and consumer errors.
//!
//! Sources know nothing about the matching rules: they hand the engine
//! decoded documents keyed by identity, and bookkeeping rows.

pub mod admin;
pub mod config;
pub mod dead_letter;
mod discovery;
pub mod envelope;
mod error;
pub mod metrics;
pub mod ownership;
mod poll;
pub mod retention;
pub mod source;
pub mod tenants;

pub use config::{
    Envelope, ResumePoint, SourceConfig, StartPosition, TopicConfig, DEFAULT_MAX_MESSAGE_BYTES,
    FETCH_MAX_BYTES,
};
pub use error::SourceError;
pub use metrics::SourceMetrics;
pub use source::{KafkaSource, SourceBatch, SourceChange};
pub use tenants::{TenantCensus, TenantFilter};
