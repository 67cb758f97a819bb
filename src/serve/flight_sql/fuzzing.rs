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

/// `framed` ([`parameters::frame`]'s format) as the messages of a DoPut
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
