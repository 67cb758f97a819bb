//! The restart harness (SPEC §11): how long a restart takes with a
//! checkpoint against a full replay from earliest, what checkpoints cost to
//! write and store, and what checkpointing takes from ingest.
//!
//! 1. **Preload** a generated history to fresh topics on a real broker, until
//!    about `documents` documents are live.
//! 2. **Replay without a state directory** from earliest, until ready: the
//!    ingest rate with no checkpoints (run before and after 3, averaged: a
//!    broker serves a second read of the same records faster).
//! 3. **Replay with a state directory**, checkpointing every
//!    `checkpoint_interval` while it ingests, until ready: the ingest rate
//!    with checkpoints (the loss against 2 is the cost of checkpointing), and
//!    the clean stop's checkpoint: its write time and size per live document.
//! 4. **Restart from that checkpoint**, until ready: restore time, against
//!    the replay of 2.

use std::time::{Duration, Instant};

use super::broker::BenchBroker;
use anyhow::Result;
use serde::Serialize;
use trimatch::pipeline::{DurabilityConfig, Pipeline, PipelineConfig};
use trimatch_connectors::source::now_ms;
use trimatch_connectors::SourceConfig;
use trimatch_workload::{Present, ProduceLimits, Workload, WorkloadConfig, WorkloadProducer};

/// The shape of a restart run.
#[derive(Clone, Debug, Serialize)]
pub struct RestartConfig {
    /// A running broker; `None` starts librdkafka's mock cluster (which keeps
    /// only 5 MB per partition: small runs only).
    pub brokers: Option<String>,
    pub broker_name: String,
    pub partitions: i32,
    pub workers: usize,
    /// Live documents to reach (the history has more messages: updates).
    pub documents: usize,
    pub tenants: usize,
    pub checkpoint_interval: Duration,
    pub seed: u64,
}

/// What a restart run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RestartReport {
    pub config: RestartConfig,
    pub broker: String,
    pub messages: u64,
    pub live_documents: u64,
    /// The mean of the replays without a state directory, before and after
    /// the one with.
    pub replay_seconds: f64,
    pub replay_before_seconds: f64,
    pub replay_after_seconds: f64,
    pub replay_messages_per_second: f64,
    pub replay_with_checkpoints_seconds: f64,
    pub replay_with_checkpoints_messages_per_second: f64,
    /// 1 − (rate with checkpoints / rate without).
    pub checkpointing_ingest_loss: f64,
    pub checkpoints_during_replay: u64,
    pub checkpoint_documents: u64,
    pub checkpoint_write_seconds: f64,
    pub checkpoint_bytes: u64,
    pub checkpoint_bytes_per_document: f64,
    pub restore_seconds: f64,
    pub restore_load_seconds: f64,
    /// Replay time / restore time.
    pub restore_speedup: f64,
}

