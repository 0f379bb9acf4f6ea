//! The cluster a scenario runs on, and ours: three plain `storaged server -c` processes, one
//! per zone, replication factor 3, each with a minimal `storaged.toml` rendered from the
//! daemon's own typed [`storaged::config::Config`] (no tuning key), `RUST_LOG=warn`, every
//! client on node 1. The layout, an access key and a bucket are set up through the admin API
//! with the daemon's own admin client, as an operator would.
//!
//! With a one-way delay, each node's advertised RPC address is a [`DelayProxy`] in front of
//! its real bind address, so node-to-node traffic crosses a simulated inter-zone link while
//! the S3 client talks to node 1 directly.
//!
//! A kept data directory (`state.json` inside) is started again with the same ports,
//! secrets and key, so a seeded key space is reused across runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use storaged::cli::AdminClient;
use storaged::config::Config;
use storaged_api::{self as api, paths};

use crate::client::Target;
use crate::nodes::{Nodes, NodesError, free_port};
use crate::proxy::{DelayProxy, ProxyError, Transport};

/// Why a cluster did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or directory could not be written or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A process could not start or died.
    #[error(transparent)]
    Nodes(#[from] NodesError),
    /// A delaying proxy could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The rendered configuration was refused by the daemon's own loader.
    #[error("node config: {0}")]
    Config(String),
    /// A start-up step did not happen in time.
    #[error("timed out after {secs} s waiting for {what}{last}")]
    Timeout {
        /// The step.
        what: String,
        /// Its time limit.
        secs: u64,
        /// The last error seen, if any (with a leading separator).
        last: String,
    },
    /// An admin or CLI call failed.
    #[error("{what}: {why}")]
    Setup {
        /// The call.
        what: String,
        /// Its error.
        why: String,
    },
}

/// A running cluster and how to reach it; its processes and proxies stop when dropped.
#[derive(Debug)]
pub struct Cluster {
    /// `storaged`, `garage`, `seaweedfs`.
    pub system: String,
    /// S3 endpoint (node 1) and credentials.
    pub target: Target,
    /// A bucket the key owns.
    pub bucket: String,
    /// Server processes (memory, CPU).
    pub pids: Vec<u32>,
    /// Where its data and logs are.
    pub dir: PathBuf,
    /// Kept alive with the cluster.
    pub(crate) nodes: Nodes,
    /// Kept alive with the cluster.
    pub(crate) proxies: Vec<DelayProxy>,
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Nodes (one per zone).
    pub nodes: usize,
    /// Added to node-to-node traffic in each direction (zero: no proxy).
    pub one_way_delay: Duration,
    /// Data, configs, logs; `state.json` in it makes a restart reuse everything.
    pub dir: PathBuf,
}

/// Everything needed to start the same cluster again on its data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) rpc_secret: String,
    pub(crate) admin_token: String,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) bucket: String,
    /// Per node: S3, RPC, admin and proxy ports.
    pub(crate) ports: Vec<[u16; 4]>,
}

/// Capacity each node offers in the layout (bytes).
const NODE_CAPACITY: u64 = 1_000_000_000;
/// Time limit of each start-up step.
const STEP: Duration = Duration::from_secs(90);

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

fn setup_err(what: &str) -> impl FnOnce(String) -> ClusterError + '_ {
    move |why| ClusterError::Setup {
        what: what.to_string(),
        why,
    }
}

