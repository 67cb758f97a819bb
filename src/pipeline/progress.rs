//! What the workers publish about their progress, and what a reader can
//! conclude from it: the newest time complete everywhere, and whether the job
//! has caught up with its sources (readiness).
//!
//! Each worker sees a time complete from its own view of timely's progress,
//! and the views of two workers may differ by a step: one can see a time
//! complete before its peer does. Reads are sent to every worker, so the time
//! a reader may ask for is the oldest of the views; and readiness must be
//! judged against that time, not by each worker against its own view — a
//! worker-by-worker rule once let a read right after readiness miss the last
//! batch of the worker that caught up later.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use trimatch_dataflows::Time;

/// Times stored as `time + 1` (`0` = none yet), so they can be read from any
/// thread without a lock.
pub(super) struct WorkerProgress {
    /// Per worker of this process: the newest time it has seen complete.
    complete: Vec<AtomicU64>,
    /// The time by which every worker of the computation (of every process)
    /// had caught up with the high watermarks seen at start: every message
    /// below them is in a batch sealed at or before it (see `catch_up`).
    caught_up_by: AtomicU64,
}

impl WorkerProgress {
    pub(super) fn new(workers: usize) -> WorkerProgress {
        WorkerProgress {
            complete: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            caught_up_by: AtomicU64::new(0),
        }
    }

    /// Worker `index` now sees every time up to `newest` complete.
    pub(super) fn record_complete(&self, index: usize, newest: Time) {
        let stored = newest.saturating_add(1).min(Time::MAX - 1);
        self.complete[index].store(stored, Ordering::SeqCst);
    }

    /// Every worker of the computation had caught up by `time`.
    pub(super) fn record_caught_up_by(&self, time: Time) {
        self.caught_up_by
            .store(time.saturating_add(1), Ordering::SeqCst);
    }

    /// The newest time every worker has seen complete.
    pub(super) fn newest_complete(&self) -> Option<Time> {
        self.complete
            .iter()
            .map(|complete| complete.load(Ordering::SeqCst))
            .min()
            .filter(|complete| *complete > 0)
            .map(|complete| complete - 1)
    }

    /// Whether every worker has caught up and the newest complete time is at
    /// or past the time they had by. Once true it stays true: both times only
    /// move forward.
    pub(super) fn is_ready(&self) -> bool {
        match self.caught_up_by.load(Ordering::SeqCst) {
            0 => false,
            time_plus_one => self
                .newest_complete()
                .is_some_and(|newest| newest >= time_plus_one - 1),
        }
    }
}

/// Readiness's lag rule, with hysteresis so that readiness does not flap:
/// lagging once the input lag passes `max`, caught up again once it is back
/// to half of `max` or below.
#[derive(Default)]
pub(super) struct LagHysteresis {
    lagging: AtomicBool,
}

impl LagHysteresis {
    /// Whether the job counts as lagging, given the lag now.
    pub(super) fn lagging(&self, lag: u64, max: u64) -> bool {
        if lag > max {
            self.lagging.store(true, Ordering::SeqCst);
        } else if lag <= max / 2 {
            self.lagging.store(false, Ordering::SeqCst);
        }
        self.lagging.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_readiness_has_hysteresis() {
        let rule = LagHysteresis::default();
        let seen: Vec<bool> = [10, 100, 101, 80, 51, 50, 90, 100, 101]
            .into_iter()
            .map(|lag| rule.lagging(lag, 100))
            .collect();
        assert_eq!(
            seen,
            [false, false, true, true, true, false, false, false, true]
        );
    }

    #[test]
    fn newest_complete_is_the_oldest_view_of_any_worker() {
        let progress = WorkerProgress::new(2);
        assert_eq!(progress.newest_complete(), None);
        progress.record_complete(0, 100);
        assert_eq!(progress.newest_complete(), None, "worker 1 has seen none");
        progress.record_complete(1, 90);
        assert_eq!(progress.newest_complete(), Some(90));
        progress.record_complete(1, 120);
        assert_eq!(progress.newest_complete(), Some(100));
    }

    /// The race seen in CI: worker 0 caught up at 872, worker 1 at 880; worker 1
    /// saw 890 complete while worker 0 had not stepped since it saw 879. Each
    /// was ready in its own view, but a read at the newest complete time (879)
    /// missed worker 1's batch at 880.
    #[test]
    fn the_job_is_ready_only_once_every_worker_sees_the_catch_up_time_complete() {
        let progress = WorkerProgress::new(2);
        progress.record_complete(0, 879);
        progress.record_complete(1, 879);
        assert!(!progress.is_ready(), "not every worker has caught up");

        progress.record_caught_up_by(880);
        progress.record_complete(1, 890);
        assert_eq!(progress.newest_complete(), Some(879));
        assert!(
            !progress.is_ready(),
            "a read at 879 would miss worker 1's batch at 880"
        );

        progress.record_complete(0, 880);
        assert!(progress.is_ready());
        progress.record_complete(0, 2_000);
        assert!(progress.is_ready(), "readiness stays");
    }
}
