//! What authentication costs each Flight call: verifying an API token (a
//! salted SHA-256 and a constant-time compare), a Handshake's session token
//! (an HS256 JWT), and Basic credentials, through the same `Authenticator`
//! the service uses. The rate limiter and the token file's lookup are part
//! of each figure.
//!
//! `cargo bench --bench auth`. Figures go in docs/performance.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tonic::metadata::MetadataMap;
use trimatch::serve::auth::{AuthConfig, Authenticator, Role, TenantScope, TokenFile};

fn header(value: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", value.parse().unwrap());
    metadata
}

fn authentication(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.toml");
    // A file of 1,000 principals: the id in the token finds its entry.
    for index in 0..999 {
        TokenFile::add(
            &file,
            &format!("reader-{index}"),
            Role::Reader,
            TenantScope::All,
        )
        .unwrap();
    }
    let scope = TenantScope::from_list(&["acme", "globex"]).unwrap();
    let token = TokenFile::add(&file, "dashboards", Role::Reader, scope).unwrap();
    let auth = Authenticator::new(AuthConfig {
        token_file: Some(file),
        session_ttl: Duration::from_secs(3600),
        ..AuthConfig::default()
    })
    .unwrap();
    let bearer = header(&format!("Bearer {token}"));
    let (_, session) = auth.handshake(&bearer, None).unwrap();
    let session = header(&format!("Bearer {session}"));
    use base64::Engine as _;
    let basic = header(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("dashboards:{token}"))
    ));
    let peer = Some("10.0.0.1".parse().unwrap());
    let mut group = c.benchmark_group("authenticate");
    group.bench_function("API token (bearer)", |b| {
        b.iter(|| auth.authenticate(&bearer, peer).unwrap())
    });
    group.bench_function("session token (HS256 JWT)", |b| {
        b.iter(|| auth.authenticate(&session, peer).unwrap())
    });
    group.bench_function("Basic credentials", |b| {
        b.iter(|| auth.authenticate(&basic, peer).unwrap())
    });
    group.finish();
}

criterion_group!(benches, authentication);
criterion_main!(benches);
