//! Content-addressed chunk store.
//!
//! Objects are cut into chunks addressed by the blake3 hash of their plain bytes; a chunk is
//! stored once per node however many objects share it. Reference counts live in the
//! metadata database and change in the same transaction as the block references that cause
//! them (see `model::block_ref`); a chunk whose count drops to zero is deleted by the GC
//! worker after `background.block_gc_delay_secs`, in a transaction that re-checks the count,
//! so a concurrent PUT that re-references it can never lose it.
//!
//! ## On-disk layout
//!
//! `data_dir/<h[0]>/<h[1]>/<hex(h)>` holds the plain bytes, or `<hex(h)>.zst` one zstd frame
//! of them when compression saved at least 10%. A file is written to `<name>.tmp.<random>`,
//! fsynced, renamed into place, and its directory fsynced: a crash leaves either no chunk or
//! a whole one (stray `.tmp.` files are ignored and can be removed).
//!
//! A chunk write that finds its filesystem full fails with [`Error::DiskFull`] and leaves no
//! file behind; on the filesystem of the metadata store it stops while twice
//! [`space::METADATA_RESERVE`] is still free, keeping room for metadata writes (deletes
//! included). Either way the other replicas make the write quorum, and resync fetches the
//! chunk once space returns.
//!
//! ## Replication
//!
//! [`BlockRpc`] is the service nodes use to put, get and probe chunks on each other;
//! [`BlockReplicator`] writes a chunk to its partition's nodes at write quorum and reads it
//! from the nearest intact replica; [`ResyncQueue`] and [`ResyncWorker`] fetch chunks this
//! node should hold and drop those it no longer owns. None of it changes the local API
//! above: it is built on `write_block` / `read_block` / `has_block`.

mod rc;
mod replication;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod replication_tests;
mod resync;
mod rpc;
mod scrub;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

pub use rc::{decref, incref, schedule_gc};
pub use replication::{
    BlockReplicator, ReplicationConfig, ReplicationError, Zones, preferred_order, zones_of,
};
pub use resync::{
    Placement, ResyncConfig, ResyncOutcome, ResyncQueue, ResyncWorker, TablePlacement,
};
pub use rpc::{BlockReq, BlockResp, BlockRpc, BlockRpcHandler, MAX_BLOCK_LEN, Refusal};
pub use scrub::ScrubReport;

use crate::error::{Error, Result};
use crate::table::Db;
use crate::util::id::Hash;
use crate::util::space;
use crate::util::time::now_ms;

/// The chunk store of this node.
pub struct BlockManager {
    data_dir: PathBuf,
    compression_level: i32,
    db: Db,
    /// Told of every chunk found corrupt (by scrub or a read for a peer), so resync can
    /// repair it; unset means nobody is told (a single node has no peer to ask).
    corrupt_hook: OnceLock<Box<dyn Fn(Hash) + Send + Sync>>,
    /// GC delay for a chunk written while nothing references it here (its reference was
    /// released first, or has not arrived yet): GC checks it then. Unset: never scheduled.
    orphan_gc_delay_ms: OnceLock<u64>,
    /// Free bytes a chunk write must leave on `data_dir`'s filesystem: room for the
    /// metadata store when it lives there too, else none.
    reserve: u64,
    /// Corrupt chunks found since start (scrub, reads for clients and for peers).
    corrupt_found: AtomicU64,
}

impl BlockManager {
    /// Opens the store in `data_dir`.
    pub fn open(data_dir: &Path, compression_level: i32, db: Db) -> Result<Arc<Self>> {
        std::fs::create_dir_all(data_dir)?;
        rc::create_tables(&db)?;
        let reserve = if space::same_filesystem(data_dir, db.dir()) {
            2 * space::METADATA_RESERVE
        } else {
            0
        };
        Ok(Arc::new(Self {
            data_dir: data_dir.to_path_buf(),
            compression_level,
            db,
            corrupt_hook: OnceLock::new(),
            orphan_gc_delay_ms: OnceLock::new(),
            reserve,
            corrupt_found: AtomicU64::new(0),
        }))
    }

    /// Sets, once, how long after its write an unreferenced chunk is checked by GC (the
    /// node's `block_gc_delay_secs`), so that a chunk whose reference was released before
    /// the chunk arrived is still collected.
    pub fn set_orphan_gc_delay(&self, delay_ms: u64) {
        let _ = self.orphan_gc_delay_ms.set(delay_ms);
    }

