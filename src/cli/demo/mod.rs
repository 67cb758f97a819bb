//! `trimatch demo`: the whole product in one command, with nothing to install.
//!
//! It starts an in-process Kafka-protocol broker (librdkafka's mock cluster)
//! with the input topics, produces a synthetic AP workload into it, runs the
//! pipeline and the Flight service, and shows a one-screen summary every
//! second. Any Kafka client can produce its own documents to the printed
//! bootstrap address; any Flight client can read from the printed address.
//! Twenty seconds in, it previews and produces a vendor's tolerance policy
//! (`demo/policy.rs`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rdkafka::mocking::MockCluster;
use trimatch_connectors::{SourceConfig, TopicConfig};
use trimatch_dataflows::model::DocumentKind;
use trimatch_dataflows::{OutputCollection, Row, Time};
use trimatch_workload::{ProduceLimits, Workload, WorkloadConfig, WorkloadProducer};

mod policy;

use super::print::readable_time;
use super::shutdown_signal;
use crate::output::filter::RowFilter;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineHandle};

#[derive(Args)]
pub struct DemoArgs {
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
    /// Address of the Arrow Flight service (loopback: the demo serves
    /// without authentication).
    #[arg(long, env = "TRIMATCH_FLIGHT_ADDR", default_value = "127.0.0.1:50051", value_parser = loopback_addr)]
    flight_addr: std::net::SocketAddr,
    /// Timely worker threads (two by default: the demo's broker, generator
    /// and readers share the machine with it).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// A loopback address: the demo has no authentication, so it never serves a
/// network (SPEC §9).
fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("expected HOST:PORT such as 127.0.0.1:50051, got {text:?}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "the demo serves without authentication, so only on loopback (e.g. 127.0.0.1:{}); \
             `trimatch serve` with --auth-file serves a network",
            addr.port()
        ));
    }
    Ok(addr)
}

impl From<DemoArgs> for DemoOptions {
    fn from(args: DemoArgs) -> Self {
        DemoOptions {
            rate: args.rate,
            tenants: args.tenants,
            duration: args.duration.map(Duration::from_secs_f64),
            seed: args.seed,
            flight_addr: args.flight_addr,
            workers: args.workers,
            partitions: 4,
        }
    }
}

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Generated messages per second.
    pub rate: f64,
    pub tenants: usize,
    /// Stop after this long (default: until Ctrl-C).
    pub duration: Option<Duration>,
    pub seed: u64,
    pub flight_addr: SocketAddr,
    pub workers: usize,
    /// Partitions per input topic.
    pub partitions: i32,
}

/// Runs the demo until Ctrl-C or the duration ends.
pub fn run(options: DemoOptions) -> Result<()> {
    let mock = MockCluster::new(1).context("cannot start the embedded Kafka broker")?;
    let brokers = mock.bootstrap_servers();
    for kind in DocumentKind::ALL {
        mock.create_topic(kind.default_topic(), options.partitions, 1)
            .with_context(|| format!("cannot create topic {}", kind.default_topic()))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let (brokers, stop, options) = (brokers.clone(), stop.clone(), options.clone());
        std::thread::Builder::new()
            .name("trimatch-generator".into())
            .spawn(move || {
                let topics = DocumentKind::ALL
                    .into_iter()
                    .map(TopicConfig::default_for)
                    .collect();
                let producer = WorkloadProducer::new(&brokers, topics, &[])?;
                let workload = Workload::new(WorkloadConfig {
                    seed: options.seed,
                    tenants: options.tenants,
                    ..WorkloadConfig::default()
                });
                let limits = ProduceLimits {
                    rate: Some(options.rate),
                    count: None,
                    duration: options.duration,
                };
                producer.run(workload, &limits, &stop)
            })?
    };

    let mut config = PipelineConfig::new(SourceConfig::new(&brokers));
    config.workers = options.workers;
    let retention = config.retention;
    let pipeline = Pipeline::start(config)?;
    let handle = pipeline.handle();
    let runtime = tokio::runtime::Runtime::new()?;
    {
        let (handle, stop, addr) = (pipeline.handle(), stop.clone(), options.flight_addr);
        let serving = async move {
            let shutdown = {
                let stop = stop.clone();
                async move {
                    while !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            if let Err(error) = crate::serve::flight::serve(addr, handle, retention, shutdown).await
            {
                eprintln!("trimatch: cannot serve Flight on {addr}: {error} (is another trimatch running? try --flight-addr)");
                stop.store(true, Ordering::SeqCst);
            }
        };
        runtime.spawn(serving);
    }
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            shutdown_signal().await;
            stop.store(true, Ordering::SeqCst);
        });
    }

    print_banner(&brokers, options.flight_addr);
    let started = Instant::now();
    let mut screen = Screen::new(std::io::stdout().is_terminal());
    let mut previous = (Instant::now(), 0u64);
    let mut moment = policy::PolicyMoment::default();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
        if options
            .duration
            .is_some_and(|duration| started.elapsed() >= duration)
        {
            break;
        }
        if let Some(error) = pipeline.error() {
            stop.store(true, Ordering::SeqCst);
            anyhow::bail!(error);
        }
        let summary = Summary::read(&handle, &mut previous);
        let mut text = summary.render(&brokers, options.flight_addr);
        if let Some(line) = moment.line(started.elapsed(), &handle, &brokers) {
            text.push_str(&format!("\npolicy preview  {line}\n"));
        }
        screen.show(&text)?;
    }
    stop.store(true, Ordering::SeqCst);
    let produced = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator panicked"))??;
    pipeline.shutdown()?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    println!(
        "\ntrimatch demo stopped after {:.0} s; {} messages produced.",
        started.elapsed().as_secs_f64(),
        produced.sent
    );
    drop(mock);
    Ok(())
}

