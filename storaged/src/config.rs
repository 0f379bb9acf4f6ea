//! `storaged.toml`: the keys of DESIGN.md, `STORAGED_<KEY>` environment overrides, `*_file`
//! secrets, validated once at start with errors that name the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How many replicas a read or write waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyMode {
    /// Read and write quorums intersect: read-after-write holds.
    #[default]
    Consistent,
    /// Reads from one replica; writes still at quorum.
    Degraded,
    /// Reads and writes from one replica.
    Dangerous,
}

/// The whole daemon configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// redb database, node key, peer list.
    pub metadata_dir: PathBuf,
    /// Chunk files.
    pub data_dir: PathBuf,
    /// Copies of every partition.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    /// Quorum behaviour.
    #[serde(default)]
    pub consistency_mode: ConsistencyMode,
    /// Chunk size in bytes, [`MIN_BLOCK_SIZE`] to [`MAX_BLOCK_SIZE`].
    #[serde(default = "default_block_size")]
    pub block_size: usize,
    /// zstd level for stored chunks; 0 disables compression.
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// QUIC listen address.
    #[serde(default = "default_rpc_bind_addr")]
    pub rpc_bind_addr: SocketAddr,
    /// Address peers should use to reach this node.
    #[serde(default)]
    pub rpc_public_addr: Option<String>,
    /// Cluster secret, 64 hex characters.
    #[serde(default)]
    pub rpc_secret: Option<String>,
    /// File holding the cluster secret (Kubernetes Secret mount).
    #[serde(default)]
    pub rpc_secret_file: Option<PathBuf>,
    /// Peers to contact at start (host:port or DNS names).
    #[serde(default)]
    pub bootstrap_peers: Vec<String>,
    /// This node's zone, as reported to the admin API.
    #[serde(default)]
    pub zone: Option<String>,
    /// S3 API endpoint.
    #[serde(default)]
    pub s3_api: S3ApiConfig,
    /// Static website endpoint (optional).
    #[serde(default)]
    pub s3_web: Option<WebConfig>,
    /// Admin API endpoint.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Background worker intervals and delays.
    #[serde(default)]
    pub background: BackgroundConfig,
    /// Connection and request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[s3_api]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3ApiConfig {
    /// Listen address.
    #[serde(default = "default_s3_bind_addr")]
    pub api_bind_addr: SocketAddr,
    /// Region name clients must sign for.
    #[serde(default = "default_region")]
    pub s3_region: String,
    /// Domain under which `bucket.<root_domain>` Host headers select a bucket.
    #[serde(default)]
    pub root_domain: Option<String>,
}

impl Default for S3ApiConfig {
    fn default() -> Self {
        Self {
            api_bind_addr: default_s3_bind_addr(),
            s3_region: default_region(),
            root_domain: None,
        }
    }
}

/// `[s3_web]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Listen address.
    pub bind_addr: SocketAddr,
    /// Domain under which `bucket.<root_domain>` is served.
    pub root_domain: String,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address.
    #[serde(default = "default_admin_bind_addr")]
    pub api_bind_addr: SocketAddr,
    /// Bearer token for `/v1/`.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// File holding the bearer token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Bearer token for `/metrics` (open when unset).
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// File holding the metrics token.
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            api_bind_addr: default_admin_bind_addr(),
            admin_token: None,
            admin_token_file: None,
            metrics_token: None,
            metrics_token_file: None,
        }
    }
}

