//! The `trimatch` service, in four layers; imports run one way,
//! `cli → serve → pipeline`, with `output` used by both `serve` and
//! `pipeline` (see `docs/architecture.md`):
//!
//! * [`pipeline`] — timely workers, each running a Kafka source into its
//!   matching engine; logical time, reads, the subscription hub, and the
//!   counters the workers write;
//! * [`output`] — the collections as Arrow rows, equality filters, Parquet;
//! * [`serve`] — the Arrow Flight service, its tickets and cluster peers, and
//!   the Prometheus/health endpoint;
//! * [`cli`] — the subcommands, the config file, printing, and the demo.

pub mod cli;
pub mod output;
pub mod pipeline;
pub mod serve;
