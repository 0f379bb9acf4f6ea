//! `storaged dev`: a ready-to-use local cluster for trying the product.
//!
//! The supervisor writes one `storaged.toml` per node (`--nodes N`, node `i` in zone
//! `dc{(i-1) % Z + 1}` for `--zones Z`, `replication_factor = min(3, N)`, node 1 bootstrapping
//! to every other node and every other node to node 1), starts each node as its own OS
//! process (`storaged server -c … --exit-with-parent`, so nodes die with the supervisor),
//! waits until node 1 sees every node up, gives each node a storage role in the layout and
//! applies it, waits for the cluster to be healthy, creates an access key and a bucket through
//! the admin API, waits until every node knows them, and only then writes `dev.env`
//! atomically (temp file + rename). It keeps running when a node dies, and stops its nodes on
//! Ctrl-C / SIGTERM.
//!
//! A single node (`--nodes 1`) has replication factor 1 and no peers: it assigns itself a
//! layout at start, so the supervisor leaves the layout alone.
//!
//! Ports are kept across restarts of the same `--data-dir` when they are still free (the
//! previous `storaged.toml` of each node says which they were), so that nodes find each other
//! where they left off.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use storaged_api::{self as api, paths};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::cli::{AdminClient, ClientError};

/// Capacity offered by each dev node in the layout (bytes).
const DEV_NODE_CAPACITY: u64 = 1_000_000_000;
/// How long the supervisor waits for each start-up step.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(35);

/// Options of `storaged dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevOptions {
    /// Where node data and `dev.env` go.
    #[arg(long, default_value = ".dev")]
    pub data_dir: PathBuf,
    /// Bucket created for you.
    #[arg(long, default_value = "dev-bucket")]
    pub bucket: String,
    /// Number of node processes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// Number of zones; node i is in zone dc{(i-1) % zones + 1}.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub zones: u16,
}

/// Ports of one node.
#[derive(Clone, Copy, Debug)]
struct Ports {
    s3: u16,
    rpc: u16,
    admin: u16,
}

/// One node process of the dev cluster.
struct Node {
    /// 1-based.
    index: usize,
    zone: String,
    ports: Ports,
    dir: PathBuf,
    admin: AdminClient,
    /// `None` once the process has exited.
    child: Option<Child>,
    pid: u32,
    /// Hex node id, known once the node answers `/v1/status`.
    id: String,
    /// Tasks copying the node's output to ours, each line prefixed with the node's name.
    log_tasks: Vec<JoinHandle<()>>,
}

impl Node {
    fn name(&self) -> String {
        format!("node{}", self.index)
    }

    fn s3_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    fn admin_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.admin)
    }

    fn rpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.rpc)
    }

    /// Fails when the process has exited (reaping it).
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            self.child = None;
            bail!(
                "{} exited during start-up ({status}); see its log above",
                self.name()
            );
        }
        if self.child.is_none() {
            bail!("{} is not running", self.name());
        }
        Ok(())
    }

    /// Reaps the process if it has exited, returning its status once.
    fn poll_exit(&mut self) -> Option<std::io::Result<ExitStatus>> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(Ok(status))
            }
            Ok(None) => None,
            Err(e) => {
                self.child = None;
                Some(Err(e))
            }
        }
    }
}

/// `preferred` if free on loopback (TCP and UDP), else any free port.
fn free_port(preferred: u16, taken: &[u16]) -> anyhow::Result<u16> {
    let ok = |p: u16| {
        p != 0
            && !taken.contains(&p)
            && TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok()
            && UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok()
    };
    if ok(preferred) {
        return Ok(preferred);
    }
    for _ in 0..100 {
        let p = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if ok(p) {
            return Ok(p);
        }
    }
    bail!("no free port on 127.0.0.1")
}

