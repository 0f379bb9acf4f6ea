//! `GarageCluster`: one storaged cluster spread over zones.

// The `KubeSchema` derive emits a `pub` helper struct in a private scope; that is its
// code, not an API of ours.
#![allow(unreachable_pub)]
// `printcolumn(...)` repeats `type_ = ...` once per column by design.
#![allow(clippy::duplicated_attributes)]
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label key that pins a zone's pods to its nodes unless the spec names another.
pub const DEFAULT_ZONE_LABEL_KEY: &str = "topology.kubernetes.io/zone";
/// S3 region a client must sign for unless the spec names another (DESIGN.md default).
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// Upper bound on zones: keeps CEL rules over `zones` cheap and a cluster readable.
pub const MAX_ZONES: usize = 16;
/// Longest `<cluster>-<zone>` that still leaves room for the StatefulSet's
/// `controller-revision-hash` label (63 characters including an 11-character suffix).
pub const MAX_STATEFULSET_NAME: usize = 52;

/// Desired state of a storaged cluster: its zones, replication and endpoints.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "storage.garage.rs",
    version = "v1alpha1",
    kind = "GarageCluster",
    namespaced,
    status = "GarageClusterStatus",
    shortname = "gc",
    category = "garage",
    derive = "PartialEq",
    doc = "A geo-distributed storaged cluster: one StatefulSet per zone, an S3 Service, and an automatically managed layout.",
    printcolumn(name = "Zones", type_ = "integer", json_path = ".status.zoneCount"),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.readyNodes", description = "storage nodes up / nodes wanted"),
    printcolumn(name = "Layout", type_ = "integer", json_path = ".status.layoutVersion"),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.health"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec.zones.all(z, size(self.metadata.name) + size(z.name) < 52)").message("cluster name and zone name together must not exceed 51 characters (the StatefulSet name feeds pod labels)")
)]
#[x_kube(
    validation = Rule::new("self.zones.map(z, z.replicas).sum() >= self.replicationFactor").message("the zones' replicas add up to fewer nodes than replicationFactor")
)]
#[serde(rename_all = "camelCase")]
pub struct GarageClusterSpec {
    /// storaged container image, e.g. `ghcr.io/example/storaged:0.1.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Pull policy of the storaged image (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// How many copies of each partition the cluster keeps. Fixed at creation: changing it
    /// would need every partition to move.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 7))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicationFactor is immutable"))]
    pub replication_factor: i32,
    /// Quorum rules: `consistent` (read-after-write), `degraded` or `dangerous`.
    #[serde(default)]
    pub consistency_mode: ConsistencyMode,
    /// Node label whose value names a node's zone.
    #[serde(default = "default_zone_label_key")]
    #[schemars(length(min = 1, max = 316))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("zoneLabelKey is immutable"))]
    pub zone_label_key: String,
    /// The zones (sites) of the cluster; each gets its own StatefulSet. A list keyed by
    /// `name`: names are unique, and per-zone rules can compare a zone with its old self.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub zones: Vec<ZoneSpec>,
    /// The S3 endpoint.
    #[serde(default)]
    pub s3: S3Spec,
    /// Static website endpoint; off unless enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebSpec>,
    /// Existing Secrets for the RPC secret and admin token; generated when not given.
    #[serde(default)]
    pub secrets: SecretsSpec,
}

fn default_replication_factor() -> i32 {
    3
}

fn default_zone_label_key() -> String {
    DEFAULT_ZONE_LABEL_KEY.to_owned()
}

/// Image pull policy, as in a Pod spec.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when absent from the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The string a Pod spec expects.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// `consistency_mode` of storaged.toml.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyMode {
    /// Read and write quorums overlap: read-after-write holds.
    #[default]
    Consistent,
    /// Reads answer from one replica when a quorum is missing.
    Degraded,
    /// Reads and writes need one replica only.
    Dangerous,
}

impl ConsistencyMode {
    /// The value storaged.toml expects.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consistent => "consistent",
            Self::Degraded => "degraded",
            Self::Dangerous => "dangerous",
        }
    }
}

