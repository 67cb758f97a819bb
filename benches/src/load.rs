//! The end-to-end load harness: a broker, the pipeline, its Flight service and
//! real clients, in one process, measured.
//!
//! 1. **Preload.** Produce N generated messages to fresh topics (flat out).
//! 2. **Bare consumer.** A plain librdkafka consumer reads them all — the
//!    reference rate: what the broker can deliver to one client here.
//! 3. **Catch-up replay.** The pipeline starts from earliest; the time until
//!    every preloaded message is reflected in a complete snapshot gives the
//!    replay rate (also the end-to-end ingest rate, as a ratio to the bare
//!    consumer's). RSS before and after gives memory per live document line.
//! 4. **Sustained ingest.** Produce at a fixed rate (or flat out) for a while,
//!    with a Flight subscriber on `invoice_matches` and a client taking
//!    one-tenant `match_exceptions` snapshots in a loop. Freshness is the time
//!    from a new invoice's Kafka message timestamp to the subscriber seeing its
//!    row; snapshot latency is the DoGet's, first request to last byte.
//!
//! The broker is a separate process given by `--brokers` (a real Kafka or
//! tansu), or librdkafka's in-process mock cluster when none is given.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use trimatch_connectors::source::now_ms;
use trimatch_connectors::SourceConfig;
use trimatch_dataflows::model::DocumentKind;
use trimatch_workload::{GeneratedMessage, Present, Workload, WorkloadConfig};
use trimatch_workload::{ProduceLimits, WorkloadProducer};

use super::broker::BenchBroker;
use super::flight_clients::{snapshot_loop, subscribe_invoices, Awaited};
use super::kafka_reference::{bare_consumer_latency, bare_consumer_rate};
use super::measure::{resident_set, Latencies, Tail};
use trimatch::pipeline::{Pipeline, PipelineConfig};

/// The shape of a load run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadConfig {
    /// Bootstrap servers of a running broker; `None` starts the mock cluster.
    pub brokers: Option<String>,
    /// What the broker is, for the report ("tansu 0.6.0", "Apache Kafka 3.9", …).
    pub broker_name: String,
    /// Partitions per input topic.
    pub partitions: i32,
    /// Timely worker threads of the pipeline.
    pub workers: usize,
    /// Messages produced before the pipeline starts.
    pub preload: usize,
    /// Messages/s during the sustained phase; `None` is flat out.
    pub rate: Option<f64>,
    /// How long the sustained phase produces.
    pub duration: Duration,
    pub tenants: usize,
    /// Share of messages that change a tenant's match policy.
    pub policy_share: f64,
    pub seed: u64,
}

/// What a load run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub config: LoadConfig,
    pub broker: String,
    /// Preload production rate (flat out), messages/s.
    pub preload_produce_per_second: f64,
    /// The bare librdkafka consumer reading the preloaded topics, messages/s.
    pub bare_consumer_per_second: f64,
    /// Kafka timestamp → a bare consumer receiving it, at the sustained rate:
    /// the floor under the pipeline's freshness.
    pub bare_consumer_latency: Latencies,
    /// The pipeline reading the preload from earliest until it is reflected in
    /// a complete snapshot, messages/s.
    pub replay_per_second: f64,
    /// `replay_per_second / bare_consumer_per_second`.
    pub replay_ratio_to_bare_consumer: f64,
    pub live_documents: usize,
    pub live_document_lines: usize,
    pub rss_before_pipeline_bytes: u64,
    pub rss_after_preload_bytes: u64,
    /// (RSS after the preload − RSS before the pipeline) / live document lines.
    pub rss_per_live_line_bytes: f64,
    /// Messages produced in the sustained phase.
    pub sustained_produced: u64,
    /// Their production rate, messages/s.
    pub sustained_produce_per_second: f64,
    /// Produced messages / time from the phase's start until all are reflected.
    pub sustained_reflected_per_second: f64,
    /// New invoice's Kafka timestamp → its row seen by a Flight subscriber.
    pub freshness: Latencies,
    /// Every sustained-phase message's Kafka timestamp → the time that
    /// reflects it being complete (the pipeline's own histogram): the bucket
    /// bounds that p50 and p99 fall in, ms.
    pub engine_freshness_p50_le_ms: Option<f64>,
    pub engine_freshness_p99_le_ms: Option<f64>,
    /// One-tenant `match_exceptions` DoGet while ingesting.
    pub snapshot: Latencies,
    /// Rows per snapshot, on average.
    pub snapshot_rows: f64,
    pub peak_rss_bytes: u64,
}

/// The (tenant_id, invoice_id) of an invoice message with a value, from its key.
fn invoice_identity(message: &GeneratedMessage) -> Option<(String, String)> {
    if message.kind != DocumentKind::Invoice || message.value.is_none() {
        return None;
    }
    let key: serde_json::Value = serde_json::from_slice(message.key.as_deref()?).ok()?;
    Some((
        key.get("tenant_id")?.as_str()?.to_string(),
        key.get("invoice_id")?.as_str()?.to_string(),
    ))
}

