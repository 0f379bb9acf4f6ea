//! # storaged admin API: the one contract
//!
//! Request and response types of storaged's admin HTTP API, shared by the daemon (server),
//! its CLI and the Kubernetes operator (clients), so that the three can never disagree on a
//! field. Serde + schemars only: no server code lives here.
//!
//! ## Wire conventions
//! - JSON bodies, `snake_case` fields, under the `/v1/` prefix ([`paths`]).
//! - `Authorization: Bearer <admin_token>` on every `/v1/` route.
//! - `/health` (liveness) and `/ready` (readiness) are unauthenticated; `/metrics` takes the
//!   metrics token when one is configured.
//! - Errors are an [`ErrorResponse`] with a matching HTTP status code.
//! - Creates are idempotent or come with a lookup (`GET /v1/keys?name=`,
//!   `GET /v1/buckets?name=`), so a controller can always converge after a crash.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Route builders, so that the server's router and every client spell paths the same way.
pub mod paths {
    /// Liveness: the process serves HTTP.
    pub const HEALTH: &str = "/health";
    /// Readiness: this node can reach a quorum for its partitions.
    pub const READY: &str = "/ready";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// This node and the cluster it sees.
    pub const STATUS: &str = "/v1/status";
    /// Cluster-wide replication health.
    pub const HEALTH_V1: &str = "/v1/health";
    /// All access keys (GET; `?name=` filters the list, names are not unique) and key
    /// creation (POST).
    pub const KEYS: &str = "/v1/keys";
    /// Import an existing key id + secret (recreate a lost Secret).
    pub const KEYS_IMPORT: &str = "/v1/keys/import";
    /// All buckets (GET: a list of [`super::BucketSummary`]; `GET ?name=N` answers the one
    /// [`super::BucketInfo`] of that global name, or 404) and bucket creation (POST).
    pub const BUCKETS: &str = "/v1/buckets";
    /// Grant permissions of a key on a bucket.
    pub const PERMISSIONS_ALLOW: &str = "/v1/permissions/allow";
    /// Revoke permissions of a key on a bucket.
    pub const PERMISSIONS_DENY: &str = "/v1/permissions/deny";
    /// Current and staged cluster layout.
    pub const LAYOUT: &str = "/v1/layout";
    /// Stage role changes.
    pub const LAYOUT_STAGE: &str = "/v1/layout/stage";
    /// Apply the staged changes as the next version.
    pub const LAYOUT_APPLY: &str = "/v1/layout/apply";
    /// Drop the staged changes.
    pub const LAYOUT_REVERT: &str = "/v1/layout/revert";

    /// One key, by access key id.
    #[must_use]
    pub fn key(access_key_id: &str) -> String {
        format!("{KEYS}/{access_key_id}")
    }

    /// One bucket, by bucket id (or global name). `DELETE` refuses a non-empty bucket with
    /// 409 `BucketNotEmpty` unless `?force=true`, which deletes its objects and uploads first.
    #[must_use]
    pub fn bucket(bucket_id: &str) -> String {
        format!("{BUCKETS}/{bucket_id}")
    }
}

/// Body of every non-2xx answer.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Stable machine-readable code, e.g. `NoSuchKey`, `BucketNotEmpty`, `NotImplemented`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Read / write / owner rights of one key on one bucket.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// GetObject, HeadObject, ListObjects...
    #[serde(default)]
    pub read: bool,
    /// PutObject, DeleteObject, multipart...
    #[serde(default)]
    pub write: bool,
    /// Bucket configuration and deletion.
    #[serde(default)]
    pub owner: bool,
}

impl Permissions {
    /// True when no right is granted (the grant can be forgotten).
    #[must_use]
    pub fn is_none(&self) -> bool {
        !self.read && !self.write && !self.owner
    }
}

/// `POST /v1/keys`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateKeyRequest {
    /// Friendly name; not unique, but `GET /v1/keys?name=` finds keys by it.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether the key may create buckets through S3 (it then owns them).
    #[serde(default)]
    pub allow_create_bucket: bool,
}

