//! Chunk replication on loopback: three in-process nodes, each with its own QUIC
//! endpoint, RPC system, metadata database and chunk store, sharing one cluster secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::*;
use crate::net::NetConfig;
use crate::rpc::{NodeId, Rpc, RpcConfig, RpcServer};

const SECRET: [u8; 32] = [0x5a; 32];
const T: Duration = Duration::from_secs(10);

/// Every test runs under this bound: a hang is a failure, not a stuck CI job.
async fn within<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out");
}

/// Polls `cond` until it holds, failing the test at the deadline (waits on a condition,
/// never on a fixed delay).
async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + T;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn rpc_config() -> RpcConfig {
    RpcConfig {
        connect_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..RpcConfig::default()
    }
}

fn resync_config() -> ResyncConfig {
    ResyncConfig {
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        idle_poll: Duration::from_millis(200),
        batch: 16,
    }
}

/// Random (incompressible) bytes, so chunk files hold them as they are.
fn chunk(len: usize) -> (Hash, Bytes) {
    let data: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    (Hash::hash_of(&data), Bytes::from(data))
}

struct Node {
    id: NodeId,
    dir: PathBuf,
    manager: Arc<BlockManager>,
    queue: ResyncQueue,
    /// The network side; `None` while the node is stopped (dropping it frees the port).
    net: Option<(Rpc, RpcServer)>,
    addr: SocketAddr,
}

impl Node {
    /// Records one live reference to `h` here: resync only fetches referenced chunks.
    fn reference(&self, h: &Hash) {
        let txn = self.manager.db.begin_write().unwrap();
        super::incref(&txn, h).unwrap();
        txn.commit().unwrap();
    }

    async fn start(root: &tempfile::TempDir, name: &str) -> Self {
        let dir = root.path().join(name);
        let db = Db::open(&dir.join("meta")).unwrap();
        let manager = BlockManager::open(&dir.join("data"), 0, db.clone()).unwrap();
        let queue = ResyncQueue::open(db).unwrap();
        let (rpc, server, addr) =
            Self::start_net(&dir, &manager, "127.0.0.1:0".parse().unwrap()).await;
        Self {
            id: rpc.node_id(),
            dir,
            manager,
            queue,
            net: Some((rpc, server)),
            addr,
        }
    }

    async fn start_net(
        dir: &std::path::Path,
        manager: &Arc<BlockManager>,
        bind: SocketAddr,
    ) -> (Rpc, RpcServer, SocketAddr) {
        let net = NetConfig::new(bind, SECRET, dir.join("node_key"));
        let endpoint = crate::net::bind_retrying(net, T).await;
        let addr = endpoint.local_addr().unwrap();
        let rpc = Rpc::new(endpoint, rpc_config());
        BlockRpcHandler::register(&rpc, manager.clone());
        let server = rpc.serve();
        (rpc, server, addr)
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn rpc(&self) -> &Rpc {
        &self.net.as_ref().expect("node is up").0
    }

    fn replicator(&self) -> BlockReplicator {
        BlockReplicator::new(self.rpc().clone(), ReplicationConfig::default())
    }

    /// Takes the node off the network (its disk stays as it is).
    async fn stop(&mut self) {
        if let Some((rpc, server)) = self.net.take() {
            rpc.endpoint().close("test stop");
            server.shutdown().await;
            rpc.close_connections();
            // Bounded: a connection the peer never closes cleanly (seen after a restart on
            // the same address) would hold this for the 30 s idle timeout; the test does
            // not depend on the endpoint draining.
            let _ = tokio::time::timeout(Duration::from_secs(5), rpc.endpoint().wait_idle()).await;
        }
    }

    /// Brings a stopped node back: same key, same address, same disk.
    async fn restart(&mut self) {
        let (rpc, server, addr) = Self::start_net(&self.dir, &self.manager, self.addr).await;
        assert_eq!((rpc.node_id(), addr), (self.id, self.addr));
        self.net = Some((rpc, server));
    }

    fn worker(&self, placement: Arc<dyn Placement>) -> ResyncWorker {
        ResyncWorker::new(
            self.queue.clone(),
            self.manager.clone(),
            self.replicator(),
            placement,
            resync_config(),
        )
    }
}

fn introduce(nodes: &[&Node]) {
    for a in nodes {
        for b in nodes {
            a.rpc().set_addrs(b.id(), &[b.addr]);
        }
    }
}

async fn three(root: &tempfile::TempDir) -> [Node; 3] {
    let nodes = [
        Node::start(root, "a").await,
        Node::start(root, "b").await,
        Node::start(root, "c").await,
    ];
    introduce(&[&nodes[0], &nodes[1], &nodes[2]]);
    nodes
}

/// Stops every node, last first. (Stopping a peer of a restarted node before it can leave
/// the restarted node waiting for its idle timeout: see `Node::stop`.)
async fn stop_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut().rev() {
        n.stop().await;
    }
}

