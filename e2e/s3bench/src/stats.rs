//! What a run measured: per operation, a latency histogram, byte and error counts, and
//! completions per second (throughput over time); and the summary written as JSON and CSV.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Measurements of one operation kind.
#[derive(Debug)]
pub struct OpStats {
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    /// Bytes moved (request or response bodies).
    pub bytes: u64,
    /// Keys listed (LIST only).
    pub items: u64,
    /// Failed operations.
    pub errors: u64,
    /// The first few error messages, for the report.
    pub samples: Vec<String>,
    /// Completions in each second of the measured window.
    pub per_second: Vec<u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        Self {
            // 1 µs to 10 min at 3 significant digits; construction cannot fail for these.
            latency: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("constant bounds are valid"),
            bytes: 0,
            items: 0,
            errors: 0,
            samples: Vec::new(),
            per_second: Vec::new(),
        }
    }
}

impl OpStats {
    /// Records a success that took `took`, `at` into the measured window.
    pub fn ok(&mut self, took: Duration, (bytes, items): (u64, u64), at: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.latency.record(us.min(600_000_000));
        self.bytes += bytes;
        self.items += items;
        let sec = usize::try_from(at.as_secs()).unwrap_or(usize::MAX);
        if sec < 24 * 3600 {
            if self.per_second.len() <= sec {
                self.per_second.resize(sec + 1, 0);
            }
            self.per_second[sec] += 1;
        }
    }

    /// Records a failure.
    pub fn error(&mut self, why: String) {
        self.errors += 1;
        if self.samples.len() < 5 {
            self.samples.push(why);
        }
    }

    /// Adds `other` (another client's measurements) into this one.
    pub fn merge(&mut self, other: &Self) {
        let _ = self.latency.add(&other.latency);
        self.bytes += other.bytes;
        self.items += other.items;
        self.errors += other.errors;
        for s in &other.samples {
            if self.samples.len() < 5 {
                self.samples.push(s.clone());
            }
        }
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), 0);
        }
        for (a, b) in self.per_second.iter_mut().zip(&other.per_second) {
            *a += b;
        }
    }
}

/// The summary of one operation kind, as reported.
#[derive(Debug, Serialize)]
pub struct OpSummary {
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Operations per second over the measured window.
    pub ops_per_sec: f64,
    /// Megabytes (10^6) per second of bodies.
    pub mb_per_sec: f64,
    /// Keys listed or deleted (LIST, DeleteObjects).
    pub items: u64,
    /// Keys listed or deleted per second.
    pub keys_per_sec: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Completions in each second.
    pub per_second: Vec<u64>,
    /// Seconds into the run at which this operation's step started (for plots over time).
    pub start_s: f64,
    /// Latency in milliseconds at percentiles 0..=100 (and 99.9), as `[percentile, ms]`
    /// pairs: the latency distribution plot.
    pub latency_curve: Vec<[f64; 2]>,
    /// The first errors seen.
    pub error_samples: Vec<String>,
}

/// Resident memory of the servers at points of a run: the highest `VmRSS` of any one node.
#[derive(Debug, Default, Serialize)]
pub struct RssReadings {
    /// Once the cluster is ready, before any request.
    pub idle_bytes: u64,
    /// Right after each step, by step label (`2.get` of `large`: right after the large GET).
    pub after: BTreeMap<String, u64>,
}

/// A whole run's report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario or workload name.
    pub name: String,
    /// Seconds measured (warm-up excluded).
    pub seconds: f64,
    /// Per operation kind.
    pub ops: BTreeMap<String, OpSummary>,
    /// Server processes' resources, when the runner started them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<crate::procs::Usage>,
    /// The machine's own limits, measured in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<crate::machine::Limits>,
    /// The system measured (`storaged`, `garage`, `seaweedfs`, or `endpoint`).
    pub system: String,
    /// Server memory over the run, when the runner started the servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss: Option<RssReadings>,
    /// Other figures of the run (e.g. `wrk` on the keep-alive URL), by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Summarises `stats` measured over `window`.
