//! `trimatch serve`: the matching job against Kafka, served over Arrow Flight
//! with Prometheus metrics and health endpoints; with `--until-end --output
//! DIR`, a bounded backfill that writes every collection to Parquet.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use trimatch_connectors::retention;
use trimatch_connectors::{Envelope, SourceConfig, StartPosition, TopicConfig};
use trimatch_dataflows::model::{DocumentKind, Tolerances};

use super::bounded::run_bounded;
use super::progress::{start_with_restore_progress, CatchUpProgress};
use super::security::SecurityArgs;
use super::{parse_envelope, parse_setting, parse_start, shutdown_signal};
use crate::pipeline::cluster::ClusterToken;
use crate::pipeline::{ClusterConfig, DurabilityConfig, PipelineConfig, PipelineHandle};
use crate::serve::http;
use crate::serve::metrics::Metrics;
use crate::serve::{flight, flight_sql};

/// Where the input topics are and what they hold.
#[derive(Args)]
pub struct TopicArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TRIMATCH_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic of purchase orders.
    #[arg(long, env = "TRIMATCH_PO_TOPIC", default_value = "purchase_orders")]
    pub po_topic: String,
    /// Topic of goods receipts.
    #[arg(long, env = "TRIMATCH_RECEIPT_TOPIC", default_value = "goods_receipts")]
    pub receipt_topic: String,
    /// Topic of invoices and credit memos.
    #[arg(long, env = "TRIMATCH_INVOICE_TOPIC", default_value = "invoices")]
    pub invoice_topic: String,
    /// Topic of match policies.
    #[arg(long, env = "TRIMATCH_POLICY_TOPIC", default_value = "match_policies")]
    pub policy_topic: String,
    /// Topic of analysts' exception resolutions (SPEC §6).
    #[arg(
        long,
        env = "TRIMATCH_RESOLUTION_TOPIC",
        default_value = "exception_resolutions"
    )]
    pub resolution_topic: String,
    /// Topic of payments to vendors (SPEC §8).
    #[arg(long, env = "TRIMATCH_PAYMENT_TOPIC", default_value = "payments")]
    pub payment_topic: String,
    /// librdkafka settings passed through, e.g. -X security.protocol=SASL_SSL
    /// (in TRIMATCH_KAFKA_SETTINGS: one KEY=VALUE per line).
    #[arg(short = 'X', env = "TRIMATCH_KAFKA_SETTINGS", value_delimiter = '\n', value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub client_settings: Vec<(String, String)>,
}

