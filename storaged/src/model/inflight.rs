//! Single PUTs in flight on this node, so that a crash mid-upload is cleaned up at the next
//! start: the upload's invisible `Uploading` version is aborted and its chunks released.
//!
//! The marker is written durably before the first chunk; its removal after the upload is
//! lazy (not fsynced), because a stale marker is harmless: cleanup aborts a version only if
//! it is still `Uploading`.

use redb::{Durability, ReadableTable, TableDefinition};

use super::object::{ObjectVersion, ObjectVersionState};
use super::{Model, Object};
use crate::error::Result;
use crate::table::Db;
use crate::util::encode::{decode, encode};
use crate::util::id::Uuid;

/// What a marker records: (bucket id, object key, version timestamp).
type Marker = (Uuid, String, u64);

/// Version uuid → [`Marker`].
const INFLIGHT: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("inflight_uploads_v1");

pub(super) fn create_table(db: &Db) -> Result<()> {
    db.create_table(INFLIGHT)
}

impl Model {
    /// Records that this node starts writing chunks for version `uuid` (durable).
    pub async fn begin_upload(
        &self,
        uuid: Uuid,
        bucket: Uuid,
        key: &str,
        timestamp: u64,
    ) -> Result<()> {
        let db = self.db.clone();
        let value = encode(&(bucket, key.to_string(), timestamp))?;
        tokio::task::spawn_blocking(move || -> Result<()> {
            let txn = db.begin_write()?;
            txn.open_table(INFLIGHT)?
                .insert(uuid.as_bytes().as_slice(), value.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await?
    }

    /// Forgets the marker of a finished (completed or aborted) upload.
    pub async fn end_upload(&self, uuid: Uuid) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::None)?;
            txn.open_table(INFLIGHT)?
                .remove(uuid.as_bytes().as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await?
    }

    /// Aborts every upload a previous run of this node left unfinished; returns how many.
    pub async fn abort_interrupted_uploads(&self) -> Result<usize> {
        let db = self.db.clone();
        let markers = tokio::task::spawn_blocking(move || -> Result<Vec<(Uuid, Marker)>> {
            let txn = db.begin_read()?;
            let t = txn.open_table(INFLIGHT)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                if let Ok(id) = <[u8; 32]>::try_from(k.value()) {
                    out.push((Uuid::from(id), decode(v.value())?));
                }
            }
            Ok(out)
        })
        .await??;
        let mut aborted = 0;
        for (uuid, (bucket, key, timestamp)) in markers {
            let still_uploading = self.objects.get(&bucket, &key).await?.is_some_and(|o| {
                o.versions().iter().any(|v| {
                    v.uuid == uuid && matches!(v.state, ObjectVersionState::Uploading { .. })
                })
            });
            if still_uploading {
                let v = ObjectVersion {
                    uuid,
                    timestamp,
                    state: ObjectVersionState::Aborted,
                };
                self.objects
                    .insert(&Object::new(bucket, key, vec![v]))
                    .await?;
                aborted += 1;
            }
            self.end_upload(uuid).await?;
        }
        Ok(aborted)
    }
}