/// Runs the restart benchmark.
pub fn run(config: &RestartConfig) -> Result<RestartReport> {
    let bench_broker = BenchBroker::new(config.brokers.as_deref(), &config.broker_name)?;
    let (brokers, broker) = (
        bench_broker.brokers.clone(),
        bench_broker.description.clone(),
    );
    let topics = bench_broker.fresh_topics("bench-restart", config.partitions)?;
    let state = std::env::temp_dir().join(format!("trimatch-bench-restart-{}", now_ms()));

    // 1. Preload until `documents` are live.
    let mut workload = Workload::new(WorkloadConfig {
        seed: config.seed,
        tenants: config.tenants,
        bad_share: 0.0,
        live_pos_per_tenant: 1_000_000,
        policy_share: 0.0,
        ..WorkloadConfig::default()
    });
    let producer = WorkloadProducer::new(&brokers, topics.clone(), &[])?;
    let mut live = Present::keeping(|_| ());
    let mut messages = 0u64;
    eprintln!("preloading until {} documents are live…", config.documents);
    let never = std::sync::atomic::AtomicBool::new(false);
    while live.len() < config.documents {
        let chunk: Vec<_> = workload.by_ref().take(50_000).collect();
        let sent = producer.run_observed(
            chunk.into_iter(),
            &ProduceLimits::default(),
            &never,
            |message, _| {
                live.apply(message);
            },
        )?;
        messages += sent.sent;
    }
    producer.flush(Duration::from_secs(120))?;
    let live_documents = live.len() as u64;

    let pipeline_config = |durability: Option<DurabilityConfig>| {
        let mut source = SourceConfig::new(&brokers);
        source.topics = topics.clone();
        let mut pipeline = PipelineConfig::new(source);
        pipeline.workers = config.workers;
        pipeline.retention = Duration::from_secs(5);
        pipeline.ready_max_lag = u64::MAX;
        pipeline.durability = durability;
        pipeline
    };
    let until_ready = |pipeline: &Pipeline| -> Result<f64> {
        let started = Instant::now();
        while !pipeline.is_ready() {
            if let Some(error) = pipeline.error() {
                anyhow::bail!("the pipeline failed: {error}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(started.elapsed().as_secs_f64())
    };

    // 2. Replay without checkpoints, before and after the checkpointing one
    // (3): the broker serves a second read of the same records faster, so
    // the cost of checkpointing is measured against the mean of both.
    let replay = || -> Result<f64> {
        eprintln!("replay from earliest, no state directory…");
        let started = Instant::now();
        let pipeline = Pipeline::start(pipeline_config(None))?;
        until_ready(&pipeline)?;
        let seconds = started.elapsed().as_secs_f64();
        pipeline.shutdown()?;
        Ok(seconds)
    };
    let replay_before = replay()?;

    // 3. Replay with checkpoints, then a clean stop's checkpoint.
    eprintln!("replay from earliest, checkpointing…");
    let durability = DurabilityConfig::new(&state, config.checkpoint_interval);
    let started = Instant::now();
    let pipeline = Pipeline::start(pipeline_config(Some(durability.clone())))?;
    until_ready(&pipeline)?;
    let replay_with_checkpoints_seconds = started.elapsed().as_secs_f64();
    let metrics = pipeline
        .handle()
        .checkpoints()
        .cloned()
        .expect("a state directory");
    let load =
        |value: &std::sync::atomic::AtomicU64| value.load(std::sync::atomic::Ordering::SeqCst);
    let checkpoints_during_replay = load(&metrics.written);
    pipeline.shutdown()?;
    let checkpoint_write_seconds = load(&metrics.last_duration_micros) as f64 / 1e6;
    let checkpoint_bytes = load(&metrics.last_bytes);
    let checkpoint_documents = load(&metrics.last_documents);

    let replay_after = replay()?;
    let replay_seconds = (replay_before + replay_after) / 2.0;

    // 4. Restart from the checkpoint.
    eprintln!("restart from the checkpoint…");
    let started = Instant::now();
    let pipeline = Pipeline::start(pipeline_config(Some(durability)))?;
    until_ready(&pipeline)?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let metrics = pipeline
        .handle()
        .checkpoints()
        .cloned()
        .expect("a state directory");
    let restore_load_seconds = load(&metrics.restore_micros) as f64 / 1e6;
    pipeline.shutdown()?;
    let _ = std::fs::remove_dir_all(&state);

    let rate = |seconds: f64| messages as f64 / seconds;
    Ok(RestartReport {
        config: config.clone(),
        broker,
        messages,
        live_documents,
        replay_seconds,
        replay_before_seconds: replay_before,
        replay_after_seconds: replay_after,
        replay_messages_per_second: rate(replay_seconds),
        replay_with_checkpoints_seconds,
        replay_with_checkpoints_messages_per_second: rate(replay_with_checkpoints_seconds),
        checkpointing_ingest_loss: 1.0 - replay_seconds / replay_with_checkpoints_seconds,
        checkpoints_during_replay,
        checkpoint_documents,
        checkpoint_write_seconds,
        checkpoint_bytes,
        checkpoint_bytes_per_document: checkpoint_bytes as f64 / checkpoint_documents.max(1) as f64,
        restore_seconds,
        restore_load_seconds,
        restore_speedup: replay_seconds / restore_seconds,
    })
}

/// The human summary.
pub fn summary(report: &RestartReport) -> Vec<String> {
    vec![
        format!(
            "broker: {}; {} workers; {} messages, {} live documents",
            report.broker, report.config.workers, report.messages, report.live_documents
        ),
        format!(
            "replay from earliest: {:.1} s ({:.0} messages/s; mean of {:.1} s before and {:.1} s after the checkpointing one)",
            report.replay_seconds,
            report.replay_messages_per_second,
            report.replay_before_seconds,
            report.replay_after_seconds
        ),
        format!(
            "restart from a checkpoint: {:.1} s (loading it {:.1} s): {:.1}x faster than the replay",
            report.restore_seconds, report.restore_load_seconds, report.restore_speedup
        ),
        format!(
            "checkpoint of {} documents: written in {:.2} s, {:.1} MB ({:.0} bytes per document)",
            report.checkpoint_documents,
            report.checkpoint_write_seconds,
            report.checkpoint_bytes as f64 / 1e6,
            report.checkpoint_bytes_per_document
        ),
        format!(
            "ingest while checkpointing every {} s: {:.0} messages/s against {:.0} without ({} checkpoints; {:.1} % loss)",
            report.config.checkpoint_interval.as_secs(),
            report.replay_with_checkpoints_messages_per_second,
            report.replay_messages_per_second,
            report.checkpoints_during_replay,
            report.checkpointing_ingest_loss * 100.0
        ),
    ]
}