impl TopicArgs {
    pub fn topics(&self, envelopes: &[(String, Envelope)]) -> Vec<TopicConfig> {
        [
            (DocumentKind::PurchaseOrder, &self.po_topic),
            (DocumentKind::GoodsReceipt, &self.receipt_topic),
            (DocumentKind::Invoice, &self.invoice_topic),
            (DocumentKind::MatchPolicy, &self.policy_topic),
            (DocumentKind::ExceptionResolution, &self.resolution_topic),
            (DocumentKind::Payment, &self.payment_topic),
        ]
        .into_iter()
        .map(|(kind, name)| TopicConfig {
            name: name.clone(),
            kind,
            envelope: envelopes
                .iter()
                .rev()
                .find(|(topic, _)| topic == name || topic == kind.default_topic())
                .map(|(_, envelope)| *envelope)
                .unwrap_or_default(),
        })
        .collect()
    }
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    topics: TopicArgs,
    #[command(flatten)]
    security: SecurityArgs,
    /// A TOML file with any of these settings (keys are the long option names
    /// with `_` for `-`; the command line wins, then TRIMATCH_… variables, then
    /// the file).
    #[arg(long, env = "TRIMATCH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Envelope of a topic, as TOPIC=upsert|debezium (default upsert).
    #[arg(long = "envelope", env = "TRIMATCH_ENVELOPE", value_delimiter = ',', value_name = "TOPIC=ENVELOPE", value_parser = parse_envelope)]
    envelopes: Vec<(String, Envelope)>,
    /// Where to start: earliest (the default), latest, timestamp:<ms> or
    /// topic:partition:offset,... Refused while --state-dir holds a
    /// checkpoint (the checkpoint says where to go on), unless --reset-state.
    #[arg(long, env = "TRIMATCH_START", value_parser = parse_start)]
    start: Option<StartPosition>,
    /// Keep durable state here: checkpoints of the present documents and the
    /// offsets they reflect, and a restart from the newest intact one.
    /// Without it, state is in memory only and a restart reads from --start.
    #[arg(long, env = "TRIMATCH_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How often to checkpoint (and once more at a clean shutdown).
    #[arg(long, env = "TRIMATCH_CHECKPOINT_INTERVAL_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_interval_seconds: u64,
    /// Discard the checkpoints in --state-dir and read the topics again from --start.
    #[arg(long, env = "TRIMATCH_RESET_STATE", requires = "state_dir")]
    reset_state: bool,
    /// Read up to the high watermarks seen at start, write --output, and exit.
    #[arg(long, env = "TRIMATCH_UNTIL_END", requires = "output")]
    until_end: bool,
    /// Directory for the Parquet files of a bounded run (one per collection).
    #[arg(long, env = "TRIMATCH_OUTPUT", value_name = "DIR")]
    output: Option<PathBuf>,
    /// With --until-end: hold about 1/N of the state at a time. The topics
    /// are read once to weigh the tenants, then once per pass, each pass
    /// matching a share of the tenants of about equal weight and appending
    /// its rows to the --output files. The files are the same as one pass's
    /// (no matching rule relates two tenants); a tenant is never split.
    #[arg(long, env = "TRIMATCH_TENANT_PASSES", default_value_t = 1, requires = "until_end",
          value_parser = at_least_one)]
    tenant_passes: usize,
    /// Also produce rejected messages to this topic.
    #[arg(long, env = "TRIMATCH_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// The largest input message (key and value, in bytes) applied; a larger
    /// one is dead-lettered with its size. Messages up to 64 MiB are fetched
    /// (so that one over this bound is dead-lettered, not stuck in its
    /// partition).
    #[arg(long, env = "TRIMATCH_MAX_MESSAGE_BYTES",
          default_value_t = trimatch_connectors::DEFAULT_MAX_MESSAGE_BYTES,
          value_parser = max_message_bytes)]
    max_message_bytes: usize,
    /// When the broker keeps not returning a partition's next record for
    /// this long (while it answers and holds later ones, and no consumer
    /// error is seen), that record is dead-lettered by its offset and
    /// reading goes on after it; 0 waits for good.
    #[arg(
        long,
        env = "TRIMATCH_SKIP_UNFETCHABLE_AFTER_SECONDS",
        default_value_t = 60
    )]
    skip_unfetchable_after_seconds: u64,
    /// Wait for missing input topics instead of failing.
    #[arg(long, env = "TRIMATCH_WAIT_FOR_TOPICS")]
    wait_for_topics: bool,
    /// Timely worker threads. The default is the number of cores this process
    /// may use (its CPU affinity and cgroup quota). Every process of a cluster
    /// must run the same number, and a checkpoint restores only into the
    /// shape that wrote it, so set it explicitly where hosts differ.
    #[arg(long, env = "TRIMATCH_WORKERS", default_value_t = available_cores(), value_parser = at_least_one)]
    workers: usize,
    /// Address of the Arrow Flight service.
    #[arg(long, env = "TRIMATCH_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: std::net::SocketAddr,
    /// How far back (seconds) readers may ask for an `as_of` (an
    /// `--until-end` run keeps no history: it is read once, at its end).
    #[arg(long, env = "TRIMATCH_RETENTION_SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=MAX_RETENTION_SECONDS))]
    retention_seconds: u64,
    /// Flight: DoGet and subscription streams open at once, in all; more are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TRIMATCH_MAX_STREAMS", default_value_t = 1024, value_parser = at_least_one)]
    max_streams: usize,
    /// Flight: streams one caller (an API token, a JWT subject) may hold
    /// open at once.
    #[arg(long, env = "TRIMATCH_MAX_STREAMS_PER_CALLER", default_value_t = 64, value_parser = at_least_one)]
    max_streams_per_caller: usize,
    /// Flight SQL: the most memory (MiB) one statement may hold, the rows it
    /// reads plus its joins, aggregates and sorts; a statement that needs
    /// more fails with RESOURCE_EXHAUSTED instead of growing the process.
    #[arg(long, env = "TRIMATCH_SQL_MEMORY_LIMIT_MB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    sql_memory_limit_mb: u64,
    /// Flight SQL: how long (seconds) a statement may plan and run, to its
    /// last batch; past it the statement stops with DEADLINE_EXCEEDED.
    #[arg(long, env = "TRIMATCH_SQL_DEADLINE_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    sql_deadline_seconds: u64,
    /// Flight SQL: statements that may plan or run at once; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TRIMATCH_SQL_MAX_RUNNING", default_value_t = 16, value_parser = at_least_one)]
    sql_max_running: usize,
    /// Flight SQL: statements one caller (an API token, a JWT subject) may
    /// plan or run at once.
    #[arg(long, env = "TRIMATCH_SQL_MAX_RUNNING_PER_CALLER", default_value_t = 4, value_parser = at_least_one)]
    sql_max_running_per_caller: usize,
    /// Flight SQL: threads of the pool statements run on, apart from the
    /// threads that serve Flight, the health endpoints and ingestion.
    #[arg(long, env = "TRIMATCH_SQL_THREADS", default_value_t = 2, value_parser = at_least_one)]
    sql_threads: usize,
    /// Flight SQL: the longest statement text accepted, in bytes.
    #[arg(long, env = "TRIMATCH_SQL_MAX_STATEMENT_BYTES", default_value_t = 64 * 1024, value_parser = at_least_one)]
    sql_max_statement_bytes: usize,
    /// Cluster mode: how many processes run the computation (timely's cluster).
    #[arg(long, env = "TRIMATCH_PROCESSES", default_value_t = 1)]
    processes: usize,
    /// Cluster mode: this process's index, from 0.
    #[arg(long, env = "TRIMATCH_PROCESS_ID", default_value_t = 0)]
    process_id: usize,
    /// Cluster mode: a file with every process's timely address (host:port), one per line, in process order.
    #[arg(long, env = "TRIMATCH_HOSTFILE", value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// Cluster mode: every process's Flight address, in process order, so that
    /// any process answers a snapshot with the whole state.
    #[arg(
        long,
        env = "TRIMATCH_FLIGHT_PEERS",
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    flight_peers: Vec<String>,
    /// Address of the Prometheus metrics, /healthz and /readyz endpoint.
    #[arg(long, env = "TRIMATCH_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    metrics_addr: std::net::SocketAddr,
    /// How many of the most recent rejected messages `dead_letters` keeps.
    #[arg(long, env = "TRIMATCH_DEAD_LETTER_CAPACITY", default_value_t = 10_000, value_parser = at_least_one)]
    dead_letter_capacity: usize,
    /// /healthz fails once no logical time has completed for this many
    /// seconds (the workers are stuck), so that an orchestrator restarts
    /// the process.
    #[arg(long, env = "TRIMATCH_STALL_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    stall_timeout_seconds: u64,
    /// /readyz fails while the inputs are more than this many messages
    /// behind, until the lag is back below half of it.
    #[arg(long, env = "TRIMATCH_READY_MAX_LAG", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    ready_max_lag: u64,
    /// /readyz fails once no checkpoint has been written for this many
    /// seconds (default: five checkpoint intervals, at least 300), as when
    /// the disk under --state-dir is full.
    #[arg(long, env = "TRIMATCH_READY_MAX_CHECKPOINT_AGE_SECONDS", requires = "state_dir",
          value_parser = clap::value_parser!(u64).range(1..))]
    ready_max_checkpoint_age_seconds: Option<u64>,
    /// When --state-dir holds checkpoints and none can be restored (all
    /// damaged), start empty and read the topics from --start, keeping them,
    /// instead of refusing to start.
    #[arg(long, env = "TRIMATCH_ALLOW_REPLAY_ON_DAMAGE", requires = "state_dir")]
    allow_replay_on_damage: bool,
    /// Fault injection for tests: each checkpoint write pauses this long
    /// before it commits (so a test can kill the process during one).
    #[arg(long, hide = true, default_value_t = 0, value_name = "MS")]
    fault_checkpoint_pause_ms: u64,
    /// Fault injection for tests: the worker with this index panics after
    /// its first batch.
    #[arg(long, hide = true, value_name = "WORKER")]
    fault_panic_worker: Option<usize>,
    /// Global default policy: price tolerance in percent of the PO price.
    #[arg(long, env = "TRIMATCH_PRICE_TOLERANCE_PCT", default_value = "0", value_parser = parse_tolerance)]
    price_tolerance_pct: rust_decimal::Decimal,
    /// Global default policy: absolute price tolerance per unit.
    #[arg(long, env = "TRIMATCH_PRICE_TOLERANCE_ABS", default_value = "0", value_parser = parse_tolerance)]
    price_tolerance_abs: rust_decimal::Decimal,
    /// Global default policy: quantity tolerance in percent.
    #[arg(long, env = "TRIMATCH_QTY_TOLERANCE_PCT", default_value = "0", value_parser = parse_tolerance)]
    qty_tolerance_pct: rust_decimal::Decimal,
    /// Global default policy: the cap on the price allowance (none by default).
    #[arg(long, env = "TRIMATCH_PRICE_TOLERANCE_MAX_ABS", value_parser = parse_tolerance)]
    price_tolerance_max_abs: Option<rust_decimal::Decimal>,
    /// Global default policy: absolute quantity tolerance.
    #[arg(long, env = "TRIMATCH_QTY_TOLERANCE_ABS", default_value = "0", value_parser = parse_tolerance)]
    qty_tolerance_abs: rust_decimal::Decimal,
    /// Global default policy: amount tolerance in percent (amount lines).
    #[arg(long, env = "TRIMATCH_AMOUNT_TOLERANCE_PCT", default_value = "0", value_parser = parse_tolerance)]
    amount_tolerance_pct: rust_decimal::Decimal,
    /// Global default policy: absolute amount tolerance (amount lines).
    #[arg(long, env = "TRIMATCH_AMOUNT_TOLERANCE_ABS", default_value = "0", value_parser = parse_tolerance)]
    amount_tolerance_abs: rust_decimal::Decimal,
    /// Global default policy: absolute tolerance on an invoice's stated total.
    #[arg(long, env = "TRIMATCH_TOTAL_TOLERANCE_ABS", default_value = "0.01", value_parser = parse_tolerance)]
    total_tolerance_abs: rust_decimal::Decimal,
}

