//! Shared support for the end-to-end tests: a real broker process (tansu),
//! librdkafka's mock cluster for fault injection, topics, producing a
//! generated history, and the plain evaluation of its final documents.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use trimatch::pipeline::{Pipeline, PipelineConfig};
use trimatch_connectors::admin::create_missing_topics;
use trimatch_connectors::{SourceConfig, TopicConfig};
use trimatch_dataflows::model::{Document, DocumentKind, Fingerprint, Tolerances};
use trimatch_dataflows::{OutputCollection, Row, Time};
use trimatch_workload::{GeneratedMessage, Present, Workload, WorkloadConfig, WorkloadProducer};

#[path = "../../dataflows/tests/common/mod.rs"]
pub mod common;

pub mod certs;
pub mod cluster;
pub mod secured;

pub use common::oracle;
pub use common::Snapshot;

/// `trimatch serve` on 2 workers reading the default topics of `brokers`,
/// once its /readyz says ready: the process (killed when dropped) and its
/// Flight address.
pub fn start_ready_serve(brokers: &str) -> (KillOnDrop, String) {
    let (flight, metrics) = (free_addr(), free_addr());
    let serve = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args(["serve", "--brokers", brokers, "--workers", "2"])
            .args(["--flight-addr", &flight, "--metrics-addr", &metrics])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready("readiness", &metrics, Duration::from_secs(60));
    (serve, flight)
}

/// A child process (a `trimatch` under test) that is killed when dropped, so a
/// failing test does not leave it running.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// The child, for a test that stops it and waits for it itself.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("the child is present until dropped")
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("the child is present until dropped")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is present until dropped")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tansu broker process on a free loopback port, with its own SQLite data
/// directory; killed when dropped.
pub struct Tansu {
    pub address: String,
    port: u16,
    /// The port clients are told to connect to (a TLS terminator's, say).
    advertised_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The tansu binary: `$TRIMATCH_TANSU`, else where `.ci/run` installs it.
fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TRIMATCH_TANSU") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/trimatch/tansu/bin/tansu");
    assert!(
        cached.exists(),
        "the end-to-end tests need the tansu broker: run `bash .ci/run` once (it installs \
         tansu into ~/.cache/trimatch), or set TRIMATCH_TANSU to a tansu binary"
    );
    cached
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

impl Tansu {
    pub fn start() -> Tansu {
        let port = free_port();
        Tansu::start_on(port, port)
    }

    /// A broker that tells clients to connect to `advertised_port` on
    /// loopback (where a TLS terminator forwards to it).
    pub fn start_advertising(advertised_port: u16) -> Tansu {
        Tansu::start_on(free_port(), advertised_port)
    }

