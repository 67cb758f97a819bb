//! Arrow IPC encoding of Flight replies, message by message: the schema, then
//! record batches as they are built, and — for subscriptions — progress
//! messages that carry no rows, only `app_metadata` (SPEC §5).
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
use tonic::Status;
use trimatch_dataflows::Time;

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
