//! Durable state for a running job (SPEC §11): checkpoints written while it
//! runs, and the restore that makes a new run go on exactly where one stopped.
//!
//! **Checkpoint times.** Every worker takes its checkpoints at the same
//! logical times, `k·interval − 1` for whole `k` (`schedule`): before its
//! input passes such a time it notes where its partitions stand (the offsets
//! and counters of what it has sealed, which is exactly what that time
//! reflects) and holds the engine's state at that time; once the time is
//! complete it reads its shard (`Matcher::checkpoint`) and hands it to the
//! process's writer thread (`writer`), which writes the generation once every
//! local worker's shard is in. The worker does the read, a walk of its
//! shard; encoding and storage run on the writer, off the worker loop.
//!
//! At a clean shutdown the workers take one more checkpoint, at a time the
//! process picks just after every local input, and stop reading (the final
//! time then is the last time with any change).
//!
//! **Restore.** At start the newest intact generation is loaded; in a
//! cluster the processes first agree on the newest time they all have
//! (`agree`). Each worker feeds its shard at the checkpoint's time `T`, its
//! source resumes every partition at the checkpointed offset with its
//! counters, and its clock starts after both `T` and the wall clock: logical
//! times keep increasing across restarts. The new run knows the state at `T`
//! and from its first time `R` on, not what the previous run saw between:
//! reads at times in `(T, R)` and before `T` are refused
//! ([`Restored::check_read`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use trimatch_dataflows::model::WallClock;
use trimatch_dataflows::{ReadError, ShardCheckpoint, Time};
use trimatch_state::{Checkpoint, ClusterShape, Expected, Manifest, StateDir};

pub(super) mod agree;
pub(super) mod schedule;
pub(super) mod writer;

use super::ReadFailure;

/// `--state-dir` and how often to checkpoint.
#[derive(Clone, Debug)]
pub struct DurabilityConfig {
    pub state_dir: PathBuf,
    pub interval: Duration,
    /// Readiness fails once no checkpoint has been written for this long
    /// (durability is failing: a full disk, a lost volume).
    pub max_age: Duration,
    /// When the state directory holds checkpoints and none is usable (all
    /// damaged), start empty and read the topics from `--start` instead of
    /// refusing to start.
    pub allow_replay_on_damage: bool,
    /// Fault injection for tests: each checkpoint write pauses this long
    /// before it commits (see `StateDir::with_commit_pause`).
    pub fault_commit_pause: Duration,
}

impl DurabilityConfig {
    /// Checkpoints every `interval`; readiness allows five intervals, and at
    /// least five minutes, without one.
    pub fn new(state_dir: impl Into<PathBuf>, interval: Duration) -> Self {
        DurabilityConfig {
            state_dir: state_dir.into(),
            interval,
            max_age: (interval * 5).max(Duration::from_secs(300)),
            allow_replay_on_damage: false,
            fault_commit_pause: Duration::ZERO,
        }
    }
}

/// How far back the dead-letter topic is read at a restore, before the
/// checkpoint's time: logical times run ahead of the wall clock only after
/// the wall clock stepped back.
const DEAD_LETTER_LOOKBACK_MS: i64 = 300_000;

/// What the checkpoints and the restore did, for `/metrics` and `status`.
#[derive(Debug, Default)]
pub struct CheckpointMetrics {
    /// The logical time of the last checkpoint written (0: none yet).
    pub last_as_of: AtomicU64,
    /// When it was written (ms since the epoch).
    pub last_written_at_ms: AtomicU64,
    pub last_duration_micros: AtomicU64,
    pub last_bytes: AtomicU64,
    pub last_documents: AtomicU64,
    pub written: AtomicU64,
    pub failures: AtomicU64,
    /// The restore at start: documents fed and how long loading took.
    pub restored_documents: AtomicU64,
    pub restore_micros: AtomicU64,
    pub restored_as_of: AtomicU64,
    /// When the state directory was opened (ms since the epoch): a
    /// checkpoint's age counts from here until the first one is written.
    pub opened_at_ms: AtomicU64,
    /// Readiness's bound on a checkpoint's age (ms; 0: none).
    pub max_age_ms: AtomicU64,
}

impl CheckpointMetrics {
    /// Why readiness fails for durability at `now` (ms since the epoch), if
    /// it does: no checkpoint written for longer than the bound.
    pub fn overdue(&self, now: u64) -> Option<String> {
        let max = self.max_age_ms.load(Ordering::Relaxed);
        let since = self
            .last_written_at_ms
            .load(Ordering::Relaxed)
            .max(self.opened_at_ms.load(Ordering::Relaxed));
        let age = now.saturating_sub(since);
        (max > 0 && age > max).then(|| {
            format!(
                "no checkpoint written for {} s, more than --ready-max-checkpoint-age-seconds {} \
                 ({} writes failed; see the log and trimatch_checkpoint_failures_total)",
                age / 1000,
                max / 1000,
                self.failures.load(Ordering::Relaxed)
            )
        })
    }
}

