//! `/v1/layout…`, `/v1/status` and `/v1/health`: the cluster as this node sees it.
#![allow(
    clippy::result_large_err,
    reason = "the Err variant is the HTTP reply itself"
)]

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use storaged_api as api;

use super::{AdminState, Reply, error, json};
use crate::layout::{ClusterLayout, LayoutChange, LayoutError, N_PARTITIONS, NodeId};

fn layout_error(e: &LayoutError) -> Reply {
    let (status, code) = match e {
        LayoutError::VersionMismatch { .. } => (StatusCode::CONFLICT, "LayoutVersionMismatch"),
        _ => (StatusCode::BAD_REQUEST, "InvalidLayout"),
    };
    error(status, code, e.to_string())
}

fn internal(e: &crate::Error) -> Reply {
    tracing::error!(error = %e, "admin API internal error");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        e.to_string(),
    )
}

fn parse_node(id: &str) -> Result<NodeId, Reply> {
    NodeId::from_hex(id).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("node_id `{id}` is not a 64-digit hex node id"),
        )
    })
}

/// The layout as the API shows it.
#[must_use]
pub(super) fn layout_info(l: &ClusterLayout) -> api::LayoutInfo {
    api::LayoutInfo {
        version: l.version(),
        roles: l
            .roles()
            .iter()
            .map(|(n, r)| api::NodeRoleAssignment {
                node_id: n.to_hex(),
                role: r.clone().into(),
            })
            .collect(),
        staged: l
            .staging()
            .roles
            .iter()
            .map(|(n, r)| api::StagedRoleChange {
                node_id: n.to_hex(),
                role: r.clone().map(Into::into),
            })
            .collect(),
        zone_redundancy: l.current().zone_redundancy.map(|z| z as u64),
        staged_partition_moves: if l.staging().is_empty() {
            0
        } else {
            l.preview().map_or(0, |p| p.partitions_moved as u64)
        },
    }
}

/// The outcome of [`crate::layout::manager::LayoutManager::update`] as a reply on error.
fn updated_or_reply<T>(r: crate::Result<Result<T, LayoutError>>) -> Result<T, Reply> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(layout_error(&e)),
        Err(e) => Err(internal(&e)),
    }
}

/// Routes `/v1/layout…`.
pub(super) async fn route(
    state: &AdminState,
    method: &Method,
    rest: &[&str],
    body: &[u8],
) -> Result<Reply, Reply> {
    let lm = &state.layout;
    match (method, rest) {
        (&Method::GET, []) => Ok(json(StatusCode::OK, &layout_info(&lm.layout()))),
        (&Method::POST, ["stage"]) => {
            let req: api::StageLayoutRequest = super::handlers::parse(body)?;
            let mut changes = Vec::new();
            for c in req.changes {
                changes.push(LayoutChange::Role {
                    node: parse_node(&c.node_id)?,
                    role: c.role.map(Into::into),
                });
            }
            match req.zone_redundancy {
                None => {}
                Some(api::ZoneRedundancy::Maximum) => {
                    changes.push(LayoutChange::ZoneRedundancy(None));
                }
                Some(api::ZoneRedundancy::AtLeast(n)) => {
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    changes.push(LayoutChange::ZoneRedundancy(Some(n)));
                }
            }
            updated_or_reply(
                lm.update(|cur| {
                    let mut next = cur.clone();
                    for c in changes {
                        next.stage(c)?;
                    }
                    Ok((next, ()))
                })
                .await,
            )?;
            Ok(json(StatusCode::OK, &layout_info(&lm.layout())))
        }
        (&Method::POST, ["apply"]) => {
            let req: api::LayoutVersionRequest = super::handlers::parse(body)?;
            let messages = updated_or_reply(lm.update(|cur| cur.apply(req.version)).await)?;
            Ok(json(
                StatusCode::OK,
                &api::ApplyLayoutResponse {
                    layout: layout_info(&lm.layout()),
                    messages,
                },
            ))
        }
        (&Method::POST, ["revert"]) => {
            let req: api::LayoutVersionRequest = super::handlers::parse(body)?;
            updated_or_reply(
                lm.update(|cur| {
                    let mut next = cur.clone();
                    next.revert(req.version)?;
                    Ok((next, ()))
                })
                .await,
            )?;
            Ok(json(StatusCode::OK, &layout_info(&lm.layout())))
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such layout route",
        )),
    }
}

