//! The node-wide memory budget: one count of the bytes of object data this node holds in
//! memory, so that slow clients, slow peers and bursts wait instead of growing the heap.
//!
//! Two classes share it, so that they cannot starve each other into a deadlock:
//! - **front** ([`MemoryBudget::acquire`]): work an S3 request starts (a PUT's chunk
//!   buffers and their transfers to the replicas, a GET's chunks read ahead). It may hold
//!   at most three quarters of the budget; an S3 request that finds none left waits, and so
//!   stops reading its body: the back-pressure reaches the client over TCP.
//! - **internal** ([`MemoryBudget::acquire_internal`]): RPC frames arriving from peers and
//!   background transfers. It may use the whole budget, so at least a quarter is always
//!   left for it: a peer's chunk put is answered even while this node's own PUTs wait on
//!   that peer.
//!
//! Every holder takes its whole amount up front (never piece by piece: many holders each
//! waiting for their next piece could wait for each other forever). An amount larger than
//! its class may hold is cut to that size, so it runs alone rather than never.
//!
//! A transfer that is only still running because a replica is slow (the write quorum was
//! already reached) gives up its bytes when somebody waits ([`MemoryBudget::pressed`]);
//! that replica gets the chunk later through resync.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The default budget (`limits.memory_budget_bytes`): 64 MiB.
pub const DEFAULT_BUDGET: usize = 64 * 1024 * 1024;

/// The smallest budget a node accepts: 4 MiB (four default chunks).
pub const MIN_BUDGET: usize = 4 * 1024 * 1024;

/// The largest budget: the semaphore counts bytes in `u32` steps.
pub const MAX_BUDGET: usize = u32::MAX as usize;

/// Frames smaller than this are not counted: they are bounded by the per-peer request
/// limit, and counting them would cost more than they weigh.
pub const UNCOUNTED_FRAME: usize = 64 * 1024;

/// The budget. Cheap to clone: clones share the count.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    front_limit: usize,
    /// Every class draws here.
    all: Arc<Semaphore>,
    /// The front class draws here first.
    front: Arc<Semaphore>,
    /// Woken whenever an acquisition starts to wait.
    pressure: Notify,
    /// Acquisitions waiting now.
    waiting: AtomicUsize,
    waits: AtomicU64,
}

/// Bytes held from the budget; given back when dropped.
#[derive(Debug)]
pub struct BudgetPermit {
    _all: Option<OwnedSemaphorePermit>,
    _front: Option<OwnedSemaphorePermit>,
}

impl BudgetPermit {
    /// A permit of no bytes, for data nobody counts (tests, small control messages).
    #[must_use]
    pub fn none() -> Self {
        Self {
            _all: None,
            _front: None,
        }
    }
}

fn permits(bytes: usize, cap: usize) -> u32 {
    u32::try_from(bytes.min(cap).max(1)).unwrap_or(u32::MAX)
}

impl MemoryBudget {
    /// A budget of `limit` bytes (clamped to [`MIN_BUDGET`]..=[`MAX_BUDGET`]; the config
    /// refuses values outside it with an error naming the key).
    #[must_use]
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(MIN_BUDGET, MAX_BUDGET);
        let front_limit = limit - limit / 4;
        Self {
            inner: Arc::new(Inner {
                limit,
                front_limit,
                all: Arc::new(Semaphore::new(limit)),
                front: Arc::new(Semaphore::new(front_limit)),
                pressure: Notify::new(),
                waiting: AtomicUsize::new(0),
                waits: AtomicU64::new(0),
            }),
        }
    }

    /// Holds `bytes` for work an S3 request starts; waits while the front class is full.
    pub async fn acquire(&self, bytes: usize) -> BudgetPermit {
        let n = permits(bytes, self.inner.front_limit);
        let front = self.take(&self.inner.front, n).await;
        let all = self.take(&self.inner.all, n).await;
        BudgetPermit {
            _all: all,
            _front: front,
        }
    }

    /// Holds `bytes` for a frame from a peer or a background transfer.
    pub async fn acquire_internal(&self, bytes: usize) -> BudgetPermit {
        let n = permits(bytes, self.inner.limit);
        BudgetPermit {
            _all: self.take(&self.inner.all, n).await,
            _front: None,
        }
    }

    async fn take(&self, sem: &Arc<Semaphore>, n: u32) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = Arc::clone(sem).try_acquire_many_owned(n) {
            return Some(p);
        }
        self.inner.waits.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting::new(&self.inner.waiting);
        self.inner.pressure.notify_waiters();
        // The semaphores are never closed; `None` (no bytes held) would only mean that.
        Arc::clone(sem).acquire_many_owned(n).await.ok()
    }

    /// Resolves while (or as soon as) an acquisition waits: lets optional holders (the
    /// tail of a transfer past its quorum) give their bytes back.
    pub async fn pressed(&self) {
        loop {
            let notified = self.inner.pressure.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a waiter arriving in between is not missed.
            notified.as_mut().enable();
            if self.inner.waiting.load(Ordering::Acquire) > 0 {
                return;
            }
            notified.await;
        }
    }

    /// The budget in bytes.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes held now, both classes together.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.inner.limit - self.inner.all.available_permits()
    }

    /// How many acquisitions had to wait since the start.
    #[must_use]
    pub fn waits(&self) -> u64 {
        self.inner.waits.load(Ordering::Relaxed)
    }
}

