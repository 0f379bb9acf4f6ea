//! Layout planning, free of I/O: from what storaged reports (nodes, layout) and what the
//! spec wants (zones, replicas, capacities), decide which roles to stage and which zones
//! are still draining. The reconciler only executes the plan.
//!
//! Nodes are matched to pods by hostname: a StatefulSet pod `<cluster>-<zone>-<ordinal>`
//! reports that name, so ordinals below the zone's replicas get a role and the others are
//! leaving.

use std::collections::{BTreeMap, BTreeSet};

use storaged_api::{
    ClusterHealth, ClusterStatus, LayoutInfo, NodeInfo, NodeRole, StagedRoleChange,
};

/// What the spec wants of one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneTarget {
    /// Zone name.
    pub name: String,
    /// Pods that should hold a role.
    pub replicas: i32,
    /// Bytes each node offers.
    pub capacity: u64,
}

/// The outcome of planning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayoutPlan {
    /// Role changes to stage (then apply) now.
    pub changes: Vec<StagedRoleChange>,
    /// Zones with nodes leaving the layout (role still applied, or data still moving).
    pub draining: BTreeSet<String>,
    /// Nodes of the spec that storaged does not know yet (pods not started or not joined).
    pub missing: Vec<String>,
    /// Wait with the first layout until every node has joined, so that the first
    /// assignment is the final one and no partition moves right after creation.
    pub waiting_for_first_layout: bool,
}

/// Splits `<cluster>-<zone>-<ordinal>` for a known zone.
#[must_use]
pub fn parse_pod<'a>(cluster: &str, zones: &'a [String], hostname: &str) -> Option<(&'a str, i32)> {
    let rest = hostname.strip_prefix(cluster)?.strip_prefix('-')?;
    zones.iter().find_map(|z| {
        let ord = rest.strip_prefix(z.as_str())?.strip_prefix('-')?;
        if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        ord.parse().ok().map(|o| (z.as_str(), o))
    })
}

/// The role a node holds once staged changes are applied.
fn effective_role<'a>(layout: &'a LayoutInfo, node_id: &str) -> Option<&'a NodeRole> {
    if let Some(staged) = layout.staged.iter().find(|s| s.node_id == node_id) {
        return staged.role.as_ref();
    }
    layout
        .roles
        .iter()
        .find(|r| r.node_id == node_id)
        .map(|r| &r.role)
}

fn applied_role<'a>(layout: &'a LayoutInfo, node_id: &str) -> Option<&'a NodeRole> {
    layout
        .roles
        .iter()
        .find(|r| r.node_id == node_id)
        .map(|r| &r.role)
}

/// Plans role changes. `gone_zones` are zones whose StatefulSet still exists but that the
/// spec no longer lists: all their nodes leave.
#[must_use]
pub fn plan(
    cluster: &str,
    targets: &[ZoneTarget],
    gone_zones: &[String],
    status: &ClusterStatus,
    layout: &LayoutInfo,
) -> LayoutPlan {
    let mut zones: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    zones.extend(gone_zones.iter().cloned());
    // Longest first, so that zone `a-b` is not mistaken for zone `a`, ordinal `b-0`.
    zones.sort_by_key(|z| std::cmp::Reverse(z.len()));

    // A pod whose metadata volume was replaced comes back with a new node id under the
    // same hostname: the up node is the pod, the down one is its ghost.
    let mut by_host: BTreeMap<&str, Vec<&NodeInfo>> = BTreeMap::new();
    for n in &status.nodes {
        by_host.entry(n.hostname.as_str()).or_default().push(n);
    }

    let mut out = LayoutPlan::default();
    let mut seen: BTreeSet<(String, i32)> = BTreeSet::new();
    for (host, nodes) in &by_host {
        let Some((zone, ordinal)) = parse_pod(cluster, &zones, host) else {
            continue; // not ours (a gateway, another tool's node): leave it alone
        };
        let target = targets.iter().find(|t| t.name == zone);
        let wanted = target.filter(|t| ordinal < t.replicas);
        let live = nodes.iter().find(|n| n.is_up).or(nodes.first()).copied();
        for n in nodes {
            let is_ghost =
                nodes.len() > 1 && !n.is_up && live.is_some_and(|l| l.node_id != n.node_id);
            let current = effective_role(layout, &n.node_id);
            match (wanted, is_ghost) {
                (Some(t), false) => {
                    seen.insert((zone.to_owned(), ordinal));
                    let role = NodeRole {
                        zone: t.name.clone(),
                        capacity: Some(t.capacity),
                        tags: vec![host.to_string()],
                    };
                    if current != Some(&role) {
                        out.changes.push(StagedRoleChange {
                            node_id: n.node_id.clone(),
                            role: Some(role),
                        });
                    }
                }
                _ => {
                    if current.is_some() {
                        out.changes.push(StagedRoleChange {
                            node_id: n.node_id.clone(),
                            role: None,
                        });
                    }
                    if !is_ghost
                        && (current.is_some() || applied_role(layout, &n.node_id).is_some())
                    {
                        out.draining.insert(zone.to_owned());
                    }
                }
            }
        }
    }

    for t in targets {
        for ordinal in 0..t.replicas {
            if !seen.contains(&(t.name.clone(), ordinal)) {
                out.missing.push(format!("{cluster}-{}-{ordinal}", t.name));
            }
        }
    }
    if layout.version == 0 && !out.missing.is_empty() {
        out.waiting_for_first_layout = true;
        out.changes.clear();
    }
    out
}

/// Whether a zone may shrink (or a gone zone be deleted) now: none of its leaving nodes
/// still holds a role, nothing is staged, and every partition is fully replicated.
#[must_use]
pub fn drain_complete(plan: &LayoutPlan, zone: &str, health: &ClusterHealth) -> bool {
    !plan.draining.contains(zone)
        && plan.changes.is_empty()
        && health.partitions_not_fully_replicated == 0
}

#[cfg(test)]
mod tests;
