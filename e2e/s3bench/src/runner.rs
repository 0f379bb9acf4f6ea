//! Runs a scenario's steps one after the other against one endpoint, with a live progress
//! bar on a terminal, reading the servers' memory when idle and right after each step;
//! returns the report (one entry per step and operation, labelled `<step>.<op>`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{S3Client, S3Error};
use crate::scenario::{Scenario, Step};
use crate::stats::{OpStats, Report, RssReadings, summarise};
use crate::workload::{self, KeyNaming, Length, Spec};
use crate::{keepalive, procs};

/// Why a run stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bucket could not be created or reached.
    #[error("bucket {bucket}: {source}")]
    Bucket {
        /// Which.
        bucket: String,
        /// The S3 error.
        source: S3Error,
    },
    /// A step could not be set up (e.g. a bad presigned URL).
    #[error("step {step}: {why}")]
    Step {
        /// Its label.
        step: String,
        /// What went wrong.
        why: String,
    },
}

/// What a run needs besides the scenario.
#[derive(Debug)]
pub struct RunContext<'a> {
    /// The system measured, for the report.
    pub system: &'a str,
    /// Client of the endpoint.
    pub client: &'a S3Client,
    /// Bucket to use.
    pub bucket: &'a str,
    /// Server processes (empty against a bare endpoint).
    pub pids: &'a [u32],
    /// Where `Seed` steps remember they ran (a kept data directory), if anywhere.
    pub seed_dir: Option<&'a Path>,
    /// Also run `wrk` after a keep-alive step, when it is installed.
    pub wrk: bool,
}

fn bar(len: Option<u64>, label: &str) -> ProgressBar {
    // Drawn on stdout only when it is a terminal; hidden otherwise (CI, pipes).
    let target = ProgressDrawTarget::stdout();
    let pb = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), target).with_style(
            ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{prefix:>18} {spinner} {pos} ops {per_sec} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    pb.set_prefix(label.to_string());
    pb
}

/// One step's measurements, by operation name.
type StepResult = Vec<(String, OpStats, Duration)>;

/// Runs `scenario` in `ctx`.
///
/// # Errors
/// The bucket cannot be created, or a step cannot be set up. Failed requests are counted
/// in the report, not returned.
pub async fn run(scenario: &Scenario, ctx: &RunContext<'_>) -> Result<Report, RunError> {
    ctx.client
        .create_bucket(ctx.bucket)
        .await
        .map_err(|source| RunError::Bucket {
            bucket: ctx.bucket.to_string(),
            source,
        })?;
    let mut rss = (!ctx.pids.is_empty()).then(|| RssReadings {
        idle_bytes: procs::sample(ctx.pids).rss_bytes,
        after: BTreeMap::new(),
    });
    let mut ops = BTreeMap::new();
    let mut extra = BTreeMap::new();
    let run_start = Instant::now();
    let mut seconds = 0.0;
    let multi = scenario.steps.len() > 1;
    for (i, step) in scenario.steps.iter().enumerate() {
        let start_s = run_start.elapsed().as_secs_f64();
        let label = |op: &str| {
            if multi {
                format!("{}.{op}", i + 1)
            } else {
                op.to_string()
            }
        };
        let results = run_step(step, ctx, &label, &mut extra).await?;
        let step_label = results
            .first()
            .map_or_else(|| label("skipped"), |(op, _, _)| label(op));
        for (op, stats, window) in results {
            seconds += window.as_secs_f64();
            let mut s = summarise(&stats, window);
            s.start_s = start_s;
            ops.insert(label(&op), s);
        }
        if let Some(r) = rss.as_mut() {
            r.after
                .insert(step_label, procs::sample(ctx.pids).rss_bytes);
        }
    }
    let servers = (!ctx.pids.is_empty()).then(|| procs::sample(ctx.pids));
    Ok(Report {
        name: scenario.name.clone(),
        seconds,
        ops,
        servers,
        machine: None,
        system: ctx.system.to_string(),
        rss,
        extra,
    })
}

