//! The Arrow Flight service through the arrow-flight client: every
//! collection, filters, `as_of`, `limit`, metadata, ListFlights / GetFlightInfo
//! / GetSchema, the status action, subscriptions across a reconnect, and every
//! error a person can make, each with a gRPC status that says what to do.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::DecodedPayload;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use futures::StreamExt;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{json, Value};
use support::*;
use tonic::Code;
use trimatch::output::columns::{change_schema, schema};
use trimatch::pipeline::{Pipeline, PipelineConfig};
use trimatch_connectors::source::now_ms;
use trimatch_dataflows::model::DocumentKind;
use trimatch_dataflows::OutputCollection;
use trimatch_workload::{GeneratedMessage, Workload, WorkloadConfig};

/// A mock cluster, a 2-worker pipeline on it, and its Flight service.
struct Service {
    mock: MockCluster<'static, DefaultProducerContext>,
    pipeline: Pipeline,
    addr: SocketAddr,
    sent: u64,
}

impl Service {
    fn start(configure: impl FnOnce(&mut PipelineConfig)) -> Service {
        let mock = MockCluster::new(1).unwrap();
        for kind in DocumentKind::ALL {
            mock.create_topic(kind.default_topic(), 2, 1).unwrap();
        }
        let mut config = pipeline_config(source_config(&mock.bootstrap_servers()), 2);
        configure(&mut config);
        let retention = config.retention;
        let pipeline = Pipeline::start(config).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let handle = pipeline.handle();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime
                .block_on(trimatch::serve::flight::serve(
                    addr,
                    handle,
                    retention,
                    std::future::pending(),
                ))
                .unwrap();
        });
        wait_for("the Flight port", Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Service {
            mock,
            pipeline,
            addr,
            sent: 0,
        }
    }

    /// Produces `messages` and waits until the pipeline reflects them; returns
    /// a time at which it does.
    fn produce(&mut self, messages: &[GeneratedMessage]) -> u64 {
        produce(&self.mock.bootstrap_servers(), messages);
        self.sent += messages.len() as u64;
        wait_until_reflected(&self.pipeline, self.sent)
    }

    async fn client(&self) -> FlightClient {
        trimatch::cli::connection::Connection::plain(&self.addr.to_string())
            .connect()
            .await
            .unwrap()
    }
}

fn history(seed: u64, count: usize) -> Vec<GeneratedMessage> {
    Workload::new(WorkloadConfig {
        seed,
        tenants: 3,
        bad_share: 0.02,
        ..WorkloadConfig::default()
    })
    .take(count)
    .collect()
}

