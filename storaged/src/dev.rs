//! `storaged dev`: a ready-to-use local instance for trying the product.
//!
//! The supervisor writes one `storaged.toml` per node, starts each node as its own OS process
//! (`storaged server -c … --exit-with-parent`, so nodes die with the supervisor), waits until
//! they serve, creates an access key and a bucket through the admin API, and only then
//! writes `dev.env` atomically (temp file + rename). It keeps running when a node dies, and
//! stops its nodes on Ctrl-C / SIGTERM.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use storaged_api::{self as api, paths};
use tokio::process::{Child, Command};

use crate::cli::{AdminClient, ClientError};

/// Options of `storaged dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevOptions {
    /// Where node data and `dev.env` go.
    #[arg(long, default_value = ".dev")]
    pub data_dir: PathBuf,
    /// Bucket created for you.
    #[arg(long, default_value = "dev-bucket")]
    pub bucket: String,
}

/// Ports of one node.
struct Ports {
    s3: u16,
    rpc: u16,
    admin: u16,
}

/// `preferred` if free on loopback (TCP and UDP), else any free port.
fn free_port(preferred: u16, taken: &[u16]) -> anyhow::Result<u16> {
    let ok = |p: u16| {
        !taken.contains(&p)
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

fn node_config(dir: &Path, ports: &Ports, secret: &str, token: &str, zone: &str) -> String {
    format!(
        r#"# Written by `storaged dev`.
metadata_dir = "{meta}"
data_dir = "{data}"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
zone = "{zone}"

[s3_api]
api_bind_addr = "127.0.0.1:{s3}"
s3_region = "us-east-1"
root_domain = "localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
        rpc = ports.rpc,
        s3 = ports.s3,
        admin = ports.admin,
    )
}

/// Writes `path` atomically (see `util::fs`).
fn write_atomic(path: &Path, content: &str) -> anyhow::Result<()> {
    crate::util::fs::write_atomically(path, content.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

async fn wait_healthy(client: &AdminClient, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.healthy().await {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("node exited during start-up ({status}); see its log above");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("node did not become healthy within 30 s")
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
        Err(ClientError::Api { status: 409, .. }) => Ok(client
            .get(&format!(
                "{}?name={}",
                paths::BUCKETS,
                urlencoding::encode(name)
            ))
            .await?),
        Err(e) => Err(e.into()),
    }
}

/// Runs the dev supervisor until Ctrl-C / SIGTERM.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    let dir = std::path::absolute(&opts.data_dir)?;
    let node_dir = dir.join("node1");
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    let env_path = dir.join("dev.env");
    let _ = std::fs::remove_file(&env_path);

    let s3 = free_port(3900, &[])?;
    let rpc = free_port(3901, &[s3])?;
    let admin = free_port(3903, &[s3, rpc])?;
    let ports = Ports { s3, rpc, admin };
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let token = hex::encode(rand::random::<[u8; 32]>());
    let zone = "dc1";
    let config_path = node_dir.join("storaged.toml");
    write_atomic(
        &config_path,
        &node_config(&node_dir, &ports, &secret, &token, zone),
    )?;

    let exe = std::env::current_exe().context("locating the storaged binary")?;
    let mut child = Command::new(exe)
        .arg("server")
        .arg("-c")
        .arg(&config_path)
        .arg("--exit-with-parent")
        .kill_on_drop(true)
        .spawn()
        .context("starting node 1")?;
    let pid = child.id().unwrap_or_default();
    let admin_endpoint = format!("http://127.0.0.1:{admin}");
    let client = AdminClient::new(&admin_endpoint, &token);
    wait_healthy(&client, &mut child).await?;

    let key: api::KeyInfo = client
        .post(
            paths::KEYS,
            &api::CreateKeyRequest {
                name: Some("dev".into()),
                allow_create_bucket: true,
            },
        )
        .await?;
    let bucket = ensure_bucket(&client, &opts.bucket).await?;
    let all = api::Permissions {
        read: true,
        write: true,
        owner: true,
    };
    let _: api::BucketInfo = client
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
    let endpoint = format!("http://127.0.0.1:{s3}");
    let mut env = String::new();
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", key.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret_key.as_str()),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("BUCKET_NAME", opts.bucket.as_str()),
        ("STORAGED_ADMIN_ENDPOINT", admin_endpoint.as_str()),
        ("STORAGED_ADMIN_TOKEN", token.as_str()),
        ("NODE1_ENDPOINT", endpoint.as_str()),
        ("NODE1_ZONE", zone),
        ("NODE1_PID", &pid.to_string()),
    ] {
        writeln!(env, "export {k}={v}")?;
    }
    write_atomic(&env_path, &env)?;

    println!("storaged dev: 1 node ready (zone {zone}), S3 endpoint {endpoint}\n");
    print!("{env}");
    println!(
        "\nThese lines are in {path}. Try:\n\n  source {path}\n  echo hello > hello.txt\n  aws --endpoint-url $AWS_ENDPOINT_URL s3 cp hello.txt s3://$BUCKET_NAME/hello.txt\n  aws --endpoint-url $AWS_ENDPOINT_URL s3 ls s3://$BUCKET_NAME/\n\nCtrl-C stops the node.",
        path = env_path.display()
    );

    let mut exited = false;
    loop {
        tokio::select! {
            () = crate::server::shutdown_signal() => break,
            status = child.wait(), if !exited => {
                exited = true;
                eprintln!("storaged dev: node 1 exited ({}); the supervisor keeps running, Ctrl-C to stop", status.map_or_else(|e| e.to_string(), |s| s.to_string()));
            }
        }
    }
    if !exited {
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(35), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    Ok(())
}
