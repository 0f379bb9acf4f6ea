//! One PodDisruptionBudget for the whole cluster.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{names, owned_meta, selector_labels};
use crate::Result;
use crate::crd::GarageCluster;

/// `maxUnavailable: 1` over every pod of every zone. Per-zone budgets would let one pod
/// per zone go at once during a node drain, which breaks the quorum of every partition
/// replicated across those zones.
pub fn pod_disruption_budget(cluster: &GarageCluster) -> Result<PodDisruptionBudget> {
    Ok(PodDisruptionBudget {
        metadata: owned_meta(cluster, names::pdb(cluster))?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
