//! In-process nodes on loopback (real QUIC, real RPC), each with its own redb: replicas
//! made to diverge by writing into one node's local table, then synced.
//!
//! The harness is a trimmed copy of `replicated_tests.rs`'s (that one is private to its
//! module), with a schema whose hook records what it saw.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::*;
use crate::config::ConsistencyMode;
use crate::layout::{ClusterLayout, LayoutChange, NodeRole, partition_of};
use crate::net::{Endpoint, NetConfig};
use crate::rpc::{Rpc, RpcConfig, RpcServer};
use crate::table::{Db, LayoutReplication, Quorums, RangeStart, UpdateTx};
use crate::util::crdt::{Crdt, Lww, LwwMap};

const SECRET: [u8; 32] = [0x5c; 32];
const T: Duration = Duration::from_secs(5);

async fn within<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("test timed out");
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Doc {
    bucket: String,
    name: String,
    fields: LwwMap<String, String>,
}

impl Doc {
    fn new(bucket: &str, name: &str, fields: &[(&str, u64, &str)]) -> Self {
        let mut map = LwwMap::default();
        for (k, ts, v) in fields {
            map.0
                .insert((*k).to_owned(), Lww::new(*ts, (*v).to_owned()));
        }
        Self {
            bucket: bucket.into(),
            name: name.into(),
            fields: map,
        }
    }

    fn merged(&self, other: &Self) -> Self {
        let mut m = self.clone();
        m.merge(other);
        m
    }
}

impl Crdt for Doc {
    fn merge(&mut self, other: &Self) {
        self.fields.merge(&other.fields);
    }
}

impl Entry<String, String> for Doc {
    fn partition_key(&self) -> &String {
        &self.bucket
    }
    fn sort_key(&self) -> &String {
        &self.name
    }
}

/// Records the name of every entry its hook saw change.
#[derive(Default)]
struct Docs {
    hooked: Arc<Mutex<Vec<String>>>,
}

impl TableSchema for Docs {
    const TABLE_NAME: &'static str = "test_sync_docs_v1";
    type P = String;
    type S = String;
    type E = Doc;
    type Filter = ();
    fn matches_filter(_: &Doc, (): &()) -> bool {
        true
    }
    fn updated(
        &self,
        _: &mut UpdateTx<'_>,
        _: Option<&Doc>,
        new: Option<&Doc>,
    ) -> crate::error::Result<()> {
        if let Some(d) = new {
            self.hooked.lock().unwrap().push(d.name.clone());
        }
        Ok(())
    }
}

struct Node {
    dir: std::path::PathBuf,
    table: Arc<Table<Docs>>,
    hooked: Arc<Mutex<Vec<String>>>,
    layout: watch::Receiver<Arc<ClusterLayout>>,
    net: Option<(Rpc, RpcServer, SocketAddr, Arc<ReplicatedTable<Docs>>)>,
}

impl Node {
    async fn start(
        root: &tempfile::TempDir,
        name: &str,
        layout: watch::Receiver<Arc<ClusterLayout>>,
    ) -> Self {
        let dir = root.path().join(name);
        let db = Db::open(&dir.join("meta")).unwrap();
        let schema = Docs::default();
        let hooked = Arc::clone(&schema.hooked);
        let table = Table::open(schema, db).unwrap();
        let mut node = Self {
            dir,
            table,
            hooked,
            layout,
            net: None,
        };
        node.up().await;
        node
    }

    async fn up(&mut self) {
        let cfg = NetConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            SECRET,
            self.dir.join("node_key"),
        );
        let endpoint = Endpoint::bind(cfg).await.unwrap();
        let addr = endpoint.local_addr().unwrap();
        let rpc = Rpc::new(
            endpoint,
            RpcConfig {
                connect_timeout: Duration::from_millis(500),
                backoff_min: Duration::from_millis(10),
                backoff_max: Duration::from_millis(50),
                ..RpcConfig::default()
            },
        );
        let repl = ReplicatedTable::new(
            Arc::clone(&self.table),
            Arc::new(LayoutReplication::new(
                self.layout.clone(),
                ConsistencyMode::Consistent,
            )),
            rpc.clone(),
            T,
        );
        let server = rpc.serve();
        self.net = Some((rpc, server, addr, repl));
    }

    async fn down(&mut self) {
        let (rpc, server, _, repl) = self.net.take().unwrap();
        repl.flush_repairs().await;
        rpc.endpoint().close("test stop");
        server.shutdown().await;
        rpc.close_connections();
        rpc.endpoint().wait_idle().await;
    }

    fn rpc(&self) -> &Rpc {
        &self.net.as_ref().unwrap().0
    }

    fn repl(&self) -> &Arc<ReplicatedTable<Docs>> {
        &self.net.as_ref().unwrap().3
    }

    fn id(&self) -> NodeId {
        self.rpc().node_id()
    }

    async fn local(&self, d: &Doc) -> Option<Doc> {
        self.table.get(&d.bucket, &d.name).await.unwrap()
    }

    async fn all(&self) -> Vec<Doc> {
        self.table.get_all(None).await.unwrap()
    }

    /// Writes straight into this node's replica, as if the other replicas missed it.
    async fn put_local(&self, docs: Vec<Doc>) {
        self.table.insert_many(docs).await.unwrap();
    }

    fn hooked(&self) -> Vec<String> {
        self.hooked.lock().unwrap().clone()
    }
}

