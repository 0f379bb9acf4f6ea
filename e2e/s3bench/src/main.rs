//! The `s3bench` command line (the crate's documentation is in `lib.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use s3bench::client::{S3Client, Target};
use s3bench::cluster::{Cluster, ClusterSpec};
use s3bench::peers::Peer;
use s3bench::runner::{self, RunContext};
use s3bench::scenario::{self, Scale, Scenario};
use s3bench::workload::{Length, Mix, Spec};
use s3bench::{machine, plot, stats};

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
    /// A named scenario (small, large, mixed, delete, list, geo, keepalive, smoke) on a
    /// 3-node cluster started from `--storaged` (and on each `--peer`), or on `--endpoint`.
    Scenario(ScenarioArgs),
    /// Start a cluster (ours, or one peer) and keep it until Ctrl-C, for other clients
    /// (s5cmd, wrk, aws): `<dir>/cluster.env` says how to reach it.
    Cluster(ClusterArgs),
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
    /// small, large, mixed, delete, list, geo, keepalive or smoke.
    name: String,
    /// The storaged binary to start the 3-node, 3-zone cluster with (when no --endpoint).
    #[arg(long, default_value = "target/release/storaged")]
    storaged: PathBuf,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Also run the scenario on a peer, started from its binary: `garage=/path/to/garage`,
    /// `seaweedfs=/path/to/weed` (repeatable); results side by side in compare.csv.
    #[arg(long = "peer")]
    peers: Vec<Peer>,
    /// Run only the peers, not ours.
    #[arg(long)]
    skip_ours: bool,
    /// Keys or operations of the scenario's main step (e.g. `list --keys 1000000`).
    #[arg(long)]
    keys: Option<u64>,
    /// Seconds of timed steps (mixed, keepalive).
    #[arg(long)]
    seconds: Option<u64>,
    /// Do not run `wrk` after the keep-alive step even when it is installed.
    #[arg(long)]
    no_wrk: bool,
    /// Where kept data directories (`list`) live.
    #[arg(long, default_value = "target/s3bench")]
    data_root: PathBuf,
    /// Also measure the disk and the loopback (a few seconds).
    #[arg(long)]
    machine: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct ClusterArgs {
    /// The storaged binary (when no --peer).
    #[arg(long, default_value = "target/release/storaged")]
    storaged: PathBuf,
    /// Start this peer instead of ours: `garage=/path`, `seaweedfs=/path`.
    #[arg(long)]
    peer: Option<Peer>,
    /// One-way delay between zones, milliseconds (25 gives the geo scenario's 50 ms RTT).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Data, logs and cluster.env.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Args, Debug)]
struct OutputArgs {
    /// Results folder (results.json, results.csv, SVG plots; peers in <out>/<peer>/);
    /// default target/s3bench/<name>-<time>.
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

fn write_report(report: &stats::Report, dir: &Path, allow_errors: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(dir.join("results.csv"), report.csv())?;
    let plots = plot::write_all(report, dir)?;
    print!("{}", report.table());
    println!("results: {} ({})", dir.display(), plots.join(", "));
    let errors: u64 = report.ops.values().map(|s| s.errors).sum();
    if errors > 0 && !allow_errors {
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
        bucket: bucket.clone(),
        prefix: args.prefix.clone(),
        naming: s3bench::workload::KeyNaming::Flat,
        mix: args.mix.clone(),
        size: parse_size(&args.size)?,
        clients: args.clients.max(1),
        length,
        keys: args.keys,
        warmup: Duration::from_secs(args.warmup),
    };
    let client = S3Client::new(target, spec.clients);
    let scenario = Scenario {
        name: "run".into(),
        steps: vec![scenario::Step::Load(spec)],
        one_way_delay: Duration::ZERO,
        kept_dir: None,
    };
    let ctx = RunContext {
        system: "endpoint",
        client: &client,
        bucket: &bucket,
        pids: &[],
        seed_dir: None,
        wrk: false,
    };
    let report = runner::run(&scenario, &ctx).await?;
    let out = args
        .output
        .out
        .clone()
        .unwrap_or_else(|| scenario::default_out("run"));
    write_report(&report, &out, args.output.allow_errors)
}

/// Which system a scenario runs on.
enum System<'a> {
    Ours,
    Peer(&'a Peer),
}

async fn start(
    system: &System<'_>,
    storaged: &Path,
    spec: &ClusterSpec,
) -> anyhow::Result<Cluster> {
    Ok(match system {
        System::Ours => {
            if !storaged.exists() {
                bail!(
                    "{} not found: build it (cargo build --release -p storaged) or give --storaged",
                    storaged.display()
                );
            }
            Cluster::start_storaged(storaged, spec).await?
        }
        System::Peer(p) => Cluster::start_peer(p, spec).await?,
    })
}

async fn scenario(args: ScenarioArgs) -> anyhow::Result<()> {
    let scale = Scale {
        keys: args.keys,
        seconds: args.seconds,
    };
    let sc = Scenario::new(&args.name, scale)?;
    let out = args
        .output
        .out
        .clone()
        .unwrap_or_else(|| scenario::default_out(&args.name));
    let clients = sc
        .steps
        .iter()
        .map(|s| match s {
            scenario::Step::Load(spec) | scenario::Step::Seed(spec) => spec.clients,
            scenario::Step::DeleteBatches { clients, .. } => *clients,
            scenario::Step::List { .. } => 1,
            scenario::Step::KeepAlive { connections, .. } => *connections,
        })
        .max()
        .unwrap_or(1);
    if args.endpoint.endpoint.is_some() {
        let bucket = args
            .endpoint
            .bucket
            .clone()
            .unwrap_or_else(|| "s3bench".into());
        let client = S3Client::new(args.endpoint.target()?, clients);
        let ctx = RunContext {
            system: "endpoint",
            client: &client,
            bucket: &bucket,
            pids: &[],
            seed_dir: None,
            wrk: !args.no_wrk,
        };
        let mut report = runner::run(&sc, &ctx).await?;
        if args.machine {
            report.machine = Some(machine::measure(&out).await?);
        }
        return write_report(&report, &out, args.output.allow_errors);
    }
    let mut systems = Vec::new();
    if !args.skip_ours {
        systems.push(System::Ours);
    }
    systems.extend(args.peers.iter().map(System::Peer));
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for system in &systems {
        let (name, dir) = match system {
            System::Ours => ("storaged", out.clone()),
            System::Peer(p) => (p.system.name(), out.join(p.system.name())),
        };
        if let System::Peer(p) = system
            && !sc.one_way_delay.is_zero()
            && !p.system.has_zones()
        {
            println!(
                "[{name}] {}: skipped (a single node has no zones to delay)",
                sc.name
            );
            continue;
        }
        let spec = ClusterSpec {
            nodes: 3,
            one_way_delay: sc.one_way_delay,
            dir: match &sc.kept_dir {
                Some(k) => args.data_root.join(k).join(name),
                None => dir.join("cluster"),
            },
        };
        println!("[{name}] starting the cluster in {}", spec.dir.display());
        let mut cluster = start(system, &args.storaged, &spec)
            .await
            .with_context(|| format!("starting {name}"))?;
        let client = S3Client::new(cluster.target.clone(), clients);
        let ctx = RunContext {
            system: name,
            client: &client,
            bucket: &cluster.bucket.clone(),
            pids: &cluster.pids.clone(),
            seed_dir: sc.kept_dir.as_ref().map(|_| spec.dir.as_path()),
            wrk: !args.no_wrk,
        };
        let mut report = runner::run(&sc, &ctx).await?;
        cluster
            .check_running()
            .with_context(|| format!("{name} after the run"))?;
        if args.machine {
            report.machine = Some(machine::measure(&dir).await?);
        }
        drop(cluster);
        if let Err(e) = write_report(&report, &dir, args.output.allow_errors) {
            failures.push(format!("{name}: {e:#}"));
        }
        reports.push(report);
    }
    if reports.len() > 1 {
        let text = compare(&reports);
        std::fs::write(out.join("compare.csv"), compare_csv(&reports))?;
        print!("{text}");
        println!("side by side: {}", out.join("compare.csv").display());
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// The same figures of every system, one row per step and operation.
fn compare(reports: &[stats::Report]) -> String {
    let mut rows: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in reports {
        for (op, s) in &r.ops {
            rows.entry(op.as_str()).or_default().push(format!(
                "{}: {:.0} ops/s {:.1} MB/s {:.0} keys/s p50 {:.2} p99 {:.2} ms",
                r.system, s.ops_per_sec, s.mb_per_sec, s.keys_per_sec, s.p50_ms, s.p99_ms
            ));
        }
    }
    let mut out = String::from("side by side:\n");
    for (op, cells) in rows {
        out.push_str(&format!("  {op}\n"));
        for c in cells {
            out.push_str(&format!("    {c}\n"));
        }
    }
    for r in reports {
        if let Some(rss) = &r.rss {
            let after: Vec<String> = rss
                .after
                .iter()
                .map(|(k, v)| format!("{k} {:.0}", *v as f64 / 1_048_576.0))
                .collect();
            out.push_str(&format!(
                "  {} RSS MiB: idle {:.0}, after {}\n",
                r.system,
                rss.idle_bytes as f64 / 1_048_576.0,
                after.join(", ")
            ));
        }
    }
    out
}

fn compare_csv(reports: &[stats::Report]) -> String {
    let mut out = String::new();
    for (i, r) in reports.iter().enumerate() {
        let csv = r.csv();
        let mut lines = csv.lines();
        let header = lines.next().unwrap_or_default();
        if i == 0 {
            out.push_str(header);
            out.push('\n');
        }
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let spec = ClusterSpec {
        nodes: 3,
        one_way_delay: Duration::from_millis(args.delay_ms),
        dir: args.dir.clone(),
    };
    let system = match &args.peer {
        Some(p) => System::Peer(p),
        None => System::Ours,
    };
    let cluster = start(&system, &args.storaged, &spec).await?;
    let env = cluster.env_lines();
    let path = args.dir.join("cluster.env");
    std::fs::write(&path, &env).with_context(|| format!("writing {}", path.display()))?;
    print!("{env}");
    println!(
        "{} ready ({} delaying proxies); these lines are in {}; Ctrl-C stops it",
        cluster.system,
        cluster.proxies(),
        path.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(cluster);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => run(a).await,
        Cmd::Scenario(a) => scenario(a).await,
        Cmd::Cluster(a) => cluster(a).await,
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
