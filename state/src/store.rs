//! Checkpoint generations in a state directory: one redb file per checkpoint,
//! written whole in one transaction under a temporary name and renamed into
//! place, so that a crash at any point leaves every earlier generation intact.
//!
//! A generation file holds the [`Manifest`] (what the checkpoint is for and
//! where every partition stood) and its shards' documents and bookkeeping rows
//! in chunks of [`CHUNK_ROWS`], each value prefixed with its xxh3 checksum:
//! redb commits atomically, but a byte flipped on disk later must be found at
//! restore, not fed to the engine. A damaged generation is reported and the
//! next older intact one is used; one written for another version, other
//! topics or another cluster shape is refused (see [`StateError`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use trimatch_dataflows::model::{Fingerprint, Time};
use trimatch_dataflows::ShardCheckpoint;

use crate::codec::{CodecError, Decoder, Encoder, FORMAT_VERSION};

/// Rows per stored chunk: large enough that redb's per-entry cost vanishes,
/// small enough that a chunk is a few hundred kilobytes.
pub const CHUNK_ROWS: usize = 4096;
/// How many generations are kept: the newest and two before it, so that a
/// damaged newest one still leaves a choice (and cluster processes can agree
/// on a common one).
pub const KEEP_GENERATIONS: usize = 3;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// (worker, section, chunk) → checksummed encoded rows.
const CHUNKS: TableDefinition<(u32, u8, u32), &[u8]> = TableDefinition::new("chunks");
const DOCUMENTS: u8 = 0;
const BOOKKEEPING: u8 = 1;
const FILE_PREFIX: &str = "checkpoint-";
const FILE_SUFFIX: &str = ".redb";
const PARTIAL_SUFFIX: &str = ".partial";

/// Why a state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {message}")]
    Store { path: PathBuf, message: String },
    #[error("checkpoint {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "the checkpoint in {dir} was written {reason}; start with --reset-state to discard it \
         and read the topics again from --start (or point --state-dir elsewhere)"
    )]
    Incompatible { dir: PathBuf, reason: String },
    #[error(
        "no intact checkpoint in {dir}: {reasons}; start with --reset-state to discard them and \
         read the topics again from --start"
    )]
    NoIntactCheckpoint { dir: PathBuf, reasons: String },
    #[error(
        "the state directory {dir} is in use by another process ({holder}); one process owns a \
         state directory: stop that one, or give this one its own --state-dir"
    )]
    InUse { dir: PathBuf, holder: String },
}

fn store_error(path: &Path, error: impl std::fmt::Display) -> StateError {
    StateError::Store {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// Where a process stands in the computation. A checkpoint restores only
/// into the same shape: documents are sharded by worker (re-sharding is not
/// supported).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterShape {
    pub processes: usize,
    pub workers_per_process: usize,
    pub process: usize,
}

/// Where one input partition stood at the checkpoint's time, with its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    pub topic: String,
    pub partition: i32,
    /// The first offset not reflected: reading goes on here.
    pub next_offset: i64,
    pub consumed: u64,
    pub applied: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
}

/// One shard's place in a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSummary {
    pub worker: usize,
    pub documents: u64,
    pub bookkeeping: u64,
    pub dead_letters_recorded: u64,
}

/// What a checkpoint is for and where its sources stood.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The trimatch version that wrote it.
    pub written_by: String,
    /// The complete logical time it reflects.
    pub as_of: Time,
    /// The latest batch time at or before `as_of` (of any of this process's
    /// workers): the state is the same at every time from it to `as_of`.
    pub unchanged_since: Time,
    pub written_at_ms: i64,
    pub shape: ClusterShape,
    /// The Kafka cluster the offsets belong to, if the brokers reported its id.
    #[serde(default)]
    pub kafka_cluster_id: Option<String>,
    /// The input topics, as `kind=name`, sorted.
    pub topics: Vec<String>,
    /// This process's partitions.
    pub partitions: Vec<PartitionCheckpoint>,
    /// This process's workers' shards.
    pub shards: Vec<ShardSummary>,
}

/// What the running job expects a checkpoint to have been written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub shape: ClusterShape,
    pub topics: Vec<String>,
}

