//! Peers measured side by side with ours, started from their own binaries the way their
//! documentation sets them up, with defaults only:
//!
//! - Garage (v2): as many nodes as ours, one per zone `dcN`, `replication_factor = 3`,
//!   1 GB each in the layout; nodes connected with `garage node connect`, the key imported
//!   (the same id and secret shape as ours) and the bucket created and granted with the
//!   `garage` CLI. With a delay, each node's `rpc_public_addr` is a TCP [`DelayProxy`]
//!   (Garage's RPC is TCP).
//! - SeaweedFS: one `weed server -s3` process (master, volume, filer and S3 gateway in one),
//!   credentials from an `-s3.config` file. It has no zones, so it does not run `geo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::client::{S3Client, Target};
use crate::cluster::{Cluster, ClusterError, ClusterSpec, State, io_err, start_proxies, wait_for};
use crate::nodes::{Nodes, free_port};
use crate::proxy::Transport;

/// A peer system and its binary.
#[derive(Clone, Debug)]
pub struct Peer {
    /// `garage` or `seaweedfs`.
    pub system: PeerKind,
    /// Its server binary.
    pub bin: PathBuf,
}

/// Which peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// Garage v2.
    Garage,
    /// SeaweedFS (`weed`).
    Seaweedfs,
}

impl PeerKind {
    /// The name used in results.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Garage => "garage",
            Self::Seaweedfs => "seaweedfs",
        }
    }

    /// Whether it can run a scenario with zones (delayed links between nodes).
    #[must_use]
    pub fn has_zones(self) -> bool {
        self == Self::Garage
    }
}

impl std::str::FromStr for Peer {
    type Err = String;
    /// `garage=/path/to/garage` or `seaweedfs=/path/to/weed`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, bin) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=PATH (garage=…, seaweedfs=…)"))?;
        let system = match name {
            "garage" => PeerKind::Garage,
            "seaweedfs" | "weed" => PeerKind::Seaweedfs,
            _ => return Err(format!("unknown peer {name:?}: garage or seaweedfs")),
        };
        Ok(Self {
            system,
            bin: PathBuf::from(bin),
        })
    }
}

/// Time limit of each start-up step.
const STEP: Duration = Duration::from_secs(90);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs a CLI command to completion; its stdout on success.
fn cli(mut cmd: Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

fn setup_err(what: &str) -> impl FnOnce(String) -> ClusterError + '_ {
    move |why| ClusterError::Setup {
        what: what.to_string(),
        why,
    }
}

/// Waits until the S3 endpoint accepts a request from the key on the bucket.
async fn wait_s3(nodes: &mut Nodes, target: &Target, bucket: &str) -> Result<(), ClusterError> {
    let client = S3Client::new(target.clone(), 1);
    wait_for(nodes, "the S3 API to serve the bucket", STEP, || {
        let client = client.clone();
        async move {
            client
                .put(bucket, "s3bench-probe", bytes::Bytes::from_static(b"probe"))
                .await
                .map(|()| Some(()))
                .map_err(|e| e.to_string())
        }
    })
    .await
}

impl Cluster {
    /// Starts `peer` (see the module docs).
    ///
    /// # Errors
    /// A process does not start, or a set-up step fails or times out.
    pub async fn start_peer(peer: &Peer, spec: &ClusterSpec) -> Result<Self, ClusterError> {
        let dir = std::path::absolute(&spec.dir).map_err(io_err("resolving the data dir"))?;
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        match peer.system {
            PeerKind::Garage => start_garage(&peer.bin, spec, dir).await,
            PeerKind::Seaweedfs => start_seaweedfs(&peer.bin, dir).await,
        }
    }
}

fn garage_config(dir: &Path, state: &State, i: usize, public: SocketAddr) -> String {
    let [s3, rpc, admin, _] = state.ports[i];
    format!(
        "metadata_dir = {meta:?}\ndata_dir = {data:?}\nreplication_factor = {rf}\nrpc_bind_addr = \"{rpc}\"\nrpc_public_addr = \"{public}\"\nrpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"{s3}\"\n\n[admin]\napi_bind_addr = \"{admin}\"\nadmin_token = \"{token}\"\n",
        meta = dir.join("meta").display().to_string(),
        data = dir.join("data").display().to_string(),
        rf = state.ports.len().min(3),
        rpc = addr(rpc),
        secret = state.rpc_secret,
        s3 = addr(s3),
        admin = addr(admin),
        token = state.admin_token,
    )
}