/// `--max-message-bytes`: 1 byte up to what the consumer fetches.
fn max_message_bytes(text: &str) -> std::result::Result<usize, String> {
    let limit = trimatch_connectors::FETCH_MAX_BYTES;
    match text.parse::<usize>() {
        Ok(bytes) if (1..=limit).contains(&bytes) => Ok(bytes),
        _ => Err(format!("must be a number of bytes from 1 to {limit}")),
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    let mut source = SourceConfig::new(&args.topics.brokers);
    source.topics = args.topics.topics(&args.envelopes);
    source.start = args.start.clone().unwrap_or_default();
    source.until_end = args.until_end;
    source.dead_letter_topic = args.dead_letter_topic;
    source.wait_for_topics = args.wait_for_topics;
    source.client_settings = args.topics.client_settings;
    source.max_message_bytes = args.max_message_bytes;
    source.skip_unfetchable_after = (args.skip_unfetchable_after_seconds > 0)
        .then(|| Duration::from_secs(args.skip_unfetchable_after_seconds));
    let inspection = TopicInspection {
        brokers: source.brokers.clone(),
        topics: source
            .topics
            .iter()
            .map(|topic| topic.name.clone())
            .collect(),
        client_settings: source.client_settings.clone(),
    };
    let mut config = PipelineConfig::new(source);
    config.workers = args.workers;
    config.panic_worker = args.fault_panic_worker;
    config.stall_timeout = Duration::from_secs(args.stall_timeout_seconds);
    config.ready_max_lag = args.ready_max_lag;
    config.retention = Duration::from_secs(args.retention_seconds);
    config.matching.dead_letter_capacity = args.dead_letter_capacity;
    config.matching.default_tolerances = Tolerances {
        price_tolerance_pct: args.price_tolerance_pct,
        price_tolerance_abs: args.price_tolerance_abs,
        price_tolerance_max_abs: args.price_tolerance_max_abs,
        qty_tolerance_pct: args.qty_tolerance_pct,
        qty_tolerance_abs: args.qty_tolerance_abs,
        total_tolerance_abs: args.total_tolerance_abs,
        amount_tolerance_pct: args.amount_tolerance_pct,
        amount_tolerance_abs: args.amount_tolerance_abs,
    };
    if args.processes > 1 {
        let hostfile = args
            .hostfile
            .as_ref()
            .context("--processes > 1 needs --hostfile")?;
        let text = std::fs::read_to_string(hostfile)
            .with_context(|| format!("cannot read hostfile {}", hostfile.display()))?;
        config.cluster = Some(ClusterConfig::from_hostfile(
            &text,
            args.processes,
            args.process_id,
        )?);
        if args.flight_peers.len() != args.processes {
            bail!(
                "--processes {} needs --flight-peers with every process's Flight address in process order \
                 (got {})",
                args.processes,
                args.flight_peers.len()
            );
        }
    }
    let retention = config.retention;
    // Before anything connects: a configuration that would serve data
    // unprotected, or certificates that do not load, stop here.
    let security = if args.until_end {
        None
    } else {
        Some(
            args.security
                .load(args.flight_addr, args.metrics_addr, args.processes)?,
        )
    };
    if let (Some(cluster), Some(security)) = (&mut config.cluster, &security) {
        cluster.token = security.peer_link.cluster_token.clone().map(ClusterToken);
        check_cluster_protection(cluster, args.security.insecure_no_auth())?;
    }
    // Held until this function returns: no other process may use the
    // state directory meanwhile.
    let mut _state_dir_lock = None;
    if let Some(state_dir) = &args.state_dir {
        _state_dir_lock = Some(prepare_state_dir(
            state_dir,
            args.reset_state,
            args.start.is_some(),
        )?);
        let mut durability = DurabilityConfig::new(
            state_dir,
            Duration::from_secs(args.checkpoint_interval_seconds),
        );
        if let Some(seconds) = args.ready_max_checkpoint_age_seconds {
            durability.max_age = Duration::from_secs(seconds);
        }
        durability.allow_replay_on_damage = args.allow_replay_on_damage;
        durability.fault_commit_pause = Duration::from_millis(args.fault_checkpoint_pause_ms);
        config.durability = Some(durability);
    }
    let request_metrics = Metrics::new();
    if args.until_end {
        inspection.spawn(request_metrics);
        let output = args.output.context("--until-end needs --output DIR")?;
        return run_bounded(config, args.tenant_passes, &output);
    }
    let pipeline = start_with_restore_progress(config)?;
    inspection.spawn(request_metrics.clone());
    let security = security.expect("loaded unless --until-end");
    let handle = pipeline.handle();
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(async move {
        security.reload_on_signal();
        let flight_listener = tokio::net::TcpListener::bind(args.flight_addr)
            .await
            .with_context(|| format!("cannot listen for Flight on {}", args.flight_addr))?;
        let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {}", args.metrics_addr))?;
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
            let mut receiver = stop.subscribe();
            async move {
                let _ = receiver.recv().await;
            }
        };
        let metrics = http::serve(
            metrics_listener,
            security.http_tls.clone(),
            security.http_access.clone(),
            handle.clone(),
            request_metrics.clone(),
            stopped(&stop),
        );
        let service = flight::TrimatchFlight::new(handle.clone(), retention)
            .with_peers(args.flight_peers.clone(), args.process_id, security.peer_link.clone())
            .with_metrics(request_metrics)
            .with_stream_limits(args.max_streams, args.max_streams_per_caller)
            .with_auth(security.auth.clone(), security.audit)
            .with_sql(flight_sql::SqlSettings {
                memory_limit: (args.sql_memory_limit_mb as usize).saturating_mul(1 << 20),
                deadline: Duration::from_secs(args.sql_deadline_seconds),
                max_running: args.sql_max_running,
                max_running_per_caller: args.sql_max_running_per_caller,
                threads: args.sql_threads,
                max_statement_bytes: args.sql_max_statement_bytes,
            });
        let flight = flight::serve_service(flight_listener, security.flight_tls.clone(), service, stopped(&stop));
        tracing::info!(
            flight = %args.flight_addr,
            metrics = %args.metrics_addr,
            tls = security.flight_tls.is_some(),
            authentication = security.auth.is_enabled(),
            "serving"
        );
        let progress = CatchUpProgress::start(handle.clone());
        let outcome = tokio::select! {
            result = flight => result.with_context(|| format!("cannot serve Flight on {}", args.flight_addr)),
            result = metrics => result.with_context(|| format!("cannot serve metrics on {}", args.metrics_addr)),
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
            _ = failed(handle.clone()) => Err(anyhow::anyhow!(handle.error().unwrap_or_default())),
        };
        let _ = stop.send(());
        progress.finish();
        outcome
    });
    // Exit within a few seconds even if a worker is stuck (a dead cluster
    // peer): a failed process must end so that its orchestrator restarts it.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let stopped = pipeline.shutdown_within(SHUTDOWN_GRACE);
    outcome.and(stopped)
}

