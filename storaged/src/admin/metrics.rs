//! Prometheus metrics of the daemon.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of S3 request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Status class (`2xx`, `4xx`, `5xx`).
    pub status: String,
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    /// S3 requests by method and status class.
    pub s3_requests: Family<RequestLabels, Counter<u64, AtomicU64>>,
    /// S3 request duration in seconds (until response headers).
    pub s3_duration: Histogram,
}

impl Metrics {
    /// A registry with every metric registered.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("storaged");
        let s3_requests = Family::default();
        let s3_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "s3_requests",
            "S3 requests by method and status class",
            s3_requests.clone(),
        );
        registry.register(
            "s3_request_duration_seconds",
            "S3 request duration",
            s3_duration.clone(),
        );
        Self {
            registry,
            s3_requests,
            s3_duration,
        }
    }

    /// OpenMetrics text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
