//! The tables of an object store and the operations on them that both the S3 and the admin
//! APIs need (bucket and key life cycle, grants), so neither reimplements the other's.

pub mod block_ref;
pub mod bucket;
pub mod counters;
pub mod inflight;
pub mod key;
pub mod lookup;
pub mod mpu;
pub mod object;
pub mod perm;
pub mod version;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::block::{BlockManager, BlockReplicator, Placement, ResyncQueue, TablePlacement};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::ClusterLayout;
use crate::membership::NodeStatus;
use crate::rpc::Rpc;
use crate::table::{
    Db, EmptyKey, FullReplication, LayoutReplication, ReplicatedTable, Table, TableReplication,
    TableSchema,
};
use crate::util::budget::{BudgetPermit, MemoryBudget};
use crate::util::crdt::Lww;
use crate::util::id::{Hash, Uuid};
use crate::util::time::now_ms;

pub use block_ref::{BlockRef, BlockRefTable};
pub use bucket::{Bucket, BucketAlias, BucketAliasTable, BucketTable, QuotaSpec};
pub use counters::BucketCounts;
pub use key::{Key, KeyTable};
pub use lookup::{FoundBucket, Source};
pub use mpu::{MpuTable, MultipartUpload};
pub use object::{Object, ObjectFilter, ObjectTable};
pub use perm::BucketPerm;
pub use version::{Version, VersionTable};
pub use writer::ObjectWriter;

/// How long one table call to one replica may take before it counts as failed.
const TABLE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the model needs from the cluster side of the node: the RPC layer to reach
/// replicas, the layout that places data, and membership for zones.
pub struct ClusterHandles {
    /// RPC to peers (and to this node, in process).
    pub rpc: Rpc,
    /// The layout as it changes.
    pub layout: watch::Receiver<Arc<ClusterLayout>>,
    /// Membership's view of the nodes (zones for nearest-replica reads).
    pub members: Option<watch::Receiver<Vec<NodeStatus>>>,
    /// The layout manager's registry of in-flight writes (the transition barrier).
    pub write_locks: Arc<crate::layout::WriteLocks>,
}

/// Every table and the chunk store of this node.
pub struct Model {
    /// Metadata database.
    pub db: Db,
    /// Chunk store (this node's copies).
    pub blocks: Arc<BlockManager>,
    /// Chunks this node must fetch or hand over.
    pub resync: ResyncQueue,
    /// Chunk puts and gets across the chunk's replicas.
    pub replicator: BlockReplicator,
    /// Which nodes hold a chunk.
    pub placement: Arc<dyn Placement>,
    /// Buckets by id (on every node).
    pub buckets: Arc<ReplicatedTable<BucketTable>>,
    /// Bucket names (on every node).
    pub aliases: Arc<ReplicatedTable<BucketAliasTable>>,
    /// Access keys (on every node).
    pub keys: Arc<ReplicatedTable<KeyTable>>,
    /// Objects.
    pub objects: Arc<ReplicatedTable<ObjectTable>>,
    /// Version chunk lists.
    pub versions: Arc<ReplicatedTable<VersionTable>>,
    /// Chunk references (with their chunks).
    pub block_refs: Arc<ReplicatedTable<BlockRefTable>>,
    /// Multipart uploads.
    pub mpus: Arc<ReplicatedTable<MpuTable>>,
    /// Chunk size.
    pub block_size: usize,
    /// Where partitioned entries live (the bucket counters' holders).
    sharded: Arc<dyn TableReplication>,
    /// RPC to peers.
    rpc: Rpc,
}

impl Model {
    /// Opens every table under the configured directories, replicated as `cluster`'s
    /// layout says, and registers the table and chunk services on its RPC.
    pub fn open(config: &Config, cluster: &ClusterHandles) -> Result<Arc<Self>> {
        Self::open_in(config, Db::open(&config.metadata_dir)?, cluster)
    }

