//! Where each owned partition reads from and how far: the assignment at the
//! start offsets (and a bounded run's end), pausing for backpressure and at
//! the end, and the periodic refresh that re-reads high watermarks, steps
//! over offsets that carry no message, finishes a bounded run's partitions,
//! notices a partition that has stopped making progress, and steps over a
//! record the broker will not serve.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use trimatch_dataflows::model::Text;
use trimatch_dataflows::rows::DeadLetterRow;

use super::partition::{PartitionState, STALL_CLEARS_AFTER};
use super::{now_ms, KafkaSource, SourceBatch, UnsentDeadLetter};
use crate::discovery::NewPartition;
use crate::error::SourceError;

impl KafkaSource {
    /// Pauses (or resumes) fetching on every owned partition that is not
    /// done: backpressure while too much is sealed and not yet complete.
    pub fn set_paused(&mut self, paused: bool) {
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        let mut list = TopicPartitionList::new();
        for state in self.owned().filter(|state| !state.done) {
            list.add_partition(&state.topic, state.partition);
        }
        if list.count() == 0 {
            return;
        }
        let result = if paused {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        if let Err(error) = result {
            tracing::warn!(%error, paused, "could not pause or resume the input partitions");
        }
    }

    /// Re-reads cached high watermarks; when `idle` (everything polled has been
    /// handed over) also moves positions past gaps such as transaction
    /// markers, and past a record the broker does not serve (dead-lettered
    /// into `batch`).
    pub(super) fn refresh_positions(&mut self, idle: bool, batch: &mut SourceBatch) {
        let positions = if idle {
            self.consumer.position().ok()
        } else {
            None
        };
        let brokers_answer = self
            .last_client_error
            .is_none_or(|at| at.elapsed() >= STALL_CLEARS_AFTER);
        let mut unfetchable = Vec::new();
        let mut finished = Vec::new();
        for state in self.partitions.values_mut().flat_map(BTreeMap::values_mut) {
            if let Some(high) = cached_high_watermark(&self.consumer, &state.topic, state.partition)
            {
                if high != state.high_watermark {
                    state.high_watermark = high;
                    state.dirty = true;
                }
                if high < state.next_offset && !state.done {
                    state.stall(format!(
                        "the high watermark {high} is below next_offset {}: the topic was deleted \
                         and re-created, or truncated; restart trimatch with --start (and \
                         --reset-state with a state directory) to read it again",
                        state.next_offset
                    ));
                }
            }
            let quiet = state
                .last_error
                .is_none_or(|at| at.elapsed() >= STALL_CLEARS_AFTER);
            let caught_up = state.high_watermark <= state.next_offset;
            if quiet && state.reset_pending.is_none() && state.high_watermark == state.next_offset {
                state.unstall();
            }
            let moved = state.next_offset != state.checked_offset;
            state.checked_offset = state.next_offset;
            if moved || caught_up || state.done || self.paused {
                state.last_progress = Instant::now();
            } else if state.last_progress.elapsed() >= self.config.stall_after {
                state.stall(format!(
                    "no message for {} s although {} are waiting: the brokers are failing to \
                     serve this partition (see trimatch_consumer_errors_total and the logs)",
                    self.config.stall_after.as_secs(),
                    state.high_watermark - state.next_offset
                ));
                let waited = state.last_progress.elapsed();
                if idle
                    && quiet
                    && brokers_answer
                    && self
                        .config
                        .skip_unfetchable_after
                        .is_some_and(|after| waited >= after)
                {
                    unfetchable.push(skip_unfetchable(state, waited, batch));
                }
            }
            let position = positions.as_ref().and_then(|list| {
                list.find_partition(&state.topic, state.partition)
                    .and_then(|element| match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    })
            });
            if let Some(position) = position {
                let limit = if self.config.until_end {
                    state.end
                } else {
                    i64::MAX
                };
                let position = position.min(limit);
                if !state.done && position > state.next_offset {
                    state.next_offset = position;
                    state.dirty = true;
                }
            }
            if self.config.until_end && !state.done && state.next_offset >= state.end {
                state.done = true;
                finished.push((state.topic.clone(), state.partition));
            }
        }
        for letter in &unfetchable {
            let next = Offset::Offset(letter.offset + 1);
            if let Err(error) = self.consumer.seek(
                &letter.topic,
                letter.partition,
                next,
                std::time::Duration::ZERO,
            ) {
                tracing::warn!(%error, topic = %letter.topic, partition = letter.partition, "could not move past an unserved record");
            }
        }
        if self.dead_letters.is_some() {
            self.unsent_dead_letters.extend(unfetchable);
        }
        self.pause(&finished);
    }

