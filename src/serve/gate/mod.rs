//! The access gate: every call of either adapter passes it before it reads.
//! It says who is calling (through `serve::auth`), what they may read
//! (`scope`: tenant scope, admin-only collections, shard reads; SPEC §9),
//! how much they may hold at once (`slots`: open streams here, SQL
//! statements in `serve::flight_sql`), and leaves each call's record: the
//! request metrics and, with `--audit-log`, one audit line.
//!
//! May use: `serve::auth` (credentials), `serve::tickets` (the queries it
//! scopes), `serve::metrics` (request counters) and `output::filter`.

mod scope;
mod slots;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use trimatch_dataflows::OutputCollection;

use crate::serve::auth::{Authenticator, Principal};
use crate::serve::metrics::Metrics;
pub use scope::{authorize, authorize_admin, authorize_tenant_admin, may_read, scoped};
pub use slots::{caller_of, SlotKind, SlotPermit, Slots};

/// Stream slots, as refusals name them.
const STREAM_SLOTS: SlotKind = SlotKind {
    things: "streams",
    state: "open",
    total_flag: "--max-streams",
    caller_flag: "--max-streams-per-caller",
};

/// Streams open at once by default: in all, and per caller.
pub const DEFAULT_MAX_STREAMS: (usize, usize) = (1024, 64);

/// Authentication, authorization and the record of each call.
#[derive(Clone)]
pub struct AccessGate {
    auth: Arc<Authenticator>,
    /// One log line per authenticated request (`--audit-log`).
    audit: bool,
    metrics: Arc<Metrics>,
    /// DoGet and subscription streams open, in all and per caller.
    streams: Arc<Slots>,
}

/// What one call did, for its record.
pub struct CallRecord<'a> {
    pub principal: &'a Principal,
    /// The method as metrics and the audit log name it.
    pub method: &'static str,
    pub collection: Option<OutputCollection>,
    /// Rows a snapshot sent.
    pub rows: Option<usize>,
    pub started: Instant,
}

impl Default for AccessGate {
    /// No authentication (every caller is an admin of every tenant), no
    /// audit log, metrics of its own.
    fn default() -> Self {
        AccessGate {
            auth: Arc::new(Authenticator::disabled()),
            audit: false,
            metrics: Metrics::new(),
            streams: Slots::new(STREAM_SLOTS, DEFAULT_MAX_STREAMS.0, DEFAULT_MAX_STREAMS.1),
        }
    }
}

impl AccessGate {
    /// Authenticates every call with `auth`; with `audit`, logs each one.
    pub fn with_auth(mut self, auth: Arc<Authenticator>, audit: bool) -> Self {
        self.auth = auth;
        self.audit = audit;
        self
    }

    /// Counts requests in `metrics` (the ones `/metrics` renders).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Allows `total` streams open at once, and `per_caller` for one caller.
    pub fn with_stream_limits(mut self, total: usize, per_caller: usize) -> Self {
        self.streams = Slots::new(STREAM_SLOTS, total, per_caller);
        self
    }

    /// A slot for one more of `principal`'s streams, held while it is open.
    pub fn open_stream(&self, principal: &Principal) -> Result<SlotPermit, Status> {
        self.streams.take(principal)
    }

    /// Where requests are counted.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The key this process uses for `purpose` (see
    /// [`Authenticator::process_key`]).
    pub fn process_key(&self, purpose: &str) -> [u8; 32] {
        self.auth.process_key(purpose)
    }

    /// The principal behind a call, or UNAUTHENTICATED.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        self.auth.authenticate(
            request.metadata(),
            request.remote_addr().map(|addr| addr.ip()),
        )
    }

    /// A handshake: the principal of the credentials in `metadata` and a
    /// session token for it.
    pub fn handshake(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<(Principal, String), Status> {
        let answer = self.auth.handshake(metadata, peer)?;
        self.audit(&answer.0, "handshake", None, None, &Ok::<(), Status>(()));
        Ok(answer)
    }

    /// Records a finished call: counts it with how long it took (streams:
    /// until the reply stream was ready) and writes its audit line.
    pub fn record<T>(&self, call: CallRecord<'_>, result: &Result<T, Status>) {
        self.metrics
            .flight_request(call.method, result.is_err(), call.started.elapsed());
        self.audit(
            call.principal,
            call.method,
            call.collection,
            call.rows,
            result,
        );
    }

    /// Writes the audit line of a call, if auditing is on.
    fn audit<T>(
        &self,
        principal: &Principal,
        method: &str,
        collection: Option<OutputCollection>,
        rows: Option<usize>,
        result: &Result<T, Status>,
    ) {
        if !self.audit {
            return;
        }
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(status) => format!("{:?}", status.code()),
        };
        tracing::info!(
            target: "trimatch::audit",
            principal = %principal.name,
            role = principal.role.name(),
            method,
            collection = collection.map(|collection| collection.name()),
            tenants = %principal.tenants,
            rows,
            outcome,
            "flight request"
        );
    }
}
