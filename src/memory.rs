//! The memory limiter: checks the process's resident memory every `check_interval`; above the
//! soft limit (`limit_mib - spike_limit_mib`) receivers refuse with retryable errors (UNAVAILABLE
//! with RetryInfo, or 503 with Retry-After), so clients keep their data and retry, and trace
//! assembly flushes what it holds. Below it again, everything resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{Problems, Validate, duration};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    /// The hard limit, in MiB of resident memory.
    pub limit_mib: u64,
    /// Headroom below the hard limit for what arrives between two checks (default 20% of the
    /// limit); refusing starts at `limit_mib - spike_limit_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spike_limit_mib: Option<u64>,
    #[serde(default = "one_second", with = "duration")]
    pub check_interval: Duration,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl MemoryLimiterConfig {
    fn soft_bytes(&self) -> u64 {
        let spike = self.spike_limit_mib.unwrap_or(self.limit_mib / 5);
        self.limit_mib.saturating_sub(spike) * 1024 * 1024
    }
}

impl Validate for MemoryLimiterConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.limit_mib < 32 {
            problems.push(&format!("{path}.limit_mib"), "must be at least 32");
        }
        if self.spike_limit_mib.is_some_and(|s| s >= self.limit_mib) {
            problems.push(
                &format!("{path}.spike_limit_mib"),
                "must be less than limit_mib",
            );
        }
        if self.check_interval.is_zero() {
            problems.push(&format!("{path}.check_interval"), "must be greater than 0");
        }
    }
}

/// The shared verdict: whether to refuse now.
#[derive(Default)]
pub struct MemoryLimiter {
    refusing: AtomicBool,
    rss: AtomicU64,
    flush_generation: AtomicU64,
}

impl MemoryLimiter {
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// The resident memory at the last check, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Bumped at every check above the soft limit: holders of data flush when it changes.
    pub fn flush_generation(&self) -> u64 {
        self.flush_generation.load(Ordering::Relaxed)
    }

    /// Decide from one reading (separate from the reading, for tests).
    pub fn update(&self, rss: u64, soft: u64) {
        self.rss.store(rss, Ordering::Relaxed);
        let over = rss > soft;
        if over {
            self.flush_generation.fetch_add(1, Ordering::Relaxed);
        }
        let was = self.refusing.swap(over, Ordering::Relaxed);
        if over && !was {
            tracing::warn!(
                rss_mib = rss / (1024 * 1024),
                soft_limit_mib = soft / (1024 * 1024),
                "memory above the soft limit: receivers refuse (retryably) and held traces are flushed"
            );
        } else if was && !over {
            tracing::info!(
                rss_mib = rss / (1024 * 1024),
                "memory back under the soft limit: receivers accept again"
            );
        }
    }
}

/// The resident set size of this process, from /proc (Linux); None elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Start checking; the limiter is shared with receivers and trace assembly.
pub fn start(config: &MemoryLimiterConfig, stop: CancellationToken) -> Arc<MemoryLimiter> {
    let limiter = Arc::new(MemoryLimiter::default());
    if resident_bytes().is_none() {
        tracing::warn!("memory_limiter: cannot read the resident memory on this system; it is off");
        return limiter;
    }
    let soft = config.soft_bytes();
    let every = config.check_interval;
    let l = limiter.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Some(rss) = resident_bytes() {
                l.update(rss, soft);
            }
        }
    });
    limiter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_soft_limit_and_resumes_below() {
        let c = MemoryLimiterConfig {
            limit_mib: 100,
            spike_limit_mib: None,
            check_interval: one_second(),
        };
        // 20% spike by default: soft limit 80 MiB.
        assert_eq!(c.soft_bytes(), 80 * 1024 * 1024);
        let l = MemoryLimiter::default();
        l.update(79 * 1024 * 1024, c.soft_bytes());
        assert!(!l.refusing());
        assert_eq!(l.flush_generation(), 0);
        l.update(81 * 1024 * 1024, c.soft_bytes());
        assert!(l.refusing());
        assert_eq!(l.flush_generation(), 1);
        l.update(70 * 1024 * 1024, c.soft_bytes());
        assert!(!l.refusing());
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
