//! The matching graph alone, without Kafka: preload a live state, then push a
//! steady-state mix of document changes through it in batches, on N workers,
//! and time it. The decode-only reference rate (JSON → validated documents, no
//! dataflow) is measured here too, on the same messages, so the two figures come
//! from the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use trimatch_connectors::envelope::{decode_upsert, Upsert};
use trimatch_dataflows::{MatchConfig, Matcher};
use trimatch_workload::{GeneratedMessage, Present, Workload, WorkloadConfig};

use super::measure::resident_set;
use super::operator_profile::OperatorProfile;

/// The shape of a graph benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct GraphBenchConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// Document changes applied before timing starts (the live state).
    pub preload: usize,
    /// Document changes timed.
    pub changes: usize,
    /// Changes per logical time (the real pipeline seals about one batch per ms).
    pub batch: usize,
    pub seed: u64,
    /// Print each worker's busiest operators (timely's schedule events).
    pub operator_profile: bool,
}

impl Default for GraphBenchConfig {
    fn default() -> Self {
        GraphBenchConfig {
            workers: 1,
            preload: 100_000,
            changes: 200_000,
            batch: 10_000,
            seed: 1,
            operator_profile: false,
        }
    }
}

/// What a graph benchmark run measured.
#[derive(Clone, Debug, Serialize)]
pub struct GraphReport {
    pub config: GraphBenchConfig,
    /// Documents present after the preload (what the steady-state changes hit).
    pub live_documents: usize,
    pub live_document_lines: usize,
    /// (RSS after the preload − RSS before the dataflow) / live document lines.
    pub rss_per_live_line_bytes: f64,
    pub seconds: f64,
    pub changes_per_second: f64,
    /// The decode-only reference rate on the same messages, one thread.
    pub decode_per_second: f64,
    /// `changes_per_second / decode_per_second`.
    pub ratio_to_decode: f64,
}

/// A realistic mix of valid messages over 20 tenants: POs (new and amended),
/// receipts (and deleted receipts), invoices (clean, variances, duplicates,
/// credit memos, cancellations, deletes). Policies change about once per
/// 10,000 messages: a policy change re-evaluates every invoice of its tenant
/// (as it must), so at the test suite's rate of 3% it would dominate.
pub fn workload(seed: u64, count: usize) -> Vec<GeneratedMessage> {
    Workload::new(WorkloadConfig {
        seed,
        tenants: 20,
        bad_share: 0.0,
        live_pos_per_tenant: 5_000,
        policy_share: 0.0001,
        ..WorkloadConfig::default()
    })
    .take(count)
    .collect()
}

/// Decodes generated (valid) messages.
pub fn decode_all(messages: &[GeneratedMessage]) -> Vec<Upsert> {
    messages
        .iter()
        .map(|message| {
            decode_upsert(
                message.kind,
                message.key.as_deref(),
                message.value.as_deref(),
            )
            .expect("generated messages are valid")
        })
        .collect()
}

/// What [`time_graph`] measured.
#[derive(Clone, Copy, Debug)]
pub struct GraphTiming {
    /// How long the steady-state changes took.
    pub elapsed: Duration,
    /// Process RSS before the dataflow was built, and after the preload.
    pub rss_before_bytes: u64,
    pub rss_after_preload_bytes: u64,
}

/// Runs the graph on `workers` threads: applies `preload` untimed, then
/// `steady`, both in batches of `batch` changes (each batch one logical time;
/// a batch is sent once the one two before it is complete). Returns the time
/// `steady` took, and RSS.
/// With `operator_profile`, each worker prints its 25 largest arrangements
/// after the preload and its 25 busiest operators at the end.
pub fn time_graph(
    workers: usize,
    batch: usize,
    preload: Arc<Vec<Upsert>>,
    steady: Arc<Vec<Upsert>>,
    operator_profile: bool,
) -> GraphTiming {
    let (rss_before_bytes, _) = resident_set();
    let config = timely::Config::process(workers.max(1));
    let guards = timely::execute(config, move |worker| {
        let profile = operator_profile.then(|| OperatorProfile::install(worker));
        let mut matcher = Matcher::build(worker, &MatchConfig::default(), None);
        let (index, peers) = (worker.index(), worker.peers());
        let mut time = 1;
        for chunk in preload.chunks(batch) {
            apply(&mut matcher, worker, chunk, index, peers, &mut time);
        }
        finish(&mut matcher, worker, time);
        let (rss_after_preload, _) = resident_set();
        if let Some(profile) = &profile {
            for (name, updates) in profile.arranged_updates().into_iter().take(25) {
                eprintln!("worker {index}: {updates:>10} updates  {name}");
            }
        }
        let started = Instant::now();
        for chunk in steady.chunks(batch) {
            apply(&mut matcher, worker, chunk, index, peers, &mut time);
        }
        finish(&mut matcher, worker, time);
        let elapsed = started.elapsed();
        if let Some(profile) = profile {
            for (name, total) in profile.times().into_iter().take(25) {
                eprintln!("worker {index}: {:>8.3} s  {name}", total.as_secs_f64());
            }
        }
        (elapsed, rss_after_preload)
    })
    .expect("timely starts");
    let results: Vec<(Duration, u64)> = guards
        .join()
        .into_iter()
        .map(|result| result.expect("worker finishes"))
        .collect();
    GraphTiming {
        elapsed: results
            .iter()
            .map(|(elapsed, _)| *elapsed)
            .max()
            .unwrap_or_default(),
        rss_before_bytes,
        rss_after_preload_bytes: results
            .iter()
            .map(|(_, rss)| *rss)
            .max()
            .unwrap_or_default(),
    }
}

