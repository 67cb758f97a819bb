//! Refuses authentication from an address that failed too often lately, so
//! that tokens cannot be guessed at the speed of the network: after
//! [`MAX_FAILURES`] failures within [`WINDOW`], calls from that address are
//! refused (RESOURCE_EXHAUSTED) until the window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond it, the ones whose window has passed
/// are forgotten (and, failing that, all of them: memory stays bounded).
const MAX_ADDRESSES: usize = 16 * 1024;

/// Failures per address in the current window.
#[derive(Default)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// How long `peer` must still wait, if it is refused now.
    pub fn refused(&self, peer: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().expect("limiter lock");
        let (since, count) = failures.get(&peer)?;
        let elapsed = since.elapsed();
        (*count >= MAX_FAILURES && elapsed < WINDOW).then(|| WINDOW - elapsed)
    }

    /// Counts a failure of `peer`.
    pub fn failed(&self, peer: IpAddr) {
        let mut failures = self.failures.lock().expect("limiter lock");
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (since, _)| since.elapsed() < WINDOW);
            if failures.len() >= MAX_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(peer).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}
