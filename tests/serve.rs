//! `trimatch serve` as an operator runs it, against a real broker (tansu):
//! settings from a TOML file, overridden by TRIMATCH_ variables, overridden by
//! flags; readiness once caught up; Prometheus metrics that agree with what was
//! produced; a clean exit on SIGTERM.

mod support;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use trimatch_workload::{Workload, WorkloadConfig};

#[test]
fn serve_reads_its_config_reports_readiness_and_metrics_and_stops_on_sigterm() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 1, 2, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 121,
        tenants: 2,
        bad_share: 0.03,
        ..WorkloadConfig::default()
    })
    .take(1_200)
    .collect();
    produce(&broker.address, &messages);
    let malformed = messages.iter().filter(|message| message.malformed).count();
    let expected = expected_state(&final_documents(&messages));

    let (flight, metrics, unused) = (free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trimatch.toml");
    std::fs::write(
        &config,
        format!(
            "brokers = \"{}\"\nworkers = 2\nflight_addr = \"{unused}\"\nmetrics_addr = \"{unused}\"\n\
             [kafka]\n\"client.id\" = \"trimatch-serve-test\"\n",
            broker.address
        ),
    )
    .unwrap();
    let serve = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--flight-addr",
                &flight,
            ])
            .env("TRIMATCH_METRICS_ADDR", &metrics)
            .env("TRIMATCH_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // The flag beats the file for Flight; the environment beats it for metrics.
    wait_ready("readiness", &metrics, Duration::from_secs(60));
    assert!(
        TcpStream::connect(&flight).is_ok(),
        "Flight listens where the flag says"
    );
    assert!(
        TcpStream::connect(&unused).is_err(),
        "nothing listens where the file said"
    );
    assert_eq!(http_get(&metrics, "/healthz").unwrap().0, 200);

    let (status, text) = http_get(&metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    let consumed = metric_samples(&text, "trimatch_messages_consumed_total");
    assert_eq!(consumed.len(), 8, "one series per partition: {consumed:?}");
    assert_eq!(consumed.values().sum::<f64>() as usize, messages.len());
    let dead = metric_samples(&text, "trimatch_messages_dead_lettered_total");
    assert_eq!(dead.values().sum::<f64>() as usize, malformed);
    let applied = metric_samples(&text, "trimatch_messages_applied_total");
    assert_eq!(
        applied.values().sum::<f64>() as usize,
        messages.len() - malformed
    );
    assert!(metric_samples(&text, "trimatch_partition_lag")
        .values()
        .all(|lag| *lag == 0.0));
    assert_eq!(metric_samples(&text, "trimatch_ready")[""], 1.0);
    let rows = metric_samples(&text, "trimatch_rows");
    assert_eq!(
        rows["collection=\"invoice_matches\""] as usize,
        expected.invoice_matches.len()
    );
    assert_eq!(
        rows["collection=\"match_exceptions\""] as usize,
        expected.match_exceptions.len()
    );
    assert_eq!(
        metric_samples(&text, "trimatch_freshness_seconds_count")[""] as usize,
        messages.len()
    );

    // A Flight request shows up in the request metrics.
    let query = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["query", "exception_summary", "--flight-addr", &flight])
        .output()
        .unwrap();
    assert!(query.status.success());
    let (_, text) = http_get(&metrics, "/metrics").unwrap();
    assert_eq!(
        metric_samples(&text, "trimatch_flight_requests_total")["method=\"do_get\""],
        1.0
    );
    assert_eq!(
        metric_samples(&text, "trimatch_flight_request_seconds_count")["method=\"do_get\""],
        1.0
    );

    // SIGTERM stops it cleanly; its logs were JSON.
    let terminated = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let output = serve.into_inner().wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let logs = String::from_utf8_lossy(&output.stderr);
    let first = logs.lines().next().expect("some logs");
    let parsed: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|_| panic!("not JSON: {first}"));
    assert!(parsed["fields"]["message"].is_string(), "{parsed}");
}

/// A worker that dies takes the process down with it, with the cause in the
/// log, instead of leaving a process that answers its probes while every read
/// fails; and a stalled partition, or a bad setting, gets a clear answer.
#[test]
fn a_dead_worker_ends_serve_with_its_cause() {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 1, 2, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 5,
        tenants: 2,
        ..WorkloadConfig::default()
    })
    .take(400)
    .collect();
    produce(&broker.address, &messages);
    let metrics = free_addr();
    let mut serve = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args(["serve", "--brokers", &broker.address, "--workers", "2"])
            .args(["--flight-addr", &free_addr(), "--metrics-addr", &metrics])
            .args(["--fault-panic-worker", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut status = None;
    wait_for("serve to exit", Duration::from_secs(30), || {
        status = serve.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(2));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("worker 1 panicked: injected fault"),
        "{stderr}"
    );
}

/// Settings that make no sense are refused at start, naming the setting.
#[test]
fn bad_settings_are_refused_naming_them() {
    let refused = |args: &[&str], config: Option<&str>| -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_trimatch"));
        command.arg("serve").args(args);
        if let Some(text) = config {
            let path = dir.path().join("trimatch.toml");
            std::fs::write(&path, text).unwrap();
            command.arg("--config").arg(path);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?} {config:?}");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let error = refused(&["--price-tolerance-pct=-1"], None);
    assert!(
        error.contains("--price-tolerance-pct") && error.contains("cannot be negative"),
        "{error}"
    );
    let error = refused(&["--retention-seconds", "99999999"], None);
    assert!(error.contains("--retention-seconds"), "{error}");
    let error = refused(&["--workers", "0"], None);
    assert!(
        error.contains("--workers") && error.contains("at least 1"),
        "{error}"
    );
    let error = refused(
        &["--until-end", "--output", "out", "--tenant-passes", "0"],
        None,
    );
    assert!(
        error.contains("--tenant-passes") && error.contains("at least 1"),
        "{error}"
    );
    // Passes are a bounded run's: without --until-end they mean nothing.
    let error = refused(&["--tenant-passes", "4"], None);
    assert!(
        error.contains("--tenant-passes") && error.contains("--until-end"),
        "{error}"
    );
    let error = refused(&[], Some("flight_adress = \"127.0.0.1:1\"\n"));
    assert!(
        error.contains("unknown setting \"flight_adress\""),
        "{error}"
    );
    let error = refused(&[], Some("workers = \"many\"\n"));
    assert!(
        error.contains("--workers") && error.contains("\"many\""),
        "{error}"
    );
    let error = refused(&[], Some("[kafka\n"));
    assert!(error.contains("is not valid TOML"), "{error}");
}