/// Sends this worker's share of one batch at `time`, and steps until every
/// worker has finished it.
fn apply(
    matcher: &mut Matcher,
    worker: &mut timely::worker::Worker,
    upserts: &[Upsert],
    index: usize,
    peers: usize,
    time: &mut u64,
) {
    for (offset, upsert) in upserts.iter().enumerate().skip(index).step_by(peers) {
        matcher.upsert(upsert.key, upsert.document.clone(), offset as i64);
    }
    matcher.advance_to(*time + 1);
    // Like the pipeline, which seals a new batch while earlier ones are still
    // in flight, keep up to IN_FLIGHT batches going: a worker that is done with
    // its share of one time starts on the next instead of waiting at a barrier.
    let awaited = time.saturating_sub(IN_FLIGHT - 1);
    while !matcher.is_complete(awaited) {
        worker.step();
    }
    // As the pipeline does with no retention: history before now may go.
    matcher.allow_compaction(awaited);
    *time += 1;
}

/// Drains the batches still in flight after the last [`apply`].
fn finish(matcher: &mut Matcher, worker: &mut timely::worker::Worker, time: u64) {
    while !matcher.is_complete(time - 1) {
        worker.step();
    }
}

/// How many logical times [`apply`] keeps in flight.
const IN_FLIGHT: u64 = 2;

/// Decode-only rate: documents/s decoding `messages` on this thread, best of `rounds`.
pub fn decode_rate(messages: &[GeneratedMessage], rounds: usize) -> f64 {
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            let decoded = decode_all(messages);
            let elapsed = started.elapsed().as_secs_f64();
            decoded.len() as f64 / elapsed
        })
        .fold(0.0, f64::max)
}

/// What `trimatch-bench decode` measured.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeReport {
    pub documents: usize,
    pub mean_message_bytes: f64,
    pub documents_per_second: f64,
    pub megabytes_per_second: f64,
}

/// Decoding alone over the graph benchmark's mix of `documents` messages.
pub fn decode_bench(seed: u64, documents: usize, rounds: usize) -> DecodeReport {
    let messages = workload(seed, documents);
    let bytes: usize = messages
        .iter()
        .map(|message| {
            message.key.as_ref().map_or(0, Vec::len) + message.value.as_ref().map_or(0, Vec::len)
        })
        .sum();
    let documents_per_second = decode_rate(&messages, rounds.max(1));
    let mean_message_bytes = bytes as f64 / messages.len().max(1) as f64;
    DecodeReport {
        documents: messages.len(),
        mean_message_bytes,
        documents_per_second,
        megabytes_per_second: documents_per_second * mean_message_bytes / 1e6,
    }
}

/// Generates the workload, measures the decode-only rate, and times the graph.
pub fn run(config: &GraphBenchConfig) -> GraphReport {
    let messages = workload(config.seed, config.preload + config.changes);
    let decode_per_second = decode_rate(&messages, 3);
    let upserts = decode_all(&messages);
    let (preload, steady) = upserts.split_at(config.preload);
    let mut present = Present::line_counts();
    for upsert in preload {
        present.apply_upsert(upsert);
    }
    let (live, lines) = (present.len(), present.total_lines());
    let timing = time_graph(
        config.workers,
        config.batch,
        Arc::new(preload.to_vec()),
        Arc::new(steady.to_vec()),
        config.operator_profile,
    );
    let seconds = timing.elapsed.as_secs_f64();
    let engine_bytes = timing
        .rss_after_preload_bytes
        .saturating_sub(timing.rss_before_bytes);
    let changes_per_second = config.changes as f64 / seconds;
    GraphReport {
        config: config.clone(),
        live_documents: live,
        live_document_lines: lines,
        rss_per_live_line_bytes: engine_bytes as f64 / lines.max(1) as f64,
        seconds,
        changes_per_second,
        decode_per_second,
        ratio_to_decode: changes_per_second / decode_per_second,
    }
}

/// The human summary of a graph report.
pub fn summary(report: &GraphReport) -> Vec<String> {
    vec![
        format!(
            "graph: {:.0} document changes/s on {} worker(s) over {} live documents \
             ({} changes in batches of {}, {:.2} s)",
            report.changes_per_second,
            report.config.workers,
            report.live_documents,
            report.config.changes,
            report.config.batch,
            report.seconds
        ),
        format!(
            "memory: {:.0} bytes of RSS per live document line ({} lines)",
            report.rss_per_live_line_bytes, report.live_document_lines
        ),
        format!(
            "decode-only reference: {:.0} documents/s (1 thread); graph / decode = {:.2}",
            report.decode_per_second, report.ratio_to_decode
        ),
    ]
}