    /// [`Self::open`] on a database already opened (the daemon opens it first of all, so
    /// that a damaged store is reported before anything else happens).
    pub fn open_in(config: &Config, db: Db, cluster: &ClusterHandles) -> Result<Arc<Self>> {
        counters::create_table(&db)?;
        inflight::create_table(&db)?;
        let blocks = BlockManager::open(&config.data_dir, config.compression_level, db.clone())?;
        blocks.set_orphan_gc_delay(config.background.block_gc_delay_secs.saturating_mul(1000));
        let resync = ResyncQueue::open(db.clone())?;
        blocks.set_corrupt_hook(resync.corrupt_hook());
        crate::block::BlockRpcHandler::register(&cluster.rpc, Arc::clone(&blocks));
        let gc_delay_ms = config.background.block_gc_delay_secs.saturating_mul(1000);
        let mode = config.consistency_mode;
        let me = cluster.rpc.node_id();
        let locks = &cluster.write_locks;
        let sharded: Arc<dyn TableReplication> = Arc::new(
            LayoutReplication::new(cluster.layout.clone(), mode).with_locks(Arc::clone(locks)),
        );
        let everywhere: Arc<dyn TableReplication> = Arc::new(
            FullReplication::new(cluster.layout.clone(), me, mode).with_locks(Arc::clone(locks)),
        );
        let rpc = &cluster.rpc;
        rpc.register::<counters::CountersRpc>(Arc::new(counters::CountersHandler(db.clone())));
        fn open<F: TableSchema>(
            schema: F,
            db: &Db,
            replication: &Arc<dyn TableReplication>,
            rpc: &Rpc,
        ) -> Result<Arc<ReplicatedTable<F>>> {
            Ok(ReplicatedTable::new(
                Table::open(schema, db.clone())?,
                Arc::clone(replication),
                rpc.clone(),
                TABLE_CALL_TIMEOUT,
            ))
        }
        let refs = BlockRefTable {
            gc_delay_ms,
            resync: Some((resync.clone(), Arc::clone(&blocks))),
        };
        Ok(Arc::new(Self {
            buckets: open(BucketTable, &db, &everywhere, rpc)?,
            aliases: open(BucketAliasTable, &db, &everywhere, rpc)?,
            keys: open(KeyTable, &db, &everywhere, rpc)?,
            objects: open(ObjectTable, &db, &sharded, rpc)?,
            sharded: Arc::clone(&sharded),
            rpc: rpc.clone(),
            versions: open(VersionTable, &db, &sharded, rpc)?,
            block_refs: open(refs, &db, &sharded, rpc)?,
            mpus: open(MpuTable, &db, &sharded, rpc)?,
            replicator: BlockReplicator::new(
                cluster.rpc.clone(),
                crate::block::ReplicationConfig::default(),
            ),
            placement: Arc::new(TablePlacement::new(
                LayoutReplication::new(cluster.layout.clone(), mode),
                cluster.members.clone(),
            )),
            resync,
            blocks,
            db,
            block_size: config.block_size,
        }))
    }

    /// The tables placed by partition (anti-entropy and layout sync walk their partitions).
    #[must_use]
    pub fn sharded_tables(&self) -> Vec<Arc<dyn crate::table::SyncTable>> {
        vec![
            Arc::clone(&self.objects) as Arc<dyn crate::table::SyncTable>,
            Arc::clone(&self.versions) as _,
            Arc::clone(&self.block_refs) as _,
            Arc::clone(&self.mpus) as _,
        ]
    }

    /// Drops this node's copy of layout partition `partition` in every partitioned table
    /// (once it is no longer an owner and the new owners are synced).
    pub async fn drop_partition(&self, partition: u8) -> Result<usize> {
        let mut n = self.objects.local().drop_partition(partition).await?;
        n += self.versions.local().drop_partition(partition).await?;
        n += self.block_refs.local().drop_partition(partition).await?;
        n += self.mpus.local().drop_partition(partition).await?;
        Ok(n)
    }

    /// The tables whose tombstones are collected (buckets and keys keep theirs: see their
    /// schemas).
    #[must_use]
    pub fn gc_tables(&self) -> Vec<Arc<dyn crate::table::GcTable>> {
        vec![
            Arc::clone(&self.objects) as Arc<dyn crate::table::GcTable>,
            Arc::clone(&self.versions) as _,
            Arc::clone(&self.block_refs) as _,
            Arc::clone(&self.mpus) as _,
            Arc::clone(&self.aliases) as _,
        ]
    }

    /// The tables every node holds whole.
    #[must_use]
    pub fn full_tables(&self) -> Vec<Arc<dyn crate::table::SyncTable>> {
        vec![
            Arc::clone(&self.keys) as Arc<dyn crate::table::SyncTable>,
            Arc::clone(&self.buckets) as _,
            Arc::clone(&self.aliases) as _,
        ]
    }

