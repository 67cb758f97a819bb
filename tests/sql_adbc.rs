//! Flight SQL (SPEC §10) through ADBC's Flight SQL driver (from PyPI, a
//! client nobody here wrote) against `trimatch serve` over a tansu broker,
//! with an admin and a tenant-scoped reader. The checks are in
//! `tests/python/sql_client.py`; this test starts everything it needs.

mod support;

use support::run_python_check;
use support::secured::{add_token, broker_with_history, serve, TENANTS};

#[test]
fn adbc_queries_the_live_state_at_one_time_within_each_readers_tenants() {
    let Ok(python) = std::env::var("TRIMATCH_PYTHON") else {
        eprintln!("TRIMATCH_PYTHON is not set: skipping the ADBC test (scripts/test sets it)");
        return;
    };
    let broker = broker_with_history(161);
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.toml");
    let tenants: Vec<String> = (0..TENANTS)
        .map(|index| format!("tenant-{index:03}"))
        .collect();
    let admin = add_token(&auth_file, "analyst-admin", "admin", "*");
    let reader_tenants = format!("{},{}", tenants[1], tenants[3]);
    let reader = add_token(&auth_file, "analyst", "reader", &reader_tenants);
    let served = serve(
        &broker,
        dir.path(),
        &["--auth-file", auth_file.to_str().unwrap()],
        None,
    );
    let stdout = run_python_check(
        &python,
        "sql_client.py",
        &[
            ("FLIGHT_ADDR", served.flight.clone()),
            ("METRICS_ADDR", served.metrics.clone()),
            ("BROKERS", broker.address.clone()),
            ("ADMIN_TOKEN", admin),
            ("READER_TOKEN", reader),
            ("READER_TENANTS", reader_tenants),
            ("TENANTS", tenants.join(",")),
            (
                "README",
                format!("{}/README.md", env!("CARGO_MANIFEST_DIR")),
            ),
        ],
    );
    eprintln!("{stdout}");
}
