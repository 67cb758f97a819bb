//! Cluster mode: two `trimatch serve` processes on loopback run one timely
//! computation (Kafka partitions spread over the workers of both), and either
//! process answers a read with the whole state — the same state as the plain
//! evaluation of what was produced to a real broker.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use arrow::array::AsArray;
use arrow_flight::Ticket;
use futures::StreamExt;
use serde_json::json;
use support::cluster::*;
use support::*;
use trimatch_connectors::ownership::owner;
use trimatch_dataflows::model::DocumentKind;
use trimatch_workload::{GeneratedMessage, Workload, WorkloadConfig};

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_serve_the_same_state_as_one() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [3, 2, 3, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 131,
        tenants: 3,
        bad_share: 0.02,
        ..WorkloadConfig::default()
    })
    .take(2_000)
    .collect();
    produce(&broker.address, &messages);
    let expected = expected_state(&final_documents(&messages));

    let cluster = Cluster::start([&broker.address, &broker.address]);
    let Cluster {
        flights, metrics, ..
    } = &cluster;
    for (process, addr) in metrics.iter().enumerate() {
        wait_ready(
            &format!("process {process} ready"),
            addr,
            Duration::from_secs(90),
        );
    }

    let collections = [
        ("invoice_matches", expected.invoice_matches.len()),
        ("match_exceptions", expected.match_exceptions.len()),
        ("po_lines", expected.po_lines.len()),
        ("exception_summary", expected.exception_summary.len()),
    ];
    for (collection, count) in collections {
        let (rows_0, count_0, as_of) = read(&flights[0], json!(collection)).await;
        assert_eq!(
            count_0, count,
            "{collection} from process 0 has every process's rows"
        );
        let (rows_1, count_1, _) = read(
            &flights[1],
            json!({"collection": collection, "as_of": as_of}),
        )
        .await;
        assert_eq!(count_1, count, "{collection} from process 1");
        assert_eq!(
            rows_0, rows_1,
            "{collection}: both processes serve the same state"
        );
    }
    // Filters and offsets span the cluster too.
    let (_, tenant_rows, _) = read(
        &flights[1],
        json!({"collection": "match_exceptions", "filter": {"tenant_id": "tenant-002"}}),
    )
    .await;
    let wanted = expected
        .match_exceptions
        .iter()
        .filter(|row| &*row.tenant_id == "tenant-002")
        .count();
    assert_eq!(tenant_rows, wanted);
    let (_, partitions, _) = read(&flights[0], json!("source_progress")).await;
    assert_eq!(
        partitions, 11,
        "every partition's progress, from both processes' workers"
    );

    // A subscription on either process follows the whole state: documents whose
    // partitions belong to the other process's workers arrive too.
    let mut client = trimatch::cli::connection::Connection::plain(&flights[1])
        .connect()
        .await
        .unwrap();
    let ticket =
        json!({"subscribe": "invoice_matches", "filter": {"tenant_id": "cluster"}}).to_string();
    let mut stream = client
        .do_get(Ticket::new(ticket))
        .await
        .unwrap()
        .into_inner();
    let documents: Vec<GeneratedMessage> = (0..8)
        .flat_map(|n| {
            let po = json!({"tenant_id": "cluster", "po_number": format!("PO-{n}"), "vendor_id": "V", "currency": "USD",
                            "receipt_required": false, "lines": [{"line_no": 1, "quantity": "1", "unit_price": "1"}]});
            let invoice = json!({"tenant_id": "cluster", "invoice_id": format!("INV-{n}"), "vendor_id": "V",
                                 "invoice_number": format!("A-{n}"), "po_number": format!("PO-{n}"), "currency": "USD",
                                 "invoice_date": "2026-11-03", "lines": [{"po_line_no": 1, "quantity": "1", "unit_price": "1"}]});
            [(DocumentKind::PurchaseOrder, po), (DocumentKind::Invoice, invoice)]
        })
        .map(|(kind, value)| GeneratedMessage { kind, key: None, value: Some(value.to_string().into_bytes()), malformed: false })
        .collect();
    produce(&broker.address, &documents);
    let mut matched = BTreeSet::new();
    let mut last_progress = 0;
    while matched.len() < 8 {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("changes within 30 s")
            .unwrap()
            .unwrap();
        if let arrow_flight::decode::DecodedPayload::RecordBatch(batch) = message.payload {
            if batch.num_rows() == 0 {
                let progress: serde_json::Value =
                    serde_json::from_slice(&message.inner.app_metadata).unwrap();
                let progress = progress["progress"].as_u64().unwrap();
                assert!(progress > last_progress);
                last_progress = progress;
                continue;
            }
            let ids = batch
                .column_by_name("invoice_id")
                .unwrap()
                .as_string::<i32>();
            let statuses = batch.column_by_name("status").unwrap().as_string::<i32>();
            let diffs = batch
                .column_by_name("_diff")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>();
            for index in 0..batch.num_rows() {
                if statuses.value(index) == "matched" && diffs.value(index) > 0 {
                    matched.insert(ids.value(index).to_string());
                }
            }
        }
    }
    assert!(last_progress > 0, "progress arrived from every shard");
}

