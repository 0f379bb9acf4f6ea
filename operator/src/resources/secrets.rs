//! The cluster's generated Secrets (RPC secret, admin token).
//!
//! They are created once and never re-rendered: the reconciler only creates one when it
//! is absent ([`to_create`]), so a reconcile can never rotate a live cluster's secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use rand::RngCore;

use super::{names, owned_meta};
use crate::Result;
use crate::crd::{GarageCluster, SecretKeyRef};

/// The two secrets every cluster needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterSecret {
    /// Shared secret that authenticates nodes to each other.
    Rpc,
    /// Bearer token of the admin API.
    AdminToken,
}

impl ClusterSecret {
    /// Both, in creation order.
    pub const ALL: [Self; 2] = [Self::Rpc, Self::AdminToken];

    /// Key inside a generated Secret (also the mounted file name).
    #[must_use]
    pub fn generated_key(self) -> &'static str {
        match self {
            Self::Rpc => super::config::RPC_SECRET_FILE,
            Self::AdminToken => super::config::ADMIN_TOKEN_FILE,
        }
    }

    /// Where the value lives: the user's Secret when the spec names one, else the
    /// generated Secret.
    #[must_use]
    pub fn source(self, cluster: &GarageCluster) -> SecretSource {
        let user = match self {
            Self::Rpc => cluster.spec.secrets.rpc_secret.clone(),
            Self::AdminToken => cluster.spec.secrets.admin_token.clone(),
        };
        match user {
            Some(r) => SecretSource::User(r),
            None => SecretSource::Generated(SecretKeyRef {
                name: match self {
                    Self::Rpc => names::rpc_secret(cluster),
                    Self::AdminToken => names::admin_token(cluster),
                },
                key: self.generated_key().to_owned(),
            }),
        }
    }

    /// A fresh random value: 32 bytes as 64 hex characters (what storaged expects for the
    /// RPC secret, and a strong bearer token).
    #[must_use]
    pub fn new_value(self) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }
}

/// Where a cluster secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The user's existing Secret; the operator only reads it.
    User(SecretKeyRef),
    /// The operator's Secret, created when absent.
    Generated(SecretKeyRef),
}

impl SecretSource {
    /// The Secret name and key.
    #[must_use]
    pub fn key_ref(&self) -> &SecretKeyRef {
        match self {
            Self::User(r) | Self::Generated(r) => r,
        }
    }
}

/// The Secret to create for `which`, given what exists now: `None` when the user brings
/// their own or when it already exists (whatever its content), so a value is never
/// regenerated.
pub fn to_create(
    cluster: &GarageCluster,
    which: ClusterSecret,
    existing: Option<&Secret>,
    value: impl FnOnce() -> String,
) -> Result<Option<Secret>> {
    let SecretSource::Generated(r) = which.source(cluster) else {
        return Ok(None);
    };
    if existing.is_some() {
        return Ok(None);
    }
    Ok(Some(Secret {
        metadata: owned_meta(cluster, r.name)?,
        string_data: Some(BTreeMap::from([(r.key, value())])),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        ..Secret::default()
    }))
}

/// Reads a key of a Secret as UTF-8, trimming a trailing newline that `kubectl create
/// secret --from-file` often leaves.
#[must_use]
pub fn read_key(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone())
            .ok()
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
}
