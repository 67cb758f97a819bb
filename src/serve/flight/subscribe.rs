//! Subscriptions over Flight (SPEC §5): the optional snapshot, the retained
//! changes since the requested time, then live changes and progress; in
//! cluster mode, every process's shard subscription merged.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use arrow_flight::decode::DecodedPayload;
use arrow_flight::{FlightData, Ticket};
use futures::stream::{self, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use trimatch_dataflows::{Change, Time};

use super::authorize::forwarded_ticket;
use super::encode::Encoder;
use super::peers::{peer_unavailable, PEER_COMPLETION_WAIT};
use super::service::{with_metadata, FlightStream, TrimatchFlight, BATCH_ROWS, PROGRESS_INTERVAL};
use crate::output::columns::{change_batch, change_schema};
use crate::pipeline::subscriptions::Published;
use crate::serve::tickets::SubscribeQuery;

impl TrimatchFlight {
    /// A subscription: the optional snapshot, the retained changes since the
    /// requested time, then live changes and progress until the client leaves.
    pub(super) async fn subscribe(
        &self,
        query: SubscribeQuery,
        ticket: &[u8],
    ) -> Result<FlightStream<FlightData>, Status> {
        if !query.shard && self.peers.len() > 1 {
            return self.cluster_subscription(query, ticket).await;
        }
        let SubscribeQuery {
            collection,
            filter,
            snapshot,
            as_of,
            shard,
        } = query;
        if let (true, Some(as_of)) = (shard, as_of) {
            // A peer's request at a time its process already knows complete.
            self.blocking(move |pipeline| {
                pipeline.wait_until_complete(as_of, PEER_COMPLETION_WAIT);
                Ok(())
            })
            .await?;
        }
        // Register first, so no change falls between the history and the live feed.
        let mut subscription = self.pipeline.hub().subscribe(collection, filter.clone());
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
            let newest = self
                .pipeline
                .resolve_as_of(None)
                .map_err(|error| self.status_of(error))?;
            if from > newest + 1 {
                return Err(Status::out_of_range(format!(
                    "as_of {from} is later than any progress sent; the newest complete time is {newest}"
                )));
            }
            (Vec::new(), from.saturating_sub(1))
        };
        let history: Vec<Change> = if covered < published {
            let filter = filter.clone();
            self.blocking(move |pipeline| {
                pipeline.changes(collection, covered + 1, published, &filter)
            })
            .await?
        } else {
            Vec::new()
        };
        let change_schema = change_schema(collection);
        let schema = with_metadata(change_schema.clone(), covered, &BTreeMap::new());
        let (sender, receiver) = mpsc::channel::<Result<FlightData, Status>>(8);
        tokio::spawn(async move {
            let mut encoder = Encoder::new(schema);
            let mut stream = SubscriptionStream {
                sender,
                schema: change_schema,
                covered,
                progress_sent: 0,
            };
            let initial: Vec<Change> = rows.into_iter().map(|row| (row, covered, 1)).collect();
            let start = async {
                stream.send(Ok(encoder.schema())).await?;
                stream.changes(&mut encoder, &initial).await?;
                stream.changes(&mut encoder, &history).await?;
                stream
                    .progress(&mut encoder, covered.max(published) + 1)
                    .await
            };
            if start.await.is_err() {
                return;
            }
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
                            let fresh: Vec<Change> = changes.into_iter().filter(|(_, time, _)| *time > covered).collect();
                            if stream.changes(&mut encoder, &fresh).await.is_err() {
                                return;
                            }
                            // The progress right after changes goes out at once.
                            latest_progress = None;
                            if let Some(Published::Progress(time)) = subscription.events.recv().await {
                                subscription.consumed(1);
                                if stream.progress(&mut encoder, time).await.is_err() {
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
                            if stream.progress(&mut encoder, time).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            let status = if subscription.overflowed() {
                Status::resource_exhausted(format!(
                    "this subscriber fell too far behind (more changes waiting than its buffer holds) and was \
                     disconnected; reconnect with {{\"subscribe\": \"{}\", \"snapshot\": false, \"as_of\": {}}} \
                     to resume from the last progress sent",
                    collection.name(),
                    stream.progress_sent.max(covered + 1)
                ))
            } else {
                Status::unavailable("the pipeline stopped")
            };
            let _ = stream.send(Err(status)).await;
        });
        Ok(ReceiverStream::new(receiver).boxed())
    }

    /// A subscription in cluster mode: every process's shard subscription
    /// (this one's included, through its own Flight service) at one resolved
    /// time, merged. Changes are forwarded as they arrive; a progress time goes
    /// out once every shard has passed it, so "every change before `t` has
    /// been sent" holds for the whole state.
    async fn cluster_subscription(
        &self,
        query: SubscribeQuery,
        ticket: &[u8],
    ) -> Result<FlightStream<FlightData>, Status> {
        let mut request = forwarded_ticket(ticket, &query.filter)?;
        if query.snapshot {
            // Every shard's snapshot at the same time.
            let as_of = self
                .pipeline
                .resolve_as_of(query.as_of)
                .map_err(|error| self.status_of(error))?;
            request["as_of"] = json!(as_of);
        }
        let mut shards = Vec::new();
        for (process, peer) in self.peers.iter().enumerate() {
            let unavailable =
                |error: &dyn std::fmt::Display| peer_unavailable(process, peer, error);
            let mut client = self.peer_link.connect(process, peer).await?;
            let stream = client
                .do_get(Ticket::new(request.to_string()))
                .await
                .map_err(|error| match error {
                    arrow_flight::error::FlightError::Tonic(status) => *status,
                    other => unavailable(&other),
                })?;
            shards.push(
                stream
                    .into_inner()
                    .map(move |message| (process, message))
                    .boxed(),
            );
        }
        let schema = change_schema(query.collection);
        let (sender, receiver) = mpsc::channel::<Result<FlightData, Status>>(8);
        let shard_count = shards.len();
        tokio::spawn(async move {
            let mut merged = stream::select_all(shards);
            let mut encoder = Encoder::new(schema);
            let mut progress: Vec<Time> = vec![0; shard_count];
            let mut sent_progress = 0;
            let mut schema_sent = false;
            while let Some((process, message)) = merged.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        let status = match error {
                            arrow_flight::error::FlightError::Tonic(status) => *status,
                            other => Status::unavailable(format!(
                                "process {process} of the cluster: {other}"
                            )),
                        };
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                let outgoing = match message.payload {
                    DecodedPayload::Schema(shard_schema) if !schema_sent => {
                        schema_sent = true;
                        encoder = Encoder::new(shard_schema);
                        vec![encoder.schema()]
                    }
                    DecodedPayload::RecordBatch(batch) if batch.num_rows() == 0 => {
                        let time = serde_json::from_slice::<serde_json::Value>(
                            &message.inner.app_metadata,
                        )
                        .ok()
                        .and_then(|metadata| metadata["progress"].as_u64());
                        if let Some(time) = time {
                            progress[process] = progress[process].max(time);
                        }
                        let everywhere = progress.iter().copied().min().unwrap_or(0);
                        if everywhere > sent_progress {
                            sent_progress = everywhere;
                            match encoder.progress(everywhere) {
                                Ok(message) => vec![message],
                                Err(status) => {
                                    let _ = sender.send(Err(status)).await;
                                    return;
                                }
                            }
                        } else {
                            Vec::new()
                        }
                    }
                    DecodedPayload::RecordBatch(batch) => match encoder.batch(&batch) {
                        Ok(messages) => messages,
                        Err(status) => {
                            let _ = sender.send(Err(status)).await;
                            return;
                        }
                    },
                    _ => Vec::new(),
                };
                for message in outgoing {
                    if sender.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(receiver).boxed())
    }
}

/// The sending half of a subscription.
struct SubscriptionStream {
    sender: mpsc::Sender<Result<FlightData, Status>>,
    schema: SchemaRef,
    covered: Time,
    progress_sent: Time,
}

/// The client has gone.
struct Gone;

impl SubscriptionStream {
    async fn send(&mut self, message: Result<FlightData, Status>) -> Result<(), Gone> {
        self.sender.send(message).await.map_err(|_| Gone)
    }

    async fn changes(&mut self, encoder: &mut Encoder, changes: &[Change]) -> Result<(), Gone> {
        for chunk in changes.chunks(BATCH_ROWS) {
            let messages = change_batch(&self.schema, chunk)
                .map_err(|error| Status::internal(error.to_string()))
                .and_then(|batch| encoder.batch(&batch));
            match messages {
                Ok(messages) => {
                    for message in messages {
                        self.send(Ok(message)).await?;
                    }
                }
                Err(status) => {
                    self.send(Err(status)).await?;
                    return Err(Gone);
                }
            }
        }
        Ok(())
    }

    async fn progress(&mut self, encoder: &mut Encoder, time: Time) -> Result<(), Gone> {
        if time <= self.progress_sent || time <= self.covered {
            return Ok(());
        }
        self.progress_sent = time;
        self.send(encoder.progress(time)).await
    }
}
