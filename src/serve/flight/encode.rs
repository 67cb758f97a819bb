//! Arrow IPC encoding of Flight replies, message by message: the schema, then
//! record batches as they are built, and — for subscriptions — progress
//! messages that carry no rows, only `app_metadata` (SPEC §5). A snapshot's
//! or a feed's reply stream encodes what the cluster reader returns as the
//! client takes it.
//!
//! A progress message is a record batch with zero rows whose `app_metadata` is
//! `{"progress": t}`, rather than a message with no IPC header at all: every
//! Flight client decodes a zero-row batch (pyarrow's `read_chunk` yields it with
//! its metadata; `read_all`/`read_pandas` add no rows), while an empty header
//! trips some (the Rust decoder).

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::{FlightData, SchemaAsIpc};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use futures::stream::{self, StreamExt};
use tonic::Status;
use trimatch_dataflows::Time;

use crate::serve::reader::{ClusterSnapshot, Feed, FeedEvent};
use crate::serve::ReplyStream;

/// A snapshot's reply: the schema (with `trimatch.as_of` and
/// `trimatch.offsets`), then its rows in record batches.
pub fn snapshot_stream(snapshot: ClusterSnapshot) -> ReplyStream<FlightData> {
    let mut encoder = Encoder::new(snapshot.schema());
    let first = encoder.schema();
    let batches = snapshot.into_batches().map(move |batch| {
        batch
            .map_err(|error| Status::internal(error.to_string()))
            .and_then(|batch| encoder.batch(&batch))
    });
    messages(first, stream::iter(batches))
}

/// A feed's reply: the schema (with `trimatch.as_of`), then its changes as
/// record batches and its progress as messages without rows, until the feed
/// ends (with the status that ended it, if one did).
pub fn feed_stream(feed: Feed) -> ReplyStream<FlightData> {
    let mut encoder = Encoder::new(feed.schema);
    let first = encoder.schema();
    let events = feed.events.map(move |event| match event? {
        FeedEvent::Changes(batch) => encoder.batch(&batch),
        FeedEvent::Progress(time) => encoder.progress(time).map(|message| vec![message]),
    });
    messages(first, events)
}

/// `first`, then the messages of each item, as one stream; a failed item
/// is sent as its status.
fn messages(
    first: FlightData,
    items: impl futures::Stream<Item = Result<Vec<FlightData>, Status>> + Send + 'static,
) -> ReplyStream<FlightData> {
    let rest = items.flat_map(|messages| {
        stream::iter(match messages {
            Ok(messages) => messages.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(status) => vec![Err(status)],
        })
    });
    stream::once(async move { Ok(first) }).chain(rest).boxed()
}

/// Encodes one reply stream.
pub struct Encoder {
    schema: SchemaRef,
    options: IpcWriteOptions,
    generator: IpcDataGenerator,
    dictionaries: DictionaryTracker,
    context: IpcWriteContext,
}

impl Encoder {
    pub fn new(schema: SchemaRef) -> Self {
        Encoder {
            schema,
            options: IpcWriteOptions::default(),
            generator: IpcDataGenerator::default(),
            dictionaries: DictionaryTracker::new(false),
            context: IpcWriteContext::default(),
        }
    }

    /// The first message of the stream.
    pub fn schema(&self) -> FlightData {
        SchemaAsIpc::new(&self.schema, &self.options).into()
    }

    /// The messages of one record batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<FlightData>, Status> {
        let (dictionaries, batch) = self
            .generator
            .encode(
                batch,
                &mut self.dictionaries,
                &self.options,
                &mut self.context,
            )
            .map_err(|error| Status::internal(format!("cannot encode a record batch: {error}")))?;
        let mut messages: Vec<FlightData> =
            dictionaries.into_iter().map(FlightData::from).collect();
        messages.push(batch.into());
        Ok(messages)
    }

    /// A progress message: every change at a time before `time` has been sent.
    pub fn progress(&mut self, time: Time) -> Result<FlightData, Status> {
        let empty = RecordBatch::new_empty(self.schema.clone());
        let mut messages = self.batch(&empty)?;
        let message = messages
            .pop()
            .expect("a batch encodes to at least one message");
        Ok(message.with_app_metadata(format!("{{\"progress\":{time}}}")))
    }
}
