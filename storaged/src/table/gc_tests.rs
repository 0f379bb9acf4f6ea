//! In-process nodes on loopback (real QUIC, real RPC), each with its own redb: tombstones
//! placed on replicas (directly, or through quorum writes), then collected or not.
//!
//! The harness is a trimmed copy of `sync_tests.rs`'s, with a schema whose entries can be
//! deleted and written again (a last-writer-wins register; `None` is the tombstone) and
//! whose hook counts its calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::*;
use crate::config::ConsistencyMode;
use crate::layout::{ClusterLayout, LayoutChange, NodeRole, partition_of};
use crate::net::{Endpoint, NetConfig};
use crate::rpc::{NodeId, Rpc, RpcConfig, RpcServer};
use crate::table::{Db, Entry, LayoutReplication, ReplicatedTable, UpdateTx, storage_key};
use crate::util::crdt::{Crdt, Lww};
use crate::util::encode::encode;

const SECRET: [u8; 32] = [0x6d; 32];
const T: Duration = Duration::from_secs(5);
/// A delay every candidate of a test is past once [`settle`] waited.
const DUE: Duration = Duration::from_millis(20);

async fn within<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("test timed out");
}

/// Lets the candidates recorded so far age past [`DUE`].
async fn settle() {
    tokio::time::sleep(DUE * 3).await;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Note {
    bucket: String,
    name: String,
    value: Lww<Option<String>>,
}

impl Note {
    fn live(bucket: &str, name: &str, ts: u64, v: &str) -> Self {
        Self {
            bucket: bucket.into(),
            name: name.into(),
            value: Lww::new(ts, Some(v.into())),
        }
    }

    fn deleted(bucket: &str, name: &str, ts: u64) -> Self {
        Self {
            bucket: bucket.into(),
            name: name.into(),
            value: Lww::new(ts, None),
        }
    }
}

impl Crdt for Note {
    fn merge(&mut self, other: &Self) {
        self.value.merge(&other.value);
    }
}

impl Entry<String, String> for Note {
    fn partition_key(&self) -> &String {
        &self.bucket
    }
    fn sort_key(&self) -> &String {
        &self.name
    }
}

/// Counts its hook's calls.
#[derive(Default)]
struct Notes {
    hooked: Arc<AtomicUsize>,
}

impl TableSchema for Notes {
    const TABLE_NAME: &'static str = "test_gc_notes_v1";
    type P = String;
    type S = String;
    type E = Note;
    type Filter = ();
    fn matches_filter(_: &Note, (): &()) -> bool {
        true
    }
    fn is_tombstone(e: &Note) -> bool {
        e.value.v.is_none()
    }
    fn updated(
        &self,
        _: &mut UpdateTx<'_>,
        _: Option<&Note>,
        _: Option<&Note>,
    ) -> crate::error::Result<()> {
        self.hooked.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Node {
    dir: std::path::PathBuf,
    table: Arc<Table<Notes>>,
    hooked: Arc<AtomicUsize>,
    layout: watch::Receiver<Arc<ClusterLayout>>,
    net: Option<(Rpc, RpcServer, SocketAddr, Arc<ReplicatedTable<Notes>>)>,
}

impl Node {
    async fn start(
        root: &tempfile::TempDir,
        name: &str,
        layout: watch::Receiver<Arc<ClusterLayout>>,
    ) -> Self {
        let dir = root.path().join(name);
        let db = Db::open(&dir.join("meta")).unwrap();
        let schema = Notes::default();
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

    fn repl(&self) -> &Arc<ReplicatedTable<Notes>> {
        &self.net.as_ref().unwrap().3
    }

    fn id(&self) -> NodeId {
        self.rpc().node_id()
    }

    async fn local(&self, n: &Note) -> Option<Note> {
        self.table.get(&n.bucket, &n.name).await.unwrap()
    }

    /// Writes straight into this node's replica, as if the other replicas missed it.
    async fn put_local(&self, notes: Vec<Note>) {
        self.table.insert_many(notes).await.unwrap();
    }

    fn hooked(&self) -> usize {
        self.hooked.load(Ordering::SeqCst)
    }

    fn candidates(&self) -> Vec<(Vec<u8>, Hash, u64)> {
        self.table.gc_candidates().unwrap()
    }

    async fn gc(&self, delay: Duration) -> GcReport {
        self.repl().collect_tombstones(delay).await.unwrap()
    }
}

fn introduce(nodes: &[Node]) {
    for a in nodes.iter().filter(|n| n.net.is_some()) {
        for b in nodes.iter().filter(|n| n.net.is_some()) {
            a.rpc().set_addrs(b.id(), &[b.net.as_ref().unwrap().2]);
        }
    }
}

/// Three nodes holding every partition (rf 3, three zones).
async fn cluster(root: &tempfile::TempDir) -> (Vec<Node>, watch::Sender<Arc<ClusterLayout>>) {
    let (tx, rx) = watch::channel(Arc::new(ClusterLayout::new(3)));
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Node::start(root, &format!("n{i}"), rx.clone()).await);
    }
    introduce(&nodes);
    let mut l = ClusterLayout::new(3);
    for (i, n) in nodes.iter().enumerate() {
        l.stage(LayoutChange::Role {
            node: n.id(),
            role: Some(NodeRole::storage(format!("zone{i}"), 1 << 40)),
        })
        .unwrap();
    }
    let (v1, _) = l.apply(1).unwrap();
    tx.send(Arc::new(v1)).unwrap();
    (nodes, tx)
}

fn partition(bucket: &str) -> u16 {
    partition_of(&Hash::hash_of(bucket.as_bytes()))
}

/// Waits until every node's local copy of `n`'s key is `want`.
async fn until_everywhere(nodes: &[Node], n: &Note, want: Option<&Note>) {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    for node in nodes {
        while node.local(n).await.as_ref() != want {
            assert!(tokio::time::Instant::now() < end, "never reached {want:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_tombstone_on_every_replica_is_collected_after_the_delay() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx) = cluster(&root).await;
        let live = Note::live("b", "k", 1, "v");
        let tomb = Note::deleted("b", "k", 2);
        let other = Note::live("b", "other", 1, "kept");
        nodes[0].repl().insert(&live).await.unwrap();
        nodes[0].repl().insert(&other).await.unwrap();
        nodes[0].repl().insert(&tomb).await.unwrap();
        until_everywhere(&nodes, &tomb, Some(&tomb)).await;
        until_everywhere(&nodes, &other, Some(&other)).await;
        let key = storage_key(&Hash::hash_of(b"b"), b"k");
        let hash = Hash::hash_of(&encode(&tomb).unwrap());
        for n in &nodes {
            let c = n.candidates();
            assert_eq!(c.len(), 1, "only the tombstone is a candidate");
            assert_eq!((&c[0].0, &c[0].1), (&key, &hash), "its key and bytes");
        }

        // Not yet past the delay: nothing happens.
        let r = nodes[0].gc(Duration::from_secs(3600)).await;
        assert_eq!(
            r,
            GcReport {
                table: "test_gc_notes_v1",
                ..GcReport::default()
            }
        );
        assert_eq!(nodes[0].local(&tomb).await.as_ref(), Some(&tomb));

        settle().await;
        let hooks: Vec<usize> = nodes.iter().map(Node::hooked).collect();
        let r = nodes[0].gc(DUE).await;
        assert_eq!((r.due, r.collected), (1, 1), "{r}");
        for n in &nodes {
            assert_eq!(n.local(&tomb).await, None, "removed everywhere");
            assert!(n.candidates().is_empty(), "candidates dropped with it");
            assert_eq!(n.local(&other).await.as_ref(), Some(&other), "live kept");
        }
        let after: Vec<usize> = nodes.iter().map(Node::hooked).collect();
        assert_eq!(hooks, after, "no hook ran for the deletes");

        // The other nodes' passes find nothing left.
        for n in &nodes {
            assert_eq!(n.gc(Duration::ZERO).await.due, 0);
        }
    })
    .await;
}

#[tokio::test]
async fn a_replica_down_blocks_collection_until_it_returns() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (mut nodes, _tx) = cluster(&root).await;
        let tomb = Note::deleted("down", "k", 2);
        for n in &nodes {
            n.put_local(vec![tomb.clone()]).await;
        }
        settle().await;
        nodes[2].down().await;
        for n in &nodes[..2] {
            let r = n.gc(DUE).await;
            assert_eq!((r.due, r.collected, r.unreachable), (1, 0, 1), "{r}");
        }
        for n in &nodes {
            assert_eq!(
                n.local(&tomb).await.as_ref(),
                Some(&tomb),
                "kept everywhere"
            );
            assert_eq!(n.candidates().len(), 1, "candidate kept");
        }

        nodes[2].up().await;
        introduce(&nodes);
        // The next passes collect it, once the connection to the returning node is back
        // (the first call may still be in its reconnect backoff).
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = nodes[1].gc(DUE).await;
            assert_eq!(r.due, 1, "{r}");
            if r.collected == 1 {
                break;
            }
            assert_eq!(r.unreachable, 1, "{r}");
            assert!(tokio::time::Instant::now() < end, "never collected: {r}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for n in &nodes {
            assert_eq!(n.local(&tomb).await, None);
            assert!(n.candidates().is_empty());
        }
    })
    .await;
}

