//! `serve`'s security options (SPEC §9): TLS for Flight, the metrics endpoint
//! and the cluster peers; who may call (API tokens, JWTs, the cluster token);
//! the audit log; and the rule that a non-loopback address is never served
//! without authentication unless `--insecure-no-auth` says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::serve::auth::{AuthConfig, Authenticator, JwtConfig};
use crate::serve::http::HttpAccess;
use crate::serve::reader::{PeerLink, PeerTls};
use crate::serve::tls::{ServerTls, TlsFiles};

#[derive(Args, Clone, Debug, Default)]
pub struct SecurityArgs {
    /// TLS certificate chain (PEM) of the Flight service and the metrics
    /// endpoint; re-read when the file changes or on SIGHUP.
    #[arg(
        long,
        env = "TRIMATCH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "TRIMATCH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: Flight clients must present a certificate signed by this CA.
    #[arg(
        long,
        env = "TRIMATCH_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
    /// The CA that signed the other cluster processes' certificates (default:
    /// --tls-client-ca, else the system's roots).
    #[arg(
        long,
        env = "TRIMATCH_TLS_PEER_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_peer_ca: Option<PathBuf>,
    /// API tokens (TOML), as `trimatch auth add-token` writes them; re-read on SIGHUP.
    #[arg(long, env = "TRIMATCH_AUTH_FILE", value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// Accept HS256 JWTs signed with the secret in this file (at least 32 bytes).
    #[arg(long, env = "TRIMATCH_JWT_HS256_SECRET_FILE", value_name = "FILE")]
    jwt_hs256_secret_file: Option<PathBuf>,
    /// Accept RS256 JWTs signed by a key of this JWKS document.
    #[arg(long, env = "TRIMATCH_JWT_JWKS_FILE", value_name = "FILE")]
    jwt_jwks_file: Option<PathBuf>,
    /// The issuer (iss) JWTs must name.
    #[arg(long, env = "TRIMATCH_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// The audience (aud) JWTs must name.
    #[arg(long, env = "TRIMATCH_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// The JWT claim with the tenant scope: a list of tenant ids, or "*".
    #[arg(long, env = "TRIMATCH_JWT_TENANT_CLAIM", default_value = "tenants")]
    jwt_tenant_claim: String,
    /// The JWT claim with the role: reader (the default) or admin.
    #[arg(long, env = "TRIMATCH_JWT_ROLE_CLAIM", default_value = "role")]
    jwt_role_claim: String,
    /// A file with the token the processes of a cluster present to each other
    /// (shard reads); the same file on every process.
    #[arg(long, env = "TRIMATCH_CLUSTER_TOKEN_FILE", value_name = "FILE")]
    cluster_token_file: Option<PathBuf>,
    /// How long a Handshake's session token is valid.
    #[arg(long, env = "TRIMATCH_SESSION_TTL_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    session_ttl_seconds: u64,
    /// A file with the bearer token that /metrics, /healthz and /readyz need
    /// from outside loopback.
    #[arg(long, env = "TRIMATCH_METRICS_TOKEN_FILE", value_name = "FILE")]
    metrics_token_file: Option<PathBuf>,
    /// Log one structured line per authenticated Flight request (principal,
    /// method, collection, tenant scope, rows, outcome), target trimatch::audit.
    #[arg(long, env = "TRIMATCH_AUDIT_LOG")]
    audit_log: bool,
    /// Serve a non-loopback address without authentication (anyone who can
    /// reach it reads every tenant's data).
    #[arg(long, env = "TRIMATCH_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
}

/// The security of a running `serve`, built from [`SecurityArgs`].
pub struct Security {
    pub auth: Arc<Authenticator>,
    pub audit: bool,
    pub flight_tls: Option<Arc<ServerTls>>,
    pub http_tls: Option<Arc<ServerTls>>,
    pub http_access: HttpAccess,
    pub peer_link: PeerLink,
}

impl SecurityArgs {
    /// Whether --insecure-no-auth was given.
    pub fn insecure_no_auth(&self) -> bool {
        self.insecure_no_auth
    }