fn introduce(nodes: &[Node]) {
    for a in nodes.iter().filter(|n| n.net.is_some()) {
        for b in nodes.iter().filter(|n| n.net.is_some()) {
            a.rpc().set_addrs(b.id(), &[b.net.as_ref().unwrap().2]);
        }
    }
}

fn next_layout(
    layout: &ClusterLayout,
    add: &[(NodeId, usize)],
    remove: &[NodeId],
) -> ClusterLayout {
    let mut l = layout.clone();
    for (node, zone) in add {
        l.stage(LayoutChange::Role {
            node: *node,
            role: Some(NodeRole::storage(format!("zone{zone}"), 1 << 40)),
        })
        .unwrap();
    }
    for node in remove {
        l.stage(LayoutChange::Role {
            node: *node,
            role: None,
        })
        .unwrap();
    }
    l.apply(l.version() + 1).unwrap().0
}

/// `n` nodes; the first three hold every partition (rf 3, three zones).
async fn cluster(
    root: &tempfile::TempDir,
    n: usize,
) -> (Vec<Node>, watch::Sender<Arc<ClusterLayout>>, ClusterLayout) {
    let (tx, rx) = watch::channel(Arc::new(ClusterLayout::new(3)));
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::start(root, &format!("n{i}"), rx.clone()).await);
    }
    introduce(&nodes);
    let add: Vec<(NodeId, usize)> = nodes
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, n)| (n.id(), i))
        .collect();
    let v1 = next_layout(&ClusterLayout::new(3), &add, &[]);
    tx.send(Arc::new(v1.clone())).unwrap();
    (nodes, tx, v1)
}

fn partition(bucket: &str) -> u16 {
    partition_of(&Hash::hash_of(bucket.as_bytes()))
}

/// A bucket name in another partition than `bucket`.
fn elsewhere(bucket: &str) -> String {
    (0..)
        .map(|i| format!("other{i}"))
        .find(|b| partition(b) != partition(bucket))
        .unwrap()
}

/// `node`'s digest of `p`, asked through the RPC service (as a peer sees it).
async fn digest_of(from: &Node, node: &Node, p: u16) -> Vec<[u8; 32]> {
    let req = TableReq::PartitionDigest { partition: p };
    match from
        .rpc()
        .call::<TableRpc<Docs>>(node.id(), &req, T)
        .await
        .unwrap()
    {
        TableResp::Digest(d) => d,
        other => panic!("not a digest: {other:?}"),
    }
}

#[test]
fn needed_nodes_intersect_every_write_quorum() {
    let consistent = Quorums { write: 2, read: 2 };
    assert_eq!(needed_in_set(3, consistent), 2);
    // rf 2 consistent: a read quorum is both nodes.
    assert_eq!(needed_in_set(2, Quorums { write: 2, read: 2 }), 2);
    // Degraded reads of one replica do not prove a node holds every write.
    assert_eq!(needed_in_set(3, Quorums { write: 2, read: 1 }), 2);
    // Writes to one replica: only every replica holds them all.
    assert_eq!(needed_in_set(3, Quorums { write: 1, read: 1 }), 3);
    assert_eq!(needed_in_set(1, consistent), 1, "never more than the set");
}

