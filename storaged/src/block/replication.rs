//! [`BlockReplicator`]: writes a chunk to its partition's nodes at write quorum, reads it
//! from the nearest healthy replica.
//!
//! Sans-IO where it can be: the choice of which replica to try first is the pure
//! [`preferred_order`]; the quorum decision is counted in one loop over the answers as
//! they come, so a put returns after the `K`-th acknowledgement, not after the slowest.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;

use super::rpc::{BlockReq, BlockResp, BlockRpc};
use crate::membership::NodeStatus;
use crate::rpc::quorum::fmt_errors;
use crate::rpc::{Encoded, NodeId, Rpc};
use crate::table::replication::{SetsProgress, SetsTracker};
use crate::util::budget::BudgetPermit;
use crate::util::id::Hash;

/// The zone of each node, for choosing the nearest replica (nodes missing from the map
/// are in no zone, hence never "same zone").
pub type Zones = HashMap<NodeId, String>;

/// The zones membership knows, from what each node says about itself.
#[must_use]
pub fn zones_of(nodes: &[NodeStatus]) -> Zones {
    nodes
        .iter()
        .filter_map(|n| Some((n.id, n.info.as_ref()?.zone.clone()?)))
        .collect()
}

/// Orders the replicas of a chunk for reading, nearest first: this node (no network),
/// then nodes of its zone (short round trips), then the others, each group in the given
/// order. Duplicates are dropped.
#[must_use]
pub fn preferred_order(me: NodeId, nodes: &[NodeId], zones: &Zones) -> Vec<NodeId> {
    let my_zone = zones.get(&me);
    let rank = |n: &NodeId| -> u8 {
        if *n == me {
            0
        } else if my_zone.is_some() && zones.get(n) == my_zone {
            1
        } else {
            2
        }
    };
    let mut seen = HashSet::new();
    let mut out: Vec<NodeId> = nodes.iter().copied().filter(|n| seen.insert(*n)).collect();
    // Stable: the caller's order is kept inside each group.
    out.sort_by_key(rank);
    out
}

/// Timeouts of [`BlockReplicator`].
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// How long one call to one node may take (a chunk transfer included), so that a
    /// stuck node holds a put or a get only this long.
    pub call_timeout: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a replicated chunk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// Too few nodes stored the chunk for the write to count.
    #[error(
        "chunk {hash}: write quorum not reached, {got} of {needed} needed nodes stored it{}",
        fmt_errors(errors)
    )]
    Quorum {
        /// The chunk.
        hash: Hash,
        /// Acknowledgements needed.
        needed: usize,
        /// Acknowledgements obtained.
        got: usize,
        /// The nodes that failed, and why.
        errors: Vec<(NodeId, String)>,
    },
    /// No replica could serve the chunk intact.
    #[error("chunk {hash}: no replica could serve it{}", fmt_errors(errors))]
    Unavailable {
        /// The chunk.
        hash: Hash,
        /// Each replica tried, and why it failed.
        errors: Vec<(NodeId, String)>,
    },
}

/// Puts and gets chunks across the nodes that store them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlockReplicator {
    rpc: Rpc,
    cfg: ReplicationConfig,
}

impl BlockReplicator {
    /// A replicator calling through `rpc`. This node's own chunks are reached through
    /// `rpc` too (in-process), so register [`super::BlockRpcHandler`] on it first.
    #[must_use]
    pub fn new(rpc: Rpc, cfg: ReplicationConfig) -> Self {
        Self { rpc, cfg }
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.rpc.node_id()
    }

    /// Sends the chunk to every node of `nodes` at once and returns once `write_quorum`
    /// of them stored it durably; the other transfers go on in the background, so every
    /// replica that is up still gets it. The caller hashed `data`; receivers verify it.
    ///
    /// # Errors
    /// [`ReplicationError::Quorum`] as soon as so many nodes failed or refused that the
    /// quorum is out of reach.
    pub async fn put(
        &self,
        hash: Hash,
        data: Bytes,
        nodes: &[NodeId],
        write_quorum: usize,
    ) -> Result<(), ReplicationError> {
        self.put_to_sets(
            hash,
            data,
            &[nodes.to_vec()],
            write_quorum,
            BudgetPermit::none(),
        )
        .await
    }