    /// Checks the options against the addresses served and loads every file
    /// they name. Refuses a non-loopback address without authentication.
    pub fn load(
        &self,
        flight_addr: SocketAddr,
        metrics_addr: SocketAddr,
        processes: usize,
    ) -> Result<Security> {
        let cluster_token = self
            .cluster_token_file
            .as_deref()
            .map(|path| read_secret(path, "cluster token"))
            .transpose()?;
        let identity_provider = (self.jwt_hs256_secret_file.is_some()
            || self.jwt_jwks_file.is_some())
        .then(|| JwtConfig {
            hs256_secret_file: self.jwt_hs256_secret_file.clone(),
            jwks_file: self.jwt_jwks_file.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            tenant_claim: self.jwt_tenant_claim.clone(),
            role_claim: self.jwt_role_claim.clone(),
        });
        let auth = Authenticator::new(AuthConfig {
            token_file: self.auth_file.clone(),
            identity_provider,
            cluster_token: cluster_token.clone(),
            session_ttl: Duration::from_secs(self.session_ttl_seconds),
        })?;
        if let Some(file) = &self.auth_file {
            if auth.token_count() == 0 && !auth.accepts_jwts() {
                bail!(
                    "the token file {} holds no tokens, so no one could call; add one with \
                     `trimatch auth add-token --file {} --name NAME --role admin --tenants '*'`",
                    file.display(),
                    file.display()
                );
            }
        }
        if !auth.is_enabled() && !flight_addr.ip().is_loopback() && !self.insecure_no_auth {
            bail!(
                "refusing to serve Flight on {flight_addr} without authentication: anyone who can reach it would read \
                 every tenant's data. Give --auth-file (tokens from `trimatch auth add-token`) or a JWT key \
                 (--jwt-hs256-secret-file, --jwt-jwks-file), bind a loopback address, or pass --insecure-no-auth"
            );
        }
        let metrics_token = self
            .metrics_token_file
            .as_deref()
            .map(|path| read_secret(path, "metrics token"))
            .transpose()?;
        if metrics_token.is_none() && !metrics_addr.ip().is_loopback() && !self.insecure_no_auth {
            bail!(
                "refusing to serve metrics and health on {metrics_addr} without a token: give --metrics-token-file \
                 (Prometheus sends it as a bearer token; loopback requests need none), bind a loopback address, \
                 or pass --insecure-no-auth"
            );
        }
        if processes > 1 && auth.is_enabled() && cluster_token.is_none() {
            bail!(
                "with authentication on, the processes of a cluster authenticate to each other with \
                 --cluster-token-file (the same secret on every process)"
            );
        }
        let files = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        if files.is_none() && auth.is_enabled() && !flight_addr.ip().is_loopback() {
            tracing::warn!(
                %flight_addr,
                "credentials and data cross the network in clear: give --tls-cert and --tls-key"
            );
        }
        let flight_tls = files
            .clone()
            .map(|files| ServerTls::load(files, &[b"h2"]))
            .transpose()
            .context("the Flight service's TLS")?;
        let http_tls = files
            .clone()
            .map(|files| {
                ServerTls::load(
                    TlsFiles {
                        client_ca: None,
                        ..files
                    },
                    &[b"http/1.1"],
                )
            })
            .transpose()
            .context("the metrics endpoint's TLS")?;
        let peer_link = PeerLink {
            tls: files.as_ref().map(|files| self.peer_tls(files)),
            cluster_token,
        };
        Ok(Security {
            auth: Arc::new(auth),
            audit: self.audit_log,
            flight_tls,
            http_tls,
            http_access: HttpAccess {
                token: metrics_token.map(Arc::new),
            },
            peer_link,
        })
    }

    /// How this process verifies the others, and (for mutual TLS) the
    /// certificate it presents to them: its own.
    fn peer_tls(&self, files: &TlsFiles) -> PeerTls {
        PeerTls {
            ca: self
                .tls_peer_ca
                .clone()
                .or_else(|| self.tls_client_ca.clone()),
            identity: files
                .client_ca
                .is_some()
                .then(|| (files.cert.clone(), files.key.clone())),
        }
    }
}

impl Security {
    /// Re-reads the token file and the certificates on SIGHUP, for as long as
    /// the runtime runs; and the certificates whenever their files change.
    pub fn reload_on_signal(&self) {
        for tls in self.flight_tls.iter().chain(&self.http_tls) {
            tls.watch();
        }
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let auth = self.auth.clone();
            let tls: Vec<Arc<ServerTls>> = self
                .flight_tls
                .iter()
                .chain(&self.http_tls)
                .cloned()
                .collect();
            tokio::spawn(async move {
                let Ok(mut hangup) = signal(SignalKind::hangup()) else {
                    return;
                };
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the token file and the TLS certificates");
                    if let Err(error) = auth.reload() {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "the token file could not be reloaded; the tokens in use stay"
                        );
                    }
                    for tls in &tls {
                        if let Err(error) = tls.reload() {
                            tracing::error!(error = format!("{error:#}"), "the TLS files could not be reloaded; the previous certificate stays in use");
                        }
                    }
                }
            });
        }
    }
}

/// A secret from a file, without surrounding whitespace; never empty.
fn read_secret(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.len() < 16 {
        bail!(
            "the {what} in {} is shorter than 16 characters",
            path.display()
        );
    }
    Ok(secret)
}
