//! Security end to end (SPEC §9), against `trimatch serve` processes over a
//! real broker (tansu): who may call, what each principal reads, TLS with
//! certificates the tests make, rotation without a restart, mutual TLS, and
//! secure defaults. pyarrow's side is in `tests/python/secure_client.py`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_flight::decode::DecodedPayload;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::*;
use trimatch::cli::connection::Connection;
use trimatch_workload::{Workload, WorkloadConfig};

const TENANTS: usize = 5;

/// A broker with a produced history of `TENANTS` tenants.
fn broker_with_history(seed: u64) -> Tansu {
    let broker = Tansu::start();
    create_input_topics(&broker.address, [2, 1, 2, 1]);
    let messages: Vec<_> = Workload::new(WorkloadConfig {
        seed,
        tenants: TENANTS,
        bad_share: 0.02,
        ..WorkloadConfig::default()
    })
    .take(1_500)
    .collect();
    produce(&broker.address, &messages);
    broker
}

/// A running `trimatch serve`, its addresses, and where its log goes.
struct Served {
    _process: KillOnDrop,
    flight: String,
    metrics: String,
    log: PathBuf,
}

/// Starts `trimatch serve` against `broker` with `args`, and waits until it
/// is ready (asked over loopback, where the metrics need no token).
fn serve(broker: &Tansu, dir: &Path, args: &[&str], tls_ca: Option<&Path>) -> Served {
    let (flight, metrics) = (free_addr(), free_addr());
    let log = dir.join(format!("serve-{}.log", flight.replace([':', '.'], "-")));
    let process = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["serve", "--brokers", &broker.address, "--workers", "2"])
        .args(["--flight-addr", &flight, "--metrics-addr", &metrics])
        .args(args)
        .env("TRIMATCH_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let process = KillOnDrop::new(process);
    let scheme = if tls_ca.is_some() { "https" } else { "http" };
    wait_for("readiness", Duration::from_secs(60), || {
        let mut health = Command::new(env!("CARGO_BIN_EXE_trimatch"));
        health.args([
            "health",
            "--url",
            &format!("{scheme}://localhost:{}/readyz", port_of(&metrics)),
        ]);
        if let Some(ca) = tls_ca {
            health.args(["--tls-ca", ca.to_str().unwrap()]);
        }
        health.output().is_ok_and(|output| output.status.success())
    });
    Served {
        _process: process,
        flight,
        metrics,
        log,
    }
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

/// Adds a token to the file and returns it (through the CLI, as an operator does).
fn add_token(file: &Path, name: &str, role: &str, tenants: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["auth", "add-token", "--file", file.to_str().unwrap()])
        .args(["--name", name, "--role", role, "--tenants", tenants])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn connection(served: &Served, token: Option<&str>) -> Connection {
    let mut connection = Connection::plain(&served.flight);
    connection.token = token.map(str::to_string);
    connection
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The rows of `batches` as text cells, sorted (an order-free comparison).
fn rows_of(batches: &[RecordBatch], skip: &[&str]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("∅");
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<usize> = (0..batch.num_columns())
            .filter(|index| !skip.contains(&batch.schema().field(*index).name().as_str()))
            .collect();
        // Timestamps as epoch numbers: the formatter knows no named time zones.
        let arrays: Vec<_> = columns
            .iter()
            .map(|index| match batch.column(*index).data_type() {
                DataType::Timestamp(_, _) => cast(batch.column(*index), &DataType::Int64).unwrap(),
                _ => batch.column(*index).clone(),
            })
            .collect();
        let formatters: Vec<_> = arrays
            .iter()
            .map(|array| ArrayFormatter::try_new(array.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|formatter| formatter.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows.sort();
    rows
}

/// A snapshot's rows and `trimatch.as_of`, or the gRPC status.
async fn snapshot(
    client: &mut FlightClient,
    ticket: &Value,
) -> Result<(Vec<Vec<String>>, u64), tonic::Status> {
    let mut stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .map_err(status_of)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(status_of)?);
    }
    let as_of = stream
        .schema()
        .and_then(|schema| schema.metadata().get("trimatch.as_of").cloned());
    Ok((
        rows_of(&batches, &[]),
        as_of.and_then(|time| time.parse().ok()).unwrap_or(0),
    ))
}

/// A subscription's snapshot (the rows before its first progress message).
async fn subscription_snapshot(
    client: &mut FlightClient,
    ticket: &Value,
) -> Result<Vec<Vec<String>>, tonic::Status> {
    let stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .map_err(status_of)?;
    let mut messages = stream.into_inner();
    let mut batches = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(status_of)?;
        if let DecodedPayload::RecordBatch(batch) = message.payload {
            if batch.num_rows() == 0 {
                break;
            }
            batches.push(batch);
        }
    }
    Ok(rows_of(&batches, &["_time", "_diff"]))
}

fn status_of(error: arrow_flight::error::FlightError) -> tonic::Status {
    match error {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    }
}

/// The tenant collections, with a column other than the tenant to filter on.
const TENANT_COLLECTIONS: [(&str, &str); 4] = [
    ("invoice_matches", "status"),
    ("match_exceptions", "exception_type"),
    ("po_lines", "po_status"),
    ("exception_summary", "exception_type"),
];

#[test]
fn tenant_scoped_readers_see_exactly_their_tenants_rows_in_every_call() {
    let broker = broker_with_history(151);
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.toml");
    let admin = add_token(&auth_file, "ops", "admin", "*");
    let served = serve(
        &broker,
        dir.path(),
        &["--auth-file", auth_file.to_str().unwrap(), "--audit-log"],
        None,
    );
    let tenants: Vec<String> = (0..TENANTS)
        .map(|index| format!("tenant-{index:03}"))
        .collect();
    let mut rng = SmallRng::seed_from_u64(151);

    block_on(async {
        let mut admin_client = connection(&served, Some(&admin)).connect().await.unwrap();
        // Every tenant has rows, so an empty scoped answer would be noticed.
        let (all, as_of) = snapshot(&mut admin_client, &json!({"collection": "invoice_matches"}))
            .await
            .unwrap();
        for tenant in &tenants {
            assert!(
                all.iter().any(|row| &row[0] == tenant),
                "{tenant} has invoices"
            );
        }
        for reader in 0..4 {
            let scope: BTreeSet<String> = tenants
                .iter()
                .filter(|_| rng.random_bool(0.4))
                .cloned()
                .collect();
            let scope = if scope.is_empty() {
                BTreeSet::from([tenants[reader].clone()])
            } else {
                scope
            };
            let list = scope.iter().cloned().collect::<Vec<_>>().join(",");
            let token = add_token(&auth_file, &format!("reader-{reader}"), "reader", &list);
            let _ = Command::new("kill")
                .args(["-HUP", &served_pid(&served)])
                .status();
            let mut client = connection(&served, Some(&token)).connect().await.unwrap();
            wait_for_token(&mut client).await;
            for case in 0..25 {
                let (name, column) =
                    TENANT_COLLECTIONS[rng.random_range(0..TENANT_COLLECTIONS.len())];
                let outside: Vec<&String> = tenants
                    .iter()
                    .filter(|tenant| !scope.contains(*tenant))
                    .collect();
                let mut filter = serde_json::Map::new();
                let mut tenant_list: Option<Vec<String>> = None;
                let mut denied = false;
                match rng.random_range(0..5) {
                    0 => {}
                    1 => {
                        let tenant = scope.iter().nth(rng.random_range(0..scope.len())).unwrap();
                        filter.insert("tenant_id".into(), json!(tenant));
                    }
                    2 if !outside.is_empty() => {
                        filter.insert(
                            "tenant_id".into(),
                            json!(outside[rng.random_range(0..outside.len())]),
                        );
                        denied = true;
                    }
                    3 => {
                        // A column other than the tenant: admin's answer, limited to the scope.
                        let (rows, _) = snapshot(&mut admin_client, &json!({"collection": name}))
                            .await
                            .unwrap();
                        let schema_column = column_index(&mut admin_client, name, column).await;
                        if let Some(row) = rows.first() {
                            let value = &row[schema_column];
                            filter.insert(column.into(), json!(value));
                        }
                    }
                    _ => {
                        let mut listed: Vec<String> = scope
                            .iter()
                            .filter(|_| rng.random_bool(0.6))
                            .cloned()
                            .collect();
                        if !outside.is_empty() && rng.random_bool(0.3) {
                            listed.push(outside[0].clone());
                            denied = true;
                        }
                        if listed.is_empty() {
                            listed.push(scope.iter().next().unwrap().clone());
                        }
                        tenant_list = Some(listed);
                    }
                }
                let mut ticket = json!({"collection": name, "filter": filter, "as_of": as_of});
                if let Some(listed) = &tenant_list {
                    ticket["tenants"] = json!(listed);
                }
                let visible: BTreeSet<&String> = match &tenant_list {
                    Some(listed) => listed
                        .iter()
                        .filter(|tenant| scope.contains(*tenant))
                        .collect(),
                    None => scope.iter().collect(),
                };
                let mut admin_ticket = ticket.clone();
                admin_ticket.as_object_mut().unwrap().remove("tenants");
                let (admin_rows, _) = snapshot(&mut admin_client, &admin_ticket).await.unwrap();
                let expected: Vec<Vec<String>> = admin_rows
                    .into_iter()
                    .filter(|row| visible.contains(&row[0]))
                    .collect();
                let context = format!("reader {reader} scope {scope:?}, case {case}: {ticket}");
                let subscribe = rng.random_bool(0.3);
                let answer = if subscribe {
                    let mut subscription = ticket.clone();
                    let object = subscription.as_object_mut().unwrap();
                    object.remove("collection");
                    object.insert("subscribe".into(), json!(name));
                    subscription_snapshot(&mut client, &subscription).await
                } else {
                    snapshot(&mut client, &ticket).await.map(|(rows, _)| rows)
                };
                match answer {
                    Err(status) if denied => {
                        assert_eq!(
                            status.code(),
                            tonic::Code::PermissionDenied,
                            "{context}: {status:?}"
                        );
                        assert!(
                            status.message().contains("may read the tenants"),
                            "{context}: {status:?}"
                        );
                    }
                    Ok(rows) if !denied => {
                        assert_eq!(rows, expected, "{context}");
                        assert!(rows.iter().all(|row| scope.contains(&row[0])), "{context}");
                    }
                    other => panic!("{context}: denied = {denied}, got {other:?}"),
                }
                // GetFlightInfo decides the same way.
                let info = client
                    .get_flight_info(FlightDescriptor::new_cmd(ticket.to_string()))
                    .await
                    .map_err(status_of);
                assert_eq!(info.is_err(), denied, "{context}: {info:?}");
            }
            // ListFlights: only the tenant collections, counted over the scope.
            let mut infos = client.list_flights("").await.unwrap();
            let mut listed = BTreeMap::new();
            while let Some(info) = infos.next().await {
                let info = info.unwrap();
                listed.insert(
                    info.flight_descriptor.unwrap().path[0].clone(),
                    info.total_records,
                );
            }
            assert_eq!(listed.keys().cloned().collect::<Vec<_>>(), {
                let mut names: Vec<String> = TENANT_COLLECTIONS
                    .iter()
                    .map(|(name, _)| name.to_string())
                    .collect();
                names.sort();
                names
            });
            for (name, count) in listed {
                let (rows, _) = snapshot(&mut admin_client, &json!({"collection": name}))
                    .await
                    .unwrap();
                let expected = rows.iter().filter(|row| scope.contains(&row[0])).count() as i64;
                assert_eq!(count, expected, "{name} over {scope:?}");
            }
        }
    });
    // One audit line per request, naming the principal and the rows sent.
    let log = std::fs::read_to_string(&served.log).unwrap();
    let audit: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "trimatch::audit")
        .collect();
    assert!(audit.len() > 100, "{} audit lines", audit.len());
    assert!(audit
        .iter()
        .any(|line| line["fields"]["principal"] == "reader-0"
            && line["fields"]["method"] == "do_get"
            && line["fields"]["rows"].is_u64()));
    assert!(audit
        .iter()
        .any(|line| line["fields"]["outcome"] == "PermissionDenied"));
}

