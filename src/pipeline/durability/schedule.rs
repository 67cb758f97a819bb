//! A worker's side of checkpointing: which times it checkpoints, what it
//! notes when its input passes one, and handing its shard to the writer
//! once the time is complete (see the parent module for the rules).

use std::collections::VecDeque;
use std::sync::mpsc::Sender;

use trimatch_connectors::ResumePoint;
use trimatch_dataflows::model::Text;
use trimatch_dataflows::{Matcher, ReadError, ShardCheckpoint, Time};

/// What a worker sends the writer for one checkpoint time.
pub(in crate::pipeline) struct ShardMessage {
    pub as_of: Time,
    /// The worker's global index.
    pub worker: usize,
    /// Its shard, or `None` if it could not take this checkpoint (its input
    /// had already passed a shutdown checkpoint's time).
    pub shard: Option<ShardCheckpoint>,
    /// Where its partitions stood at `as_of`.
    pub positions: Vec<(Text, i32, ResumePoint)>,
    /// Its latest batch time at or before `as_of`.
    pub unchanged_since: Time,
    /// The Kafka cluster its source is connected to, if known.
    pub kafka_cluster_id: Option<String>,
}

/// A checkpoint time this worker's input has passed, not yet taken.
struct Passed {
    as_of: Time,
    positions: Vec<(Text, i32, ResumePoint)>,
    /// Dead letters queued to the dead-letter topic when the input passed it.
    dead_letters_queued: u64,
    /// The worker's latest batch time then.
    unchanged_since: Time,
    kafka_cluster_id: Option<String>,
}

/// One worker's checkpoint schedule.
pub(in crate::pipeline) struct CheckpointSchedule {
    interval_ms: u64,
    worker: usize,
    passed: VecDeque<Passed>,
    writer: Sender<ShardMessage>,
}

impl CheckpointSchedule {
    pub(in crate::pipeline) fn new(
        interval_ms: u64,
        worker: usize,
        writer: Sender<ShardMessage>,
    ) -> Self {
        CheckpointSchedule {
            interval_ms: interval_ms.max(1),
            worker,
            passed: VecDeque::new(),
            writer,
        }
    }

    /// The checkpoint time passed when the input moves from `from` to `to`
    /// (closing the times `from..to`): the latest `k·interval − 1` among them.
    /// Every worker computes the same times, whatever its batches.
    pub(in crate::pipeline) fn boundary_in(&self, from: Time, to: Time) -> Option<Time> {
        let multiple = to - to % self.interval_ms;
        let time = multiple.checked_sub(1)?;
        (from <= time && time < to).then_some(time)
    }

    /// The input is about to pass `as_of`, with the partitions at `positions`:
    /// holds the engine's state at `as_of` until it is taken.
    pub(in crate::pipeline) fn pass(
        &mut self,
        matcher: &mut Matcher,
        as_of: Time,
        positions: Vec<(Text, i32, ResumePoint)>,
        dead_letters_queued: u64,
        unchanged_since: Time,
        kafka_cluster_id: Option<String>,
    ) {
        if self.passed.is_empty() {
            matcher.hold_checkpoint(as_of);
        }
        self.passed.push_back(Passed {
            as_of,
            positions,
            dead_letters_queued,
            unchanged_since,
            kafka_cluster_id,
        });
    }

    /// Tells the writer this worker cannot take the checkpoint at `as_of`.
    pub(in crate::pipeline) fn skip(&mut self, as_of: Time) {
        let _ = self.writer.send(ShardMessage {
            as_of,
            worker: self.worker,
            shard: None,
            positions: Vec::new(),
            unchanged_since: as_of,
            kafka_cluster_id: None,
        });
    }

    /// Whether a passed checkpoint is still to be taken.
    pub(in crate::pipeline) fn is_pending(&self) -> bool {
        !self.passed.is_empty()
    }

    /// Takes every passed checkpoint whose time is complete, and whose dead
    /// letters are all settled (`dead_letters_settled` reported delivered or
    /// failed: none it covers can be lost in a crash after it), and sends the
    /// shard to the writer; holds the next one.
    pub(in crate::pipeline) fn take_complete(
        &mut self,
        matcher: &mut Matcher,
        dead_letters_settled: u64,
    ) -> Result<(), ReadError> {
        while let Some(passed) = self.passed.front() {
            if !matcher.is_complete(passed.as_of)
                || dead_letters_settled < passed.dead_letters_queued
            {
                break;
            }
            let passed = self.passed.pop_front().expect("a front");
            let shard = matcher.checkpoint(passed.as_of)?;
            let _ = self.writer.send(ShardMessage {
                as_of: passed.as_of,
                worker: self.worker,
                shard: Some(shard),
                positions: passed.positions,
                unchanged_since: passed.unchanged_since,
                kafka_cluster_id: passed.kafka_cluster_id,
            });
            if let Some(next) = self.passed.front() {
                matcher.hold_checkpoint(next.as_of);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_finds_the_same_boundaries() {
        let (writer, _) = std::sync::mpsc::channel();
        let schedule = CheckpointSchedule::new(1000, 0, writer);
        // Moving to 2000 closes 1999, whichever time the input came from.
        assert_eq!(schedule.boundary_in(1500, 2000), Some(1999));
        assert_eq!(schedule.boundary_in(1999, 2000), Some(1999));
        assert_eq!(schedule.boundary_in(1500, 1999), None);
        assert_eq!(schedule.boundary_in(2000, 2999), None);
        assert_eq!(schedule.boundary_in(2000, 3000), Some(2999));
        // Passing several boundaries at once: the latest.
        assert_eq!(schedule.boundary_in(500, 3500), Some(2999));
        assert_eq!(schedule.boundary_in(0, 1), None);
    }
}
