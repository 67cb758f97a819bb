//! trimatch's sources: Kafka consumers that decode messages with
//! [`trimatch_dataflows::decode`] and feed a [`trimatch_dataflows::Matcher`]
//! per timely worker, with exact offsets per logical time.
//!
//! Not built yet: this crate is filled by the Kafka-connector issue. It exists
//! now so the workspace has its final shape and the boundary is visible: a
//! source knows documents and offsets, never matching rules.
