//! `Bucket`: an S3 bucket of a cluster, with (by default) its own credentials Secret.

// The `KubeSchema` derive emits a `pub` helper struct in a private scope; that is its
// code, not an API of ours.
#![allow(unreachable_pub)]
// `printcolumn(...)` repeats `type_ = ...` once per column by design.
#![allow(clippy::duplicated_attributes)]
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::ClusterRef;

/// Desired state of a bucket.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "storage.garage.rs",
    version = "v1alpha1",
    kind = "Bucket",
    namespaced,
    status = "BucketStatus",
    shortname = "gbucket",
    category = "garage",
    derive = "PartialEq",
    doc = "An S3 bucket in a GarageCluster, with a credentials Secret for pods to consume with envFrom.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".status.bucketName"),
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
    validation = Rule::new("has(self.bucketName) == has(oldSelf.bucketName)").message("bucketName cannot be added or removed after creation"),
    validation = Rule::new("!self.forceDelete || self.deletionPolicy == 'Delete'").message("forceDelete only makes sense with deletionPolicy Delete")
)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    /// The `GarageCluster` (same namespace) that holds the bucket.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: ClusterRef,
    /// Global bucket name (S3 rules: 3-63 lower-case letters, digits, dots, hyphens);
    /// defaults to the object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("bucketName is immutable"))]
    pub bucket_name: Option<String>,
    /// Size and object-count limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<BucketQuotas>,
    /// What happens to the bucket when this object is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// With `deletionPolicy: Delete`, also delete a bucket that still holds objects.
    #[serde(default)]
    pub force_delete: bool,
    /// The bucket's own read/write key and the Secret it is written to.
    #[serde(default)]
    pub credentials: BucketCredentials,
}

/// Bucket limits.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BucketQuotas {
    /// Maximum bytes of current object versions, e.g. `10Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Quantity>,
    /// Maximum number of objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_objects: Option<i64>,
}

/// What happens to the storage object when its custom resource is deleted.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the bucket and its data (safe default).
    #[default]
    Retain,
    /// Delete the bucket; refused while it holds objects unless `forceDelete` is set.
    Delete,
}

/// The key a Bucket creates for itself.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BucketCredentials {
    /// Create a read/write key for the bucket and write it to a Secret.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Name of the Secret; defaults to `<bucket object name>-bucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Default for BucketCredentials {
    fn default() -> Self {
        Self {
            enabled: true,
            secret_name: None,
        }
    }
}

/// Observed state of a bucket.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Bucket id in storaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_id: Option<String>,
    /// Global bucket name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    /// Access key id of the bucket's own key (never the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret with the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl Bucket {
    /// The global bucket name: the spec's, else the object's name.
    #[must_use]
    pub fn bucket_name(&self) -> String {
        self.spec
            .bucket_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }

    /// Name of the credentials Secret.
    #[must_use]
    pub fn secret_name(&self) -> String {
        self.spec
            .credentials
            .secret_name
            .clone()
            .unwrap_or_else(|| {
                format!(
                    "{}-bucket",
                    self.metadata.name.as_deref().unwrap_or_default()
                )
            })
    }
}
