//! Wall-clock timestamps in milliseconds, and the monotonic rule of DESIGN.md.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A timestamp for an update that must order after `previous`: `max(now, previous + 1)`, so
/// that a node whose clock lags still issues a newer write than the one it replaces.
#[must_use]
pub fn next_timestamp(previous: u64) -> u64 {
    now_ms().max(previous.saturating_add(1))
}

/// RFC 3339 rendering of a millisecond timestamp, for the admin API.
#[must_use]
pub fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_timestamp_never_goes_back() {
        let far_future = now_ms() + 3_600_000;
        assert_eq!(next_timestamp(far_future), far_future + 1);
        assert!(next_timestamp(0) >= now_ms() - 1000);
    }

    #[test]
    fn rfc3339_renders_epoch() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