/// `GET /v1/status`: every known node, with its role in the current layout.
pub(super) fn status(state: &AdminState) -> api::ClusterStatus {
    let layout = state.layout.layout();
    let mut nodes: Vec<api::NodeInfo> = state
        .membership
        .nodes()
        .into_iter()
        .map(|n| api::NodeInfo {
            node_id: n.id.to_hex(),
            hostname: n
                .info
                .as_ref()
                .map(|i| i.hostname.clone())
                .unwrap_or_default(),
            zone: n.info.as_ref().and_then(|i| i.zone.clone()),
            rpc_addr: n.addresses.first().map(ToString::to_string),
            is_up: n.is_up,
            role: layout.roles().get(&n.id).cloned().map(Into::into),
            version: if n.is_self {
                env!("CARGO_PKG_VERSION").to_string()
            } else {
                String::new()
            },
        })
        .collect();
    // Nodes of the layout that membership has not heard of (yet) are shown down.
    for (id, role) in layout.roles() {
        let hex = id.to_hex();
        if !nodes.iter().any(|n| n.node_id == hex) {
            nodes.push(api::NodeInfo {
                node_id: hex,
                hostname: String::new(),
                zone: Some(role.zone.clone()),
                rpc_addr: None,
                is_up: false,
                role: Some(role.clone().into()),
                version: String::new(),
            });
        }
    }
    api::ClusterStatus {
        node_id: state.node_id.clone(),
        layout_version: layout.version(),
        nodes,
    }
}

/// `GET /v1/health`: how many partitions have all their replicas, or a quorum, reachable
/// (in every live layout version), as this node sees them.
pub(super) fn health(state: &AdminState) -> api::ClusterHealth {
    let layout = state.layout.layout();
    let members = state.membership.nodes();
    let up: BTreeSet<NodeId> = members.iter().filter(|n| n.is_up).map(|n| n.id).collect();
    let storage: BTreeSet<NodeId> = layout
        .roles()
        .iter()
        .filter(|(_, r)| r.capacity.is_some())
        .map(|(n, _)| *n)
        .collect();
    let quorum = crate::table::Quorums::new(
        layout.current().replication_factor,
        state.config.consistency_mode,
    )
    .write;
    let transition = layout.versions().filter(|v| v.is_assigned()).count() > 1;
    let (mut with_quorum, mut all_ok) = (0u64, 0u64);
    for p in 0..N_PARTITIONS {
        let Ok(p) = u16::try_from(p) else { continue };
        let sets = layout.write_sets(p);
        if sets.is_empty() {
            continue;
        }
        let counts: Vec<(usize, usize)> = sets
            .iter()
            .map(|s| (s.iter().filter(|n| up.contains(n)).count(), s.len()))
            .collect();
        if counts.iter().all(|(u, _)| *u >= quorum) {
            with_quorum += 1;
        }
        if !transition && counts.iter().all(|(u, n)| u == n) {
            all_ok += 1;
        }
    }
    let partitions = N_PARTITIONS as u64;
    let status = if !layout.current().is_assigned() || with_quorum < partitions {
        api::HealthStatus::Unavailable
    } else if all_ok < partitions {
        api::HealthStatus::Degraded
    } else {
        api::HealthStatus::Healthy
    };
    api::ClusterHealth {
        status,
        known_nodes: members.len() as u64,
        connected_nodes: up.len() as u64,
        storage_nodes: storage.len() as u64,
        storage_nodes_up: storage.intersection(&up).count() as u64,
        partitions,
        partitions_quorum: with_quorum,
        partitions_all_ok: all_ok,
        partitions_not_fully_replicated: partitions - all_ok,
    }
}
