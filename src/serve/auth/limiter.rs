//! Refuses authentication for an identity that failed too often lately from
//! one address, so that a token cannot be guessed at the speed of the
//! network: after [`MAX_FAILURES`] failures within [`WINDOW`], calls from
//! that address claiming that identity (a token id, a Basic name, a JWT
//! subject: what the credential says before it is verified) are refused
//! (RESOURCE_EXHAUSTED) until the window has passed.
//!
//! Failures count per (address, claimed identity), never per address alone:
//! behind an ingress or a NAT every user shares one address, and one client
//! failing must not lock the others out. IPv6 addresses count by their /64
//! network (one host usually has a whole /64). Calls already past the check
//! when the limit is reached still finish: at most as many extra tries as
//! there are concurrent calls.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond it, the ones whose window has passed
/// are forgotten, and failing that the oldest half: memory stays bounded,
/// and the addresses failing now are the ones kept.
const MAX_ADDRESSES: usize = 16 * 1024;

/// The longest claimed identity kept (a longer one is cut).
const MAX_CLAIM_BYTES: usize = 128;

/// Failures per (address, claimed identity) in the current window.
#[derive(Default)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<(IpAddr, String), (Instant, u32)>>,
}

impl FailureLimiter {
    /// How long `peer` must still wait to try `claimed` again, if it is
    /// refused now.
    pub fn refused(&self, peer: IpAddr, claimed: &str) -> Option<Duration> {
        let failures = self.failures.lock().expect("limiter lock");
        let (since, count) = failures.get(&counted_as(peer, claimed))?;
        let elapsed = since.elapsed();
        (*count >= MAX_FAILURES && elapsed < WINDOW).then(|| WINDOW - elapsed)
    }

    /// Counts a failure of `peer` claiming `claimed`.
    pub fn failed(&self, peer: IpAddr, claimed: &str) {
        let mut failures = self.failures.lock().expect("limiter lock");
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (since, _)| since.elapsed() < WINDOW);
            if failures.len() >= MAX_ADDRESSES {
                let mut starts: Vec<Instant> = failures.values().map(|(since, _)| *since).collect();
                let (_, median, _) = starts.select_nth_unstable(MAX_ADDRESSES / 2);
                let median = *median;
                failures.retain(|_, (since, _)| *since >= median);
            }
        }
        let entry = failures
            .entry(counted_as(peer, claimed))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The key failures are counted under: the address (IPv6 by its /64) and
/// the claimed identity, cut to [`MAX_CLAIM_BYTES`].
fn counted_as(peer: IpAddr, claimed: &str) -> (IpAddr, String) {
    let mut end = claimed.len().min(MAX_CLAIM_BYTES);
    while !claimed.is_char_boundary(end) {
        end -= 1;
    }
    (network_of(peer), claimed[..end].to_string())
}

/// The address failures are counted under: IPv6 by its /64.
fn network_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ipv6_network_counts_as_one_address() {
        let limiter = FailureLimiter::default();
        for host in 0..MAX_FAILURES {
            limiter.failed(format!("2001:db8:1:2::{host:x}").parse().unwrap(), "x");
        }
        assert!(limiter
            .refused("2001:db8:1:2::ffff".parse().unwrap(), "x")
            .is_some());
        assert!(limiter
            .refused("2001:db8:1:3::1".parse().unwrap(), "x")
            .is_none());
    }

    #[test]
    fn a_full_table_keeps_the_addresses_failing_now() {
        let limiter = FailureLimiter::default();
        let attacker: IpAddr = "10.9.9.9".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            limiter.failed(attacker, "x");
        }
        for index in 0..MAX_ADDRESSES as u32 + 10 {
            limiter.failed(
                IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + index)),
                "x",
            );
        }
        let remembered = limiter.failures.lock().unwrap().len();
        assert!(remembered <= MAX_ADDRESSES, "{remembered}");
        assert!(remembered > MAX_ADDRESSES / 4, "not wiped: {remembered}");
    }
}
