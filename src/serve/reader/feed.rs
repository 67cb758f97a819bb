//! Change feeds (SPEC §5): the optional snapshot, the retained changes since
//! the requested time, then live changes and progress, as typed events. In
//! a cluster, every process's shard feed is merged into one whose progress
//! holds for the whole state.
//!
//! A feed's events are [`FeedEvent::Changes`] (rows with `_time` and `_diff`,
//! in time order) and [`FeedEvent::Progress`]`(t)`: every change at a time
//! before `t` has been sent. Progress only moves forward, and never says less
//! than what was already sent.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::DecodedPayload;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use trimatch_dataflows::{Change, Time};

use super::peers::{peer_unavailable, PEER_COMPLETION_WAIT};
use super::ClusterReader;
use crate::output::columns::{change_batch, change_schema};
use crate::output::{with_snapshot_metadata, BATCH_ROWS};
use crate::pipeline::subscriptions::{CutOff, Published, Subscription};
use crate::serve::tickets::SubscribeQuery;

/// A feed forwards a progress time at least this often while idle.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// What a feed carries.
#[derive(Debug)]
pub enum FeedEvent {
    /// Changes, as a record batch of the collection's change schema.
    Changes(RecordBatch),
    /// Every change at a time before this one has been sent.
    Progress(Time),
}

/// A change feed: its schema (the collection's change schema, with the time
/// the first events cover as `trimatch.as_of`), then its events until the
/// client leaves, the pipeline stops, or the feed fails.
pub struct Feed {
    pub schema: SchemaRef,
    pub events: BoxStream<'static, Result<FeedEvent, Status>>,
}

impl ClusterReader {
    /// The feed of `query`: over the whole cluster unless it asks for this
    /// process's shard alone. `ticket` is the query as the client sent it
    /// (what the other processes are forwarded).
    pub async fn subscribe(&self, query: SubscribeQuery, ticket: &[u8]) -> Result<Feed, Status> {
        if query.shard || !self.cluster.is_cluster() {
            return self.shard_feed(query).await;
        }
        self.cluster_feed(query, ticket).await
    }

    /// This process's feed of `query`.
    async fn shard_feed(&self, query: SubscribeQuery) -> Result<Feed, Status> {
        let SubscribeQuery {
            collection,
            filter,
            snapshot,
            as_of,
            shard,
        } = query;
        if let (true, Some(as_of)) = (shard, as_of) {
            // Another process's request at a time it already knows complete.
            self.blocking(move |pipeline| {
                pipeline.wait_until_complete(as_of, PEER_COMPLETION_WAIT);
                Ok(())
            })
            .await?;
        }
        // Register first, so no change falls between the history and the live feed.
        let subscription = self.pipeline.hub().subscribe(collection, filter.clone());
        let published = subscription.published_through;
        // `covered`: every change at a time up to it is in what is sent first.
        let (rows, covered) = if snapshot {
            let filter = filter.clone();
            let snapshot = self
                .blocking(move |pipeline| pipeline.read(collection, as_of, &filter, None))
                .await?;
            (snapshot.rows, snapshot.as_of)
        } else {
            let from = as_of.ok_or_else(|| {
                Status::invalid_argument(
                    "a subscription without a snapshot needs \"as_of\": the progress time to resume from",
                )
            })?;
            let newest = self.resolve_as_of(None)?;
            if from > newest + 1 {
                return Err(Status::out_of_range(format!(
                    "as_of {from} is later than any progress sent; the newest complete time is {newest}"
                )));
            }
            (Vec::new(), from.saturating_sub(1))
        };
        let history: Vec<Change> = if covered < published {
            self.blocking(move |pipeline| {
                pipeline.changes(collection, covered + 1, published, &filter)
            })
            .await?
        } else {
            Vec::new()
        };
        let schema = change_schema(collection);
        let (sender, receiver) = mpsc::channel(8);
        let mut feed = FeedSender {
            sender,
            schema: schema.clone(),
            covered,
            progress_sent: 0,
            cut_off: subscription.cut_off(),
        };
        let initial: Vec<Change> = rows.into_iter().map(|row| (row, covered, 1)).collect();
        tokio::spawn(async move {
            let start = async {
                feed.changes(&initial).await?;
                feed.changes(&history).await?;
                feed.progress(covered.max(published) + 1).await
            };
            if start.await.is_ok() {
                feed.forward_live(subscription, collection.name()).await;
            }
        });
        Ok(Feed {
            schema: with_snapshot_metadata(schema, covered, &BTreeMap::new()),
            events: ReceiverStream::new(receiver).boxed(),
        })
    }

