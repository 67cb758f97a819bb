//! Kafka over TLS: a tansu broker process reached only through a TLS
//! terminator (socat, with a server certificate signed by a CA this test makes
//! with openssl), advertising the TLS port. Topics are created, the history is
//! produced and a 2-worker pipeline consumes it, all over TLS with the test
//! CA; the state must equal the plain evaluation. A client that does not
//! trust the CA gets no data.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use trimatch::pipeline::Pipeline;
use trimatch_connectors::admin::create_missing_topics;
use trimatch_connectors::TopicConfig;
use trimatch_dataflows::model::DocumentKind;
use trimatch_workload::{Workload, WorkloadConfig, WorkloadProducer};

/// A CA, and a certificate for 127.0.0.1 and localhost signed by it, in
/// `dir`: `ca.pem`, `server.pem`, `server.key`.
fn make_certificates(dir: &Path) {
    certs::make_ca(dir, "ca");
    certs::make_cert(dir, "ca", "server");
}

fn settings(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect()
}

#[test]
fn the_pipeline_consumes_from_a_broker_reached_over_tls_only() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let path = |name: &str| -> String {
        let full: PathBuf = certs.path().join(name);
        full.display().to_string()
    };
    let tls_port = free_port();
    let broker = Tansu::start_advertising(tls_port);
    let _terminator = KillOnDrop::new(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                path("server.pem"),
                path("server.key")
            ))
            .arg(format!("TCP:{}", broker.address))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat runs (scripts/test installs it)"),
    );
    wait_for("the TLS port", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });
    let bootstrap = format!("127.0.0.1:{tls_port}");
    let tls = settings(&[
        ("security.protocol", "SSL".to_string()),
        ("ssl.ca.location", path("ca.pem")),
    ]);

    let topics: Vec<TopicConfig> = DocumentKind::ALL
        .into_iter()
        .map(TopicConfig::default_for)
        .collect();
    let names: Vec<&str> = topics.iter().map(|topic| topic.name.as_str()).collect();
    let created = create_missing_topics(&bootstrap, &names, 2, &tls).unwrap();
    assert_eq!(created.len(), DocumentKind::ALL.len(), "{created:?}");
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 31,
        tenants: 2,
        bad_share: 0.02,
        ..WorkloadConfig::default()
    })
    .take(1_500)
    .collect();
    let producer = WorkloadProducer::new(&bootstrap, topics, &tls).unwrap();
    for message in &messages {
        producer.send(message).unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();

    let mut source = source_config(&bootstrap);
    source.client_settings = tls.clone();
    source.until_end = true;
    let state = Pipeline::start(pipeline_config(source, 2))
        .unwrap()
        .join()
        .unwrap();
    assert_same_state(
        &matching_state(&state.collections),
        &expected_state(&final_documents(&messages)),
        "consumed over TLS",
    );

    // A client that does not trust the test CA (the system's CAs only) is
    // refused by its own verification and consumes nothing.
    let mut untrusting = source_config(&bootstrap);
    untrusting.client_settings = settings(&[("security.protocol", "SSL".to_string())]);
    let pipeline = Pipeline::start(pipeline_config(untrusting, 1)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let consumed: u64 = pipeline
        .metrics()
        .snapshot()
        .values()
        .map(|partition| partition.consumed)
        .sum();
    assert_eq!(consumed, 0);
    assert!(!pipeline.is_ready());
    pipeline.shutdown().unwrap();
}