/// Random hex of `bytes` bytes.
pub(crate) fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl State {
    /// A fresh state: new secrets, a `GK…` key both we and Garage accept, free ports.
    pub(crate) fn fresh(nodes: usize) -> Result<Self, ClusterError> {
        let mut taken = Vec::new();
        let mut ports = Vec::with_capacity(nodes);
        for _ in 0..nodes {
            let mut four = [0u16; 4];
            for p in &mut four {
                *p = free_port(None, &taken)?;
                taken.push(*p);
            }
            ports.push(four);
        }
        Ok(Self {
            rpc_secret: random_hex(32),
            admin_token: random_hex(32),
            access_key: format!("GK{}", random_hex(12)),
            secret_key: random_hex(32),
            bucket: "s3bench".into(),
            ports,
        })
    }

    /// The state kept in `dir`, or a fresh one written there.
    pub(crate) fn load_or_create(dir: &Path, nodes: usize) -> Result<(Self, bool), ClusterError> {
        let path = dir.join("state.json");
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(state) = serde_json::from_str::<Self>(&text)
            && state.ports.len() == nodes
        {
            return Ok((state, true));
        }
        let state = Self::fresh(nodes)?;
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        std::fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        Ok((state, false))
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The minimal config of one node, rendered from the typed config and checked by the
/// daemon's own loader.
fn node_config(
    dir: &Path,
    state: &State,
    index: usize,
    advertised: &[SocketAddr],
    public: bool,
) -> Result<String, ClusterError> {
    let [s3, rpc, admin, _] = state.ports[index];
    let required = format!(
        "metadata_dir = {:?}\ndata_dir = {:?}\n",
        dir.join("meta").display().to_string(),
        dir.join("data").display().to_string()
    );
    let mut c: Config =
        toml::from_str(&required).map_err(|e| ClusterError::Config(e.to_string()))?;
    c.replication_factor = advertised.len().min(3);
    c.rpc_bind_addr = addr(rpc);
    c.rpc_public_addr = public.then(|| advertised[index].to_string());
    c.rpc_secret = Some(state.rpc_secret.clone());
    c.bootstrap_peers = if index == 0 {
        advertised[1..].iter().map(ToString::to_string).collect()
    } else {
        vec![advertised[0].to_string()]
    };
    c.zone = Some(format!("dc{}", index + 1));
    c.s3_api.api_bind_addr = addr(s3);
    c.admin.api_bind_addr = addr(admin);
    c.admin.admin_token = Some(state.admin_token.clone());
    let text = c
        .to_minimal_toml()
        .map_err(|e| ClusterError::Config(e.to_string()))?;
    Config::from_toml_and_env(&text, Vec::new())
        .map_err(|e| ClusterError::Config(e.to_string()))?;
    Ok(text)
}

/// Polls `cond` every 100 ms until it yields, failing when a process dies or after `limit`.
pub(crate) async fn wait_for<T, F, Fut>(
    nodes: &mut Nodes,
    what: &str,
    limit: Duration,
    mut cond: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    loop {
        nodes.check_running()?;
        match cond().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout {
                what: what.to_string(),
                secs: limit.as_secs(),
                last: if last.is_empty() {
                    String::new()
                } else {
                    format!(" (last: {last})")
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts proxies (when delayed) on the state's proxy ports, in front of each RPC port;
/// returns them and every node's advertised RPC address.
pub(crate) async fn start_proxies(
    state: &State,
    delay: Duration,
    transport: Transport,
) -> Result<(Vec<DelayProxy>, Vec<SocketAddr>), ClusterError> {
    let mut proxies = Vec::new();
    let mut advertised = Vec::new();
    for ports in &state.ports {
        if delay.is_zero() {
            advertised.push(addr(ports[1]));
        } else {
            let p = DelayProxy::start(transport, addr(ports[3]), addr(ports[1]), delay).await?;
            advertised.push(p.listen);
            proxies.push(p);
        }
    }
    Ok((proxies, advertised))
}

impl Cluster {
    /// Starts our cluster from the `storaged` binary, as described in the module docs.
    ///
    /// # Errors
    /// A node does not start, or a set-up step fails or times out.
    pub async fn start_storaged(storaged: &Path, spec: &ClusterSpec) -> Result<Self, ClusterError> {
        let dir = std::path::absolute(&spec.dir).map_err(io_err("resolving the data dir"))?;
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let (state, restarted) = State::load_or_create(&dir, spec.nodes)?;
        let (proxies, advertised) =
            start_proxies(&state, spec.one_way_delay, Transport::Udp).await?;
        let mut nodes = Nodes::default();
        for i in 0..spec.nodes {
            let node_dir = dir.join(format!("node{}", i + 1));
            std::fs::create_dir_all(&node_dir)
                .map_err(io_err(format!("creating {}", node_dir.display())))?;
            let text = node_config(&node_dir, &state, i, &advertised, !proxies.is_empty())?;
            let config = node_dir.join("storaged.toml");
            std::fs::write(&config, text)
                .map_err(io_err(format!("writing {}", config.display())))?;
            let mut cmd = Command::new(storaged);
            cmd.arg("server")
                .arg("-c")
                .arg(&config)
                .env("RUST_LOG", "warn");
            nodes.spawn(&format!("node{}", i + 1), cmd, &node_dir.join("node.log"))?;
        }
        let admins: Vec<AdminClient> = state
            .ports
            .iter()
            .map(|p| AdminClient::new(&format!("http://{}", addr(p[2])), &state.admin_token))
            .collect();
        setup(&mut nodes, &admins, &state, restarted).await?;
        Ok(Self {
            system: "storaged".into(),
            target: Target {
                endpoint: format!("http://{}", addr(state.ports[0][0])),
                access_key: state.access_key.clone(),
                secret_key: state.secret_key.clone(),
                region: "us-east-1".into(),
            },
            bucket: state.bucket.clone(),
            pids: nodes.pids(),
            dir,
            nodes,
            proxies,
        })
    }

    /// Lines of a shell file exporting how to reach the cluster (`source`-able).
    #[must_use]
    pub fn env_lines(&self) -> String {
        format!(
            "export AWS_ENDPOINT_URL={}\nexport AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_REGION={}\nexport BUCKET_NAME={}\n",
            self.target.endpoint,
            self.target.access_key,
            self.target.secret_key,
            self.target.region,
            self.bucket
        )
    }

    /// Fails when a server process has died (checked after each step).
    ///
    /// # Errors
    /// The first process found gone.
    pub fn check_running(&mut self) -> Result<(), ClusterError> {
        Ok(self.nodes.check_running()?)
    }

    /// How many delaying proxies stand between the nodes.
    #[must_use]
    pub fn proxies(&self) -> usize {
        self.proxies.len()
    }
}

/// Layout, key, bucket, grant; then waits until every node serves and knows them.
async fn setup(
    nodes: &mut Nodes,
    admins: &[AdminClient],
    state: &State,
    restarted: bool,
) -> Result<(), ClusterError> {
    wait_for(nodes, "every node's admin API", STEP, || async {
        for a in admins {
            if !a.healthy().await {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;
    let mut ids = Vec::new();
    for a in admins {
        let s: api::ClusterStatus = a
            .get(paths::STATUS)
            .await
            .map_err(|e| setup_err("reading a node's status")(e.to_string()))?;
        ids.push(s.node_id);
    }
    wait_for(nodes, "node 1 to see every node up", STEP, || async {
        let s: api::ClusterStatus = admins[0]
            .get(paths::STATUS)
            .await
            .map_err(|e| e.to_string())?;
        let up = ids
            .iter()
            .filter(|id| s.nodes.iter().any(|n| &n.node_id == *id && n.is_up))
            .count();
        Ok((up == ids.len()).then_some(()))
    })
    .await?;
    let layout: api::LayoutInfo = admins[0]
        .get(paths::LAYOUT)
        .await
        .map_err(|e| setup_err("reading the layout")(e.to_string()))?;
    let changes: Vec<api::StagedRoleChange> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| {
            !layout
                .roles
                .iter()
                .any(|r| &r.node_id == *id && r.role.capacity.is_some())
        })
        .map(|(i, id)| api::StagedRoleChange {
            node_id: id.clone(),
            role: Some(api::NodeRole {
                zone: format!("dc{}", i + 1),
                capacity: Some(NODE_CAPACITY),
                tags: vec![],
            }),
        })
        .collect();
    let mut version = layout.version;
    if !changes.is_empty() {
        let _: serde_json::Value = admins[0]
            .post(
                paths::LAYOUT_STAGE,
                &api::StageLayoutRequest {
                    changes,
                    zone_redundancy: None,
                },
            )
            .await
            .map_err(|e| setup_err("staging the layout")(e.to_string()))?;
        let applied: api::ApplyLayoutResponse = admins[0]
            .post(
                paths::LAYOUT_APPLY,
                &api::LayoutVersionRequest {
                    version: version + 1,
                },
            )
            .await
            .map_err(|e| setup_err("applying the layout")(e.to_string()))?;
        version = applied.layout.version;
    }
    wait_for(
        nodes,
        "every node to have the layout and be ready",
        STEP,
        || async {
            for a in admins {
                let s: api::ClusterStatus =
                    a.get(paths::STATUS).await.map_err(|e| e.to_string())?;
                if s.layout_version < version || !a.ready().await {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    if !restarted {
        let _: api::KeyInfo = admins[0]
            .post(
                paths::KEYS_IMPORT,
                &api::ImportKeyRequest {
                    access_key_id: state.access_key.clone(),
                    secret_access_key: state.secret_key.clone(),
                    name: Some("s3bench".into()),
                },
            )
            .await
            .map_err(|e| setup_err("importing the key")(e.to_string()))?;
        let bucket: api::BucketInfo = admins[0]
            .post(
                paths::BUCKETS,
                &api::CreateBucketRequest {
                    name: state.bucket.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| setup_err("creating the bucket")(e.to_string()))?;
        let _: api::BucketInfo = admins[0]
            .post(
                paths::PERMISSIONS_ALLOW,
                &api::PermissionRequest {
                    bucket_id: bucket.id.clone(),
                    access_key_id: state.access_key.clone(),
                    permissions: api::Permissions {
                        read: true,
                        write: true,
                        owner: true,
                    },
                },
            )
            .await
            .map_err(|e| setup_err("granting the key")(e.to_string()))?;
    }
    let key_path = paths::key(&state.access_key);
    wait_for(
        nodes,
        "every node to know the key's grant",
        STEP,
        || async {
            for a in admins {
                let k: api::KeyInfo = a.get(&key_path).await.map_err(|e| e.to_string())?;
                if k.buckets.is_empty() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_configs_are_minimal_and_point_peers_at_advertised_addresses() {
        let state = State::fresh(3).unwrap();
        let adv: Vec<SocketAddr> = (0..3).map(|i| addr(state.ports[i][3])).collect();
        let text = node_config(Path::new("/tmp/n2"), &state, 1, &adv, true).unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["replication_factor"].as_integer(), Some(3));
        assert_eq!(
            t["rpc_public_addr"].as_str(),
            Some(adv[1].to_string().as_str())
        );
        assert_eq!(t["zone"].as_str(), Some("dc2"));
        let peers = t["bootstrap_peers"].as_array().unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].as_str(), Some(adv[0].to_string().as_str()));
        for tuning in ["block_size", "background", "limits", "compression_level"] {
            assert!(!t.contains_key(tuning), "{tuning} in\n{text}");
        }
        let plain = node_config(Path::new("/tmp/n1"), &state, 0, &adv, false).unwrap();
        assert!(!plain.contains("rpc_public_addr"), "{plain}");
    }
}
