//! Failure detection, sans-IO: fed with ping outcomes, says up or down.

/// Whether a node is up, from the outcomes of the pings sent to it (and the pings it sent
/// us, which are as good a proof of life).
///
/// A node is **down** after `threshold` consecutive failures (each ping fails at the
/// latest after the ping timeout), and **up** again on the next success. A node never
/// heard from starts down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureDetector {
    threshold: u32,
    failures: u32,
    up: bool,
}

impl FailureDetector {
    /// A detector for a node not heard from yet (down); `threshold` is at least 1.
    #[must_use]
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            failures: 0,
            up: false,
        }
    }

    /// Records a success; returns whether the node's state changed (it came up).
    pub fn success(&mut self) -> bool {
        self.failures = 0;
        !std::mem::replace(&mut self.up, true)
    }

    /// Records a failure; returns whether the node's state changed (it went down).
    pub fn failure(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        if self.up && self.failures >= self.threshold {
            self.up = false;
            return true;
        }
        false
    }

    /// Whether the node is up.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Consecutive failures since the last success.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_threshold_misses_up_on_next_success() {
        let mut d = FailureDetector::new(3);
        assert!(!d.is_up(), "unknown nodes start down");
        assert!(!d.failure(), "already down: no change");
        assert!(d.success());
        assert!(d.is_up());
        assert!(!d.success(), "no change");
        assert!(!d.failure());
        assert!(!d.failure());
        assert!(d.is_up(), "two misses are not enough");
        assert!(!d.success(), "still up: a success only resets the count");
        assert!(!d.failure());
        assert!(!d.failure());
        assert!(d.failure(), "the third consecutive miss");
        assert!(!d.is_up());
        assert_eq!(d.failures(), 3);
        assert!(!d.failure());
        assert!(d.success());
        assert!(d.is_up());
        assert_eq!(d.failures(), 0);
    }

    #[test]
    fn threshold_zero_means_one() {
        let mut d = FailureDetector::new(0);
        d.success();
        assert!(d.failure());
    }
}
