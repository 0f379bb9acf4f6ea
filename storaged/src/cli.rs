//! The admin CLI: `storaged key …`, `bucket …`, `layout …`, `status`, talking to a node's
//! admin API (`STORAGED_ADMIN_ENDPOINT`, `STORAGED_ADMIN_TOKEN`); `--json` for scripts.

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use storaged_api::{self as api, paths};

/// Errors of admin API calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached.
    #[error("cannot reach the admin API at {0}: {1}")]
    Unreachable(String, String),
    /// The node answered with an error.
    #[error("{code}: {message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the admin API: {0}")]
    Decode(String),
}

/// A typed admin API client over plain HTTP.
#[derive(Clone)]
pub struct AdminClient {
    endpoint: String,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:3903`) with a bearer token.
    #[must_use]
    pub fn new(endpoint: &str, token: &str) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.endpoint, path);
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?,
            None => Vec::new(),
        };
        let req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ClientError::Unreachable(url.clone(), e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Unreachable(url.clone(), e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Unreachable(url.clone(), e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let err: api::ErrorResponse =
                serde_json::from_slice(&bytes).unwrap_or(api::ErrorResponse {
                    code: status.canonical_reason().unwrap_or("Error").to_string(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                });
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: err.code,
                message: err.message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GET and decode.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(http::Method::GET, path, None).await
    }

    /// POST a JSON body and decode.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(http::Method::POST, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.call::<(), serde_json::Value>(http::Method::DELETE, path, None)
            .await
    }

    /// Whether `/health` answers.
    pub async fn healthy(&self) -> bool {
        let Ok(req) = http::Request::get(format!("{}{}", self.endpoint, paths::HEALTH))
            .body(Full::new(Bytes::new()))
        else {
            return false;
        };
        matches!(self.http.request(req).await, Ok(r) if r.status().is_success())
    }

    /// Whether `/ready` answers 200 (a layout role and a quorum for its partitions).
    pub async fn ready(&self) -> bool {
        let Ok(req) = http::Request::get(format!("{}{}", self.endpoint, paths::READY))
            .body(Full::new(Bytes::new()))
        else {
            return false;
        };
        matches!(self.http.request(req).await, Ok(r) if r.status().is_success())
    }
}

/// Where to reach the admin API.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Admin API endpoint.
    #[arg(
        long,
        env = "STORAGED_ADMIN_ENDPOINT",
        default_value = "http://127.0.0.1:3903",
        global = true
    )]
    pub admin_endpoint: String,
    /// Admin bearer token.
    #[arg(
        long,
        env = "STORAGED_ADMIN_TOKEN",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: String,
    /// Print JSON (stable, for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

/// `storaged key …`
#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key (prints its secret once).
    Create {
        /// Friendly name.
        #[arg(long)]
        name: Option<String>,
        /// Allow the key to create buckets through S3.
        #[arg(long)]
        create_bucket: bool,
    },
    /// Import a key whose id and secret are known.
    Import {
        /// Access key id.
        #[arg(long)]
        id: String,
        /// Secret access key.
        #[arg(long)]
        secret: String,
        /// Friendly name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys.
    List,
    /// Show a key.
    Info {
        /// Access key id.
        id: String,
        /// Include the secret.
        #[arg(long)]
        show_secret: bool,
    },
    /// Delete a key.
    Delete {
        /// Access key id.
        id: String,
    },
}

/// Rights for allow/deny.
#[derive(Args, Debug, Clone, Copy)]
pub struct PermFlags {
    /// Read.
    #[arg(long)]
    pub read: bool,
    /// Write.
    #[arg(long)]
    pub write: bool,
    /// Owner.
    #[arg(long)]
    pub owner: bool,
}

/// `storaged bucket …`
#[derive(Subcommand, Debug)]
pub enum BucketCmd {
    /// Create a bucket.
    Create {
        /// Bucket name.
        name: String,
    },
    /// List buckets.
    List,
    /// Show a bucket (by name or id).
    Info {
        /// Bucket name or id.
        name: String,
    },
    /// Delete an empty bucket.
    Delete {
        /// Bucket name or id.
        name: String,
    },
    /// Grant a key rights on a bucket.
    Allow {
        /// Bucket name or id.
        name: String,
        /// Access key id.
        #[arg(long)]
        key: String,
        #[command(flatten)]
        perms: PermFlags,
    },
    /// Revoke rights of a key on a bucket.
    Deny {
        /// Bucket name or id.
        name: String,
        /// Access key id.
        #[arg(long)]
        key: String,
        #[command(flatten)]
        perms: PermFlags,
    },
    /// Set quotas (omit a flag for unlimited).
    SetQuotas {
        /// Bucket name or id.
        name: String,
        /// Maximum bytes.
        #[arg(long)]
        max_size: Option<u64>,
        /// Maximum objects.
        #[arg(long)]
        max_objects: Option<u64>,
    },
}

/// `storaged layout …`
#[derive(Subcommand, Debug)]
pub enum LayoutCmd {
    /// Show the current and staged layout, and what applying would move.
    Show,
    /// Stage a role for a node: a zone and a capacity, or a gateway.
    Assign {
        /// Node id, or a unique prefix of it (see `storaged status`).
        node: String,
        /// Zone (site) of the node.
        #[arg(long)]
        zone: String,
        /// Bytes offered for data, e.g. `500G`, `2TiB`, `1000000`.
        #[arg(long, conflicts_with = "gateway", required_unless_present = "gateway")]
        capacity: Option<String>,
        /// Serve requests but store nothing.
        #[arg(long)]
        gateway: bool,
        /// Free-form tags.
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Stage the removal of a node from the layout.
    Remove {
        /// Node id, or a unique prefix of it.
        node: String,
    },
    /// Apply the staged changes as the next version.
    Apply {
        /// The version to create: the current version + 1 (guards against two admins
        /// applying concurrently).
        #[arg(long)]
        version: u64,
    },
    /// Stage how many zones each partition must span.
    ZoneRedundancy {
        /// A number of zones, or `max` (as many as there are, the default).
        value: String,
    },
    /// Discard the staged changes.
    Revert {
        /// The current version.
        #[arg(long)]
        version: u64,
    },
}

/// Parses a capacity such as `10G`, `500MiB` or `1000000` into bytes.
///
/// # Errors
/// A message naming the value when it is not a size, or is zero.
pub fn parse_capacity(s: &str) -> anyhow::Result<u64> {
    let bytes = s
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|e| anyhow::anyhow!("--capacity {s:?} is not a size like 500G or 2TiB: {e}"))?
        .as_u64();
    if bytes == 0 {
        anyhow::bail!(
            "--capacity must be more than 0 (use --gateway for a node that stores nothing)"
        );
    }
    Ok(bytes)
}

/// The full id of the node whose id starts with `prefix`, among those `status` knows or
/// the layout names.
async fn resolve_node(client: &AdminClient, prefix: &str) -> anyhow::Result<String> {
    let prefix = prefix.to_ascii_lowercase();
    let s: api::ClusterStatus = client.get(paths::STATUS).await?;
    let l: api::LayoutInfo = client.get(paths::LAYOUT).await?;
    let mut ids: Vec<String> = s.nodes.into_iter().map(|n| n.node_id).collect();
    ids.extend(l.roles.into_iter().map(|r| r.node_id));
    ids.sort();
    ids.dedup();
    let matches: Vec<&String> = ids.iter().filter(|id| id.starts_with(&prefix)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => anyhow::bail!("no known node id starts with {prefix:?} (see `storaged status`)"),
        many => anyhow::bail!(
            "{} node ids start with {prefix:?}: give more digits",
            many.len()
        ),
    }
}

/// The first 16 hex digits of a node id: enough to tell nodes apart in listings.
fn short_id(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

fn capacity_label(capacity: u64) -> String {
    format!("capacity={capacity}")
}

fn layout_human(l: &api::LayoutInfo) -> String {
    let mut out = format!(
        "Layout version {}
",
        l.version
    );
    for r in &l.roles {
        out.push_str(&format!(
            "  {}  zone={}  {}\n",
            short_id(&r.node_id),
            r.role.zone,
            r.role
                .capacity
                .map_or_else(|| "gateway".to_owned(), capacity_label),
        ));
    }
    if l.staged.is_empty() {
        out.push_str("No staged changes.\n");
    } else {
        out.push_str(&format!(
            "Staged changes ({} partitions would move; apply with --version {}):\n",
            l.staged_partition_moves,
            l.version + 1
        ));
        for c in &l.staged {
            let what = match &c.role {
                None => "remove".to_owned(),
                Some(r) => format!(
                    "zone={} {}",
                    r.zone,
                    r.capacity
                        .map_or_else(|| "gateway".to_owned(), capacity_label)
                ),
            };
            out.push_str(&format!("  {}  {what}\n", short_id(&c.node_id)));
        }
    }
    out
}

fn print<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

fn key_human(k: &api::KeyInfo) -> String {
    let mut s = format!("Key ID: {}\nName: {}\n", k.access_key_id, k.name);
    if let Some(secret) = &k.secret_access_key {
        s.push_str(&format!("Secret key: {secret}\n"));
    }
    s.push_str(&format!("Can create buckets: {}\n", k.allow_create_bucket));
    for b in &k.buckets {
        let p = b.permissions;
        s.push_str(&format!(
            "  {} r={} w={} o={}\n",
            b.bucket_name.as_deref().unwrap_or(&b.bucket_id),
            p.read,
            p.write,
            p.owner
        ));
    }
    s
}

fn bucket_human(b: &api::BucketInfo) -> String {
    let mut s = format!(
        "Bucket: {}\nID: {}\nCreated: {}\nObjects: {}\nBytes: {}\nUnfinished uploads: {}\n",
        b.name, b.id, b.created, b.objects, b.bytes, b.unfinished_uploads
    );
    for k in &b.keys {
        let p = k.permissions;
        s.push_str(&format!(
            "  {} ({}) r={} w={} o={}\n",
            k.access_key_id, k.name, p.read, p.write, p.owner
        ));
    }
    s
}

/// Runs a key subcommand.
pub async fn key(c: &Connection, cmd: KeyCmd) -> anyhow::Result<()> {
    let client = AdminClient::new(&c.admin_endpoint, &c.admin_token);
    match cmd {
        KeyCmd::Create {
            name,
            create_bucket,
        } => {
            let k: api::KeyInfo = client
                .post(
                    paths::KEYS,
                    &api::CreateKeyRequest {
                        name,
                        allow_create_bucket: create_bucket,
                    },
                )
                .await?;
            print(c.json, &k, key_human)
        }
        KeyCmd::Import { id, secret, name } => {
            let k: api::KeyInfo = client
                .post(
                    paths::KEYS_IMPORT,
                    &api::ImportKeyRequest {
                        access_key_id: id,
                        secret_access_key: secret,
                        name,
                    },
                )
                .await?;
            print(c.json, &k, key_human)
        }
        KeyCmd::List => {
            let l: Vec<api::KeySummary> = client.get(paths::KEYS).await?;
            print(c.json, &l, |l| {
                l.iter()
                    .map(|k| format!("{}\t{}", k.access_key_id, k.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        KeyCmd::Info { id, show_secret } => {
            let path = format!(
                "{}{}",
                paths::key(&id),
                if show_secret { "?show_secret=true" } else { "" }
            );
            let k: api::KeyInfo = client.get(&path).await?;
            print(c.json, &k, key_human)
        }
        KeyCmd::Delete { id } => {
            let v = client.delete(&paths::key(&id)).await?;
            print(c.json, &v, |_| format!("Key {id} deleted"))
        }
    }
}

/// Runs a bucket subcommand.
pub async fn bucket(c: &Connection, cmd: BucketCmd) -> anyhow::Result<()> {
    let client = AdminClient::new(&c.admin_endpoint, &c.admin_token);
    let perm_req = |b: &api::BucketInfo, key: String, p: PermFlags| api::PermissionRequest {
        bucket_id: b.id.clone(),
        access_key_id: key,
        permissions: api::Permissions {
            read: p.read,
            write: p.write,
            owner: p.owner,
        },
    };
    match cmd {
        BucketCmd::Create { name } => {
            let b: api::BucketInfo = client
                .post(
                    paths::BUCKETS,
                    &api::CreateBucketRequest {
                        name,
                        ..Default::default()
                    },
                )
                .await?;
            print(c.json, &b, bucket_human)
        }
        BucketCmd::List => {
            let l: Vec<api::BucketSummary> = client.get(paths::BUCKETS).await?;
            print(c.json, &l, |l| {
                l.iter()
                    .map(|b| format!("{}\t{}", b.id, b.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        BucketCmd::Info { name } => {
            let b: api::BucketInfo = client.get(&paths::bucket(&name)).await?;
            print(c.json, &b, bucket_human)
        }
        BucketCmd::Delete { name } => {
            let v = client.delete(&paths::bucket(&name)).await?;
            print(c.json, &v, |_| format!("Bucket {name} deleted"))
        }
        BucketCmd::Allow { name, key, perms } => {
            let b: api::BucketInfo = client.get(&paths::bucket(&name)).await?;
            let b: api::BucketInfo = client
                .post(paths::PERMISSIONS_ALLOW, &perm_req(&b, key, perms))
                .await?;
            print(c.json, &b, bucket_human)
        }
        BucketCmd::Deny { name, key, perms } => {
            let b: api::BucketInfo = client.get(&paths::bucket(&name)).await?;
            let b: api::BucketInfo = client
                .post(paths::PERMISSIONS_DENY, &perm_req(&b, key, perms))
                .await?;
            print(c.json, &b, bucket_human)
        }
        BucketCmd::SetQuotas {
            name,
            max_size,
            max_objects,
        } => {
            let b: api::BucketInfo = client.get(&paths::bucket(&name)).await?;
            let req = api::UpdateBucketRequest {
                quotas: Some(api::Quotas {
                    max_size,
                    max_objects,
                }),
                owner_tag: None,
            };
            let b: api::BucketInfo = client.post(&paths::bucket(&b.id), &req).await?;
            print(c.json, &b, bucket_human)
        }
    }
}

/// Runs a layout subcommand.
pub async fn layout(c: &Connection, cmd: LayoutCmd) -> anyhow::Result<()> {
    let client = AdminClient::new(&c.admin_endpoint, &c.admin_token);
    match cmd {
        LayoutCmd::Show => {
            let l: api::LayoutInfo = client.get(paths::LAYOUT).await?;
            print(c.json, &l, layout_human)
        }
        LayoutCmd::Assign {
            node,
            zone,
            capacity,
            gateway,
            tag,
        } => {
            let capacity = match (capacity, gateway) {
                (Some(c), false) => Some(parse_capacity(&c)?),
                _ => None,
            };
            let node_id = resolve_node(&client, &node).await?;
            let req = api::StageLayoutRequest {
                changes: vec![api::StagedRoleChange {
                    node_id,
                    role: Some(api::NodeRole {
                        zone,
                        capacity,
                        tags: tag,
                    }),
                }],
                zone_redundancy: None,
            };
            let l: api::LayoutInfo = client.post(paths::LAYOUT_STAGE, &req).await?;
            print(c.json, &l, layout_human)
        }
        LayoutCmd::Remove { node } => {
            let node_id = resolve_node(&client, &node).await?;
            let req = api::StageLayoutRequest {
                changes: vec![api::StagedRoleChange {
                    node_id,
                    role: None,
                }],
                zone_redundancy: None,
            };
            let l: api::LayoutInfo = client.post(paths::LAYOUT_STAGE, &req).await?;
            print(c.json, &l, layout_human)
        }
        LayoutCmd::ZoneRedundancy { value } => {
            let zr = if value.eq_ignore_ascii_case("max") || value.eq_ignore_ascii_case("maximum") {
                api::ZoneRedundancy::Maximum
            } else {
                let n: u64 = value.parse().map_err(|_| {
                    anyhow::anyhow!("zone redundancy {value:?} must be a number of zones or `max`")
                })?;
                api::ZoneRedundancy::AtLeast(n)
            };
            let req = api::StageLayoutRequest {
                changes: Vec::new(),
                zone_redundancy: Some(zr),
            };
            let l: api::LayoutInfo = client.post(paths::LAYOUT_STAGE, &req).await?;
            print(c.json, &l, layout_human)
        }
        LayoutCmd::Apply { version } => {
            let req = api::LayoutVersionRequest { version };
            let r: api::ApplyLayoutResponse = client.post(paths::LAYOUT_APPLY, &req).await?;
            print(c.json, &r, |r| {
                format!("{}{}\n", layout_human(&r.layout), r.messages.join("\n"))
            })
        }
        LayoutCmd::Revert { version } => {
            let req = api::LayoutVersionRequest { version };
            let l: api::LayoutInfo = client.post(paths::LAYOUT_REVERT, &req).await?;
            print(c.json, &l, layout_human)
        }
    }
}

/// `storaged status`.
pub async fn status(c: &Connection) -> anyhow::Result<()> {
    let client = AdminClient::new(&c.admin_endpoint, &c.admin_token);
    let s: api::ClusterStatus = client.get(paths::STATUS).await?;
    let h: api::ClusterHealth = client.get(paths::HEALTH_V1).await?;
    let both = serde_json::json!({ "status": s, "health": h });
    print(c.json, &both, |_| {
        let mut out = format!(
            "Layout version: {}\nHealth: {:?}\n",
            s.layout_version, h.status
        );
        for n in &s.nodes {
            out.push_str(&format!(
                "  {}  {}  zone={}  {}  {}\n",
                short_id(&n.node_id),
                n.hostname,
                n.zone.as_deref().unwrap_or("-"),
                n.role.as_ref().map_or_else(
                    || "no role".to_owned(),
                    |r| r
                        .capacity
                        .map_or_else(|| "gateway".to_owned(), capacity_label)
                ),
                if n.is_up { "up" } else { "DOWN" }
            ));
        }
        out.push_str(&format!(
            "Storage nodes up: {}/{}\nPartitions: {} with a write quorum, {} fully replicated, {} not fully replicated\n",
            h.storage_nodes_up,
            h.storage_nodes,
            h.partitions_quorum,
            h.partitions_all_ok,
            h.partitions_not_fully_replicated
        ));
        out
    })
}

#[cfg(test)]
mod tests {
    use super::parse_capacity;

    #[test]
    fn capacities_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_capacity("1000000").unwrap(), 1_000_000);
        assert_eq!(parse_capacity("10G").unwrap(), 10_000_000_000);
        assert_eq!(parse_capacity("2 GiB").unwrap(), 2 << 30);
        for bad in ["", "ten", "0", "-5G"] {
            let e = parse_capacity(bad).expect_err(bad);
            assert!(e.to_string().contains("capacity"), "{e}");
        }
    }
}
