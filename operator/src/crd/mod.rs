//! The custom resources: `GarageCluster`, `Bucket`, `AccessKey` (group
//! `storage.garage.rs/v1alpha1`), their defaults and validation rules. `crdgen` prints
//! them; `crds/` is never edited by hand.

pub mod access_key;
pub mod bucket;
pub mod cluster;
pub mod common;

pub use access_key::{AccessKey, AccessKeySpec, AccessKeyStatus, BucketPermission};
pub use bucket::{Bucket, BucketCredentials, BucketQuotas, BucketSpec, BucketStatus, DeletionPolicy};
pub use cluster::{
    ConsistencyMode, GarageCluster, GarageClusterSpec, GarageClusterStatus, S3Spec, SecretKeyRef,
    SecretsSpec, ServiceType, VolumeSpec, WebSpec, ZoneSpec, ZoneStatus, ZoneStorage,
};
pub use common::{ClusterRef, LocalRef};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD of the operator, in a stable order, for `crdgen` and the chart.
#[must_use]
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![GarageCluster::crd(), Bucket::crd(), AccessKey::crd()]
}
