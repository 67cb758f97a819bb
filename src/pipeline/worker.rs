//! One timely worker of the job: it polls its Kafka source, seals what arrived
//! into a batch at the current millisecond, steps the dataflow, answers reads
//! of its shard, and lets old history go. See the parent module for the time
//! and consistency rules this implements.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::Result;
use timely::worker::Worker;
use trimatch_connectors::source::now_ms;
use trimatch_connectors::{KafkaSource, SourceBatch};
use trimatch_dataflows::{Matcher, OutputCollection, ReadError, Time};

use super::catch_up::CatchUp;
use super::{PipelineConfig, ReadKind, ReadReply, ReadRequest, Shared};

/// How long a worker waits in Kafka's poll when the dataflow has nothing to do.
/// With work in flight it never waits: each loop steps the dataflow once, and
/// a 2 ms wait per step capped a worker's throughput (issue 6's profile).
const IDLE_POLL_TIMEOUT: Duration = Duration::from_millis(2);
/// The longest a worker holds polled messages back while the dataflow is still
/// busy with what it sealed before (see the loop).
const MAX_SEAL_DELAY: Duration = Duration::from_millis(20);
/// The longest a worker parks while it waits for its peers (or is closed);
/// timely wakes it earlier as soon as there is dataflow work.
const PARK_WHILE_WAITING: Duration = Duration::from_millis(1);
/// How often a worker lets its outputs forget history older than the retention.
const COMPACTION_INTERVAL: Duration = Duration::from_secs(1);

pub(super) fn run_worker(
    worker: &mut Worker,
    config: &PipelineConfig,
    shared: &Shared,
    requests: Receiver<ReadRequest>,
) -> Result<()> {
    // Sources are spread over every worker of every process (the global index);
    // the shared state of this process is indexed by the local one.
    let global = worker.index();
    let index = config.local_index(global);
    let mut matcher = Matcher::build(worker, &config.matching, Some(shared.hub.sink()));
    let mut catch_up = CatchUp::build(worker);
    let mut source = KafkaSource::new(
        config.source.clone(),
        global,
        worker.peers(),
        shared.metrics.clone(),
    )?;
    let retention_ms = config.retention.as_millis() as u64;
    let mut batch = SourceBatch::default();
    let mut waiting: Vec<ReadRequest> = Vec::new();
    let mut closed = false;
    let mut next_compaction = Instant::now() + COMPACTION_INTERVAL;
    // Sealed batches' message timestamps, until their time is complete.
    let mut unseen: VecDeque<(Time, Vec<i64>)> = VecDeque::new();
    // The time of the last batch this worker sealed with anything in it.
    let mut last_sealed: Time = 0;
    // When the oldest message in `batch` was polled.
    let mut batch_since: Option<Instant> = None;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            source.flush(Duration::from_secs(5));
            return Ok(());
        }
        // Reads are answered before the poll and step as well as after: a read
        // that arrived during a long step then waits for that step only.
        waiting.extend(requests.try_iter());
        answer_ready(&mut waiting, &mut matcher, index);
        if !closed {
            // Idle: every batch this worker sealed is reflected everywhere.
            let idle = matcher.is_complete(last_sealed);
            let timeout = if idle {
                IDLE_POLL_TIMEOUT
            } else {
                Duration::ZERO
            };
            source.poll(&mut batch, timeout)?;
            let now = now_ms() as Time;
            if batch.is_empty() {
                batch_since = None;
            } else if batch_since.is_none() {
                batch_since = Some(Instant::now());
            }
            // Adaptive batching: seal at once while the dataflow keeps up; while
            // it is still busy with earlier times, let messages gather into one
            // larger batch (until it catches up, the batch is full, or
            // MAX_SEAL_DELAY passes). Each logical time has a fixed cost in
            // every operator, so many tiny times fall behind where one larger
            // time keeps up. The source's counters are committed only here, at
            // sealing: a message counted as consumed is always in a sealed time,
            // and so reflected by the next complete time (readiness and
            // `wait_until_reflected` rely on that).
            let seal_now = idle
                || batch.changes.len() >= config.source.max_batch
                || source.is_finished()
                || batch_since.is_some_and(|since| since.elapsed() >= MAX_SEAL_DELAY);
            if !batch.is_empty() && seal_now && now >= matcher.time() {
                batch_since = None;
                last_sealed = now;
                unseen.push_back((now, std::mem::take(&mut batch.message_timestamps)));
                seal(&mut matcher, &mut batch, now);
                source.commit_counters();
            } else if batch.is_empty() && now > matcher.time() {
                matcher.advance_to(now);
            }
            // Caught up with the high watermarks seen at start: everything
            // below them is sealed at or before the last time (readiness).
            if !catch_up.has_announced() && source.is_ready() && batch.is_empty() {
                catch_up.announce(matcher.time().saturating_sub(1));
            }
            if source.is_finished() && batch.is_empty() {
                source.flush(Duration::from_secs(30));
                closed = true;
                let last = matcher.time().saturating_sub(1);
                shared.final_time.fetch_max(last, Ordering::SeqCst);
                matcher.advance_to(Time::MAX);
                shared.finished.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Park (until timely has work, at most 1 ms) when closed, or while
        // earlier times are still in flight and this worker has nothing to do:
        // it is then waiting for its peers, and spinning would take the core
        // they (or the broker) need — on 2 cores, half the machine.
        let waiting_for_peers = !closed && !matcher.is_complete(last_sealed);
        worker.step_or_park(if closed || waiting_for_peers {
            Some(PARK_WHILE_WAITING)
        } else {
            Some(Duration::ZERO)
        });
        if let Some(newest) = matcher.newest_complete() {
            shared.progress.record_complete(index, newest);
        }
        if let Some(time) = catch_up.take_everyone_caught_up_by() {
            shared.progress.record_caught_up_by(time);
        }
        while let Some((time, timestamps)) = unseen.front() {
            if !matcher.is_complete(*time) {
                break;
            }
            let visible = now_ms();
            for timestamp in timestamps {
                let freshness = (visible - timestamp) as f64 / 1e3;
                shared.job_metrics.freshness.observe(freshness);
            }
            unseen.pop_front();
        }
        waiting.extend(requests.try_iter());
        answer_ready(&mut waiting, &mut matcher, index);
        if Instant::now() >= next_compaction {
            next_compaction = Instant::now() + COMPACTION_INTERVAL;
            if let Some(newest) = matcher
                .newest_complete()
                .filter(|newest| *newest < Time::MAX - 1)
            {
                matcher.allow_compaction(newest.saturating_sub(retention_ms));
            }
        }
        if closed && matcher.is_complete(Time::MAX - 1) {
            // Every worker has closed its input: read the final state.
            let as_of = shared.final_time.load(Ordering::SeqCst);
            let mut state = shared.final_state.lock().expect("state lock");
            for collection in OutputCollection::ALL {
                let rows = matcher.read(collection, as_of, None)?;
                state
                    .entry(collection)
                    .or_default()
                    .extend(rows.into_iter().map(|(row, _)| row));
            }
            return Ok(());
        }
    }
}

