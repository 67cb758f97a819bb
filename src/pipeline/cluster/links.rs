//! Making the connections to the other processes of the cluster: listen on
//! this process's address for the processes after it, dial the ones before
//! it (timely's order), and take a connection only once its handshake
//! passes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsStream;

use super::handshake::{self, HandshakeError, Local, Role, EXPORTER_LABEL};
use super::transport::{Tls, SERVER_NAME};
use super::ClusterLink;

/// A connection to another process, past its handshake.
pub type PeerStream = TlsStream<TcpStream>;

/// How long a new connection has for TLS and the handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How often a process that is not up yet is dialed again.
const REDIAL: Duration = Duration::from_secs(1);
/// How often waiting for peers is logged.
const WAITING_LOG: Duration = Duration::from_secs(10);

/// A connection to every other process (`None` at this process's index).
pub async fn connect_all(link: &ClusterLink) -> Result<Vec<Option<PeerStream>>> {
    let tls = Tls::new()?;
    let address = &link.addresses[link.process];
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for the cluster's processes on {address}"))?;
    let (accepted, dialed) =
        tokio::try_join!(accept_later(link, &tls, listener), dial_earlier(link, &tls))?;
    let mut peers: Vec<Option<PeerStream>> = (0..link.addresses.len()).map(|_| None).collect();
    for (index, stream) in accepted.into_iter().chain(dialed) {
        peers[index] = Some(stream);
    }
    Ok(peers)
}

/// Takes connections until every process after this one has connected.
/// Strangers are dropped with a warning; the listener closes once all are
/// in.
async fn accept_later(
    link: &ClusterLink,
    tls: &Tls,
    listener: TcpListener,
) -> Result<BTreeMap<usize, PeerStream>> {
    let wanted = link.addresses.len() - link.process - 1;
    let mut peers: BTreeMap<usize, PeerStream> = BTreeMap::new();
    let mut handshakes = JoinSet::new();
    let mut waiting = tokio::time::interval(WAITING_LOG);
    waiting.tick().await;
    while peers.len() < wanted {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, from) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "could not accept a cluster connection");
                        continue;
                    }
                };
                let acceptor = tls.acceptor.clone();
                let link = link.clone();
                handshakes.spawn(async move {
                    let result = tokio::time::timeout(HANDSHAKE_DEADLINE, async {
                        tcp.set_nodelay(true).map_err(|error| stranger("cannot set up the socket", error))?;
                        let mut stream = acceptor.accept(tcp).await.map_err(|error| stranger("no TLS", error))?;
                        let exporter = export(stream.get_ref().1)?;
                        let peer = handshake::run(&mut stream, &local(&link, Role::Acceptor, exporter), |peer| {
                            if peer > link.process && peer < link.addresses.len() {
                                Ok(())
                            } else {
                                Err(format!(
                                    "process {peer} connected to process {}, which only takes processes after it",
                                    link.process
                                ))
                            }
                        })
                        .await?;
                        Ok((peer, TlsStream::Server(stream)))
                    })
                    .await
                    .unwrap_or_else(|_| Err(HandshakeError::Stranger(format!(
                        "no handshake within {} s", HANDSHAKE_DEADLINE.as_secs()
                    ))));
                    (from, result)
                });
            }
            Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                let (from, result) = done.map_err(|error| anyhow!("a cluster handshake failed: {error}"))?;
                match result {
                    Ok((peer, _)) if peers.contains_key(&peer) => tracing::warn!(
                        %from, peer, "dropped a second connection from cluster process {peer}"
                    ),
                    Ok((peer, stream)) => {
                        tracing::info!(%from, peer, "cluster process {peer} connected");
                        peers.insert(peer, stream);
                    }
                    Err(HandshakeError::Stranger(reason)) => tracing::warn!(
                        %from, "dropped a connection to the cluster port: {reason}"
                    ),
                    Err(error @ HandshakeError::Misconfigured(_)) => bail!("{error} (connected from {from})"),
                }
            }
            _ = waiting.tick() => tracing::info!(
                connected = peers.len(), wanted, "waiting for the cluster's later processes to connect"
            ),
        }
    }
    Ok(peers)
}

/// Dials every process before this one until it answers and passes the
/// handshake.
async fn dial_earlier(link: &ClusterLink, tls: &Tls) -> Result<BTreeMap<usize, PeerStream>> {
    let mut peers = BTreeMap::new();
    for peer in 0..link.process {
        let address = &link.addresses[peer];
        let mut last_log: Option<tokio::time::Instant> = None;
        loop {
            match dial_with(link, tls, peer).await {
                Ok(stream) => {
                    tracing::info!(peer, %address, "connected to cluster process {peer}");
                    peers.insert(peer, stream);
                    break;
                }
                Err(DialError::Handshake(error @ HandshakeError::Misconfigured(_))) => {
                    bail!("{error} (process {peer} at {address})")
                }
                Err(error) => {
                    if last_log.is_none_or(|at| at.elapsed() >= WAITING_LOG) {
                        tracing::warn!(peer, %address, "cannot connect to cluster process {peer} yet: {error}");
                        last_log = Some(tokio::time::Instant::now());
                    }
                    tokio::time::sleep(REDIAL).await;
                }
            }
        }
    }
    Ok(peers)
}

/// Why dialing a process failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// Dials process `peer` once as `link.process` would, TLS and handshake
/// included (also how the tests play a stranger with the wrong token).
pub async fn dial(link: &ClusterLink, peer: usize) -> Result<PeerStream, DialError> {
    dial_with(
        link,
        &Tls::new().map_err(|error| DialError::Connect(std::io::Error::other(error)))?,
        peer,
    )
    .await
}

async fn dial_with(link: &ClusterLink, tls: &Tls, peer: usize) -> Result<PeerStream, DialError> {
    let tcp = TcpStream::connect(&link.addresses[peer])
        .await
        .map_err(DialError::Connect)?;
    tcp.set_nodelay(true).map_err(DialError::Connect)?;
    let handshake = async {
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("a valid name");
        let mut stream = tls
            .connector
            .connect(name, tcp)
            .await
            .map_err(|error| stranger("no TLS", error))?;
        let exporter = export(stream.get_ref().1)?;
        handshake::run(
            &mut stream,
            &local(link, Role::Dialer, exporter),
            |answered| {
                if answered == peer {
                    Ok(())
                } else {
                    Err(format!(
                        "process {answered} answered at the address of process {peer}"
                    ))
                }
            },
        )
        .await?;
        Ok(TlsStream::Client(stream))
    };
    tokio::time::timeout(HANDSHAKE_DEADLINE, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(HandshakeError::Stranger(format!(
                "no handshake within {} s",
                HANDSHAKE_DEADLINE.as_secs()
            )))
        })
        .map_err(DialError::Handshake)
}

fn local(link: &ClusterLink, role: Role, exporter: [u8; 32]) -> Local<'_> {
    Local {
        role,
        process: link.process,
        shape: &link.shape,
        token: link.token.as_ref().map(|token| token.0.as_str()),
        exporter,
    }
}

/// Keying material of the TLS session, for the handshake's proofs.
fn export<Data>(connection: &rustls::ConnectionCommon<Data>) -> Result<[u8; 32], HandshakeError> {
    connection
        .export_keying_material([0; 32], EXPORTER_LABEL, None)
        .map_err(|error| stranger("no keying material", error))
}

fn stranger(what: &str, error: impl std::fmt::Display) -> HandshakeError {
    HandshakeError::Stranger(format!("{what}: {error}"))
}
