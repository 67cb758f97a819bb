//! A statement as a client holds it between calls: prepared-statement
//! handles and statement tickets are [`StatementHandle`]s, sealed by the
//! server.
//!
//! A handle carries its statement (text, bound parameters, pinned time), so
//! nothing is kept on the server: a client that never closes a prepared
//! statement leaks nothing, and any process of a cluster can answer it. What
//! the client sends back is not trusted for that: a handle is
//! `HMAC-SHA256(key, caller ‖ body) ‖ body`, and one that does not verify
//! is refused before any of it is read. The key is the process's
//! ([`crate::serve::auth::Authenticator::process_key`]: the same in every
//! process of a cluster with a cluster token), and the caller (the API
//! token or name behind the credential) is part of what is signed, so a
//! handle works only for the caller it was made for. Handles end
//! [`MAX_AGE`] after they were made, and are at most [`MAX_HANDLE_BYTES`].
//!
//! The bound parameters inside a verified handle were written by this
//! server from a batch it had already decoded. They are read back through
//! the same bounded, checked decoder as a client's DoPut
//! ([`super::parameters`]) all the same.

use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use datafusion::common::ScalarValue;
use ring::hmac;
use serde::{Deserialize, Serialize};
use tonic::Status;
use trimatch_dataflows::Time;

use crate::serve::auth::Principal;
use crate::serve::gate::caller_of;

/// How long a handle is good for after it was made.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The largest handle accepted (its text is at most `--sql-max-statement-bytes`,
/// its parameters at most [`MAX_PARAMETER_BYTES`]).
pub const MAX_HANDLE_BYTES: usize = 4 << 20;
/// The largest Arrow payload of bound parameters accepted.
pub const MAX_PARAMETER_BYTES: usize = 1 << 20;

/// The key handles are sealed with.
pub struct HandleKey(hmac::Key);

impl HandleKey {
    /// The purpose the process key is derived for.
    pub const PURPOSE: &'static str = "trimatch statement handle key";