/// Cluster mode with `--state-dir`: each process checkpoints its own shards;
/// after both are killed, they agree on a checkpoint time both have, restore,
/// and serve the state of everything produced. Another shape is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_cluster_restores_a_checkpoint_every_process_has() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [3, 2, 3, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 137,
        tenants: 3,
        bad_share: 0.02,
        ..WorkloadConfig::default()
    })
    .take(3_000)
    .collect();
    let (first, second) = messages.split_at(2_000);
    produce(&broker.address, first);
    let dir = tempfile::tempdir().unwrap();
    let state = |process: usize| dir.path().join(format!("state-{process}"));
    let args = vec![
        "--state-dir".to_string(),
        dir.path()
            .join("state-{process}")
            .to_str()
            .unwrap()
            .to_string(),
        "--checkpoint-interval-seconds".to_string(),
        "1".to_string(),
    ];
    let generations = |process: usize| -> usize {
        std::fs::read_dir(state(process)).map_or(0, |entries| {
            entries
                .filter(|entry| {
                    entry
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".redb")
                })
                .count()
        })
    };
    let cluster = Cluster::start_with(
        [&broker.address, &broker.address],
        tempfile::tempdir().unwrap(),
        &args,
    );
    for (process, addr) in cluster.metrics.iter().enumerate() {
        wait_ready(
            &format!("process {process} ready"),
            addr,
            Duration::from_secs(90),
        );
    }
    wait_for(
        "checkpoints in both processes",
        Duration::from_secs(30),
        || generations(0) >= 2 && generations(1) >= 2,
    );
    drop(cluster); // SIGKILL, both
    produce(&broker.address, second);

    let cluster = Cluster::start_with(
        [&broker.address, &broker.address],
        tempfile::tempdir().unwrap(),
        &args,
    );
    for (process, addr) in cluster.metrics.iter().enumerate() {
        wait_ready(
            &format!("process {process} ready after the restart"),
            addr,
            Duration::from_secs(90),
        );
    }
    let mut restored = Vec::new();
    for addr in &cluster.metrics {
        let (_, text) = http_get(addr, "/metrics").unwrap();
        restored.push(metric_samples(&text, "trimatch_restore_as_of")[""]);
    }
    assert!(restored[0] > 0.0, "restored from a checkpoint");
    assert_eq!(
        restored[0], restored[1],
        "both processes restored the same time"
    );
    let expected = expected_state(&final_documents(&messages));
    for (collection, count) in [
        ("invoice_matches", expected.invoice_matches.len()),
        ("match_exceptions", expected.match_exceptions.len()),
        ("po_lines", expected.po_lines.len()),
    ] {
        let (rows_0, count_0, as_of) = read(&cluster.flights[0], json!(collection)).await;
        assert_eq!(count_0, count, "{collection} after the restore");
        let (rows_1, _, _) = read(
            &cluster.flights[1],
            json!({"collection": collection, "as_of": as_of}),
        )
        .await;
        assert_eq!(rows_0, rows_1, "{collection}: both processes agree");
    }
    drop(cluster);

    // One process's checkpoint in a one-process job with three workers: refused.
    let output = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["serve", "--brokers", &broker.address, "--workers", "3"])
        .args([
            "--flight-addr",
            &free_addr(),
            "--metrics-addr",
            &free_addr(),
        ])
        .args(["--state-dir", state(0).to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("process 0 of 2 with 2 workers each")
            && stderr.contains("process 0 of 1 with 3 workers each")
            && stderr.contains("--reset-state"),
        "{stderr}"
    );
}

