//! The transport side of security end to end: TLS with certificates the
//! tests make, rotation without a restart, mutual TLS, pyarrow over TLS, and
//! the metrics endpoint's token from outside loopback.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::secured::*;
use support::*;
use trimatch::cli::connection::Connection;

/// This machine's address on a network interface (not loopback), if it has one.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it picks the outgoing interface.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A GET with an optional bearer token: the status code.
fn get_status(addr: &str, path: &str, token: Option<&str>) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn metrics_from_outside_loopback_need_the_metrics_token() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("no network interface besides loopback: nothing to reach the endpoint from");
        return;
    };
    let broker = broker_with_history(155);
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.toml");
    add_token(&auth_file, "ops", "admin", "*");
    let token_file = dir.path().join("metrics.token");
    let metrics_token = "a metrics token for the scraper";
    std::fs::write(&token_file, format!("{metrics_token}\n")).unwrap();
    let port = free_port();
    let (flight, metrics) = (free_addr(), format!("0.0.0.0:{port}"));
    let _serve = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args([
                "serve",
                "--brokers",
                &broker.address,
                "--flight-addr",
                &flight,
                "--metrics-addr",
                &metrics,
            ])
            .args([
                "--auth-file",
                auth_file.to_str().unwrap(),
                "--metrics-token-file",
                token_file.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let loopback = format!("127.0.0.1:{port}");
    wait_for("the metrics endpoint", Duration::from_secs(60), || {
        get_status(&loopback, "/readyz", None) == Some(200)
    });
    let outside = format!("{ip}:{port}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            get_status(&outside, path, None),
            Some(401),
            "{path} from {ip} without the token"
        );
        assert_eq!(
            get_status(&outside, path, Some("wrong")),
            Some(401),
            "{path} with a wrong token"
        );
        assert_eq!(
            get_status(&outside, path, Some(metrics_token)),
            Some(200),
            "{path} with the token"
        );
        assert_eq!(
            get_status(&loopback, path, None),
            Some(200),
            "{path} from loopback"
        );
    }
}

/// Writes `{name}.pem`/`{name}.key` over `server.pem`/`server.key` the way
/// a secret rotation does: whole files, renamed into place.
fn rotate(dir: &Path, name: &str) {
    for extension in ["pem", "key"] {
        let temporary = dir.join(format!("next.{extension}"));
        std::fs::copy(dir.join(format!("{name}.{extension}")), &temporary).unwrap();
        std::fs::rename(&temporary, dir.join(format!("server.{extension}"))).unwrap();
    }
}

#[test]
fn tls_rotates_without_a_restart_and_mutual_tls_needs_a_client_certificate() {
    let broker = broker_with_history(153);
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path();
    for ca in ["ca1", "ca2", "clients"] {
        certs::make_ca(certs_dir, ca);
    }
    certs::make_cert(certs_dir, "ca1", "first");
    certs::make_cert(certs_dir, "ca2", "second");
    certs::make_cert(certs_dir, "clients", "client");
    certs::make_cert(certs_dir, "ca1", "stranger");
    rotate(certs_dir, "first");
    let auth_file = dir.path().join("auth.toml");
    let token = add_token(&auth_file, "ops", "admin", "*");
    let path = |name: &str| certs_dir.join(name).to_str().unwrap().to_string();
    let served = serve(
        &broker,
        dir.path(),
        &[
            "--auth-file",
            &path("auth.toml"),
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
            "--tls-client-ca",
            &path("clients.pem"),
        ],
        Some(&certs_dir.join("ca1.pem")),
    );
    let client = |ca: &str, identity: Option<&str>| {
        let mut connection =
            Connection::plain(&format!("https://localhost:{}", port_of(&served.flight)));
        connection.tls_ca = Some(certs_dir.join(format!("{ca}.pem")));
        connection.token = Some(token.clone());
        if let Some(name) = identity {
            connection.tls_client_cert = Some(certs_dir.join(format!("{name}.pem")));
            connection.tls_client_key = Some(certs_dir.join(format!("{name}.key")));
        }
        connection
    };
    let reads = |connection: Connection| {
        block_on(async move {
            let mut client = connection
                .connect()
                .await
                .map_err(|error| format!("{error:#}"))?;
            snapshot(
                &mut client,
                &json!({"collection": "invoice_matches", "limit": 3}),
            )
            .await
            .map(|(rows, _)| rows.len())
            .map_err(|status| format!("{status:?}"))
        })
    };
    assert_eq!(reads(client("ca1", Some("client"))), Ok(3));
    assert!(
        reads(client("ca1", None)).is_err(),
        "no client certificate: no connection"
    );
    assert!(
        reads(client("ca1", Some("stranger"))).is_err(),
        "a certificate of another CA: no connection"
    );
    assert!(
        reads(client("ca2", Some("client"))).is_err(),
        "the server's certificate is not from ca2 yet"
    );

    rotate(certs_dir, "second");
    wait_for("the rotated certificate", Duration::from_secs(20), || {
        reads(client("ca2", Some("client"))) == Ok(3)
    });
    assert!(
        reads(client("ca1", Some("client"))).is_err(),
        "the old certificate is gone"
    );
    // The metrics endpoint rotated too, and answers over TLS.
    let health = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args([
            "health",
            "--url",
            &format!("https://localhost:{}/healthz", port_of(&served.metrics)),
        ])
        .args(["--tls-ca", &path("ca2.pem")])
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let plain = http_get(&served.metrics, "/healthz");
    assert!(
        plain.as_ref().is_none_or(|(status, _)| *status != 200),
        "no answer in clear: {plain:?}"
    );
}

#[test]
fn pyarrow_authenticates_over_tls_and_reads_its_tenant_only() {
    let Ok(python) = std::env::var("TRIMATCH_PYTHON") else {
        eprintln!("TRIMATCH_PYTHON is not set: skipping the pyarrow test (scripts/test sets it)");
        return;
    };
    let broker = broker_with_history(154);
    let dir = tempfile::tempdir().unwrap();
    certs::make_ca(dir.path(), "ca");
    certs::make_cert(dir.path(), "ca", "server");
    let auth_file = dir.path().join("auth.toml");
    let reader = add_token(&auth_file, "analyst", "reader", "tenant-003");
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let served = serve(
        &broker,
        dir.path(),
        &[
            "--auth-file",
            &path("auth.toml"),
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
        ],
        Some(&dir.path().join("ca.pem")),
    );
    run_python_check(
        &python,
        "secure_client.py",
        &[
            (
                "FLIGHT_URL",
                format!("grpc+tls://localhost:{}", port_of(&served.flight)),
            ),
            ("CA_FILE", path("ca.pem")),
            ("USER_NAME", "analyst".to_string()),
            ("TOKEN", reader),
            ("TENANT", "tenant-003".to_string()),
            ("OTHER_TENANT", "tenant-000".to_string()),
            ("BROKERS", broker.address.clone()),
        ],
    );
}