/// Runs the load harness.
pub fn run(config: &LoadConfig) -> Result<LoadReport> {
    let bench_broker = BenchBroker::new(config.brokers.as_deref(), &config.broker_name)?;
    let (brokers, broker) = (
        bench_broker.brokers.clone(),
        bench_broker.description.clone(),
    );
    let topics = bench_broker.fresh_topics("bench", config.partitions)?;
    let names: Vec<&str> = topics.iter().map(|topic| topic.name.as_str()).collect();

    // 1. Preload.
    let mut workload = Workload::new(WorkloadConfig {
        seed: config.seed,
        tenants: config.tenants,
        bad_share: 0.0,
        live_pos_per_tenant: 5_000,
        policy_share: config.policy_share,
        ..WorkloadConfig::default()
    });
    let producer = WorkloadProducer::new(&brokers, topics.clone(), &[])?;
    let never = AtomicBool::new(false);
    let mut live = Present::line_counts();
    eprintln!("preloading {} messages to {broker}…", config.preload);
    let preload = producer.run_observed(
        workload.by_ref().take(config.preload),
        &ProduceLimits::default(),
        &never,
        |message, _| {
            live.apply(message);
        },
    )?;
    let preloaded = preload.sent;

    // 2. The bare consumer.
    eprintln!("bare consumer…");
    let bare_consumer_per_second = bare_consumer_rate(&brokers, &names, preloaded)?;

    // The broker's own delivery latency at the sustained rate: Kafka timestamp
    // → a bare consumer receiving the message, for a few seconds.
    eprintln!("bare consumer latency…");
    let bare_latency = bare_consumer_latency(
        &brokers,
        &names,
        &producer,
        workload.by_ref(),
        config.rate,
        Duration::from_secs(3),
    )?;
    let preloaded = preloaded + bare_latency.1;
    let bare_consumer_latency = bare_latency.0;

    // 3. Catch-up replay.
    eprintln!("replay from earliest…");
    let (rss_before_pipeline, _) = resident_set();
    let mut source = SourceConfig::new(&brokers);
    source.topics = topics;
    let mut pipeline_config = PipelineConfig::new(source);
    pipeline_config.workers = config.workers;
    // Reads in this run are all at the newest time.
    pipeline_config.retention = Duration::from_secs(5);
    let retention = pipeline_config.retention;
    let replay_started = Instant::now();
    let pipeline = Pipeline::start(pipeline_config)?;
    wait_until_reflected(&pipeline, preloaded, Duration::from_secs(600))?;
    let replay_seconds = replay_started.elapsed().as_secs_f64();
    let replay_per_second = preloaded as f64 / replay_seconds;
    let (rss_after_preload, _) = resident_set();

    // 4. Sustained ingest with a subscriber and snapshots.
    eprintln!("sustained ingest for {:?}…", config.duration);
    let runtime = tokio::runtime::Runtime::new()?;
    let flight_addr = free_local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (handle, stop) = (pipeline.handle(), stop.clone());
        runtime.spawn(async move {
            let shutdown = async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            if let Err(error) =
                trimatch::serve::flight::serve(flight_addr, handle, retention, shutdown).await
            {
                eprintln!("trimatch-bench: cannot serve Flight on {flight_addr}: {error}");
            }
        });
    }
    let awaited: Awaited = Arc::default();
    let freshness = Arc::new(Mutex::new(Vec::new()));
    let resume_from = pipeline
        .newest_complete()
        .context("no complete time after the replay")?;
    let subscriber = runtime.spawn(subscribe_invoices(
        flight_addr,
        resume_from,
        awaited.clone(),
        freshness.clone(),
        stop.clone(),
    ));
    let snapshots = runtime.spawn(snapshot_loop(
        flight_addr,
        "tenant-000".to_string(),
        stop.clone(),
    ));
    // Let the subscriber subscribe before anything is produced.
    std::thread::sleep(Duration::from_millis(500));

    let engine_freshness_before = pipeline.handle().counters().freshness.buckets();
    let sustained_started = Instant::now();
    let sustained = producer.run_observed(
        workload,
        &ProduceLimits {
            rate: config.rate,
            count: None,
            duration: Some(config.duration),
        },
        &never,
        |message, timestamp| {
            if let Some(identity) = invoice_identity(message) {
                awaited
                    .lock()
                    .expect("awaited lock")
                    .insert(identity, timestamp);
            }
        },
    )?;
    wait_until_reflected(
        &pipeline,
        preloaded + sustained.sent,
        Duration::from_secs(600),
    )?;
    let sustained_seconds = sustained_started.elapsed().as_secs_f64();
    // The subscriber sees the last changes shortly after they are complete.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (snapshot_latencies, snapshot_rows) = runtime
        .block_on(snapshots)
        .context("the snapshot client failed")??;
    runtime
        .block_on(subscriber)
        .context("the subscriber failed")??;
    let engine_freshness: Vec<(f64, u64)> = pipeline
        .handle()
        .counters()
        .freshness
        .buckets()
        .into_iter()
        .zip(engine_freshness_before)
        .map(|((bound, after), (_, before))| (bound * 1000.0, after - before))
        .collect();
    let (_, peak_rss) = resident_set();
    pipeline.shutdown()?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(bench_broker);

    let freshness = std::mem::take(&mut *freshness.lock().expect("freshness lock"));
    let lines = live.total_lines();
    Ok(LoadReport {
        config: config.clone(),
        broker,
        preload_produce_per_second: preloaded as f64 / preload.elapsed.as_secs_f64(),
        bare_consumer_per_second,
        bare_consumer_latency,
        replay_per_second,
        replay_ratio_to_bare_consumer: replay_per_second / bare_consumer_per_second,
        live_documents: live.len(),
        live_document_lines: lines,
        rss_before_pipeline_bytes: rss_before_pipeline,
        rss_after_preload_bytes: rss_after_preload,
        rss_per_live_line_bytes: rss_after_preload.saturating_sub(rss_before_pipeline) as f64
            / lines.max(1) as f64,
        sustained_produced: sustained.sent,
        sustained_produce_per_second: sustained.sent as f64 / sustained.elapsed.as_secs_f64(),
        sustained_reflected_per_second: sustained.sent as f64 / sustained_seconds,
        freshness: Latencies::of(freshness),
        engine_freshness_p50_le_ms: bucket_quantile(&engine_freshness, 0.50),
        engine_freshness_p99_le_ms: bucket_quantile(&engine_freshness, 0.99),
        snapshot: Latencies::of(snapshot_latencies),
        snapshot_rows,
        peak_rss_bytes: peak_rss,
    })
}