#[tokio::test]
async fn diverged_replicas_converge_both_ways() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx, _) = cluster(&root, 3).await;
        let p = partition("b");
        let a0 = Doc::new("b", "k", &[("color", 10, "red")]);
        let a1 = Doc::new("b", "k", &[("size", 11, "L")]);
        let only0 = Doc::new("b", "zero", &[("x", 1, "0")]);
        let only1 = Doc::new("b", "one", &[("x", 1, "1")]);
        // Another bucket of the same partition (likely another sub-range).
        let same_p = (0..)
            .map(|i| format!("same{i}"))
            .find(|b| partition(b) == p)
            .unwrap();
        let only2 = Doc::new(&same_p, "two", &[("x", 1, "2")]);
        let other = Doc::new(&elsewhere("b"), "k", &[("x", 1, "other")]);
        nodes[0].put_local(vec![a0.clone(), only0.clone()]).await;
        nodes[1]
            .put_local(vec![a1.clone(), only1.clone(), other.clone()])
            .await;
        nodes[2].put_local(vec![only2.clone()]).await;
        assert_ne!(
            digest_of(&nodes[0], &nodes[0], p).await,
            digest_of(&nodes[0], &nodes[1], p).await
        );

        let report = nodes[0].repl().sync_partition(p).await.unwrap();
        assert!(report.is_synced() && report.repaired(), "{report}");
        assert_eq!((report.needed, report.got), (2, 3));
        assert!(report.nodes.iter().all(|n| n.error.is_none()), "{report:?}");

        let a = a0.merged(&a1);
        for n in &nodes {
            assert_eq!(n.local(&a).await.as_ref(), Some(&a), "merged on every node");
            for d in [&only0, &only1, &only2] {
                assert_eq!(n.local(d).await.as_ref(), Some(d));
            }
        }
        let d0 = digest_of(&nodes[0], &nodes[0], p).await;
        assert_eq!(d0.len(), SUB_RANGES);
        assert!(d0.iter().any(|d| *d != EMPTY));
        for n in &nodes[1..] {
            assert_eq!(
                digest_of(&nodes[0], n, p).await,
                d0,
                "digests equal afterwards"
            );
        }

        // Other partitions are not this sync's business.
        assert_eq!(nodes[0].local(&other).await, None);
        assert_eq!(nodes[2].local(&other).await, None);
        assert_eq!(nodes[1].local(&other).await.as_ref(), Some(&other));

        // A second pass finds nothing to do.
        let again = nodes[1].repl().sync_partition(p).await.unwrap();
        assert!(!again.repaired(), "{again}");
        assert!(again.nodes.iter().all(|n| n.differing == 0), "{again:?}");
    })
    .await;
}

#[tokio::test]
async fn merged_entries_run_the_hooks() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx, _) = cluster(&root, 3).await;
        let d = Doc::new("hooks", "pulled", &[("x", 1, "1")]);
        let e = Doc::new("hooks", "pushed", &[("x", 1, "1")]);
        nodes[1].put_local(vec![d.clone()]).await;
        nodes[2].put_local(vec![e.clone()]).await;
        nodes[0]
            .repl()
            .sync_partition(partition("hooks"))
            .await
            .unwrap();
        let mut on_0 = nodes[0].hooked();
        on_0.sort();
        assert_eq!(
            on_0,
            ["pulled", "pushed"],
            "pulled entries went through insert"
        );
        assert!(
            nodes[1].hooked().contains(&"pushed".to_owned()),
            "pushed too"
        );
        assert!(nodes[2].hooked().contains(&"pulled".to_owned()));
    })
    .await;
}

#[tokio::test]
async fn sub_ranges_larger_than_a_page_sync_in_pages() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx, _) = cluster(&root, 3).await;
        // One partition key: one sub-range, past the page size.
        let docs: Vec<Doc> = (0..PAGE_ENTRIES + 50)
            .map(|i| Doc::new("big", &format!("k{i:06}"), &[("i", 1, "v")]))
            .collect();
        nodes[1].put_local(docs.clone()).await;
        let page = read_sub_range(
            &nodes[1].table,
            partition_byte(partition("big")).unwrap(),
            {
                let h = Hash::hash_of(b"big");
                h.0[1]
            },
            None,
        )
        .await
        .unwrap();
        assert_eq!(page.entries.len(), PAGE_ENTRIES);
        assert!(page.next.is_some());

        let report = nodes[0]
            .repl()
            .sync_partition(partition("big"))
            .await
            .unwrap();
        let (received, sent) = report.totals();
        assert_eq!(received, docs.len(), "{report}");
        assert_eq!(sent, docs.len(), "node 3 had none: all pushed to it");
        for n in &nodes {
            let got = n
                .table
                .get_range(&"big".to_owned(), RangeStart::First, None, usize::MAX)
                .await
                .unwrap();
            assert_eq!(got.len(), docs.len());
        }
        assert_eq!(nodes[0].all().await.len(), docs.len());
    })
    .await;
}