/// The state a new run was restored from: the checkpoint's time `T`; the
/// time `L` of the previous run's last batch at or before it (the state was
/// the same from `L` to `T`); and the first time after `T` that the new run
/// can vouch for, `R − 1`: its workers' times start at `R`, later than every
/// time the previous run used, and nothing changes between `T` and `R`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    pub unchanged_since: Time,
    pub checkpoint: Time,
    pub readable_from: Time,
}

impl Restored {
    /// The time to read for a read that assumes the state as of `time` is
    /// known, or why it cannot be answered: from the previous run's last
    /// batch before the checkpoint to the checkpoint, the state is the
    /// checkpoint's (read at its time); from the restart on, it is this
    /// run's. Before that last batch nothing is retained; between the
    /// checkpoint and the restart, the previous run may have seen changes
    /// this one replays later.
    pub fn check_read(&self, time: Time) -> Result<Time, ReadFailure> {
        if time < self.unchanged_since {
            return Err(ReadError::Compacted {
                as_of: time,
                since: self.unchanged_since,
            }
            .into());
        }
        if time <= self.checkpoint {
            return Ok(self.checkpoint);
        }
        if time > self.checkpoint && time < self.readable_from {
            return Err(ReadFailure::AcrossRestart {
                time,
                checkpoint: self.checkpoint,
                readable_from: self.readable_from,
            });
        }
        Ok(time)
    }
}

/// What the workers of a job with a state directory share.
pub(super) struct Durability {
    pub(super) dir: StateDir,
    pub(super) interval_ms: u64,
    pub(super) metrics: std::sync::Arc<CheckpointMetrics>,
    /// Generations this process may restore (newest first): the one loaded
    /// and the older ones, by manifest (a cluster agrees on one of them).
    pub(super) candidates: Vec<(Manifest, PathBuf)>,
    /// The newest intact generation, loaded at start; workers take their
    /// shards out of it.
    pub(super) loaded: Mutex<Option<Checkpoint>>,
    /// The restore, once the workers have agreed on it.
    pub(super) restored: Mutex<Option<Restored>>,
    /// A clean shutdown's checkpoint time (0: none asked for).
    pub(super) final_at: AtomicU64,
    pub(super) shape: ClusterShape,
}

