//! Object names derived from a cluster, in one place so the reconciler, `render` and the
//! docs agree.

use crate::crd::{GarageCluster, ZoneSpec};
use kube::ResourceExt;

/// `app.kubernetes.io/managed-by` value and field manager of server-side apply.
pub const MANAGER: &str = "garage-operator";
/// Label carrying the zone name on a zone's StatefulSet and pods.
pub const ZONE_LABEL: &str = "storage.garage.rs/zone";
/// Pod annotation with the hash of storaged.toml, so a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "storage.garage.rs/config-hash";

/// StatefulSet of one zone: `<cluster>-<zone>`.
#[must_use]
pub fn stateful_set(cluster: &GarageCluster, zone: &ZoneSpec) -> String {
    stateful_set_for(&cluster.name_any(), &zone.name)
}

/// StatefulSet name from raw names (also used for zones gone from the spec).
#[must_use]
pub fn stateful_set_for(cluster: &str, zone: &str) -> String {
    format!("{cluster}-{zone}")
}

/// Pod (and storaged hostname) of ordinal `i` of a zone.
#[must_use]
pub fn pod(cluster: &str, zone: &str, ordinal: i32) -> String {
    format!("{cluster}-{zone}-{ordinal}")
}

/// Headless Service for peer discovery.
#[must_use]
pub fn peers_service(cluster: &GarageCluster) -> String {
    format!("{}-peers", cluster.name_any())
}

/// S3 Service.
#[must_use]
pub fn s3_service(cluster: &GarageCluster) -> String {
    format!("{}-s3", cluster.name_any())
}

/// Web Service.
#[must_use]
pub fn web_service(cluster: &GarageCluster) -> String {
    format!("{}-web", cluster.name_any())
}

/// ConfigMap with storaged.toml.
#[must_use]
pub fn config_map(cluster: &GarageCluster) -> String {
    format!("{}-config", cluster.name_any())
}

/// PodDisruptionBudget.
#[must_use]
pub fn pdb(cluster: &GarageCluster) -> String {
    cluster.name_any()
}

/// Generated Secret with the RPC secret.
#[must_use]
pub fn rpc_secret(cluster: &GarageCluster) -> String {
    format!("{}-rpc-secret", cluster.name_any())
}

/// Generated Secret with the admin token.
#[must_use]
pub fn admin_token(cluster: &GarageCluster) -> String {
    format!("{}-admin-token", cluster.name_any())
}

/// In-cluster DNS name of a Service.
#[must_use]
pub fn service_host(service: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("{service}.{namespace}.svc.{cluster_domain}")
}
