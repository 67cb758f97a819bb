//! One owned partition's state: how far it is read, the counts not yet
//! published, and whether it makes progress — stalled (with why), skipped
//! by an offset reset, or ok — with the rules that move it between them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trimatch_dataflows::model::Text;
use trimatch_dataflows::rows::{DeadLetterRow, PartitionHealth, SourceProgressRow};

use super::{now_ms, SourceBatch};
use crate::metrics::PartitionCounters;

/// One owned partition.
pub(super) struct PartitionState {
    pub(super) topic: Text,
    pub(super) partition: i32,
    pub(super) next_offset: i64,
    pub(super) high_watermark: i64,
    /// The high watermark when the partition was assigned: reaching it means
    /// caught up (ready), and in bounded mode it is where reading stops.
    pub(super) end: i64,
    pub(super) done: bool,
    /// Progress changed since the last row handed over.
    pub(super) dirty: bool,
    /// Counts of messages handed over but not yet published to `counters`
    /// (see [`super::KafkaSource::commit_counters`]).
    pub(super) uncommitted: UncommittedCounts,
    pub(super) counters: Arc<PartitionCounters>,
    /// Why the partition cannot make progress, while it cannot.
    pub(super) stalled: Option<Text>,
    /// Why offsets were skipped, once they were (kept until restart).
    pub(super) skipped: Option<Text>,
    /// librdkafka reported an offset reset: the next message says where
    /// reading resumed, and so what was skipped.
    pub(super) reset_pending: Option<String>,
    /// When a consumer error for the partition was last seen.
    pub(super) last_error: Option<Instant>,
    /// When the last warning for the partition was logged (rate limit).
    pub(super) last_warned: Option<Instant>,
    /// When it was last seen to move, be caught up, or be paused (checked
    /// at each position refresh, not per message).
    pub(super) last_progress: Instant,
    /// `next_offset` at that check.
    pub(super) checked_offset: i64,
}

/// Per-partition counts waiting for [`super::KafkaSource::commit_counters`].
#[derive(Default)]
pub(super) struct UncommittedCounts {
    pub(super) consumed: u64,
    pub(super) applied: u64,
    pub(super) dead_lettered: u64,
    pub(super) skipped: u64,
}

impl PartitionState {
    pub(super) fn new(
        topic: &str,
        partition: i32,
        start: i64,
        high: i64,
        done: bool,
        counters: Arc<PartitionCounters>,
    ) -> Self {
        PartitionState {
            topic: Text::from(topic),
            partition,
            next_offset: start,
            high_watermark: high,
            end: high,
            done,
            dirty: true,
            uncommitted: UncommittedCounts::default(),
            counters,
            stalled: None,
            skipped: None,
            reset_pending: None,
            last_error: None,
            last_warned: None,
            last_progress: Instant::now(),
            checked_offset: start,
        }
    }

    pub(super) fn health(&self) -> (PartitionHealth, Option<Text>) {
        match (&self.stalled, &self.skipped) {
            (Some(reason), _) => (PartitionHealth::Stalled, Some(reason.clone())),
            (None, Some(reason)) => (PartitionHealth::Skipped, Some(reason.clone())),
            (None, None) => (PartitionHealth::Ok, None),
        }
    }

    pub(super) fn progress_row(&self) -> SourceProgressRow {
        let high_watermark = self.high_watermark.max(self.next_offset);
        let (state, state_reason) = self.health();
        SourceProgressRow {
            topic: self.topic.clone(),
            partition: self.partition,
            next_offset: self.next_offset,
            high_watermark,
            lag: (high_watermark - self.next_offset) as u64,
            state,
            state_reason,
        }
    }

    /// The partition cannot make progress, for `reason`: in its state and
    /// metrics, and in the log (where a bounded run, which serves no
    /// metrics, says so too).
    pub(super) fn stall(&mut self, reason: String) {
        if self.stalled.as_deref() != Some(reason.as_str()) {
            if self.may_warn() {
                tracing::warn!(
                    topic = %self.topic,
                    partition = self.partition,
                    next_offset = self.next_offset,
                    "partition stalled: {reason}"
                );
            }
            self.stalled = Some(Text::from(reason));
            self.dirty = true;
            self.counters.set_health(self.health().0);
        }
    }

    /// The partition makes progress again.
    pub(super) fn unstall(&mut self) {
        if self.stalled.take().is_some() {
            self.dirty = true;
            self.counters.set_health(self.health().0);
        }
    }

    /// Whether a warning about the partition may be logged now (at most one
    /// per [`WARNING_INTERVAL`]).
    pub(super) fn may_warn(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .last_warned
            .is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL);
        if due {
            self.last_warned = Some(now);
        }
        due
    }
}

/// The most warnings logged per partition (and for the client) per interval.
pub(super) const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// A stalled partition that has caught up and seen no error for this long
/// is making progress again.
pub(super) const STALL_CLEARS_AFTER: Duration = Duration::from_secs(5);

/// After librdkafka reset a partition's offset (`reset` is its sentence),
/// the first message says where reading resumed. Past `next_offset`: the
/// offsets between were skipped (the broker no longer holds them), so a
/// `dead_letters` row names the range and the partition is `skipped`. Below
/// it: the partition restarted under what is already reflected (the topic
/// was deleted and re-created), so it is stalled. Whether to go on with the
/// message.
pub(super) fn resumed_after_reset(
    state: &mut PartitionState,
    offset: i64,
    reset: &str,
    batch: &mut SourceBatch,
) -> bool {
    let next = state.next_offset;
    if offset < next {
        state.stall(format!(
            "reading restarted at offset {offset}, below next_offset {next} ({reset}): the topic \
             was probably deleted and re-created; restart trimatch with --start (and --reset-state \
             with a state directory) to read it again"
        ));
        return false;
    }
    if offset > next {
        let reason = format!(
            "offsets {next}..{} were skipped: the broker no longer holds them ({reset})",
            offset - 1
        );
        batch.dead_letters.push(DeadLetterRow::bounded(
            state.topic.clone(),
            state.partition,
            next,
            None,
            &reason,
            now_ms(),
        ));
        let skipped = (offset - next) as u64;
        state.uncommitted.consumed += skipped;
        state.uncommitted.skipped += skipped;
        state.skipped = Some(Text::from(reason));
        state.next_offset = offset;
        state.dirty = true;
        state.counters.set_health(state.health().0);
    }
    true
}
