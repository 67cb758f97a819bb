//! One timely worker of the job, as a loop of named steps (see
//! [`PipelineWorker::run`]): answer the reads whose time is complete, poll the
//! Kafka source and seal what arrived into a batch at the current millisecond,
//! step the dataflow (or park), publish how far this worker has got, let old
//! history go, and, in a bounded run, finish once every worker has read to its
//! end. The parent module states the time and consistency rules; each rule
//! lives in the step named here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::Result;
use timely::worker::Worker;
use trimatch_connectors::source::now_ms;
use trimatch_connectors::{KafkaSource, ResumePoint, SourceBatch, StartPosition};
use trimatch_dataflows::{Matcher, OutputCollection, ReadError, Time};

use super::catch_up::CatchUp;
use super::clock::LogicalClock;
use super::durability::agree::agree_on_checkpoint;
use super::durability::schedule::CheckpointSchedule;
use super::durability::Durability;
use super::reads::PreviewRead;
use super::{PipelineConfig, ReadKind, ReadReply, ReadRequest, Shared};

/// How long a worker waits in Kafka's poll when the dataflow has nothing to do.
/// With work in flight it never waits: each loop steps the dataflow once, and
/// a 2 ms wait per step capped a worker's throughput.
const IDLE_POLL_TIMEOUT: Duration = Duration::from_millis(2);
/// The longest a worker holds polled messages back while the dataflow is still
/// busy with what it sealed before (see [`PipelineWorker::poll_and_seal`]).
const MAX_SEAL_DELAY: Duration = Duration::from_millis(20);
/// The longest a worker parks while it waits for its peers (or is closed);
/// timely wakes it earlier as soon as there is dataflow work.
const PARK_WHILE_WAITING: Duration = Duration::from_millis(1);
/// How often a worker lets its outputs forget history older than the retention.
const COMPACTION_INTERVAL: Duration = Duration::from_secs(1);
/// How many full batches' worth of messages a worker lets be sealed and not
/// yet complete before it pauses its partitions (backpressure).
const MAX_BATCHES_IN_FLIGHT: usize = 8;

/// A batch sealed at `time`, until the time is complete.
struct SealedBatch {
    time: Time,
    /// Changes and dead letters in it.
    messages: usize,
    /// The Kafka timestamps of its messages (for freshness).
    timestamps: Vec<i64>,
}

/// Runs one worker until the job stops, fails, or (bounded runs) finishes.
pub(super) fn run_worker(
    worker: &mut Worker,
    config: &PipelineConfig,
    shared: &Shared,
    requests: Receiver<ReadRequest>,
) -> Result<()> {
    PipelineWorker::build(worker, config, shared, requests)?.run()
}

/// A worker's state between steps.
struct PipelineWorker<'w> {
    timely: &'w mut Worker,
    config: &'w PipelineConfig,
    shared: &'w Shared,
    /// This worker's index among the process's workers (the shared state is
    /// indexed by it; sources are spread by the global index).
    index: usize,
    matcher: Matcher,
    catch_up: CatchUp,
    source: KafkaSource,
    /// Reads sent to this worker, and those waiting for their time to complete.
    requests: Receiver<ReadRequest>,
    waiting: Vec<ReadRequest>,
    /// Polled and not yet sealed.
    batch: SourceBatch,
    /// When the oldest message in `batch` was polled.
    batch_since: Option<Instant>,
    /// The time of the last batch this worker sealed with anything in it.
    last_sealed: Time,
    /// Sealed batches, until their time is complete.
    unseen: VecDeque<SealedBatch>,
    /// Messages in `unseen`: sealed, not yet complete.
    in_flight: usize,
    /// Batch times: the wall clock's millisecond, never moving backwards.
    clock: LogicalClock,
    /// Bounded runs: the source has read to its end and the input is closed.
    closed: bool,
    next_compaction: Instant,
    /// With a state directory: the checkpoints this worker takes.
    checkpoints: Option<CheckpointSchedule>,
    /// After a restore: the state is unchanged from the restored checkpoint's
    /// time (carried into checkpoints taken before any new batch).
    restored_unchanged_since: Time,
    /// The row counts this worker last added to the shared counters.
    published_rows: BTreeMap<OutputCollection, i64>,
}

