//! Serving a running pipeline: one reader, one gate, and thin adapters.
//!
//! * [`reader`] — the cluster reader, the one place that reads the running
//!   job (snapshots, a statement's tables, offsets, change feeds) from this
//!   process's workers and from the other processes of a cluster.
//! * [`gate`] — the access gate every call passes first: who is calling
//!   ([`auth`]), what they may read (SPEC §9), and each call's record
//!   (request metrics, the audit log).
//! * [`flight`] and [`flight_sql`] — the two adapters, siblings over the
//!   reader and the gate on one port: Arrow Flight with trimatch's own
//!   tickets ([`tickets`], SPEC §5), and Flight SQL (SPEC §10), to which the
//!   Flight service hands the calls that carry a Flight SQL command.
//! * [`metrics`] and [`http`] — the Prometheus metrics with `/healthz` and
//!   `/readyz`; [`tls`] — the TLS both ports speak.
//!
//! Imports run one way: adapters → gate, reader → `pipeline`, `output`;
//! `flight` → `flight_sql`, never back; the reader and the gate know nothing
//! of each other or of the adapters. Serving knows nothing of the matching
//! rules. What it knows of Kafka is what operators are told: the sources'
//! per-partition counters and what the broker said of the input topics'
//! history, which [`metrics`] and the `status` action report. Nothing below
//! this layer knows about serving.

pub mod auth;
pub mod flight;
pub mod flight_sql;
pub mod gate;
pub mod http;
pub mod metrics;
pub mod reader;
pub mod tickets;
pub mod tls;

use std::pin::Pin;

/// A reply stream of either adapter, as tonic's Flight services return them.
pub type ReplyStream<T> =
    Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;
