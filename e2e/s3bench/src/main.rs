//! The `s3bench` command line (the crate's documentation is in `lib.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use s3bench::client::{S3Client, Target};
use s3bench::workload::{self, Length, Mix, Spec};
use s3bench::{machine, procs, scenario, stats};

#[derive(Parser, Debug)]
#[command(
    name = "s3bench",
    about = "Measure an S3 endpoint: throughput, latency, memory"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One workload against an endpoint given by URL and credentials.
    Run(RunArgs),
    /// A named scenario (small, large, mixed, smoke), on a `storaged dev` cluster started
    /// from `--storaged`, or on `--endpoint`.
    Scenario(ScenarioArgs),
}

#[derive(Args, Debug, Clone)]
struct EndpointArgs {
    /// S3 endpoint, e.g. http://127.0.0.1:3900.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
    /// Access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: Option<String>,
    /// Secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Region to sign for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Bucket (created if missing).
    #[arg(long, env = "BUCKET_NAME")]
    bucket: Option<String>,
}

impl EndpointArgs {
    fn target(&self) -> anyhow::Result<Target> {
        let need = |v: &Option<String>, what: &str| {
            v.clone()
                .with_context(|| format!("--{what} is required (or its environment variable)"))
        };
        Ok(Target {
            endpoint: need(&self.endpoint, "endpoint")?
                .trim_end_matches('/')
                .to_string(),
            access_key: need(&self.access_key, "access-key")?,
            secret_key: need(&self.secret_key, "secret-key")?,
            region: self.region.clone(),
        })
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Operations and weights: `put`, or `get=70,put=25,delete=5`.
    #[arg(long, default_value = "put")]
    mix: Mix,
    /// Object size, or a range: `4KiB`, `16KiB-4MiB`.
    #[arg(long, default_value = "4KiB")]
    size: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Stop after this many operations (keys 0..N in order).
    #[arg(long, conflicts_with = "seconds")]
    ops: Option<u64>,
    /// Stop after this many seconds (random keys of --keys).
    #[arg(long)]
    seconds: Option<u64>,
    /// Keys that exist, for GET/HEAD/DELETE in a timed run.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Seconds not measured at the start of a timed run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Key prefix.
    #[arg(long, default_value = "s3bench")]
    prefix: String,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct ScenarioArgs {
    /// small, large, mixed or smoke.
    name: String,
    /// The storaged binary to start a 3-node, 3-zone `dev` cluster with (when no
    /// --endpoint is given).
    #[arg(long, default_value = "target/release/storaged")]
    storaged: PathBuf,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Also measure the disk and the loopback (a few seconds).
    #[arg(long)]
    machine: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct OutputArgs {
    /// Results folder (results.json, results.csv); default target/s3bench/<name>-<time>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not fail the run on errors.
    #[arg(long)]
    allow_errors: bool,
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let one = |v: &str| -> anyhow::Result<usize> {
        let b: bytesize::ByteSize = v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("size {v:?}: {e}"))?;
        usize::try_from(b.as_u64()).context("size too large")
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(s)?, one(s)?),
    };
    if lo > hi {
        bail!("size range {s:?} goes downwards");
    }
    Ok((lo, hi))
}

/// Runs `specs` one after the other; each phase's operations are reported apart.
async fn run_phases(
    name: &str,
    client: &S3Client,
    specs: &[Spec],
    pids: &[u32],
) -> anyhow::Result<stats::Report> {
    let mut ops = BTreeMap::new();
    let mut seconds = 0.0;
    for (i, spec) in specs.iter().enumerate() {
        client
            .create_bucket(&spec.bucket)
            .await
            .with_context(|| format!("creating bucket {}", spec.bucket))?;
        let (results, window) = workload::run(client, spec).await;
        seconds += window.as_secs_f64();
        for (op, s) in results {
            let label = if specs.len() > 1 {
                format!("{}.{op}", i + 1)
            } else {
                op.to_string()
            };
            ops.insert(label, stats::summarise(&s, window));
        }
    }
    let servers = (!pids.is_empty()).then(|| procs::sample(pids));
    Ok(stats::Report {
        name: name.to_string(),
        seconds,
        ops,
        servers,
        machine: None,
    })
}

fn write_report(report: &stats::Report, out: &OutputArgs) -> anyhow::Result<()> {
    let dir = out
        .out
        .clone()
        .unwrap_or_else(|| scenario::default_out(&report.name));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(dir.join("results.csv"), report.csv())?;
    print!("{}", report.table());
    println!("results: {}", dir.display());
    let errors: u64 = report.ops.values().map(|s| s.errors).sum();
    if errors > 0 && !out.allow_errors {
        for (op, s) in &report.ops {
            for e in &s.error_samples {
                eprintln!("{op}: {e}");
            }
        }
        bail!("{errors} operations failed (--allow-errors to accept)");
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let target = args.endpoint.target()?;
    let bucket = args
        .endpoint
        .bucket
        .clone()
        .context("--bucket is required (or BUCKET_NAME)")?;
    let length = match (args.ops, args.seconds) {
        (Some(n), _) => Length::Ops(n),
        (None, Some(s)) => Length::Time(Duration::from_secs(s)),
        (None, None) => bail!("give --ops N or --seconds N"),
    };
    let spec = Spec {
        bucket,
        prefix: args.prefix.clone(),
        mix: args.mix.clone(),
        size: parse_size(&args.size)?,
        clients: args.clients.max(1),
        length,
        keys: args.keys,
        warmup: Duration::from_secs(args.warmup),
    };
    let client = S3Client::new(target, spec.clients);
    let report = run_phases("run", &client, &[spec], &[]).await?;
    write_report(&report, &args.output)
}

async fn scenario(args: ScenarioArgs) -> anyhow::Result<()> {
    let mut specs = scenario::phases(&args.name)?;
    let out = args
        .output
        .out
        .clone()
        .unwrap_or_else(|| scenario::default_out(&args.name));
    let (target, bucket, pids, _cluster) = if args.endpoint.endpoint.is_some() {
        let bucket = args
            .endpoint
            .bucket
            .clone()
            .unwrap_or_else(|| "s3bench".into());
        (args.endpoint.target()?, bucket, Vec::new(), None)
    } else {
        if !args.storaged.exists() {
            bail!(
                "{} not found: build it (cargo build --release -p storaged) or give --storaged",
                args.storaged.display()
            );
        }
        let c = scenario::DevCluster::start(&args.storaged, 3, &out.join("cluster"))?;
        (c.target.clone(), c.bucket.clone(), c.pids.clone(), Some(c))
    };
    for s in &mut specs {
        s.bucket = bucket.clone();
    }
    let clients = specs.iter().map(|s| s.clients).max().unwrap_or(1);
    let client = S3Client::new(target, clients);
    let mut report = run_phases(&args.name, &client, &specs, &pids).await?;
    if args.machine {
        report.machine = Some(machine::measure(&out).await?);
    }
    write_report(
        &report,
        &OutputArgs {
            out: Some(out),
            allow_errors: args.output.allow_errors,
        },
    )
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => run(a).await,
        Cmd::Scenario(a) => scenario(a).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ranges_parse() {
        assert_eq!(parse_size("4KiB").unwrap(), (4096, 4096));
        assert_eq!(parse_size("16KiB-4MiB").unwrap(), (16384, 4 << 20));
        assert!(parse_size("4MiB-1KiB").is_err());
        assert!(parse_size("lots").is_err());
    }
}
