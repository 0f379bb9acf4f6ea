//! Group commit: the node's durable table writes share write transactions and their fsync.
//!
//! redb has one writer at a time, and every durable commit ends in an fsync, so writes that
//! each took their own transaction ran one after the other, an fsync each: concurrent small
//! PUTs queued behind each other on every replica. Here one thread per database takes every
//! write waiting when it is free and runs them in one transaction, in arrival order (a later
//! write sees an earlier one's merge), with one commit. Every caller is answered only after
//! that commit is durable, exactly as before.
//!
//! A batch that fails (one write's error, no space, a failed commit) is rolled back and its
//! writes are run again, each in its own transaction, so that one write's error is its own
//! and never another's.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Weak};

use redb::Database;
use tokio::sync::{Notify, oneshot};

use super::db::{Db, DbState, UpdateTx};
use crate::error::{Error, Result};

/// Most writes in one transaction (a bound on how long one batch holds the writer).
const MAX_BATCH: usize = 256;

/// One write waiting for the committer.
pub(super) trait Job: Send {
    /// Applies the write inside the shared transaction (may run again alone, in a fresh
    /// one, if its batch is rolled back).
    fn run(&mut self, tx: &mut UpdateTx<'_>) -> Result<()>;
    /// Answers the caller once the transaction is committed (or failed).
    fn finish(self: Box<Self>, result: Result<()>);
}

struct Typed<T, F> {
    write: F,
    out: Option<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send,
    F: FnMut(&mut UpdateTx<'_>) -> Result<T> + Send,
{
    fn run(&mut self, tx: &mut UpdateTx<'_>) -> Result<()> {
        self.out = Some((self.write)(tx)?);
        Ok(())
    }

    fn finish(self: Box<Self>, result: Result<()>) {
        let Self { out, reply, .. } = *self;
        let answer = result.and_then(|()| {
            out.ok_or_else(|| Error::Unavailable("a metadata write produced no result".into()))
        });
        // The caller may have gone away (its request was dropped): the write stands.
        let _ = reply.send(answer);
    }
}

/// The sending side, kept with the database's shared state.
pub(super) struct Committer {
    jobs: Sender<Box<dyn Job>>,
}

impl Committer {
    /// The channel to a commit thread not started yet (see [`Self::start`]).
    pub(super) fn new() -> (Self, Receiver<Box<dyn Job>>) {
        let (jobs, rx) = channel();
        (Self { jobs }, rx)
    }

    /// Starts the commit thread of `db`, taking the jobs of `rx`. It holds no strong
    /// reference to the database, so it stops (and the file is closed) once the last [`Db`]
    /// handle is dropped.
    pub(super) fn start(db: &Db, rx: Receiver<Box<dyn Job>>) -> Result<()> {
        let inner = Arc::downgrade(&db.inner);
        let state = Arc::downgrade(&db.state);
        let notify = Arc::clone(&db.queue_notify);
        std::thread::Builder::new()
            .name("storaged-commit".into())
            .spawn(move || run(&rx, &inner, &state, &notify))?;
        Ok(())
    }
}

impl Db {
    /// Runs `write` in a durable write transaction, shared with the other writes waiting at
    /// the same time (see the module docs); resolves once it is committed. `write` may run
    /// twice (in a fresh transaction the second time) and must not have other effects.
    ///
    /// # Errors
    /// `write`'s own error; [`Error::DiskFull`] below the free-space reserve; a failed
    /// commit (see [`Db::failed`]).
    pub async fn write<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut UpdateTx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            write,
            out: None,
            reply,
        });
        self.state.committer.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Unavailable("the metadata commit thread stopped".into())
}

fn run(
    rx: &Receiver<Box<dyn Job>>,
    inner: &Weak<Database>,
    state: &Weak<DbState>,
    notify: &Arc<Notify>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let (Some(inner), Some(state)) = (inner.upgrade(), state.upgrade()) else {
            for job in batch {
                job.finish(Err(stopped()));
            }
            continue;
        };
        let db = Db {
            inner,
            queue_notify: Arc::clone(notify),
            state,
        };
        let results: Vec<Result<()>> =
            if batch.len() > 1 && guarded(|| commit(&db, &mut batch)).is_ok() {
                batch.iter().map(|_| Ok(())).collect()
            } else {
                batch
                    .iter_mut()
                    .map(|job| guarded(|| commit(&db, std::slice::from_mut(job))))
                    .collect()
            };
        // Let go of the database before answering: a caller that then drops its last
        // handle finds the file closed.
        drop(db);
        for (job, result) in batch.into_iter().zip(results) {
            job.finish(result);
        }
    }
}

/// One transaction holding every write of `jobs`, committed.
fn commit(db: &Db, jobs: &mut [Box<dyn Job>]) -> Result<()> {
    let txn = db.begin_write()?;
    let mut tx = UpdateTx::new(&txn);
    for job in jobs.iter_mut() {
        job.run(&mut tx)?;
    }
    let queued = tx.queued();
    txn.commit()?;
    if queued {
        db.notify_queue();
    }
    Ok(())
}

/// `f`, with a panic turned into an error (the transaction it held is dropped, so rolled
/// back) rather than the end of the commit thread.
fn guarded(f: impl FnOnce() -> Result<()>) -> Result<()> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::Unavailable("a metadata write panicked".into())))
}

#[cfg(test)]
mod tests {
    use redb::{ReadableTable, TableDefinition};

    use super::*;

    const T: TableDefinition<'static, u64, u64> = TableDefinition::new("commit_test");

    #[tokio::test]
    async fn concurrent_writes_all_land_and_one_error_stays_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        db.create_table(T).expect("table");
        let writes = (0..200u64).map(|i| {
            let db = db.clone();
            async move {
                db.write(move |tx| {
                    if i == 17 {
                        return Err(Error::Unavailable("refused".into()));
                    }
                    let mut t = tx.raw().open_table(T)?;
                    let prev = t.get(0)?.map_or(0, |v| v.value());
                    t.insert(0, prev + 1)?;
                    t.insert(i + 1, i)?;
                    Ok(i)
                })
                .await
            }
        });
        let results = futures::future::join_all(writes).await;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, i as u64),
                Err(e) => {
                    assert_eq!(i, 17, "only write 17 fails: {e}");
                    assert!(e.to_string().contains("refused"), "{e}");
                }
            }
        }
        let txn = db.begin_read().expect("read");
        let t = txn.open_table(T).expect("open");
        // Every other write's increment is there, in whatever batches they were grouped.
        assert_eq!(t.get(0).expect("get").map(|v| v.value()), Some(199));
        assert!(
            t.get(18).expect("get").is_none(),
            "the failed write left nothing"
        );
        assert_eq!(t.get(19).expect("get").map(|v| v.value()), Some(18));
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_thread_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        db.create_table(T).expect("table");
        let r = db.write(|_tx| -> Result<()> { panic!("boom") }).await;
        assert!(r.is_err());
        let v = db
            .write(|tx| {
                tx.raw().open_table(T)?.insert(1, 2)?;
                Ok(5u8)
            })
            .await
            .expect("later write");
        assert_eq!(v, 5);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        db.write(|tx| {
            tx.raw().open_table(T)?.insert(1, 1)?;
            Ok(())
        })
        .await
        .expect("write");
        drop(db);
        Db::open(dir.path()).expect("reopened right away");
    }
}
