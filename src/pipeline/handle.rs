//! What a [`PipelineHandle`] tells about the running job: readiness and
//! health with their reasons, the newest complete time, failures, the
//! restore and the checkpoints, and the thread that publishes complete
//! times to subscribers. (Reads are in `reads`.)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trimatch_connectors::SourceMetrics;
use trimatch_dataflows::model::WallClock;
use trimatch_dataflows::rows::PartitionHealth;
use trimatch_dataflows::Time;

use super::counters::PipelineCounters;
use super::durability::Durability;
use super::subscriptions::Hub;
use super::{CheckpointMetrics, PipelineHandle, ReadFailure, Restored};

/// How often complete times are published to subscribers.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(2);

impl PipelineHandle {
    /// The per-partition counters of every source.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.shared.metrics.clone()
    }

    /// What the workers count (freshness).
    pub fn counters(&self) -> &Arc<PipelineCounters> {
        &self.shared.counters
    }

    /// The latest logical time any local worker's input has reached: every
    /// batch sealed so far is stamped before it. It is the wall clock's
    /// millisecond, or ahead of it just after a restart (times keep
    /// increasing across restarts).
    pub fn latest_input_time(&self) -> Time {
        self.shared.input_time.load(Ordering::SeqCst)
    }

    /// What the checkpoints and the restore did, with a state directory.
    pub fn checkpoints(&self) -> Option<&Arc<CheckpointMetrics>> {
        self.shared.durability.as_ref().map(|d| &d.metrics)
    }

    /// The restore this run started from, once the workers have made it.
    pub fn restored(&self) -> Option<Restored> {
        self.shared
            .durability
            .as_ref()
            .and_then(Durability::restored)
    }

    /// The time to read for a read that assumes the state as of `time` is
    /// known, or why a restore makes it unknown (see [`Restored::check_read`]).
    pub(crate) fn check_restored_time(&self, time: Time) -> Result<Time, ReadFailure> {
        match self.restored() {
            Some(restored) => restored.check_read(time),
            None => Ok(time),
        }
    }

    /// The subscription hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// When the job started.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// Whether the job is ready to serve: see [`not_ready`](Self::not_ready).
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why the job is not ready to serve, if it is not:
    /// * it has failed;
    /// * a partition is stalled;
    /// * not every worker's source (in every process, in cluster mode) has
    ///   caught up to the high watermarks it saw when it was assigned its
    ///   partitions, with the newest complete time reflecting that (a read at
    ///   the default `as_of` then sees every message below those
    ///   watermarks);
    /// * the input lag passed `ready_max_lag` messages and has not yet come
    ///   back below half of it (hysteresis, so readiness does not flap).
    pub fn not_ready(&self) -> Option<String> {
        if let Some(error) = self.error() {
            return Some(format!("failed: {error}"));
        }
        let partitions = self.shared.metrics.snapshot();
        let lag: u64 = partitions.values().map(|partition| partition.lag()).sum();
        let stalled: Vec<String> = partitions
            .iter()
            .filter(|(_, partition)| partition.health == PartitionHealth::Stalled)
            .map(|((topic, partition), _)| format!("{topic}/{partition}"))
            .collect();
        if !stalled.is_empty() {
            return Some(format!(
                "input partitions cannot make progress: {} (see source_progress for why)",
                stalled.join(", ")
            ));
        }
        if let Some(overdue) = self
            .checkpoints()
            .and_then(|checkpoints| checkpoints.overdue(Time::now()))
        {
            return Some(overdue);
        }
        if !self.shared.progress.is_ready() {
            return Some(format!(
                "catching up to the high watermarks seen at start ({lag} messages behind), \
                 or not connected to Kafka yet"
            ));
        }
        let max = self.shared.ready_max_lag;
        self.shared.lagging.lagging(lag, max).then(|| {
            format!(
                "{lag} messages behind the inputs (ready again below {}, half of --ready-max-lag {max})",
                max / 2
            )
        })
    }

    /// Why the job is not healthy, if it is not: it failed, or (while not
    /// stopping) no logical time has completed for longer than
    /// `stall_timeout`. Workers move time with the clock even when no
    /// message arrives and Kafka is unreachable, so a time that stops
    /// completing means the workers are stuck.
    pub fn unhealthy(&self) -> Option<String> {
        if let Some(error) = self.error() {
            return Some(format!("failed: {error}"));
        }
        if self.shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        let timeout = self.shared.stall_timeout;
        match self.newest_complete() {
            Some(newest) => {
                let now = Time::now();
                let behind = Duration::from_millis(now.saturating_sub(newest));
                (behind > timeout).then(|| {
                    format!(
                        "no logical time has completed for {} s (newest complete time {newest}): \
                         the workers are stuck",
                        behind.as_secs()
                    )
                })
            }
            None => (self.shared.started.elapsed() > timeout).then(|| {
                format!(
                    "no logical time has completed since the start {} s ago: the workers are stuck",
                    self.shared.started.elapsed().as_secs()
                )
            }),
        }
    }

    /// The newest time complete on every worker.
    pub fn newest_complete(&self) -> Option<Time> {
        self.shared.progress.newest_complete()
    }

    /// The failure that stopped the job, if one did.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().expect("error lock").clone()
    }

    /// Waits up to `timeout` for `as_of` to be complete in this process; whether
    /// it is. In a cluster, processes learn that a time is complete at slightly
    /// different moments: a peer asked for a shard at a time its requester
    /// already knows complete waits for it here rather than refusing.
    pub fn wait_until_complete(&self, as_of: Time, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.newest_complete().is_some_and(|newest| newest >= as_of) {
                return true;
            }
            if Instant::now() >= deadline || self.error().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Publishes complete times to the subscription hub until the job stops.
    pub(super) fn publish_until_stopped(&self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            if let Some(complete) = self.newest_complete() {
                self.shared.hub.publish(complete);
            }
            std::thread::sleep(PUBLISH_INTERVAL);
        }
    }
}