/// `POST /v1/keys/import`: recreate a key whose id and secret are known.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct ImportKeyRequest {
    /// `GK` + 24 hex characters, or an AWS-shaped id (16 to 128 alphanumerics).
    pub access_key_id: String,
    /// 64 hex characters, or an AWS-shaped secret (40 or more printable characters).
    pub secret_access_key: String,
    /// Friendly name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/keys/{id}`: change a key's name or bucket-creation right.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateKeyRequest {
    /// New friendly name.
    #[serde(default)]
    pub name: Option<String>,
    /// New bucket-creation right.
    #[serde(default)]
    pub allow_create_bucket: Option<bool>,
}

/// One line of `GET /v1/keys`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    /// Access key id.
    pub access_key_id: String,
    /// Friendly name (empty when none was given).
    pub name: String,
}

/// A key's rights on one bucket, as seen from the key.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct KeyBucketPermission {
    /// Bucket id.
    pub bucket_id: String,
    /// Global name of the bucket, when it has one.
    pub bucket_name: Option<String>,
    /// Granted rights.
    pub permissions: Permissions,
}

/// `GET /v1/keys/{id}` and the answer to key creation / import.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Access key id.
    pub access_key_id: String,
    /// Friendly name.
    pub name: String,
    /// Only present on creation, import, or `GET ...?show_secret=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Whether the key may create buckets through S3.
    pub allow_create_bucket: bool,
    /// Buckets this key has rights on.
    pub buckets: Vec<KeyBucketPermission>,
}

/// Size and object-count limits of a bucket; `None` means unlimited.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Maximum total bytes of current object versions.
    #[serde(default)]
    pub max_size: Option<u64>,
    /// Maximum number of objects.
    #[serde(default)]
    pub max_objects: Option<u64>,
}

/// `POST /v1/buckets`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateBucketRequest {
    /// Global bucket name (S3 naming rules).
    pub name: String,
    /// Optional quotas.
    #[serde(default)]
    pub quotas: Option<Quotas>,
    /// Free-form owner tag (the operator records the owning CR's UID here), readable back in
    /// [`BucketInfo::owner_tag`], so that two controllers cannot silently share a name.
    #[serde(default)]
    pub owner_tag: Option<String>,
}

/// `POST /v1/buckets/{id}`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateBucketRequest {
    /// Replace the quotas.
    #[serde(default)]
    pub quotas: Option<Quotas>,
    /// Replace the owner tag; an empty string clears it (releases the bucket).
    #[serde(default)]
    pub owner_tag: Option<String>,
}

/// One line of `GET /v1/buckets`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct BucketSummary {
    /// Bucket id (64 hex characters).
    pub id: String,
    /// Global name.
    pub name: String,
}

/// A key's rights on one bucket, as seen from the bucket.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct BucketKeyPermission {
    /// Access key id.
    pub access_key_id: String,
    /// The key's friendly name.
    pub name: String,
    /// Granted rights.
    pub permissions: Permissions,
}

/// `GET /v1/buckets/{id}`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    /// Bucket id (64 hex characters).
    pub id: String,
    /// Global name.
    pub name: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Quotas in force.
    pub quotas: Quotas,
    /// Owner tag set at creation or update.
    #[serde(default)]
    pub owner_tag: Option<String>,
    /// Keys with rights on the bucket.
    pub keys: Vec<BucketKeyPermission>,
    /// Number of objects (current versions).
    pub objects: u64,
    /// Bytes of current versions.
    pub bytes: u64,
    /// Multipart uploads in progress.
    pub unfinished_uploads: u64,
}

/// `POST /v1/permissions/allow` and `/deny`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct PermissionRequest {
    /// Bucket id.
    pub bucket_id: String,
    /// Access key id.
    pub access_key_id: String,
    /// Rights to grant (allow) or revoke (deny); unset rights are left as they are.
    pub permissions: Permissions,
}

/// A node's role in the layout: a storage node of a zone, or a gateway (no capacity).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct NodeRole {
    /// Zone name (the node topology label value).
    pub zone: String,
    /// Bytes offered for data; `None` means a gateway that stores nothing.
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One node as this node sees it.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id (hex of its public key).
    pub node_id: String,
    /// Host name reported by the node.
    pub hostname: String,
    /// Zone from the node's own config (`zone`).
    #[serde(default)]
    pub zone: Option<String>,
    /// RPC address peers use.
    #[serde(default)]
    pub rpc_addr: Option<String>,
    /// Whether the node is reachable now.
    pub is_up: bool,
    /// Role in the current layout, if any.
    #[serde(default)]
    pub role: Option<NodeRole>,
    /// Daemon version.
    pub version: String,
}