/// A process serves the whole cluster's state, so it is ready only once the
/// sources of every process have caught up — not when its own have. Here
/// process 1 is pointed at a port where no broker listens.
#[test]
fn a_process_is_not_ready_while_another_processs_sources_have_not_caught_up() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 132,
        ..WorkloadConfig::default()
    })
    .take(500)
    .collect();
    produce(&broker.address, &messages);
    // Process 0 (workers 0 and 1 of 4) will read every partition its workers
    // own to these ends (taken before trimatch could add any topic).
    let ends: BTreeMap<String, f64> = high_watermarks(&broker.address)
        .into_iter()
        .filter(|((topic, partition), _)| owner(topic, *partition, 4) < 2)
        .map(|((topic, partition), end)| {
            (
                format!("topic=\"{topic}\",partition=\"{partition}\""),
                end as f64,
            )
        })
        .collect();
    let nowhere = free_addr();
    let cluster = Cluster::start([&broker.address, &nowhere]);
    let metrics = &cluster.metrics[0];
    wait_for(
        "process 0 to read its partitions",
        Duration::from_secs(60),
        || {
            let Some((_, text)) = http_get(metrics, "/metrics") else {
                return false;
            };
            metric_samples(&text, "trimatch_partition_next_offset") == ends
        },
    );
    // Its own workers have caught up and their batches are long complete...
    std::thread::sleep(Duration::from_secs(2));
    let (_, text) = http_get(metrics, "/metrics").unwrap();
    assert!(metric_samples(&text, "trimatch_newest_complete_time_ms")[""] > 0.0);
    // ...but process 1's have not, so process 0 is not ready.
    assert_eq!(metric_samples(&text, "trimatch_ready")[""], 0.0);
    let (status, body) = http_get(metrics, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
}

/// A timely cluster restarts as a unit: when one process dies, the other
/// cannot go on (its workers' channels to the dead one are gone) and must
/// exit, non-zero and saying why, so that the orchestrator restarts both.
#[test]
fn when_one_process_dies_the_other_exits_too() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 1, 1, 1]);
    let mut cluster = Cluster::start([&broker.address, &broker.address]);
    for metrics in &cluster.metrics {
        wait_ready("readiness", metrics, Duration::from_secs(60));
    }
    cluster.processes[1].kill().unwrap();
    let survivor = &mut cluster.processes[0];
    let mut status = None;
    wait_for(
        "the surviving process to exit",
        Duration::from_secs(30),
        || {
            status = survivor.try_wait().unwrap();
            status.is_some()
        },
    );
    let status = status.unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut survivor.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{status:?}: {stderr}");
    assert!(stderr.contains("lost cluster process 1"), "{stderr}");
}

/// A cluster with a token, of which only process 0 runs yet, and the file
/// process 0 logs to.
struct HalfCluster {
    plan: ClusterPlan,
    first: KillOnDrop,
    log: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl HalfCluster {
    fn start(broker: &str, workers: [usize; 2]) -> HalfCluster {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("cluster.token");
        std::fs::write(&token, "the cluster's secret, long enough\n").unwrap();
        let mut plan = ClusterPlan::new(
            dir.path(),
            &[
                "--cluster-token-file".into(),
                token.to_str().unwrap().into(),
            ],
        );
        plan.workers = workers;
        let log = dir.path().join("process-0.log");
        let first = KillOnDrop::new(
            plan.command(0, broker)
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let port = plan.addresses[0].clone();
        wait_for("process 0's cluster port", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&port).is_ok()
        });
        HalfCluster {
            plan,
            first,
            log,
            dir,
        }
    }
}

/// The cluster port takes only processes of the cluster (SPEC §9). While
/// process 0 waits for process 1, garbage, a port scanner's connect-and-close,
/// timely's own "I am process 1" and a TLS client that claims to be process 1
/// without the token each reach it. Each is dropped with a log line, process 0
/// lives on, and the real process 1 then joins.
#[test]
fn strangers_on_the_cluster_port_are_dropped_and_the_real_peer_joins() {
    use std::io::{Read, Write};
    use trimatch::pipeline::cluster::{self, ClusterLink, ClusterToken, DialError, HandshakeError};
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 1, 1, 1]);
    let mut half = HalfCluster::start(&broker.address, [2, 2]);
    let port = half.plan.addresses[0].clone();
    // The server ends each stranger's connection (end of stream or reset,
    // not our read timing out).
    let let_go = |bytes: &[u8]| {
        let mut stream = std::net::TcpStream::connect(&port).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let mut answer = Vec::new();
        if let Err(error) = stream.read_to_end(&mut answer) {
            assert!(
                !matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the stranger was not let go: {error}"
            );
        }
    };
    let_go(&[0xa5; 16]);
    drop(std::net::TcpStream::connect(&port).unwrap());
    let_go(&1u64.to_be_bytes());
    let impostor = ClusterLink {
        process: 1,
        addresses: half.plan.addresses.to_vec(),
        shape: cluster::Shape {
            processes: 2,
            workers: 2,
            topics: Vec::new(),
        },
        token: Some(ClusterToken("a guess at the cluster's secret".into())),
    };
    let refused = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cluster::dial(&impostor, 0))
        .map(drop);
    assert!(
        matches!(
            refused,
            Err(DialError::Handshake(HandshakeError::Stranger(_)))
        ),
        "{refused:?}"
    );
    assert!(half.first.try_wait().unwrap().is_none(), "process 0 ended");

    let _second = KillOnDrop::new(half.plan.command(1, &broker.address).spawn().unwrap());
    for metrics in &half.plan.metrics {
        wait_ready("the cluster", metrics, Duration::from_secs(60));
    }
    assert!(half.first.try_wait().unwrap().is_none(), "process 0 ended");
    let log = std::fs::read_to_string(&half.log).unwrap();
    assert!(
        log.matches("dropped a connection to the cluster port")
            .count()
            >= 4,
        "{log}"
    );
    assert!(log.contains("does not prove the cluster token"), "{log}");
    drop(half.dir);
}