/// A fixed layout: the same write sets for every chunk.
struct Fixed {
    sets: Vec<Vec<NodeId>>,
    quorum: usize,
}

impl Placement for Fixed {
    fn write_sets(&self, _: &Hash) -> Vec<Vec<NodeId>> {
        self.sets.clone()
    }
    fn write_quorum(&self) -> usize {
        self.quorum
    }
}

#[tokio::test]
async fn put_at_quorum_two_reaches_all_three() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = three(&root).await;
        let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
        let (h, data) = chunk(300_000);
        nodes[0]
            .replicator()
            .put(h, data.clone(), &ids, 2)
            .await
            .unwrap();
        wait_until("every replica stores the chunk", async || {
            nodes.iter().all(|n| n.manager.has_block(&h))
        })
        .await;
        for n in &nodes {
            assert_eq!(n.manager.read_block(h).await.unwrap(), data);
        }
        stop_all(&mut nodes).await;
    })
    .await;
}

#[tokio::test]
async fn get_from_a_node_without_the_chunk_fetches_it_from_a_peer() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = three(&root).await;
        let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
        let (h, data) = chunk(200_000);
        nodes[2].manager.write_block(h, data.clone()).await.unwrap();
        assert!(!nodes[0].manager.has_block(&h));

        let got = nodes[0]
            .replicator()
            .get(h, &ids, &Zones::new())
            .await
            .unwrap();
        assert_eq!(got, data, "byte-identical");

        let (missing, _) = chunk(10);
        let err = nodes[0]
            .replicator()
            .get(missing, &ids, &Zones::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ReplicationError::Unavailable { errors, .. } if errors.len() == 3),
            "{err}"
        );
        stop_all(&mut nodes).await;
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_replica_is_skipped_and_reported() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = three(&root).await;
        let [a, b, c] = [nodes[0].id(), nodes[1].id(), nodes[2].id()];
        // b shares a's zone, so it is asked first; its copy is rotten.
        let zones: Zones = [(a, "z1"), (b, "z1"), (c, "z2")]
            .into_iter()
            .map(|(n, z)| (n, z.to_owned()))
            .collect();
        assert_eq!(preferred_order(a, &[c, b, a], &zones), vec![a, b, c]);
        let (h, data) = chunk(100_000);
        for n in &nodes[1..] {
            n.manager.write_block(h, data.clone()).await.unwrap();
        }
        let (plain, _) = nodes[1].manager.paths(&h);
        std::fs::write(&plain, b"bit rot").unwrap();
        assert!(
            nodes[1]
                .manager
                .set_corrupt_hook(nodes[1].queue.corrupt_hook())
        );

        let ordered = preferred_order(a, &[c, b, a], &zones);
        let (from, got) = nodes[0]
            .replicator()
            .get_ordered(h, &ordered)
            .await
            .unwrap();
        assert_eq!((from, got), (c, data), "served intact by the next replica");
        assert!(
            nodes[1].queue.contains(&h).unwrap(),
            "the node holding the rotten copy queued it for resync"
        );
        stop_all(&mut nodes).await;
    })
    .await;
}

#[tokio::test]
async fn a_chunk_that_does_not_match_its_hash_is_refused() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = three(&root).await;
        let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
        let (h, _) = chunk(1000);
        let (_, other) = chunk(1000);
        let resp = nodes[0]
            .rpc()
            .call::<BlockRpc>(
                ids[1],
                &BlockReq::Put {
                    hash: h,
                    data: other.clone(),
                },
                T,
            )
            .await
            .unwrap();
        assert!(
            matches!(resp, BlockResp::Refused(Refusal::HashMismatch { announced, .. }) if announced == h),
            "{resp:?}"
        );
        assert!(!nodes[1].manager.has_block(&h), "nothing stored");

        // Through the replicator: every receiver (the local one too) refuses.
        let err = nodes[0]
            .replicator()
            .put(h, other, &ids, 2)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReplicationError::Quorum { got: 0, .. }),
            "{err}"
        );
        assert!(nodes.iter().all(|n| !n.manager.has_block(&h)));
        stop_all(&mut nodes).await;
    })
    .await;
}

