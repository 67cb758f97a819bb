//! Copies bytes between timely's end of a peer's socket pair and the TLS
//! connection to that peer, and tells the pipeline when the peer is gone.

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::links::PeerStream;
use super::LostPeer;

/// Runs until both directions end. When the peer's side ends while this
/// process is not stopping, `on_lost` is told and timely's end is held open
/// (unread, unwritten) for good: timely treats a closed channel as a fatal
/// error and would abort the process, while the pipeline's failure lets
/// `serve` exit with status 2.
pub async fn run(
    peer: usize,
    address: String,
    stream: PeerStream,
    timely: UnixStream,
    on_lost: LostPeer,
) {
    let (mut peer_read, mut peer_write) = tokio::io::split(stream);
    let (mut timely_read, mut timely_write) = timely.into_split();
    let outbound = async {
        // Timely closes its end when its workers are done: pass that on.
        if tokio::io::copy(&mut timely_read, &mut peer_write)
            .await
            .is_ok()
        {
            let _ = peer_write.shutdown().await;
        }
    };
    let inbound = async {
        let why = match tokio::io::copy(&mut peer_read, &mut timely_write).await {
            Ok(_) => "it closed the connection".to_string(),
            Err(error) => format!("the connection failed: {error}"),
        };
        let expected = on_lost(format!("lost cluster process {peer} at {address}: {why}"));
        if expected {
            let _ = timely_write.shutdown().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::join!(outbound, inbound);
}
