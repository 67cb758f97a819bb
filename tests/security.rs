//! Authentication and authorization end to end (SPEC §9), against `trimatch
//! serve` processes over a real broker (tansu): what each principal reads in
//! every Flight call, who is refused what, JWTs, the failure limiter, and
//! secure defaults. TLS and the metrics endpoint are in
//! `security_transport.rs`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};
use support::secured::*;
use support::*;

use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use trimatch::cli::connection::Connection;

/// The tenant collections, with a column other than the tenant to filter on.
const TENANT_COLLECTIONS: [(&str, &str); 8] = [
    ("invoice_matches", "status"),
    ("match_exceptions", "exception_type"),
    ("po_lines", "po_status"),
    ("exception_summary", "exception_type"),
    ("po_suggestions", "matched_by"),
    ("payment_matches", "status"),
    ("payment_exceptions", "exception_type"),
    ("payment_suggestions", "invoice_id"),
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
                .args(["-HUP", &served.process.id().to_string()])
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

        // A policy preview (SPEC §12.4) is for admins of the policies' tenant.
        let preview = |tenant: &str| {
            let body = json!({"upsert": [{"tenant_id": tenant, "vendor_id": "V-000", "price_tolerance_pct": "5"}]});
            Action::new("preview_policy", body.to_string())
        };
        let results: Vec<_> = tenant_admin
            .do_action(preview("tenant-001"))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(results.len(), 2, "two Arrow IPC streams");
        for (who, client, tenant, says) in [
            (
                "a tenant admin",
                &mut tenant_admin,
                "tenant-002",
                "admin of the tenants tenant-001 only",
            ),
            ("a reader", &mut client, "tenant-001", "has the reader role"),
        ] {
            let status = client
                .do_action(preview(tenant))
                .await
                .map(|_| ())
                .map_err(status_of)
                .unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::PermissionDenied,
                "{who}: {status:?}"
            );
            assert!(status.message().contains(says), "{who}: {status:?}");
        }
        // The processes' internal shard reads are not for callers.
        let status = tenant_admin
            .do_action(Action::new("preview_policy_shard", "{}"))
            .await
            .map(|_| ())
            .map_err(status_of)
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        let status = tenant_admin
            .do_action(Action::new(
                "preview_policy",
                r#"{"upsert": [{"tenant_id": "tenant-001", "qty_tolerance_abs": "x"}]}"#,
            ))
            .await
            .map(|_| ())
            .map_err(status_of)
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("upsert[0].qty_tolerance_abs"),
            "{status:?}"
        );

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
    // Repeated failures for one identity are refused from that address, and
    // only for that identity: a valid token from the same address (behind
    // one ingress or NAT, every user's) is not locked out (the audit's
    // lockout reproduction).
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
        let status = snapshot(&mut wrong, &json!("po_lines")).await.unwrap_err();
        assert!(
            status
                .message()
                .contains("too many failed authentications as token:00000000 from 127.0.0.1"),
            "{status:?}"
        );
        let mut right = connection(&served, Some(&reader)).connect().await.unwrap();
        snapshot(&mut right, &json!({"collection": "po_lines"}))
            .await
            .expect("a valid token is not throttled by another identity's failures");
    });
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
