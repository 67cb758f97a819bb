//! How the command-line clients (`query`, `subscribe`) reach a trimatch:
//! its Flight address, the TLS to speak (a CA to trust, a client certificate
//! for mutual TLS) and the credentials to present (an API token or JWT as a
//! bearer token, or a name and token for a Basic Handshake).

use std::path::PathBuf;

use anyhow::{Context, Result};
use arrow_flight::FlightClient;
use clap::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Where and how to connect.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// Address of trimatch's Flight service (`host:port`, or a URL with
    /// http:// or https://).
    #[arg(long, env = "TRIMATCH_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    pub flight_addr: String,
    /// Speak TLS, trusting the CA certificates in this PEM file.
    #[arg(long, env = "TRIMATCH_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS.
    #[arg(
        long,
        env = "TRIMATCH_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "TRIMATCH_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
    /// A bearer token: an API token from `trimatch auth add-token`, or a JWT.
    #[arg(
        long,
        env = "TRIMATCH_TOKEN",
        hide_env_values = true,
        conflicts_with = "user"
    )]
    pub token: Option<String>,
    /// A name for a Basic Handshake (with --password, the token).
    #[arg(long, env = "TRIMATCH_USER", requires = "password")]
    pub user: Option<String>,
    /// The token of --user.
    #[arg(long, env = "TRIMATCH_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl Connection {
    /// A connection in clear, without credentials (a loopback trimatch).
    pub fn plain(flight_addr: &str) -> Connection {
        Connection {
            flight_addr: flight_addr.to_string(),
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            token: None,
            user: None,
            password: None,
        }
    }

    /// A Flight client, connected, with its credentials attached.
    pub async fn connect(&self) -> Result<FlightClient> {
        let tls = self.tls_config()?;
        let addr = &self.flight_addr;
        let url = match (addr.contains("://"), tls.is_some()) {
            (true, _) => addr.clone(),
            (false, true) => format!("https://{addr}"),
            (false, false) => format!("http://{addr}"),
        };
        let mut endpoint = Channel::from_shared(url.clone())
            .with_context(|| format!("bad Flight address {addr:?}"))?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to trimatch's Flight service at {url}"))?;
        let mut client = FlightClient::new(channel);
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            let token = client
                .handshake_basic(user, password)
                .await
                .context("the Handshake with --user and --password was refused")?;
            client.add_header("authorization", &format!("Bearer {token}"))?;
        } else if let Some(token) = &self.token {
            client.add_header("authorization", &format!("Bearer {}", token.trim()))?;
        }
        Ok(client)
    }

    fn tls_config(&self) -> Result<Option<ClientTlsConfig>> {
        let needs_tls = self.tls_ca.is_some()
            || self.tls_client_cert.is_some()
            || self.flight_addr.starts_with("https://");
        if !needs_tls {
            return Ok(None);
        }
        let mut config = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            let cert =
                std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let key =
                std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(Some(config))
    }
}

/// `FlightClient::handshake` with Basic credentials, as Flight servers expect
/// them: the session token comes back in the `authorization` header.
trait BasicHandshake {
    async fn handshake_basic(&mut self, user: &str, password: &str) -> Result<String>;
}

impl BasicHandshake for FlightClient {
    async fn handshake_basic(&mut self, user: &str, password: &str) -> Result<String> {
        use base64::Engine as _;
        use futures::StreamExt;
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut request = tonic::Request::new(futures::stream::iter([
            arrow_flight::HandshakeRequest::default(),
        ]));
        request
            .metadata_mut()
            .insert("authorization", format!("Basic {credentials}").parse()?);
        let response = self
            .inner_mut()
            .handshake(request)
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
        let header = response
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_string);
        let mut replies = response.into_inner();
        let payload = match replies.next().await {
            Some(Ok(reply)) => String::from_utf8(reply.payload.to_vec()).ok(),
            _ => None,
        };
        header
            .or(payload)
            .context("the Handshake answered without a session token")
    }
}
