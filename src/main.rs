//! The `trimatch` binary.
//!
//! * `demo` — everything in one process, on an embedded broker;
//! * `serve` — run the job against Kafka and serve it over Arrow Flight; with
//!   `--until-end --output DIR`, a bounded backfill that writes every
//!   collection to Parquet;
//! * `generate` — produce a synthetic AP workload to Kafka;
//! * `query` / `subscribe` — read a running trimatch over Arrow Flight;
//! * `validate` — check documents against the input contract (SPEC §1) exactly
//!   as the pipeline will, and print each rejection's reason.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

mod config_file;
use trimatch::client::{self, Format};
use trimatch::flight;
use trimatch::parquet_output::write_collections;
use trimatch::pipeline::{ClusterConfig, Pipeline, PipelineConfig, PipelineHandle};
use trimatch_connectors::admin::create_missing_topics;
use trimatch_connectors::generate::{Workload, WorkloadConfig};
use trimatch_connectors::produce::{ProduceLimits, WorkloadProducer};
use trimatch_connectors::{Envelope, SourceConfig, StartPosition, TopicConfig};
use trimatch_dataflows::decode::decode_document;
use trimatch_dataflows::model::{DocumentKind, Tolerances};

/// The dataflow allocates and frees many small rows; mimalloc does that far
/// cheaper than glibc's malloc (see the README's performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "trimatch",
    version,
    about = "Live three-way match (PO ↔ goods receipt ↔ invoice) over Kafka"
)]
struct Cli {
    /// Log format: text (for people) or json (one object per line).
    #[arg(long, global = true, env = "TRIMATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: an embedded Kafka broker, a synthetic
    /// workload, the matching job and its Flight service, with a live summary.
    Demo(DemoArgs),
    /// Run the matching job against Kafka.
    Serve(Box<ServeArgs>),
    /// Produce a synthetic accounts-payable workload to Kafka.
    Generate(GenerateArgs),
    /// Print a collection (a consistent snapshot) from a running trimatch.
    Query(QueryArgs),
    /// Print a collection's changes as they happen, with progress times.
    Subscribe(SubscribeArgs),
    /// Measure throughput, freshness, latency and memory (issue 6's harness).
    #[command(subcommand)]
    Bench(trimatch::bench::BenchCommand),
    /// Check JSON documents (one per line) against the input contract.
    Validate {
        /// The topic whose documents these are: purchase_orders, goods_receipts, invoices or match_policies.
        topic: String,
        /// Files to check (default: standard input).
        files: Vec<PathBuf>,
    },
}

/// Where the input topics are and what they hold.
#[derive(Args)]
struct TopicArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "TRIMATCH_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic of purchase orders.
    #[arg(long, env = "TRIMATCH_PO_TOPIC", default_value = "purchase_orders")]
    po_topic: String,
    /// Topic of goods receipts.
    #[arg(long, env = "TRIMATCH_RECEIPT_TOPIC", default_value = "goods_receipts")]
    receipt_topic: String,
    /// Topic of invoices and credit memos.
    #[arg(long, env = "TRIMATCH_INVOICE_TOPIC", default_value = "invoices")]
    invoice_topic: String,
    /// Topic of match policies.
    #[arg(long, env = "TRIMATCH_POLICY_TOPIC", default_value = "match_policies")]
    policy_topic: String,
    /// librdkafka settings passed through, e.g. -X security.protocol=SASL_SSL
    /// (in TRIMATCH_KAFKA_SETTINGS: one KEY=VALUE per line).
    #[arg(short = 'X', env = "TRIMATCH_KAFKA_SETTINGS", value_delimiter = '\n', value_name = "KEY=VALUE", value_parser = parse_setting)]
    client_settings: Vec<(String, String)>,
}