/// The index of `column` in `collection`'s schema.
async fn column_index(client: &mut FlightClient, collection: &str, column: &str) -> usize {
    let schema = client
        .get_schema(FlightDescriptor::new_path(vec![collection.to_string()]))
        .await
        .unwrap();
    schema.index_of(column).unwrap()
}

fn served_pid(served: &Served) -> String {
    served._process.id().to_string()
}

/// Waits until the server accepts the client's token (after SIGHUP).
async fn wait_for_token(client: &mut FlightClient) {
    for _ in 0..100 {
        match client.list_flights("").await {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("the new token was never accepted (SIGHUP reload)");
}

#[test]
fn readers_are_refused_admin_collections_shards_and_bad_credentials_are_unauthenticated() {
    let broker = broker_with_history(152);
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.toml");
    let admin = add_token(&auth_file, "ops", "admin", "*");
    let reader = add_token(&auth_file, "dash", "reader", "tenant-001");
    let tenant_admin = add_token(&auth_file, "tenant-ops", "admin", "tenant-001");
    let secret_file = dir.path().join("jwt.secret");
    let secret = "a shared secret of at least thirty-two bytes";
    std::fs::write(&secret_file, secret).unwrap();
    let rsa_key = rsa_jwks(dir.path());
    let served = serve(
        &broker,
        dir.path(),
        &[
            "--auth-file",
            auth_file.to_str().unwrap(),
            "--jwt-hs256-secret-file",
            secret_file.to_str().unwrap(),
            "--jwt-jwks-file",
            dir.path().join("jwks.json").to_str().unwrap(),
            "--jwt-issuer",
            "https://idp.test",
            "--jwt-tenant-claim",
            "ap_tenants",
        ],
        None,
    );
    block_on(async {
        let mut client = connection(&served, Some(&reader)).connect().await.unwrap();
        for ticket in [
            json!("dead_letters"),
            json!("source_progress"),
            json!({"collection": "invoice_matches", "shard": true}),
            json!({"subscribe": "dead_letters"}),
        ] {
            let text = ticket
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| ticket.to_string());
            let status = client
                .do_get(Ticket::new(text))
                .await
                .map(|_| ())
                .map_err(status_of)
                .unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::PermissionDenied,
                "{ticket}: {status:?}"
            );
        }
        let status = client
            .do_action(Action::new("status", ""))
            .await
            .map(|_| ())
            .map_err(status_of)
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("for admins"), "{status:?}");
        let status = client
            .get_schema(FlightDescriptor::new_path(vec!["dead_letters".into()]))
            .await
            .map_err(status_of)
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);

        // An admin of one tenant: its tenant's rows, but not what shows every tenant's input.
        let mut tenant_admin = connection(&served, Some(&tenant_admin))
            .connect()
            .await
            .unwrap();
        let status = snapshot(&mut tenant_admin, &json!({"collection": "dead_letters"}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status.message().contains("admins of every tenant"),
            "{status:?}"
        );
        let (rows, _) = snapshot(&mut tenant_admin, &json!({"collection": "po_lines"}))
            .await
            .unwrap();
        assert!(!rows.is_empty() && rows.iter().all(|row| row[0] == "tenant-001"));

        // The admin reads them.
        let mut admin_client = connection(&served, Some(&admin)).connect().await.unwrap();
        let (dead, _) = snapshot(&mut admin_client, &json!({"collection": "dead_letters"}))
            .await
            .unwrap();
        assert!(!dead.is_empty(), "the history has malformed messages");
        assert!(admin_client
            .do_action(Action::new("status", ""))
            .await
            .is_ok());

        // No credentials, a wrong token, a wrong password, a forged or expired JWT.
        let mut anonymous = connection(&served, None).connect().await.unwrap();
        let status = snapshot(&mut anonymous, &json!({"collection": "po_lines"}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(
            status.message().contains("requires authentication"),
            "{status:?}"
        );
        let mut wrong = connection(&served, Some(&format!("{reader}x")))
            .connect()
            .await
            .unwrap();
        assert_eq!(
            snapshot(&mut wrong, &json!({"collection": "po_lines"}))
                .await
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        let mut basic = Connection::plain(&served.flight);
        basic.user = Some("dash".into());
        basic.password = Some(admin.clone());
        let Err(error) = basic.connect().await else {
            panic!("a wrong password is refused")
        };
        assert!(
            format!("{error:#}").contains("wrong token for \"dash\""),
            "{error:#}"
        );
        basic.password = Some(reader.clone());
        let mut session = basic
            .connect()
            .await
            .expect("the right password gives a session");
        let (rows, _) = snapshot(&mut session, &json!({"collection": "invoice_matches"}))
            .await
            .unwrap();
        assert!(!rows.is_empty() && rows.iter().all(|row| row[0] == "tenant-001"));

        let now = chrono::Utc::now().timestamp();
        let jwt = |key: &str, exp: i64| {
            let claims = json!({"sub": "idp-user", "iss": "https://idp.test", "exp": exp, "ap_tenants": ["tenant-002"]});
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
            )
            .unwrap()
        };
        let mut good = connection(&served, Some(&jwt(secret, now + 600)))
            .connect()
            .await
            .unwrap();
        let (rows, _) = snapshot(&mut good, &json!({"collection": "match_exceptions"}))
            .await
            .unwrap();
        assert!(rows.iter().all(|row| row[0] == "tenant-002"));
        assert!(!rows.is_empty());
        // An RS256 token signed by the key of the JWKS file, and one whose kid is unknown.
        let rs256 = |kid: &str, exp: i64| {
            let claims = json!({"sub": "rsa-user", "iss": "https://idp.test", "exp": exp, "ap_tenants": "tenant-003"});
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = Some(kid.to_string());
            jsonwebtoken::encode(&header, &claims, &rsa_key).unwrap()
        };
        let mut rsa = connection(&served, Some(&rs256("test-key", now + 600)))
            .connect()
            .await
            .unwrap();
        let (rows, _) = snapshot(&mut rsa, &json!({"collection": "po_lines"}))
            .await
            .unwrap();
        assert!(!rows.is_empty() && rows.iter().all(|row| row[0] == "tenant-003"));
        for (token, reason) in [
            (rs256("another-key", now + 600), "no key in the JWKS file"),
            (rs256("test-key", now - 3600), "expired"),
            (
                jwt("another secret, also at least thirty-two bytes", now + 600),
                "signature does not verify",
            ),
            (jwt(secret, now - 3600), "expired"),
        ] {
            let mut client = connection(&served, Some(&token)).connect().await.unwrap();
            let status = snapshot(&mut client, &json!({"collection": "po_lines"}))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().contains(reason), "{status:?}");
        }
    });
    // Last (it blocks this address for a minute): repeated failures are refused.
    block_on(async {
        let mut wrong = connection(&served, Some("tmt_00000000_guess"))
            .connect()
            .await
            .unwrap();
        let mut codes = Vec::new();
        for _ in 0..12 {
            codes.push(
                snapshot(&mut wrong, &json!("po_lines"))
                    .await
                    .unwrap_err()
                    .code(),
            );
        }
        assert_eq!(codes[0], tonic::Code::Unauthenticated);
        assert_eq!(codes[11], tonic::Code::ResourceExhausted, "{codes:?}");
        let mut right = connection(&served, Some(&reader)).connect().await.unwrap();
        let status = snapshot(&mut right, &json!("po_lines")).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::ResourceExhausted,
            "even a right token waits"
        );
        assert!(
            status
                .message()
                .contains("too many failed authentications from 127.0.0.1"),
            "{status:?}"
        );
    });
}

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

