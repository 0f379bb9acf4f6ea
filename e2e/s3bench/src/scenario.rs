//! Named scenarios, and the cluster they run against: started here from the built binary
//! (`storaged dev`, exactly as a user runs it, logging at `warn`), or any S3 endpoint given
//! by URL (a peer such as Garage or SeaweedFS started by hand).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::Target;
use crate::workload::{Length, Mix, OpKind, Spec};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// One phase of a scenario: one operation, `ops` times, on keys `0..ops` (each phase is
/// measured and reported apart: the PUT phase and the GET phase of `small`).
fn phase(prefix: &str, op: OpKind, size: usize, clients: usize, ops: u64) -> Spec {
    Spec {
        bucket: String::new(),
        prefix: prefix.into(),
        mix: Mix(vec![(op, 1)]),
        size: (size, size),
        clients,
        length: Length::Ops(ops),
        keys: ops,
        warmup: Duration::ZERO,
    }
}

/// The phases of scenario `name` (their buckets left for the caller to fill in).
///
/// # Errors
/// An unknown name (the message lists the known ones).
pub fn phases(name: &str) -> anyhow::Result<Vec<Spec>> {
    let run = format!("{name}-{}", std::process::id());
    Ok(match name {
        // 4 KiB objects, 32 clients: PUT 3000, then GET them.
        "small" => vec![
            phase(&run, OpKind::Put, 4 * KIB, 32, 3000),
            phase(&run, OpKind::Get, 4 * KIB, 32, 3000),
        ],
        // 64 MiB objects, 4 clients: PUT 8, then GET them.
        "large" => vec![
            phase(&run, OpKind::Put, 64 * MIB, 4, 8),
            phase(&run, OpKind::Get, 64 * MIB, 4, 8),
        ],
        // 70% GET / 25% PUT / 5% DELETE of 16 KiB to 4 MiB for 30 s, on 200 keys put first.
        "mixed" => {
            let mut fill = phase(&run, OpKind::Put, 16 * KIB, 8, 200);
            fill.size = (16 * KIB, 4 * MIB);
            let mut mix = fill.clone();
            mix.mix = Mix(vec![
                (OpKind::Get, 70),
                (OpKind::Put, 25),
                (OpKind::Delete, 5),
            ]);
            mix.length = Length::Time(Duration::from_secs(30));
            mix.warmup = Duration::from_secs(2);
            mix.clients = 16;
            vec![fill, mix]
        }
        // A short run that proves the harness works (CI): no figure is read from it.
        "smoke" => vec![
            phase(&run, OpKind::Put, 4 * KIB, 8, 200),
            phase(&run, OpKind::Get, 4 * KIB, 8, 200),
            phase(&run, OpKind::Put, 3 * MIB, 2, 4),
            phase(&run, OpKind::Head, 0, 4, 100),
            phase(&run, OpKind::List, 0, 1, 2),
            phase(&run, OpKind::Delete, 0, 4, 200),
        ],
        _ => bail!("unknown scenario {name:?}: small, large, mixed or smoke"),
    })
}

/// A `storaged dev` cluster this process started; stopped (SIGTERM, then waited for) on drop.
pub struct DevCluster {
    child: Child,
    /// How to reach it.
    pub target: Target,
    /// The bucket `dev` made.
    pub bucket: String,
    /// Node processes (for memory and CPU).
    pub pids: Vec<u32>,
}

fn parse_env(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl DevCluster {
    /// Starts `storaged dev --nodes N --zones N` on `dir` and waits (up to 2 minutes) until
    /// it wrote its `dev.env`.
    ///
    /// # Errors
    /// The binary does not start, exits, or is not ready in time.
    pub fn start(storaged: &Path, nodes: u32, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let env_path = dir.join("dev.env");
        let _ = std::fs::remove_file(&env_path);
        let log = std::fs::File::create(dir.join("dev.log"))?;
        let child = Command::new(storaged)
            .args(["dev", "--nodes", &nodes.to_string(), "--zones"])
            .arg(nodes.to_string())
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", storaged.display()))?;
        let mut cluster = Self {
            child,
            target: Target {
                endpoint: String::new(),
                access_key: String::new(),
                secret_key: String::new(),
                region: String::new(),
            },
            bucket: String::new(),
            pids: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let env = loop {
            if let Ok(text) = std::fs::read_to_string(&env_path) {
                break parse_env(&text);
            }
            if let Some(status) = cluster.child.try_wait()? {
                bail!(
                    "storaged dev exited with {status}; see {}",
                    dir.join("dev.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "storaged dev not ready after 120 s; see {}",
                    dir.join("dev.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let var = |k: &str| {
            env.get(k)
                .cloned()
                .with_context(|| format!("{k} missing from {}", env_path.display()))
        };
        cluster.target = Target {
            endpoint: var("AWS_ENDPOINT_URL")?,
            access_key: var("AWS_ACCESS_KEY_ID")?,
            secret_key: var("AWS_SECRET_ACCESS_KEY")?,
            region: var("AWS_REGION")?,
        };
        cluster.bucket = var("BUCKET_NAME")?;
        cluster.pids = (1..=nodes)
            .filter_map(|i| env.get(&format!("NODE{i}_PID"))?.parse().ok())
            .collect();
        Ok(cluster)
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        // SIGTERM lets the supervisor stop its nodes; a kill would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a run's results go when `--out` is not given.
#[must_use]
pub fn default_out(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from("target/s3bench").join(format!("{name}-{secs}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_phases_and_unknown_ones_are_refused() {
        for name in ["small", "large", "mixed", "smoke"] {
            assert!(!phases(name).unwrap().is_empty(), "{name}");
        }
        assert!(
            phases("huge")
                .unwrap_err()
                .to_string()
                .contains("small, large")
        );
    }

    #[test]
    fn dev_env_lines_parse() {
        let env = parse_env("export AWS_REGION=us-east-1\nexport NODE1_PID=42\nnoise\n");
        assert_eq!(env["AWS_REGION"], "us-east-1");
        assert_eq!(env["NODE1_PID"], "42");
    }
}