/// How long a stopping worker waits for its last checkpoint's time to complete.
const FINAL_CHECKPOINT_WAIT: Duration = Duration::from_secs(3);

impl<'w> PipelineWorker<'w> {
    /// Builds the dataflows (every worker, in the same order) and the source.
    fn build(
        timely: &'w mut Worker,
        config: &'w PipelineConfig,
        shared: &'w Shared,
        requests: Receiver<ReadRequest>,
    ) -> Result<Self> {
        let global = timely.index();
        let mut source_config = config.source.clone();
        let mut clock = LogicalClock::new();
        // The restore is agreed on before the other dataflows are built (every
        // worker builds the same dataflows in the same order).
        let restore = match &shared.durability {
            Some(durability) => {
                let process = durability.shape.process;
                match agree_on_checkpoint(timely, &durability.candidate_times(), process)? {
                    Some((as_of, unchanged_since)) => {
                        Some(durability.take_restore(as_of, unchanged_since, global)?)
                    }
                    None => None,
                }
            }
            None => None,
        };
        if let Some((manifest, _, restored)) = &restore {
            source_config.start = StartPosition::Resume(
                manifest
                    .partitions
                    .iter()
                    .map(|p| {
                        let point = ResumePoint {
                            next_offset: p.next_offset,
                            consumed: p.consumed,
                            applied: p.applied,
                            dead_lettered: p.dead_lettered,
                            skipped: p.skipped,
                        };
                        ((p.topic.clone(), p.partition), point)
                    })
                    .collect(),
            );
            source_config.expected_cluster_id = manifest.kafka_cluster_id.clone();
            source_config.dead_letters_produced_since =
                Some(Durability::dead_letter_scan_from(manifest.as_of));
            clock = LogicalClock::starting_at(restored.readable_from + 1);
        }
        let restored_unchanged_since = restore.as_ref().map_or(0, |(_, _, r)| r.checkpoint);
        let mut matcher = Matcher::build(timely, &config.matching, Some(shared.hub.sink()));
        if let Some((manifest, shard, _)) = restore {
            matcher.advance_to(manifest.as_of);
            if let Some(shard) = shard {
                matcher.restore(shard);
            }
            matcher.advance_to(manifest.as_of + 1);
        }
        let catch_up = CatchUp::build(timely);
        let source = KafkaSource::new(
            source_config,
            global,
            timely.peers(),
            shared.metrics.clone(),
        )?;
        let checkpoints = shared.durability.as_ref().and_then(|durability| {
            let writer = shared
                .checkpoint_writer
                .lock()
                .expect("writer lock")
                .clone()?;
            Some(CheckpointSchedule::new(
                durability.interval_ms,
                global,
                writer,
            ))
        });
        Ok(PipelineWorker {
            index: config.local_index(global),
            timely,
            config,
            shared,
            matcher,
            catch_up,
            source,
            requests,
            waiting: Vec::new(),
            batch: SourceBatch::default(),
            batch_since: None,
            last_sealed: 0,
            unseen: VecDeque::new(),
            in_flight: 0,
            clock,
            closed: false,
            next_compaction: Instant::now() + COMPACTION_INTERVAL,
            checkpoints,
            restored_unchanged_since,
            published_rows: BTreeMap::new(),
        })
    }

