//! Flight SQL cannot hurt the service (issue: the outside audit): each of
//! the audit's reproductions, through arrow-flight's Flight SQL client
//! against a pipeline on a mock cluster, and after each one the service
//! still answers.
//!
//! * statements that size an allocation from an argument are refused
//!   before anything is allocated;
//! * a statement past its deadline stops with DEADLINE_EXCEEDED;
//! * statements past the per-caller bound are refused at once;
//! * a statement handle the server did not seal (1,000 mutations of a real
//!   one) is INVALID_ARGUMENT;
//! * bound parameters past the size bound are refused, and a DoPut stream
//!   is read only up to its first row.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{Any, ProstMessageExt, TicketStatementQuery};
use arrow_flight::Ticket;
use futures::TryStreamExt;
use prost::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use support::secured::block_on;
use support::*;
use tonic::transport::Channel;
use tonic::Code;
use trimatch::pipeline::Pipeline;
use trimatch::serve::flight::TrimatchFlight;
use trimatch::serve::flight_sql::SqlSettings;
use trimatch_dataflows::model::DocumentKind;

/// A pipeline on a mock cluster, served with `settings` for SQL.
struct Service {
    _mock: MockCluster<'static, DefaultProducerContext>,
    _pipeline: Pipeline,
    addr: SocketAddr,
}

fn start(settings: SqlSettings) -> Service {
    let mock = MockCluster::new(1).unwrap();
    for kind in DocumentKind::ALL {
        mock.create_topic(kind.default_topic(), 1, 1).unwrap();
    }
    let config = pipeline_config(source_config(&mock.bootstrap_servers()), 1);
    let retention = config.retention;
    let pipeline = Pipeline::start(config).unwrap();
    let handle = pipeline.handle();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let service = TrimatchFlight::new(handle, retention).with_sql(settings);
            trimatch::serve::flight::serve_service(listener, None, service, std::future::pending())
                .await
                .unwrap()
        })
    });
    wait_until_complete_now(&pipeline);
    Service {
        _mock: mock,
        _pipeline: pipeline,
        addr,
    }
}

async fn client(service: &Service) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", service.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// The rows of `sql`, or the status it failed with.
async fn run(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(status)?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = client.do_get(ticket).await.map_err(status)?;
    stream.try_collect().await.map_err(status)
}

fn status(error: FlightError) -> tonic::Status {
    tonic::Status::from(error)
}

/// The service still answers a plain statement.
async fn still_answers(client: &mut FlightSqlServiceClient<Channel>) {
    let batches = run(client, "SELECT 40 + 2 AS answer").await.unwrap();
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        42
    );
}

fn settings() -> SqlSettings {
    SqlSettings {
        deadline: Duration::from_secs(2),
        max_running: 4,
        max_running_per_caller: 1,
        ..SqlSettings::default()
    }
}

#[test]
fn statements_that_would_size_an_allocation_from_an_argument_are_refused() {
    let service = start(settings());
    block_on(async {
        let mut client = client(&service).await;
        for (sql, function) in [
            (
                "SELECT repeat(arrow_cast('x', 'LargeUtf8'), 1000000000000000)",
                "repeat",
            ),
            ("SELECT lpad('x', 1000000000000000)", "lpad"),
            ("SELECT rpad('x', 1000000000000000, 'y')", "rpad"),
            ("SELECT replace('abc', '', 'xyz')", "replace"),
            ("SELECT array_repeat(1, 1000000000000000)", "array_repeat"),
        ] {
            let refused = run(&mut client, sql).await.unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{sql}: {refused:?}");
            assert!(
                refused
                    .message()
                    .contains(&format!("{function}() is not offered over Flight SQL")),
                "{sql}: {refused:?}"
            );
            still_answers(&mut client).await;
        }
        let long = format!(
            "SELECT '{}'",
            "x".repeat(SqlSettings::default().max_statement_bytes)
        );
        let refused = run(&mut client, &long).await.unwrap_err();
        assert!(refused.message().contains("bytes long"), "{refused:?}");
    });
}