/// A DoGet's batches and its schema metadata.
async fn get(
    client: &mut FlightClient,
    ticket: Value,
) -> Result<(Vec<RecordBatch>, BTreeMap<String, String>), FlightError> {
    let ticket = match ticket {
        Value::String(name) => name.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let mut stream = client.do_get(Ticket::new(ticket)).await?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    let metadata = stream
        .schema()
        .map(|schema| schema.metadata().clone().into_iter().collect())
        .unwrap_or_default();
    Ok((batches, metadata))
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The text values of a column over all batches.
fn text_column(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|batch| {
            let column = batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone();
            (0..column.len()).map(move |index| {
                column
                    .is_valid(index)
                    .then(|| column.value(index).to_string())
            })
        })
        .collect()
}

fn status_of(error: FlightError) -> tonic::Status {
    match error {
        FlightError::Tonic(status) => *status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_collection_filters_as_of_limit_and_metadata() {
    let mut service = Service::start(|_| {});
    let first = history(81, 1_500);
    let first_time = service.produce(&first);
    let expected = expected_state(&final_documents(&first));
    let mut client = service.client().await;

    // Every collection, with its schema and metadata.
    let counts = [
        (
            OutputCollection::InvoiceMatches,
            expected.invoice_matches.len(),
        ),
        (
            OutputCollection::MatchExceptions,
            expected.match_exceptions.len(),
        ),
        (OutputCollection::PoLines, expected.po_lines.len()),
        (
            OutputCollection::ExceptionSummary,
            expected.exception_summary.len(),
        ),
        (
            OutputCollection::DeadLetters,
            first.iter().filter(|m| m.malformed).count(),
        ),
        (OutputCollection::SourceProgress, 12),
    ];
    for (collection, count) in counts {
        let (batches, metadata) = get(&mut client, json!(collection.name())).await.unwrap();
        assert_eq!(rows(&batches), count, "{}", collection.name());
        if let Some(batch) = batches.first() {
            assert_eq!(
                batch.schema().fields(),
                schema(collection).fields(),
                "{}",
                collection.name()
            );
        }
        let as_of: u64 = metadata["trimatch.as_of"].parse().unwrap();
        assert!(as_of >= first_time);
        let offsets: BTreeMap<String, i64> =
            serde_json::from_str(&metadata["trimatch.offsets"]).unwrap();
        assert_eq!(offsets.len(), 12);
        assert_eq!(offsets.values().sum::<i64>() as u64, service.sent);
    }

    // Filters: equality on several columns, including a nullable one.
    let tenant = expected
        .match_exceptions
        .iter()
        .find(|row| row.exception_type.as_str() == "RECEIPT_MISSING")
        .map(|row| row.tenant_id.to_string())
        .expect("the history raises RECEIPT_MISSING");
    let tenant = tenant.as_str();
    let wanted = expected
        .match_exceptions
        .iter()
        .filter(|row| &*row.tenant_id == tenant && row.exception_type.as_str() == "RECEIPT_MISSING")
        .count();
    assert!(wanted > 0);
    let filter = json!({"collection": "match_exceptions",
                        "filter": {"tenant_id": tenant, "exception_type": "RECEIPT_MISSING"}});
    let (batches, _) = get(&mut client, filter).await.unwrap();
    assert_eq!(rows(&batches), wanted);
    assert!(text_column(&batches, "tenant_id")
        .iter()
        .all(|t| t.as_deref() == Some(tenant)));
    let headers = expected
        .match_exceptions
        .iter()
        .filter(|row| row.po_line_no.is_none())
        .count();
    let (batches, _) = get(
        &mut client,
        json!({"collection": "match_exceptions", "filter": {"po_line_no": null}}),
    )
    .await
    .unwrap();
    assert_eq!(rows(&batches), headers);

    // limit.
    let (batches, _) = get(&mut client, json!({"collection": "po_lines", "limit": 7}))
        .await
        .unwrap();
    assert_eq!(rows(&batches), 7);

    // as_of: after more documents, the earlier time still reads the earlier state.
    let (before, before_metadata) = get(
        &mut client,
        json!({"collection": "invoice_matches", "as_of": first_time}),
    )
    .await
    .unwrap();
    let second = history(82, 800);
    service.produce(&second);
    let (again, again_metadata) = get(
        &mut client,
        json!({"collection": "invoice_matches", "as_of": first_time}),
    )
    .await
    .unwrap();
    assert_eq!(before, again);
    assert_eq!(before_metadata, again_metadata);
    assert_eq!(again_metadata["trimatch.as_of"], first_time.to_string());
    let (now, now_metadata) = get(&mut client, json!("invoice_matches")).await.unwrap();
    let everything = expected_state(&final_documents(first.iter().chain(&second)));
    assert_eq!(rows(&now), everything.invoice_matches.len());
    assert_ne!(
        now_metadata["trimatch.offsets"],
        before_metadata["trimatch.offsets"]
    );

    // The status action.
    let mut results = client.do_action(Action::new("status", "")).await.unwrap();
    let status: Value = serde_json::from_slice(&results.next().await.unwrap().unwrap()).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(
        status["row_counts"]["invoice_matches"],
        everything.invoice_matches.len()
    );
    assert_eq!(status["offsets"].as_object().unwrap().len(), 12);
    assert!(status["time"].as_u64().unwrap() >= first_time);
    assert!(status["uptime_seconds"].as_f64().unwrap() > 0.0);

    // ListFlights, GetFlightInfo (path and command) and GetSchema.
    let infos: Vec<_> = client
        .list_flights("")
        .await
        .unwrap()
        .map(|info| info.unwrap())
        .collect()
        .await;
    assert_eq!(infos.len(), OutputCollection::ALL.len());
    let matches_info = infos
        .iter()
        .find(|info| info.flight_descriptor.as_ref().unwrap().path == vec!["invoice_matches"])
        .unwrap();
    assert_eq!(
        matches_info.total_records,
        everything.invoice_matches.len() as i64
    );
    let info = client
        .get_flight_info(FlightDescriptor::new_path(vec!["po_lines".to_string()]))
        .await
        .unwrap();
    assert_eq!(
        info.try_decode_schema().unwrap().fields(),
        schema(OutputCollection::PoLines).fields()
    );
    let command = json!({"subscribe": "match_exceptions"}).to_string();
    let fetched = client
        .get_schema(FlightDescriptor::new_cmd(command))
        .await
        .unwrap();
    assert_eq!(
        fetched.fields(),
        change_schema(OutputCollection::MatchExceptions).fields()
    );
    service.pipeline.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_say_what_went_wrong() {
    let mut service = Service::start(|config| {
        config.retention = Duration::from_secs(1);
        config.subscriber_backlog = 50;
    });
    let old = service.produce(&history(91, 300));
    let mut client = service.client().await;
    let cases = [
        (
            json!("match_exception"),
            Code::InvalidArgument,
            "unknown collection \"match_exception\"",
        ),
        (
            Value::String("{\"collection\": ".into()),
            Code::InvalidArgument,
            "not valid JSON",
        ),
        (
            json!({"collection": "po_lines", "filter": {"tenant": "x"}}),
            Code::InvalidArgument,
            "unknown filter column \"tenant\"",
        ),
        (
            json!({"collection": "po_lines", "filter": {"line_no": "one"}}),
            Code::InvalidArgument,
            "needs an integer",
        ),
    ];
    for (ticket, code, message) in cases {
        let status = status_of(get(&mut client, ticket.clone()).await.unwrap_err());
        assert_eq!(status.code(), code, "{ticket}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{ticket}: {}",
            status.message()
        );
    }
    // An as_of older than the retained history.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = status_of(
        get(&mut client, json!({"collection": "po_lines", "as_of": old}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("older than the retained history"),
        "{}",
        status.message()
    );
    // A subscriber that does not keep up is cut off with an error saying how to resume.
    let ticket = Ticket::new(json!({"subscribe": "po_lines"}).to_string());
    let mut stream = client.do_get(ticket).await.unwrap().into_inner();
    service.produce(&history(92, 3_000));
    let mut error = None;
    while let Some(message) = stream.next().await {
        if let Err(failure) = message {
            error = Some(status_of(failure));
            break;
        }
    }
    let status = error.expect("the slow subscriber is disconnected with an error");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("\"snapshot\": false"),
        "{}",
        status.message()
    );
    service.pipeline.shutdown().unwrap();
}

/// Reads a subscription until a progress time at or after `until`; returns the
/// rows of the snapshot part (as `+1` changes), the changes, and the last progress.
async fn follow(
    client: &mut FlightClient,
    ticket: Value,
    until: u64,
) -> (Vec<(String, u64, i64)>, u64) {
    let mut stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .unwrap()
        .into_inner();
    let mut changes = Vec::new();
    let mut last_progress = 0;
    while let Some(message) = stream.next().await {
        let message = message.unwrap();
        if let DecodedPayload::RecordBatch(batch) = message.payload {
            if let Ok(metadata) = serde_json::from_slice::<Value>(&message.inner.app_metadata) {
                let progress = metadata["progress"].as_u64().unwrap();
                assert!(progress > last_progress, "progress only moves forward");
                last_progress = progress;
                if progress >= until {
                    break;
                }
                continue;
            }
            let keys = text_column(std::slice::from_ref(&batch), "invoice_id");
            let times = batch
                .column_by_name("_time")
                .unwrap()
                .as_primitive::<UInt64Type>();
            let diffs = batch
                .column_by_name("_diff")
                .unwrap()
                .as_primitive::<Int64Type>();
            let statuses = text_column(std::slice::from_ref(&batch), "status");
            for index in 0..batch.num_rows() {
                let row = format!(
                    "{}:{}",
                    keys[index].clone().unwrap(),
                    statuses[index].clone().unwrap()
                );
                assert!(
                    times.value(index) >= last_progress,
                    "a change arrives before its progress"
                );
                changes.push((row, times.value(index), diffs.value(index)));
            }
        }
    }
    (changes, last_progress)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_across_a_reconnect_misses_and_repeats_nothing() {
    let mut service = Service::start(|_| {});
    service.produce(&history(101, 600));
    let mut client = service.client().await;

    // Snapshot, then live changes while more documents arrive.
    let subscribe = json!({"subscribe": "invoice_matches", "filter": {"tenant_id": "tenant-000"}});
    let producer = {
        let more = history(102, 600);
        let brokers = service.mock.bootstrap_servers();
        std::thread::spawn(move || produce(&brokers, &more))
    };
    let until = now_ms() as u64 + 1_500;
    let (mut changes, progress) = follow(&mut client, subscribe, until).await;
    producer.join().unwrap();
    service.sent += 600;
    assert!(
        changes.iter().any(|(_, _, diff)| *diff < 0),
        "live changes include retractions"
    );

    // Disconnected; more documents; resume from the last progress.
    let last = history(103, 600);
    let final_time = service.produce(&last);
    let resume = json!({"subscribe": "invoice_matches", "snapshot": false, "as_of": progress,
                        "filter": {"tenant_id": "tenant-000"}});
    let (resumed, end) = follow(&mut client, resume, final_time + 1).await;
    assert!(
        resumed.iter().all(|(_, time, _)| *time >= progress),
        "nothing before the resume point"
    );
    changes.extend(resumed);

    // Snapshot + every change = the state at the last progress: nothing missed, nothing repeated.
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    for (row, _, diff) in &changes {
        *state.entry(row.clone()).or_default() += diff;
    }
    state.retain(|_, count| *count != 0);
    assert!(
        state.values().all(|count| *count == 1),
        "a row counted twice: {state:?}"
    );
    let (batches, _) = get(
        &mut client,
        json!({"collection": "invoice_matches", "as_of": end - 1,
                                              "filter": {"tenant_id": "tenant-000"}}),
    )
    .await
    .unwrap();
    let ids = text_column(&batches, "invoice_id");
    let statuses = text_column(&batches, "status");
    let expected: BTreeMap<String, i64> = ids
        .into_iter()
        .zip(statuses)
        .map(|(id, status)| (format!("{}:{}", id.unwrap(), status.unwrap()), 1))
        .collect();
    assert_eq!(state, expected);
    service.pipeline.shutdown().unwrap();
}

/// `trimatch query` as a person meets it: the table is sorted by the
/// collection's key, so two runs over one state print the same lines; the
/// time is shown readably beside its epoch milliseconds; and a reader that
/// stops early (`| head`) ends it quietly.
#[test]
fn the_query_command_prints_sorted_rows_readable_times_and_stops_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    const TRIMATCH: &str = env!("CARGO_BIN_EXE_trimatch");
    let mut service = Service::start(|_| {});
    let as_of = service.produce(&history(5, 8_000));
    let flight = service.addr.to_string();
    let query = |format: &str| {
        let output = Command::new(TRIMATCH)
            .args(["query", "match_exceptions", "--flight-addr", &flight])
            .args(["--as-of", &as_of.to_string(), "--format", format])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let table = query("table");
    assert_eq!(
        table,
        query("table"),
        "two reads of one state print the same"
    );
    let footer = table.lines().last().unwrap();
    assert!(
        footer.ends_with(" UTC))") && footer.contains(&format!("as of {as_of} (")),
        "{footer}"
    );
    // JSON lines are in key order: (tenant_id, invoice_id, exception_type, po_line_no).
    let rows: Vec<Value> = query("json")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(rows.len() > 100, "{} exceptions", rows.len());
    let keys: Vec<(String, String, String, Option<i64>)> = rows
        .iter()
        .map(|row| {
            (
                row["tenant_id"].as_str().unwrap().to_string(),
                row["invoice_id"].as_str().unwrap().to_string(),
                row["exception_type"].as_str().unwrap().to_string(),
                row["po_line_no"].as_i64(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // A reader that goes away after the first line: no "Broken pipe", success.
    // (The table is far larger than a pipe holds, 64 KiB on Linux, so `query`
    // is still writing when the reader goes.)
    assert!(table.len() > 128 * 1024, "{} bytes", table.len());
    let mut child = Command::new(TRIMATCH)
        .args(["query", "match_exceptions", "--flight-addr", &flight])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    let mut stdout = child.stdout.take().unwrap();
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.is_empty(), "{stderr}");
}