async fn run_step(
    step: &Step,
    ctx: &RunContext<'_>,
    label: &dyn Fn(&str) -> String,
    extra: &mut BTreeMap<String, serde_json::Value>,
) -> Result<StepResult, RunError> {
    let with_bucket = |spec: &Spec| Spec {
        bucket: ctx.bucket.to_string(),
        ..spec.clone()
    };
    Ok(match step {
        Step::Load(spec) => load(&with_bucket(spec), ctx.client, label).await,
        Step::Seed(spec) => {
            let marker = ctx.seed_dir.map(|d| {
                d.join(format!(
                    "seeded-{}-{}",
                    spec.prefix,
                    match spec.length {
                        Length::Ops(n) => n,
                        Length::Time(_) => 0,
                    }
                ))
            });
            if marker.as_ref().is_some_and(|m| m.exists()) {
                println!(
                    "{}: kept data already seeded, not written again",
                    label("seed")
                );
                return Ok(Vec::new());
            }
            let mut r = load(&with_bucket(spec), ctx.client, label).await;
            let failed = r.iter().any(|(_, s, _)| s.errors > 0);
            if let Some(m) = marker
                && !failed
            {
                let _ = std::fs::write(m, b"");
            }
            for (op, _, _) in &mut r {
                *op = format!("seed_{op}");
            }
            r
        }
        Step::DeleteBatches {
            prefix,
            keys,
            batch,
            clients,
        } => {
            let pb = bar(Some(*keys), &label("delete_objects"));
            let r = delete_batches(ctx, prefix, *keys, *batch, *clients, &pb).await;
            pb.finish_and_clear();
            vec![r]
        }
        Step::List {
            prefix,
            delimiter,
            passes,
        } => {
            let name = if delimiter.is_some() {
                "list_delim"
            } else {
                "list"
            };
            let pb = bar(None, &label(name));
            let r = list(ctx, prefix, delimiter.as_deref(), *passes, &pb).await;
            pb.finish_and_clear();
            vec![(name.to_string(), r.0, r.1)]
        }
        Step::KeepAlive {
            key,
            size: _,
            connections,
            warmup,
            duration,
        } => {
            let url = ctx
                .client
                .presign_get(ctx.bucket, key, Duration::from_secs(3600))
                .map_err(|e| RunError::Step {
                    step: label("keepalive_get"),
                    why: e.to_string(),
                })?;
            let pb = bar(None, &label("keepalive_get"));
            let tick = {
                let pb = pb.clone();
                move || pb.inc(1)
            };
            let (stats, window) = keepalive::run(&url, *connections, *warmup, *duration, tick)
                .await
                .map_err(|e| RunError::Step {
                    step: label("keepalive_get"),
                    why: e.to_string(),
                })?;
            pb.finish_and_clear();
            if ctx.wrk
                && let Some(w) = keepalive::run_wrk(&url, *connections, *duration)
                && let Ok(v) = serde_json::to_value(&w)
            {
                extra.insert(format!("wrk -c {connections} (same URL)"), v);
            }
            vec![("keepalive_get".to_string(), stats, window)]
        }
    })
}

async fn load(spec: &Spec, client: &S3Client, label: &dyn Fn(&str) -> String) -> StepResult {
    let ops = spec
        .mix
        .0
        .iter()
        .map(|(op, _)| op.to_string())
        .collect::<Vec<_>>()
        .join("+");
    let len = match spec.length {
        Length::Ops(n) => Some(n),
        Length::Time(_) => None,
    };
    let pb = bar(len, &label(&ops));
    let (results, window) = workload::run(client, spec, &pb).await;
    pb.finish_and_clear();
    results
        .into_iter()
        .map(|(op, s)| (op.to_string(), s, window))
        .collect()
}

async fn delete_batches(
    ctx: &RunContext<'_>,
    prefix: &str,
    keys: u64,
    batch: usize,
    clients: usize,
    pb: &ProgressBar,
) -> (String, OpStats, Duration) {
    let batch_u64 = u64::try_from(batch.max(1)).unwrap_or(1000);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (client, bucket, prefix, next, pb) = (
            ctx.client.clone(),
            ctx.bucket.to_string(),
            prefix.to_string(),
            next.clone(),
            pb.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut stats = OpStats::default();
            loop {
                let first = next.fetch_add(batch_u64, Ordering::Relaxed);
                if first >= keys {
                    break stats;
                }
                let names: Vec<String> = (first..keys.min(first + batch_u64))
                    .map(|n| KeyNaming::Flat.key(&prefix, n))
                    .collect();
                let t0 = Instant::now();
                match client.delete_objects(&bucket, &names).await {
                    Ok(n) => stats.ok(t0.elapsed(), (0, n as u64), t0 - start),
                    Err(e) => stats.error(format!("delete_objects {}: {e}", names.len())),
                }
                pb.inc(names.len() as u64);
            }
        }));
    }
    let mut all = OpStats::default();
    for t in tasks {
        match t.await {
            Ok(s) => all.merge(&s),
            Err(e) => all.error(format!("client task failed: {e}")),
        }
    }
    ("delete_objects".to_string(), all, start.elapsed())
}

async fn list(
    ctx: &RunContext<'_>,
    prefix: &str,
    delimiter: Option<&str>,
    passes: u32,
    pb: &ProgressBar,
) -> (OpStats, Duration) {
    let mut stats = OpStats::default();
    let start = Instant::now();
    for _ in 0..passes {
        let t0 = Instant::now();
        let (mut token, mut keys) = (None::<String>, 0u64);
        let r = loop {
            match ctx
                .client
                .list_delimited(ctx.bucket, prefix, delimiter, token.as_deref())
                .await
            {
                Ok(page) => {
                    keys += page.keys as u64;
                    pb.inc(1);
                    match page.next {
                        Some(t) => token = Some(t),
                        None => break Ok(keys),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match r {
            Ok(n) => stats.ok(t0.elapsed(), (0, n), t0 - start),
            Err(e) => stats.error(format!("list {prefix}: {e}")),
        }
    }
    (stats, start.elapsed())
}