    fn start_on(port: u16, advertised_port: u16) -> Tansu {
        let mut tansu = Tansu {
            address: format!("127.0.0.1:{port}"),
            port,
            advertised_port,
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        tansu.launch();
        tansu
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("a log file");
        let child = Command::new(tansu_binary())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            // Relative to the working directory: tansu refuses an absolute path.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.address).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker process (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates topics with the given partition counts through the admin API.
pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    for (topic, partitions) in topics {
        let created = create_missing_topics(brokers, &[topic], *partitions, &[])
            .unwrap_or_else(|error| panic!("cannot create {topic}: {error}"));
        assert_eq!(created, vec![topic.to_string()], "{topic} existed already");
    }
}

/// The input topics with their default names and these partition counts.
pub fn create_input_topics(brokers: &str, partitions: [i32; 6]) {
    let topics: Vec<(&str, i32)> = DocumentKind::ALL
        .into_iter()
        .zip(partitions)
        .map(|(kind, count)| (kind.default_topic(), count))
        .collect();
    create_topics(brokers, &topics);
}

/// Produces `messages` in order and waits until all are acknowledged.
pub fn produce(brokers: &str, messages: &[GeneratedMessage]) {
    let topics = DocumentKind::ALL
        .into_iter()
        .map(TopicConfig::default_for)
        .collect();
    let producer = WorkloadProducer::new(brokers, topics, &[]).expect("producer");
    for message in messages {
        producer.send(message).expect("send");
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("all messages acknowledged");
}

/// The documents present after `messages`, applied in order: the last valid
/// version of each identity (rejected messages have no effect).
pub fn final_documents<'m>(
    messages: impl IntoIterator<Item = &'m GeneratedMessage>,
) -> BTreeMap<Fingerprint, Document> {
    Present::documents().apply_all(messages).into_map()
}

/// The plain evaluation of SPEC §2 over `documents` (details left out).
pub fn expected_state(documents: &BTreeMap<Fingerprint, Document>) -> Snapshot {
    oracle::evaluate(documents, &Tolerances::default())
}

/// The matching collections among `rows`, as a comparable snapshot (details left out).
pub fn matching_state(collections: &BTreeMap<OutputCollection, Vec<Row>>) -> Snapshot {
    let rows: Vec<(Row, isize)> = OutputCollection::MATCHING
        .iter()
        .flat_map(|collection| collections.get(collection).cloned().unwrap_or_default())
        .map(|row| (row, 1))
        .collect();
    oracle::without_details(Snapshot::from_rows(rows))
}

/// A generated history of 3 tenants, 4 vendors each, 3 % bad messages.
pub fn history(seed: u64, count: usize) -> Vec<GeneratedMessage> {
    Workload::new(WorkloadConfig {
        seed,
        tenants: 3,
        vendors_per_tenant: 4,
        bad_share: 0.03,
        ..WorkloadConfig::default()
    })
    .take(count)
    .collect()
}

/// Per partition: (consumed, applied + dead-lettered + skipped, next offset).
pub fn partition_counters(pipeline: &Pipeline) -> BTreeMap<(String, i32), (u64, u64, i64)> {
    pipeline
        .metrics()
        .snapshot()
        .into_iter()
        .map(|(key, c)| {
            (
                key,
                (
                    c.consumed,
                    c.applied + c.dead_lettered + c.skipped,
                    c.next_offset,
                ),
            )
        })
        .collect()
}

/// A source reading the four default topics from `brokers`.
pub fn source_config(brokers: &str) -> SourceConfig {
    let mut config = SourceConfig::new(brokers);
    config.metadata_refresh = Duration::from_millis(500);
    config
}

/// A pipeline config with `workers` workers.
pub fn pipeline_config(source: SourceConfig, workers: usize) -> PipelineConfig {
    let mut config = PipelineConfig::new(source);
    config.workers = workers;
    config
}

/// Polls `condition` every 50 ms for up to `timeout`; panics with `what` if it never holds.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to `timeout`) until the metrics server at `metrics` answers
/// `/readyz` with 200: the process has caught up and serves.
pub fn wait_ready(what: &str, metrics: &str, timeout: Duration) {
    wait_for(what, timeout, || {
        http_get(metrics, "/readyz").is_some_and(|(status, _)| status == 200)
    });
}

/// Waits until the pipeline has consumed `count` messages in all, then until a
/// time after that is complete; returns that time, at which every consumed
/// message is reflected.
pub fn wait_until_reflected(pipeline: &Pipeline, count: u64) -> Time {
    let metrics = pipeline.metrics();
    wait_for(
        &format!("{count} messages consumed"),
        Duration::from_secs(60),
        || {
            metrics
                .snapshot()
                .values()
                .map(|counters| counters.consumed)
                .sum::<u64>()
                == count
        },
    );
    wait_until_complete_now(pipeline)
}

/// Waits until the current millisecond is complete — every batch sealed so far
/// is stamped at or before it — and returns it.
pub fn wait_until_complete_now(pipeline: &Pipeline) -> Time {
    // Logical times run ahead of the wall clock just after a restart.
    let as_of =
        (trimatch_connectors::source::now_ms() as Time).max(pipeline.handle().latest_input_time());
    wait_for(
        "a complete time after the last batch",
        Duration::from_secs(10),
        || {
            pipeline
                .newest_complete()
                .is_some_and(|newest| newest >= as_of)
        },
    );
    as_of
}

/// Every collection of a running pipeline at one time.
pub fn read_all(pipeline: &Pipeline, as_of: Time) -> BTreeMap<OutputCollection, Vec<Row>> {
    OutputCollection::ALL
        .into_iter()
        .map(|collection| {
            let snapshot = pipeline
                .handle()
                .read(collection, Some(as_of), &Default::default(), None)
                .unwrap_or_else(|error| panic!("read {}: {error:#}", collection.name()));
            (collection, snapshot.rows)
        })
        .collect()
}

/// The `source_progress` rows as (topic, partition) → (next_offset, high_watermark, lag).
pub fn progress(
    collections: &BTreeMap<OutputCollection, Vec<Row>>,
) -> BTreeMap<(String, i32), (i64, i64, u64)> {
    collections
        .get(&OutputCollection::SourceProgress)
        .into_iter()
        .flatten()
        .map(|row| match row {
            Row::SourceProgress(p) => (
                (p.topic.to_string(), p.partition),
                (p.next_offset, p.high_watermark, p.lag),
            ),
            other => panic!("not a progress row: {other:?}"),
        })
        .collect()
}

/// Asserts two states are equal, printing only the rows that differ.
pub fn assert_same_state(actual: &Snapshot, expected: &Snapshot, context: &str) {
    fn diff<T: std::fmt::Debug + Ord + Clone>(
        name: &str,
        actual: &[T],
        expected: &[T],
    ) -> Vec<String> {
        let actual: std::collections::BTreeSet<T> = actual.iter().cloned().collect();
        let expected: std::collections::BTreeSet<T> = expected.iter().cloned().collect();
        let mut lines = Vec::new();
        for row in actual.difference(&expected).take(5) {
            lines.push(format!("{name}: unexpected {row:?}"));
        }
        for row in expected.difference(&actual).take(5) {
            lines.push(format!("{name}: missing {row:?}"));
        }
        lines
    }
    let mut lines = Vec::new();
    lines.extend(diff(
        "invoice_matches",
        &actual.invoice_matches,
        &expected.invoice_matches,
    ));
    lines.extend(diff(
        "match_exceptions",
        &actual.match_exceptions,
        &expected.match_exceptions,
    ));
    lines.extend(diff("po_lines", &actual.po_lines, &expected.po_lines));
    lines.extend(diff(
        "exception_summary",
        &actual.exception_summary,
        &expected.exception_summary,
    ));
    assert!(
        lines.is_empty(),
        "{context}: states differ\n{}",
        lines.join("\n")
    );
    assert_eq!(actual, expected, "{context}");
}

/// The high watermark of every partition of every topic on `brokers`.
pub fn high_watermarks(brokers: &str) -> BTreeMap<(String, i32), i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-watermarks")
        .create()
        .unwrap();
    let mut watermarks = BTreeMap::new();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10))
                .unwrap();
            watermarks.insert((topic.name().to_string(), partition.id()), high);
        }
    }
    watermarks
}

