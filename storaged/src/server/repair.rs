//! `storaged repair -c <config>`: what to do with a metadata store the daemon refuses to
//! open because it is damaged.
//!
//! The store is moved aside (to `db.redb.damaged-<unix time>`, kept for inspection), never
//! deleted, and nothing else is touched: the node keeps its identity (`node_key`), its
//! layout and its chunk files. At its next start the daemon creates an empty store, marks it
//! as rebuilding (the node existed before) and syncs every partition the node holds from its
//! peers before it answers reads again (see `table::rebuild`). A store that opens is left
//! alone, and so is one in use by a running daemon.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::table::{DB_FILE, Db};

/// What `storaged repair` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repaired {
    /// The damaged store was moved from the first path to the second; the flag says whether
    /// peers hold copies to rebuild it from (`replication_factor` above 1).
    SetAside(PathBuf, PathBuf, bool),
    /// The store opens: nothing was changed.
    Intact(PathBuf),
    /// There is no store: the node creates one at start (and rebuilds it from its peers
    /// if it has an identity and some); the flag as for [`Self::SetAside`].
    Missing(PathBuf, bool),
}

/// What the node does at its next start, for the messages.
fn next_start(peers: bool) -> &'static str {
    if peers {
        "it keeps its identity and rebuilds its partitions from its peers before it answers \
         reads"
    } else {
        "with replication_factor = 1 no peer holds a copy, so it starts with an empty store \
         (put a backup of db.redb in place instead, if there is one)"
    }
}

impl std::fmt::Display for Repaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SetAside(from, to, peers) => write!(
                f,
                "moved the damaged metadata store {} to {}; start the node: {}",
                from.display(),
                to.display(),
                next_start(*peers)
            ),
            Self::Intact(p) => write!(
                f,
                "the metadata store {} opens: nothing to repair",
                p.display()
            ),
            Self::Missing(p, peers) => write!(
                f,
                "no metadata store at {}: start the node: {}",
                p.display(),
                next_start(*peers)
            ),
        }
    }
}

/// Sets a damaged metadata store aside (see the module docs).
///
/// # Errors
/// [`Error::MetadataUnavailable`] when the store is in use or cannot be read for another
/// reason than damage (nothing is moved then); I/O errors of the move.
pub fn repair(config: &Config) -> Result<Repaired> {
    let path = config.metadata_dir.join(DB_FILE);
    let peers = config.replication_factor > 1;
    if !std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        return Ok(Repaired::Missing(path, peers));
    }
    match Db::open(&config.metadata_dir) {
        Ok(_) => return Ok(Repaired::Intact(path)),
        Err(Error::MetadataDamaged { .. }) => {}
        Err(e) => return Err(e),
    }
    let aside = path.with_file_name(format!(
        "{DB_FILE}.damaged-{}",
        crate::util::time::now_ms() / 1000
    ));
    std::fs::rename(&path, &aside)?;
    std::fs::File::open(&config.metadata_dir)?.sync_all()?;
    Ok(Repaired::SetAside(path, aside, peers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        let text = format!(
            "metadata_dir = \"{}\"\ndata_dir = \"{}\"\nrpc_secret = \"{}\"\n",
            dir.join("meta").display(),
            dir.join("data").display(),
            "0".repeat(64)
        );
        Config::from_toml_and_env(&text, Vec::new()).unwrap()
    }

    #[test]
    fn sets_aside_only_a_damaged_store() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let path = cfg.metadata_dir.join(DB_FILE);
        assert_eq!(
            repair(&cfg).unwrap(),
            Repaired::Missing(path.clone(), false)
        );
        drop(Db::open(&cfg.metadata_dir).unwrap());
        assert_eq!(repair(&cfg).unwrap(), Repaired::Intact(path.clone()));
        {
            let _running = Db::open(&cfg.metadata_dir).unwrap();
            let err = repair(&cfg).unwrap_err();
            assert!(matches!(err, Error::MetadataUnavailable { .. }), "{err}");
            assert!(path.exists());
        }

        std::fs::write(&path, vec![0x5a; 9000]).unwrap();
        let err = Db::open(&cfg.metadata_dir).map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::MetadataDamaged { .. }), "{err}");
        let Repaired::SetAside(from, to, false) = repair(&cfg).unwrap() else {
            panic!("not set aside");
        };
        assert_eq!(from, path);
        assert!(!path.exists());
        assert_eq!(std::fs::read(&to).unwrap(), vec![0x5a; 9000]);
        assert!(Db::open(&cfg.metadata_dir).is_ok());
    }
}