    /// A feed in cluster mode: this process's shard feed and every other
    /// process's, at one resolved time, merged. Changes are forwarded as they
    /// arrive; a progress time goes out once every shard has passed it, so
    /// "every change before `t` has been sent" holds for the whole state.
    async fn cluster_feed(&self, query: SubscribeQuery, ticket: &[u8]) -> Result<Feed, Status> {
        // With a snapshot, every shard's at the same time.
        let as_of = if query.snapshot {
            Some(self.resolve_as_of(query.as_of)?)
        } else {
            query.as_of
        };
        let peers = self.cluster.open(ticket, &query.filter, as_of).await?;
        let local = self
            .shard_feed(SubscribeQuery {
                as_of,
                shard: true,
                ..query
            })
            .await?;
        let mut shards: Vec<BoxStream<'static, (usize, Result<FeedEvent, Status>)>> =
            vec![local.events.map(|event| (0, event)).boxed()];
        for (index, (process, stream)) in peers.into_iter().enumerate() {
            let peer = self.cluster.peers[process].clone();
            let events = stream.into_inner().filter_map(move |message| {
                let event = match message {
                    Ok(message) => match message.payload {
                        DecodedPayload::RecordBatch(batch) if batch.num_rows() == 0 => {
                            serde_json::from_slice::<serde_json::Value>(&message.inner.app_metadata)
                                .ok()
                                .and_then(|metadata| metadata["progress"].as_u64())
                                .map(|time| Ok(FeedEvent::Progress(time)))
                        }
                        DecodedPayload::RecordBatch(batch) => Some(Ok(FeedEvent::Changes(batch))),
                        _ => None,
                    },
                    Err(arrow_flight::error::FlightError::Tonic(status)) => Some(Err(*status)),
                    Err(other) => Some(Err(peer_unavailable(process, &peer, &other))),
                };
                futures::future::ready(event.map(|event| (index + 1, event)))
            });
            shards.push(events.boxed());
        }
        let mut progress: Vec<Time> = vec![0; shards.len()];
        let mut sent_progress = 0;
        let merged = stream::select_all(shards).filter_map(move |(shard, event)| {
            let forwarded = match event {
                Ok(FeedEvent::Progress(time)) => {
                    progress[shard] = progress[shard].max(time);
                    let everywhere = progress.iter().copied().min().unwrap_or(0);
                    (everywhere > sent_progress).then(|| {
                        sent_progress = everywhere;
                        Ok(FeedEvent::Progress(everywhere))
                    })
                }
                other => Some(other),
            };
            futures::future::ready(forwarded)
        });
        // The first failure ends the merged feed, as it ends a shard's.
        let mut failed = false;
        let events = merged
            .take_while(move |event| {
                let go_on = !failed;
                failed |= event.is_err();
                futures::future::ready(go_on)
            })
            .boxed();
        Ok(Feed {
            schema: local.schema,
            events,
        })
    }
}

/// The sending half of a shard feed.
struct FeedSender {
    sender: mpsc::Sender<Result<FeedEvent, Status>>,
    schema: SchemaRef,
    /// Every change at a time up to this one was in the first events.
    covered: Time,
    progress_sent: Time,
    /// Set when the hub cut the subscriber off for falling behind.
    cut_off: CutOff,
}