impl Manifest {
    /// Why a job expecting `expected` cannot restore this checkpoint, if it cannot.
    pub fn incompatibility(&self, expected: &Expected) -> Option<String> {
        if self.format != FORMAT_VERSION {
            return Some(format!(
                "in checkpoint format {} by trimatch {} (this build reads format {FORMAT_VERSION})",
                self.format, self.written_by
            ));
        }
        if self.shape != expected.shape {
            let (old, new) = (&self.shape, &expected.shape);
            return Some(format!(
                "by process {} of {} with {} workers each, and this is process {} of {} with {} \
                 workers each (a checkpoint restores only into the same shape; re-sharding is \
                 not supported)",
                old.process,
                old.processes,
                old.workers_per_process,
                new.process,
                new.processes,
                new.workers_per_process
            ));
        }
        if self.topics != expected.topics {
            return Some(format!(
                "for the topics [{}], and this run reads [{}]",
                self.topics.join(", "),
                expected.topics.join(", ")
            ));
        }
        None
    }
}

/// A whole checkpoint of one process: its manifest and its workers' shards.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub manifest: Manifest,
    pub shards: Vec<ShardCheckpoint>,
}

/// What writing a generation took.
#[derive(Clone, Copy, Debug)]
pub struct WriteStats {
    pub bytes: u64,
    pub seconds: f64,
    pub documents: u64,
}

/// A state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// Fault injection for tests: how long a write waits before it commits,
    /// so that a test can kill the process in the middle of one.
    commit_pause: std::time::Duration,
}

impl StateDir {
    /// Opens (creating it if needed) the state directory at `dir`, and
    /// removes generation files a crash left half-written.
    pub fn open(dir: impl Into<PathBuf>) -> Result<StateDir, StateError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            source,
        })?;
        let state = StateDir {
            dir,
            commit_pause: std::time::Duration::ZERO,
        };
        for entry in state.entries()? {
            if entry.to_string_lossy().ends_with(PARTIAL_SUFFIX) {
                let _ = fs::remove_file(&entry);
            }
        }
        Ok(state)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fault injection for tests: every write pauses this long, with its
    /// generation half-written, before it commits.
    pub fn with_commit_pause(mut self, pause: std::time::Duration) -> StateDir {
        self.commit_pause = pause;
        self
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.dir.clone(),
            source,
        }
    }

    fn entries(&self) -> Result<Vec<PathBuf>, StateError> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|error| self.io(error))? {
            entries.push(entry.map_err(|error| self.io(error))?.path());
        }
        Ok(entries)
    }

    /// The generation files, newest first.
    pub fn generations(&self) -> Result<Vec<(Time, PathBuf)>, StateError> {
        let mut generations: Vec<(Time, PathBuf)> = self
            .entries()?
            .into_iter()
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?;
                let time = name
                    .strip_prefix(FILE_PREFIX)?
                    .strip_suffix(FILE_SUFFIX)?
                    .parse()
                    .ok()?;
                Some((time, path))
            })
            .collect();
        generations.sort_by_key(|(time, _)| std::cmp::Reverse(*time));
        Ok(generations)
    }

    /// Deletes every generation (`--reset-state`).
    pub fn reset(&self) -> Result<usize, StateError> {
        let generations = self.generations()?;
        for (_, path) in &generations {
            fs::remove_file(path).map_err(|error| self.io(error))?;
        }
        Ok(generations.len())
    }

    /// Writes `checkpoint` as a new generation, durably and atomically, and
    /// drops generations beyond [`KEEP_GENERATIONS`].
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<WriteStats, StateError> {
        let started = Instant::now();
        let as_of = checkpoint.manifest.as_of;
        let name = format!("{FILE_PREFIX}{as_of:020}{FILE_SUFFIX}");
        let path = self.dir.join(&name);
        let partial = self.dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        let _ = fs::remove_file(&partial);
        let written = Database::create(&partial)
            .map_err(|error| store_error(&partial, error))
            .and_then(|database| {
                write_generation(&database, checkpoint, self.commit_pause)
                    .map_err(|error| store_error(&partial, error))
            })
            .and_then(|documents| {
                fs::rename(&partial, &path).map_err(|error| self.io(error))?;
                Ok(documents)
            });
        let documents = match written {
            Ok(documents) => documents,
            Err(error) => {
                // A failed write leaves nothing behind: on a full disk, the
                // half-written file is the space the next write needs.
                let _ = fs::remove_file(&partial);
                return Err(error);
            }
        };
        // The rename is durable once the directory is.
        if let Ok(directory) = fs::File::open(&self.dir) {
            let _ = directory.sync_all();
        }
        let bytes = fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
        for (_, old) in self.generations()?.into_iter().skip(KEEP_GENERATIONS) {
            let _ = fs::remove_file(old);
        }
        Ok(WriteStats {
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            documents,
        })
    }

    /// The manifests of the generations a job expecting `expected` may
    /// restore, newest first. A newest generation written for something else
    /// is an [`Incompatible`](StateError::Incompatible) error (the job must
    /// not silently go back to older state); unreadable ones are skipped with
    /// a warning.
    pub fn manifests(&self, expected: &Expected) -> Result<Vec<(Manifest, PathBuf)>, StateError> {
        let mut manifests = Vec::new();
        for (index, (_, path)) in self.generations()?.into_iter().enumerate() {
            match read_manifest(&path) {
                Ok(manifest) => {
                    if let Some(reason) = manifest.incompatibility(expected) {
                        if index == 0 {
                            return Err(StateError::Incompatible {
                                dir: self.dir.clone(),
                                reason,
                            });
                        }
                        continue;
                    }
                    manifests.push((manifest, path));
                }
                Err(error) => tracing::error!("{error}; an older checkpoint will be used"),
            }
        }
        Ok(manifests)
    }

    /// Loads the newest intact generation among `candidates` (as from
    /// [`manifests`](Self::manifests)), verifying every chunk; damaged ones
    /// are reported and skipped. `progress` is told (rows read, rows in all).
    pub fn load_newest_intact(
        &self,
        candidates: &[(Manifest, PathBuf)],
        progress: &dyn Fn(u64, u64),
    ) -> Result<Option<Checkpoint>, StateError> {
        let mut reasons = Vec::new();
        for (_, path) in candidates {
            match load(path, progress) {
                Ok(checkpoint) => return Ok(Some(checkpoint)),
                Err(error) => {
                    tracing::error!("{error}; trying the previous checkpoint");
                    reasons.push(error.to_string());
                }
            }
        }
        if reasons.is_empty() {
            return Ok(None);
        }
        Err(StateError::NoIntactCheckpoint {
            dir: self.dir.clone(),
            reasons: reasons.join("; "),
        })
    }
}

