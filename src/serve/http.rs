//! The HTTP endpoint on `--metrics-addr`: `/metrics` (Prometheus), `/healthz`
//! (alive) and `/readyz` (ready), in clear or over TLS.
//!
//! Requests from loopback are always answered; from anywhere else, when a
//! metrics token is configured, they need `authorization: Bearer <token>`
//! (Prometheus's `authorization` scrape setting). Serving a non-loopback
//! address without a token is refused at startup (see `cli::security`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use super::metrics::{Metrics, CONTENT_TYPE};
use super::tls::{ServerTls, TlsListener};
use crate::pipeline::PipelineHandle;

/// Who may read the endpoint from elsewhere than loopback.
#[derive(Clone, Default)]
pub struct HttpAccess {
    /// The bearer token non-loopback requests must present.
    pub token: Option<Arc<String>>,
}

#[derive(Clone)]
struct Endpoints {
    pipeline: PipelineHandle,
    metrics: Arc<Metrics>,
}

/// The address a request came from.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until
/// `shutdown`, over TLS if `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    access: HttpAccess,
    pipeline: PipelineHandle,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn_with_state(access, guard))
        .with_state(Endpoints { pipeline, metrics });
    match tls {
        Some(tls) => {
            let listener = TlsListener::new(listener, tls)?;
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Lets loopback requests through, and others with the token.
async fn guard(
    State(access): State<HttpAccess>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    if allowed(&access, peer.0, request.headers().get("authorization")) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Bearer")],
        "this endpoint needs \"authorization: Bearer <metrics token>\" from outside loopback (the token of --metrics-token-file)\n",
    )
        .into_response()
}

fn allowed(
    access: &HttpAccess,
    peer: SocketAddr,
    header: Option<&axum::http::HeaderValue>,
) -> bool {
    let Some(token) = &access.token else {
        return true;
    };
    if peer.ip().is_loopback() {
        return true;
    }
    let presented = header
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(presented.trim().as_bytes().ct_eq(token.as_bytes()))
}

async fn scrape(
    State(endpoints): State<Endpoints>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let text = tokio::task::spawn_blocking(move || endpoints.metrics.render(&endpoints.pipeline))
        .await
        .unwrap_or_else(|error| format!("# scrape failed: {error}\n"));
    (StatusCode::OK, [("content-type", CONTENT_TYPE)], text)
}

/// Alive: the job has not failed and its workers are not stuck.
async fn healthz(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    match endpoints.pipeline.unhealthy() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// Ready: caught up, no partition stalled, not too far behind (see
/// [`PipelineHandle::not_ready`]).
async fn readyz(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    match endpoints.pipeline.not_ready() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_open_and_elsewhere_needs_the_token() {
        let open = HttpAccess::default();
        let guarded = HttpAccess {
            token: Some(Arc::new("s3cret".to_string())),
        };
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let header = |text: &str| Some(axum::http::HeaderValue::from_str(text).unwrap());
        assert!(allowed(&open, remote, None));
        assert!(allowed(&guarded, loopback, None));
        assert!(allowed(&guarded, "[::1]:5000".parse().unwrap(), None));
        assert!(!allowed(&guarded, remote, None));
        assert!(!allowed(&guarded, remote, header("Bearer wrong").as_ref()));
        assert!(allowed(&guarded, remote, header("Bearer s3cret").as_ref()));
    }
}