#[tokio::test]
async fn an_older_live_replica_blocks_until_anti_entropy_merged_it() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx) = cluster(&root).await;
        let live = Note::live("stale", "k", 1, "old");
        let tomb = Note::deleted("stale", "k", 2);
        nodes[0].put_local(vec![tomb.clone()]).await;
        nodes[1].put_local(vec![tomb.clone()]).await;
        nodes[2].put_local(vec![live.clone()]).await;
        settle().await;
        let r = nodes[0].gc(DUE).await;
        assert_eq!((r.due, r.collected, r.different), (1, 0, 1), "{r}");
        assert_eq!(nodes[0].local(&tomb).await.as_ref(), Some(&tomb));
        assert_eq!(nodes[2].local(&live).await.as_ref(), Some(&live));
        assert_eq!(nodes[0].candidates().len(), 1, "kept for the next pass");

        // Anti-entropy brings the tombstone to node 3 (its hook runs for that merge).
        let before = nodes[2].hooked();
        nodes[0]
            .repl()
            .sync_partition(partition("stale"))
            .await
            .unwrap();
        assert_eq!(
            nodes[2].local(&tomb).await.as_ref(),
            Some(&tomb),
            "tombstone wins"
        );
        assert_eq!(nodes[2].hooked(), before + 1);
        assert_eq!(nodes[2].candidates().len(), 1, "recorded on merge");

        let hooks: Vec<usize> = nodes.iter().map(Node::hooked).collect();
        let r = nodes[0].gc(DUE).await;
        assert_eq!((r.due, r.collected), (1, 1), "{r}");
        for n in &nodes {
            assert_eq!(n.local(&tomb).await, None);
            assert!(n.candidates().is_empty(), "node 3's fresh candidate too");
        }
        let after: Vec<usize> = nodes.iter().map(Node::hooked).collect();
        assert_eq!(hooks, after, "no hook ran for the deletes");
    })
    .await;
}