/// The ports a previous run of this node used, read from its `storaged.toml`.
fn previous_ports(config_path: &Path) -> Option<Ports> {
    let text = std::fs::read_to_string(config_path).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    let port = |v: Option<&toml::Value>| -> Option<u16> {
        v?.as_str()?.parse::<SocketAddr>().ok().map(|a| a.port())
    };
    Some(Ports {
        s3: port(value.get("s3_api").and_then(|s| s.get("api_bind_addr")))?,
        rpc: port(value.get("rpc_bind_addr"))?,
        admin: port(value.get("admin").and_then(|s| s.get("api_bind_addr")))?,
    })
}

/// Ports for node `index`: those of the previous run if still free, else 3900/3901/3903 plus
/// ten per node, else any free ones.
fn pick_ports(index: usize, config_path: &Path, taken: &mut Vec<u16>) -> anyhow::Result<Ports> {
    let offset = u16::try_from((index - 1) * 10).unwrap_or(0);
    let preferred = previous_ports(config_path).unwrap_or(Ports {
        s3: 3900 + offset,
        rpc: 3901 + offset,
        admin: 3903 + offset,
    });
    let s3 = free_port(preferred.s3, taken)?;
    taken.push(s3);
    let rpc = free_port(preferred.rpc, taken)?;
    taken.push(rpc);
    let admin = free_port(preferred.admin, taken)?;
    taken.push(admin);
    Ok(Ports { s3, rpc, admin })
}

struct NodeConfig<'a> {
    dir: &'a Path,
    ports: Ports,
    secret: &'a str,
    token: &'a str,
    zone: &'a str,
    replication_factor: usize,
    bootstrap_peers: &'a [String],
}

fn node_config(c: &NodeConfig<'_>) -> String {
    let peers = c
        .bootstrap_peers
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# Written by `storaged dev`.
metadata_dir = "{meta}"
data_dir = "{data}"
replication_factor = {rf}
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
bootstrap_peers = [{peers}]
zone = "{zone}"

[s3_api]
api_bind_addr = "127.0.0.1:{s3}"
s3_region = "us-east-1"
root_domain = "localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
        meta = c.dir.join("meta").display(),
        data = c.dir.join("data").display(),
        rf = c.replication_factor,
        rpc = c.ports.rpc,
        secret = c.secret,
        zone = c.zone,
        s3 = c.ports.s3,
        admin = c.ports.admin,
        token = c.token,
    )
}

/// Writes `path` atomically (see `util::fs`).
fn write_atomic(path: &Path, content: &str) -> anyhow::Result<()> {
    crate::util::fs::write_atomically(path, content.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

/// Copies `from` to our stderr line by line, each line prefixed with `[name] `.
fn forward_output(name: String, from: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        let mut out = tokio::io::stderr();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = out.write_all(format!("[{name}] {line}\n").as_bytes()).await;
        }
    })
}

