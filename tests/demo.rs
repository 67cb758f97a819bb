//! `trimatch demo`, as a newcomer runs it: the process starts its embedded
//! broker, prints where to connect, and within a minute `trimatch query` (and
//! pyarrow) show live exceptions; a document produced by any Kafka client to
//! the printed address shows up; Ctrl-C stops it cleanly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use trimatch_dataflows::model::DocumentKind;
use trimatch_workload::GeneratedMessage;

const TRIMATCH: &str = env!("CARGO_BIN_EXE_trimatch");

fn query(flight: &str, args: &[&str]) -> Vec<Value> {
    let output = Command::new(TRIMATCH)
        .args(["query", "--format", "json", "--flight-addr", flight])
        .args(args)
        .output()
        .unwrap();
    if !output.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn the_demo_shows_live_exceptions_within_a_minute_and_takes_documents_from_any_client() {
    let flight = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let mut demo = KillOnDrop::new(
        Command::new(TRIMATCH)
            .args([
                "demo",
                "--rate",
                "300",
                "--duration",
                "120",
                "--flight-addr",
                &flight,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut brokers = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(address) = line.strip_prefix("Kafka (produce your own documents here):") {
            brokers = Some(address.trim().to_string());
        }
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    let brokers = brokers.expect("the banner names the Kafka bootstrap address");
    // Keep draining the summary so the demo never blocks on a full pipe.
    let summary = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    // Live exceptions from `trimatch query`, within a minute.
    wait_for(
        "exceptions in trimatch query",
        Duration::from_secs(60),
        || !query(&flight, &["match_exceptions", "--limit", "5"]).is_empty(),
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // A document from our own Kafka client appears.
    let po = json!({"tenant_id": "newcomer", "po_number": "PO-1", "vendor_id": "V-1", "currency": "USD",
                    "lines": [{"line_no": 1, "quantity": "10", "unit_price": "2.50"}]});
    let invoice = json!({"tenant_id": "newcomer", "invoice_id": "INV-1", "vendor_id": "V-1", "invoice_number": "A-1",
                         "po_number": "PO-1", "currency": "USD", "invoice_date": "2026-11-03",
                         "lines": [{"po_line_no": 1, "quantity": "10", "unit_price": "2.75"}]});
    let message = |kind: DocumentKind, value: &Value| GeneratedMessage {
        kind,
        key: None,
        value: Some(value.to_string().into_bytes()),
        malformed: false,
    };
    produce(
        &brokers,
        &[
            message(DocumentKind::PurchaseOrder, &po),
            message(DocumentKind::Invoice, &invoice),
        ],
    );
    wait_for("our invoice's exceptions", Duration::from_secs(30), || {
        let rows = query(
            &flight,
            &["match_exceptions", "--filter", "tenant_id=newcomer"],
        );
        let types: Vec<&str> = rows
            .iter()
            .filter_map(|row| row["exception_type"].as_str())
            .collect();
        types.contains(&"PRICE_VARIANCE") && types.contains(&"RECEIPT_MISSING")
    });

    // And from pyarrow.
    if let Ok(python) = std::env::var("TRIMATCH_PYTHON") {
        let script = format!(
            "import pyarrow.flight as flight\n\
             df = flight.connect('grpc://{flight}').do_get(flight.Ticket(b'match_exceptions')).read_pandas()\n\
             assert len(df) > 0 and 'newcomer' in set(df.tenant_id), df\n\
             print(len(df))"
        );
        let output = Command::new(python).args(["-c", &script]).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // Twenty seconds in, the demo previews and produces a vendor's policy.
    while started.elapsed() < Duration::from_secs(24) {
        std::thread::sleep(Duration::from_millis(200));
    }

    // Ctrl-C stops it cleanly.
    let interrupted = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = demo.wait().unwrap();
    assert!(
        status.success(),
        "the demo exits cleanly on Ctrl-C: {status:?}"
    );
    let summary = summary.join().unwrap();
    assert!(
        summary.iter().any(|line| line.contains("invoices")),
        "the live summary was printed"
    );
    assert!(summary
        .iter()
        .any(|line| line.contains("trimatch demo stopped")));
    let moment = summary
        .iter()
        .find(|line| line.contains("policy preview"))
        .expect("the policy moment was shown");
    assert!(
        moment.contains("V-000 of tenant-000 may bill 10 % over")
            && moment.contains("exceptions released"),
        "{moment}"
    );
}
