//! The reads a SQL statement makes of the pipeline: one collection's rows at
//! the statement's time as record batches of the columns it needs (from
//! this process's workers and from every other process of a cluster), and
//! the input offsets that time reflects.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use serde_json::{json, Map, Value};
use tonic::Status;
use trimatch_dataflows::{OutputCollection, Time};

use super::super::service::{TrimatchFlight, BATCH_ROWS};
use crate::output::columns::{projected_record_batch, schema};
use crate::output::filter::RowFilter;

impl TrimatchFlight {
    /// The rows of `collection` passing `filter` at `as_of`, as batches of
    /// the `projection` columns; at most `limit` rows if given. `pushed` is
    /// the filter's column conditions as a ticket's `filter` (what the other
    /// processes of a cluster are asked for; `filter`'s tenant set goes
    /// with it).
    pub(super) async fn batches_at(
        &self,
        collection: OutputCollection,
        filter: Arc<RowFilter>,
        pushed: &Map<String, Value>,
        as_of: Time,
        projection: &[usize],
        limit: Option<usize>,
    ) -> Result<Vec<RecordBatch>, Status> {
        let local_filter = filter.clone();
        let rows = self
            .blocking(move |pipeline| {
                pipeline
                    .read(collection, Some(as_of), &local_filter, limit)
                    .map(|snapshot| snapshot.rows)
            })
            .await?;
        let full = schema(collection);
        let mut batches = rows
            .chunks(BATCH_ROWS)
            .map(|chunk| projected_record_batch(&full, projection, chunk.iter()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Status::internal(error.to_string()))?;
        if self.peers.len() > 1 {
            let ticket = json!({"collection": collection.name(), "filter": pushed}).to_string();
            let (remote, _) = self.peer_shards(ticket.as_bytes(), &filter, as_of).await?;
            for batch in remote {
                batches.push(
                    batch
                        .project(projection)
                        .map_err(|error| Status::internal(error.to_string()))?,
                );
            }
        }
        Ok(batches)
    }

    /// The input offsets the state at `as_of` reflects (`"topic/partition"`
    /// → the first offset not included), over the whole cluster.
    pub(super) async fn offsets_at(&self, as_of: Time) -> Result<BTreeMap<String, i64>, Status> {
        let (_, mut offsets) = self
            .blocking(move |pipeline| {
                pipeline.read_with_offsets(
                    OutputCollection::SourceProgress,
                    Some(as_of),
                    &Arc::default(),
                    Some(0),
                )
            })
            .await?;
        if self.peers.len() > 1 {
            let ticket = json!({"collection": OutputCollection::SourceProgress.name()}).to_string();
            let (_, remote) = self
                .peer_shards(ticket.as_bytes(), &RowFilter::default(), as_of)
                .await?;
            offsets.extend(remote);
        }
        Ok(offsets)
    }
}
