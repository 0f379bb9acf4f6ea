//! The peer list persisted in the metadata directory, so that a restarted node finds the
//! cluster again without `bootstrap_peers`.
//!
//! The file ([`super::PEERS_FILE`]) holds one record encoded with
//! [`crate::util::encode::encode`] (version byte + MessagePack): a [`PeerList`]. It is a
//! cache: written atomically (temp file, fsync, rename, fsync of the directory) so it is
//! never half-written, and if it is unreadable anyway the node logs it and falls back to
//! bootstrap rather than refusing to start.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::NodeInfo;
use crate::rpc::NodeId;
use crate::util::encode;

/// The persisted record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct PeerList {
    pub(super) peers: Vec<PersistedPeer>,
}

/// One known node: where to reach it, and what it last said about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct PersistedPeer {
    pub(super) id: NodeId,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) info: Option<NodeInfo>,
}

/// Loads the peer list; an absent file is an empty list, an unreadable one is logged and
/// treated as empty (bootstrap still works).
pub(super) fn load(path: &Path) -> PeerList {
    match fs::read(path) {
        Ok(bytes) => encode::decode(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "ignoring unreadable peer list: {e}");
            PeerList::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PeerList::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read peer list: {e}");
            PeerList::default()
        }
    }
}

/// Encodes the peer list (compared with the last write to skip identical ones).
pub(super) fn to_bytes(list: &PeerList) -> Result<Vec<u8>, encode::EncodeError> {
    encode::encode(list)
}

/// Writes `bytes` to `path` atomically. Blocking: call from `spawn_blocking`.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::util::fs::write_atomically(path, bytes, 0o644)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta").join("peers");
        assert_eq!(load(&path), PeerList::default(), "absent: empty");
        let list = PeerList {
            peers: vec![PersistedPeer {
                id: NodeId::from([3; 32]),
                addrs: vec!["127.0.0.1:3901".parse().unwrap()],
                info: None,
            }],
        };
        write_atomically(&path, &to_bytes(&list).unwrap()).unwrap();
        assert_eq!(load(&path), list);
        assert_eq!(
            fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temp file"
        );
        fs::write(&path, b"\x01garbage").unwrap();
        assert_eq!(load(&path), PeerList::default(), "corrupt: empty, no panic");
    }
}
