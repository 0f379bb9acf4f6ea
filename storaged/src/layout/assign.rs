//! The partition → nodes assignment: a pure, deterministic function of the roles.
//!
//! # Algorithm
//!
//! Placing `rf` replicas of each of the 256 partitions is a flow problem (Garage's idea):
//!
//! ```text
//! source ─zr──────▶ up(p) ──1──────▶ pz(p, zone) ──1──▶ node(n) ──units(n)──▶ sink
//!        ─(rf-zr)─▶ down(p) ─(rf-zr)─▶
//! ```
//!
//! One unit of flow is one replica. `up(p)` sends its `zr` units to `zr` *distinct* zones, so
//! every partition spans at least `zr` zones; `down(p)` places the other `rf - zr` anywhere;
//! `pz → node` has capacity 1, so a node holds a partition at most once; and `node → sink`
//! has capacity `units(n) = min(256, capacity(n) / partition_size)`. An assignment exists
//! for a given partition size exactly when the maximum flow is `rf × 256`.
//!
//! 1. **Capacity.** The usable capacity of the cluster is `256 × partition_size`, and
//!    feasibility is monotone in the size (smaller partitions only add room), so a binary
//!    search with a maximum flow (Dinic) per step finds the largest feasible partition size.
//! 2. **Movement.** At that size, a minimum-cost flow picks among all feasible assignments:
//!    the edge `pz(p, z) → node(n)` costs `MOVE` unless `n` held `p` in the previous
//!    assignment, so the optimum keeps every replica that can stay and moves the fewest.
//! 3. **Balance.** `node → sink` is split into unit edges whose costs grow with the fill
//!    ratio `k × partition_size / capacity(n)` of the `k`-th partition on the node. The sum of
//!    these costs is convex and smallest when nodes fill in proportion to their capacity;
//!    all of it is worth less than one move, so balance only breaks ties between
//!    assignments that move the same number of replicas.
//! 4. **Diversity.** A small pseudo-random cost per (partition, node), worth less than one
//!    step of balance, breaks the remaining ties so that each node shares partitions with
//!    many different nodes. Without it, nodes pair up (A always with B), and a later change
//!    must chain extra moves to respect the zone constraints.
//!
//! Consequence of that order: a node added to a zone that does not limit capacity may
//! receive nothing (moving data to it would not add usable space); it fills when the layout
//! next needs it.
//!
//! Nodes, zones and partitions are numbered in sorted order and the flow algorithms are
//! deterministic, so the same inputs always give the same assignment.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::flow::FlowGraph;
use super::{LayoutError, N_PARTITIONS, NodeId, NodeRole};

/// Granularity of the balance cost: fill ratios are compared to 1/`BALANCE_SCALE`. Finer
/// means more distinct path costs, hence more phases of the minimum-cost flow; 1/64 keeps
/// nodes within a few partitions of their proportional share.
const BALANCE_SCALE: u64 = 64;

/// What the assignment must guarantee, besides the roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssignParams {
    /// Copies of each partition, on distinct nodes.
    pub replication_factor: usize,
    /// Distinct zones each partition must span; `None` means as many as possible,
    /// `min(replication_factor, zones)`.
    pub zone_redundancy: Option<usize>,
}

/// The result of [`assign`]: which nodes store each partition, and how big partitions are.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Assignment {
    /// Bytes each partition may hold on each of its nodes: the largest size such that every
    /// node's share fits its capacity.
    pub partition_size: u64,
    /// Zones each partition spans at least (the requested or the maximal redundancy).
    pub zone_redundancy: usize,
    /// `partitions[p]` lists the `replication_factor` distinct nodes of partition `p`.
    /// A node that keeps a partition keeps its slot in the list.
    pub partitions: Vec<Vec<NodeId>>,
}

impl Assignment {
    /// Bytes the cluster can store (each byte being replicated `replication_factor` times).
    #[must_use]
    pub fn usable_capacity(&self) -> u64 {
        self.partition_size.saturating_mul(N_PARTITIONS as u64)
    }