/// Counts an acquisition as waiting for as long as it lives (a cancelled wait included).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn holders_wait_until_bytes_come_back() {
        let b = MemoryBudget::new(8 * MIB);
        let p1 = b.acquire(4 * MIB).await;
        let p2 = b.acquire(2 * MIB).await;
        assert_eq!(b.in_use(), 6 * MIB);
        // The front class holds at most 6 MiB of 8: a third front holder waits.
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.acquire(MIB)).await;
        assert!(waiting.is_err(), "the front class went past its share");
        assert_eq!(b.waits(), 1);
        drop(p1);
        let p3 = tokio::time::timeout(Duration::from_secs(5), b.acquire(MIB))
            .await
            .expect("bytes given back are taken again");
        assert_eq!(b.in_use(), 3 * MIB);
        drop((p2, p3));
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test]
    async fn internal_work_keeps_a_quarter_when_the_front_is_full() {
        let b = MemoryBudget::new(8 * MIB);
        let _front = b.acquire(8 * MIB).await; // cut to the front's 6 MiB
        assert_eq!(b.in_use(), 6 * MIB);
        let internal = tokio::time::timeout(Duration::from_secs(5), b.acquire_internal(2 * MIB))
            .await
            .expect("the internal quarter is never taken by the front");
        assert_eq!(b.in_use(), 8 * MIB);
        drop(internal);
    }

    #[tokio::test]
    async fn an_oversized_amount_runs_alone_instead_of_never() {
        let b = MemoryBudget::new(4 * MIB);
        let p = tokio::time::timeout(Duration::from_secs(5), b.acquire_internal(64 * MIB))
            .await
            .expect("cut to the budget");
        assert_eq!(b.in_use(), 4 * MIB);
        drop(p);
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test]
    async fn pressure_is_seen_by_a_holder_that_looks_after_the_waiter_arrived() {
        let b = MemoryBudget::new(4 * MIB);
        let held = b.acquire_internal(4 * MIB).await;
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(MIB).await }
        });
        tokio::task::yield_now().await;
        tokio::time::timeout(Duration::from_secs(5), b.pressed())
            .await
            .expect("a waiter already there is pressure");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets its bytes")
            .expect("waiter task");
        // Nobody waits any more: no pressure.
        let idle = tokio::time::timeout(Duration::from_millis(50), b.pressed()).await;
        assert!(idle.is_err());
    }

    #[tokio::test]
    async fn a_waiting_holder_signals_pressure() {
        let b = MemoryBudget::new(4 * MIB);
        let held = b.acquire_internal(4 * MIB).await;
        let pressed = tokio::spawn({
            let b = b.clone();
            async move { b.pressed().await }
        });
        // Let the pressure watcher register before anybody waits.
        tokio::task::yield_now().await;
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(MIB).await }
        });
        tokio::time::timeout(Duration::from_secs(5), pressed)
            .await
            .expect("pressure is signalled")
            .expect("watcher task");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets its bytes")
            .expect("waiter task");
    }
}