/// `[background]`: every delay and interval, so tests can run them in seconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundConfig {
    /// How long an unreferenced chunk is kept before deletion (seconds).
    #[serde(default = "default_block_gc_delay")]
    pub block_gc_delay_secs: u64,
    /// How often the chunk GC looks for expired chunks (seconds).
    #[serde(default = "default_gc_interval")]
    pub gc_interval_secs: u64,
    /// Seconds between scrub passes that re-verify every stored chunk.
    #[serde(default = "default_scrub_interval")]
    pub scrub_interval_secs: u64,
    /// Milliseconds the scrub pauses between chunks (keeps it gentle on small machines).
    #[serde(default = "default_scrub_pause")]
    pub scrub_pause_ms: u64,
    /// How often each peer is pinged (milliseconds).
    #[serde(default = "default_ping_interval")]
    pub ping_interval_ms: u64,
    /// How long a ping may take before it counts as missed (milliseconds).
    #[serde(default = "default_ping_interval")]
    pub ping_timeout_ms: u64,
    /// Missed pings in a row before a peer is considered down.
    #[serde(default = "default_failures_before_down")]
    pub failures_before_down: u32,
    /// How often DNS names in `bootstrap_peers` are resolved again (seconds).
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh_secs: u64,
    /// Seconds between anti-entropy passes over every table partition this node holds:
    /// the backstop that repairs replicas read repair never touched (cold keys, a node
    /// that was down through many writes).
    #[serde(default = "default_anti_entropy_interval")]
    pub anti_entropy_interval_secs: u64,
    /// Seconds before a chunk that could not be fetched or handed over is retried (doubling
    /// up to ten minutes), and between idle looks at the resync queue.
    #[serde(default = "default_resync_retry")]
    pub resync_retry_secs: u64,
    /// Seconds a table tombstone (a deleted version, block reference, upload, an object
    /// left with only a delete marker, an alias pointing nowhere) is kept after it was
    /// stored before the tombstone GC may remove it from every replica. It bounds how late
    /// a write older than the deletion may still arrive (a retried request, a slow queue)
    /// without resurrecting what was deleted; the GC runs every `gc_interval_secs`.
    #[serde(default = "default_tombstone_gc_delay")]
    pub tombstone_gc_delay_secs: u64,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self {
            block_gc_delay_secs: default_block_gc_delay(),
            gc_interval_secs: default_gc_interval(),
            scrub_interval_secs: default_scrub_interval(),
            scrub_pause_ms: default_scrub_pause(),
            ping_interval_ms: default_ping_interval(),
            ping_timeout_ms: default_ping_interval(),
            failures_before_down: default_failures_before_down(),
            dns_refresh_secs: default_dns_refresh(),
            anti_entropy_interval_secs: default_anti_entropy_interval(),
            resync_retry_secs: default_resync_retry(),
            tombstone_gc_delay_secs: default_tombstone_gc_delay(),
        }
    }
}

impl BackgroundConfig {
    /// [`Self::block_gc_delay_secs`] as a duration.
    #[must_use]
    pub fn block_gc_delay(&self) -> Duration {
        Duration::from_secs(self.block_gc_delay_secs)
    }

    /// [`Self::anti_entropy_interval_secs`] as a duration.
    #[must_use]
    pub fn anti_entropy_interval(&self) -> Duration {
        Duration::from_secs(self.anti_entropy_interval_secs)
    }

    /// [`Self::tombstone_gc_delay_secs`] as a duration (what the tombstone GC worker takes).
    #[must_use]
    pub fn tombstone_gc_delay(&self) -> Duration {
        Duration::from_secs(self.tombstone_gc_delay_secs)
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent S3 connections; more wait in the accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client may take to send its request headers.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// Bytes of object data this node may hold in memory at once (chunk buffers of PUTs
    /// and GETs, transfers to slow replicas, frames from peers); past it, requests wait.
    #[serde(default = "default_memory_budget")]
    pub memory_budget_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_read_timeout_secs: default_header_timeout(),
            memory_budget_bytes: default_memory_budget(),
        }
    }
}

fn default_replication_factor() -> usize {
    1
}
/// The smallest `block_size`: smaller chunks cost more metadata than they save.
pub const MIN_BLOCK_SIZE: usize = 64 * 1024;

/// The largest `block_size`: the largest chunk a replica accepts from a peer
/// (`block::MAX_BLOCK_LEN`, which asserts it is at least this), so that every chunk this node
/// cuts can be stored on its replicas.
pub const MAX_BLOCK_SIZE: usize = 32 * 1024 * 1024;

fn default_block_size() -> usize {
    1024 * 1024
}
fn default_compression_level() -> i32 {
    1
}
fn default_rpc_bind_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 3901))
}
fn default_s3_bind_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 3900))
}
fn default_admin_bind_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 3903))
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_block_gc_delay() -> u64 {
    600
}
fn default_gc_interval() -> u64 {
    60
}
fn default_scrub_interval() -> u64 {
    7 * 24 * 3600
}
fn default_scrub_pause() -> u64 {
    10
}
fn default_ping_interval() -> u64 {
    5000
}
fn default_failures_before_down() -> u32 {
    3
}
fn default_dns_refresh() -> u64 {
    60
}
fn default_anti_entropy_interval() -> u64 {
    600
}
fn default_resync_retry() -> u64 {
    10
}
fn default_tombstone_gc_delay() -> u64 {
    86_400
}
fn default_memory_budget() -> usize {
    crate::util::budget::DEFAULT_BUDGET
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_timeout() -> u64 {
    10
}

/// The type of a config key, for parsing environment overrides.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    List,
}

