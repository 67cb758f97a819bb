//! The wall clock as logical times: milliseconds since the Unix epoch that
//! only ever move forward.
//!
//! A worker stamps each batch with the current millisecond (SPEC §4). When
//! the wall clock steps backwards (NTP, a VM resumed, a leap smear), the
//! times must still increase, and idle times must still complete, or reads
//! and readiness would stall for as long as the step. So the clock follows
//! the wall clock when it moves forward, and otherwise moves on with a
//! monotonic clock from the last time it gave.

use std::time::Instant;

use trimatch_dataflows::model::WallClock;
use trimatch_dataflows::Time;

/// A worker's source of batch times.
pub(super) struct LogicalClock {
    wall: fn() -> Time,
    /// The last time given, and when (monotonic).
    last: Time,
    last_at: Instant,
}

impl LogicalClock {
    pub(super) fn new() -> LogicalClock {
        LogicalClock::with_wall_clock(Time::now)
    }

    /// A clock that gives no time before `first` (after a restore: times keep
    /// increasing across restarts even if the wall clock is behind).
    pub(super) fn starting_at(first: Time) -> LogicalClock {
        let mut clock = LogicalClock::new();
        clock.last = clock.last.max(first);
        clock
    }

    fn with_wall_clock(wall: fn() -> Time) -> LogicalClock {
        LogicalClock {
            last: wall(),
            last_at: Instant::now(),
            wall,
        }
    }

    /// The current time: the wall clock's, unless that is behind the last
    /// time given plus the monotonic time since; never less than before.
    pub(super) fn now(&mut self) -> Time {
        let elapsed = self.last_at.elapsed().as_millis() as Time;
        let now = (self.wall)().max(self.last + elapsed);
        if now > self.last {
            self.last = now;
            self.last_at = Instant::now();
        }
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    static WALL: AtomicU64 = AtomicU64::new(10_000_000);

    #[test]
    fn times_keep_moving_forward_when_the_wall_clock_steps_back() {
        let mut clock = LogicalClock::with_wall_clock(|| WALL.load(Ordering::SeqCst));
        assert_eq!(clock.now(), 10_000_000);
        WALL.store(10_000_500, Ordering::SeqCst);
        assert_eq!(clock.now(), 10_000_500, "follows the wall clock forward");
        // An hour back: the clock holds, then moves on with monotonic time.
        WALL.store(10_000_500 - 3_600_000, Ordering::SeqCst);
        let held = clock.now();
        assert!(held >= 10_000_500);
        std::thread::sleep(Duration::from_millis(20));
        let later = clock.now();
        assert!(
            later >= held + 15,
            "{held} → {later}: idle times still advance"
        );
        // The wall clock catches up and passes: followed again.
        WALL.store(20_000_000, Ordering::SeqCst);
        assert_eq!(clock.now(), 20_000_000);
    }
}
