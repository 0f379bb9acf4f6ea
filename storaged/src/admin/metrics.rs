//! Prometheus metrics of the daemon.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    budget_limit: Gauge,
    budget_in_use: Gauge,
    budget_waits: Gauge,
    /// 1 while this node rebuilds its metadata from its peers (answering no reads).
    pub metadata_rebuilding: Gauge,
    /// Corrupt chunk copies found on this node since it started (each is set aside or
    /// skipped, and fetched again from a peer).
    pub chunks_corrupt: Counter<u64, AtomicU64>,
    /// Serialises [`Self::refresh`] (two scrapes at once must not both add the difference).
    refreshing: std::sync::Mutex<()>,
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
        let (budget_limit, budget_in_use, budget_waits) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "memory_budget_bytes",
            "Bytes of object data this node may hold in memory (limits.memory_budget_bytes)",
            budget_limit.clone(),
        );
        registry.register(
            "memory_budget_in_use_bytes",
            "Bytes of the memory budget held now",
            budget_in_use.clone(),
        );
        registry.register(
            "memory_budget_waits",
            "Times a request or transfer waited for the memory budget since the start",
            budget_waits.clone(),
        );
        let metadata_rebuilding = Gauge::default();
        registry.register(
            "metadata_rebuilding",
            "1 while this node rebuilds its metadata from its peers",
            metadata_rebuilding.clone(),
        );
        let chunks_corrupt = Counter::default();
        registry.register(
            "chunks_corrupt",
            "Corrupt chunk copies found on this node",
            chunks_corrupt.clone(),
        );
        Self {
            registry,
            s3_requests,
            s3_duration,
            budget_limit,
            budget_in_use,
            budget_waits,
            metadata_rebuilding,
            chunks_corrupt,
            refreshing: std::sync::Mutex::new(()),
        }
    }

    /// Brings the metrics that mirror the model's state up to date (before a render).
    pub fn refresh(&self, model: &crate::model::Model) {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.metadata_rebuilding
            .set(i64::from(model.db.rebuilding()));
        let found = model.blocks.corrupt_found();
        let counted = self.chunks_corrupt.get();
        if found > counted {
            self.chunks_corrupt.inc_by(found - counted);
        }
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let budget = model.budget();
        self.budget_limit.set(gauge(budget.limit() as u64));
        self.budget_in_use.set(gauge(budget.in_use() as u64));
        self.budget_waits.set(gauge(budget.waits()));
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