/// Writes every table of a generation in one transaction; returns the documents written.
fn write_generation(
    database: &Database,
    checkpoint: &Checkpoint,
    pause: std::time::Duration,
) -> Result<u64, redb::Error> {
    let transaction = database.begin_write()?;
    let mut documents = 0;
    {
        let mut chunks = transaction.open_table(CHUNKS)?;
        for shard in &checkpoint.shards {
            let worker = shard.worker as u32;
            documents += shard.documents.len() as u64;
            for (index, chunk) in shard.documents.chunks(CHUNK_ROWS).enumerate() {
                let mut encoder = Encoder::default();
                for (key, document) in chunk {
                    encoder.fingerprint(key.0);
                    encoder.document(document);
                }
                let value = checksummed(&encoder.bytes);
                chunks.insert((worker, DOCUMENTS, index as u32), value.as_slice())?;
            }
            for (index, chunk) in shard.bookkeeping.chunks(CHUNK_ROWS).enumerate() {
                let mut encoder = Encoder::default();
                for (slot, row) in chunk {
                    encoder.fingerprint(slot.0);
                    encoder.source_row(row);
                }
                let value = checksummed(&encoder.bytes);
                chunks.insert((worker, BOOKKEEPING, index as u32), value.as_slice())?;
            }
        }
        let manifest = serde_json::to_vec(&checkpoint.manifest).expect("a manifest serializes");
        let value = checksummed(&manifest);
        transaction
            .open_table(META)?
            .insert("manifest", value.as_slice())?;
    }
    std::thread::sleep(pause);
    transaction.commit()?;
    Ok(documents)
}

fn checksummed(payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(payload.len() + 8);
    value.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    value.extend_from_slice(payload);
    value
}

