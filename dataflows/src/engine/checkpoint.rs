//! A worker's shard of the engine's state at one complete time, and the
//! restore that rebuilds exactly that state in a new computation (SPEC §11).
//!
//! What a restart needs is the engine's *inputs*, not its outputs: the
//! present documents (the latest version of each identity, what a compacted
//! topic would hold) and the sources' bookkeeping rows (`source_progress`, the
//! `dead_letters` ring with its position). Everything else is derived from
//! them by the dataflow, so a computation fed a checkpoint's shards computes
//! the same outputs as the one that wrote it.
//!
//! Shards are not per partition: the upsert arrangement spreads documents
//! over workers by key, so a checkpoint is every worker's shard at one time.
//! A restore may feed any shard to any worker (the dataflow exchanges by key
//! again); only the dead-letter ring's position is per worker, so a shard is
//! restored on the worker with its index.

use super::read::visit_present;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use timely::progress::frontier::AntichainRef;

use super::{Matcher, ReadError, SourceRow};
use crate::model::{Document, Fingerprint, Time};

/// One worker's shard of the engine's inputs as of `as_of`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardCheckpoint {
    /// The complete time the shard reflects.
    pub as_of: Time,
    /// The worker that wrote it.
    pub worker: usize,
    /// The present documents of this worker's shard, in key order.
    pub documents: Vec<(Fingerprint, Document)>,
    /// The bookkeeping rows of this worker's shard, under their slots.
    pub bookkeeping: Vec<(Fingerprint, SourceRow)>,
    /// How many dead letters the worker had recorded: where its ring goes on.
    pub dead_letters_recorded: u64,
}

impl Matcher {
    /// Keeps the state as of `time` readable until [`checkpoint`](Self::checkpoint)
    /// takes it (compaction stops short of it meanwhile).
    pub fn hold_checkpoint(&mut self, time: Time) {
        self.checkpoint_hold = Some(time);
    }

    /// This worker's shard of the engine's inputs as of `as_of`, which must
    /// be complete and not older than what the checkpoint state keeps (the
    /// newest complete time when compaction last ran, or a held time).
    /// Releases a hold at or before `as_of`.
    pub fn checkpoint(&mut self, as_of: Time) -> Result<ShardCheckpoint, ReadError> {
        if !self.is_complete(as_of) {
            return Err(ReadError::NotComplete {
                as_of,
                newest: self.newest_complete().unwrap_or(0),
            });
        }
        let documents = present_at(&mut self.documents, as_of)?;
        let bookkeeping = present_at(&mut self.bookkeeping, as_of)?;
        if self.checkpoint_hold.is_some_and(|hold| hold <= as_of) {
            self.checkpoint_hold = None;
        }
        Ok(ShardCheckpoint {
            as_of,
            worker: self.worker_index,
            documents,
            bookkeeping,
            dead_letters_recorded: self.dead_letters_recorded,
        })
    }

    /// Feeds a checkpoint's shard at the current time, before any upsert:
    /// once that time is complete, the outputs equal those of the computation
    /// that wrote the checkpoint, as of its time. Restore every worker's
    /// shard, each on the worker with its index.
    pub fn restore(&mut self, shard: ShardCheckpoint) {
        let now = self.time();
        for (key, document) in shard.documents {
            self.input.send((key, Some(document), now));
        }
        for (slot, row) in shard.bookkeeping {
            self.source_input.send((slot, Some(row), now));
        }
        if shard.worker == self.worker_index {
            self.dead_letters_recorded = shard.dead_letters_recorded;
        }
    }

    /// Lets the checkpoint state forget history before the newest complete
    /// time, or before a held checkpoint time: only the present is kept.
    pub(super) fn compact_checkpoint_state(&mut self) {
        let Some(newest) = self.newest_complete() else {
            return;
        };
        let since = self.checkpoint_hold.map_or(newest, |hold| hold.min(newest));
        for trace in [
            &mut self.documents as &mut dyn CompactTo,
            &mut self.bookkeeping as &mut dyn CompactTo,
        ] {
            trace.compact_to(since);
        }
    }
}

/// A trace whose logical compaction can move forward to a time.
trait CompactTo {
    fn compact_to(&mut self, since: Time);
}

impl<V: Clone + Ord + 'static> CompactTo for TraceAgent<ValSpine<Fingerprint, V, Time, isize>> {
    fn compact_to(&mut self, since: Time) {
        let current = self.get_logical_compaction().first().copied().unwrap_or(0);
        // Compaction only ever moves forward.
        self.set_logical_compaction(AntichainRef::new(&[since.max(current)]));
    }
}

/// The values of `trace` present as of `as_of` (their updates at times up to
/// it sum to one), in key order.
fn present_at<V: Clone + Ord + 'static>(
    trace: &mut TraceAgent<ValSpine<Fingerprint, V, Time, isize>>,
    as_of: Time,
) -> Result<Vec<(Fingerprint, V)>, ReadError> {
    let mut present = Vec::new();
    visit_present(trace, as_of, None, |key, value| {
        present.push((*key, value.clone()))
    })?;
    Ok(present)
}
