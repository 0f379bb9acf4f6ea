//! The node's one redb database, its transactions and the durable insert queue.
//!
//! Opening tells a damaged file ([`Error::MetadataDamaged`]: `storaged repair` sets it aside)
//! from one that cannot be opened for now ([`Error::MetadataUnavailable`]: in use, an I/O
//! error). Write transactions are refused with [`Error::DiskFull`] while less than
//! [`space::METADATA_RESERVE`] is free, so that redb itself never meets a full disk; if it
//! still fails a write, redb refuses every later call until it is reopened, which the
//! daemon does by stopping with one error line ([`Db::failed`]): the store on disk is
//! intact (redb commits are atomic) and the node catches up from its peers once restarted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use tokio::sync::Notify;

use super::commit::Committer;
use super::{TableSchema, storage_key};
use crate::error::{Error, Result};
use crate::util::crdt::Crdt;
use crate::util::encode::{decode, encode};
use crate::util::fault::{self, Fault};
use crate::util::space;

/// Queued inserts into other tables: `table name ++ 0x00 ++ storage key` → encoded entry.
const INSERT_QUEUE: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("insert_queue");

/// The database file inside `metadata_dir`.
pub const DB_FILE: &str = "db.redb";

/// Handle on the metadata database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    pub(super) inner: Arc<Database>,
    pub(super) queue_notify: Arc<Notify>,
    pub(super) state: Arc<DbState>,
}

/// What every handle on one database shares besides redb itself.
pub(super) struct DbState {
    /// The database file.
    pub(super) path: PathBuf,
    /// Its directory (whose filesystem's free space is checked).
    dir: PathBuf,
    /// Writes are being refused for lack of space (logged once per episode).
    full: AtomicBool,
    /// Why the database stopped working, once it did (see [`Db::failed`]).
    failure: Mutex<Option<String>>,
    failed: Notify,
    /// This node's entries are being rebuilt from its peers (see `rebuild`).
    pub(super) rebuilding: AtomicBool,
    /// Where durable table writes go to be grouped (see `commit`).
    pub(super) committer: Committer,
}