    pub fn new(secret: &[u8; 32]) -> Self {
        HandleKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

/// A statement between calls.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct StatementHandle {
    pub sql: String,
    /// The bound parameters: a one-row record batch as framed Arrow IPC
    /// messages ([`super::parameters::frame`]), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<String>,
    /// The time the statement reads (default: the newest complete one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<Time>,
    /// When the handle was made (ms since the epoch).
    #[serde(default)]
    pub made_at: i64,
}

const TAG_BYTES: usize = 32;

/// Why a handle was refused, as its caller is told.
fn not_ours(why: &str) -> Status {
    Status::invalid_argument(format!(
        "not a statement handle this server made for you ({why}); prepare the statement again"
    ))
}

impl StatementHandle {
    pub fn new(sql: String, as_of: Option<Time>) -> Self {
        StatementHandle {
            sql,
            parameters: None,
            as_of,
            made_at: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// The handle as `principal` holds it: signed for them with `key`.
    pub fn seal(&self, key: &HandleKey, principal: &Principal) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a statement handle serializes");
        let tag = hmac::sign(&key.0, &signed_bytes(principal, &body));
        let mut sealed = Vec::with_capacity(TAG_BYTES + body.len());
        sealed.extend_from_slice(tag.as_ref());
        sealed.extend_from_slice(&body);
        sealed
    }

    /// The handle `bytes` hold, if this server sealed them for `principal`
    /// within [`MAX_AGE`]; INVALID_ARGUMENT otherwise.
    pub fn open(bytes: &[u8], key: &HandleKey, principal: &Principal) -> Result<Self, Status> {
        if bytes.len() > MAX_HANDLE_BYTES {
            return Err(not_ours(&format!(
                "{} bytes, more than the {MAX_HANDLE_BYTES} a handle may have",
                bytes.len()
            )));
        }
        if bytes.len() < TAG_BYTES {
            return Err(not_ours("too short"));
        }
        let (tag, body) = bytes.split_at(TAG_BYTES);
        hmac::verify(&key.0, &signed_bytes(principal, body), tag)
            .map_err(|_| not_ours("its signature does not verify"))?;
        let handle: StatementHandle = serde_json::from_slice(body).map_err(|error| {
            Status::internal(format!("a signed handle does not parse: {error}"))
        })?;
        let age = chrono::Utc::now().timestamp_millis() - handle.made_at;
        if age > MAX_AGE.as_millis() as i64 {
            return Err(not_ours("it has expired"));
        }
        Ok(handle)
    }

    /// This statement with `batch`'s one row as its parameters, in order.
    pub fn bind(mut self, batch: &RecordBatch) -> Result<Self, Status> {
        if batch.num_rows() != 1 {
            return Err(Status::invalid_argument(format!(
                "parameters come as one row, one column per placeholder; got {} rows \
                 (run the statement once per set of parameters)",
                batch.num_rows()
            )));
        }
        let bytes = super::parameters::frame(batch)?;
        if bytes.len() > MAX_PARAMETER_BYTES {
            return Err(Status::invalid_argument(format!(
                "the parameters take {} bytes, more than the {MAX_PARAMETER_BYTES} accepted",
                bytes.len()
            )));
        }
        self.parameters = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        Ok(self)
    }

    /// The bound parameters, `$1` first.
    pub async fn parameter_values(&self) -> Result<Vec<ScalarValue>, Status> {
        let Some(encoded) = &self.parameters else {
            return Ok(Vec::new());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(internal)?;
        let messages = super::parameters::unframe(&bytes)?;
        let batch = super::parameters::first_parameter_batch(futures::stream::iter(
            messages.into_iter().map(Ok),
        ))
        .await?;
        let Some(batch) = batch else {
            return Ok(Vec::new());
        };
        batch
            .columns()
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0).map_err(internal))
            .collect()
    }
}

/// What a handle's tag signs: who it is for, then its body.
fn signed_bytes(principal: &Principal, body: &[u8]) -> Vec<u8> {
    let caller = caller_of(principal);
    let mut bytes = Vec::with_capacity(caller.len() + 1 + body.len());
    bytes.extend_from_slice(caller.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(body);
    bytes
}

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn principal(name: &str) -> Principal {
        Principal {
            name: name.to_string(),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn a_handle_round_trips_with_its_parameters_for_its_caller_only() {
        let key = HandleKey::new(&[7; 32]);
        let alice = principal("alice");
        let batch = RecordBatch::try_from_iter([(
            "0",
            Arc::new(arrow::array::StringArray::from(vec!["acme"])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let handle = StatementHandle::new("SELECT $1".into(), Some(7))
            .bind(&batch)
            .unwrap();
        let sealed = handle.seal(&key, &alice);
        let opened = StatementHandle::open(&sealed, &key, &alice).unwrap();
        assert_eq!(opened, handle);
        assert_eq!(
            futures::executor::block_on(opened.parameter_values()).unwrap(),
            vec![ScalarValue::Utf8(Some("acme".into()))]
        );
        let refused = |bytes: &[u8], key: &HandleKey, who: &Principal| {
            StatementHandle::open(bytes, key, who).unwrap_err()
        };
        let for_bob = refused(&sealed, &key, &principal("bob"));
        assert_eq!(for_bob.code(), tonic::Code::InvalidArgument);
        assert!(for_bob.message().contains("does not verify"), "{for_bob:?}");
        refused(&sealed, &HandleKey::new(&[8; 32]), &alice);
        let mut flipped = sealed.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        refused(&flipped, &key, &alice);
        refused(b"not json", &key, &alice);

        let two_rows = RecordBatch::try_from_iter([(
            "0",
            Arc::new(arrow::array::Int64Array::from(vec![1, 2])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        assert!(StatementHandle::default().bind(&two_rows).is_err());
    }

    #[test]
    fn an_old_handle_is_refused() {
        let key = HandleKey::new(&[1; 32]);
        let alice = principal("alice");
        let mut handle = StatementHandle::new("SELECT 1".into(), None);
        handle.made_at -= MAX_AGE.as_millis() as i64 + 1;
        let status = StatementHandle::open(&handle.seal(&key, &alice), &key, &alice).unwrap_err();
        assert!(status.message().contains("expired"), "{status:?}");
    }
}
