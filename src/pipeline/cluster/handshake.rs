//! What two cluster processes say to each other over a new TLS connection
//! before timely may use it.
//!
//! Both send a [`Hello`] (the protocol, which process they are, the cluster
//! they were started for, a fresh nonce), then a proof: an HMAC-SHA256,
//! keyed with the cluster token, over the TLS session's exported keying
//! material (RFC 8446 §7.5), their role and both hellos. A proof cannot be
//! replayed on another connection (the exporter differs per session) nor
//! relayed by a man in the middle (who would hold two sessions). Then both
//! check the other's shape and index and send a verdict, so that both log
//! the same reason when they part.
//!
//! Every frame is a u32 length (big-endian) and at most [`MAX_FRAME`]
//! bytes; whatever a stranger sends is read within that and a deadline set
//! by the caller.
//!
//! ```text
//! dialer (process 1)                      acceptor (process 0)
//!   Hello{process:1, shape, nonce}  --->
//!                                   <---  Hello{process:0, shape, nonce}
//!   HMAC(token; exporter, "dialer", hellos)  --->
//!                                   <---  HMAC(token; exporter, "acceptor", hellos)
//!   Verdict  <-->  Verdict
//! ```

use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What every process of one cluster must have been started with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub processes: usize,
    pub workers: usize,
    /// The input topics, as `Kind=name`, sorted.
    pub topics: Vec<String>,
}

/// The label of the keying material exported from the TLS session.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-trimatch-cluster-peer";
const PROTOCOL: &str = "trimatch-cluster/1";
/// The largest frame read from a peer.
pub const MAX_FRAME: usize = 64 << 10;

#[derive(Serialize, Deserialize)]
struct Hello {
    protocol: String,
    process: usize,
    shape: Shape,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Verdict {
    refused: Option<String>,
}

/// Which end of the connection this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

/// Why a connection was not taken as a peer.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not a process of this cluster (or not proven to be): the connection
    /// is dropped and the cluster goes on.
    #[error("not a peer of this cluster: {0}")]
    Stranger(String),
    /// A process holding the cluster token that was started for another
    /// cluster or with the wrong index: the start stops.
    #[error("a process of this cluster was started differently: {0}")]
    Misconfigured(String),
}

/// What this side of a handshake knows.
pub struct Local<'a> {
    pub role: Role,
    pub process: usize,
    pub shape: &'a Shape,
    pub token: Option<&'a str>,
    /// Keying material exported from this connection's TLS session under
    /// [`EXPORTER_LABEL`].
    pub exporter: [u8; 32],
}

/// Runs the handshake over `stream`; the index of the process at the
/// other end if it proved the token, has the same shape and `expected`
/// accepts its index (else the reason `expected` gives).
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    local: &Local<'_>,
    expected: impl Fn(usize) -> Result<(), String>,
) -> Result<usize, HandshakeError> {
    let stranger = |what: &str, error: &dyn std::fmt::Display| {
        HandshakeError::Stranger(format!("{what}: {error}"))
    };
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("the operating system's random source");
    let ours = serde_json::to_vec(&Hello {
        protocol: PROTOCOL.to_string(),
        process: local.process,
        shape: local.shape.clone(),
        nonce: nonce.iter().map(|byte| format!("{byte:02x}")).collect(),
    })
    .expect("a hello serializes");
    write_frame(stream, &ours)
        .await
        .map_err(|error| stranger("cannot send the hello", &error))?;
    let theirs = read_frame(stream)
        .await
        .map_err(|error| stranger("no hello", &error))?;
    let hello: Hello =
        serde_json::from_slice(&theirs).map_err(|error| stranger("not a hello", &error))?;
    if hello.protocol != PROTOCOL {
        return Err(HandshakeError::Stranger(format!(
            "it speaks {:?}, not {PROTOCOL}",
            hello.protocol
        )));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, local.token.unwrap_or("").as_bytes());
    let proof = hmac::sign(&key, &proven(local, local.role, &ours, &theirs));
    write_frame(stream, proof.as_ref())
        .await
        .map_err(|error| stranger("cannot send the proof", &error))?;
    let their_proof = read_frame(stream)
        .await
        .map_err(|error| stranger("no proof", &error))?;
    hmac::verify(
        &key,
        &proven(local, local.role.other(), &theirs, &ours),
        &their_proof,
    )
    .map_err(|_| {
        HandshakeError::Stranger(format!(
            "it claims to be process {} but does not prove the cluster token",
            hello.process
        ))
    })?;
    // One of ours from here on: disagreements are configuration errors.
    let refusal = if &hello.shape != local.shape {
        Some(format!(
            "process {} runs {:?} and process {} runs {:?}",
            hello.process, hello.shape, local.process, local.shape
        ))
    } else {
        expected(hello.process).err()
    };
    let verdict = serde_json::to_vec(&Verdict {
        refused: refusal.clone(),
    })
    .expect("a verdict serializes");
    let exchanged = async {
        write_frame(stream, &verdict).await?;
        read_frame(stream).await
    };
    let theirs = exchanged
        .await
        .map_err(|error| stranger("no verdict", &error))?;
    let their_verdict: Verdict =
        serde_json::from_slice(&theirs).map_err(|error| stranger("not a verdict", &error))?;
    match refusal.or(their_verdict.refused) {
        Some(reason) => Err(HandshakeError::Misconfigured(reason)),
        None => Ok(hello.process),
    }
}