/// Polls `cond` every 100 ms until it yields a value, failing when a node process exits or
/// after `timeout`. `cond` gets the nodes so it can talk to them.
async fn wait_for<T, F, Fut>(
    nodes: &mut [Node],
    what: &str,
    timeout: Duration,
    mut cond: F,
) -> anyhow::Result<T>
where
    F: FnMut(Vec<(AdminClient, String)>) -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        for node in nodes.iter_mut() {
            node.check_running()?;
        }
        let handles = nodes
            .iter()
            .map(|n| (n.admin.clone(), n.id.clone()))
            .collect();
        match cond(handles).await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            if last.is_empty() {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ensure_bucket(client: &AdminClient, name: &str) -> anyhow::Result<api::BucketInfo> {
    let req = api::CreateBucketRequest {
        name: name.to_string(),
        ..Default::default()
    };
    match client
        .post::<_, api::BucketInfo>(paths::BUCKETS, &req)
        .await
    {
        Ok(b) => Ok(b),
        Err(ClientError::Api { status: 409, .. }) => Ok(client.get(&bucket_by_name(name)).await?),
        Err(e) => Err(e.into()),
    }
}

fn bucket_by_name(name: &str) -> String {
    format!("{}?name={}", paths::BUCKETS, urlencoding::encode(name))
}

/// Gives every node without one a storage role in its zone and applies the layout (from
/// node 1). A layout that already has them all (a restart) is left as it is.
async fn assign_roles(nodes: &[Node]) -> anyhow::Result<u64> {
    let admin = &nodes[0].admin;
    let layout: api::LayoutInfo = admin.get(paths::LAYOUT).await?;
    let changes: Vec<api::StagedRoleChange> = nodes
        .iter()
        .filter(|n| {
            !layout
                .roles
                .iter()
                .any(|r| r.node_id == n.id && r.role.capacity.is_some())
        })
        .map(|n| api::StagedRoleChange {
            node_id: n.id.clone(),
            role: Some(api::NodeRole {
                zone: n.zone.clone(),
                capacity: Some(DEV_NODE_CAPACITY),
                tags: vec![],
            }),
        })
        .collect();
    if changes.is_empty() {
        return Ok(layout.version);
    }
    let _: serde_json::Value = admin
        .post(
            paths::LAYOUT_STAGE,
            &api::StageLayoutRequest {
                changes,
                zone_redundancy: None,
            },
        )
        .await
        .context("staging the dev nodes' roles")?;
    let applied: api::ApplyLayoutResponse = admin
        .post(
            paths::LAYOUT_APPLY,
            &api::LayoutVersionRequest {
                version: layout.version + 1,
            },
        )
        .await
        .context("applying the layout")?;
    for m in &applied.messages {
        println!("storaged dev: layout: {m}");
    }
    Ok(applied.layout.version)
}

/// Sends SIGTERM to every running node, waits for them (killing those that take longer than
/// [`STOP_TIMEOUT`]), then drains their output.
async fn stop_all(nodes: &mut [Node]) {
    for node in nodes.iter() {
        if let Some(pid) = node
            .child
            .as_ref()
            .and_then(Child::id)
            .and_then(|p| i32::try_from(p).ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let waits = nodes
        .iter_mut()
        .filter_map(|n| n.child.take())
        .map(|mut c| async move {
            if tokio::time::timeout(STOP_TIMEOUT, c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        });
    futures::future::join_all(waits).await;
    for node in nodes.iter_mut() {
        for task in node.log_tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// What start-up produced: the contents of `dev.env`.
async fn start_up(
    nodes: &mut [Node],
    bucket_name: &str,
    token: &str,
    env_path: &Path,
) -> anyhow::Result<String> {
    let n = nodes.len();
    wait_for(
        nodes,
        "every node to serve its admin API",
        STEP_TIMEOUT,
        |hs| async move {
            for (admin, _) in &hs {
                if !admin.healthy().await {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    for node in nodes.iter_mut() {
        let status: api::ClusterStatus = node.admin.get(paths::STATUS).await?;
        node.id = status.node_id;
    }

    if n > 1 {
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        wait_for(nodes, "node 1 to see every node up", STEP_TIMEOUT, |hs| {
            let ids = ids.clone();
            async move {
                let s: api::ClusterStatus = hs[0]
                    .0
                    .get(paths::STATUS)
                    .await
                    .map_err(|e| e.to_string())?;
                let up = ids
                    .iter()
                    .filter(|id| s.nodes.iter().any(|x| &x.node_id == *id && x.is_up))
                    .count();
                Ok((up == ids.len()).then_some(()))
            }
        })
        .await?;
        let version = assign_roles(nodes).await?;
        wait_for(
            nodes,
            "every node to know the layout and the cluster to be healthy",
            STEP_TIMEOUT,
            |hs| async move {
                for (admin, _) in &hs {
                    let s: api::ClusterStatus =
                        admin.get(paths::STATUS).await.map_err(|e| e.to_string())?;
                    if s.layout_version < version {
                        return Err(format!(
                            "node {} has layout version {}",
                            s.node_id, s.layout_version
                        ));
                    }
                }
                let h: api::ClusterHealth = hs[0]
                    .0
                    .get(paths::HEALTH_V1)
                    .await
                    .map_err(|e| e.to_string())?;
                if h.status == api::HealthStatus::Healthy {
                    Ok(Some(()))
                } else {
                    Err(format!("health {h:?}"))
                }
            },
        )
        .await?;
    }
    // Only now can a node be ready: it needed the layout applied above (a lone node gives
    // itself one at start).
    wait_for(
        nodes,
        "every node to be ready",
        STEP_TIMEOUT,
        |hs| async move {
            for (admin, _) in &hs {
                if !admin.ready().await {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;

    let admin = nodes[0].admin.clone();
    let key: api::KeyInfo = admin
        .post(
            paths::KEYS,
            &api::CreateKeyRequest {
                name: Some("dev".into()),
                allow_create_bucket: true,
            },
        )
        .await?;
    let bucket = ensure_bucket(&admin, bucket_name).await?;
    let all = api::Permissions {
        read: true,
        write: true,
        owner: true,
    };
    let _: api::BucketInfo = admin
        .post(
            paths::PERMISSIONS_ALLOW,
            &api::PermissionRequest {
                bucket_id: bucket.id.clone(),
                access_key_id: key.access_key_id.clone(),
                permissions: all,
            },
        )
        .await?;
    let secret_key = key
        .secret_access_key
        .clone()
        .context("key creation returned no secret")?;
    if n > 1 {
        let key_path = paths::key(&key.access_key_id);
        let bucket_path = bucket_by_name(bucket_name);
        let key_id = key.access_key_id.clone();
        wait_for(
            nodes,
            "every node to know the key and the bucket",
            STEP_TIMEOUT,
            |hs| {
                let (key_path, bucket_path, key_id) =
                    (key_path.clone(), bucket_path.clone(), key_id.clone());
                async move {
                    for (admin, id) in &hs {
                        let k: api::KeyInfo =
                            admin.get(&key_path).await.map_err(|e| e.to_string())?;
                        let b: api::BucketInfo =
                            admin.get(&bucket_path).await.map_err(|e| e.to_string())?;
                        let granted = k
                            .buckets
                            .iter()
                            .any(|p| p.bucket_id == b.id && p.permissions == all)
                            && b.keys.iter().any(|p| p.access_key_id == key_id);
                        if !granted {
                            return Err(format!("node {id} does not see the grant yet"));
                        }
                    }
                    Ok(Some(()))
                }
            },
        )
        .await?;
    }

    let endpoint = nodes[0].s3_endpoint();
    let admin_endpoint = nodes[0].admin_endpoint();
    let mut vars: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", key.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret_key.as_str()),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("BUCKET_NAME", bucket_name),
        ("STORAGED_ADMIN_ENDPOINT", admin_endpoint.as_str()),
        ("STORAGED_ADMIN_TOKEN", token),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for node in nodes.iter() {
        let i = node.index;
        vars.push((format!("NODE{i}_ENDPOINT"), node.s3_endpoint()));
        vars.push((format!("NODE{i}_ADMIN_ENDPOINT"), node.admin_endpoint()));
        vars.push((format!("NODE{i}_ZONE"), node.zone.clone()));
        vars.push((format!("NODE{i}_PID"), node.pid.to_string()));
    }
    let mut env = String::new();
    for (k, v) in &vars {
        writeln!(env, "export {k}={v}")?;
    }
    write_atomic(env_path, &env)?;
    Ok(env)
}

/// Runs the dev supervisor until Ctrl-C / SIGTERM.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    let dir = std::path::absolute(&opts.data_dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let env_path = dir.join("dev.env");
    let _ = std::fs::remove_file(&env_path);

    let n = usize::from(opts.nodes);
    let zones = usize::from(opts.zones);
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut taken = Vec::new();
    let mut plan = Vec::with_capacity(n);
    for index in 1..=n {
        let node_dir = dir.join(format!("node{index}"));
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("creating {}", node_dir.display()))?;
        let ports = pick_ports(index, &node_dir.join("storaged.toml"), &mut taken)?;
        let zone = format!("dc{}", (index - 1) % zones + 1);
        plan.push((index, node_dir, ports, zone));
    }
    let rpc_of = |p: &Ports| format!("127.0.0.1:{}", p.rpc);
    let exe = std::env::current_exe().context("locating the storaged binary")?;
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for (index, node_dir, ports, zone) in &plan {
        let peers: Vec<String> = if *index == 1 {
            plan.iter().skip(1).map(|p| rpc_of(&p.2)).collect()
        } else {
            vec![rpc_of(&plan[0].2)]
        };
        let config_path = node_dir.join("storaged.toml");
        write_atomic(
            &config_path,
            &node_config(&NodeConfig {
                dir: node_dir,
                ports: *ports,
                secret: &secret,
                token: &token,
                zone,
                replication_factor: n.min(3),
                bootstrap_peers: &peers,
            }),
        )?;
        let name = format!("node{index}");
        let mut child = Command::new(&exe)
            .arg("server")
            .arg("-c")
            .arg(&config_path)
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut log_tasks = Vec::new();
        if let Some(out) = child.stdout.take() {
            log_tasks.push(forward_output(name.clone(), out));
        }
        if let Some(err) = child.stderr.take() {
            log_tasks.push(forward_output(name.clone(), err));
        }
        let admin_endpoint = format!("http://127.0.0.1:{}", ports.admin);
        nodes.push(Node {
            index: *index,
            zone: zone.clone(),
            ports: *ports,
            dir: node_dir.clone(),
            admin: AdminClient::new(&admin_endpoint, &token),
            pid: child.id().unwrap_or_default(),
            child: Some(child),
            id: String::new(),
            log_tasks,
        });
    }

    let mut shutdown = std::pin::pin!(crate::server::shutdown_signal());
    let started = tokio::select! {
        r = start_up(&mut nodes, &opts.bucket, &token, &env_path) => Some(r),
        () = &mut shutdown => None,
    };
    let env = match started {
        Some(Ok(env)) => env,
        Some(Err(e)) => {
            stop_all(&mut nodes).await;
            return Err(e);
        }
        None => {
            stop_all(&mut nodes).await;
            return Ok(());
        }
    };

    let zone_list: Vec<&str> = {
        let mut z: BTreeMap<&str, ()> = BTreeMap::new();
        for node in &nodes {
            z.insert(node.zone.as_str(), ());
        }
        z.into_keys().collect()
    };
    println!(
        "storaged dev: {n} node{} ready (zone{} {}), S3 endpoint {}\n",
        if n == 1 { "" } else { "s" },
        if zone_list.len() == 1 { "" } else { "s" },
        zone_list.join(", "),
        nodes[0].s3_endpoint()
    );
    print!("{env}");
    println!(
        "\nThese lines are in {path}. Try:\n\n  source {path}\n  echo hello > hello.txt\n  aws --endpoint-url $AWS_ENDPOINT_URL s3 cp hello.txt s3://$BUCKET_NAME/hello.txt\n  aws --endpoint-url $AWS_ENDPOINT_URL s3 ls s3://$BUCKET_NAME/\n\nNode data lives in {dir}/node<i>. Ctrl-C stops the node{}.",
        if n == 1 { "" } else { "s" },
        path = env_path.display(),
        dir = dir.display(),
    );
    for node in &nodes {
        tracing::debug!(node = %node.name(), id = %node.id, rpc = %node.rpc_addr(), dir = %node.dir.display(), "dev node");
    }

    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                for node in &mut nodes {
                    if let Some(status) = node.poll_exit() {
                        eprintln!(
                            "storaged dev: {} (pid {}) exited ({}); the supervisor keeps running, Ctrl-C to stop",
                            node.name(),
                            node.pid,
                            status.map_or_else(|e| e.to_string(), |s| s.to_string())
                        );
                    }
                }
            }
        }
    }
    stop_all(&mut nodes).await;
    Ok(())
}
