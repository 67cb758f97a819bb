//! The output collections as readers get them: Arrow schemas and record
//! batches of the engine's rows ([`columns`]), the equality filters of a read
//! ([`filter`]), and the Parquet files of a bounded run ([`parquet`]).
//!
//! This layer may use the engine's row types and Arrow, nothing else of
//! trimatch: both `pipeline` (filters in reads and subscriptions) and
//! `serve` (Flight) build on it.

use std::collections::BTreeMap;

use trimatch_dataflows::{OutputCollection, Row, Time};

pub mod columns;
pub mod filter;
pub mod parquet;

/// Schema metadata keys of a snapshot (SPEC §5), on Flight replies and in
/// Parquet files alike: its logical time, and the offsets it reflects.
pub const AS_OF_KEY: &str = "trimatch.as_of";
pub const OFFSETS_KEY: &str = "trimatch.offsets";

/// Every collection at one time: the final state of a bounded run.
#[derive(Clone, Debug)]
pub struct FinalState {
    pub as_of: Time,
    pub collections: BTreeMap<OutputCollection, Vec<Row>>,
}

impl FinalState {
    /// How far the run read each partition: its `source_progress` rows'
    /// `next_offset`, by (topic, partition).
    pub fn offsets(&self) -> BTreeMap<(String, i32), i64> {
        self.collections
            .get(&OutputCollection::SourceProgress)
            .into_iter()
            .flatten()
            .filter_map(|row| match row {
                Row::SourceProgress(progress) => Some((
                    (progress.topic.to_string(), progress.partition),
                    progress.next_offset,
                )),
                _ => None,
            })
            .collect()
    }
}
