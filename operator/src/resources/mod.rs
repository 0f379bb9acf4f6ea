//! Desired state as pure functions: a `GarageCluster` in, the objects it needs out.
//!
//! Nothing here talks to the network, so every rule (names, labels, affinity, config
//! keys, PDB) is unit-tested directly and `operator render` prints exactly what the
//! reconciler would apply.

pub mod config;
pub mod names;
pub mod pdb;
pub mod quantity;
pub mod secrets;
pub mod services;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::GarageCluster;
use crate::{Error, Result};

/// Ports of storaged (DESIGN.md contract, Garage's defaults).
pub mod ports {
    /// S3 API, TCP.
    pub const S3: i32 = 3900;
    /// RPC between nodes, UDP (QUIC).
    pub const RPC: i32 = 3901;
    /// Static websites, TCP.
    pub const WEB: i32 = 3902;
    /// Admin API, metrics, health, TCP.
    pub const ADMIN: i32 = 3903;
}

/// Settings of the operator's environment that shape objects but are not in the CR.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// DNS suffix of the Kubernetes cluster (`cluster.local` unless configured).
    pub cluster_domain: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// Everything one `GarageCluster` needs, except the generated Secrets (created once by the
/// reconciler, never re-rendered, see [`secrets`]).
#[derive(Debug, Clone)]
pub struct DesiredObjects {
    /// storaged.toml.
    pub config_map: ConfigMap,
    /// Headless Service for peer discovery.
    pub peers_service: Service,
    /// The S3 endpoint.
    pub s3_service: Service,
    /// The website endpoint, when enabled.
    pub web_service: Option<Service>,
    /// One budget for the whole cluster.
    pub pdb: PodDisruptionBudget,
    /// One StatefulSet per zone, in spec order.
    pub stateful_sets: Vec<StatefulSet>,
}

/// Renders every object for `cluster`. `replicas` overrides a zone's replica count (by zone
/// name) while its leaving nodes drain; zones absent from it use the spec.
pub fn desired(
    cluster: &GarageCluster,
    opts: &RenderOptions,
    replicas: &BTreeMap<String, i32>,
) -> Result<DesiredObjects> {
    let cm = config::config_map(cluster, opts)?;
    let config_hash = config::hash(cm.data.as_ref().and_then(|d| d.get(config::FILE_NAME)));
    let stateful_sets = cluster
        .spec
        .zones
        .iter()
        .map(|zone| {
            let n = replicas.get(&zone.name).copied().unwrap_or(zone.replicas);
            statefulset::stateful_set(cluster, zone, n, &config_hash, opts)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DesiredObjects {
        config_map: cm,
        peers_service: services::peers_service(cluster)?,
        s3_service: services::s3_service(cluster)?,
        web_service: services::web_service(cluster)?,
        pdb: pdb::pod_disruption_budget(cluster)?,
        stateful_sets,
    })
}

/// Labels on every object of a cluster; `app.kubernetes.io/instance` is the cluster name,
/// so one selector finds all of a cluster's objects.
#[must_use]
pub fn labels(cluster: &GarageCluster) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        names::MANAGER.to_owned(),
    );
    l
}

/// The stable subset of [`labels`] used in selectors (selectors are immutable).
#[must_use]
pub fn selector_labels(cluster: &GarageCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "storaged".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cluster.name_any()),
    ])
}

/// Metadata of an object owned by `cluster`: name, namespace, labels, controller owner
/// reference (so deleting the cluster garbage-collects it).
pub fn owned_meta(cluster: &GarageCluster, name: String) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace(cluster)?),
        labels: Some(labels(cluster)),
        owner_references: owner_ref(cluster).map(|o| vec![o]),
        ..ObjectMeta::default()
    })
}

/// The controller owner reference of `cluster`; `None` before the API server gave it a uid
/// (only in `render`).
#[must_use]
pub fn owner_ref(cluster: &GarageCluster) -> Option<OwnerReference> {
    cluster.controller_owner_ref(&())
}

/// The cluster's namespace; every object of a cluster lives next to it.
pub fn namespace(cluster: &GarageCluster) -> Result<String> {
    cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))
}

#[cfg(test)]
pub(crate) mod tests;