    /// Partitions held by each node that holds any.
    #[must_use]
    pub fn counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for n in self.partitions.iter().flatten() {
            *counts.entry(*n).or_insert(0) += 1;
        }
        counts
    }
}

/// Replica slots of `to` that `from` did not have: the copies a change has to transfer.
#[must_use]
pub fn replicas_moved(from: &[Vec<NodeId>], to: &[Vec<NodeId>]) -> usize {
    to.iter()
        .enumerate()
        .map(|(p, nodes)| {
            let old = from.get(p).map_or(&[][..], Vec::as_slice);
            nodes.iter().filter(|n| !old.contains(n)).count()
        })
        .sum()
}

/// Partitions whose set of nodes differs between `from` and `to`.
#[must_use]
pub fn partitions_moved(from: &[Vec<NodeId>], to: &[Vec<NodeId>]) -> usize {
    (0..from.len().max(to.len()))
        .filter(|&p| {
            let set = |a: &[Vec<NodeId>]| {
                a.get(p)
                    .map(|v| v.iter().copied().collect::<BTreeSet<NodeId>>())
            };
            set(from) != set(to)
        })
        .count()
}

/// Computes the assignment of every partition (see the module docs for the algorithm).
///
/// `previous` is the assignment being replaced (empty or `None` for a first layout): its
/// replicas are kept wherever the new roles allow it. Gateways (`capacity: None`) get no
/// partition.
///
/// # Errors
/// [`LayoutError::InvalidReplicationFactor`], [`LayoutError::ZeroCapacity`],
/// [`LayoutError::NotEnoughStorageNodes`], [`LayoutError::ZoneRedundancyImpossible`],
/// [`LayoutError::CapacityTooSmall`].
pub fn assign(
    roles: &BTreeMap<NodeId, NodeRole>,
    params: AssignParams,
    previous: Option<&[Vec<NodeId>]>,
) -> Result<Assignment, LayoutError> {
    let problem = Problem::new(roles, params)?;
    let partition_size = problem.best_partition_size()?;
    let previous = previous.unwrap_or(&[]);
    let mut net = Network::build(&problem, partition_size, Some(previous));
    let want = problem.total_replicas();
    let flowed = net.graph.min_cost_flow(net.source, net.sink, want);
    debug_assert_eq!(flowed, want, "the partition size was checked feasible");
    let partitions = net.extract(&problem, previous);
    Ok(Assignment {
        partition_size,
        zone_redundancy: problem.zone_redundancy,
        partitions,
    })
}

/// A storage node, as the flow network sees it.
#[derive(Debug, Clone)]
struct StorageNode {
    id: NodeId,
    capacity: u64,
    zone: usize,
}

/// Validated inputs of the assignment, numbered densely in sorted order.
#[derive(Debug, Clone)]
struct Problem {
    /// Storage nodes sorted by id.
    nodes: Vec<StorageNode>,
    /// Number of zones with storage; `StorageNode::zone` indexes them in name order.
    zones: usize,
    replication_factor: usize,
    zone_redundancy: usize,
}

impl Problem {
    /// Checks the roles and parameters, refusing layouts that cannot exist.
    fn new(roles: &BTreeMap<NodeId, NodeRole>, params: AssignParams) -> Result<Self, LayoutError> {
        let rf = params.replication_factor;
        if rf == 0 {
            return Err(LayoutError::InvalidReplicationFactor(rf));
        }
        let zone_names: BTreeSet<&str> = roles
            .values()
            .filter(|r| r.capacity.is_some())
            .map(|r| r.zone.as_str())
            .collect();
        let zone_index = |z: &str| zone_names.iter().position(|n| *n == z).unwrap_or(0);
        let mut nodes = Vec::new();
        for (id, role) in roles {
            match role.capacity {
                None => {}
                Some(0) => return Err(LayoutError::ZeroCapacity(*id)),
                Some(capacity) => nodes.push(StorageNode {
                    id: *id,
                    capacity,
                    zone: zone_index(&role.zone),
                }),
            }
        }
        if nodes.len() < rf {
            return Err(LayoutError::NotEnoughStorageNodes {
                needed: rf,
                have: nodes.len(),
            });
        }
        let zones = zone_names.len();
        let zone_redundancy = params.zone_redundancy.unwrap_or(rf.min(zones));
        if zone_redundancy == 0 || zone_redundancy > rf || zone_redundancy > zones {
            return Err(LayoutError::ZoneRedundancyImpossible {
                requested: zone_redundancy,
                zones,
                replication_factor: rf,
            });
        }
        Ok(Self {
            nodes,
            zones,
            replication_factor: rf,
            zone_redundancy,
        })
    }