/// A cluster's processes prove the cluster token to each other: without one,
/// anyone who reaches a cluster port could join the computation, so only a
/// cluster on loopback addresses (or with --insecure-no-auth) runs without.
fn check_cluster_protection(cluster: &ClusterConfig, insecure: bool) -> Result<()> {
    if cluster.token.is_some() {
        return Ok(());
    }
    let exposed: Vec<&String> = cluster
        .addresses
        .iter()
        .filter(|address| {
            std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
                .map(|mut resolved| resolved.any(|address| !address.ip().is_loopback()))
                .unwrap_or(true)
        })
        .collect();
    if exposed.is_empty() {
        tracing::warn!(
            "the cluster's processes do not authenticate each other (no --cluster-token-file): any local \
             process could join the computation"
        );
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            ?exposed,
            "the cluster's processes do not authenticate each other (no --cluster-token-file, \
             --insecure-no-auth): anyone who reaches these addresses could join the computation"
        );
        return Ok(());
    }
    bail!(
        "refusing to run a cluster on {exposed:?} without --cluster-token-file: the processes prove that \
         token to each other, and without it anyone who reaches a cluster port could join the computation \
         and read its data (give the same secret to every process, or pass --insecure-no-auth)"
    )
}

/// Asks the broker, in the background, whether the input topics still hold
/// every document's latest version, warns loudly when one does not, and puts
/// the answer in the metrics and the `status` action. Topics that do not
/// exist yet (`--wait-for-topics`) are asked about again until they do.
struct TopicInspection {
    brokers: String,
    topics: Vec<String>,
    client_settings: Vec<(String, String)>,
}