#[tokio::test]
async fn passes_of_every_replica_at_once_collect_and_say_so() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx) = cluster(&root).await;
        let tombs: Vec<Note> = (0..12)
            .map(|i| Note::deleted("b", &format!("k{i}"), 2))
            .collect();
        for t in &tombs {
            nodes[0].repl().insert(t).await.unwrap();
        }
        for t in &tombs {
            until_everywhere(&nodes, t, Some(t)).await;
        }
        settle().await;
        // Every node runs its own pass; run them together, as nodes started together do.
        let reports = futures::future::join_all(nodes.iter().map(|n| n.gc(DUE))).await;
        for t in &tombs {
            for n in &nodes {
                assert_eq!(n.local(t).await, None, "removed everywhere");
            }
        }
        // Each pass accounts for every candidate: collected (by it, or by a pass
        // alongside that removed the local copy first) or seen already gone on a peer.
        for r in &reports {
            assert_eq!(r.due, tombs.len(), "{r}");
            assert_eq!(r.collected + r.different, r.due, "{r}");
        }
        assert!(reports.iter().any(|r| r.collected == r.due), "{reports:?}");
    })
    .await;
}

#[tokio::test]
async fn an_entry_written_live_again_is_not_collected() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx) = cluster(&root).await;
        let tomb = Note::deleted("again", "k", 2);
        for n in &nodes {
            n.put_local(vec![tomb.clone()]).await;
        }
        // Written again on one replica the collecting node has not heard from yet: that
        // replica holds another value, nothing is deleted anywhere.
        let back = Note::live("again", "k", 3, "back");
        nodes[1].put_local(vec![back.clone()]).await;
        settle().await;
        let r = nodes[0].gc(DUE).await;
        assert_eq!((r.collected, r.different), (0, 1), "{r}");
        assert_eq!(nodes[1].local(&back).await.as_ref(), Some(&back));
        assert_eq!(nodes[2].local(&tomb).await.as_ref(), Some(&tomb));

        // Node 2's own candidate: its entry is live again, so the candidate goes.
        let r = nodes[1].gc(DUE).await;
        assert_eq!((r.due, r.dropped, r.collected), (1, 1, 0), "{r}");
        assert!(nodes[1].candidates().is_empty());

        // Once written everywhere, every candidate is dropped and the entry stays.
        nodes[0].repl().insert(&back).await.unwrap();
        until_everywhere(&nodes, &back, Some(&back)).await;
        for n in &nodes {
            let r = n.gc(Duration::ZERO).await;
            assert_eq!(r.collected, 0, "{r}");
            assert!(n.candidates().is_empty());
            assert_eq!(n.local(&back).await.as_ref(), Some(&back));
        }
    })
    .await;
}