/// Waits until the pipeline has consumed `count` messages and a snapshot after
/// the last of them is complete.
fn wait_until_reflected(pipeline: &Pipeline, count: u64, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let metrics = pipeline.metrics();
    loop {
        if let Some(error) = pipeline.error() {
            bail!("the pipeline failed: {error}");
        }
        let consumed: u64 = metrics.snapshot().values().map(|c| c.consumed).sum();
        if consumed >= count {
            break;
        }
        if started.elapsed() > timeout {
            bail!("the pipeline consumed only {consumed} of {count} messages in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let now = now_ms() as u64;
    while pipeline.newest_complete().is_none_or(|newest| newest < now) {
        if started.elapsed() > timeout {
            bail!("no complete time after the last message in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn free_local_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The bound of the bucket that quantile `q` falls in, from per-bucket counts.
fn bucket_quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|(_, count)| count).sum();
    let rank = (q * total as f64).ceil() as u64;
    let mut cumulative = 0;
    buckets.iter().find_map(|(bound, count)| {
        cumulative += count;
        (total > 0 && cumulative >= rank).then_some(*bound)
    })
}

/// The human summary of a load report.
pub fn summary(report: &LoadReport) -> Vec<String> {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let target = match report.config.rate {
        Some(rate) => format!("at {rate:.0} messages/s"),
        None => "flat out".to_string(),
    };
    vec![
        format!("broker: {} ({} partitions per topic)", report.broker, report.config.partitions),
        format!(
            "preload: {} messages ({:.0}/s produced), {} live documents, {} live lines; \
             policy changes: {} of messages",
            report.config.preload,
            report.preload_produce_per_second,
            report.live_documents,
            report.live_document_lines,
            report.config.policy_share
        ),
        format!(
            "bare librdkafka consumer: {:.0} messages/s",
            report.bare_consumer_per_second
        ),
        format!(
            "bare consumer latency (Kafka timestamp → received) at the sustained rate: {}",
            report.bare_consumer_latency.describe(Tail::P99)
        ),
        format!(
            "catch-up replay (earliest → reflected): {:.0} messages/s = {:.2} × the bare consumer",
            report.replay_per_second, report.replay_ratio_to_bare_consumer
        ),
        format!(
            "memory: RSS {:.0} MiB before the pipeline, {:.0} MiB after the preload: {:.0} bytes per live document line; peak {:.0} MiB",
            mib(report.rss_before_pipeline_bytes),
            mib(report.rss_after_preload_bytes),
            report.rss_per_live_line_bytes,
            mib(report.peak_rss_bytes)
        ),
        format!(
            "sustained ({target}, {} workers): {} messages produced at {:.0}/s, reflected at {:.0}/s",
            report.config.workers,
            report.sustained_produced,
            report.sustained_produce_per_second,
            report.sustained_reflected_per_second
        ),
        format!(
            "freshness (Kafka timestamp → Flight subscriber): {}",
            report.freshness.describe(Tail::P99)
        ),
        format!(
            "freshness inside the pipeline (Kafka timestamp → complete time, bucket bounds): p50 ≤ {} ms, p99 ≤ {} ms",
            report.engine_freshness_p50_le_ms.map_or("?".to_string(), |ms| ms.to_string()),
            report.engine_freshness_p99_le_ms.map_or("?".to_string(), |ms| ms.to_string()),
        ),
        format!(
            "one-tenant match_exceptions snapshot ({:.0} rows): {}",
            report.snapshot_rows,
            report.snapshot.describe(Tail::P95)
        ),
    ]
}