impl TopicInspection {
    fn spawn(self, metrics: std::sync::Arc<Metrics>) {
        std::thread::Builder::new()
            .name("trimatch-topic-inspection".to_string())
            .spawn(move || {
                let mut warned = std::collections::BTreeSet::new();
                for _ in 0..INSPECTION_ATTEMPTS {
                    match retention::inspect_topics(&self.brokers, &self.topics, &self.client_settings, Duration::from_secs(10)) {
                        Ok(inspected) => {
                            for topic in inspected.iter().filter(|topic| topic.history_deleted()) {
                                if warned.insert(topic.topic.clone()) {
                                    let (partition, low) = topic
                                        .low_watermarks
                                        .iter()
                                        .find(|(_, low)| **low > 0)
                                        .expect("deleted history has a low watermark above 0");
                                    tracing::warn!(
                                        topic = %topic.topic,
                                        cleanup_policy = topic.cleanup_policy.as_deref().unwrap_or("unknown"),
                                        partition,
                                        low_watermark = low,
                                        "the input topic is not compacted and records below offset {low} of partition {partition} \
                                         are deleted: documents whose latest version was only there are missing from the state \
                                         (a PO last changed before then makes its invoices PO_NOT_FOUND). Set cleanup.policy=compact \
                                         on the input topics"
                                    );
                                }
                            }
                            let complete = inspected.len() == self.topics.len();
                            metrics.set_input_topics(inspected);
                            if complete {
                                return;
                            }
                        }
                        Err(error) => tracing::debug!(%error, "could not ask the broker about the input topics yet"),
                    }
                    std::thread::sleep(Duration::from_secs(10));
                }
            })
            .expect("a thread for the topic inspection");
    }
}