/// Every key an environment variable may override: (section, key, kind).
const ENV_KEYS: &[(&str, &str, Kind)] = &[
    ("", "metadata_dir", Kind::Str),
    ("", "data_dir", Kind::Str),
    ("", "replication_factor", Kind::Int),
    ("", "consistency_mode", Kind::Str),
    ("", "block_size", Kind::Int),
    ("", "compression_level", Kind::Int),
    ("", "rpc_bind_addr", Kind::Str),
    ("", "rpc_public_addr", Kind::Str),
    ("", "rpc_secret", Kind::Str),
    ("", "rpc_secret_file", Kind::Str),
    ("", "bootstrap_peers", Kind::List),
    ("", "zone", Kind::Str),
    ("s3_api", "api_bind_addr", Kind::Str),
    ("s3_api", "s3_region", Kind::Str),
    ("s3_api", "root_domain", Kind::Str),
    ("s3_web", "bind_addr", Kind::Str),
    ("s3_web", "root_domain", Kind::Str),
    ("admin", "api_bind_addr", Kind::Str),
    ("admin", "admin_token", Kind::Str),
    ("admin", "admin_token_file", Kind::Str),
    ("admin", "metrics_token", Kind::Str),
    ("admin", "metrics_token_file", Kind::Str),
    ("background", "block_gc_delay_secs", Kind::Int),
    ("background", "gc_interval_secs", Kind::Int),
    ("background", "scrub_interval_secs", Kind::Int),
    ("background", "scrub_pause_ms", Kind::Int),
    ("background", "ping_interval_ms", Kind::Int),
    ("background", "ping_timeout_ms", Kind::Int),
    ("background", "failures_before_down", Kind::Int),
    ("background", "dns_refresh_secs", Kind::Int),
    ("background", "anti_entropy_interval_secs", Kind::Int),
    ("background", "resync_retry_secs", Kind::Int),
    ("background", "tombstone_gc_delay_secs", Kind::Int),
    ("limits", "max_connections", Kind::Int),
    ("limits", "memory_budget_bytes", Kind::Int),
    ("limits", "header_read_timeout_secs", Kind::Int),
];

/// The environment variable that overrides `section.key`.
fn env_name(section: &str, key: &str) -> String {
    if section.is_empty() {
        format!("STORAGED_{}", key.to_uppercase())
    } else {
        format!("STORAGED_{}_{}", section.to_uppercase(), key.to_uppercase())
    }
}

