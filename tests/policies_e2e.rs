//! SPEC §12.1 and §12.4 end to end: `trimatch serve` against a real broker
//! (tansu); a vendor-scoped policy produced with confluent-kafka releases
//! exactly that vendor's variances, and a `preview_policy` issued just
//! before equals, row for row, the change stream a pyarrow subscription then
//! receives. The checks are in `tests/python/policy_client.py`.

mod support;

use support::*;

#[test]
fn a_vendor_policy_releases_what_its_preview_said_through_a_real_broker() {
    let Ok(python) = std::env::var("TRIMATCH_PYTHON") else {
        eprintln!("TRIMATCH_PYTHON is not set: skipping the policy test (scripts/test sets it)");
        return;
    };
    let broker = Tansu::start();
    create_input_topics(&broker.address, [1, 1, 2, 1, 2, 1]);
    let (_serve, flight) = start_ready_serve(&broker.address);
    let stdout = run_python_check(
        &python,
        "policy_client.py",
        &[
            ("FLIGHT_ADDR", flight),
            ("BROKERS", broker.address.clone()),
            ("TRIMATCH_BIN", env!("CARGO_BIN_EXE_trimatch").to_string()),
        ],
    );
    print!("{stdout}");
}