impl Durability {
    /// Opens the state directory and loads its newest intact generation, if
    /// any; refuses one written for another version, topics or shape.
    pub(super) fn open(
        config: &DurabilityConfig,
        expected: Expected,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Durability> {
        let dir = StateDir::open(&config.state_dir)?.with_commit_pause(config.fault_commit_pause);
        let candidates = dir.manifests(&expected)?;
        let started = std::time::Instant::now();
        let loaded = match dir.load_newest_intact(&candidates, progress) {
            Ok(loaded) => loaded,
            Err(error) if config.allow_replay_on_damage => {
                tracing::warn!("{error}; --allow-replay-on-damage: starting empty");
                None
            }
            Err(error) => return Err(error.into()),
        };
        let stored = dir.generations()?.len();
        if loaded.is_none() && stored > 0 {
            // Checkpoints are there and none could be read (each was
            // reported): going on would silently replay from --start.
            if !config.allow_replay_on_damage {
                anyhow::bail!(
                    "{} holds {stored} checkpoints and none can be restored (see the errors \
                     above); start with --allow-replay-on-damage to read the topics again from \
                     --start keeping them, or --reset-state to discard them",
                    dir.path().display()
                );
            }
            tracing::warn!(
                stored,
                "no checkpoint can be restored; --allow-replay-on-damage: starting empty"
            );
        }
        let metrics = std::sync::Arc::new(CheckpointMetrics::default());
        metrics.opened_at_ms.store(Time::now(), Ordering::Relaxed);
        metrics
            .max_age_ms
            .store(config.max_age.as_millis() as u64, Ordering::Relaxed);
        if let Some(checkpoint) = &loaded {
            let documents: usize = checkpoint.shards.iter().map(|s| s.documents.len()).sum();
            metrics
                .restored_documents
                .store(documents as u64, Ordering::Relaxed);
            metrics
                .restore_micros
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            tracing::info!(
                as_of = checkpoint.manifest.as_of,
                documents,
                seconds = started.elapsed().as_secs_f64(),
                "loaded the checkpoint from {}",
                dir.path().display()
            );
        }
        // Only generations at or before the loaded one: newer ones are damaged.
        let newest = loaded.as_ref().map_or(0, |c| c.manifest.as_of);
        let candidates = candidates
            .into_iter()
            .filter(|(manifest, _)| manifest.as_of <= newest)
            .collect();
        Ok(Durability {
            dir,
            interval_ms: (config.interval.as_millis() as u64).max(1),
            metrics,
            candidates,
            loaded: Mutex::new(loaded),
            restored: Mutex::new(None),
            final_at: AtomicU64::new(0),
            shape: expected.shape,
        })
    }

    /// The times this process could restore, newest first.
    pub(super) fn candidate_times(&self) -> Vec<(Time, Time)> {
        self.candidates
            .iter()
            .map(|(m, _)| (m.as_of, m.unchanged_since))
            .collect()
    }

    /// Worker `worker`'s part of restoring the checkpoint at `as_of` (one of
    /// the candidates, loading an older generation if the agreement chose
    /// one): this process's manifest, the worker's shard (taken out, so the
    /// memory goes with the restore), and the restore's times, fixed by the
    /// first worker to ask.
    pub(super) fn take_restore(
        &self,
        as_of: Time,
        unchanged_since: Time,
        worker: usize,
    ) -> Result<(Manifest, Option<ShardCheckpoint>, Restored)> {
        let mut loaded = self.loaded.lock().expect("checkpoint lock");
        if loaded.as_ref().map(|c| c.manifest.as_of) != Some(as_of) {
            let (_, path) = self
                .candidates
                .iter()
                .find(|(manifest, _)| manifest.as_of == as_of)
                .ok_or_else(|| anyhow::anyhow!("no checkpoint at {as_of} in this process"))?;
            *loaded = Some(trimatch_state::load(path, &|_, _| {})?);
        }
        let checkpoint = loaded.as_mut().expect("loaded above");
        let shard = checkpoint
            .shards
            .iter()
            .position(|shard| shard.worker == worker)
            .map(|index| checkpoint.shards.swap_remove(index));
        let mut restored = self.restored.lock().expect("restore lock");
        let restored = *restored.get_or_insert_with(|| {
            let now = Time::now();
            self.metrics.restored_as_of.store(as_of, Ordering::Relaxed);
            Restored {
                unchanged_since: unchanged_since.min(as_of),
                checkpoint: as_of,
                readable_from: now.max(as_of + 2) - 1,
            }
        });
        Ok((checkpoint.manifest.clone(), shard, restored))
    }

    /// The restore this run started from, if any.
    pub(super) fn restored(&self) -> Option<Restored> {
        *self.restored.lock().expect("restore lock")
    }

    /// Where the dead-letter topic is read from at a restore from `as_of`.
    pub(super) fn dead_letter_scan_from(as_of: Time) -> i64 {
        (as_of as i64).saturating_sub(DEAD_LETTER_LOOKBACK_MS)
    }

    /// The clean shutdown's checkpoint time: after every local worker's
    /// input (the latest is `input_time`), with room for the workers to see
    /// the request.
    pub(super) fn request_final_checkpoint(&self, input_time: Time) -> Time {
        let now = Time::now();
        let at = now.max(input_time) + FINAL_CHECKPOINT_DELAY_MS;
        let _ = self
            .final_at
            .compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst);
        self.final_at.load(Ordering::SeqCst)
    }
}

/// How far after the latest input time the shutdown checkpoint is taken: a
/// worker must see the request before its input passes that time.
const FINAL_CHECKPOINT_DELAY_MS: u64 = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_fails_once_no_checkpoint_was_written_for_longer_than_the_bound() {
        let metrics = CheckpointMetrics::default();
        metrics.opened_at_ms.store(1_000_000, Ordering::Relaxed);
        metrics.max_age_ms.store(300_000, Ordering::Relaxed);
        assert_eq!(
            metrics.overdue(1_200_000),
            None,
            "within the bound after start"
        );
        let overdue = metrics
            .overdue(1_400_001)
            .expect("none written since start");
        assert!(
            overdue.contains("no checkpoint written for 400 s"),
            "{overdue}"
        );
        metrics
            .last_written_at_ms
            .store(1_350_000, Ordering::Relaxed);
        assert_eq!(metrics.overdue(1_400_001), None, "a write resets the age");
        metrics.failures.store(7, Ordering::Relaxed);
        let overdue = metrics.overdue(1_700_000).unwrap();
        assert!(overdue.contains("7 writes failed"), "{overdue}");
        metrics.max_age_ms.store(0, Ordering::Relaxed);
        assert_eq!(metrics.overdue(u64::MAX), None, "no bound");
    }
}