/// Sample values of one metric by their label text, e.g. `topic="invoices",partition="0"`.
pub fn metric_samples(metrics: &str, name: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = match series.split_once('{') {
                Some((metric, labels)) if metric == name => {
                    labels.trim_end_matches('}').to_string()
                }
                None if series == name => String::new(),
                _ => return None,
            };
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// A plain HTTP/1.1 GET: (status, body), or `None` if nothing listens.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A free loopback address to listen on.
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .to_string()
}

/// Runs a check script of `tests/python/` with `python` and `envs`: fails
/// the test with its output unless it succeeds and its last line is `OK`;
/// returns what it printed.
pub fn run_python_check(python: &str, script: &str, envs: &[(&str, String)]) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python)
        .arg(&path)
        .envs(envs.iter().map(|(key, value)| (*key, value.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.trim_end().ends_with("OK"), "{stdout}");
    stdout
}

/// The audit's oversized-message reproduction, on the broker at `brokers`
/// (whose input topics exist, one partition each): a purchase order of
/// `size` at offset 0 of `purchase_orders/0`, ten valid ones behind it, and
/// a bounded run with `--max-message-bytes` 1 MiB (and unserved records
/// skipped after 5 s). The big one is dead-lettered with a reason that
/// contains `reason`, the ten are applied, and the partition ends where it
/// should (consumed = applied + dead-lettered).
///
/// 3 MiB arrives and is refused for its size (the mock cluster keeps at most
/// 5 MB a partition); the audit's 5 MiB is never returned by tansu, and is
/// dead-lettered unread by its offset.
pub fn an_oversized_message_is_dead_lettered_and_its_partition_goes_on(
    brokers: &str,
    size: usize,
    reason: &str,
) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let orders: Vec<GeneratedMessage> = history(81, 2_000)
        .into_iter()
        .filter(|message| message.kind == DocumentKind::PurchaseOrder && !message.malformed)
        .take(10)
        .collect();
    assert_eq!(orders.len(), 10);
    let mut big: serde_json::Value =
        serde_json::from_slice(orders[0].value.as_ref().unwrap()).unwrap();
    big["po_number"] = "PO-HUGE".into();
    big["note"] = "x".repeat(size).into();
    let big_value = serde_json::to_vec(&big).unwrap();
    let mut big_key: serde_json::Value =
        serde_json::from_slice(orders[0].key.as_ref().unwrap()).unwrap();
    big_key["po_number"] = "PO-HUGE".into();
    let big_key = serde_json::to_vec(&big_key).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", (8 << 20).to_string())
        .create()
        .unwrap();
    let topic = DocumentKind::PurchaseOrder.default_topic();
    producer
        .send(
            BaseRecord::to(topic)
                .partition(0)
                .key(&big_key)
                .payload(&big_value),
        )
        .map_err(|(error, _)| error)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    produce(brokers, &orders);

    let mut source = source_config(brokers);
    source.until_end = true;
    source.max_message_bytes = 1 << 20;
    source.skip_unfetchable_after = Some(Duration::from_secs(5));
    let pipeline = Pipeline::start(pipeline_config(source, 1)).unwrap();
    let metrics = pipeline.metrics();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(pipeline.join()));
    let state = finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the bounded run ends: the partition is not stuck behind the big message")
        .unwrap();
    let letters: Vec<(String, i32, i64, String)> = state.collections
        [&OutputCollection::DeadLetters]
        .iter()
        .filter_map(|row| match row {
            Row::DeadLetter(letter) => Some((
                letter.topic.to_string(),
                letter.partition,
                letter.offset,
                letter.reason.to_string(),
            )),
            _ => None,
        })
        .collect();
    assert!(
        letters.iter().any(|(t, p, o, letter_reason)| t == topic
            && *p == 0
            && *o == 0
            && letter_reason.contains(reason)),
        "{letters:?}"
    );
    let counters = metrics.snapshot();
    let orders_partition = &counters[&(topic.to_string(), 0)];
    assert_eq!(orders_partition.consumed, 11);
    assert_eq!(orders_partition.applied, 10);
    assert_eq!(orders_partition.dead_lettered, 1);
}