fn print_banner(brokers: &str, flight: SocketAddr) {
    let trimatch = invocation();
    let flight_flag = if flight.to_string() == "127.0.0.1:50051" {
        String::new()
    } else {
        format!(" --flight-addr {flight}")
    };
    println!(
        "trimatch demo — a live three-way match over an embedded Kafka broker\n\
         \n\
         Kafka (produce your own documents here):  {brokers}\n\
         \x20   topics: purchase_orders, goods_receipts, invoices, match_policies, exception_resolutions, payments\n\
         Arrow Flight:                             grpc://{flight}\n\
         \n\
         In another terminal:\n\
         \x20   {trimatch} query exception_summary{flight_flag}\n\
         \x20   {trimatch} query match_exceptions --filter tenant_id=tenant-000 --limit 20{flight_flag}\n\
         \x20   {trimatch} subscribe match_exceptions --filter tenant_id=tenant-001{flight_flag}\n\
         \n\
         From Python (pip install pyarrow pandas):\n\
         \x20   import pyarrow.flight as flight\n\
         \x20   client = flight.connect(\"grpc://{flight}\")\n\
         \x20   df = client.do_get(flight.Ticket(b\"match_exceptions\")).read_pandas()\n\
         \n\
         Ctrl-C stops.\n"
    );
}

/// How to run this binary from the current directory: `trimatch` if that is
/// what the shell finds, else its path (e.g. `./target/release/trimatch`).
fn invocation() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "trimatch".to_string();
    };
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("trimatch") == exe));
    if on_path {
        return "trimatch".to_string();
    }
    match std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(|p| p.to_path_buf()))
    {
        Some(relative) => format!("./{}", relative.display()),
        None => exe.display().to_string(),
    }
}

/// One second's view of the job.
struct Summary {
    as_of: Option<Time>,
    changes_per_second: f64,
    consumed: u64,
    dead_lettered: u64,
    lag: u64,
    invoices: u64,
    in_exception: u64,
    /// Every blocking exception accepted by an analyst (SPEC §6).
    approved: u64,
    cancelled: u64,
    /// (type, exceptions, open ones, invoices), most exceptions first.
    top_exceptions: Vec<(String, u64, u64, u64)>,
    /// Invoices paid in full (within tolerance), and overpaid.
    paid: u64,
    overpaid: u64,
    /// Payment exceptions by type, most first.
    payment_exceptions: Vec<(String, u64)>,
    ready: bool,
}

