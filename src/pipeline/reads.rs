//! The read side of a running job: a read is sent to every worker, each
//! answers with its shard once the read's time is complete (between two
//! dataflow steps, see `worker`), and the handle puts the shards together in
//! worker order.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use trimatch_dataflows::model::{ExceptionResolution, Fingerprint, MatchPolicy, Text};
use trimatch_dataflows::preview::{InvoicePreview, PreviewPlan};
use trimatch_dataflows::{Change, OutputCollection, ReadError, Row, Time};

use super::{PipelineHandle, ReadFailure, Snapshot};
use crate::output::filter::RowFilter;

/// What a worker is asked to read from its shard.
pub(super) enum ReadKind {
    Rows {
        filter: Arc<RowFilter>,
        limit: usize,
    },
    Count {
        filter: Arc<RowFilter>,
    },
    /// Changes at times from `from` through the request's time.
    Changes {
        from: Time,
        filter: Arc<RowFilter>,
    },
    /// The three reads of a policy preview (`super::preview`).
    Preview(PreviewRead),
}

/// A policy preview's read of one shard (SPEC §12.4).
pub(super) enum PreviewRead {
    TenantPolicies(Text),
    Invoices(Arc<PreviewPlan>),
    Decisions(Arc<Vec<Fingerprint>>),
}

/// A worker's answer to a [`ReadRequest`]: its shard of the rows, count or changes.
pub(super) enum ReadReply {
    Rows(Vec<Row>),
    Count(u64),
    Changes(Vec<Change>),
    Policies(Vec<Arc<MatchPolicy>>),
    Previews(Vec<InvoicePreview>),
    Decisions(Vec<(Fingerprint, Arc<ExceptionResolution>)>),
}

/// A read a worker answers with its shard.
pub(super) struct ReadRequest {
    pub(super) collection: OutputCollection,
    pub(super) as_of: Time,
    /// The keys (tenants or topics) to seek to, in order; `None`: every row.
    pub(super) keys: Option<Vec<String>>,
    pub(super) kind: ReadKind,
    /// Gets the worker's index with its answer, so shards are put together in
    /// worker order and the same read gives the same rows in the same order.
    pub(super) reply: Sender<(usize, Result<ReadReply, ReadError>)>,
}

impl PipelineHandle {
    /// Resolves a requested `as_of` (default: the newest complete time).
    pub fn resolve_as_of(&self, as_of: Option<Time>) -> Result<Time, ReadFailure> {
        if let Some(error) = self.error() {
            return Err(ReadFailure::Stopped(error));
        }
        let newest = self.newest_complete().ok_or(ReadFailure::Starting)?;
        let as_of = as_of.unwrap_or(newest);
        if as_of > newest {
            return Err(ReadError::NotComplete { as_of, newest }.into());
        }
        self.check_restored_time(as_of)
    }

    /// The rows of `collection` that pass `filter` as of `as_of` (default: the
    /// newest complete time), over all workers; at most `limit` of them.
    pub fn read(
        &self,
        collection: OutputCollection,
        as_of: Option<Time>,
        filter: &Arc<RowFilter>,
        limit: Option<usize>,
    ) -> Result<Snapshot, ReadFailure> {
        let as_of = self.resolve_as_of(as_of)?;
        let rows = self.send_rows(collection, as_of, filter, limit)?;
        Ok(Snapshot {
            as_of,
            rows: self.collect_rows(rows, limit)?,
        })
    }

    /// [`read`](Self::read) with the offsets the snapshot reflects
    /// (`"topic/partition"` → the first offset not included), asked of the
    /// workers in one round: a worker answers both between the same two
    /// dataflow steps, where asking one after the other made a snapshot wait
    /// for a second step.
    pub fn read_with_offsets(
        &self,
        collection: OutputCollection,
        as_of: Option<Time>,
        filter: &Arc<RowFilter>,
        limit: Option<usize>,
    ) -> Result<(Snapshot, BTreeMap<String, i64>), ReadFailure> {
        let as_of = self.resolve_as_of(as_of)?;
        let rows = self.send_rows(collection, as_of, filter, limit)?;
        let progress = self.send_rows(
            OutputCollection::SourceProgress,
            as_of,
            &Arc::default(),
            None,
        )?;
        let snapshot = Snapshot {
            as_of,
            rows: self.collect_rows(rows, limit)?,
        };
        let offsets = offsets_of(self.collect_rows(progress, None)?);
        Ok((snapshot, offsets))
    }