#[must_use]
pub fn summarise(stats: &OpStats, window: Duration) -> OpSummary {
    let secs = window.as_secs_f64().max(1e-9);
    let h = &stats.latency;
    OpSummary {
        ops: h.len(),
        errors: stats.errors,
        ops_per_sec: h.len() as f64 / secs,
        mb_per_sec: stats.bytes as f64 / 1e6 / secs,
        items: stats.items,
        keys_per_sec: stats.items as f64 / secs,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        per_second: stats.per_second.clone(),
        start_s: 0.0,
        latency_curve: curve(h),
        error_samples: stats.samples.clone(),
    }
}

fn curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<f64> = (0..=100).map(f64::from).collect();
    points.insert(100, 99.9);
    points
        .into_iter()
        .map(|p| [p, ms(h.value_at_quantile(p / 100.0))])
        .collect()
}

/// Mebibytes, for display.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

impl Report {
    /// One line per operation kind, for a terminal.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = format!(
            "[{}] {}\n{:<18} {:>8} {:>6} {:>9} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8}\n",
            self.system,
            self.name,
            "op",
            "ops",
            "errors",
            "ops/s",
            "MB/s",
            "keys/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        );
        for (op, s) in &self.ops {
            out.push_str(&format!(
                "{op:<18} {:>8} {:>6} {:>9.1} {:>8.1} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
                s.ops,
                s.errors,
                s.ops_per_sec,
                s.mb_per_sec,
                s.keys_per_sec,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.max_ms
            ));
        }
        if let Some(u) = &self.servers {
            out.push_str(&format!(
                "servers: peak RSS {:.1} MiB (busiest node), CPU {:.1} s in total\n",
                mib(u.peak_rss_bytes),
                u.cpu_seconds
            ));
        }
        if let Some(r) = &self.rss {
            out.push_str(&format!("servers: idle RSS {:.1} MiB", mib(r.idle_bytes)));
            for (step, b) in &r.after {
                out.push_str(&format!(", after {step} {:.1} MiB", mib(*b)));
            }
            out.push_str(" (highest VmRSS of any node)\n");
        }
        for (name, v) in &self.extra {
            out.push_str(&format!("{name}: {v}\n"));
        }
        if let Some(m) = &self.machine {
            out.push_str(&format!(
                "machine: fsync'd sequential write {:.0} MB/s, loopback TCP {:.0} MB/s\n",
                m.fsync_write_mb_per_sec, m.loopback_mb_per_sec
            ));
        }
        out
    }

    /// CSV: one row per operation kind.
    #[must_use]
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "system,name,op,ops,errors,ops_per_sec,mb_per_sec,keys_per_sec,p50_ms,p90_ms,p99_ms,max_ms\n",
        );
        for (op, s) in &self.ops {
            out.push_str(&format!(
                "{},{},{op},{},{},{:.2},{:.2},{:.1},{:.3},{:.3},{:.3},{:.3}\n",
                self.system,
                self.name,
                s.ops,
                s.errors,
                s.ops_per_sec,
                s.mb_per_sec,
                s.keys_per_sec,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.max_ms
            ));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn merged_clients_add_up() {
        let mut a = OpStats::default();
        let mut b = OpStats::default();
        a.ok(
            Duration::from_millis(1),
            (10, 0),
            Duration::from_millis(100),
        );
        b.ok(
            Duration::from_millis(3),
            (30, 0),
            Duration::from_millis(1500),
        );
        b.error("boom".into());
        a.merge(&b);
        let s = summarise(&a, Duration::from_secs(2));
        assert_eq!((s.ops, s.errors), (2, 1));
        assert_eq!(s.per_second, vec![1, 1]);
        assert!((s.ops_per_sec - 1.0).abs() < 1e-9);
        assert!(s.p50_ms >= 0.99 && s.p50_ms <= 1.01, "{}", s.p50_ms);
        assert!(s.max_ms >= 2.99 && s.max_ms <= 3.01, "{}", s.max_ms);
        assert_eq!(s.latency_curve.len(), 102);
        assert!(s.latency_curve.windows(2).all(|w| w[0][1] <= w[1][1]));
    }
}
