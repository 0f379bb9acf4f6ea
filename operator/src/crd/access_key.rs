//! `AccessKey`: an S3 key of a cluster with rights on some Buckets.

// The `KubeSchema` derive emits a `pub` helper struct in a private scope; that is its
// code, not an API of ours.
#![allow(unreachable_pub)]
// `printcolumn(...)` repeats `type_ = ...` once per column by design.
#![allow(clippy::duplicated_attributes)]
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ClusterRef, LocalRef};

/// Desired state of an access key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "storage.garage.rs",
    version = "v1alpha1",
    kind = "AccessKey",
    namespaced,
    status = "AccessKeyStatus",
    shortname = "gkey",
    category = "garage",
    derive = "PartialEq",
    doc = "An S3 access key with permissions on Buckets; its secret lives only in the Secret it names.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "Key", type_ = "string", json_path = ".status.accessKeyId"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.permissions.all(p, self.permissions.exists_one(q, q.bucketRef.name == p.bucketRef.name))").message("each Bucket may be listed once in permissions")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeySpec {
    /// The `GarageCluster` (same namespace) the key belongs to.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: ClusterRef,
    /// Secret the credentials are written to; defaults to `<object name>-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Whether the key may create buckets through the S3 API.
    #[serde(default)]
    pub allow_create_bucket: bool,
    /// Rights on Buckets of the same namespace.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub permissions: Vec<BucketPermission>,
}

/// Rights of the key on one Bucket.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.read || self.write || self.owner").message("grant at least one of read, write, owner"))]
#[serde(rename_all = "camelCase")]
pub struct BucketPermission {
    /// The `Bucket` object (same namespace).
    pub bucket_ref: LocalRef,
    /// Read objects.
    #[serde(default)]
    pub read: bool,
    /// Write and delete objects.
    #[serde(default)]
    pub write: bool,
    /// Configure the bucket.
    #[serde(default)]
    pub owner: bool,
}

/// Observed state of an access key.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Access key id (never the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret with the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl AccessKey {
    /// Name of the credentials Secret.
    #[must_use]
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-key", self.metadata.name.as_deref().unwrap_or_default()))
    }
}
