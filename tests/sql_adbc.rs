//! Flight SQL (SPEC §10) through ADBC's Flight SQL driver (from PyPI, a
//! client nobody here wrote) against `trimatch serve` over a tansu broker,
//! with an admin and a tenant-scoped reader. The checks are in
//! `tests/python/sql_client.py`; this test starts everything it needs.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

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
    let admin_token = admin.clone();
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
                "SQL_GUIDE",
                format!("{}/docs/guide/sql.md", env!("CARGO_MANIFEST_DIR")),
            ),
        ],
    );
    eprintln!("{stdout}");

    // `trimatch sql` prints what `trimatch query` prints, at the same time.
    let cli = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args(args)
            .args(["--flight-addr", &served.flight, "--token", &admin_token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let tenant = &tenants[2];
    let queried = cli(
        &[
            "query",
            "invoice_matches",
            "--filter",
            &format!("tenant_id={tenant}"),
        ],
        "",
    );
    assert!(queried.status.success(), "{queried:?}");
    let queried = String::from_utf8(queried.stdout).unwrap();
    let summary = queried.lines().last().unwrap();
    // "(N rows as of T (…))"
    let words: Vec<&str> = summary.trim_start_matches('(').split_whitespace().collect();
    let (rows, as_of) = (words[0], words[4]);
    let counted = cli(
        &[
            "sql",
            "--as-of",
            as_of,
            "--format",
            "csv",
            &format!("SELECT count(*) AS n FROM invoice_matches WHERE tenant_id = '{tenant}'"),
        ],
        "",
    );
    assert!(counted.status.success(), "{counted:?}");
    assert_eq!(
        String::from_utf8(counted.stdout).unwrap(),
        format!("n\n{rows}\n")
    );
    // Statements from standard input, one per `;`.
    let piped = cli(
        &["sql", "--format", "json"],
        "SELECT 1 AS one;\nSELECT tenant_id FROM exception_summary\n  WHERE tenant_id = 'nobody'; SELECT 'a;b' AS c",
    );
    assert!(piped.status.success(), "{piped:?}");
    let lines = String::from_utf8(piped.stdout).unwrap();
    assert!(
        lines.contains(r#"{"one":"1"}"#) || lines.contains(r#"{"one":1}"#),
        "{lines}"
    );
    // A bad statement: exit 2 and the server's sentence.
    let refused = cli(&["sql", "DELETE FROM invoice_matches"], "");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("read-only"),
        "{refused:?}"
    );
}

#[test]
fn a_statement_over_the_memory_limit_fails_cleanly_and_the_next_one_runs() {
    let broker = broker_with_history(162);
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&broker, dir.path(), &["--sql-memory-limit-mb", "1"], None);
    let sql = |statement: &str| {
        Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args([
                "sql",
                "--flight-addr",
                &served.flight,
                "--format",
                "csv",
                statement,
            ])
            .output()
            .unwrap()
    };
    // Every exception paired with every other of its tenant, sorted: the
    // sort needs far more than 1 MiB, and may not spill to disk.
    let big = sql("SELECT a.detail, b.detail FROM match_exceptions a \
         JOIN match_exceptions b ON a.tenant_id = b.tenant_id ORDER BY 1, 2");
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert_eq!(big.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ResourceExhausted"), "{stderr}");
    // The process is fine, and a small statement runs under the same limit.
    let small = sql("SELECT count(*) AS n FROM match_exceptions");
    assert!(small.status.success(), "{small:?}");
    let count: usize = String::from_utf8(small.stdout)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        count > 100,
        "{count} exceptions: too few for the pairs to be large"
    );
}