#[tokio::test]
async fn put_with_two_of_three_down_fails_with_a_quorum_error() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = three(&root).await;
        let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
        nodes[1].stop().await;
        nodes[2].stop().await;
        let (h, data) = chunk(50_000);
        let err = nodes[0]
            .replicator()
            .put(h, data, &ids, 2)
            .await
            .unwrap_err();
        match &err {
            ReplicationError::Quorum {
                needed,
                got,
                errors,
                ..
            } => {
                // The local write may or may not have landed before the two failures
                // made the quorum unreachable: the call fails fast either way.
                assert!(*needed == 2 && *got <= 1, "{err}");
                let mut failed: Vec<NodeId> = errors.iter().map(|(n, _)| *n).collect();
                failed.sort();
                let mut down = vec![ids[1], ids[2]];
                down.sort();
                assert_eq!(failed, down);
            }
            other @ ReplicationError::Unavailable { .. } => panic!("{other}"),
        }
        nodes[0].stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_node_that_was_down_gets_the_chunk_through_resync() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = three(&root).await;
        let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
        nodes[2].stop().await;
        let (h, data) = chunk(250_000);
        nodes[0]
            .replicator()
            .put(h, data.clone(), &ids, 2)
            .await
            .unwrap();
        assert!(!nodes[2].manager.has_block(&h));
        // Referenced and queued while the node is down (as the block-reference sync
        // would); the queue is on disk, so the worker started after the restart sees it.
        nodes[2].reference(&h);
        nodes[2].queue.enqueue(h).unwrap();
        // A second chunk no peer has yet: the worker fails, backs off and retries.
        let (late, late_data) = chunk(20_000);
        nodes[2].reference(&late);
        nodes[2].queue.enqueue(late).unwrap();

        nodes[2].restart().await;
        introduce(&[&nodes[0], &nodes[1], &nodes[2]]);
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = nodes[2].worker(Arc::new(Fixed {
            sets: vec![ids.clone()],
            quorum: 2,
        }));
        let task = tokio::spawn(worker.run(stop_rx));

        let c = &nodes[2];
        wait_until("the restarted node fetched the chunk", async || {
            c.manager.has_block(&h)
        })
        .await;
        assert_eq!(c.manager.read_block(h).await.unwrap(), data);
        wait_until("a failed attempt on the late chunk", async || {
            c.queue.get(&late).unwrap().is_some_and(|e| e.attempts > 0)
        })
        .await;
        nodes[1]
            .manager
            .write_block(late, late_data.clone())
            .await
            .unwrap();
        let c = &nodes[2];
        wait_until("the retry fetched the late chunk", async || {
            c.manager.has_block(&late)
        })
        .await;
        assert_eq!(c.manager.read_block(late).await.unwrap(), late_data);
        wait_until("the queue drained", async || c.queue.is_empty().unwrap()).await;

        stop_tx.send(true).unwrap();
        task.await.unwrap();
        stop_all(&mut nodes).await;
    })
    .await;
}

#[tokio::test]
async fn a_chunk_no_longer_owned_is_dropped_only_once_its_owners_have_it() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = three(&root).await;
        let [a, b] = [nodes[0].id(), nodes[1].id()];
        let (h, data) = chunk(30_000);
        // c holds a chunk the layout now gives to a and b; only a has it.
        nodes[0].manager.write_block(h, data.clone()).await.unwrap();
        nodes[2].manager.write_block(h, data.clone()).await.unwrap();
        let worker = nodes[2].worker(Arc::new(Fixed {
            sets: vec![vec![a, b]],
            quorum: 2,
        }));

        nodes[1].stop().await;
        let err = worker.resync_one(h).await.unwrap_err();
        assert!(err.contains("only 1 of 2"), "{err}");
        assert!(
            nodes[2].manager.has_block(&h),
            "kept while b cannot confirm"
        );

        nodes[1].restart().await;
        introduce(&[&nodes[0], &nodes[1], &nodes[2]]);
        let mut outcome = None;
        wait_until("b reachable again", async || {
            outcome = worker.resync_one(h).await.ok();
            outcome.is_some()
        })
        .await;
        assert_eq!(outcome, Some(ResyncOutcome::Dropped));
        assert!(!nodes[2].manager.has_block(&h));
        assert_eq!(
            nodes[1].manager.read_block(h).await.unwrap(),
            data,
            "handed over"
        );
        stop_all(&mut nodes).await;
    })
    .await;
}

#[tokio::test]
async fn scrub_queues_a_corrupt_chunk_and_resync_repairs_it() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = three(&root).await;
        let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
        let (h, data) = chunk(40_000);
        for n in &nodes {
            n.manager.write_block(h, data.clone()).await.unwrap();
        }
        let c = &nodes[2];
        c.reference(&h);
        assert!(c.manager.set_corrupt_hook(c.queue.corrupt_hook()));
        let (plain, _) = c.manager.paths(&h);
        std::fs::write(&plain, b"bit rot").unwrap();
        let report = c.manager.scrub_once(Duration::ZERO).await.unwrap();
        assert_eq!(report.corrupt, 1);
        assert!(c.queue.contains(&h).unwrap());

        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(
            c.worker(Arc::new(Fixed {
                sets: vec![ids],
                quorum: 2,
            }))
            .run(stop_rx),
        );
        wait_until("the corrupt chunk repaired from a peer", async || {
            c.manager.read_block(h).await.is_ok()
        })
        .await;
        assert_eq!(c.manager.read_block(h).await.unwrap(), data);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        stop_all(&mut nodes).await;
    })
    .await;
}
