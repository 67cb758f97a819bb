//! TLS for the Flight service and the metrics endpoint (rustls): a server
//! configuration re-read from its files when they change (checked every few
//! seconds) or on SIGHUP, so that certificates rotate without a restart, and
//! an accept loop that hands completed TLS connections to tonic or axum.
//!
//! Each connection is accepted with the configuration current at that
//! moment; connections already open keep theirs. A rotation that fails (a
//! half-written file, a key that does not match) is logged and the previous
//! configuration stays in use.
//!
//! May use: rustls and the sockets; nothing else of trimatch.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of a server's TLS identity (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(self.client_ca.as_ref())
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .map(|path| {
                std::fs::metadata(path)
                    .and_then(|meta| meta.modified())
                    .ok()
            })
            .collect()
    }
}

/// A server TLS configuration that follows its files.
pub struct ServerTls {
    files: TlsFiles,
    /// Protocols offered by ALPN: `h2` for gRPC, `http/1.1` for the metrics.
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    loaded: Mutex<Vec<Option<SystemTime>>>,
}

impl ServerTls {
    /// Loads `files`; fails with a message naming the file at fault.
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerTls>> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let loaded = files.modified();
        let config = server_config(&files, &alpn)?;
        Ok(Arc::new(ServerTls {
            files,
            alpn,
            current: RwLock::new(Arc::new(config)),
            loaded: Mutex::new(loaded),
        }))
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls lock").clone()
    }

    /// Re-reads the files; on failure the current configuration stays.
    pub fn reload(&self) -> Result<()> {
        self.load_files(self.files.modified())
    }

    /// Loads the files, whose modification times were `modified` before
    /// they were read: those times are remembered even when loading fails, so
    /// that any later write (the key landing after the certificate) is seen
    /// as a change and tried again.
    fn load_files(&self, modified: Vec<Option<SystemTime>>) -> Result<()> {
        let config = server_config(&self.files, &self.alpn);
        *self.loaded.lock().expect("tls lock") = modified;
        *self.current.write().expect("tls lock") = Arc::new(config?);
        tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded");
        Ok(())
    }

    /// Reloads whenever a file's modification time changes, until the
    /// runtime ends.
    pub fn watch(self: &Arc<Self>) {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(WATCH_INTERVAL);
            loop {
                ticker.tick().await;
                let Some(tls) = tls.upgrade() else { return };
                let modified = tls.files.modified();
                if *tls.loaded.lock().expect("tls lock") == modified {
                    continue;
                }
                if let Err(error) = tls.load_files(modified) {
                    tracing::error!(error = format!("{error:#}"), "the changed TLS files could not be loaded; the previous certificate stays in use");
                }
            }
        });
    }
}

fn server_config(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("no private key in {} (PEM)", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).with_context(|| {
                    format!("a certificate in {} is not a usable CA", ca.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("the client CA {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the key {} does not fit the certificate {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// The certificates of a PEM file (at least one).
pub fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM certificates", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate (PEM)", path.display());
    }
    Ok(certs)
}

/// Accepts TCP connections on `listener` and completes their TLS handshakes
/// (each in its own task, so a slow client holds up no one); the connections
/// come out of the returned channel.
pub fn accept(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        while !sender.is_closed() {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = TlsAcceptor::from(tls.config());
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send((stream, peer)).await;
                    }
                    Ok(Err(error)) => tracing::info!(%peer, %error, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    receiver
}

/// TLS connections as a stream, for tonic's `serve_with_incoming`.
pub fn incoming(
    receiver: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
) -> impl futures::Stream<Item = io::Result<TlsStream<TcpStream>>> {
    use futures::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(receiver).map(|(stream, _)| Ok(stream))
}

/// TLS connections as an axum listener.
pub struct TlsListener {
    receiver: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: Arc<ServerTls>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            receiver: accept(listener, tls),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