/// `GET /v1/status`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Id of the node that answered.
    pub node_id: String,
    /// Current layout version (0 before any layout is applied).
    pub layout_version: u64,
    /// Every known node.
    pub nodes: Vec<NodeInfo>,
}

/// Overall replication state.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every partition has all its replicas up.
    Healthy,
    /// Every partition has a quorum, some miss a replica.
    Degraded,
    /// Some partition has no quorum.
    Unavailable,
}

/// `GET /v1/health`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// Summary.
    pub status: HealthStatus,
    /// Nodes known to this node.
    pub known_nodes: u64,
    /// Nodes currently reachable.
    pub connected_nodes: u64,
    /// Nodes with a storage role.
    pub storage_nodes: u64,
    /// Storage nodes currently reachable.
    pub storage_nodes_up: u64,
    /// Number of partitions (256).
    pub partitions: u64,
    /// Partitions with a write quorum reachable.
    pub partitions_quorum: u64,
    /// Partitions with every replica reachable.
    pub partitions_all_ok: u64,
    /// Partitions not fully replicated (`partitions - partitions_all_ok`, plus any still
    /// syncing after a layout change); the operator waits for 0 before shrinking.
    pub partitions_not_fully_replicated: u64,
}

/// A role assignment in an applied layout.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct NodeRoleAssignment {
    /// Node id.
    pub node_id: String,
    /// Its role.
    pub role: NodeRole,
}

/// A staged change: a new role, or `None` to remove the node from the layout.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct StagedRoleChange {
    /// Node id.
    pub node_id: String,
    /// New role; `None` removes it.
    #[serde(default)]
    pub role: Option<NodeRole>,
}

/// `GET /v1/layout`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct LayoutInfo {
    /// Current applied version.
    pub version: u64,
    /// Roles in the applied version.
    pub roles: Vec<NodeRoleAssignment>,
    /// Changes staged for the next version.
    pub staged: Vec<StagedRoleChange>,
    /// Partitions that would move if the staged changes were applied.
    #[serde(default)]
    pub staged_partition_moves: u64,
    /// Zone redundancy of the current version (`None`: maximum).
    #[serde(default)]
    pub zone_redundancy: Option<u64>,
}

/// `POST /v1/layout/stage`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct StageLayoutRequest {
    /// Changes to stage (merged with those already staged).
    pub changes: Vec<StagedRoleChange>,
    /// A new zone redundancy to stage, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_redundancy: Option<ZoneRedundancy>,
}

/// How many distinct zones each partition's replicas must span.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ZoneRedundancy {
    /// As many zones as there are (up to the replication factor): the default.
    Maximum,
    /// At least this many zones; the assignment may then use capacity more fully.
    AtLeast(u64),
}

/// `POST /v1/layout/apply` and `/revert`: the version the caller expects next, so two
/// concurrent admins cannot both apply.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutVersionRequest {
    /// For apply: current version + 1. For revert: current version.
    pub version: u64,
}

/// Answer to apply.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct ApplyLayoutResponse {
    /// The new layout.
    pub layout: LayoutInfo,
    /// What the assignment algorithm did, line by line.
    pub messages: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_info_hides_absent_secret() {
        let info = KeyInfo {
            access_key_id: "GK0123".into(),
            name: "n".into(),
            secret_access_key: None,
            allow_create_bucket: false,
            buckets: vec![],
        };
        let json = serde_json::to_string(&info).expect("serialize");
        assert!(!json.contains("secret"), "{json}");
    }

    #[test]
    fn permissions_default_to_none() {
        let p: Permissions = serde_json::from_str("{}").expect("parse");
        assert!(p.is_none());
    }

    #[test]
    fn health_status_is_snake_case() {
        assert_eq!(
            serde_json::to_string(&HealthStatus::Unavailable).expect("serialize"),
            "\"unavailable\""
        );
    }
}
