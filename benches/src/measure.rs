//! What the benchmarks measure with: wall-clock time, distributions of
//! latencies and their percentiles, and the process's resident set.

use serde::Serialize;

/// Milliseconds since the Unix epoch, as a float: comparable with Kafka
/// message timestamps.
pub fn wall_clock_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64() * 1000.0)
}

/// A distribution of latencies, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latencies {
    pub samples: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Latencies {
    /// The distribution of `values` (ms), in any order.
    pub fn of(mut values: Vec<f64>) -> Latencies {
        values.sort_by(f64::total_cmp);
        Latencies {
            samples: values.len(),
            p50_ms: percentile(&values, 50.0),
            p95_ms: percentile(&values, 95.0),
            p99_ms: percentile(&values, 99.0),
            max_ms: values.last().copied(),
        }
    }

    /// "p50 …, p99 …, max … (n samples)", or with p95 in place of p99.
    pub fn describe(&self, tail: Tail) -> String {
        if self.samples == 0 {
            return "no samples".to_string();
        }
        let (name, value) = match tail {
            Tail::P95 => ("p95", self.p95_ms),
            Tail::P99 => ("p99", self.p99_ms),
        };
        let ms = |value: Option<f64>| value.unwrap_or(f64::NAN);
        format!(
            "p50 {:.1} ms, {name} {:.1} ms, max {:.1} ms ({} samples)",
            ms(self.p50_ms),
            ms(value),
            ms(self.max_ms),
            self.samples
        )
    }
}

/// Which tail quantile a summary line shows.
#[derive(Clone, Copy, Debug)]
pub enum Tail {
    P95,
    P99,
}

/// This process's resident set size and its peak, in bytes (Linux `/proc/self/status`).
pub fn resident_set() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Percentile `p` (0–100) of `sorted` values, nearest rank; `None` if empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