#[tokio::test]
async fn down_nodes_fail_the_sync_only_when_a_quorum_is_missing() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (mut nodes, _tx, _) = cluster(&root, 3).await;
        let p = partition("b");
        let d = Doc::new("b", "k", &[("x", 1, "1")]);
        nodes[1].put_local(vec![d.clone()]).await;

        // One of three down: this node and node 2 are two of three.
        nodes[2].down().await;
        let report = nodes[0].repl().sync_partition(p).await.unwrap();
        assert_eq!((report.needed, report.got), (2, 2), "{report}");
        let down = report
            .nodes
            .iter()
            .find(|n| n.node != nodes[1].id())
            .unwrap();
        assert!(down.error.is_some(), "{report:?}");
        assert_eq!(nodes[0].local(&d).await.as_ref(), Some(&d));

        // Two down: this node alone is not a quorum, whatever it pulled.
        nodes[1].down().await;
        match nodes[0].repl().sync_partition(p).await {
            Err(SyncError::NotSynced(r)) => {
                assert_eq!((r.needed, r.got), (2, 1), "{r}");
                assert!(r.nodes.iter().all(|n| n.error.is_some()));
            }
            other => panic!("expected not synced, got {other:?}"),
        }
        let tables: Vec<Arc<dyn SyncTable>> = vec![nodes[0].repl().clone()];
        let err = sync_all(&tables, &[p, partition(&elsewhere("b"))])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SyncError::Incomplete {
                    failed: 2,
                    total: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            nodes[0].repl().sync_partition(300).await,
            Err(SyncError::NoSuchPartition(300))
        ));
    })
    .await;
}

#[tokio::test]
async fn a_new_owner_catches_up_during_a_layout_change() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (mut nodes, tx, v1) = cluster(&root, 4).await;
        let docs: Vec<Doc> = (0..20)
            .map(|i| Doc::new(&format!("bucket{i}"), "k", &[("i", 1, "v")]))
            .collect();
        nodes[0].repl().insert_many(&docs).await.unwrap();
        for n in &nodes {
            n.repl().flush_repairs().await;
        }
        // Not an owner yet: node 4 has no business holding these.
        let p0 = partition(&docs[0].bucket);
        assert!(matches!(
            nodes[3].repl().sync_partition(p0).await,
            Err(SyncError::NotAReplica(p)) if p == p0
        ));
        // Node 3 leaves, node 4 joins: v1 {1,2,3} and v2 {1,2,4} are both live.
        let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
        tx.send(Arc::new(next_layout(&v1, &[(ids[3], 3)], &[ids[2]])))
            .unwrap();
        let parts: Vec<u16> = {
            let mut ps: Vec<u16> = docs.iter().map(|d| partition(&d.bucket)).collect();
            ps.sort_unstable();
            ps.dedup();
            ps
        };
        let tables: Vec<Arc<dyn SyncTable>> = vec![nodes[3].repl().clone()];
        assert_eq!(tables[0].table_name(), "test_sync_docs_v1");
        sync_all(&tables, &parts).await.unwrap();
        for d in &docs {
            assert_eq!(
                nodes[3].local(d).await.as_ref(),
                Some(d),
                "new owner has it"
            );
        }

        // Nodes 2 and 3 down: {1,2,3} has one synced node (node 1), not a quorum, though
        // {1,2,4} has two (node 4 itself and node 1).
        nodes[1].down().await;
        nodes[2].down().await;
        match nodes[3].repl().sync_partition(parts[0]).await {
            Err(SyncError::NotSynced(r)) => assert_eq!((r.needed, r.got), (2, 1), "{r}"),
            other => panic!("expected not synced, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn the_worker_repairs_in_the_background_and_stops_on_shutdown() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx, _) = cluster(&root, 3).await;
        let d = Doc::new("bg", "k", &[("x", 1, "1")]);
        nodes[1].put_local(vec![d.clone()]).await;
        let (stop, shutdown) = watch::channel(false);
        let tables: Vec<Arc<dyn SyncTable>> = vec![nodes[0].repl().clone()];
        let p = partition("bg");
        let worker = tokio::spawn(run_anti_entropy(
            tables,
            move || vec![p],
            Duration::from_millis(50),
            shutdown,
        ));
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while nodes[2].local(&d).await.is_none() {
            assert!(tokio::time::Instant::now() < end, "never repaired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        worker.await.unwrap();
    })
    .await;
}