/// The payload of a checksummed value, if its checksum holds.
fn verified(value: &[u8]) -> Option<&[u8]> {
    if value.len() < 8 {
        return None;
    }
    let (sum, payload) = value.split_at(8);
    (sum == xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes()).then_some(payload)
}

fn damaged(path: &Path, reason: impl std::fmt::Display) -> StateError {
    StateError::Damaged {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn open(path: &Path) -> Result<redb::ReadOnlyDatabase, StateError> {
    redb::ReadOnlyDatabase::open(path).map_err(|error| damaged(path, error))
}

fn read_manifest_from(
    database: &redb::ReadOnlyDatabase,
    path: &Path,
) -> Result<Manifest, StateError> {
    let transaction = database.begin_read().map_err(|e| damaged(path, e))?;
    let table = transaction.open_table(META).map_err(|e| damaged(path, e))?;
    let value = table
        .get("manifest")
        .map_err(|e| damaged(path, e))?
        .ok_or_else(|| damaged(path, "it has no manifest"))?;
    let payload = verified(value.value())
        .ok_or_else(|| damaged(path, "the manifest's checksum does not match"))?;
    serde_json::from_slice(payload).map_err(|e| damaged(path, format!("unreadable manifest: {e}")))
}

/// The manifest of the generation at `path`.
pub fn read_manifest(path: &Path) -> Result<Manifest, StateError> {
    read_manifest_from(&open(path)?, path)
}

/// Loads and verifies the whole generation at `path`.
pub fn load(path: &Path, progress: &dyn Fn(u64, u64)) -> Result<Checkpoint, StateError> {
    let database = open(path)?;
    let manifest = read_manifest_from(&database, path)?;
    let transaction = database.begin_read().map_err(|e| damaged(path, e))?;
    let chunks = transaction
        .open_table(CHUNKS)
        .map_err(|e| damaged(path, e))?;
    let total: u64 = manifest
        .shards
        .iter()
        .map(|shard| shard.documents + shard.bookkeeping)
        .sum();
    let mut done = 0;
    let mut shards = Vec::new();
    for summary in &manifest.shards {
        let mut shard = ShardCheckpoint {
            as_of: manifest.as_of,
            worker: summary.worker,
            documents: Vec::with_capacity(summary.documents as usize),
            bookkeeping: Vec::with_capacity(summary.bookkeeping as usize),
            dead_letters_recorded: summary.dead_letters_recorded,
        };
        for (section, expected) in [
            (DOCUMENTS, summary.documents),
            (BOOKKEEPING, summary.bookkeeping),
        ] {
            let worker = summary.worker as u32;
            let range = chunks
                .range((worker, section, 0)..=(worker, section, u32::MAX))
                .map_err(|e| damaged(path, e))?;
            for entry in range {
                let (key, value) = entry.map_err(|e| damaged(path, e))?;
                let (_, _, index) = key.value();
                let payload = verified(value.value()).ok_or_else(|| {
                    damaged(
                        path,
                        format!("chunk {index} of worker {worker} fails its checksum"),
                    )
                })?;
                let read = decode_chunk(payload, section, &mut shard)
                    .map_err(|e| damaged(path, format!("chunk {index} of worker {worker}: {e}")))?;
                done += read;
                progress(done, total);
            }
            let found = if section == DOCUMENTS {
                shard.documents.len()
            } else {
                shard.bookkeeping.len()
            } as u64;
            if found != expected {
                return Err(damaged(
                    path,
                    format!("worker {worker} has {found} rows in section {section}, the manifest says {expected}"),
                ));
            }
        }
        shards.push(shard);
    }
    Ok(Checkpoint { manifest, shards })
}

/// Decodes one chunk into `shard`; how many rows it held.
fn decode_chunk(
    payload: &[u8],
    section: u8,
    shard: &mut ShardCheckpoint,
) -> Result<u64, CodecError> {
    let mut decoder = Decoder::new(payload);
    let mut rows = 0;
    while !decoder.is_empty() {
        let key = Fingerprint(decoder.fingerprint()?);
        if section == DOCUMENTS {
            shard.documents.push((key, decoder.document()?));
        } else {
            shard.bookkeeping.push((key, decoder.source_row()?));
        }
        rows += 1;
    }
    Ok(rows)
}