    /// Replicas to place: one unit of flow each.
    fn total_replicas(&self) -> i64 {
        i64::try_from(self.replication_factor * N_PARTITIONS).unwrap_or(i64::MAX)
    }

    /// Whether every partition can get its replicas when partitions are `size` bytes.
    fn feasible(&self, size: u64) -> bool {
        let mut net = Network::build(self, size, None);
        net.graph.max_flow(net.source, net.sink) == self.total_replicas()
    }

    /// The largest feasible partition size, by binary search (feasibility is monotone).
    fn best_partition_size(&self) -> Result<u64, LayoutError> {
        if !self.feasible(1) {
            return Err(LayoutError::CapacityTooSmall);
        }
        let total: u64 = self
            .nodes
            .iter()
            .map(|n| n.capacity)
            .fold(0, u64::saturating_add);
        let replicas = (self.replication_factor * N_PARTITIONS) as u64;
        // Every replica takes `size` bytes somewhere, so `size × replicas ≤ total`.
        let (mut lo, mut hi) = (1u64, (total / replicas).max(1));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.feasible(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }
}

/// Partitions a node can hold when partitions are `size` bytes.
fn units(capacity: u64, size: u64) -> i64 {
    let n = (capacity / size.max(1)).min(N_PARTITIONS as u64);
    i64::try_from(n).unwrap_or(0)
}

/// The flow network of the module docs, with the edges needed to read the result back.
struct Network {
    graph: FlowGraph,
    source: usize,
    sink: usize,
    /// `(partition, node index, edge pz → node)` for every candidate replica.
    placements: Vec<(usize, usize, usize)>,
}

impl Network {
    /// Builds the network for partitions of `size` bytes. With `previous` (the min-cost
    /// variant), placements away from it cost a move and node edges carry balance costs;
    /// without it (the feasibility check), costs are zero and node edges are single.
    fn build(problem: &Problem, size: u64, previous: Option<&[Vec<NodeId>]>) -> Self {
        let (rf, zr, zones) = (
            problem.replication_factor,
            problem.zone_redundancy,
            problem.zones,
        );
        let np = N_PARTITIONS;
        let (source, sink) = (0, 1);
        let up = |p: usize| 2 + p;
        let down = |p: usize| 2 + np + p;
        let pz = |p: usize, z: usize| 2 + 2 * np + p * zones + z;
        let node = |n: usize| 2 + 2 * np + np * zones + n;
        let mut graph = FlowGraph::new(node(problem.nodes.len()));
        let costs = Costs::new(problem.replication_factor);
        let spread = (rf - zr) as i64;
        let mut placements = Vec::with_capacity(np * problem.nodes.len());
        for p in 0..np {
            graph.add_edge(source, up(p), zr as i64, 0);
            if spread > 0 {
                graph.add_edge(source, down(p), spread, 0);
            }
            // Edges are tried in insertion order: rotating it per partition spreads the
            // pairs of nodes that share partitions, which leaves later changes more room.
            for z in (0..zones).map(|k| (k + p) % zones) {
                graph.add_edge(up(p), pz(p, z), 1, 0);
                if spread > 0 {
                    graph.add_edge(down(p), pz(p, z), spread, 0);
                }
            }
            let held = previous.and_then(|prev| prev.get(p));
            let count = problem.nodes.len();
            for i in (0..count).map(|k| (k + p) % count) {
                let n = &problem.nodes[i];
                let cost = match (previous, held) {
                    (None, _) => 0,
                    (Some(_), Some(h)) if h.contains(&n.id) => costs.diversity(p, &n.id),
                    (Some(_), _) => costs.moved + costs.diversity(p, &n.id),
                };
                let e = graph.add_edge(pz(p, n.zone), node(i), 1, cost);
                placements.push((p, i, e));
            }
        }
        for (i, n) in problem.nodes.iter().enumerate() {
            let cap = units(n.capacity, size);
            if previous.is_none() {
                graph.add_edge(node(i), sink, cap, 0);
                continue;
            }
            for k in 1..=cap {
                let cost = costs.balance * balance_ratio(k, size, n.capacity);
                graph.add_edge(node(i), sink, 1, cost);
            }
        }
        Self {
            graph,
            source,
            sink,
            placements,
        }
    }

