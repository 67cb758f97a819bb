//! `trimatch health`: asks a running trimatch's /healthz or /readyz and
//! exits 0 when it answers 200, 1 otherwise: a probe for container
//! orchestrators that works over TLS, from loopback, where the endpoint
//! needs no token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::serve::tls::read_certs;

#[derive(Args)]
pub struct HealthArgs {
    /// The endpoint: http(s)://host:port/healthz or /readyz.
    #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
    url: String,
    /// Speak TLS, trusting this CA (PEM).
    #[arg(long, env = "TRIMATCH_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    timeout_seconds: u64,
}

/// Returns whether the endpoint answered 200; prints its answer.
pub fn run(args: HealthArgs) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(args.timeout_seconds);
    let (status, body) = runtime
        .block_on(async { tokio::time::timeout(timeout, get(&args)).await })
        .with_context(|| {
            format!(
                "{} did not answer within {} s",
                args.url, args.timeout_seconds
            )
        })??;
    print!("{body}");
    Ok(status == 200)
}

async fn get(args: &HealthArgs) -> Result<(u16, String)> {
    let uri: hyper::Uri = args
        .url
        .parse()
        .with_context(|| format!("bad URL {:?}", args.url))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!(
            "the URL must start with http:// or https://, got {:?}",
            args.url
        ),
    };
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let request = hyper::Request::get(uri.path())
        .header("host", format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())?;
    if tls {
        let mut roots = rustls::RootCertStore::empty();
        let ca = args
            .tls_ca
            .as_ref()
            .context("https:// needs --tls-ca, the CA that signed the server's certificate")?;
        for cert in read_certs(ca)? {
            roots.add(cert)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(host.clone())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .context("TLS handshake with the endpoint")?;
        send(TokioIo::new(stream), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<T>(io: T, request: hyper::Request<Empty<Bytes>>) -> Result<(u16, String)>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
