//! The output collections as readers get them: Arrow schemas and record
//! batches of the engine's rows ([`columns`]), the equality filters of a read
//! ([`filter`]), the Parquet files of a bounded run ([`parquet`]), and a
//! policy preview's answer ([`preview`]).
//!
//! This layer may use the engine's row types and Arrow, nothing else of
//! trimatch: both `pipeline` (filters in reads and subscriptions) and
//! `serve` (Flight) build on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use trimatch_dataflows::{OutputCollection, Row, Time};

pub mod columns;
pub mod filter;
pub mod parquet;
pub mod preview;

/// Schema metadata keys of a snapshot (SPEC §5), on Flight replies and in
/// Parquet files alike: its logical time, and the offsets it reflects.
pub const AS_OF_KEY: &str = "trimatch.as_of";
pub const OFFSETS_KEY: &str = "trimatch.offsets";

/// Rows per record batch of a read's answer (Flight snapshots and feeds,
/// a SQL statement's scans).
pub const BATCH_ROWS: usize = 8 * 1024;

/// `schema` with a snapshot's time and the offsets it reflects as metadata.
pub fn with_snapshot_metadata(
    schema: SchemaRef,
    as_of: Time,
    offsets: &BTreeMap<String, i64>,
) -> SchemaRef {
    let mut metadata = schema.metadata().clone();
    metadata.insert(AS_OF_KEY.to_string(), as_of.to_string());
    metadata.insert(
        OFFSETS_KEY.to_string(),
        serde_json::to_string(offsets).expect("a map of numbers serializes"),
    );
    Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata))
}

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