#[tokio::test]
async fn a_newer_tombstone_restarts_the_delay_and_live_entries_are_never_deleted() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx) = cluster(&root).await;
        let first = Note::deleted("twice", "k", 2);
        nodes[0].put_local(vec![first]).await;
        settle().await;
        let second = Note::deleted("twice", "k", 3);
        nodes[0].put_local(vec![second.clone()]).await;
        let c = nodes[0].candidates();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].1,
            Hash::hash_of(&encode(&second).unwrap()),
            "new bytes"
        );
        assert_eq!(nodes[0].gc(DUE).await.due, 0, "the delay starts again");

        // A peer asked to delete a live entry by its hash refuses (defense in depth), and
        // a hash that no longer matches deletes nothing.
        let live = Note::live("twice", "live", 1, "v");
        nodes[1].put_local(vec![live.clone()]).await;
        let key = storage_key(&Hash::hash_of(b"twice"), b"live");
        let req = TableReq::DeleteIfEqual {
            items: vec![
                (key.clone(), Hash::hash_of(&encode(&live).unwrap())),
                (
                    storage_key(&Hash::hash_of(b"twice"), b"k"),
                    Hash::hash_of(b"not the bytes"),
                ),
            ],
        };
        let resp = nodes[0]
            .rpc()
            .call::<TableRpc<Notes>>(nodes[1].id(), &req, T)
            .await
            .unwrap();
        assert!(matches!(resp, TableResp::Deleted(0)), "{resp:?}");
        assert_eq!(nodes[1].local(&live).await.as_ref(), Some(&live));
        let req = TableReq::EntryHashes {
            keys: vec![key, b"short".to_vec()],
        };
        let resp = nodes[0]
            .rpc()
            .call::<TableRpc<Notes>>(nodes[1].id(), &req, T)
            .await
            .unwrap();
        match resp {
            TableResp::EntryHashes(h) => {
                assert_eq!(h, vec![Some(Hash::hash_of(&encode(&live).unwrap())), None]);
            }
            other => panic!("not hashes: {other:?}"),
        }
        let req = TableReq::EntryHashes {
            keys: vec![Vec::new(); MAX_ITEMS + 1],
        };
        let resp = nodes[0]
            .rpc()
            .call::<TableRpc<Notes>>(nodes[1].id(), &req, T)
            .await
            .unwrap();
        assert!(matches!(resp, TableResp::Error(_)), "bounded: {resp:?}");
    })
    .await;
}