/// An RSA key made with openssl, its public half as `jwks.json` in `dir`
/// (kid `test-key`), and the key to sign with.
fn rsa_jwks(dir: &Path) -> jsonwebtoken::EncodingKey {
    use base64::Engine as _;
    certs::openssl(dir, &["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(["rsa", "-in", "rsa.pem", "-noout", "-modulus"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let hex = text.trim().strip_prefix("Modulus=").unwrap();
    let modulus: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&hex[index..index + 2], 16).unwrap())
        .collect();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(modulus);
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "test-key", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(dir.join("rsa.pem")).unwrap()).unwrap()
}

#[test]
fn serving_beyond_loopback_needs_authentication_or_an_explicit_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let refused = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args(["serve", "--brokers", "127.0.0.1:1"])
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let flight = format!("0.0.0.0:{port}");
    let stderr = refused(&["--flight-addr", &flight]);
    assert!(
        stderr.contains(&format!(
            "refusing to serve Flight on {flight} without authentication"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    let auth_file = dir.path().join("auth.toml");
    add_token(&auth_file, "ops", "admin", "*");
    let metrics = format!("0.0.0.0:{}", free_port());
    let stderr = refused(&[
        "--flight-addr",
        &flight,
        "--metrics-addr",
        &metrics,
        "--auth-file",
        auth_file.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("refusing to serve metrics and health"),
        "{stderr}"
    );
    // The demo has no authentication at all: loopback only.
    let demo = Command::new(env!("CARGO_BIN_EXE_trimatch"))
        .args(["demo", "--flight-addr", &flight])
        .output()
        .unwrap();
    assert!(!demo.status.success());
    assert!(String::from_utf8_lossy(&demo.stderr).contains("only on loopback"));
    // Explicitly allowed, it starts (and waits for its broker).
    let mut open = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args([
                "serve",
                "--brokers",
                "127.0.0.1:1",
                "--wait-for-topics",
                "--insecure-no-auth",
            ])
            .args(["--flight-addr", &flight, "--metrics-addr", &metrics])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        open.try_wait().unwrap().is_none(),
        "--insecure-no-auth starts"
    );
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/secure_client.py");
    let output = Command::new(python)
        .arg(script)
        .env(
            "FLIGHT_URL",
            format!("grpc+tls://localhost:{}", port_of(&served.flight)),
        )
        .env("CA_FILE", path("ca.pem"))
        .env("USER_NAME", "analyst")
        .env("TOKEN", &reader)
        .env("TENANT", "tenant-003")
        .env("OTHER_TENANT", "tenant-000")
        .env("BROKERS", &broker.address)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the pyarrow client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.trim_end().ends_with("OK"), "{stdout}");
}