    /// Sets who is told of corrupt chunks (normally [`ResyncQueue::corrupt_hook`]), once;
    /// returns `false` if a hook was already set.
    pub fn set_corrupt_hook(&self, hook: Box<dyn Fn(Hash) + Send + Sync>) -> bool {
        self.corrupt_hook.set(hook).is_ok()
    }

    /// Reports a corrupt chunk to the hook, if one is set, and counts it.
    pub(crate) fn report_corrupt(&self, hash: Hash) {
        self.corrupt_found.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = self.corrupt_hook.get() {
            hook(hash);
        }
    }

    /// Corrupt chunks found since this node started (each report counts: a chunk read
    /// twice before its repair counts twice).
    #[must_use]
    pub fn corrupt_found(&self) -> u64 {
        self.corrupt_found.load(Ordering::Relaxed)
    }

    /// `e` as [`Error::DiskFull`] when it says the data filesystem is full.
    fn full_or(&self, e: std::io::Error) -> Error {
        if space::is_no_space(&e) {
            return self.disk_full(space::free_bytes(&self.data_dir).unwrap_or(0));
        }
        e.into()
    }

    fn disk_full(&self, free: u64) -> Error {
        Error::DiskFull {
            what: "data",
            path: self.data_dir.clone(),
            free,
            reserve: self.reserve,
        }
    }

    fn dir_of(&self, hash: &Hash) -> PathBuf {
        let h = hash.as_bytes();
        self.data_dir
            .join(format!("{:02x}", h[0]))
            .join(format!("{:02x}", h[1]))
    }

    fn paths(&self, hash: &Hash) -> (PathBuf, PathBuf) {
        let dir = self.dir_of(hash);
        let name = hash.to_hex();
        (dir.join(&name), dir.join(format!("{name}.zst")))
    }

    /// Whether the chunk is stored here.
    #[must_use]
    pub fn has_block(&self, hash: &Hash) -> bool {
        let (plain, zst) = self.paths(hash);
        plain.exists() || zst.exists()
    }