#[tokio::test]
async fn the_worker_collects_in_the_background_and_stops_on_shutdown() {
    within(async {
        let root = tempfile::tempdir().unwrap();
        let (nodes, _tx) = cluster(&root).await;
        let tomb = Note::deleted("bg", "k", 2);
        nodes[0].repl().insert(&tomb).await.unwrap();
        until_everywhere(&nodes, &tomb, Some(&tomb)).await;
        let (stop, shutdown) = watch::channel(false);
        let tables: Vec<Arc<dyn GcTable>> = vec![nodes[2].repl().clone()];
        assert_eq!(tables[0].gc_table_name(), "test_gc_notes_v1");
        let worker = tokio::spawn(run_tombstone_gc(
            tables,
            DUE,
            Duration::from_millis(20),
            shutdown,
        ));
        until_everywhere(&nodes, &tomb, None).await;
        stop.send(true).unwrap();
        worker.await.unwrap();
    })
    .await;
}

#[test]
fn model_tombstones_carry_nothing_but_the_deletion() {
    use crate::model::object::{ObjectVersion, ObjectVersionData, ObjectVersionState};
    use crate::model::{
        BlockRef, BlockRefTable, Bucket, BucketAlias, BucketAliasTable, BucketTable, Key, KeyTable,
        MpuTable, MultipartUpload, Object, ObjectTable, Version, VersionTable,
    };
    use crate::util::id::Uuid;

    let id = Uuid::random();
    assert!(VersionTable::is_tombstone(&Version::deleted(id)));
    assert!(!VersionTable::is_tombstone(&Version::new(id)));
    let h = Hash::random();
    assert!(BlockRefTable::is_tombstone(&BlockRef::deleted(h, id)));
    assert!(!BlockRefTable::is_tombstone(&BlockRef::new(h, id)));
    let mut mpu = MultipartUpload::new(id, 1, id, "k".into());
    assert!(!MpuTable::is_tombstone(&mpu));
    mpu.deleted.0 = true;
    assert!(MpuTable::is_tombstone(&mpu));

    let v = |ts: u64, state: ObjectVersionState| ObjectVersion {
        uuid: Uuid::random(),
        timestamp: ts,
        state,
    };
    let marker = || ObjectVersionState::Complete(ObjectVersionData::DeleteMarker);
    let upload = |multipart| ObjectVersionState::Uploading {
        multipart,
        headers: crate::model::object::ObjectHeaders::default(),
        checksum_algo: None,
        checksum_kind: None,
    };
    let obj = |vs| Object::new(id, "k".into(), vs);
    assert!(ObjectTable::is_tombstone(&obj(vec![v(1, marker())])));
    assert!(ObjectTable::is_tombstone(&obj(vec![
        v(1, ObjectVersionState::Aborted),
        v(2, marker()),
        v(3, ObjectVersionState::Aborted),
    ])));
    assert!(!ObjectTable::is_tombstone(&obj(vec![
        v(1, marker()),
        v(2, upload(true))
    ])));
    assert!(!ObjectTable::is_tombstone(&obj(vec![
        v(1, marker()),
        v(2, upload(false))
    ])));
    let data = ObjectVersionState::Complete(ObjectVersionData::Inline(
        crate::model::object::ObjectMeta {
            size: 1,
            etag: "e".into(),
            headers: crate::model::object::ObjectHeaders::default(),
            checksum: None,
            parts: 0,
        },
        vec![1],
    ));
    assert!(!ObjectTable::is_tombstone(&obj(vec![v(1, data)])));

    let mut alias = BucketAlias {
        name: "n".into(),
        bucket_id: Lww::new(1, Some(id)),
    };
    assert!(!BucketAliasTable::is_tombstone(&alias));
    alias.bucket_id.update(None);
    assert!(BucketAliasTable::is_tombstone(&alias));
    // Kept forever, see their schemas.
    let mut b = Bucket::new(id, "n".into(), 1);
    b.deleted.0 = true;
    assert!(!BucketTable::is_tombstone(&b));
    let mut k = Key::new("GK1".into(), "s".into(), "n".into(), 1);
    k.deleted.0 = true;
    assert!(!KeyTable::is_tombstone(&k));
}