/// The reader of the feed has gone, or was cut off.
struct Gone;

/// How often a send blocked on a client that does not read looks whether
/// the hub has cut the subscriber off meanwhile.
const CUT_OFF_CHECK: Duration = Duration::from_millis(500);

/// How long the status that ends a feed waits for room with the client.
const FINAL_STATUS_WAIT: Duration = Duration::from_secs(10);

impl FeedSender {
    /// Sends `event` once the client has room for it. A client that does
    /// not read keeps this waiting while the hub's backlog for it grows;
    /// once the hub cuts it off (SPEC §5), the wait ends and so does the
    /// feed, freeing what was queued for it.
    async fn send(&mut self, event: Result<FeedEvent, Status>) -> Result<(), Gone> {
        // The common case, a client that keeps up, costs no timer.
        let event = match self.sender.try_send(event) {
            Ok(()) => return Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return Err(Gone),
            Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => event,
        };
        let sending = self.sender.send(event);
        tokio::pin!(sending);
        loop {
            tokio::select! {
                sent = &mut sending => return sent.map_err(|_| Gone),
                _ = tokio::time::sleep(CUT_OFF_CHECK) => {
                    if self.cut_off.is_set() {
                        return Err(Gone);
                    }
                }
            }
        }
    }

    async fn changes(&mut self, changes: &[Change]) -> Result<(), Gone> {
        for chunk in changes.chunks(BATCH_ROWS) {
            match change_batch(&self.schema, chunk) {
                Ok(batch) => self.send(Ok(FeedEvent::Changes(batch))).await?,
                Err(error) => {
                    self.send(Err(Status::internal(error.to_string()))).await?;
                    return Err(Gone);
                }
            }
        }
        Ok(())
    }

    async fn progress(&mut self, time: Time) -> Result<(), Gone> {
        if time <= self.progress_sent || time <= self.covered {
            return Ok(());
        }
        self.progress_sent = time;
        self.send(Ok(FeedEvent::Progress(time))).await
    }

    /// Forwards the hub's live changes and progress until the reader leaves
    /// or the hub lets the subscription go (it fell behind, or the pipeline
    /// stopped), which ends the feed with a status saying so.
    async fn forward_live(mut self, mut subscription: Subscription, collection: &str) {
        let mut latest_progress = None;
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        loop {
            tokio::select! {
                event = subscription.events.recv() => match event {
                    Some(Published::Changes(changes)) => {
                        subscription.consumed(changes.len());
                        if subscription.overflowed() {
                            break;
                        }
                        let covered = self.covered;
                        let fresh: Vec<Change> =
                            changes.into_iter().filter(|(_, time, _)| *time > covered).collect();
                        if self.changes(&fresh).await.is_err() {
                            return;
                        }
                        // The progress right after changes goes out at once.
                        latest_progress = None;
                        if let Some(Published::Progress(time)) = subscription.events.recv().await {
                            subscription.consumed(1);
                            if self.progress(time).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Published::Progress(time)) => {
                        subscription.consumed(1);
                        latest_progress = Some(time);
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if let Some(time) = latest_progress.take() {
                        if self.progress(time).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let status = if subscription.overflowed() {
            Status::resource_exhausted(format!(
                "this subscriber fell too far behind (more changes waiting than its buffer holds) and was \
                 disconnected; reconnect with {{\"subscribe\": \"{collection}\", \"snapshot\": false, \"as_of\": {}}} \
                 to resume from the last progress sent",
                self.progress_sent.max(self.covered + 1)
            ))
        } else {
            Status::unavailable("the pipeline stopped")
        };
        // A client that reads gets the status after what it has not read
        // yet; one that does not read is not waited for long.
        let _ = tokio::time::timeout(FINAL_STATUS_WAIT, self.sender.send(Err(status))).await;
    }
}