    /// Durably stores `data` under `hash` (a no-op when already stored). The caller must hold
    /// a reference (see [`incref`]) before calling, so GC cannot race it.
    pub async fn write_block(self: &Arc<Self>, hash: Hash, data: Bytes) -> Result<()> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.write_block_sync(&hash, &data)).await?
    }

    fn write_block_sync(&self, hash: &Hash, data: &[u8]) -> Result<()> {
        if self.has_block(hash) {
            return Ok(());
        }
        let (plain, zst) = self.paths(hash);
        let compressed = if self.compression_level > 0 && worth_compressing(data) {
            zstd::bulk::compress(data, self.compression_level)
                .ok()
                .filter(|c| c.len() < data.len() / 10 * 9)
        } else {
            None
        };
        let (target, bytes) = match &compressed {
            Some(c) => (zst, c.as_slice()),
            None => (plain, data),
        };
        if self.reserve > 0 {
            let free = space::free_bytes(&self.data_dir)?;
            if free
                < self
                    .reserve
                    .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX))
            {
                return Err(self.disk_full(free));
            }
        }
        let dir = self.dir_of(hash);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| self.full_or(e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
                if let Some(grand) = parent.parent() {
                    sync_dir(grand)?;
                }
            }
        }
        let tmp = dir.join(format!(
            "{}.tmp.{:016x}",
            hash.to_hex(),
            rand::random::<u64>()
        ));
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            std::fs::File::open(&dir)?.sync_all()
        })()
        .map_err(|e| self.full_or(e));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return result;
        }
        if let Some(delay) = self.orphan_gc_delay_ms.get()
            && rc::refcount(&self.db, hash)? == 0
        {
            let txn = self.db.begin_write()?;
            rc::schedule_gc(&txn, hash, now_ms().saturating_add(*delay))?;
            txn.commit()?;
        }
        Ok(())
    }

    /// Reads a chunk and verifies that it hashes to its address.
    pub async fn read_block(self: &Arc<Self>, hash: Hash) -> Result<Bytes> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.read_block_sync(&hash)).await?
    }

    fn read_block_sync(&self, hash: &Hash) -> Result<Bytes> {
        let (plain, zst) = self.paths(hash);
        let data = match std::fs::read(&plain) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&zst) {
                Ok(c) => zstd::stream::decode_all(c.as_slice())
                    .map_err(|_| Error::CorruptBlock(*hash))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::MissingBlock(*hash));
                }
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        if Hash::hash_of(&data) != *hash {
            tracing::error!(block = %hash, "chunk fails hash verification");
            return Err(Error::CorruptBlock(*hash));
        }
        Ok(Bytes::from(data))
    }

    fn delete_block_sync(&self, hash: &Hash) -> Result<()> {
        let (plain, zst) = self.paths(hash);
        for p in [plain, zst] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Live references to `hash` on this node: resync fetches only chunks that something
    /// here still references (a missing unreferenced chunk is garbage, not a loss).
    pub async fn refcount(self: &Arc<Self>, hash: Hash) -> Result<u64> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || rc::refcount(&db, &hash)).await?
    }

    /// Deletes chunks whose GC deadline passed and that are still unreferenced.
    pub async fn gc_once(self: &Arc<Self>) -> Result<usize> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            rc::collect_expired(&this.db, now_ms(), |h| this.delete_block_sync(h))
        })
        .await?
    }

    /// Runs [`Self::gc_once`] every `interval` until `shutdown` flips.
    pub async fn run_gc_worker(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            match self.gc_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "block GC"),
                Err(e) => tracing::warn!(error = %e, "block GC"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Bytes of a chunk compressed to judge whether the whole is worth compressing.
const COMPRESSION_SAMPLE: usize = 64 << 10;

/// Whether a chunk is likely to shrink: a sample from its middle must compress to under
/// 90% (at the fastest level), so that data that does not compress (media, archives,
/// encrypted backups: most large objects) costs a sample's compression, not the chunk's.
fn worth_compressing(data: &[u8]) -> bool {
    if data.len() <= 2 * COMPRESSION_SAMPLE {
        return true;
    }
    let start = (data.len() - COMPRESSION_SAMPLE) / 2;
    let sample = &data[start..start + COMPRESSION_SAMPLE];
    zstd::bulk::compress(sample, 1).is_ok_and(|c| c.len() < sample.len() / 10 * 9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn incompressible_chunks_are_judged_on_a_sample() {
        use rand::RngCore;
        let mut random = vec![0u8; 1 << 20];
        rand::rng().fill_bytes(&mut random);
        assert!(!super::worth_compressing(&random));
        assert!(super::worth_compressing(&vec![7u8; 1 << 20]));
        assert!(
            super::worth_compressing(&random[..1000]),
            "small: always tried"
        );
    }

    use super::*;

    #[tokio::test]
    async fn write_read_verify_and_detect_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("meta")).expect("db");
        let bm = BlockManager::open(&dir.path().join("data"), 1, db).expect("open");
        let data = Bytes::from(vec![7u8; 100_000]);
        let h = Hash::hash_of(&data);
        bm.write_block(h, data.clone()).await.expect("write");
        assert_eq!(bm.read_block(h).await.expect("read"), data);
        // Compressible data is stored compressed; corrupt it and reading must fail.
        let (_, zst) = bm.paths(&h);
        assert!(zst.exists(), "compressible chunk stored as .zst");
        std::fs::write(&zst, zstd::bulk::compress(&[1u8; 10], 1).expect("zstd")).expect("corrupt");
        assert!(matches!(
            bm.read_block(h).await,
            Err(Error::CorruptBlock(_))
        ));
        let missing = Hash::hash_of(b"nope");
        assert!(matches!(
            bm.read_block(missing).await,
            Err(Error::MissingBlock(_))
        ));
    }

    #[tokio::test]
    async fn gc_deletes_only_unreferenced_expired_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("meta")).expect("db");
        let bm = BlockManager::open(&dir.path().join("data"), 0, db.clone()).expect("open");
        let (a, b) = (Bytes::from_static(b"aaaa"), Bytes::from_static(b"bbbb"));
        let (ha, hb) = (Hash::hash_of(&a), Hash::hash_of(&b));
        let txn = db.begin_write().expect("txn");
        incref(&txn, &ha).expect("incref");
        incref(&txn, &hb).expect("incref");
        txn.commit().expect("commit");
        bm.write_block(ha, a).await.expect("write");
        bm.write_block(hb, b).await.expect("write");
        let txn = db.begin_write().expect("txn");
        decref(&txn, &ha, 0).expect("decref");
        // b goes to zero but is referenced again before GC runs: it must survive.
        decref(&txn, &hb, 0).expect("decref");
        incref(&txn, &hb).expect("incref");
        txn.commit().expect("commit");
        assert_eq!(bm.gc_once().await.expect("gc"), 1);
        assert!(!bm.has_block(&ha));
        assert!(bm.has_block(&hb));
    }
}