impl TopicArgs {
    fn topics(&self, envelopes: &[(String, Envelope)]) -> Vec<TopicConfig> {
        [
            (DocumentKind::PurchaseOrder, &self.po_topic),
            (DocumentKind::GoodsReceipt, &self.receipt_topic),
            (DocumentKind::Invoice, &self.invoice_topic),
            (DocumentKind::MatchPolicy, &self.policy_topic),
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
struct ServeArgs {
    #[command(flatten)]
    topics: TopicArgs,
    /// A TOML file with any of these settings (keys are the long option names
    /// with `_` for `-`; the command line wins, then TRIMATCH_… variables, then
    /// the file).
    #[arg(long, env = "TRIMATCH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Envelope of a topic, as TOPIC=upsert|debezium (default upsert).
    #[arg(long = "envelope", env = "TRIMATCH_ENVELOPE", value_delimiter = ',', value_name = "TOPIC=ENVELOPE", value_parser = parse_envelope)]
    envelopes: Vec<(String, Envelope)>,
    /// Where to start: earliest, latest, timestamp:<ms> or topic:partition:offset,...
    #[arg(long, env = "TRIMATCH_START", default_value = "earliest", value_parser = parse_start)]
    start: StartPosition,
    /// Read up to the high watermarks seen at start, write --output, and exit.
    #[arg(long, env = "TRIMATCH_UNTIL_END", requires = "output")]
    until_end: bool,
    /// Directory for the Parquet files of a bounded run (one per collection).
    #[arg(long, env = "TRIMATCH_OUTPUT", value_name = "DIR")]
    output: Option<PathBuf>,
    /// Also produce rejected messages to this topic.
    #[arg(long, env = "TRIMATCH_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// Wait for missing input topics instead of failing.
    #[arg(long, env = "TRIMATCH_WAIT_FOR_TOPICS")]
    wait_for_topics: bool,
    /// Timely worker threads.
    #[arg(long, env = "TRIMATCH_WORKERS", default_value_t = 1)]
    workers: usize,
    /// Address of the Arrow Flight service.
    #[arg(long, env = "TRIMATCH_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: std::net::SocketAddr,
    /// How far back (seconds) readers may ask for an `as_of`.
    #[arg(long, env = "TRIMATCH_RETENTION_SECONDS", default_value_t = 600)]
    retention_seconds: u64,
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
    #[arg(long, env = "TRIMATCH_DEAD_LETTER_CAPACITY", default_value_t = 10_000)]
    dead_letter_capacity: usize,
    /// Global default policy: price tolerance in percent of the PO price.
    #[arg(long, env = "TRIMATCH_PRICE_TOLERANCE_PCT", default_value = "0")]
    price_tolerance_pct: rust_decimal::Decimal,
    /// Global default policy: absolute price tolerance per unit.
    #[arg(long, env = "TRIMATCH_PRICE_TOLERANCE_ABS", default_value = "0")]
    price_tolerance_abs: rust_decimal::Decimal,
    /// Global default policy: quantity tolerance in percent.
    #[arg(long, env = "TRIMATCH_QTY_TOLERANCE_PCT", default_value = "0")]
    qty_tolerance_pct: rust_decimal::Decimal,
    /// Global default policy: absolute tolerance on an invoice's stated total.
    #[arg(long, env = "TRIMATCH_TOTAL_TOLERANCE_ABS", default_value = "0.01")]
    total_tolerance_abs: rust_decimal::Decimal,
}

#[derive(Args)]
struct DemoArgs {
    /// Generated document changes per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Number of tenants in the generated workload.
    #[arg(long, default_value_t = 5)]
    tenants: usize,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Address of the Arrow Flight service.
    #[arg(long, env = "TRIMATCH_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: std::net::SocketAddr,
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

#[derive(Args)]
struct QueryArgs {
    /// The collection: invoice_matches, match_exceptions, po_lines, exception_summary, dead_letters, source_progress.
    collection: String,
    /// Equality filter COLUMN=VALUE (repeatable; they AND together).
    #[arg(long = "filter", value_name = "COLUMN=VALUE", value_parser = parse_setting)]
    filters: Vec<(String, String)>,
    /// The logical time to read at (default: the newest complete time).
    #[arg(long)]
    as_of: Option<u64>,
    /// At most this many rows.
    #[arg(long)]
    limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Address of trimatch's Flight service.
    #[arg(long, env = "TRIMATCH_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: String,
}

#[derive(Args)]
struct SubscribeArgs {
    /// The collection to watch.
    collection: String,
    /// Equality filter COLUMN=VALUE (repeatable).
    #[arg(long = "filter", value_name = "COLUMN=VALUE", value_parser = parse_setting)]
    filters: Vec<(String, String)>,
    /// Resume from this progress time (no snapshot): every change at or after it.
    #[arg(long)]
    from: Option<u64>,
    /// Address of trimatch's Flight service.
    #[arg(long, env = "TRIMATCH_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: String,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    topics: TopicArgs,
    /// Messages per second (default: flat out).
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Seed of the workload (the same seed gives the same messages).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of tenants.
    #[arg(long, default_value_t = 5)]
    tenants: usize,
    /// Share of malformed messages, 0 to 1.
    #[arg(long, default_value_t = 0.01)]
    bad_share: f64,
    /// Create missing input topics with this many partitions first.
    #[arg(long, value_name = "N")]
    create_topics: Option<i32>,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

fn parse_envelope(text: &str) -> Result<(String, Envelope), String> {
    let (topic, envelope) = parse_setting(text)?;
    Ok((topic, envelope.parse()?))
}

fn parse_start(text: &str) -> Result<StartPosition, String> {
    text.parse()
}

fn main() -> ExitCode {
    if let Err(error) = config_file::load_into_environment(std::env::args_os()) {
        eprintln!("trimatch: {error:#}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let outcome = match cli.command {
        Command::Demo(args) => trimatch::demo::run(trimatch::demo::DemoOptions {
            rate: args.rate,
            tenants: args.tenants,
            duration: args.duration.map(Duration::from_secs_f64),
            seed: args.seed,
            flight_addr: args.flight_addr,
            workers: args.workers,
            partitions: 4,
        })
        .map(|()| true),
        Command::Serve(args) => serve(*args).map(|()| true),
        Command::Generate(args) => generate(args).map(|()| true),
        Command::Query(args) => query(args).map(|()| true),
        Command::Subscribe(args) => subscribe(args).map(|()| true),
        Command::Validate { topic, files } => validate_files(&topic, &files),
        Command::Bench(command) => trimatch::bench::run(command).map(|()| true),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("trimatch: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let mut source = SourceConfig::new(&args.topics.brokers);
    source.topics = args.topics.topics(&args.envelopes);
    source.start = args.start;
    source.until_end = args.until_end;
    source.dead_letter_topic = args.dead_letter_topic;
    source.wait_for_topics = args.wait_for_topics;
    source.client_settings = args.topics.client_settings;
    let mut config = PipelineConfig::new(source);
    config.workers = args.workers;
    config.retention = Duration::from_secs(args.retention_seconds);
    config.matching.dead_letter_capacity = args.dead_letter_capacity;
    config.matching.default_tolerances = Tolerances {
        price_tolerance_pct: args.price_tolerance_pct,
        price_tolerance_abs: args.price_tolerance_abs,
        qty_tolerance_pct: args.qty_tolerance_pct,
        total_tolerance_abs: args.total_tolerance_abs,
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
    let pipeline = Pipeline::start(config)?;
    if args.until_end {
        let state = pipeline.join()?;
        let output = args.output.context("--until-end needs --output DIR")?;
        for path in write_collections(&output, &state)? {
            println!("{}", path.display());
        }
        tracing::info!(as_of = state.as_of, "bounded run complete");
        return Ok(());
    }
    let handle = pipeline.handle();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
            let mut receiver = stop.subscribe();
            async move {
                let _ = receiver.recv().await;
            }
        };
        let metrics = trimatch::metrics::serve(
            args.metrics_addr,
            handle.clone(),
            handle.job_metrics().clone(),
            stopped(&stop),
        );
        let service = flight::TrimatchFlight::new(handle.clone(), retention)
            .with_peers(args.flight_peers.clone(), args.process_id);
        let flight = flight::serve_service(args.flight_addr, service, stopped(&stop));
        tracing::info!(flight = %args.flight_addr, metrics = %args.metrics_addr, "serving");
        let progress = catch_up_progress(handle.clone());
        let outcome = tokio::select! {
            result = flight => result.with_context(|| format!("cannot serve Flight on {}", args.flight_addr)),
            result = metrics => result.with_context(|| format!("cannot serve metrics on {}", args.metrics_addr)),
            _ = trimatch::shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
            _ = failed(handle.clone()) => Err(anyhow::anyhow!(handle.error().unwrap_or_default())),
        };
        let _ = stop.send(());
        progress.abort();
        outcome
    })?;
    pipeline.shutdown()
}

/// Resolves when the pipeline has failed.
async fn failed(handle: PipelineHandle) {
    while handle.error().is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// On a terminal, a progress bar while catching up to the high watermarks
/// seen at start: offsets consumed of the total, rate and ETA.
fn catch_up_progress(handle: PipelineHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "catching up {bar:40} {pos}/{len} messages  {per_sec}  ETA {eta}",
            )
            .expect("a valid template"),
        );
        while !handle.is_ready() {
            let partitions = handle.metrics().snapshot();
            let total: u64 = partitions
                .values()
                .map(|p| p.high_watermark.max(0) as u64)
                .sum();
            let done: u64 = partitions
                .values()
                .map(|p| p.next_offset.max(0) as u64)
                .sum();
            bar.set_length(total);
            bar.set_position(done);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bar.finish_and_clear();
        tracing::info!("caught up: ready");
    })
}

fn query(args: QueryArgs) -> Result<()> {
    let mut extra = serde_json::Map::new();
    if let Some(as_of) = args.as_of {
        extra.insert("as_of".to_string(), as_of.into());
    }
    if let Some(limit) = args.limit {
        extra.insert("limit".to_string(), limit.into());
    }
    let ticket = client::ticket("collection", &args.collection, &args.filters, extra);
    let runtime = tokio::runtime::Runtime::new()?;
    let mut stdout = std::io::stdout().lock();
    runtime.block_on(client::query(
        &args.flight_addr,
        ticket,
        args.format,
        &mut stdout,
    ))?;
    Ok(())
}

fn subscribe(args: SubscribeArgs) -> Result<()> {
    let mut extra = serde_json::Map::new();
    if let Some(from) = args.from {
        extra.insert("snapshot".to_string(), false.into());
        extra.insert("as_of".to_string(), from.into());
    }
    let ticket = client::ticket("subscribe", &args.collection, &args.filters, extra);
    let runtime = tokio::runtime::Runtime::new()?;
    let mut stdout = std::io::stdout().lock();
    runtime.block_on(client::subscribe(&args.flight_addr, ticket, &mut stdout))
}

fn generate(args: GenerateArgs) -> Result<()> {
    if let Some(partitions) = args.create_topics {
        let topics = args.topics.topics(&[]);
        let names: Vec<&str> = topics.iter().map(|topic| topic.name.as_str()).collect();
        let created = create_missing_topics(
            &args.topics.brokers,
            &names,
            partitions,
            &args.topics.client_settings,
        )?;
        for topic in created {
            tracing::info!(topic, partitions, "created topic");
        }
    }
    let producer = WorkloadProducer::new(
        &args.topics.brokers,
        args.topics.topics(&[]),
        &args.topics.client_settings,
    )?;
    let workload = Workload::new(WorkloadConfig {
        seed: args.seed,
        tenants: args.tenants,
        bad_share: args.bad_share,
        ..WorkloadConfig::default()
    });
    let limits = ProduceLimits {
        rate: args.rate,
        count: args.count,
        duration: args.duration.map(Duration::from_secs_f64),
    };
    if limits.count.is_none() && limits.duration.is_none() {
        tracing::info!("producing until interrupted (give --count or --duration to stop)");
    }
    let stop = AtomicBool::new(false);
    let report = producer.run(workload, &limits, &stop)?;
    println!(
        "produced {} messages ({} malformed) in {:.1}s ({:.0}/s)",
        report.sent,
        report.malformed,
        report.elapsed.as_secs_f64(),
        report.sent as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn validate_files(topic: &str, files: &[PathBuf]) -> Result<bool> {
    let kind = DocumentKind::ALL
        .into_iter()
        .find(|kind| kind.default_topic() == topic)
        .with_context(|| {
            format!("unknown topic {topic:?}: expected purchase_orders, goods_receipts, invoices or match_policies")
        })?;
    let mut all_valid = true;
    if files.is_empty() {
        all_valid &= validate(kind, "<stdin>", BufReader::new(std::io::stdin()))?;
    }
    for path in files {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        all_valid &= validate(kind, &path.display().to_string(), BufReader::new(file))?;
    }
    Ok(all_valid)
}

/// Validates every non-empty line of `input`; returns whether all were valid.
fn validate(kind: DocumentKind, name: &str, input: impl BufRead) -> Result<bool> {
    let mut all_valid = true;
    for (index, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match decode_document(kind, line.as_bytes()) {
            Ok(_) => println!("{name}:{}: ok", index + 1),
            Err(reason) => {
                all_valid = false;
                println!("{name}:{}: rejected: {reason}", index + 1);
            }
        }
    }
    Ok(all_valid)
}
