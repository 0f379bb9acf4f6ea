//! GarageCluster status from one reconcile's observations, as a pure function.

use std::collections::BTreeMap;

use storaged_api::{ClusterHealth, HealthStatus};

use crate::crd::common::{condition, make_condition};
use crate::crd::{GarageCluster, GarageClusterStatus, ZoneStatus};
use crate::layout::LayoutPlan;

/// `Degraded` reason when the zones add up to fewer nodes than the replication factor.
pub const REASON_BELOW_RF: &str = "BelowReplicationFactor";

/// What one reconcile saw and did.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Per zone: StatefulSet replicas and ready replicas before this reconcile.
    pub current: BTreeMap<String, (i32, i32)>,
    /// Per zone: replicas applied this reconcile.
    pub overrides: BTreeMap<String, i32>,
    /// Zones held above their spec (or kept although removed) until drained.
    pub draining: Vec<String>,
    /// Scale-down refused: the spec wants fewer nodes than the replication factor.
    pub refused: bool,
    /// User-named Secrets that do not exist.
    pub missing_secrets: Vec<String>,
    /// Why the admin API could not be read, if it could not.
    pub admin_error: Option<String>,
    /// Layout routes answered 501.
    pub layout_unsupported: Option<String>,
    /// Layout version applied this reconcile.
    pub layout_applied: Option<u64>,
    /// The layout plan.
    pub plan: LayoutPlan,
    /// Applied layout version.
    pub layout_version: Option<u64>,
    /// Replication health.
    pub health: Option<ClusterHealth>,
    /// In-cluster S3 URL.
    pub s3_endpoint: String,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The status to write.
#[must_use]
pub fn build(cluster: &GarageCluster, o: &Observation) -> GarageClusterStatus {
    let prev = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = cluster.metadata.generation;
    let wanted = cluster.desired_nodes();

    let zones: Vec<ZoneStatus> = cluster
        .spec
        .zones
        .iter()
        .map(|z| z.name.clone())
        .chain(
            o.draining
                .iter()
                .filter(|d| !cluster.spec.zones.iter().any(|z| &&z.name == d))
                .cloned(),
        )
        .map(|name| ZoneStatus {
            replicas: o
                .overrides
                .get(&name)
                .copied()
                .unwrap_or_else(|| o.current.get(&name).map_or(0, |c| c.0)),
            ready_replicas: o.current.get(&name).map_or(0, |c| c.1),
            draining: o.draining.contains(&name),
            name,
        })
        .collect();
    let ready_pods: i64 = zones.iter().map(|z| i64::from(z.ready_replicas)).sum();
    let up = o
        .health
        .as_ref()
        .map_or(ready_pods, |h| to_i64(h.storage_nodes_up));

    // Degraded: works, but not as asked.
    let (degraded, d_reason, d_msg) = if !o.missing_secrets.is_empty() {
        (
            true,
            "SecretMissing",
            format!("Secrets not found: {}", o.missing_secrets.join(", ")),
        )
    } else if o.refused {
        (
            true,
            REASON_BELOW_RF,
            format!(
                "zones add up to {wanted} nodes, fewer than replicationFactor {}; scale-down refused",
                cluster.spec.replication_factor
            ),
        )
    } else {
        match o.health.as_ref().map(|h| h.status) {
            Some(HealthStatus::Unavailable) => (
                true,
                "QuorumLost",
                "some partitions have no write quorum".to_owned(),
            ),
            Some(HealthStatus::Degraded) => (
                true,
                "ReplicaMissing",
                "some partitions miss a replica".to_owned(),
            ),
            _ => (false, "AsExpected", "no degradation observed".to_owned()),
        }
    };

    // Progressing: still moving toward the spec.
    let syncing = o
        .health
        .as_ref()
        .map_or(0, |h| h.partitions_not_fully_replicated);
    let (progressing, p_reason, p_msg) = if let Some(e) = &o.admin_error {
        (
            true,
            "AdminAPIUnreachable",
            format!("waiting for the admin API: {e}"),
        )
    } else if let Some(e) = &o.layout_unsupported {
        (
            true,
            "LayoutAPIUnavailable",
            format!("layout management not available yet: {e}"),
        )
    } else if o.plan.waiting_for_first_layout {
        (
            true,
            "WaitingForNodes",
            format!("waiting for nodes to join: {}", o.plan.missing.join(", ")),
        )
    } else if let Some(v) = o.layout_applied {
        (true, "LayoutApplied", format!("layout version {v} applied"))
    } else if !o.draining.is_empty() {
        (
            true,
            "Draining",
            format!("waiting for data to leave zones {}", o.draining.join(", ")),
        )
    } else if syncing > 0 {
        (
            true,
            "Syncing",
            format!("{syncing} partitions not fully replicated"),
        )
    } else if up < wanted {
        (
            true,
            "NodesStarting",
            format!("{up}/{wanted} storage nodes up"),
        )
    } else {
        (
            false,
            "Reconciled",
            "the cluster matches its spec".to_owned(),
        )
    };

    let layout_version = o.layout_version.unwrap_or(0);
    let quorum = o
        .health
        .as_ref()
        .is_some_and(|h| h.status != HealthStatus::Unavailable);
    let (ready, r_reason, r_msg) = if !o.missing_secrets.is_empty() {
        (false, "SecretMissing", d_msg.clone())
    } else if o.health.is_none() {
        (
            false,
            "AdminAPIUnreachable",
            "cluster health unknown".to_owned(),
        )
    } else if layout_version == 0 {
        (false, "NoLayout", "no layout applied yet".to_owned())
    } else if !quorum {
        (
            false,
            "QuorumLost",
            "some partitions have no write quorum".to_owned(),
        )
    } else {
        (
            true,
            "ClusterAvailable",
            format!("S3 endpoint {}", o.s3_endpoint),
        )
    };

    let conditions = vec![
        make_condition(&prev, condition::READY, ready, r_reason, r_msg, generation),
        make_condition(
            &prev,
            condition::PROGRESSING,
            progressing,
            p_reason,
            p_msg,
            generation,
        ),
        make_condition(
            &prev,
            condition::DEGRADED,
            degraded,
            d_reason,
            d_msg,
            generation,
        ),
    ];
    GarageClusterStatus {
        observed_generation: generation,
        conditions,
        zone_count: i64::try_from(cluster.spec.zones.len()).ok(),
        zones,
        ready_nodes: Some(format!("{up}/{wanted}")),
        healthy_nodes: Some(up),
        total_nodes: o.health.as_ref().map(|h| to_i64(h.storage_nodes)),
        layout_version: o.layout_version.map(to_i64),
        partitions_not_fully_replicated: o
            .health
            .as_ref()
            .map(|h| to_i64(h.partitions_not_fully_replicated)),
        health: o.health.as_ref().map(|h| {
            match h.status {
                HealthStatus::Healthy => "healthy",
                HealthStatus::Degraded => "degraded",
                HealthStatus::Unavailable => "unavailable",
            }
            .to_owned()
        }),
        s3_endpoint: Some(o.s3_endpoint.clone()),
    }
}

/// Whether the status has condition `type_` set to `True`.
#[must_use]
pub fn is_true(status: &GarageClusterStatus, type_: &str) -> bool {
    crate::crd::common::is_true(&status.conditions, type_)
}
