//! Prometheus metrics of the daemon.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::util::budget::MemoryBudget;

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
    /// The memory budget, read at each render.
    budget: MemoryBudget,
    budget_limit: Gauge,
    budget_in_use: Gauge,
    budget_waits: Gauge,
}

impl Metrics {
    /// A registry with every metric registered; `budget` is the node's memory budget.
    #[must_use]
    pub fn new(budget: MemoryBudget) -> Self {
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
        Self {
            registry,
            s3_requests,
            s3_duration,
            budget,
            budget_limit,
            budget_in_use,
            budget_waits,
        }
    }

    /// OpenMetrics text.
    #[must_use]
    pub fn render(&self) -> String {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.budget_limit.set(gauge(self.budget.limit() as u64));
        self.budget_in_use.set(gauge(self.budget.in_use() as u64));
        self.budget_waits.set(gauge(self.budget.waits()));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