impl Db {
    /// Opens or creates `dir/db.redb`.
    ///
    /// # Errors
    /// [`Error::MetadataDamaged`] when the file is not a readable database,
    /// [`Error::MetadataUnavailable`] when it cannot be opened now, [`Error::DiskFull`].
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_for_node(dir, false)
    }

    /// [`Self::open`] for a node that `had_identity` before this start (its node key
    /// existed): if its store is new, the node lost its metadata but still owns its
    /// partitions, and the store is marked as rebuilding (see `rebuild`).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_for_node(dir: &Path, had_identity: bool) -> Result<Self> {
        let path = dir.join(DB_FILE);
        let unavailable = |why: String| Error::MetadataUnavailable {
            path: path.clone(),
            why,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let existed = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        let db = Database::create(&path).map_err(|e| open_error(&path, e))?;
        let (committer, jobs) = Committer::new();
        let this = Self {
            inner: Arc::new(db),
            queue_notify: Arc::new(Notify::new()),
            state: Arc::new(DbState {
                path: path.clone(),
                dir: dir.to_owned(),
                full: AtomicBool::new(false),
                failure: Mutex::new(None),
                failed: Notify::new(),
                rebuilding: AtomicBool::new(false),
                committer,
            }),
        };
        Committer::start(&this, jobs)
            .map_err(|e| unavailable(format!("cannot start its commit thread: {e}")))?;
        let opened = (|| {
            this.create_table(INSERT_QUEUE)?;
            this.load_rebuild_state(!existed && had_identity)
        })();
        opened.map_err(|e| this.classify(e))?;
        Ok(this)
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.state.path
    }

    /// The directory holding it (`metadata_dir`).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    /// `e` with a damaged database named as such (redb found a corrupt page).
    #[must_use]
    pub fn classify(&self, e: Error) -> Error {
        match e {
            Error::Db(redb::Error::Corrupted(why)) => Error::MetadataDamaged {
                path: self.state.path.clone(),
                why,
            },
            other => other,
        }
    }

    /// Resolves once the database stopped working (redb failed a write and refuses every
    /// call until reopened), with why: the daemon then stops (see the module docs).
    pub async fn failed(&self) -> String {
        loop {
            if let Some(why) = self.failure() {
                return why;
            }
            // `notify_one` keeps a permit: a failure between the check and here is not missed.
            self.state.failed.notified().await;
        }
    }

    fn failure(&self) -> Option<String> {
        self.state
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records that redb refuses every call now, and wakes [`Self::failed`].
    fn fail(&self) -> Error {
        let free = space::free_bytes(&self.state.dir).map_or_else(
            |e| format!("free space unknown: {e}"),
            |f| format!("{f} bytes free"),
        );
        let why = format!(
            "a write failed and the store refuses every call until it is reopened (its \
             filesystem has {free}): the node stops; free space there (or fix the disk) and \
             start it again"
        );
        let mut failure = self
            .state
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failure.is_none() {
            tracing::error!(path = %self.state.path.display(), "metadata store failed: {why}");
            *failure = Some(why.clone());
            self.state.failed.notify_one();
        }
        Error::MetadataUnavailable {
            path: self.state.path.clone(),
            why,
        }
    }

    /// A redb error, noticing the one that means the database stopped working.
    fn checked(&self, e: redb::TransactionError) -> Error {
        match redb::Error::from(e) {
            redb::Error::PreviousIo => self.fail(),
            e => self.classify(Error::Db(e)),
        }
    }

    /// Refuses a write while the metadata filesystem has less than the reserve free.
    fn check_space(&self) -> Result<()> {
        let Ok(free) = space::free_bytes(&self.state.dir) else {
            return Ok(()); // cannot tell: let redb try
        };
        let reserve = if fault::active(Fault::NoMetadataReserve) {
            0
        } else {
            space::METADATA_RESERVE
        };
        if free >= reserve {
            if self.state.full.swap(false, Ordering::Relaxed) {
                tracing::info!(dir = %self.state.dir.display(), free, "metadata filesystem has room again: taking writes");
            }
            return Ok(());
        }
        if !self.state.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                dir = %self.state.dir.display(),
                free,
                reserve,
                "metadata filesystem full: refusing writes until space returns"
            );
        }
        Err(Error::DiskFull {
            what: "metadata",
            path: self.state.dir.clone(),
            free,
            reserve,
        })
    }

    /// Ensures a table exists so that read transactions can open it (without writing when
    /// it does: a node whose metadata disk is full still starts, and serves reads).
    ///
    /// # Errors
    /// Database errors, [`Error::DiskFull`] when the table must be created.
    pub fn create_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<()> {
        match self.begin_read()?.open_table(def) {
            Ok(_) => return Ok(()),
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.classify(Error::Db(e.into()))),
        }
        let txn = self.begin_write()?;
        txn.open_table(def)?;
        txn.commit()?;
        Ok(())
    }

    /// A durable write transaction (committed with fsync).
    ///
    /// # Errors
    /// [`Error::DiskFull`] below the free-space reserve; [`Error::MetadataUnavailable`] once
    /// the database stopped working; other database errors.
    pub fn begin_write(&self) -> Result<WriteTransaction> {
        self.check_space()?;
        self.inner.begin_write().map_err(|e| self.checked(e))
    }

    /// A snapshot read transaction.
    ///
    /// # Errors
    /// As [`Self::begin_write`], without the space check.
    pub fn begin_read(&self) -> Result<ReadTransaction> {
        self.inner.begin_read().map_err(|e| self.checked(e))
    }

    pub(super) fn notify_queue(&self) {
        self.queue_notify.notify_waiters();
    }

    pub(super) fn queue_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.queue_notify.notified()
    }

    /// Up to `max` queued entries for `table`.
    pub(super) fn queue_batch(&self, table: &str, max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = queue_prefix(table);
        let txn = self.begin_read()?;
        let q = txn.open_table(INSERT_QUEUE)?;
        let end = super::prefix_end(&prefix);
        let iter = match &end {
            Some(end) => q.range::<&[u8]>(prefix.as_slice()..end.as_slice())?,
            None => q.range::<&[u8]>(prefix.as_slice()..)?,
        };
        let mut out = Vec::new();
        for item in iter.take(max) {
            let (k, v) = item?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes queue items that still hold the values in `done` (a newer merge stays queued).
    pub(super) async fn queue_remove(&self, done: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        self.write(move |tx| {
            let mut q = tx.raw().open_table(INSERT_QUEUE)?;
            for (k, v) in &done {
                let unchanged = q
                    .get(k.as_slice())?
                    .is_some_and(|cur| cur.value() == v.as_slice());
                if unchanged {
                    q.remove(k.as_slice())?;
                }
            }
            Ok(())
        })
        .await
    }
}

/// What a failure to open the database file means for the operator.
fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    use redb::{DatabaseError as D, StorageError as S};
    let one_line = |s: String| s.replace('\n', " ");
    let damaged = |why: String| Error::MetadataDamaged {
        path: path.to_owned(),
        why: one_line(why),
    };
    let unavailable = |why: String| Error::MetadataUnavailable {
        path: path.to_owned(),
        why: one_line(why),
    };
    match e {
        D::Storage(S::Corrupted(why)) => damaged(why),
        D::Storage(S::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            damaged(io.to_string())
        }
        D::Storage(S::Io(io)) if space::is_no_space(&io) => unavailable(format!(
            "cannot open it: {io}; free space on its filesystem and start again"
        )),
        D::DatabaseAlreadyOpen | D::LockProtocolMismatch => unavailable(
            "in use by another process (is another storaged running with this metadata_dir?)"
                .into(),
        ),
        D::UpgradeRequired(v) => unavailable(format!(
            "its file format (redb {v}) is older than this storaged reads"
        )),
        other => unavailable(format!("cannot open it: {other}")),
    }
}

fn queue_prefix(table: &str) -> Vec<u8> {
    let mut p = table.as_bytes().to_vec();
    p.push(0);
    p
}

/// The transaction an `updated` hook runs in.
pub struct UpdateTx<'a> {
    txn: &'a WriteTransaction,
    queued: bool,
}

impl<'a> UpdateTx<'a> {
    pub(super) fn new(txn: &'a WriteTransaction) -> Self {
        Self { txn, queued: false }
    }

    pub(super) fn queued(&self) -> bool {
        self.queued
    }

    /// The raw transaction, for derived state owned by another module (block refcounts).
    #[must_use]
    pub fn raw(&self) -> &WriteTransaction {
        self.txn
    }

    /// Durably queues `entry` for insertion into table `T` once this transaction commits.
    pub fn queue_insert<T: TableSchema>(&mut self, entry: &T::E) -> Result<()> {
        use super::schema::{Entry, PartitionKey, SortKey};
        let mut key = queue_prefix(T::TABLE_NAME);
        key.extend(storage_key(
            &entry.partition_key().hash(),
            &entry.sort_key().sort_key(),
        ));
        let mut q = self.txn.open_table(INSERT_QUEUE)?;
        let merged = match q.get(key.as_slice())? {
            Some(prev) => {
                let mut prev: T::E = decode(prev.value())?;
                prev.merge(entry);
                prev
            }
            None => entry.clone(),
        };
        q.insert(key.as_slice(), encode(&merged)?.as_slice())?;
        self.queued = true;
        Ok(())
    }
}
