//! The node's persistent ed25519 identity, kept in the metadata directory.
//!
//! The key file is a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), a self-describing,
//! versioned standard format that `openssl pkey` can read. It is generated once, written
//! to a temporary file, fsynced, renamed into place with mode 0600 and its directory
//! fsynced, so a crash never leaves a half-written identity. A file that exists but cannot
//! be read as an ed25519 key is an error, never silently replaced: a node that changed
//! identity would look like a new node to the whole cluster.

use std::fs;
use std::path::Path;

use rcgen::{KeyPair, PKCS_ED25519};

use super::NetError;
use crate::util::id::Id32;

/// An ed25519 key pair whose public half is the node id.
pub struct NodeKey {
    key: KeyPair,
    id: Id32,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("NodeKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Loads the key at `path`, or generates and persists one if the file does not exist.
    ///
    /// Blocking file I/O: call it from `spawn_blocking` on a runtime.
    ///
    /// # Errors
    /// I/O errors, or [`NetError::NodeKey`] if the file exists but is not an ed25519
    /// PKCS#8 key.
    pub fn load_or_generate(path: &Path) -> Result<Self, NetError> {
        match fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem).map_err(|why| NetError::NodeKey {
                path: path.to_owned(),
                why,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| NetError::NodeKey {
                    path: path.to_owned(),
                    why: format!("cannot generate an ed25519 key: {e}"),
                })?;
                crate::util::fs::write_atomically(path, key.serialize_pem().as_bytes(), 0o600)
                    .map_err(|source| NetError::KeyFile {
                        path: path.to_owned(),
                        source,
                    })?;
                tracing::info!(path = %path.display(), "generated a new node key");
                Self::from_key_pair(key).map_err(|why| NetError::NodeKey {
                    path: path.to_owned(),
                    why,
                })
            }
            Err(source) => Err(NetError::KeyFile {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses a PKCS#8 PEM ed25519 key.
    fn from_pem(pem: &str) -> Result<Self, String> {
        let key = KeyPair::from_pem(pem).map_err(|e| format!("not a PKCS#8 PEM key: {e}"))?;
        Self::from_key_pair(key)
    }

    /// Wraps a key pair, checking it is ed25519 (the node id is its raw public key).
    pub(super) fn from_key_pair(key: KeyPair) -> Result<Self, String> {
        if key.algorithm() != &PKCS_ED25519 {
            return Err("the node key must be ed25519".into());
        }
        let raw: [u8; 32] = key
            .public_key_raw()
            .try_into()
            .map_err(|_| "an ed25519 public key has 32 bytes".to_owned())?;
        Ok(Self { key, id: Id32(raw) })
    }

    /// The node id: the 32-byte ed25519 public key.
    #[must_use]
    pub fn node_id(&self) -> Id32 {
        self.id
    }

    /// The key pair, to sign this node's certificate request and the TLS handshake.
    pub(super) fn key_pair(&self) -> &KeyPair {
        &self.key
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_persists_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta").join("node_key");
        let a = NodeKey::load_or_generate(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        // No temp file left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node_key");
        fs::write(&path, "garbage").unwrap();
        let err = NodeKey::load_or_generate(&path).unwrap_err();
        assert!(matches!(err, NetError::NodeKey { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
    }

    #[test]
    fn non_ed25519_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node_key");
        let ec = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        fs::write(&path, ec.serialize_pem()).unwrap();
        let err = NodeKey::load_or_generate(&path).unwrap_err();
        assert!(err.to_string().contains("ed25519"), "{err}");
    }
}