/// Processes started for different clusters (here: 2 and 3 workers) find out
/// in the handshake, and both stop saying how they differ.
#[test]
fn processes_started_differently_refuse_each_other() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 1, 1, 1]);
    let mut half = HalfCluster::start(&broker.address, [2, 3]);
    let mut second = KillOnDrop::new(half.plan.command(1, &broker.address).spawn().unwrap());
    for (process, child) in [&mut *half.first, &mut *second].into_iter().enumerate() {
        let mut status = None;
        wait_for("a refused process to exit", Duration::from_secs(30), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        assert!(!status.unwrap().success(), "process {process}");
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    let log = std::fs::read_to_string(&half.log).unwrap();
    for text in [&stderr, &log] {
        assert!(text.contains("started differently"), "{text}");
        assert!(
            text.contains("workers: 3") && text.contains("workers: 2"),
            "{text}"
        );
    }
}

/// With security on, the processes reach each other over TLS with the
/// cluster token: a reader scoped to one tenant gets that tenant's rows of
/// the whole cluster (both processes' shards), and is refused a shard read.
#[tokio::test(flavor = "multi_thread")]
async fn a_secured_cluster_scopes_readers_across_processes_and_keeps_shards_internal() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [3, 2, 3, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 133,
        tenants: 3,
        ..WorkloadConfig::default()
    })
    .take(1_500)
    .collect();
    produce(&broker.address, &messages);
    let expected = expected_state(&final_documents(&messages));

    let dir = tempfile::tempdir().unwrap();
    certs::make_ca(dir.path(), "ca");
    certs::make_cert(dir.path(), "ca", "server");
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(
        dir.path().join("cluster.token"),
        "a cluster secret of some length\n",
    )
    .unwrap();
    let reader = secured::add_token(
        &dir.path().join("auth.toml"),
        "dash",
        "reader",
        "tenant-001",
    );
    let args: Vec<String> = [
        "--auth-file",
        &path("auth.toml"),
        "--cluster-token-file",
        &path("cluster.token"),
        "--tls-cert",
        &path("server.pem"),
        "--tls-key",
        &path("server.key"),
        "--tls-peer-ca",
        &path("ca.pem"),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let ca = path("ca.pem");
    let cluster = Cluster::start_with([&broker.address, &broker.address], dir, &args);
    for addr in &cluster.metrics {
        let url = format!("https://{addr}/readyz");
        wait_for("a secured process ready", Duration::from_secs(90), || {
            Command::new(env!("CARGO_BIN_EXE_trimatch"))
                .args(["health", "--url", &url, "--tls-ca", &ca])
                .output()
                .is_ok_and(|output| output.status.success())
        });
    }
    let as_reader = |flight: &str| {
        let mut connection =
            trimatch::cli::connection::Connection::plain(&format!("https://{flight}"));
        connection.tls_ca = Some(ca.clone().into());
        connection.token = Some(reader.clone());
        connection
    };
    let wanted = expected
        .match_exceptions
        .iter()
        .filter(|row| &*row.tenant_id == "tenant-001")
        .count();
    assert!(wanted > 0);
    for flight in &cluster.flights {
        let (rows, count, _) = read_as(as_reader(flight), json!("match_exceptions"))
            .await
            .unwrap();
        assert_eq!(
            count, wanted,
            "tenant-001's exceptions of the whole cluster from {flight}"
        );
        assert!(rows.iter().all(|row| row.starts_with("tenant-001|")));
    }
    let refused = read_as(
        as_reader(&cluster.flights[0]),
        json!({"collection": "match_exceptions", "shard": true}),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let other = read_as(
        as_reader(&cluster.flights[1]),
        json!({"collection": "po_lines", "filter": {"tenant_id": "tenant-002"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
}