    /// Stores a chunk on its replicas: returns once the write quorum of every live layout
    /// version's set holds it (the other copies land in the background, holding `held`,
    /// the chunk's share of the memory budget, until they end or the budget is pressed).
    pub async fn put_chunk(&self, hash: Hash, data: Bytes, held: BudgetPermit) -> Result<()> {
        let sets = self.placement.write_sets(&hash);
        if sets.is_empty() {
            return Err(Error::Unavailable(
                "no cluster layout is applied: no node stores data yet".into(),
            ));
        }
        let quorum = self.placement.write_quorum();
        Ok(self
            .replicator
            .put_to_sets(hash, data, &sets, quorum, held)
            .await?)
    }

    /// Reads a chunk, verified: from this node if it holds an intact copy, else from the
    /// nearest replica that does (and a corrupt local copy is queued for repair).
    pub async fn get_chunk(&self, hash: Hash) -> Result<Bytes> {
        match self.blocks.read_block(hash).await {
            Ok(data) => return Ok(data),
            Err(Error::MissingBlock(_)) => {}
            Err(Error::CorruptBlock(_)) => self.blocks.report_corrupt(hash),
            Err(e) => tracing::warn!(block = %hash, error = %e, "local chunk read failed"),
        }
        let me = self.replicator.node_id();
        let mut nodes: Vec<_> = self.placement.write_sets(&hash).concat();
        nodes.retain(|n| *n != me);
        let ordered = crate::block::preferred_order(me, &nodes, &self.placement.zones());
        Ok(self.replicator.get_ordered(hash, &ordered).await?.1)
    }

    /// The node's memory budget (chunk buffers and transfers hold their bytes from it).
    #[must_use]
    pub fn budget(&self) -> &MemoryBudget {
        self.rpc.budget()
    }

    /// Starts the insert-queue drains of every table that hooks write to.
    pub fn spawn_workers(self: &Arc<Self>, shutdown: &watch::Receiver<bool>) {
        tokio::spawn(Arc::clone(&self.versions).run_queue_worker(shutdown.clone()));
        tokio::spawn(Arc::clone(&self.block_refs).run_queue_worker(shutdown.clone()));
    }

    /// Creates bucket `name`, optionally owned by `owner_key` (read + write + owner).
    pub async fn create_bucket(
        &self,
        name: &str,
        owner_key: Option<&str>,
        quotas: QuotaSpec,
        owner_tag: Option<String>,
    ) -> Result<Bucket> {
        validate_bucket_name(name)?;
        if self.bucket_by_name(name).await?.is_some() {
            return Err(Error::BucketAlreadyExists(name.to_string()));
        }
        let now = now_ms();
        let mut bucket = Bucket::new(Uuid::random(), name.to_string(), now);
        bucket.quotas = Lww::new(now, quotas);
        bucket.owner_tag = Lww::new(now, owner_tag);
        self.buckets.insert(&bucket).await?;
        let prev = self.alias_entry(name).await?;
        let ts = crate::util::time::next_timestamp(prev.map_or(0, |a| a.bucket_id.ts));
        self.aliases
            .insert(&BucketAlias {
                name: name.to_string(),
                bucket_id: Lww::new(ts, Some(bucket.id)),
            })
            .await?;
        if let Some(key_id) = owner_key {
            let all = BucketPerm {
                read: true,
                write: true,
                owner: true,
            };
            bucket = self.set_permission(&bucket.id, key_id, all).await?;
        }
        Ok(bucket)
    }

    /// Deletes an empty bucket and its grants.
    pub async fn delete_bucket(&self, bucket: &Bucket) -> Result<()> {
        let has_objects = !self
            .objects
            .get_range_filtered(
                &bucket.id,
                crate::table::RangeStart::First,
                Some(ObjectFilter::IsData),
                1,
            )
            .await?
            .is_empty();
        if has_objects {
            return Err(Error::BucketNotEmpty(bucket.name.v.clone()));
        }
        for (key_id, _) in bucket.authorized_keys.iter() {
            if let Some(mut key) = self.key_entry(key_id).await? {
                key.authorized_buckets.set(bucket.id, BucketPerm::default());
                self.keys.insert(&key).await?;
            }
        }
        let mut b = bucket.clone();
        b.deleted.0 = true;
        self.buckets.insert(&b).await?;
        if let Some(mut alias) = self.alias_entry(&bucket.name.v).await?
            && alias.bucket_id.v == Some(bucket.id)
        {
            alias.bucket_id.update(None);
            self.aliases.insert(&alias).await?;
        }
        Ok(())
    }

