//! The performance harness keeps working: `trimatch-bench graph` and `trimatch
//! bench load` run on tiny sizes and write reports whose contents agree with
//! what was asked and with each other. Nothing here is timed — the figures are
//! only checked to be present and positive.

use std::process::Command;

use serde_json::Value;

const TRIMATCH_BENCH: &str = env!("CARGO_BIN_EXE_trimatch-bench");

fn run_bench(args: &[&str], report: &std::path::Path) -> (String, Value) {
    let output = Command::new(TRIMATCH_BENCH)
        .args(args)
        .arg("--report")
        .arg(report)
        .output()
        .expect("trimatch-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "trimatch-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value =
        serde_json::from_slice(&std::fs::read(report).expect("the report is written"))
            .expect("the report is JSON");
    (stdout, json)
}

fn positive(report: &Value, field: &str) -> f64 {
    let value = report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number in {report}"));
    assert!(value > 0.0, "{field} = {value}");
    value
}

#[test]
fn graph_bench_reports_rates_memory_and_the_machine() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("graph.json");
    let (stdout, json) = run_bench(
        &[
            "graph",
            "--workers",
            "2",
            "--preload",
            "3000",
            "--changes",
            "2000",
            "--batch",
            "500",
        ],
        &path,
    );
    assert!(json["machine"]["cores"].as_u64().unwrap_or(0) >= 1);
    let report = &json["report"];
    assert_eq!(report["config"]["workers"], 2);
    assert_eq!(report["config"]["changes"], 2000);
    let live = report["live_documents"].as_u64().expect("live documents");
    assert!(live > 0 && live <= 3000, "{live} live documents");
    assert!(report["live_document_lines"].as_u64().expect("lines") >= live / 2);
    let rate = positive(report, "changes_per_second");
    let decode = positive(report, "decode_per_second");
    let ratio = positive(report, "ratio_to_decode");
    assert!((ratio - rate / decode).abs() < 1e-9 * ratio.max(1.0));
    assert!(
        stdout.contains("document changes/s on 2 worker(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("machine: "), "{stdout}");
}

#[test]
fn load_bench_measures_every_figure_on_the_mock_cluster() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("load.json");
    let (stdout, json) = run_bench(
        &[
            "load",
            "--preload",
            "3000",
            "--rate",
            "500",
            "--duration",
            "2",
            "--workers",
            "2",
        ],
        &path,
    );
    let report = &json["report"];
    assert_eq!(
        report["broker"], "librdkafka's in-process mock cluster",
        "{report}"
    );
    for field in [
        "bare_consumer_per_second",
        "replay_per_second",
        "replay_ratio_to_bare_consumer",
        "sustained_reflected_per_second",
        "rss_after_preload_bytes",
        "peak_rss_bytes",
    ] {
        positive(report, field);
    }
    let produced = report["sustained_produced"].as_u64().expect("produced");
    assert!(produced > 0);
    // New invoices were seen by the subscriber, and snapshots were taken.
    for latencies in ["freshness", "snapshot", "bare_consumer_latency"] {
        let samples = report[latencies]["samples"].as_u64().unwrap_or(0);
        assert!(samples > 0, "no {latencies} samples: {report}");
        let p50 = report[latencies]["p50_ms"].as_f64().expect("p50");
        let max = report[latencies]["max_ms"].as_f64().expect("max");
        assert!(p50 <= max, "{latencies}: p50 {p50} > max {max}");
    }
    // Roughly 40% of the workload is invoices; each new one is a sample at most once.
    let freshness_samples = report["freshness"]["samples"].as_u64().unwrap_or(0);
    assert!(
        freshness_samples <= produced,
        "{freshness_samples} > {produced}"
    );
    assert!(
        report["live_documents"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(stdout.contains("catch-up replay"), "{stdout}");
}

#[test]
fn restart_bench_reports_a_restore_a_replay_and_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("restart.json");
    let (stdout, json) = run_bench(
        &[
            "restart",
            "--documents",
            "1500",
            "--partitions",
            "2",
            "--checkpoint-interval",
            "1",
        ],
        &report_path,
    );
    assert!(stdout.contains("faster than the replay"), "{stdout}");
    let report = &json["report"];
    assert!(report["live_documents"].as_u64().unwrap() >= 1500);
    // The clean stop's checkpoint holds every live document.
    assert_eq!(report["checkpoint_documents"], report["live_documents"]);
    for field in [
        "replay_seconds",
        "restore_seconds",
        "checkpoint_bytes",
        "checkpoint_bytes_per_document",
        "restore_speedup",
    ] {
        positive(report, field);
    }
}