/// Answers (and drops) every waiting read whose `as_of` is complete.
fn answer_ready(waiting: &mut Vec<ReadRequest>, matcher: &mut Matcher, index: usize) {
    waiting.retain(|request| {
        if !matcher.is_complete(request.as_of) {
            return true;
        }
        let _ = request.reply.send((index, answer(matcher, request)));
        false
    });
}

/// Reads this worker's shard for `request`.
fn answer(matcher: &mut Matcher, request: &ReadRequest) -> Result<ReadReply, ReadError> {
    let key = request.key.as_deref();
    match &request.kind {
        ReadKind::Rows { filter, limit } => {
            let rows = matcher.read_filtered(
                request.collection,
                request.as_of,
                key,
                &|row| filter.matches(row),
                *limit,
            )?;
            Ok(ReadReply::Rows(
                rows.into_iter().map(|(row, _)| row).collect(),
            ))
        }
        ReadKind::Count { filter } if filter.is_empty() => matcher
            .count(request.collection, request.as_of)
            .map(ReadReply::Count),
        ReadKind::Count { filter } => {
            let rows = matcher.read_filtered(
                request.collection,
                request.as_of,
                key,
                &|row| filter.matches(row),
                usize::MAX,
            )?;
            Ok(ReadReply::Count(rows.len() as u64))
        }
        ReadKind::Changes { from, filter } => matcher
            .read_changes(request.collection, *from, request.as_of, key, &|row| {
                filter.matches(row)
            })
            .map(ReadReply::Changes),
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