    /// Like [`Self::put`] for a layout transition: `sets` are the chunk's write sets (one
    /// per live layout version, `ClusterLayout::write_sets`), every node of every set gets
    /// the chunk once, and the put succeeds when each set has `write_quorum` copies.
    ///
    /// `held` is the chunk's share of the memory budget (its bytes and their one encoding
    /// for the peers). Transfers still running when the put returns keep it; they give it
    /// back early, abandoning those nodes to resync (which fetches a chunk a node's
    /// reference names and its disk lacks), as soon as anybody waits for the budget.
    ///
    /// # Errors
    /// [`ReplicationError::Quorum`] as soon as some set can no longer reach its quorum
    /// (`got` counts the nodes that stored it by then); no set at all is a failure too.
    pub async fn put_to_sets(
        &self,
        hash: Hash,
        data: Bytes,
        sets: &[Vec<NodeId>],
        write_quorum: usize,
        held: BudgetPermit,
    ) -> Result<(), ReplicationError> {
        let mut tracker = SetsQuorum::new(sets, write_quorum);
        let quorum_error = |tracker: SetsQuorum| ReplicationError::Quorum {
            hash,
            needed: write_quorum,
            got: tracker.stored,
            errors: tracker.errors,
        };
        match tracker.decision() {
            Some(true) => return Ok(()),
            Some(false) => return Err(quorum_error(tracker)),
            None => {}
        }
        let nodes = tracker.nodes();
        let req = Encoded::<BlockRpc>::new(BlockReq::Put { hash, data });
        let (tx, mut rx) = tokio::sync::mpsc::channel(nodes.len().max(1));
        let mut transfers = Vec::with_capacity(nodes.len());
        for node in nodes {
            let (rpc, req, tx) = (self.rpc.clone(), req.clone(), tx.clone());
            let timeout = self.cfg.call_timeout;
            let task = tokio::spawn(async move {
                let result = match rpc.call_encoded::<BlockRpc>(node, &req, timeout).await {
                    Ok(BlockResp::Stored) => Ok(()),
                    Ok(BlockResp::Refused(r)) => Err(format!("refused: {r}")),
                    Ok(BlockResp::Failed(e)) => Err(format!("failed: {e}")),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = &result {
                    tracing::debug!(%node, block = %hash, "chunk put failed: {e}");
                }
                // Gone once the quorum was decided: the late answer is not needed.
                let _ = tx.send((node, result)).await;
            });
            transfers.push(task.abort_handle());
        }
        drop((tx, req));
        let mut answered = 0;
        let decided = loop {
            let Some((node, result)) = rx.recv().await else {
                // Every task ended without a decision (a task panicked or the runtime stops).
                break Err(quorum_error(tracker));
            };
            answered += 1;
            tracker.record(node, result);
            match tracker.decision() {
                Some(true) => break Ok(()),
                Some(false) => break Err(quorum_error(tracker)),
                None => {}
            }
        };
        if answered < transfers.len() {
            let budget = self.rpc.budget().clone();
            tokio::spawn(async move {
                let _held = held;
                tokio::select! {
                    () = async { while rx.recv().await.is_some() {} } => {}
                    () = budget.pressed() => {
                        tracing::debug!(block = %hash, "memory budget pressed: slow replicas get the chunk through resync");
                        transfers.iter().for_each(tokio::task::AbortHandle::abort);
                    }
                }
            });
        }
        decided
    }

    /// Reads the chunk from the nearest replica of `nodes` (see [`preferred_order`] with
    /// `zones`), verifying its hash, and falls back to the next one on an error, a
    /// missing chunk or a corrupt one.
    ///
    /// # Errors
    /// [`ReplicationError::Unavailable`] when no replica served it intact.
    pub async fn get(
        &self,
        hash: Hash,
        nodes: &[NodeId],
        zones: &Zones,
    ) -> Result<Bytes, ReplicationError> {
        let ordered = preferred_order(self.node_id(), nodes, zones);
        self.get_ordered(hash, &ordered).await.map(|(_, data)| data)
    }

    /// Like [`Self::get`], trying `ordered` exactly in that order; also says which node
    /// served the chunk.
    ///
    /// # Errors
    /// [`ReplicationError::Unavailable`] when no node served it intact.
    pub async fn get_ordered(
        &self,
        hash: Hash,
        ordered: &[NodeId],
    ) -> Result<(NodeId, Bytes), ReplicationError> {
        let mut errors = Vec::new();
        let req = BlockReq::Get { hash };
        for &node in ordered {
            let why = match self
                .rpc
                .call::<BlockRpc>(node, &req, self.cfg.call_timeout)
                .await
            {
                Ok(BlockResp::Data(data)) => {
                    let verify = data.clone();
                    match tokio::task::spawn_blocking(move || Hash::hash_of(&verify)).await {
                        Ok(got) if got == hash => return Ok((node, data)),
                        Ok(got) => format!("sent bytes hashing to {got}"),
                        Err(e) => format!("verification failed: {e}"),
                    }
                }
                Ok(BlockResp::NotFound) => "not stored there".to_owned(),
                Ok(BlockResp::Corrupt) => "its copy is corrupt".to_owned(),
                Ok(BlockResp::Failed(e)) => format!("failed: {e}"),
                Ok(other) => format!("unexpected answer {other:?}"),
                Err(e) => e.to_string(),
            };
            tracing::debug!(%node, block = %hash, "chunk get failed, trying the next replica: {why}");
            errors.push((node, why));
        }
        Err(ReplicationError::Unavailable { hash, errors })
    }

    /// Asks every node of `nodes` at once whether it stores the chunk; returns each
    /// node's answer, or why it could not answer.
    pub async fn has_on(
        &self,
        hash: Hash,
        nodes: &[NodeId],
    ) -> Vec<(NodeId, Result<bool, String>)> {
        let req = BlockReq::Has { hash };
        let calls = nodes.iter().map(|&node| {
            let req = req.clone();
            async move {
                let r = match self
                    .rpc
                    .call::<BlockRpc>(node, &req, self.cfg.call_timeout)
                    .await
                {
                    Ok(BlockResp::Has(b)) => Ok(b),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                (node, r)
            }
        });
        futures::future::join_all(calls).await
    }

    /// Sends the chunk to one node and waits for its answer (resync's hand-over of a
    /// chunk to an owner that lacks it).
    ///
    /// # Errors
    /// Why the node did not store it.
    pub async fn put_one(&self, hash: Hash, data: Bytes, node: NodeId) -> Result<(), String> {
        match self
            .rpc
            .call::<BlockRpc>(node, &BlockReq::Put { hash, data }, self.cfg.call_timeout)
            .await
        {
            Ok(BlockResp::Stored) => Ok(()),
            Ok(BlockResp::Refused(r)) => Err(format!("refused: {r}")),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The quorum decision of a put to several write sets, without I/O: the table layer's
/// [`SetsTracker`] (each set needs `quorum` nodes that stored the chunk; a node in several
/// sets counts in each), plus what a chunk put reports on failure.
#[derive(Debug)]
struct SetsQuorum {
    tracker: SetsTracker,
    answered: HashSet<NodeId>,
    stored: usize,
    errors: Vec<(NodeId, String)>,
}

impl SetsQuorum {
    fn new(sets: &[Vec<NodeId>], quorum: usize) -> Self {
        Self {
            tracker: SetsTracker::new(sets.to_vec(), quorum),
            answered: HashSet::new(),
            stored: 0,
            errors: Vec::new(),
        }
    }

    /// Every node of every set, once, in order.
    fn nodes(&self) -> Vec<NodeId> {
        self.tracker.nodes()
    }

    /// Records a node's answer (a second answer of the same node is ignored).
    fn record(&mut self, node: NodeId, result: Result<(), String>) {
        if !self.answered.insert(node) {
            return;
        }
        let success = result.is_ok();
        match result {
            Ok(()) => self.stored += 1,
            Err(e) => self.errors.push((node, e)),
        }
        self.tracker.record(node, success);
    }

    /// `Some(true)` once every set has its quorum, `Some(false)` once some set cannot
    /// reach it any more (or there is no set), `None` while undecided.
    fn decision(&self) -> Option<bool> {
        match self.tracker.progress() {
            SetsProgress::Pending => None,
            SetsProgress::Reached => Some(true),
            SetsProgress::Failed => Some(false),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    fn n(i: u8) -> NodeId {
        NodeId::from([i; 32])
    }

    #[test]
    fn self_then_same_zone_then_others_in_given_order() {
        let zones: Zones = [(n(1), "a"), (n(2), "b"), (n(3), "a"), (n(4), "c")]
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect();
        let order = preferred_order(n(1), &[n(2), n(4), n(3), n(1), n(3), n(5)], &zones);
        assert_eq!(order, vec![n(1), n(3), n(2), n(4), n(5)]);
        // Without a zone of our own, no peer is "same zone": the given order is kept.
        let order = preferred_order(n(9), &[n(2), n(5), n(9)], &zones);
        assert_eq!(order, vec![n(9), n(2), n(5)]);
    }

    #[test]
    fn a_put_during_a_transition_needs_a_quorum_in_every_set() {
        let mut q = SetsQuorum::new(&[vec![n(1), n(2), n(3)], vec![n(2), n(3), n(4)]], 2);
        assert_eq!(q.nodes(), vec![n(1), n(2), n(3), n(4)]);
        assert_eq!(q.decision(), None);
        q.record(n(1), Ok(()));
        q.record(n(2), Ok(()));
        assert_eq!(q.decision(), None, "the first set has 2, the second only 1");
        q.record(n(2), Err("late duplicate".into()));
        q.record(n(4), Ok(()));
        assert_eq!(q.decision(), Some(true));
        assert_eq!(q.stored, 3);

        let mut q = SetsQuorum::new(&[vec![n(1), n(2), n(3)], vec![n(3), n(4), n(5)]], 2);
        q.record(n(4), Err("down".into()));
        assert_eq!(q.decision(), None);
        q.record(n(5), Err("down".into()));
        assert_eq!(q.decision(), Some(false), "the new set cannot reach 2");
        assert_eq!(SetsQuorum::new(&[], 1).decision(), Some(false), "no layout");
        assert_eq!(SetsQuorum::new(&[vec![n(1)]], 2).decision(), Some(false));
    }
}
