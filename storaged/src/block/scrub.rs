//! Scrub: re-reads every stored chunk and checks it still hashes to its address, so bit rot
//! is found before a client reads it. A corrupt chunk is moved aside to `<name>.corrupted`
//! (never deleted: an operator may want it), which makes it missing for this node; with
//! replication, resync then fetches a good copy from a peer: each corrupt chunk is reported
//! to [`BlockManager::set_corrupt_hook`]'s hook (normally a `ResyncQueue`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::BlockManager;
use crate::error::Result;
use crate::util::id::Hash;

/// What one scrub pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks verified intact.
    pub ok: u64,
    /// Chunks found corrupt and moved aside.
    pub corrupt: u64,
}

/// The chunk a data-dir file holds, if its name is a chunk name (`<64 hex>` or `<64 hex>.zst`).
fn chunk_of(path: &Path) -> Option<Hash> {
    let name = path.file_name()?.to_str()?;
    Hash::from_hex(name.strip_suffix(".zst").unwrap_or(name))
}

/// Every chunk file below `dir` (two levels of fan-out directories).
fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let level = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    for a in level(dir).into_iter().filter(|p| p.is_dir()) {
        for b in level(&a).into_iter().filter(|p| p.is_dir()) {
            out.extend(level(&b).into_iter().filter(|p| chunk_of(p).is_some()));
        }
    }
    out.sort();
    out
}

impl BlockManager {
    /// Every chunk stored here (a directory walk: for the resync pass after a layout
    /// change, which must look at each chunk once).
    pub async fn local_chunks(self: &Arc<Self>) -> Result<Vec<Hash>> {
        let dir = self.data_dir.clone();
        let files = tokio::task::spawn_blocking(move || chunk_files(&dir)).await?;
        let mut out: Vec<Hash> = files.iter().filter_map(|f| chunk_of(f)).collect();
        out.dedup();
        Ok(out)
    }

    /// Verifies every stored chunk once, pausing `pause` between chunks so a scrub never
    /// starves client traffic on a small machine.
    pub async fn scrub_once(self: &Arc<Self>, pause: Duration) -> Result<ScrubReport> {
        let dir = self.data_dir.clone();
        let files = tokio::task::spawn_blocking(move || chunk_files(&dir)).await?;
        let mut report = ScrubReport::default();
        for file in files {
            let Some(hash) = chunk_of(&file) else {
                continue;
            };
            match self.read_block(hash).await {
                Ok(_) => report.ok += 1,
                Err(crate::Error::CorruptBlock(_)) => {
                    let mut aside = file.clone().into_os_string();
                    aside.push(".corrupted");
                    tokio::fs::rename(&file, &aside).await?;
                    tracing::error!(block = %hash, file = %file.display(), "scrub: corrupt chunk moved aside");
                    report.corrupt += 1;
                    self.report_corrupt(hash);
                }
                // Deleted by GC since the listing: nothing to check.
                Err(crate::Error::MissingBlock(_)) => {}
                Err(e) => return Err(e),
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(report)
    }

    /// Runs [`Self::scrub_once`] every `interval` until `shutdown` flips.
    pub async fn run_scrub_worker(
        self: Arc<Self>,
        interval: Duration,
        pause: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                r = self.scrub_once(pause) => match r {
                    Ok(r) => tracing::info!(ok = r.ok, corrupt = r.corrupt, "scrub pass done"),
                    Err(e) => tracing::warn!(error = %e, "scrub pass failed"),
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::table::Db;

    #[tokio::test]
    async fn scrub_finds_and_sets_aside_corrupt_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta")).unwrap();
        let bm = BlockManager::open(&dir.path().join("data"), 0, db).unwrap();
        let (good, bad) = (
            Bytes::from_static(b"good chunk"),
            Bytes::from_static(b"bad chunk"),
        );
        let (hg, hb) = (Hash::hash_of(&good), Hash::hash_of(&bad));
        bm.write_block(hg, good.clone()).await.unwrap();
        bm.write_block(hb, bad).await.unwrap();
        let (plain, _) = bm.paths(&hb);
        std::fs::write(&plain, b"bit rot").unwrap();

        let r = bm.scrub_once(Duration::ZERO).await.unwrap();
        assert_eq!(r, ScrubReport { ok: 1, corrupt: 1 });
        assert!(!bm.has_block(&hb), "the corrupt chunk is no longer served");
        assert!(
            plain
                .with_file_name(format!("{}.corrupted", hb.to_hex()))
                .exists()
        );
        assert_eq!(bm.read_block(hg).await.unwrap(), good);
        // A second pass sees only the good chunk (the set-aside file is not a chunk).
        assert_eq!(
            bm.scrub_once(Duration::ZERO).await.unwrap(),
            ScrubReport { ok: 1, corrupt: 0 }
        );
    }
}
