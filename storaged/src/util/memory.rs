//! Handing freed memory back to the system after a load.
//!
//! glibc's malloc raises its mmap threshold past the chunk buffers once it has freed a few
//! (1 MiB each), so later ones come from the heap, and a heap keeps what it held: a node's
//! RSS stayed at 160 MiB after a large PUT/GET, for a budget of 64 MiB. Pinning the
//! threshold instead made every buffer a fresh mapping (a fifth slower here), and mimalloc
//! doubled the idle RSS. So the node trims: once the memory budget, used since the last
//! look, is idle again, `malloc_trim` returns the free pages (measured: 32 MiB after the
//! same load).

use std::time::Duration;

use tokio::sync::watch;

use super::budget::MemoryBudget;

/// How often the budget is looked at.
const TICK: Duration = Duration::from_secs(1);

/// Trims after each load, until `shutdown` flips.
pub async fn run_trimmer(budget: MemoryBudget, mut shutdown: watch::Receiver<bool>) {
    let mut busy = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
        if budget.in_use() > 0 {
            busy = true;
        } else if busy {
            busy = false;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // one libc call, no pointers
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas; 0 keeps no padding at the top.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