/// How often the topic inspection asks before giving up on missing topics
/// (every 10 s: about ten minutes).
const INSPECTION_ATTEMPTS: usize = 60;

/// The longest history readers may ask for: every change of it is kept in
/// memory.
const MAX_RETENTION_SECONDS: u64 = 86_400;

/// A count that must be at least one.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("expected a whole number, got {text:?}")),
    }
}

/// A tolerance of the default policy: a decimal ≥ 0 with at most 6
/// fractional digits, as in a policy document (SPEC §1.2).
fn parse_tolerance(text: &str) -> Result<rust_decimal::Decimal, String> {
    let value: rust_decimal::Decimal = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a decimal such as 0.05, got {text:?}"))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("a tolerance cannot be negative, got {text}"));
    }
    if value.normalize().scale() > 6 {
        return Err(format!("at most 6 fractional digits, got {text}"));
    }
    Ok(value)
}

/// The cores this process may use, as the standard library reads them
/// (affinity mask and cgroup CPU quota); one if that cannot be told.
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How long `serve` waits for its workers to stop before it exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Resolves when the pipeline has failed.
async fn failed(handle: PipelineHandle) {
    while handle.error().is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Takes the state directory for this process (refused if another holds
/// it); `--reset-state` empties it; otherwise an explicit `--start` is
/// refused while it holds a checkpoint.
fn prepare_state_dir(
    dir: &std::path::Path,
    reset: bool,
    start_given: bool,
) -> Result<trimatch_state::StateDirLock> {
    let lock = trimatch_state::StateDirLock::take(dir)?;
    let state = trimatch_state::StateDir::open(dir)?;
    if reset {
        let removed = state.reset()?;
        tracing::warn!(
            removed,
            dir = %dir.display(),
            "--reset-state: discarded the checkpoints; reading the topics from --start"
        );
        return Ok(lock);
    }
    if start_given && !state.generations()?.is_empty() {
        bail!(
            "--start is refused: {} holds a checkpoint, and a restart goes on from its offsets. \
             Drop --start to go on from the checkpoint, or add --reset-state to discard it and \
             read from --start",
            dir.display()
        );
    }
    Ok(lock)
}
