//! Polling the consumer for messages *and* the errors of each partition.
//!
//! rdkafka's `BaseConsumer::poll` turns a consumer error into
//! `KafkaError::MessageConsumption(code)` and drops which partition it came
//! from. A partition that cannot make progress must be named (its
//! `source_progress` row, its metrics), so this polls librdkafka directly
//! (`rd_kafka_consumer_poll`), which returns errors as messages that still
//! carry their topic, partition and offset. It is the only consumer poll the
//! source makes; everything else stays with rdkafka's safe API.

use std::ffi::CStr;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::BaseConsumer;
use rdkafka::types::RDKafkaRespErr;

/// One message, or one error, polled from the consumer. Owns librdkafka's
/// message until dropped.
pub(crate) struct Polled {
    message: NonNull<rdsys::rd_kafka_message_t>,
}

// SAFETY: a message is an independent heap object librdkafka hands over; it
// may be read and destroyed on any thread.
unsafe impl Send for Polled {}

/// A consumer error, as librdkafka reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConsumerError {
    /// librdkafka's error name, e.g. `TOPIC_AUTHORIZATION_FAILED` or
    /// `_AUTO_OFFSET_RESET`.
    pub code: String,
    pub kind: RDKafkaRespErr,
    /// librdkafka's sentence for this occurrence.
    pub message: String,
}

/// Polls for up to `timeout`: a message, an error, or nothing.
pub(crate) fn poll(consumer: &BaseConsumer, timeout: Duration) -> Option<Polled> {
    use rdkafka::consumer::Consumer;
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: the client pointer is valid for the consumer's lifetime; the
    // returned message (if any) is ours to destroy.
    let message =
        unsafe { rdsys::rd_kafka_consumer_poll(consumer.client().native_ptr(), timeout_ms) };
    NonNull::new(message).map(|message| Polled { message })
}

impl Polled {
    fn raw(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: the pointer is valid until `drop`.
        unsafe { self.message.as_ref() }
    }

    /// The error this is, if it is one.
    pub(crate) fn error(&self) -> Option<ConsumerError> {
        let kind = self.raw().err;
        if kind == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: librdkafka returns static strings for names, and a string
        // owned by the message (or a static one) for its error text.
        let (code, message) = unsafe {
            (
                CStr::from_ptr(rdsys::rd_kafka_err2name(kind)),
                CStr::from_ptr(rdsys::rd_kafka_message_errstr(self.message.as_ptr())),
            )
        };
        Some(ConsumerError {
            code: code.to_string_lossy().into_owned(),
            kind,
            message: message.to_string_lossy().into_owned(),
        })
    }

    /// The topic, if the message (or error) names one.
    pub(crate) fn topic(&self) -> Option<&str> {
        let topic = self.raw().rkt;
        if topic.is_null() {
            return None;
        }
        // SAFETY: the topic handle lives as long as the message; its name is
        // a NUL-terminated string it owns.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(topic)) }
            .to_str()
            .ok()
    }

    /// The partition (negative if the error names none).
    pub(crate) fn partition(&self) -> i32 {
        self.raw().partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.raw().offset
    }

    pub(crate) fn key(&self) -> Option<&[u8]> {
        let raw = self.raw();
        bytes(raw.key as *const u8, raw.key_len)
    }

    pub(crate) fn payload(&self) -> Option<&[u8]> {
        let raw = self.raw();
        bytes(raw.payload as *const u8, raw.len)
    }

    /// The message's Kafka timestamp (ms since the epoch), if it has one.
    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is valid; `kind` is a valid out-pointer.
        let timestamp =
            unsafe { rdsys::rd_kafka_message_timestamp(self.message.as_ptr(), &mut kind) };
        (kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
            && timestamp >= 0)
            .then_some(timestamp)
    }
}

/// The bytes at `pointer`, borrowed for as long as the message lives.
fn bytes<'m>(pointer: *const u8, len: usize) -> Option<&'m [u8]> {
    // SAFETY: librdkafka guarantees `len` readable bytes at a non-null
    // pointer for the life of the message.
    (!pointer.is_null()).then(|| unsafe { std::slice::from_raw_parts(pointer, len) })
}

impl Drop for Polled {
    fn drop(&mut self) {
        // SAFETY: the message came from `rd_kafka_consumer_poll` and is
        // destroyed once.
        unsafe { rdsys::rd_kafka_message_destroy(self.message.as_ptr()) }
    }
}
