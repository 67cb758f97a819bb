//! What a source does when the caller seals what it handed over into a
//! logical time: the counters become visible, the dead letters go to the
//! dead-letter topic (once, also across restarts), and the partitions'
//! positions are what a checkpoint of that time records.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use trimatch_dataflows::model::Text;

use super::KafkaSource;
use crate::config::{ResumePoint, StartPosition};
use crate::dead_letter::Rejected;
use crate::ownership::owner;

/// A rejected message waiting to be produced to the dead-letter topic.
pub(super) struct UnsentDeadLetter {
    pub(super) topic: Text,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) reason: String,
}

impl KafkaSource {
    /// Publishes the counters (consumed, applied, dead-lettered, next offset,
    /// high watermark) of everything handed over since the last call.
    ///
    /// The caller calls it when it seals what it polled into a logical time,
    /// so a message counted as consumed is always part of a sealed time:
    /// whoever sees the count and then waits for the next complete time sees
    /// the message reflected — even when the caller holds polled messages back
    /// to gather a larger batch.
    ///
    /// The dead letters of what was handed over are produced now too: a
    /// rejected message reaches the dead-letter topic only once it is part of
    /// a sealed time, so a restart from a checkpoint never produces one whose
    /// offset the checkpoint covers, and the ones after it that the previous
    /// run produced are skipped (`already_dead_lettered`).
    pub fn commit_counters(&mut self) {
        self.produce_dead_letters();
        for state in self.partitions.values_mut().flat_map(BTreeMap::values_mut) {
            let counts = std::mem::take(&mut state.uncommitted);
            let counters = &state.counters;
            counters
                .consumed
                .fetch_add(counts.consumed, Ordering::Relaxed);
            counters
                .applied
                .fetch_add(counts.applied, Ordering::Relaxed);
            counters
                .dead_lettered
                .fetch_add(counts.dead_lettered, Ordering::Relaxed);
            counters
                .skipped
                .fetch_add(counts.skipped, Ordering::Relaxed);
            counters
                .next_offset
                .store(state.next_offset, Ordering::Relaxed);
            counters.high_watermark.store(
                state.high_watermark.max(state.next_offset),
                Ordering::Relaxed,
            );
        }
    }

    fn produce_dead_letters(&mut self) {
        let unsent = std::mem::take(&mut self.unsent_dead_letters);
        let Some(producer) = &self.dead_letters else {
            return;
        };
        for letter in unsent {
            if !self.already_dead_lettered.is_empty()
                && self.already_dead_lettered.remove(&(
                    letter.topic.to_string(),
                    letter.partition,
                    letter.offset,
                ))
            {
                continue;
            }
            producer.send(&Rejected {
                topic: &letter.topic,
                partition: letter.partition,
                offset: letter.offset,
                key: letter.key.as_deref(),
                value: letter.value.as_deref(),
                reason: &letter.reason,
            });
        }
    }

    /// Where every owned partition stands as of the last
    /// [`commit_counters`](Self::commit_counters): the first offset not
    /// sealed, and the counters (what a checkpoint of the last sealed time
    /// records). After a restore, partitions not assigned yet (the brokers
    /// not reached yet) stand where the restore put them.
    pub fn committed_positions(&self) -> Vec<(Text, i32, ResumePoint)> {
        let mut positions: Vec<(Text, i32, ResumePoint)> = Vec::new();
        if let StartPosition::Resume(points) = &self.config.start {
            positions.extend(
                points
                    .iter()
                    .filter(|((topic, partition), _)| {
                        owner(topic, *partition, self.peers) == self.worker
                            && !self
                                .partitions
                                .get(topic)
                                .is_some_and(|owned| owned.contains_key(partition))
                    })
                    .map(|((topic, partition), point)| {
                        (Text::from(topic.as_str()), *partition, *point)
                    }),
            );
        }
        positions.extend(self.owned().map(|state| {
            let counters = &state.counters;
            (
                state.topic.clone(),
                state.partition,
                ResumePoint {
                    next_offset: counters.next_offset.load(Ordering::Relaxed),
                    consumed: counters.consumed.load(Ordering::Relaxed),
                    applied: counters.applied.load(Ordering::Relaxed),
                    dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
                    skipped: counters.skipped.load(Ordering::Relaxed),
                },
            )
        }));
        positions
    }
}
