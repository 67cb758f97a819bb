//! SPEC §6 end to end: `trimatch serve` against a real broker (tansu); an
//! analyst's decisions produced with confluent-kafka (a producer nobody here
//! wrote) and with `trimatch resolve` change `invoice_matches.status`, as a
//! pyarrow subscription sees it. The checks are in
//! `tests/python/resolution_client.py`.

mod support;

use support::*;

#[test]
fn resolutions_through_a_real_broker_change_the_status_a_subscriber_sees() {
    let Ok(python) = std::env::var("TRIMATCH_PYTHON") else {
        eprintln!(
            "TRIMATCH_PYTHON is not set: skipping the resolution test (scripts/test sets it)"
        );
        return;
    };
    let broker = Tansu::start();
    create_input_topics(&broker.address, [1, 1, 2, 1, 2, 1]);
    let (_serve, flight) = start_ready_serve(&broker.address);
    let stdout = run_python_check(
        &python,
        "resolution_client.py",
        &[
            ("FLIGHT_ADDR", flight),
            ("BROKERS", broker.address.clone()),
            ("TRIMATCH_BIN", env!("CARGO_BIN_EXE_trimatch").to_string()),
        ],
    );
    print!("{stdout}");
}