    /// Stops fetching `partitions`: a bounded run's, once they reach their end.
    pub(super) fn pause(&self, partitions: &[(Text, i32)]) {
        if partitions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        if let Err(error) = self.consumer.pause(&list) {
            tracing::debug!(%error, "could not pause finished partitions");
        }
    }

    /// Adds partitions at their start offsets to the assignment.
    pub(super) fn assign(&mut self, partitions: Vec<NewPartition>) -> Result<(), SourceError> {
        let mut list = TopicPartitionList::new();
        for NewPartition {
            topic,
            partition,
            start,
            high,
            resumed,
        } in partitions
        {
            let counters = self.metrics.partition(&topic, partition);
            if let Some(point) = resumed {
                counters.consumed.store(point.consumed, Ordering::Relaxed);
                counters.applied.store(point.applied, Ordering::Relaxed);
                counters
                    .dead_lettered
                    .store(point.dead_lettered, Ordering::Relaxed);
                counters.skipped.store(point.skipped, Ordering::Relaxed);
                counters.next_offset.store(start, Ordering::Relaxed);
            }
            // The later passes of a run in passes end where its first did.
            let high = match &self.config.end_offsets {
                Some(ends) if self.config.until_end => ends
                    .get(&(topic.to_string(), partition))
                    .copied()
                    .unwrap_or(start),
                _ => high,
            };
            let done = self.config.until_end && start >= high;
            if !done {
                list.add_partition_offset(&topic, partition, Offset::Offset(start))?;
            }
            tracing::debug!(
                worker = self.worker,
                topic,
                partition,
                start,
                high,
                "assigning"
            );
            self.partitions.entry(topic.clone()).or_default().insert(
                partition,
                PartitionState::new(&topic, partition, start, high, done, counters),
            );
        }
        if list.count() > 0 {
            self.consumer.incremental_assign(&list)?;
            if self.paused {
                self.consumer.pause(&list)?;
            }
        }
        Ok(())
    }
}

/// Dead-letters the record at `state`'s next offset, which the broker has
/// not returned for `waited` although it holds later ones, and moves past
/// it; the dead letter for the dead-letter topic (no key or value: none
/// arrived).
fn skip_unfetchable(
    state: &mut PartitionState,
    waited: std::time::Duration,
    batch: &mut SourceBatch,
) -> UnsentDeadLetter {
    let offset = state.next_offset;
    let reason = format!(
        "the broker returned no record at offset {offset} for {} s while it answered and held \
         records up to offset {}: a record it does not serve (tansu, for one, never returns a \
         record of 5 MiB or more), dead-lettered unread so that the partition goes on",
        waited.as_secs(),
        state.high_watermark - 1
    );
    tracing::warn!(topic = %state.topic, partition = state.partition, offset, "{reason}");
    batch.dead_letters.push(DeadLetterRow::bounded(
        state.topic.clone(),
        state.partition,
        offset,
        None,
        &reason,
        now_ms(),
    ));
    state.uncommitted.consumed += 1;
    state.uncommitted.dead_lettered += 1;
    state.next_offset = offset + 1;
    state.dirty = true;
    state.unstall();
    state.last_progress = Instant::now();
    state.checked_offset = state.next_offset;
    UnsentDeadLetter {
        topic: state.topic.clone(),
        partition: state.partition,
        offset,
        key: None,
        value: None,
        reason,
    }
}

/// The high watermark librdkafka last saw for a partition, without asking the
/// broker (`rd_kafka_get_watermark_offsets`); `None` if it has seen none yet.
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is
    // a NUL-terminated string that outlives the call, and `low`/`high` are valid
    // out-pointers. The function only reads librdkafka's cached state.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}