impl Config {
    /// The cluster secret as bytes (validated at load time: 64 hex characters).
    #[must_use]
    pub fn rpc_secret_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(s) = &self.rpc_secret {
            // Validated in `validate`; a malformed secret cannot reach here.
            let _ = hex::decode_to_slice(s, &mut out);
        }
        out
    }

    /// Reads `path`, applies the environment overrides, resolves `*_file` secrets, validates.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_and_env(&text, std::env::vars())
    }

    /// Parses TOML text with the given environment (testable without touching the process).
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        for (section, key, kind) in ENV_KEYS {
            let name = env_name(section, key);
            let Some(raw) = env.get(&name) else { continue };
            let value =
                match kind {
                    Kind::Str => toml::Value::String(raw.clone()),
                    Kind::Int => toml::Value::Integer(raw.trim().parse().map_err(|_| {
                        Error::Config(format!("{name}: `{raw}` is not an integer"))
                    })?),
                    Kind::List => toml::Value::Array(
                        raw.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| toml::Value::String(s.to_string()))
                            .collect(),
                    ),
                };
            let target = if section.is_empty() {
                &mut table
            } else {
                let entry = table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                entry
                    .as_table_mut()
                    .ok_or_else(|| Error::Config(format!("{section}: must be a table")))?
            };
            target.insert((*key).to_string(), value);
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        config.resolve_files()?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration as TOML holding only the keys whose values differ from their
    /// defaults (plus the two required directories), so that a config a tool generates from
    /// the typed struct (benchmarks start plain nodes with it) shows what was chosen and no
    /// tuning key it did not mean to set. It loads back to an equal configuration.
    pub fn to_minimal_toml(&self) -> Result<String> {
        let err = |e: &dyn std::fmt::Display| Error::Config(format!("rendering the config: {e}"));
        let mut mine = toml::Table::try_from(self).map_err(|e| err(&e))?;
        let mut required = toml::Table::new();
        for key in ["metadata_dir", "data_dir"] {
            if let Some(v) = mine.get(key) {
                required.insert(key.to_string(), v.clone());
            }
        }
        let defaults: Config = toml::Value::Table(required)
            .try_into()
            .map_err(|e: toml::de::Error| err(&e))?;
        let defaults = toml::Table::try_from(&defaults).map_err(|e| err(&e))?;
        fn prune(mine: &mut toml::Table, defaults: &toml::Table, keep: &[&str]) {
            mine.retain(|key, value| {
                if keep.contains(&key) {
                    return true;
                }
                match (value, defaults.get(key)) {
                    (toml::Value::Table(t), Some(toml::Value::Table(d))) => {
                        prune(t, d, &[]);
                        !t.is_empty()
                    }
                    (v, Some(d)) => v != d,
                    (_, None) => true,
                }
            });
        }
        prune(&mut mine, &defaults, &["metadata_dir", "data_dir"]);
        toml::to_string(&mine).map_err(|e| err(&e))
    }

    fn resolve_files(&mut self) -> Result<()> {
        fn read(field: &str, path: &Path) -> Result<String> {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| Error::Config(format!("{field}: cannot read {}: {e}", path.display())))
        }
        if let Some(p) = &self.rpc_secret_file {
            if self.rpc_secret.is_some() {
                return Err(Error::Config(
                    "rpc_secret and rpc_secret_file: set only one".into(),
                ));
            }
            self.rpc_secret = Some(read("rpc_secret_file", p)?);
        }
        if let Some(p) = &self.admin.admin_token_file {
            if self.admin.admin_token.is_some() {
                return Err(Error::Config(
                    "admin.admin_token and admin.admin_token_file: set only one".into(),
                ));
            }
            self.admin.admin_token = Some(read("admin.admin_token_file", p)?);
        }
        if let Some(p) = &self.admin.metrics_token_file {
            if self.admin.metrics_token.is_some() {
                return Err(Error::Config(
                    "admin.metrics_token and admin.metrics_token_file: set only one".into(),
                ));
            }
            self.admin.metrics_token = Some(read("admin.metrics_token_file", p)?);
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("{field}: {why}")));
        match &self.rpc_secret {
            None => return bad("rpc_secret", "missing (set rpc_secret or rpc_secret_file)"),
            Some(s) if s.len() != 64 || hex::decode(s).is_err() => {
                return bad("rpc_secret", "must be 64 hex characters (32 bytes)");
            }
            Some(_) => {}
        }
        if self.replication_factor == 0 || self.replication_factor > 7 {
            return bad("replication_factor", "must be between 1 and 7");
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size) {
            return bad(
                "block_size",
                &format!(
                    "must be between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE} bytes (the largest \
                     chunk a replica accepts), got {}",
                    self.block_size
                ),
            );
        }
        if !(0..=19).contains(&self.compression_level) {
            return bad("compression_level", "must be between 0 (off) and 19");
        }
        if self.metadata_dir.as_os_str().is_empty() {
            return bad("metadata_dir", "must not be empty");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if self.s3_api.s3_region.is_empty() {
            return bad("s3_api.s3_region", "must not be empty");
        }
        let b = &self.background;
        if b.scrub_interval_secs == 0 {
            return bad("background.scrub_interval_secs", "must be at least 1");
        }
        if b.anti_entropy_interval_secs == 0 {
            return bad(
                "background.anti_entropy_interval_secs",
                "must be at least 1",
            );
        }
        if b.ping_interval_ms == 0 || b.ping_timeout_ms == 0 || b.failures_before_down == 0 {
            return bad(
                "background.ping_interval_ms / ping_timeout_ms / failures_before_down",
                "must be at least 1",
            );
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1");
        }
        let budget = self.limits.memory_budget_bytes;
        if !(crate::util::budget::MIN_BUDGET..=crate::util::budget::MAX_BUDGET).contains(&budget) {
            return bad(
                "limits.memory_budget_bytes",
                "must be between 4194304 (4 MiB) and 4294967295 (4 GiB)",
            );
        }
        if self.limits.header_read_timeout_secs == 0 {
            return bad("limits.header_read_timeout_secs", "must be at least 1");
        }
        if matches!(&self.admin.admin_token, Some(t) if t.is_empty()) {
            return bad("admin.admin_token", "must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn base() -> String {
        format!("metadata_dir = \"/m\"\ndata_dir = \"/d\"\nrpc_secret = \"{SECRET}\"\n")
    }

    #[test]
    fn minimal_toml_keeps_only_what_differs_and_loads_back() {
        let text = format!(
            "{}replication_factor = 3\nzone = \"dc2\"\n[admin]\nadmin_token = \"t\"\n",
            base()
        );
        let c = Config::from_toml_and_env(&text, Vec::new()).unwrap();
        let out = c.to_minimal_toml().unwrap();
        let table: toml::Table = toml::from_str(&out).unwrap();
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "admin",
                "data_dir",
                "metadata_dir",
                "replication_factor",
                "rpc_secret",
                "zone"
            ],
            "{out}"
        );
        assert_eq!(table["admin"].as_table().unwrap().len(), 1, "{out}");
        let back = Config::from_toml_and_env(&out, Vec::new()).unwrap();
        assert_eq!(back.replication_factor, 3);
        assert_eq!(back.zone.as_deref(), Some("dc2"));
        assert_eq!(back.block_size, c.block_size);
    }

    fn err(text: &str, env: Vec<(&str, &str)>) -> String {
        let env = env.into_iter().map(|(a, b)| (a.to_string(), b.to_string()));
        match Config::from_toml_and_env(text, env) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml_and_env(&base(), vec![]).expect("valid");
        assert_eq!(c.replication_factor, 1);
        assert_eq!(c.s3_api.api_bind_addr.port(), 3900);
        assert_eq!(c.admin.api_bind_addr.port(), 3903);
        assert_eq!(c.s3_api.s3_region, "us-east-1");
        assert_eq!(c.block_size, 1 << 20);
    }

    #[test]
    fn env_overrides_nested_and_list_keys() {
        let env = vec![
            (
                "STORAGED_S3_API_API_BIND_ADDR".to_string(),
                "127.0.0.1:9000".to_string(),
            ),
            (
                "STORAGED_BOOTSTRAP_PEERS".to_string(),
                "a:3901, b:3901".to_string(),
            ),
            ("STORAGED_ZONE".to_string(), "paris".to_string()),
            ("STORAGED_REPLICATION_FACTOR".to_string(), "3".to_string()),
            (
                "STORAGED_ADMIN_ENDPOINT".to_string(),
                "ignored: a CLI variable".to_string(),
            ),
        ];
        let c = Config::from_toml_and_env(&base(), env).expect("valid");
        assert_eq!(c.s3_api.api_bind_addr.port(), 9000);
        assert_eq!(c.bootstrap_peers, vec!["a:3901", "b:3901"]);
        assert_eq!(c.zone.as_deref(), Some("paris"));
        assert_eq!(c.replication_factor, 3);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("data_dir = \"/d\"", vec![]).contains("metadata_dir"));
        assert!(err(&format!("{}bogus = 1\n", base()), vec![]).contains("bogus"));
        assert!(
            err(&base().replace(SECRET, "abc"), vec![]).contains("rpc_secret"),
            "short secret"
        );
        assert!(
            err(&format!("{}replication_factor = 0\n", base()), vec![])
                .contains("replication_factor")
        );
        assert!(err(&base(), vec![("STORAGED_BLOCK_SIZE", "big")]).contains("STORAGED_BLOCK_SIZE"));
        assert!(err(&format!("{}block_size = 10\n", base()), vec![]).contains("block_size"));
        // Larger than a replica accepts: refused here rather than by every chunk put.
        let too_big = MAX_BLOCK_SIZE + 1;
        let e = err(&format!("{}block_size = {too_big}\n", base()), vec![]);
        assert!(
            e.contains("block_size: must be") && !e.contains('\n'),
            "{e}"
        );
        let at_max = format!("{}block_size = {MAX_BLOCK_SIZE}\n", base());
        assert_eq!(
            Config::from_toml_and_env(&at_max, vec![])
                .expect("the largest accepted chunk is valid")
                .block_size,
            MAX_BLOCK_SIZE
        );
        assert!(
            err(
                &format!("{}[s3_api]\napi_bind_addr = \"nope\"\n", base()),
                vec![]
            )
            .contains("api_bind_addr")
        );
    }

    #[test]
    fn documented_example_is_valid_and_complete() {
        let text = include_str!("../../examples/storaged.toml");
        let c = Config::from_toml_and_env(text, vec![]).expect("examples/storaged.toml is valid");
        assert_eq!(c.s3_api.api_bind_addr.port(), 3900);
        // Every overridable key is documented in the example (set or commented out).
        for (section, key, _) in ENV_KEYS {
            let needle = format!("{key} =");
            assert!(
                text.contains(&needle),
                "examples/storaged.toml does not document {section}.{key}"
            );
        }
    }

    #[test]
    fn secret_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("secret");
        std::fs::write(&f, format!("{SECRET}\n")).expect("write");
        let text = format!(
            "metadata_dir = \"/m\"\ndata_dir = \"/d\"\nrpc_secret_file = \"{}\"\n",
            f.display()
        );
        let c = Config::from_toml_and_env(&text, vec![]).expect("valid");
        assert_eq!(c.rpc_secret.as_deref(), Some(SECRET));
        let missing = text.replace("secret\"", "nope\"");
        assert!(err(&missing, vec![]).contains("rpc_secret_file"));
    }
}