    /// Sends a rows read to every worker; [`collect_rows`](Self::collect_rows)
    /// gathers the answer.
    fn send_rows(
        &self,
        collection: OutputCollection,
        as_of: Time,
        filter: &Arc<RowFilter>,
        limit: Option<usize>,
    ) -> Result<PendingReplies, ReadFailure> {
        let limit = limit.unwrap_or(usize::MAX);
        self.send(collection, as_of, filter.keys(), || ReadKind::Rows {
            filter: filter.clone(),
            limit,
        })
    }

    /// The rows of every worker's answer, in worker order, at most `limit`.
    fn collect_rows(
        &self,
        replies: PendingReplies,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, ReadFailure> {
        let mut rows = Vec::new();
        for reply in self.collect(replies)? {
            if let ReadReply::Rows(shard) = reply {
                rows.extend(shard);
            }
        }
        rows.truncate(limit.unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// How many rows `collection` has as of `as_of`.
    pub fn count(&self, collection: OutputCollection, as_of: Time) -> Result<u64, ReadFailure> {
        self.count_where(collection, as_of, &Arc::default())
    }

    /// How many rows of `collection` pass `filter` as of `as_of`.
    pub fn count_where(
        &self,
        collection: OutputCollection,
        as_of: Time,
        filter: &Arc<RowFilter>,
    ) -> Result<u64, ReadFailure> {
        let kind = || ReadKind::Count {
            filter: filter.clone(),
        };
        let replies = self.ask(collection, as_of, filter.keys(), kind)?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                ReadReply::Count(count) => count,
                _ => 0,
            })
            .sum())
    }

    /// The changes of `collection` that pass `filter` at times `from ..= through`,
    /// sorted by time, retractions before insertions within a time.
    pub fn changes(
        &self,
        collection: OutputCollection,
        from: Time,
        through: Time,
        filter: &Arc<RowFilter>,
    ) -> Result<Vec<Change>, ReadFailure> {
        // The reader has every change up to `from − 1`.
        let from = self.check_restored_time(from.saturating_sub(1))? + 1;
        let kind = || ReadKind::Changes {
            from,
            filter: filter.clone(),
        };
        let mut changes = Vec::new();
        for reply in self.ask(collection, through, filter.keys(), kind)? {
            if let ReadReply::Changes(shard) = reply {
                changes.extend(shard);
            }
        }
        changes.sort_by_key(|(_, time, diff)| (*time, *diff));
        Ok(changes)
    }

    /// Sends a read to every worker and collects their replies.
    pub(super) fn ask(
        &self,
        collection: OutputCollection,
        as_of: Time,
        keys: Option<Vec<String>>,
        kind: impl Fn() -> ReadKind,
    ) -> Result<Vec<ReadReply>, ReadFailure> {
        let replies = self.send(collection, as_of, keys, kind)?;
        self.collect(replies)
    }

    /// Sends a read to every worker, without waiting for the answers.
    fn send(
        &self,
        collection: OutputCollection,
        as_of: Time,
        keys: Option<Vec<String>>,
        kind: impl Fn() -> ReadKind,
    ) -> Result<PendingReplies, ReadFailure> {
        if let Some(error) = self.error() {
            return Err(ReadFailure::Stopped(error));
        }
        let (reply, replies) = channel();
        for sender in self.requests.iter() {
            sender
                .lock()
                .expect("request lock")
                .send(ReadRequest {
                    collection,
                    as_of,
                    keys: keys.clone(),
                    kind: kind(),
                    reply: reply.clone(),
                })
                .map_err(|_| ReadFailure::Stopped("the workers have exited".to_string()))?;
        }
        Ok(replies)
    }

    /// Waits for every worker's answer to a sent read; in worker order.
    fn collect(&self, replies: PendingReplies) -> Result<Vec<ReadReply>, ReadFailure> {
        let mut collected = Vec::with_capacity(self.requests.len());
        for _ in 0..self.requests.len() {
            let (worker, shard) = replies.recv().map_err(|_| {
                ReadFailure::Stopped(
                    self.error()
                        .unwrap_or_else(|| "a worker exited during a read".to_string()),
                )
            })?;
            collected.push((worker, shard?));
        }
        collected.sort_by_key(|(worker, _)| *worker);
        Ok(collected.into_iter().map(|(_, shard)| shard).collect())
    }
}

/// The answers to a read sent to every worker, each with the worker's index.
type PendingReplies = Receiver<(usize, Result<ReadReply, ReadError>)>;

/// `"topic/partition"` → next offset, from `source_progress` rows.
fn offsets_of(progress: Vec<Row>) -> BTreeMap<String, i64> {
    progress
        .into_iter()
        .filter_map(|row| match row {
            Row::SourceProgress(row) => {
                Some((format!("{}/{}", row.topic, row.partition), row.next_offset))
            }
            _ => None,
        })
        .collect()
}