#[test]
fn a_statement_past_its_deadline_stops_and_one_caller_cannot_take_every_slot() {
    let service = start(settings());
    block_on(async {
        let mut client = client(&service).await;
        let endless = "SELECT count(*) FROM generate_series(1, 9000000000000000000)";
        let started = Instant::now();
        let refused = run(&mut client, endless).await.unwrap_err();
        assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused:?}");
        assert!(
            refused.message().contains("--sql-deadline-seconds"),
            "{refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        still_answers(&mut client).await;

        // One endless statement holds the caller's only slot: a second one
        // is refused at once, and the slot is free again after the first.
        let info = client.execute(endless.to_string(), None).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let running = client.do_get(ticket).await.unwrap();
        let pending = tokio::spawn(running.try_collect::<Vec<RecordBatch>>());
        let mut other = self::client(&service).await;
        let busy = run(&mut other, "SELECT 1").await.unwrap_err();
        assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");
        assert!(busy.message().contains("your statements"), "{busy:?}");
        let ended = pending.await.unwrap().unwrap_err();
        assert_eq!(status(ended).code(), Code::DeadlineExceeded);
        still_answers(&mut other).await;
    });
}

#[test]
fn handles_the_server_did_not_seal_are_refused_and_never_crash_it() {
    let service = start(settings());
    block_on(async {
        let mut client = client(&service).await;
        let mut prepared = client
            .prepare("SELECT $1 AS vendor".to_string(), None)
            .await
            .unwrap();
        prepared
            .set_parameters(
                RecordBatch::try_from_iter([(
                    "0",
                    std::sync::Arc::new(StringArray::from(vec!["acme"])) as ArrayRef,
                )])
                .unwrap(),
            )
            .unwrap();
        let info = prepared.execute().await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let rows: Vec<RecordBatch> = client
            .do_get(ticket.clone())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(rows[0].column(0).as_string::<i32>().value(0), "acme");

        // A statement ticket's handle, mutated a thousand ways.
        let info = client.execute("SELECT 1".to_string(), None).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let handle = TicketStatementQuery::decode(
            Any::decode(ticket.ticket.as_ref()).unwrap().value.as_ref(),
        )
        .unwrap()
        .statement_handle
        .to_vec();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..1_000 {
            let mut mutated = handle.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % mutated.len() as u64) as usize;
                match next() % 3 {
                    0 => mutated[at] = next() as u8,
                    1 => mutated.insert(at, next() as u8),
                    _ => {
                        mutated.remove(at);
                    }
                }
            }
            if mutated == handle {
                continue;
            }
            let forged = Ticket::new(
                TicketStatementQuery {
                    statement_handle: mutated.into(),
                }
                .as_any()
                .encode_to_vec(),
            );
            let refused = match client.do_get(forged).await {
                Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
                Err(error) => Err(error),
            }
            .map_err(status)
            .expect_err("a mutated handle is refused");
            assert_eq!(
                refused.code(),
                Code::InvalidArgument,
                "round {round}: {refused:?}"
            );
        }
        still_answers(&mut client).await;
    });
}

#[test]
fn bound_parameters_are_bounded() {
    let service = start(settings());
    block_on(async {
        let mut client = client(&service).await;
        let mut prepared = client
            .prepare("SELECT $1 AS n".to_string(), None)
            .await
            .unwrap();
        let flood = (2 * trimatch::serve::flight_sql::MAX_PARAMETER_BYTES / 8) as i64;
        let big = RecordBatch::try_from_iter([(
            "0",
            std::sync::Arc::new(Int64Array::from_iter_values(0..flood)) as ArrayRef,
        )])
        .unwrap();
        prepared.set_parameters(big).unwrap();
        let refused = status(prepared.execute().await.unwrap_err());
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("exceed"), "{refused:?}");
        still_answers(&mut client).await;
    });
}
