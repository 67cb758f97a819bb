//! trimatch's durable state (SPEC §11): checkpoints of what the engine was fed
//! (the present documents and the sources' bookkeeping rows, per worker
//! shard) together with the input offsets they reflect, at one complete
//! logical time, in a state directory.
//!
//! This crate knows storage only: what a checkpoint holds ([`Checkpoint`],
//! [`Manifest`]), how it is encoded ([`codec`]) and how generations are
//! written, verified and chosen ([`StateDir`]). When to take one, and how a
//! restore feeds the engine and the sources, is the pipeline's business.

pub mod codec;
mod lock;
mod store;

pub use lock::StateDirLock;
pub use store::{
    load, read_manifest, Checkpoint, ClusterShape, Expected, Manifest, PartitionCheckpoint,
    ShardSummary, StateDir, StateError, WriteStats, CHUNK_ROWS, KEEP_GENERATIONS,
};
