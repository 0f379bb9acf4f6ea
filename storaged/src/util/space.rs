//! Free space on the filesystems a node writes to, and the reserve kept for the metadata.
//!
//! redb latches the first write that fails (every later call on the database fails until it
//! is reopened), so the metadata store must never be the one to find its disk full: its
//! write transactions are refused while less than [`METADATA_RESERVE`] is free (see
//! `table::Db::begin_write`), and chunk writes to a `data_dir` on the same filesystem stop
//! another [`METADATA_RESERVE`] earlier (see `block::BlockManager`), so that metadata
//! writes, deletes included (which is how space comes back), still have room.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Free bytes the metadata store keeps on its filesystem: below that, it refuses writes.
pub const METADATA_RESERVE: u64 = 32 << 20;

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
///
/// # Errors
/// When `statvfs` fails (no such path, ...).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Whether `a` and `b` (both existing) live on the same filesystem.
#[must_use]
pub fn same_filesystem(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

/// Whether an I/O error says the disk (or the user's quota) is full.
#[must_use]
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(same_filesystem(dir.path(), &sub));
        assert!(!same_filesystem(dir.path(), &dir.path().join("missing")));
        let full = std::io::Error::from_raw_os_error(28); // ENOSPC
        assert!(is_no_space(&full));
        assert!(!is_no_space(&std::io::Error::from_raw_os_error(5)));
    }
}
