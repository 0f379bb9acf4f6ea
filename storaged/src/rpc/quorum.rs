//! Quorum calls: send to N nodes at once, return as soon as K answered.
//!
//! The decision is a sans-IO state machine, [`QuorumTracker`], fed with one result per
//! node; [`call_quorum`] is the thin async driver that spawns the calls and feeds it.
//! A quorum call returns as soon as the outcome is known, either way: after `K`
//! successes, or after `N - K + 1` failures (the quorum can no longer be reached). The
//! calls still running then finish in the background (their results are dropped), so a
//! write sent to every replica still reaches the slow ones.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use super::{NodeId, RpcError};

/// Where a quorum call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Neither enough successes nor too many failures yet.
    Pending,
    /// At least `needed` nodes succeeded.
    Reached,
    /// So many nodes failed that `needed` successes are out of reach.
    Failed,
}

/// The quorum was not reached: how many succeeded, and why the others failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "quorum not reached: {got} of {needed} needed nodes answered{}",
    fmt_errors(errors)
)]
pub struct QuorumError {
    /// Successes needed.
    pub needed: usize,
    /// Successes obtained.
    pub got: usize,
    /// The nodes that failed, with their errors.
    pub errors: Vec<(NodeId, RpcError)>,
}

/// `; <node>: <error>` for each failed node (short node ids), for error messages of
/// anything that asks several nodes.
pub fn fmt_errors<E: std::fmt::Display>(errors: &[(NodeId, E)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (node, e) in errors {
        let hex = node.to_hex();
        let short = hex.get(..8).unwrap_or(&hex);
        let _ = write!(out, "; {short}: {e}");
    }
    out
}

/// The state of one quorum call: `total` nodes asked, `needed` successes wanted.
///
/// Invariants: `successes.len() + errors.len() ≤ total`; each node is recorded at most
/// once (a second result for the same node is ignored).
#[derive(Debug)]
pub struct QuorumTracker<T> {
    total: usize,
    needed: usize,
    successes: Vec<(NodeId, T)>,
    errors: Vec<(NodeId, RpcError)>,
    seen: HashSet<NodeId>,
}

impl<T> QuorumTracker<T> {
    /// A call to `total` nodes wanting `needed` successes. `needed > total` is
    /// [`Progress::Failed`] from the start; `needed == 0` is [`Progress::Reached`].
    #[must_use]
    pub fn new(total: usize, needed: usize) -> Self {
        Self {
            total,
            needed,
            successes: Vec::with_capacity(needed.min(total)),
            errors: Vec::new(),
            seen: HashSet::with_capacity(total),
        }
    }

    /// Records the result of `node` and says where the call stands.
    pub fn record(&mut self, node: NodeId, result: Result<T, RpcError>) -> Progress {
        let complete = self.successes.len() + self.errors.len() >= self.total;
        if complete || !self.seen.insert(node) {
            return self.progress();
        }
        match result {
            Ok(v) => self.successes.push((node, v)),
            Err(e) => self.errors.push((node, e)),
        }
        debug_assert!(self.successes.len() + self.errors.len() <= self.total);
        self.progress()
    }

    /// Where the call stands.
    #[must_use]
    pub fn progress(&self) -> Progress {
        if self.successes.len() >= self.needed {
            Progress::Reached
        } else if self.total - self.errors.len().min(self.total) < self.needed {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    /// The successes if the quorum was reached, else the error with every failure.
    ///
    /// # Errors
    /// [`QuorumError`] unless [`Progress::Reached`].
    pub fn finish(self) -> Result<Vec<(NodeId, T)>, QuorumError> {
        if self.progress() == Progress::Reached {
            Ok(self.successes)
        } else {
            Err(QuorumError {
                needed: self.needed,
                got: self.successes.len(),
                errors: self.errors,
            })
        }
    }
}

/// Calls `call(node)` for every node at once, each bounded by `timeout`, and returns as
/// soon as `quorum` of them succeeded (or can no longer succeed).
///
/// Duplicate nodes are asked once: a node cannot count twice toward a quorum. Each call
/// runs in its own task, so the calls still running when this returns finish in the
/// background (bounded by `timeout`); their results are dropped.
///
/// # Errors
/// [`QuorumError`] with every failure seen before the decision.
pub async fn call_quorum<T, F, Fut>(
    nodes: &[NodeId],
    quorum: usize,
    timeout: Duration,
    mut call: F,
) -> Result<Vec<(NodeId, T)>, QuorumError>
where
    F: FnMut(NodeId) -> Fut,
    Fut: Future<Output = Result<T, RpcError>> + Send + 'static,
    T: Send + 'static,
{
    let mut unique = HashSet::with_capacity(nodes.len());
    let nodes: Vec<NodeId> = nodes
        .iter()
        .copied()
        .filter(|n| unique.insert(*n))
        .collect();
    let mut tracker = QuorumTracker::new(nodes.len(), quorum);
    if tracker.progress() != Progress::Pending {
        return tracker.finish();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(nodes.len().max(1));
    for &node in &nodes {
        let fut = call(node);
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(RpcError::Timeout(timeout)),
            };
            // The receiver is gone once the quorum was decided: the result is not needed.
            let _ = tx.send((node, result)).await;
        });
    }
    drop(tx);
    while let Some((node, result)) = rx.recv().await {
        if tracker.record(node, result) != Progress::Pending {
            return tracker.finish();
        }
    }
    // Every sender is gone without a decision: some call task panicked or was cancelled.
    let answered: HashSet<NodeId> = tracker.seen.clone();
    for node in nodes.into_iter().filter(|n| !answered.contains(n)) {
        tracker.record(node, Err(RpcError::Aborted));
    }
    tracker.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use crate::rpc::RemoteError;

    fn n(i: u8) -> NodeId {
        NodeId::from([i; 32])
    }

    fn fail() -> Result<u32, RpcError> {
        Err(RpcError::Remote(RemoteError::ShuttingDown))
    }

    #[test]
    fn tracker_reaches_quorum_on_the_kth_success() {
        let mut t = QuorumTracker::new(3, 2);
        assert_eq!(t.progress(), Progress::Pending);
        assert_eq!(t.record(n(1), Ok(1)), Progress::Pending);
        assert_eq!(t.record(n(1), Ok(9)), Progress::Pending, "same node twice");
        assert_eq!(t.record(n(2), Ok(2)), Progress::Reached);
        assert_eq!(t.finish().unwrap(), vec![(n(1), 1), (n(2), 2)]);
    }

    #[test]
    fn tracker_reaches_quorum_despite_a_failure() {
        let mut t = QuorumTracker::new(3, 2);
        assert_eq!(t.record(n(1), fail()), Progress::Pending);
        assert_eq!(t.record(n(2), Ok(2)), Progress::Pending);
        assert_eq!(t.record(n(3), Ok(3)), Progress::Reached);
        assert_eq!(t.finish().unwrap().len(), 2);
    }

    #[test]
    fn tracker_fails_as_soon_as_quorum_is_out_of_reach() {
        let mut t = QuorumTracker::new(3, 2);
        assert_eq!(t.record(n(1), Ok(1)), Progress::Pending);
        assert_eq!(t.record(n(2), fail()), Progress::Pending);
        assert_eq!(
            t.record(n(3), Err(RpcError::Timeout(Duration::ZERO))),
            Progress::Failed
        );
        let e = t.finish().unwrap_err();
        assert_eq!((e.needed, e.got, e.errors.len()), (2, 1, 2));
        assert!(e.to_string().contains("1 of 2"), "{e}");

        // Two failures out of three already rule out a quorum of two.
        let mut t = QuorumTracker::<u32>::new(3, 2);
        assert_eq!(t.record(n(1), fail()), Progress::Pending);
        assert_eq!(t.record(n(2), fail()), Progress::Failed);
    }

    #[test]
    fn tracker_edge_cases() {
        assert_eq!(
            QuorumTracker::<u32>::new(3, 0).progress(),
            Progress::Reached
        );
        assert_eq!(QuorumTracker::<u32>::new(2, 3).progress(), Progress::Failed);
        assert_eq!(QuorumTracker::<u32>::new(0, 1).finish().unwrap_err().got, 0);
        let mut t = QuorumTracker::new(1, 1);
        assert_eq!(t.record(n(1), Ok(1)), Progress::Reached);
        assert_eq!(
            t.record(n(2), fail()),
            Progress::Reached,
            "extra results ignored"
        );
        assert_eq!(t.finish().unwrap().len(), 1);
    }

    async fn within<F: Future<Output = ()>>(f: F) {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("test timed out");
    }

    #[tokio::test]
    async fn driver_returns_early_and_the_rest_finish_in_the_background() {
        within(async {
            let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let mut slow = Some((gate_rx, done_tx));
            let got = call_quorum(&[n(1), n(2), n(3)], 2, Duration::from_secs(30), |node| {
                let slow = if node == n(3) { slow.take() } else { None };
                async move {
                    if let Some((gate, done)) = slow {
                        // Blocks until the test opens the gate: after the call returned.
                        gate.await.unwrap();
                        done.send(()).unwrap();
                    }
                    Ok(node.0[0])
                }
            })
            .await
            .unwrap();
            let mut ids: Vec<u8> = got.iter().map(|(_, v)| *v).collect();
            ids.sort_unstable();
            assert_eq!(ids, vec![1, 2], "returned before the slow node answered");
            gate_tx.send(()).unwrap();
            done_rx.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn driver_times_out_slow_nodes_and_reports_every_failure() {
        within(async {
            let timeout = Duration::from_millis(50);
            let err = call_quorum(&[n(1), n(2), n(3)], 2, timeout, |node| async move {
                match node.0[0] {
                    1 => Ok(1u32),
                    2 => fail(),
                    _ => std::future::pending().await,
                }
            })
            .await
            .unwrap_err();
            assert_eq!((err.needed, err.got), (2, 1));
            let mut kinds: Vec<String> = err
                .errors
                .iter()
                .map(|(node, e)| format!("{}:{}", node.0[0], matches!(e, RpcError::Timeout(_))))
                .collect();
            kinds.sort();
            assert_eq!(kinds, vec!["2:false", "3:true"]);

            // A quorum of one is reached even though another node never answers.
            let ok = call_quorum(&[n(1), n(3)], 1, timeout, |node| async move {
                if node == n(1) {
                    Ok(1u32)
                } else {
                    std::future::pending().await
                }
            })
            .await
            .unwrap();
            assert_eq!(ok, vec![(n(1), 1)]);
        })
        .await;
    }

    #[tokio::test]
    async fn driver_dedups_nodes_and_handles_trivial_quorums() {
        within(async {
            let err = call_quorum(&[n(1), n(1), n(1)], 2, Duration::from_secs(1), |_| async {
                Ok(1u32)
            })
            .await
            .unwrap_err();
            assert_eq!(
                (err.needed, err.got),
                (2, 0),
                "one node counts once: no quorum of 2"
            );
            let none = call_quorum(&[n(1)], 0, Duration::from_secs(1), |_| async {
                Ok::<u32, RpcError>(1)
            })
            .await
            .unwrap();
            assert!(none.is_empty());
            let panicked = call_quorum(
                &[n(1), n(2)],
                2,
                Duration::from_secs(1),
                |node| async move {
                    assert_ne!(node, n(2), "simulated crash of a call task");
                    Ok(1u32)
                },
            )
            .await
            .unwrap_err();
            assert!(matches!(panicked.errors[..], [(_, RpcError::Aborted)]));
        })
        .await;
    }
}