/// What a proof signs: the session, who signs, the signer's hello, then
/// the other's, each length-prefixed.
fn proven(local: &Local<'_>, signer: Role, signers: &[u8], others: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64 + signers.len() + others.len());
    for part in [
        b"trimatch cluster proof".as_slice(),
        &local.exporter,
        signer.label(),
        signers,
        others,
    ] {
        bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
        bytes.extend_from_slice(part);
    }
    bytes
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(&(frame.len() as u32).to_be_bytes())
        .await?;
    stream.write_all(frame).await?;
    stream.flush().await
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let length = stream.read_u32().await? as usize;
    if length > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes, more than the {MAX_FRAME} allowed"),
        ));
    }
    let mut frame = vec![0; length];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(workers: usize) -> Shape {
        Shape {
            processes: 2,
            workers,
            topics: vec!["PurchaseOrder=purchase_orders".into()],
        }
    }

    /// Both ends over an in-memory pipe; `exporters` differ when a man in
    /// the middle holds two sessions.
    async fn pair(
        tokens: [&str; 2],
        shapes: [Shape; 2],
        exporters: [[u8; 32]; 2],
    ) -> [Result<usize, HandshakeError>; 2] {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let dialer = Local {
            role: Role::Dialer,
            process: 1,
            shape: &shapes[0],
            token: Some(tokens[0]),
            exporter: exporters[0],
        };
        let acceptor = Local {
            role: Role::Acceptor,
            process: 0,
            shape: &shapes[1],
            token: Some(tokens[1]),
            exporter: exporters[1],
        };
        let (left, right) = tokio::join!(
            run(&mut a, &dialer, |peer| if peer == 0 {
                Ok(())
            } else {
                Err("not 0".into())
            }),
            run(&mut b, &acceptor, |peer| if peer == 1 {
                Ok(())
            } else {
                Err("not 1".into())
            }),
        );
        [left, right]
    }

    #[tokio::test]
    async fn peers_with_the_token_and_the_shape_connect() {
        let [dialer, acceptor] = pair(["secret"; 2], [shape(2), shape(2)], [[7; 32]; 2]).await;
        assert_eq!(dialer.unwrap(), 0);
        assert_eq!(acceptor.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_wrong_token_or_a_relayed_session_is_a_stranger() {
        for [dialer, acceptor] in [
            pair(["secret", "other"], [shape(2), shape(2)], [[7; 32]; 2]).await,
            pair(["secret"; 2], [shape(2), shape(2)], [[7; 32], [8; 32]]).await,
        ] {
            assert!(
                matches!(dialer, Err(HandshakeError::Stranger(_))),
                "{dialer:?}"
            );
            assert!(
                matches!(acceptor, Err(HandshakeError::Stranger(_))),
                "{acceptor:?}"
            );
        }
    }

    #[tokio::test]
    async fn another_shape_stops_both() {
        let [dialer, acceptor] = pair(["secret"; 2], [shape(2), shape(3)], [[7; 32]; 2]).await;
        for side in [dialer, acceptor] {
            match side {
                Err(HandshakeError::Misconfigured(reason)) => {
                    assert!(reason.contains("workers: 3"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn garbage_is_a_stranger() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let shape = shape(2);
        let local = Local {
            role: Role::Acceptor,
            process: 0,
            shape: &shape,
            token: Some("secret"),
            exporter: [0; 32],
        };
        tokio::io::AsyncWriteExt::write_all(&mut a, &[0xff; 16])
            .await
            .unwrap();
        drop(a);
        let result = run(&mut b, &local, |_| Ok(())).await;
        assert!(
            matches!(result, Err(HandshakeError::Stranger(_))),
            "{result:?}"
        );
    }
}