impl Summary {
    fn read(handle: &PipelineHandle, previous: &mut (Instant, u64)) -> Summary {
        let counters = handle.metrics().snapshot();
        let consumed: u64 = counters.values().map(|counter| counter.consumed).sum();
        let elapsed = previous.0.elapsed().as_secs_f64().max(1e-3);
        let changes_per_second = consumed.saturating_sub(previous.1) as f64 / elapsed;
        *previous = (Instant::now(), consumed);
        let mut summary = Summary {
            as_of: handle.newest_complete(),
            changes_per_second,
            consumed,
            dead_lettered: counters.values().map(|counter| counter.dead_lettered).sum(),
            lag: counters.values().map(|counter| counter.lag()).sum(),
            invoices: 0,
            in_exception: 0,
            approved: 0,
            cancelled: 0,
            paid: 0,
            overpaid: 0,
            payment_exceptions: Vec::new(),
            top_exceptions: Vec::new(),
            ready: handle.is_ready(),
        };
        let Some(as_of) = summary.as_of else {
            return summary;
        };
        // Invoices whose `column` is `value`, as of the summary's time.
        let invoices_where = |column: &str, value: &str| -> u64 {
            let filter = serde_json::json!({ column: value });
            let filter = RowFilter::parse(
                OutputCollection::InvoiceMatches,
                filter.as_object().expect("an object"),
            )
            .expect("a column of invoice_matches");
            handle
                .count_where(OutputCollection::InvoiceMatches, as_of, &Arc::new(filter))
                .unwrap_or(0)
        };
        summary.invoices = handle
            .count(OutputCollection::InvoiceMatches, as_of)
            .unwrap_or(0);
        summary.in_exception = invoices_where("status", "exception");
        summary.approved = invoices_where("status", "approved");
        summary.paid = invoices_where("payment_status", "paid");
        summary.overpaid = invoices_where("payment_status", "overpaid");
        if let Ok(snapshot) = handle.read(
            OutputCollection::PaymentExceptions,
            Some(as_of),
            &Arc::default(),
            None,
        ) {
            let mut by_type: std::collections::BTreeMap<&str, u64> = Default::default();
            for row in &snapshot.rows {
                if let Row::PaymentException(row) = row {
                    *by_type.entry(row.exception_type.as_str()).or_default() += 1;
                }
            }
            let mut types: Vec<(String, u64)> = by_type
                .into_iter()
                .map(|(kind, count)| (kind.to_string(), count))
                .collect();
            types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            summary.payment_exceptions = types;
        }
        summary.cancelled = invoices_where("status", "cancelled");
        if let Ok(snapshot) = handle.read(
            OutputCollection::ExceptionSummary,
            Some(as_of),
            &Arc::default(),
            None,
        ) {
            let mut by_type: std::collections::BTreeMap<String, (u64, u64, u64)> =
                Default::default();
            for row in snapshot.rows {
                if let Row::ExceptionSummary(row) = row {
                    let entry = by_type
                        .entry(row.exception_type.as_str().to_string())
                        .or_default();
                    entry.0 += row.exception_count;
                    entry.1 += row.open_count;
                    entry.2 += row.invoice_count;
                }
            }
            let mut top: Vec<(String, u64, u64, u64)> = by_type
                .into_iter()
                .map(|(kind, (e, o, i))| (kind, e, o, i))
                .collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            top.truncate(6);
            summary.top_exceptions = top;
        }
        summary
    }

    fn render(&self, brokers: &str, flight: SocketAddr) -> String {
        let matched = self
            .invoices
            .saturating_sub(self.in_exception + self.approved + self.cancelled);
        let share = |part: u64| 100.0 * part as f64 / self.invoices.max(1) as f64;
        let mut text = format!(
            "trimatch demo   Kafka {brokers}   Flight grpc://{flight}\n\
             time {}   {}\n\n\
             document changes/s  {:>10.0}     consumed {:>10}   dead-lettered {:>6}   lag {:>6}\n\
             invoices            {:>10}     matched  {:>10} ({:.0}%)   in exception {:>6} ({:.0}%)   approved {}   cancelled {}\n\n\
             top exception types               exceptions       open   accepted   invoices\n",
            self.as_of
                .map(|time| format!("{} ({time})", readable_time(time)))
                .unwrap_or_else(|| "-".into()),
            if self.ready { "caught up" } else { "catching up" },
            self.changes_per_second,
            self.consumed,
            self.dead_lettered,
            self.lag,
            self.invoices,
            matched,
            share(matched),
            self.in_exception,
            share(self.in_exception),
            self.approved,
            self.cancelled,
        );
        for (kind, exceptions, open, invoices) in &self.top_exceptions {
            let accepted = exceptions.saturating_sub(*open);
            text.push_str(&format!(
                "  {kind:<30} {exceptions:>12} {open:>10} {accepted:>10} {invoices:>10}\n"
            ));
        }
        text.push_str(&format!(
            "\npaid in full {:>8}   overpaid {:>6}   payment exceptions:",
            self.paid, self.overpaid
        ));
        for (kind, count) in &self.payment_exceptions {
            text.push_str(&format!("  {kind} {count}"));
        }
        text.push('\n');
        text
    }
}

/// Redraws the summary in place on a terminal; appends otherwise.
struct Screen {
    terminal: bool,
    lines: usize,
}

impl Screen {
    fn new(terminal: bool) -> Self {
        Screen { terminal, lines: 0 }
    }

    fn show(&mut self, text: &str) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if self.terminal && self.lines > 0 {
            // Move up over the previous summary and clear to the end of the screen.
            write!(out, "\x1b[{}A\x1b[J", self.lines)?;
        }
        write!(out, "{text}")?;
        if !self.terminal {
            writeln!(out)?;
        }
        out.flush()?;
        self.lines = text.lines().count();
        Ok(())
    }
}