    /// Reads the chosen replicas back, keeping each retained node in its previous slot.
    fn extract(&self, problem: &Problem, previous: &[Vec<NodeId>]) -> Vec<Vec<NodeId>> {
        let mut chosen: Vec<BTreeSet<NodeId>> = vec![BTreeSet::new(); N_PARTITIONS];
        for &(p, i, e) in &self.placements {
            if self.graph.flow(e) > 0 {
                chosen[p].insert(problem.nodes[i].id);
            }
        }
        chosen
            .iter()
            .enumerate()
            .map(|(p, set)| keep_slots(previous.get(p).map_or(&[][..], Vec::as_slice), set))
            .collect()
    }
}

/// Range of the diversity cost of a placement (see [`Costs`]).
const DIVERSITY: u64 = 4;

/// Unit costs of the minimum-cost flow, nested so that each criterion only breaks the ties
/// of the one before: one move outweighs any total of balance costs, one step of balance
/// outweighs any total of diversity costs.
struct Costs {
    /// Cost of placing a replica where the previous assignment did not have it.
    moved: i64,
    /// Multiplier of the fill ratio of [`balance_ratio`].
    balance: i64,
}

impl Costs {
    fn new(replication_factor: usize) -> Self {
        let replicas = (replication_factor * N_PARTITIONS) as u64;
        let balance = replicas * DIVERSITY + 1;
        let moved = replicas * (BALANCE_SCALE * balance + DIVERSITY) + 1;
        Self {
            moved: i64::try_from(moved).unwrap_or(i64::MAX / 8),
            balance: i64::try_from(balance).unwrap_or(i64::MAX / 8),
        }
    }

    /// A deterministic pseudo-random cost in `0..DIVERSITY` for node `n` holding partition
    /// `p`. Without it, ties are broken in index order and the same pairs of nodes end up
    /// sharing all their partitions; then a later change cannot shed a node's partitions to
    /// a new node of its partner's zone without extra moves. Diverse pairs avoid that.
    fn diversity(&self, p: usize, n: &NodeId) -> i64 {
        let mut x = u64::from_le_bytes([
            n.0[0], n.0[1], n.0[2], n.0[3], n.0[4], n.0[5], n.0[6], n.0[7],
        ]);
        x ^= (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        i64::try_from((x ^ (x >> 31)) % DIVERSITY).unwrap_or(0)
    }
}

/// Fill ratio of a node after its `k`-th partition, in `0..=BALANCE_SCALE`.
fn balance_ratio(k: i64, size: u64, capacity: u64) -> i64 {
    let k = u128::try_from(k).unwrap_or(0);
    let ratio = k * u128::from(BALANCE_SCALE) * u128::from(size) / u128::from(capacity.max(1));
    i64::try_from(ratio.min(u128::from(BALANCE_SCALE))).unwrap_or(0)
}

/// Orders `set` like `previous`: a node that stays keeps its index, new nodes (in id order)
/// take the slots of those that left, then any remaining slots.
fn keep_slots(previous: &[NodeId], set: &BTreeSet<NodeId>) -> Vec<NodeId> {
    let mut fresh = set.iter().filter(|n| !previous.contains(n)).copied();
    let mut out: Vec<NodeId> = previous
        .iter()
        .filter_map(|n| {
            if set.contains(n) {
                Some(*n)
            } else {
                fresh.next()
            }
        })
        .collect();
    out.extend(fresh);
    out
}

#[cfg(test)]
mod tests;