/// One zone (site) of the cluster.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSpec {
    /// Zone name: the value of the zone label on this zone's nodes, and part of the
    /// StatefulSet name `<cluster>-<zone>`.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Node label value of the zone when it is not a valid object name (e.g. upper case);
    /// defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub label_value: Option<String>,
    /// Number of storaged nodes in the zone.
    #[schemars(range(min = 1, max = 128))]
    pub replicas: i32,
    /// Persistent volumes of each node.
    #[x_kube(validation = Rule::new("self == oldSelf").message("zone storage is immutable (StatefulSet volumeClaimTemplates cannot change); add a new zone instead"))]
    pub storage: ZoneStorage,
    /// Bytes each node offers to the layout; defaults to the data volume size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
    /// CPU and memory of each storaged container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Tolerations of the zone's pods (e.g. for dedicated storage nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
}

impl ZoneSpec {
    /// The node label value that selects this zone's nodes.
    #[must_use]
    pub fn label_value(&self) -> &str {
        self.label_value.as_deref().unwrap_or(&self.name)
    }
}

/// Volumes of one storaged node: bulk data and the metadata database.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStorage {
    /// Chunk store (`data_dir`): large, can be slow disks.
    pub data: VolumeSpec,
    /// Metadata database (`metadata_dir`): small, should be fast disks.
    pub metadata: VolumeSpec,
}

/// One PersistentVolumeClaim template.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Requested size, e.g. `100Gi`.
    pub size: Quantity,
    /// StorageClass; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// How a Service is exposed.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Inside the cluster only.
    #[default]
    ClusterIP,
    /// On a port of every node.
    NodePort,
    /// Through the cloud's load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The string a Service spec expects.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The S3 API endpoint.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// Region clients sign requests for (`s3_region`).
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Domain for virtual-hosted-style requests (`root_domain`), e.g. `.s3.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_domain: Option<String>,
    /// Type of the S3 Service.
    #[serde(default)]
    pub service_type: ServiceType,
}

fn default_region() -> String {
    DEFAULT_S3_REGION.to_owned()
}

impl Default for S3Spec {
    fn default() -> Self {
        Self {
            region: default_region(),
            root_domain: None,
            service_type: ServiceType::default(),
        }
    }
}

/// The static website endpoint.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebSpec {
    /// Serve websites from buckets and create the web Service.
    #[serde(default)]
    pub enabled: bool,
    /// Domain under which buckets are served (`[s3_web] root_domain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_domain: Option<String>,
    /// Type of the web Service.
    #[serde(default)]
    pub service_type: ServiceType,
}

/// Secrets the user provides instead of letting the operator generate them.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretsSpec {
    /// Existing Secret holding the cluster RPC secret (64 hex characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_secret: Option<SecretKeyRef>,
    /// Existing Secret holding the admin API bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<SecretKeyRef>,
}

/// One key of a Secret in the cluster's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Observed state of a storaged cluster.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GarageClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Number of zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_count: Option<i64>,
    /// Per-zone replicas.
    #[serde(default)]
    pub zones: Vec<ZoneStatus>,
    /// `up/wanted` storage nodes, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<String>,
    /// Storage nodes currently up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_nodes: Option<i64>,
    /// Storage nodes in the layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_nodes: Option<i64>,
    /// Applied layout version (0 before the first apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout_version: Option<i64>,
    /// Partitions missing a replica or still syncing; 0 when all data is fully replicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions_not_fully_replicated: Option<i64>,
    /// `healthy`, `degraded` or `unavailable`, as storaged reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// In-cluster URL of the S3 endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
}

/// Replicas of one zone.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStatus {
    /// Zone name.
    pub name: String,
    /// Replicas the StatefulSet runs now (more than asked while nodes drain).
    pub replicas: i32,
    /// Ready pods.
    pub ready_replicas: i32,
    /// Whether nodes of this zone are leaving the layout.
    #[serde(default)]
    pub draining: bool,
}

impl GarageCluster {
    /// Total storage nodes the spec asks for.
    #[must_use]
    pub fn desired_nodes(&self) -> i64 {
        self.spec.zones.iter().map(|z| i64::from(z.replicas)).sum()
    }
}