async fn start_garage(
    bin: &Path,
    spec: &ClusterSpec,
    dir: PathBuf,
) -> Result<Cluster, ClusterError> {
    let (state, restarted) = State::load_or_create(&dir, spec.nodes)?;
    let (proxies, advertised) = start_proxies(&state, spec.one_way_delay, Transport::Tcp).await?;
    let mut nodes = Nodes::default();
    let mut configs = Vec::new();
    for (i, addr) in advertised.iter().enumerate().take(spec.nodes) {
        let node_dir = dir.join(format!("node{}", i + 1));
        std::fs::create_dir_all(&node_dir)
            .map_err(io_err(format!("creating {}", node_dir.display())))?;
        let config = node_dir.join("garage.toml");
        std::fs::write(&config, garage_config(&node_dir, &state, i, *addr))
            .map_err(io_err(format!("writing {}", config.display())))?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn");
        nodes.spawn(&format!("garage{}", i + 1), cmd, &node_dir.join("node.log"))?;
        configs.push(config);
    }
    let garage = |i: usize, args: &[&str]| {
        let mut c = Command::new(bin);
        c.arg("-c").arg(&configs[i]).args(args);
        c
    };
    let mut ids = Vec::new();
    for i in 0..spec.nodes {
        let id = wait_for(&mut nodes, "garage node id", STEP, || async {
            cli(garage(i, &["node", "id", "-q"]), "garage node id").map(|s| {
                let id = s.trim().split('@').next().unwrap_or_default().to_string();
                (!id.is_empty()).then_some(id)
            })
        })
        .await?;
        ids.push(id);
    }
    for (i, id) in ids.iter().enumerate().skip(1) {
        let peer = format!("{id}@{}", advertised[i]);
        wait_for(&mut nodes, "garage node connect", STEP, || async {
            cli(
                garage(0, &["node", "connect", &peer]),
                "garage node connect",
            )
            .map(|_| Some(()))
        })
        .await?;
    }
    if !restarted {
        for (i, id) in ids.iter().enumerate() {
            let zone = format!("dc{}", i + 1);
            cli(
                garage(0, &["layout", "assign", "-z", &zone, "-c", "1G", id]),
                "garage layout assign",
            )
            .map_err(setup_err("garage layout"))?;
        }
        cli(
            garage(0, &["layout", "apply", "--version", "1"]),
            "garage layout apply",
        )
        .map_err(setup_err("garage layout"))?;
        // Every node must know the layout before key and bucket are written through node 1.
        wait_for(&mut nodes, "garage key import", STEP, || async {
            cli(
                garage(
                    0,
                    &[
                        "key",
                        "import",
                        "--yes",
                        "-n",
                        "s3bench",
                        &state.access_key,
                        &state.secret_key,
                    ],
                ),
                "garage key import",
            )
            .map(|_| Some(()))
        })
        .await?;
        cli(
            garage(0, &["bucket", "create", &state.bucket]),
            "garage bucket create",
        )
        .map_err(setup_err("garage bucket"))?;
        cli(
            garage(
                0,
                &[
                    "bucket",
                    "allow",
                    "--read",
                    "--write",
                    "--owner",
                    &state.bucket,
                    "--key",
                    &state.access_key,
                ],
            ),
            "garage bucket allow",
        )
        .map_err(setup_err("garage bucket"))?;
    }
    let target = Target {
        endpoint: format!("http://{}", addr(state.ports[0][0])),
        access_key: state.access_key.clone(),
        secret_key: state.secret_key.clone(),
        region: "us-east-1".into(),
    };
    wait_s3(&mut nodes, &target, &state.bucket).await?;
    Ok(Cluster {
        system: "garage".into(),
        target,
        bucket: state.bucket.clone(),
        pids: nodes.pids(),
        dir,
        nodes,
        proxies,
    })
}

async fn start_seaweedfs(bin: &Path, dir: PathBuf) -> Result<Cluster, ClusterError> {
    let (state, _) = State::load_or_create(&dir, 1)?;
    // SeaweedFS listens on each port and on port + 10000 (gRPC): pick ports where both are
    // free.
    let mut taken = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 4 {
        let p = free_port(None, &taken)?;
        taken.push(p);
        if p < 55_000 && free_port(Some(p + 10_000), &taken)? == p + 10_000 {
            taken.push(p + 10_000);
            ports.push(p);
        }
    }
    let s3_config = dir.join("s3.json");
    let identities = serde_json::json!({
        "identities": [{
            "name": "s3bench",
            "credentials": [{"accessKey": state.access_key, "secretKey": state.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]
        }]
    });
    std::fs::write(&s3_config, identities.to_string())
        .map_err(io_err(format!("writing {}", s3_config.display())))?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(io_err(format!("creating {}", data.display())))?;
    let mut cmd = Command::new(bin);
    cmd.arg("server")
        .arg(format!("-dir={}", data.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
        .arg(format!("-master.port={}", ports[0]))
        .arg(format!("-volume.port={}", ports[1]))
        .arg(format!("-filer.port={}", ports[2]))
        .arg(format!("-s3.port={}", ports[3]))
        .arg(format!("-s3.config={}", s3_config.display()));
    let mut nodes = Nodes::default();
    nodes.spawn("weed", cmd, &dir.join("weed.log"))?;
    let target = Target {
        endpoint: format!("http://{}", addr(ports[3])),
        access_key: state.access_key.clone(),
        secret_key: state.secret_key.clone(),
        region: "us-east-1".into(),
    };
    let client = S3Client::new(target.clone(), 1);
    let bucket = state.bucket.clone();
    wait_for(&mut nodes, "SeaweedFS to create the bucket", STEP, || {
        let (client, bucket) = (client.clone(), bucket.clone());
        async move {
            client
                .create_bucket(&bucket)
                .await
                .map(|()| Some(()))
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    wait_s3(&mut nodes, &target, &bucket).await?;
    Ok(Cluster {
        system: "seaweedfs".into(),
        target,
        bucket,
        pids: nodes.pids(),
        dir,
        nodes,
        proxies: Vec::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let p: Peer = "garage=/x/garage".parse().unwrap();
        assert_eq!(p.system, PeerKind::Garage);
        assert_eq!(p.bin, PathBuf::from("/x/garage"));
        assert!("minio=/x".parse::<Peer>().is_err());
        assert!("garage".parse::<Peer>().is_err());
    }

    #[test]
    fn garage_config_has_the_documented_keys() {
        let state = State::fresh(3).unwrap();
        let text = garage_config(Path::new("/g"), &state, 0, addr(1234));
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["replication_factor"].as_integer(), Some(3));
        assert_eq!(t["rpc_public_addr"].as_str(), Some("127.0.0.1:1234"));
        assert!(t["s3_api"].get("api_bind_addr").is_some());
        assert!(t["admin"].get("admin_token").is_some());
    }
}
