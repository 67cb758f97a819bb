//! trimatch's matching engine.
//!
//! * [`model`] — the input documents of SPEC §1.2, the exception types of §2 and the keys the graph uses;
//! * [`decode`] — JSON → validated documents, with reasons for every rejection (SPEC §1.3);
//! * [`rules`] — the matching rules of SPEC §2, the decisions of §6 and the suggestions of §7 as pure functions;
//! * [`graph`] — the incremental three-way-match dataflow;
//! * [`operators`] — the generic operators the graph is built from (left join, running sums, counted sums, …);
//! * [`rows`] — the output rows of SPEC §3;
//! * [`engine`] — one timely worker's handle: upserts in, snapshots and changes out.
//!
//! This crate knows nothing about Kafka or Arrow Flight: sources feed a
//! [`engine::Matcher`], serving reads from it.

pub mod decimal;
pub mod decode;
pub mod engine;
pub mod graph;
pub mod model;
pub mod operators;
pub mod preview;
pub mod rows;
pub mod rules;

pub use engine::{
    Change, ChangeSink, MatchConfig, Matcher, OutputCollection, ReadError, Row, ShardCheckpoint,
    SourceRow,
};
pub use model::Time;