    /// The worker loop.
    fn run(mut self) -> Result<()> {
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                self.take_final_checkpoint()?;
                self.source.flush(Duration::from_secs(5));
                return Ok(());
            }
            // Reads are answered before the poll and step as well as after: a
            // read that arrived during a long step then waits for that step only.
            self.answer_reads();
            if !self.closed {
                self.poll_and_seal()?;
                self.inject_fault();
            }
            self.step_or_park();
            self.take_checkpoints()?;
            self.publish_progress();
            self.answer_reads();
            self.compact();
            if self.closed && self.matcher.is_complete(Time::MAX - 1) {
                return self.finish_bounded_run();
            }
        }
    }

    /// Answers (and drops) every waiting read whose `as_of` is complete.
    fn answer_reads(&mut self) {
        self.waiting.extend(self.requests.try_iter());
        let (matcher, index) = (&mut self.matcher, self.index);
        self.waiting.retain(|request| {
            if !matcher.is_complete(request.as_of) {
                return true;
            }
            let _ = request.reply.send((index, answer(matcher, request)));
            false
        });
    }

    /// Polls the source and seals what it has into a batch at the current
    /// millisecond `t` (at most one batch per millisecond, strictly
    /// increasing even when the wall clock steps back: [`LogicalClock`]), or
    /// moves the input with the clock while nothing arrives, so that times
    /// complete when idle.
    ///
    /// Adaptive batching: seal at once while the dataflow keeps up; while it
    /// is still busy with earlier times, let messages gather into one larger
    /// batch (until it catches up, the batch is full, or [`MAX_SEAL_DELAY`]
    /// passes). Each logical time has a fixed cost in every operator, so many
    /// tiny times fall behind where one larger time keeps up. The source's
    /// counters are committed only at sealing: a message counted as consumed
    /// is always in a sealed time, and so reflected by the next complete time
    /// (readiness and `wait_until_reflected` rely on that).
    fn poll_and_seal(&mut self) -> Result<()> {
        // Backpressure: while too much is sealed and not yet complete, fetch
        // nothing more (what librdkafka has prefetched, bounded by its queue
        // settings, is still polled).
        let limit = self
            .config
            .source
            .max_batch
            .saturating_mul(MAX_BATCHES_IN_FLIGHT);
        self.source.set_paused(self.in_flight >= limit);
        // Idle: every batch this worker sealed is reflected everywhere.
        let idle = self.matcher.is_complete(self.last_sealed);
        let timeout = if idle {
            IDLE_POLL_TIMEOUT
        } else {
            Duration::ZERO
        };
        self.source.poll(&mut self.batch, timeout)?;
        let now = self.clock.now();
        if self.batch.is_empty() {
            self.batch_since = None;
        } else if self.batch_since.is_none() {
            self.batch_since = Some(Instant::now());
        }
        let seal_now = idle
            || self.batch.changes.len() >= self.config.source.max_batch
            || self.source.is_finished()
            || self
                .batch_since
                .is_some_and(|since| since.elapsed() >= MAX_SEAL_DELAY);
        if !self.batch.is_empty() && seal_now && now >= self.matcher.time() {
            self.pass_checkpoint_times(self.matcher.time(), now);
            self.batch_since = None;
            self.last_sealed = now;
            let sealed = SealedBatch {
                time: now,
                messages: self.batch.changes.len() + self.batch.dead_letters.len(),
                timestamps: std::mem::take(&mut self.batch.message_timestamps),
            };
            self.in_flight += sealed.messages;
            self.unseen.push_back(sealed);
            seal(&mut self.matcher, &mut self.batch, now);
            self.source.commit_counters();
            self.pass_checkpoint_times(now, now + 1);
        } else if self.batch.is_empty() && now > self.matcher.time() {
            self.pass_checkpoint_times(self.matcher.time(), now);
            self.matcher.advance_to(now);
        }
        // Before the dataflow steps (see `subscriptions`: SeqCst, against
        // the hub's reading of it when a collection is turned on).
        self.shared.input_time.fetch_max(now, Ordering::SeqCst);
        // Caught up with the high watermarks seen at start: everything below
        // them is sealed at or before the last time (readiness).
        if !self.catch_up.has_announced() && self.source.is_ready() && self.batch.is_empty() {
            self.catch_up
                .announce(self.matcher.time().saturating_sub(1));
        }
        if self.source.is_finished() && self.batch.is_empty() {
            self.close_input();
        }
        Ok(())
    }

    /// Checkpoints: the input is about to close the times `from..to`, with
    /// everything sealed so far committed. If a checkpoint time is among them,
    /// where the partitions stand now is exactly what it reflects.
    fn pass_checkpoint_times(&mut self, from: Time, to: Time) {
        let passed = self
            .checkpoints
            .as_ref()
            .and_then(|schedule| schedule.boundary_in(from, to));
        if let Some(as_of) = passed {
            self.pass_checkpoint(as_of);
        }
    }

    /// Notes where this worker stands for the checkpoint at `as_of`, which its
    /// input is about to pass, and holds the engine's state there.
    fn pass_checkpoint(&mut self, as_of: Time) {
        let Some(schedule) = &mut self.checkpoints else {
            return;
        };
        let queued = self
            .shared
            .metrics
            .dead_letters_queued
            .load(Ordering::SeqCst);
        schedule.pass(
            &mut self.matcher,
            as_of,
            self.source.committed_positions(),
            queued,
            self.last_sealed.max(self.restored_unchanged_since),
            self.source.cluster_id().map(str::to_string),
        );
    }

    /// Sends the shard of every passed checkpoint whose time is complete to
    /// the writer.
    fn take_checkpoints(&mut self) -> Result<()> {
        if let Some(schedule) = &mut self.checkpoints {
            let settled = self
                .shared
                .metrics
                .dead_letters_settled
                .load(Ordering::SeqCst);
            schedule.take_complete(&mut self.matcher, settled)?;
        }
        Ok(())
    }

    /// A clean stop with a state directory: one more checkpoint, at the time
    /// the process picked after every local input, reading nothing more
    /// (what was polled and not sealed is read again by the next run).
    fn take_final_checkpoint(&mut self) -> Result<()> {
        let (Some(durability), Some(schedule)) = (&self.shared.durability, &mut self.checkpoints)
        else {
            return Ok(());
        };
        let final_at = durability.final_at.load(Ordering::SeqCst);
        if final_at == 0 || self.closed {
            return Ok(());
        }
        if self.matcher.time() > final_at {
            schedule.skip(final_at);
            return Ok(());
        }
        self.pass_checkpoint(final_at);
        self.matcher.advance_to(final_at + 1);
        let deadline = Instant::now() + FINAL_CHECKPOINT_WAIT;
        while self
            .checkpoints
            .as_ref()
            .is_some_and(CheckpointSchedule::is_pending)
        {
            if Instant::now() >= deadline || self.shared.error.lock().expect("error lock").is_some()
            {
                tracing::warn!(
                    worker = self.timely.index(),
                    "the last checkpoint's time did not complete; the previous checkpoint stays"
                );
                return Ok(());
            }
            self.timely.step_or_park(Some(PARK_WHILE_WAITING));
            self.take_checkpoints()?;
            self.publish_progress();
            self.answer_reads();
        }
        Ok(())
    }

    /// Test-only ([`PipelineConfig::panic_worker`]): panics once this worker
    /// has sealed a batch.
    fn inject_fault(&self) {
        if self.config.panic_worker == Some(self.timely.index()) && self.last_sealed > 0 {
            panic!(
                "injected fault: worker {} panics after its first batch (--fault-panic-worker)",
                self.timely.index()
            );
        }
    }

    /// Bounded runs: every partition has reached the high watermarks seen at
    /// start, so the input closes; the final state is read at the newest
    /// batch time of every worker.
    fn close_input(&mut self) {
        self.source.flush(Duration::from_secs(30));
        self.closed = true;
        let last = self.matcher.time().saturating_sub(1);
        self.shared.final_time.fetch_max(last, Ordering::SeqCst);
        self.matcher.advance_to(Time::MAX);
        self.shared.finished.fetch_add(1, Ordering::SeqCst);
    }

    /// Steps the dataflow once. Parks (until timely has work, at most
    /// [`PARK_WHILE_WAITING`]) when closed, or while earlier times are still
    /// in flight and this worker has nothing to do: it is then waiting for its
    /// peers, and spinning would take the core they (or the broker) need — on
    /// 2 cores, half the machine.
    fn step_or_park(&mut self) {
        let waiting_for_peers = !self.closed && !self.matcher.is_complete(self.last_sealed);
        self.timely
            .step_or_park(Some(if self.closed || waiting_for_peers {
                PARK_WHILE_WAITING
            } else {
                Duration::ZERO
            }));
    }

    /// Publishes the newest time this worker sees complete and, once heard,
    /// the time by which every worker had caught up (readiness), its rows
    /// per collection, and records the freshness of every batch whose time
    /// has become complete.
    fn publish_progress(&mut self) {
        for (collection, rows) in self.matcher.live_rows() {
            let published = self.published_rows.entry(collection).or_default();
            if rows != *published {
                self.shared.counters.add_rows(collection, rows - *published);
                *published = rows;
            }
        }
        if let Some(newest) = self.matcher.newest_complete() {
            self.shared.progress.record_complete(self.index, newest);
        }
        if let Some(time) = self.catch_up.take_everyone_caught_up_by() {
            self.shared.progress.record_caught_up_by(time);
        }
        while let Some(sealed) = self.unseen.front() {
            if !self.matcher.is_complete(sealed.time) {
                break;
            }
            let visible = now_ms();
            for timestamp in &sealed.timestamps {
                let freshness = (visible - timestamp) as f64 / 1e3;
                self.shared.counters.freshness.observe(freshness);
            }
            self.in_flight -= sealed.messages;
            self.unseen.pop_front();
        }
    }

    /// Every [`COMPACTION_INTERVAL`], lets the outputs forget history older
    /// than the retention: reads may ask for any `as_of` within it.
    fn compact(&mut self) {
        if Instant::now() < self.next_compaction {
            return;
        }
        self.next_compaction = Instant::now() + COMPACTION_INTERVAL;
        let retention_ms = self.config.retention.as_millis() as u64;
        if let Some(newest) = self
            .matcher
            .newest_complete()
            .filter(|newest| *newest < Time::MAX - 1)
        {
            self.matcher
                .allow_compaction(newest.saturating_sub(retention_ms));
        }
    }

    /// Every worker has closed its input: reads this worker's shard of every
    /// collection at the final time into the shared final state.
    fn finish_bounded_run(mut self) -> Result<()> {
        let as_of = self.shared.final_time.load(Ordering::SeqCst);
        let mut state = self.shared.final_state.lock().expect("state lock");
        for collection in OutputCollection::ALL {
            let rows = self.matcher.read(collection, as_of, None)?;
            state
                .entry(collection)
                .or_default()
                .extend(rows.into_iter().map(|(row, _)| row));
        }
        Ok(())
    }
}