    /// Deletes every object and open upload of a bucket (force deletion).
    pub async fn empty_bucket(&self, bucket: &Bucket) -> Result<()> {
        use object::{ObjectVersion, ObjectVersionData, ObjectVersionState};
        let mut start = crate::table::RangeStart::First;
        loop {
            let batch = self
                .objects
                .get_range(&bucket.id, start.clone(), 256)
                .await?;
            let Some(last) = batch.last() else { break };
            let mut next = last.key.as_bytes().to_vec();
            next.push(0);
            start = crate::table::RangeStart::From(next);
            for obj in batch {
                let mut closing: Vec<ObjectVersion> = obj
                    .versions()
                    .iter()
                    .filter(|v| v.is_open_multipart())
                    .map(|v| ObjectVersion {
                        state: ObjectVersionState::Aborted,
                        ..v.clone()
                    })
                    .collect();
                for v in &closing {
                    if let Some(mut mpu) = self.mpus.get(&v.uuid, &EmptyKey).await? {
                        mpu.deleted.0 = true;
                        self.mpus.insert(&mpu).await?;
                    }
                }
                if obj.current().is_some() {
                    closing.push(ObjectVersion {
                        uuid: Uuid::random(),
                        timestamp: crate::util::time::next_timestamp(obj.last_timestamp()),
                        state: ObjectVersionState::Complete(ObjectVersionData::DeleteMarker),
                    });
                }
                if !closing.is_empty() {
                    self.objects
                        .insert(&Object::new(bucket.id, obj.key.clone(), closing))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Creates a key with a fresh `GK…` id and a random 64-hex secret.
    pub async fn create_key(&self, name: &str, allow_create_bucket: bool) -> Result<Key> {
        let id = format!("GK{}", hex::encode(rand::random::<[u8; 12]>()));
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let mut key = Key::new(id, secret, name.to_string(), now_ms());
        key.allow_create_bucket.v = allow_create_bucket;
        self.keys.insert(&key).await?;
        Ok(key)
    }

    /// Imports a key whose id and secret are known (recreating a lost Secret).
    pub async fn import_key(&self, id: &str, secret: &str, name: &str) -> Result<Key> {
        validate_key_id(id)?;
        validate_secret(secret)?;
        if let Some(existing) = self.key_entry(id).await? {
            if existing.is_live() && existing.secret == secret {
                return Ok(existing);
            }
            return Err(Error::AccessKeyExists(id.to_string()));
        }
        let key = Key::new(
            id.to_string(),
            secret.to_string(),
            name.to_string(),
            now_ms(),
        );
        self.keys.insert(&key).await?;
        Ok(key)
    }

    /// Deletes a key and its grants.
    pub async fn delete_key(&self, key: &Key) -> Result<()> {
        for (bucket_id, _) in key.authorized_buckets.iter() {
            if let Some(mut b) = self.bucket_by_id(bucket_id).await? {
                b.authorized_keys
                    .set(key.key_id.clone(), BucketPerm::default());
                self.buckets.insert(&b).await?;
            }
        }
        let mut k = key.clone();
        k.deleted.0 = true;
        Ok(self.keys.insert(&k).await?)
    }

    /// Sets the rights of `key_id` on `bucket_id` (both sides of the grant); returns the
    /// updated bucket.
    pub async fn set_permission(
        &self,
        bucket_id: &Uuid,
        key_id: &str,
        perm: BucketPerm,
    ) -> Result<Bucket> {
        let mut key = self
            .key(key_id)
            .await?
            .ok_or_else(|| Error::NoSuchAccessKey(key_id.to_string()))?;
        let mut bucket = self
            .bucket_by_id(bucket_id)
            .await?
            .ok_or_else(|| Error::NoSuchBucket(bucket_id.to_hex()))?;
        key.authorized_buckets.set(*bucket_id, perm);
        bucket.authorized_keys.set(key_id.to_string(), perm);
        self.keys.insert(&key).await?;
        self.buckets.insert(&bucket).await?;
        Ok(bucket)
    }

    /// Object/byte/upload counts of a bucket.
    pub async fn counts(&self, bucket: &Uuid) -> Result<BucketCounts> {
        let me = self.replicator.node_id();
        let holders = self.sharded.read_nodes(bucket);
        if holders.is_empty() || holders.contains(&me) {
            let db = self.db.clone();
            let bucket = *bucket;
            return tokio::task::spawn_blocking(move || counters::read(&db, &bucket)).await?;
        }
        let mut errors = Vec::new();
        for node in crate::block::preferred_order(me, &holders, &self.placement.zones()) {
            match (self.rpc)
                .call::<counters::CountersRpc>(node, bucket, TABLE_CALL_TIMEOUT)
                .await
            {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => errors.push(format!("{node}: {e}")),
                Err(e) => errors.push(format!("{node}: {e}")),
            }
        }
        Err(Error::Unavailable(format!(
            "no replica of the bucket's objects answered for its counters: {}",
            errors.join("; ")
        )))
    }
}

/// S3 bucket naming rules (general purpose buckets).
pub fn validate_bucket_name(name: &str) -> Result<()> {
    let bad = |why| Err(Error::InvalidBucketName(name.to_string(), why));
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
    {
        return bad("only lowercase letters, digits, dots and hyphens are allowed");
    }
    let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return bad("must begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("must not contain adjacent dots or a dot next to a hyphen");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    if name.starts_with("xn--") || name.starts_with("sthree-") || name.ends_with("-s3alias") {
        return bad("reserved prefix or suffix");
    }
    Ok(())
}

fn validate_key_id(id: &str) -> Result<()> {
    let garage =
        id.len() == 26 && id.starts_with("GK") && id[2..].bytes().all(|c| c.is_ascii_hexdigit());
    let aws = (16..=128).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_alphanumeric());
    if garage || aws {
        Ok(())
    } else {
        Err(Error::InvalidAccessKey(
            "access key id must be GK + 24 hex characters, or 16 to 128 letters and digits",
        ))
    }
}

fn validate_secret(secret: &str) -> Result<()> {
    if (16..=128).contains(&secret.len()) && secret.bytes().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Error::InvalidAccessKey(
            "secret access key must be 16 to 128 printable characters without spaces",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my-bucket.v2", "a1b", &"a".repeat(63)] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "a_b",
            "-ab",
            "ab-",
            "a..b",
            "192.168.1.1",
            "xn--ab",
            &"a".repeat(64),
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_shapes() {
        assert!(validate_key_id("GK0123456789abcdef01234567").is_ok());
        assert!(validate_key_id("AKIAIOSFODNN7EXAMPLE").is_ok());
        assert!(validate_key_id("GK12").is_err());
        assert!(validate_key_id("has space in it aaaaaaa").is_err());
        assert!(validate_secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY").is_ok());
        assert!(validate_secret("short").is_err());
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::object::{
        ObjectHeaders, ObjectMeta, ObjectVersion, ObjectVersionData, ObjectVersionState,
    };
    use super::version::{BlockPos, VersionBlock};
    use super::*;
    use crate::util::id::Hash;

    fn config(dir: &std::path::Path) -> Config {
        let text = format!(
            "metadata_dir = \"{}\"\ndata_dir = \"{}\"\nrpc_secret = \"{}\"\n[background]\nblock_gc_delay_secs = 0\n",
            dir.join("meta").display(),
            dir.join("data").display(),
            "0".repeat(64)
        );
        Config::from_toml_and_env(&text, Vec::new()).expect("config")
    }

    /// A model on a one-node cluster (this node owns every partition), as a lone
    /// `storaged server` runs it.
    async fn open_alone(dir: &std::path::Path) -> Arc<Model> {
        use crate::layout::{LayoutChange, NodeRole};
        let config = config(dir);
        let net = crate::net::NetConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            [7; 32],
            dir.join("node_key"),
        );
        let endpoint = crate::net::Endpoint::bind(net).await.expect("endpoint");
        let rpc = Rpc::new(endpoint, crate::rpc::RpcConfig::default());
        let mut layout = ClusterLayout::new(1);
        layout
            .stage(LayoutChange::Role {
                node: rpc.node_id(),
                role: Some(NodeRole::storage("dc1", 1 << 30)),
            })
            .expect("stage");
        let (layout, _) = layout.apply(1).expect("apply");
        let (_tx, rx) = watch::channel(Arc::new(layout));
        let handles = ClusterHandles {
            rpc,
            layout: rx,
            members: None,
            write_locks: Arc::default(),
        };
        // A model dropped just before (a "crash") closes its store once the last task still
        // holding it ends: retry while the store says it is in use.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Model::open(&config, &handles) {
                Ok(m) => return m,
                Err(Error::MetadataUnavailable { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("model: {e}"),
            }
        }
    }

    async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes one chunked object version the way the PUT path does.
    /// Stores `data` as the one chunk of version `uuid`, in the PUT path's order.
    async fn write_chunk(m: &Model, uuid: Uuid, data: &[u8]) -> Hash {
        write_chunk_at(m, uuid, data, 0).await
    }

    /// [`write_chunk`] at `offset` of the version (a later chunk of the same upload).
    async fn write_chunk_at(m: &Model, uuid: Uuid, data: &[u8], offset: u64) -> Hash {
        let hash = Hash::hash_of(data);
        let mut v = Version::new(uuid);
        let block = VersionBlock {
            hash,
            size: data.len() as u64,
        };
        v.blocks.insert(BlockPos { part: 1, offset }, block);
        m.versions.insert(&v).await.expect("version");
        m.block_refs
            .insert(&BlockRef::new(hash, uuid))
            .await
            .expect("ref");
        m.put_chunk(hash, Bytes::copy_from_slice(data), BudgetPermit::none())
            .await
            .expect("block");
        hash
    }

    async fn put_chunked(m: &Model, bucket: Uuid, key: &str, data: &[u8], ts: u64) -> (Uuid, Hash) {
        let uuid = Uuid::random();
        let hash = write_chunk(m, uuid, data).await;
        let meta = ObjectMeta {
            size: data.len() as u64,
            etag: "e".into(),
            headers: ObjectHeaders::default(),
            checksum: None,
            parts: 0,
        };
        let ov = ObjectVersion {
            uuid,
            timestamp: ts,
            state: ObjectVersionState::Complete(ObjectVersionData::FirstBlock(meta, hash)),
        };
        m.objects
            .insert(&Object::new(bucket, key.into(), vec![ov]))
            .await
            .expect("object");
        (uuid, hash)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overwrite_and_delete_release_chunks_but_shared_chunks_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = open_alone(dir.path()).await;
        let (_tx, rx) = watch::channel(false);
        m.spawn_workers(&rx);
        let bucket = Uuid::random();
        let (_, h1) = put_chunked(&m, bucket, "a", b"first body", 1).await;
        // The same bytes under another key share the chunk.
        let (_, shared) = put_chunked(&m, bucket, "b", b"shared body", 2).await;
        put_chunked(&m, bucket, "c", b"shared body", 3).await;
        // Overwrite "a": its old chunk loses its last reference.
        put_chunked(&m, bucket, "a", b"second body", 4).await;
        // Delete "b": the shared chunk is still used by "c".
        let marker = ObjectVersion {
            uuid: Uuid::random(),
            timestamp: 5,
            state: ObjectVersionState::Complete(ObjectVersionData::DeleteMarker),
        };
        m.objects
            .insert(&Object::new(bucket, "b".into(), vec![marker]))
            .await
            .expect("delete");

        wait_for("the overwritten chunk to be collected", async || {
            m.blocks.gc_once().await.expect("gc");
            !m.blocks.has_block(&h1)
        })
        .await;
        assert!(
            m.blocks.has_block(&shared),
            "a chunk still referenced must never be collected"
        );
        let c = m.counts(&bucket).await.expect("counts");
        assert_eq!((c.objects, c.bytes), (2, 11 + 11), "a and c remain");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interrupted_upload_is_aborted_at_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = Uuid::random();
        let uuid = Uuid::random();
        let hash;
        {
            let m = open_alone(dir.path()).await;
            m.begin_upload(uuid, bucket, "k", 10).await.expect("marker");
            let up = ObjectVersion {
                uuid,
                timestamp: 10,
                state: ObjectVersionState::Uploading {
                    multipart: false,
                    headers: ObjectHeaders::default(),
                    checksum_algo: None,
                    checksum_kind: None,
                },
            };
            m.objects
                .insert(&Object::new(bucket, "k".into(), vec![up]))
                .await
                .expect("uploading");
            hash = write_chunk(&m, uuid, b"half an upload").await;
            // "Crash": drop everything without finishing.
        }
        let m = open_alone(dir.path()).await;
        let (_tx, rx) = watch::channel(false);
        m.spawn_workers(&rx);
        assert_eq!(m.abort_interrupted_uploads().await.expect("cleanup"), 1);
        let o = m.objects.get(&bucket, &"k".to_string()).await.expect("get");
        assert!(o.is_none_or(|o| o.current().is_none()), "nothing visible");
        wait_for(
            "the interrupted upload's chunk to be released",
            async || {
                m.blocks.gc_once().await.expect("gc");
                !m.blocks.has_block(&hash)
            },
        )
        .await;
        assert_eq!(
            m.abort_interrupted_uploads().await.expect("cleanup"),
            0,
            "markers are cleared"
        );
    }

    async fn gc_until_gone(m: &Arc<Model>, what: &str, hashes: &[Hash]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            m.blocks.gc_once().await.expect("gc");
            if hashes.iter().all(|h| !m.blocks.has_block(h)) {
                return;
            }
            if Instant::now() > deadline {
                let mut rcs = Vec::new();
                for h in hashes {
                    rcs.push((
                        m.blocks.has_block(h),
                        m.blocks.refcount(*h).await.expect("rc"),
                    ));
                }
                panic!("timed out waiting for {what}: (present, refcount) {rcs:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An upload still streaming when a newer PUT completes releases every chunk it
    /// stored, those stored after it was superseded included, and its late commit too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn superseded_upload_releases_all_its_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = open_alone(dir.path()).await;
        let (_tx, rx) = watch::channel(false);
        m.spawn_workers(&rx);
        let bucket = Uuid::random();
        let mut slow = ObjectWriter::new(&m, bucket, "k", 10);
        slow.begin(ObjectHeaders::default(), None)
            .await
            .expect("begin");
        let before = write_chunk(&m, slow.uuid(), b"slow chunk 1").await;
        let (_, newer) = put_chunked(&m, bucket, "k", b"the newer body", 20).await;
        let after = write_chunk_at(&m, slow.uuid(), b"slow chunk 2", 12).await;
        let meta = ObjectMeta {
            size: 24,
            etag: "e".into(),
            headers: ObjectHeaders::default(),
            checksum: None,
            parts: 0,
        };
        slow.commit(ObjectVersionData::FirstBlock(meta, before), Vec::new())
            .await
            .expect("late commit");
        gc_until_gone(&m, "the superseded upload's first chunk", &[before]).await;
        gc_until_gone(&m, "the superseded upload's later chunk", &[after]).await;
        assert!(
            m.blocks.has_block(&newer),
            "the newer object keeps its chunk"
        );
        let o = m.objects.get(&bucket, &"k".to_string()).await.expect("get");
        assert_eq!(o.and_then(|o| o.current().map(|v| v.timestamp)), Some(20));
    }

    /// A copy or completion whose version arrives older than the current one is pruned on
    /// arrival: the chunks attached to it are released all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn version_superseded_on_arrival_is_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = open_alone(dir.path()).await;
        let (_tx, rx) = watch::channel(false);
        m.spawn_workers(&rx);
        let bucket = Uuid::random();
        put_chunked(&m, bucket, "k", b"current body", 50).await;
        let (_, late) = put_chunked(&m, bucket, "k", b"a late, older body", 40).await;
        gc_until_gone(&m, "the chunk of a version pruned on arrival", &[late]).await;
    }

    /// A writer dropped mid-upload (its client went away) aborts without a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_writer_aborts_its_upload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = open_alone(dir.path()).await;
        let (_tx, rx) = watch::channel(false);
        m.spawn_workers(&rx);
        let bucket = Uuid::random();
        let mut w = ObjectWriter::new(&m, bucket, "k", 10);
        w.begin(ObjectHeaders::default(), None)
            .await
            .expect("begin");
        let hash = write_chunk(&m, w.uuid(), b"half a body").await;
        drop(w);
        gc_until_gone(&m, "the dropped upload's chunk", &[hash]).await;
        assert_eq!(
            m.abort_interrupted_uploads().await.expect("cleanup"),
            0,
            "nothing left for the next start"
        );
    }
}
