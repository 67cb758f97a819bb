//! Entry points for the fuzz targets in `fuzz/` (not an API): the client
//! bytes Flight SQL reads, each driven the way the service drives it.
//!
//! Each returns the service's answer; the fuzz targets check only that
//! there is one (no panic escapes, no allocation aborts the process).

use base64::Engine as _;
use futures::stream;
use tonic::Status;

use super::handle::{HandleKey, StatementHandle};
use super::parameters;
use crate::serve::auth::Principal;

fn key() -> HandleKey {
    HandleKey::new(&[42; 32])
}

/// `bytes` as a statement handle a client sent back (a prepared-statement
/// handle or a statement ticket): refused unless it verifies, and read as
/// the service reads it if it does.
pub fn open_handle(bytes: &[u8]) -> Result<(), Status> {
    let handle = StatementHandle::open(bytes, &key(), &Principal::anonymous())?;
    futures::executor::block_on(handle.parameter_values()).map(drop)
}

/// A handle the server sealed whose bound parameters are `framed`: what a
/// client could send only with the server's key, read all the same.
pub fn open_sealed_parameters(framed: &[u8]) -> Result<(), Status> {
    let principal = Principal::anonymous();
    let mut handle = StatementHandle::new("SELECT $1".to_string(), None);
    handle.parameters = Some(base64::engine::general_purpose::STANDARD.encode(framed));
    let sealed = handle.seal(&key(), &principal);
    open_handle(&sealed)
}

/// `framed` (`parameters::frame`'s format) as the messages of a DoPut
/// that binds parameters, read and bound as the service does.
pub fn bind_parameters(framed: &[u8]) -> Result<(), Status> {
    let messages = parameters::unframe(framed)?;
    let batch = futures::executor::block_on(parameters::first_parameter_batch(stream::iter(
        messages.into_iter().map(Ok),
    )))?;
    if let Some(batch) = batch {
        StatementHandle::new("SELECT $1".to_string(), None).bind(&batch)?;
    }
    Ok(())
}

/// A real parameter binding of one row, framed: the seed the fuzzers
/// mutate.
pub fn framed_example() -> Vec<u8> {
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use std::sync::Arc;
    let batch = arrow::record_batch::RecordBatch::try_from_iter([
        ("0", Arc::new(StringArray::from(vec!["acme"])) as ArrayRef),
        ("1", Arc::new(Int64Array::from(vec![42])) as ArrayRef),
    ])
    .expect("a one-row batch");
    parameters::frame(&batch).expect("a batch frames")
}

/// The `parameters` fuzz target's input: its first byte picks what the
/// rest is — even: framed messages (`parameters::frame`'s format); odd:
/// byte edits (two bytes of position, one of value) to a real binding, so
/// that most inputs get past the framing into Arrow's decoder.
pub fn parameters_input(data: &[u8]) -> Result<(), Status> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    if mode % 2 == 0 {
        return bind_parameters(rest);
    }
    let mut framed = framed_example();
    for edit in rest.chunks_exact(3) {
        let at = u16::from_le_bytes([edit[0], edit[1]]) as usize % framed.len();
        framed[at] = edit[2];
    }
    bind_parameters(&framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs on which the `parameters` fuzz target found Arrow's decoder
    /// panicking (a buffer outside the body, a misaligned or short buffer, a
    /// 48-bit integer, a schema without fields, big-endian decimals): each
    /// is now INVALID_ARGUMENT before the decoder sees it.
    #[test]
    fn what_the_fuzzer_found_is_refused_before_decoding() {
        use base64::Engine as _;
        for found in [
            "29wtBg==",
            "JQAlCg==",
            "AV0Avg==",
            "60ABbg==",
            "AUApAQA=",
            "JQAu+ulwAJAEACbpAPr6kj0i",
            "CwAOCAO6B////yQAQP8x/w==",
        ] {
            let data = base64::engine::general_purpose::STANDARD
                .decode(found)
                .unwrap();
            // The decoder runs under catch_unwind: a panic would still be
            // an INVALID_ARGUMENT, so the hook notes any on this thread.
            let this = std::thread::current().id();
            let panicked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let noted = panicked.clone();
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if std::thread::current().id() == this {
                    noted.store(true, std::sync::atomic::Ordering::SeqCst);
                } else {
                    eprintln!("{info}");
                }
            }));
            let outcome = parameters_input(&data);
            std::panic::set_hook(hook);
            assert!(
                !panicked.load(std::sync::atomic::Ordering::SeqCst),
                "{found}: the decoder panicked"
            );
            if let Err(status) = outcome {
                assert_eq!(
                    status.code(),
                    tonic::Code::InvalidArgument,
                    "{found}: {status:?}"
                );
            }
        }
    }
}