/// Reads this worker's shard for `request`: a seek to each of its keys in
/// turn, or one pass over everything.
fn answer(matcher: &mut Matcher, request: &ReadRequest) -> Result<ReadReply, ReadError> {
    let keys: Vec<Option<&str>> = match &request.keys {
        Some(keys) => keys.iter().map(|key| Some(key.as_str())).collect(),
        None => vec![None],
    };
    let (collection, as_of) = (request.collection, request.as_of);
    match &request.kind {
        ReadKind::Count { filter } if filter.is_empty() => {
            matcher.count(collection, as_of).map(ReadReply::Count)
        }
        ReadKind::Rows { filter, limit } => {
            let mut rows = Vec::new();
            for key in keys {
                let room = limit.saturating_sub(rows.len());
                let shard = matcher.read_filtered(
                    collection,
                    as_of,
                    key,
                    &|row| filter.matches(row),
                    room,
                )?;
                rows.extend(shard.into_iter().map(|(row, _)| row));
            }
            Ok(ReadReply::Rows(rows))
        }
        ReadKind::Count { filter } => {
            let mut count = 0;
            for key in keys {
                let rows = matcher.read_filtered(
                    collection,
                    as_of,
                    key,
                    &|row| filter.matches(row),
                    usize::MAX,
                )?;
                count += rows.len() as u64;
            }
            Ok(ReadReply::Count(count))
        }
        ReadKind::Preview(read) => match read {
            PreviewRead::TenantPolicies(tenant) => matcher
                .tenant_policies(request.as_of, tenant)
                .map(ReadReply::Policies),
            PreviewRead::Invoices(plan) => matcher
                .preview_invoices(request.as_of, plan)
                .map(ReadReply::Previews),
            PreviewRead::Decisions(keys) => matcher
                .decisions(request.as_of, keys)
                .map(ReadReply::Decisions),
        },
        ReadKind::Changes { from, filter } => {
            let mut changes = Vec::new();
            for key in keys {
                changes.extend(
                    matcher
                        .read_changes(collection, *from, as_of, key, &|row| filter.matches(row))?,
                );
            }
            Ok(ReadReply::Changes(changes))
        }
    }
}

/// Stamps everything in `batch` with `time` and moves the engine past it.
fn seal(matcher: &mut Matcher, batch: &mut SourceBatch, time: Time) {
    if time > matcher.time() {
        matcher.advance_to(time);
    }
    for change in batch.changes.drain(..) {
        matcher.upsert(change.key, change.document, change.offset);
    }
    for row in batch.dead_letters.drain(..) {
        matcher.record_dead_letter(row);
    }
    for row in batch.progress.drain(..) {
        matcher.record_progress(row);
    }
    matcher.advance_to(time + 1);
}
