//! Exponential back-off, sans-IO: the caller supplies the clock.

use std::time::{Duration, Instant};

/// Exponential back-off after consecutive failures: `min`, `2·min`, `4·min`, … capped at
/// `max`, each delay shortened by up to a quarter at random so that nodes that lost the
/// same peer at the same moment do not retry in lock-step.
///
/// Sans-IO: [`Backoff::failure`] takes `now` and [`Backoff::ready`] compares against
/// it, so the policy is tested without waiting.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// A back-off that has seen no failure yet.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            failures: 0,
            retry_at: None,
        }
    }

    /// The delay after `failures` consecutive failures, before jitter (0 for none).
    #[must_use]
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Records a failure at `now` and returns the delay before the next attempt.
    pub fn failure(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let full = self.delay_after(self.failures);
        // Jitter: up to 25 % shorter, never longer than the cap.
        let delay = full.mul_f64(1.0 - rand::random::<f64>() * 0.25);
        self.retry_at = Some(now + delay);
        delay
    }

    /// Records a success: the next failure starts again from `min`.
    pub fn success(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// Consecutive failures so far.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// `None` if an attempt may be made at `now`, else the time left to wait.
    #[must_use]
    pub fn wait_at(&self, now: Instant) -> Option<Duration> {
        match self.retry_at {
            Some(at) if at > now => Some(at - now),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        assert_eq!(b.delay_after(0), Duration::ZERO);
        assert_eq!(b.delay_after(1), ms(100));
        assert_eq!(b.delay_after(2), ms(200));
        assert_eq!(b.delay_after(4), ms(800));
        assert_eq!(b.delay_after(5), ms(1000));
        assert_eq!(b.delay_after(200), ms(1000), "no overflow");

        let t0 = Instant::now();
        assert_eq!(b.wait_at(t0), None);
        let d = b.failure(t0);
        assert!(d <= ms(100) && d >= ms(75), "{d:?}");
        assert_eq!(b.wait_at(t0), Some(d));
        assert_eq!(b.wait_at(t0 + d), None);
        for _ in 0..10 {
            let d = b.failure(t0);
            assert!(d <= ms(1000), "capped: {d:?}");
        }
        assert_eq!(b.failures(), 11);
        b.success();
        assert_eq!((b.failures(), b.wait_at(t0)), (0, None));
    }
}
