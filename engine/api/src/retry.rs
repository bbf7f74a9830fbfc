//! Retry policy: how many attempts and how long to wait between them.
//! One curve for the Rust client and the embedded node's leader forwarder.

use std::time::Duration;

use crate::error::{Error, Result};

/// How a logical operation is retried after a retryable error.
///
/// The wait before retry `n` (1-based) is drawn uniformly from
/// `[c/2, c]` where `c = min(max_backoff, base_backoff * 2^(n-1))`
/// ("equal jitter": never zero, never in lock-step with other clients).
/// Every operation is additionally bounded by the client's request timeout,
/// whichever ends first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per operation including the first (1 = no retry).
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, 50 ms doubling up to 1 s: rides out a 3-node election
    /// (1-2 s) inside the default 10 s request timeout.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn no_retry() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Rejects values that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::InvalidArgument(
                "retry policy max_attempts is 0; it must be at least 1 (1 = no retry)".into(),
            ));
        }
        if self.base_backoff.is_zero() {
            return Err(Error::InvalidArgument(
                "retry policy base_backoff is 0; it must be > 0 (e.g. 50ms)".into(),
            ));
        }
        if self.max_backoff < self.base_backoff {
            return Err(Error::InvalidArgument(format!(
                "retry policy max_backoff ({:?}) is below base_backoff ({:?})",
                self.max_backoff, self.base_backoff
            )));
        }
        Ok(())
    }

    /// Upper bound of the wait before retry `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(31);
        self.base_backoff
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The jittered wait before retry `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, fastrand::f64())
    }

    /// The wait before retry `retry` for a jitter sample `unit` in `[0, 1]`.
    pub fn delay_with(&self, retry: u32, unit: f64) -> Duration {
        let c = self.ceiling(retry);
        let half = c / 2;
        half + (c - half).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = RetryPolicy::default();
        let got: Vec<_> = (1..=8).map(|r| p.ceiling(r)).collect();
        assert_eq!(
            got,
            vec![
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
        // No overflow for absurd retry numbers.
        assert_eq!(p.ceiling(u32::MAX), ms(1000));
        let big = RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_secs(u64::MAX / 4),
            max_backoff: Duration::MAX,
        };
        assert_eq!(big.ceiling(40), Duration::MAX);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_with(3, 0.0), ms(100));
        assert_eq!(p.delay_with(3, 1.0), ms(200));
        assert_eq!(p.delay_with(3, 0.5), ms(150));
        assert_eq!(p.delay_with(3, 7.0), ms(200), "sample clamped");
        for r in 1..20 {
            for _ in 0..50 {
                let d = p.delay(r);
                assert!(d >= p.ceiling(r) / 2 && d <= p.ceiling(r), "{r}: {d:?}");
            }
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(RetryPolicy::no_retry().validate().is_ok());
        let e = RetryPolicy {
            max_attempts: 0,
            ..Default::default()
        }
        .validate();
        assert!(matches!(e, Err(Error::InvalidArgument(m)) if m.contains("max_attempts")));
        let e = RetryPolicy {
            base_backoff: Duration::ZERO,
            ..Default::default()
        }
        .validate();
        assert!(matches!(e, Err(Error::InvalidArgument(m)) if m.contains("base_backoff")));
        let e = RetryPolicy {
            max_backoff: ms(1),
            ..Default::default()
        }
        .validate();
        assert!(matches!(e, Err(Error::InvalidArgument(m)) if m.contains("max_backoff")));
    }
}
