//! Reads the parameters a client binds to a prepared statement (a DoPut
//! stream of Arrow IPC messages), bounded and defensively.
//!
//! * Only the messages up to the first batch with a row are read; the rest
//!   of the stream is dropped unread, so a client streaming gigabytes costs
//!   the server one batch.
//! * What is read is at most [`MAX_PARAMETER_BYTES`] in
//!   [`MAX_MESSAGES`] messages; more is INVALID_ARGUMENT before any of it
//!   is decoded.
//! * Each message is checked before Arrow's decoder sees it
//!   ([`IpcChecker`]: flat scalar columns, buffers where and as large as
//!   their types need), and decoding runs under `catch_unwind` as well:
//!   bytes that would make it panic are INVALID_ARGUMENT, never a failed
//!   task.
//!
//! A bound statement keeps its parameters as these same messages
//! ([`frame`]), and reading them back ([`unframe`], then
//! [`first_parameter_batch`]) goes through the same checks, so no bytes are
//! ever handed to Arrow's unbounded stream reader.

use std::panic::AssertUnwindSafe;

use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use futures::{stream, FutureExt, Stream, StreamExt, TryStreamExt};
use tonic::Status;

pub use super::handle::MAX_PARAMETER_BYTES;
use super::ipc_check::IpcChecker;

/// The most IPC messages read before the first batch with a row.
pub const MAX_MESSAGES: usize = 64;

fn unreadable(why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!(
        "the parameters are not readable Arrow IPC data ({why}); bind one row, one column per \
         placeholder"
    ))
}

/// The first batch with a row that `messages` carry, if any.
pub async fn first_parameter_batch(
    messages: impl Stream<Item = Result<FlightData, Status>> + Unpin,
) -> Result<Option<RecordBatch>, Status> {
    let read = read_until_a_row(messages).await?;
    decode(read).await
}

/// `batch` as the IPC messages a client would send for it (schema, then
/// the batch), framed one after the other: for each, the header's length
/// (u32, little-endian), the header, the body's length, the body.
pub fn frame(batch: &RecordBatch) -> Result<Vec<u8>, Status> {
    let messages: Vec<FlightData> = futures::executor::block_on(
        arrow_flight::encode::FlightDataEncoderBuilder::new()
            .build(stream::iter([Ok(batch.clone())]))
            .try_collect(),
    )
    .map_err(|error| Status::internal(format!("cannot encode the parameters: {error}")))?;
    let mut framed = Vec::new();
    for message in messages {
        for part in [&message.data_header, &message.data_body] {
            framed.extend_from_slice(&(part.len() as u32).to_le_bytes());
            framed.extend_from_slice(part);
        }
    }
    Ok(framed)
}

/// The messages [`frame`] wrote; INVALID_ARGUMENT for bytes that are not
/// whole frames. Lengths are checked against what is there before anything
/// is copied.
pub fn unframe(mut framed: &[u8]) -> Result<Vec<FlightData>, Status> {
    let mut messages = Vec::new();
    while !framed.is_empty() {
        let header = take_frame(&mut framed)?;
        let body = take_frame(&mut framed)?;
        messages.push(FlightData {
            data_header: header.to_vec().into(),
            data_body: body.to_vec().into(),
            ..FlightData::default()
        });
    }
    Ok(messages)
}

/// The next frame of `framed`, which moves past it.
fn take_frame<'a>(framed: &mut &'a [u8]) -> Result<&'a [u8], Status> {
    let (length, rest) = framed
        .split_first_chunk::<4>()
        .ok_or_else(|| unreadable("a frame is cut short"))?;
    let length = u32::from_le_bytes(*length) as usize;
    if length > rest.len() {
        return Err(unreadable(format!(
            "a frame says {length} bytes where {} are left",
            rest.len()
        )));
    }
    let (part, rest) = rest.split_at(length);
    *framed = rest;
    Ok(part)
}

/// The messages up to and with the first record batch that has a row.
async fn read_until_a_row(
    mut messages: impl Stream<Item = Result<FlightData, Status>> + Unpin,
) -> Result<Vec<FlightData>, Status> {
    let mut read = Vec::new();
    let mut bytes = 0usize;
    let mut checker = IpcChecker::default();
    while let Some(message) = messages.next().await {
        let message = message?;
        bytes += message.data_header.len() + message.data_body.len();
        if bytes > MAX_PARAMETER_BYTES {
            return Err(Status::invalid_argument(format!(
                "the parameters exceed {MAX_PARAMETER_BYTES} bytes; bind one row, one column \
                 per placeholder"
            )));
        }
        if read.len() == MAX_MESSAGES {
            return Err(unreadable(format!(
                "no batch with a row in the first {MAX_MESSAGES} messages"
            )));
        }
        let has_a_row = checker.check(&message).map_err(unreadable)?;
        read.push(message);
        if has_a_row {
            break;
        }
    }
    Ok(read)
}

/// The first batch with a row of `read`, decoded.
async fn decode(read: Vec<FlightData>) -> Result<Option<RecordBatch>, Status> {
    let decoding = async move {
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
            stream::iter(read).map(Ok::<_, FlightError>),
        )
        .try_collect()
        .await
        .map_err(unreadable)?;
        Ok(batches.into_iter().find(|batch| batch.num_rows() > 0))
    };
    AssertUnwindSafe(decoding)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(unreadable("the decoder could not read them")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use std::sync::Arc;

    fn encoded(batches: Vec<RecordBatch>) -> Vec<FlightData> {
        futures::executor::block_on(
            FlightDataEncoderBuilder::new()
                .build(stream::iter(batches.into_iter().map(Ok)))
                .try_collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn batch(values: Vec<i64>) -> RecordBatch {
        RecordBatch::try_from_iter([("0", Arc::new(Int64Array::from(values)) as ArrayRef)]).unwrap()
    }

    #[test]
    fn reading_stops_at_the_first_row_and_mutations_never_panic() {
        let messages = encoded(vec![batch(vec![]), batch(vec![42]), batch(vec![1, 2])]);
        let run = |messages: Vec<FlightData>| {
            futures::executor::block_on(first_parameter_batch(stream::iter(
                messages.into_iter().map(Ok),
            )))
        };
        assert_eq!(run(messages.clone()).unwrap().unwrap(), batch(vec![42]));
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            let mut mutated = messages.clone();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let which = (rng % mutated.len() as u64) as usize;
            let target = if rng & 1 == 0 {
                &mut mutated[which].data_header
            } else {
                &mut mutated[which].data_body
            };
            let mut bytes = target.to_vec();
            if !bytes.is_empty() {
                let at = (rng >> 8) as usize % bytes.len();
                bytes[at] = (rng >> 32) as u8;
            }
            *target = bytes.into();
            // Anything but a panic: a batch or INVALID_ARGUMENT.
            if let Err(status) = run(mutated) {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            }
        }
    }

    #[test]
    fn a_flood_is_refused_after_the_cap() {
        let big = batch(vec![0; MAX_PARAMETER_BYTES / 8 + 1024]);
        let messages = encoded(vec![big]);
        let status = futures::executor::block_on(first_parameter_batch(stream::iter(
            messages.into_iter().map(Ok),
        )))
        .unwrap_err();
        assert!(status.message().contains("exceed"), "{status:?}");
    }
}
