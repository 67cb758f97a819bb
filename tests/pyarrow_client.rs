//! A client nobody here wrote — pyarrow.flight, with pandas and confluent-kafka
//! — against trimatch serving a real broker (tansu). The checks are in
//! `tests/python/flight_client.py`; this test starts everything it needs.

mod support;

use std::time::Duration;

use support::*;
use trimatch::pipeline::Pipeline;
use trimatch_workload::{Workload, WorkloadConfig};

#[test]
fn pyarrow_reads_snapshots_and_follows_a_subscription_across_a_reconnect() {
    let Ok(python) = std::env::var("TRIMATCH_PYTHON") else {
        eprintln!("TRIMATCH_PYTHON is not set: skipping the pyarrow test (scripts/test sets it)");
        return;
    };
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 2, 2, 1, 1, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed: 111,
        tenants: 3,
        ..WorkloadConfig::default()
    })
    .take(1_500)
    .collect();
    produce(&broker.address, &messages);

    let pipeline = Pipeline::start(pipeline_config(source_config(&broker.address), 2)).unwrap();
    wait_for("the pipeline to catch up", Duration::from_secs(60), || {
        pipeline.is_ready()
    });
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let handle = pipeline.handle();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(trimatch::serve::flight::serve(
                addr,
                handle,
                Duration::from_secs(600),
                std::future::pending(),
            ))
            .unwrap();
    });
    wait_for("the Flight port", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });

    let stdout = run_python_check(
        &python,
        "flight_client.py",
        &[
            ("FLIGHT_ADDR", addr.to_string()),
            ("BROKERS", broker.address.clone()),
            ("TRIMATCH_BIN", env!("CARGO_BIN_EXE_trimatch").to_string()),
        ],
    );
    eprintln!("{stdout}");
    pipeline.shutdown().unwrap();
}
