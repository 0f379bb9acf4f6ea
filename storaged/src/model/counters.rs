//! Per-bucket object/byte/upload counters, kept in step by the object table's hook so that
//! quotas and bucket info never need a scan.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::object::Object;
use crate::error::Result;
use crate::table::{Db, UpdateTx};
use crate::util::encode::{decode, encode};
use crate::util::id::Uuid;

const COUNTERS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("bucket_counters_v1");

/// Counts of one bucket (local partitions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketCounts {
    /// Objects with a current data version.
    pub objects: i64,
    /// Bytes of those versions.
    pub bytes: i64,
    /// Open multipart uploads.
    pub uploads: i64,
}

fn counts_of(o: Option<&Object>) -> BucketCounts {
    let Some(o) = o else {
        return BucketCounts::default();
    };
    let current = o.current().and_then(|v| v.meta());
    BucketCounts {
        objects: i64::from(current.is_some()),
        bytes: current.map_or(0, |m| i64::try_from(m.size).unwrap_or(i64::MAX)),
        uploads: i64::try_from(
            o.versions()
                .iter()
                .filter(|v| v.is_open_multipart())
                .count(),
        )
        .unwrap_or(0),
    }
}

pub(super) fn create_table(db: &Db) -> Result<()> {
    db.create_table(COUNTERS)
}

/// Adds `new - old` to the bucket's counters.
pub(super) fn apply_object_delta(
    tx: &mut UpdateTx<'_>,
    old: Option<&Object>,
    new: Option<&Object>,
) -> Result<()> {
    let (a, b) = (counts_of(old), counts_of(new));
    if a == b {
        return Ok(());
    }
    let Some(bucket) = new.or(old).map(|o| o.bucket_id) else {
        return Ok(());
    };
    let mut t = tx.raw().open_table(COUNTERS)?;
    let mut c: BucketCounts = match t.get(bucket.as_bytes().as_slice())? {
        Some(v) => decode(v.value())?,
        None => BucketCounts::default(),
    };
    c.objects += b.objects - a.objects;
    c.bytes += b.bytes - a.bytes;
    c.uploads += b.uploads - a.uploads;
    t.insert(bucket.as_bytes().as_slice(), encode(&c)?.as_slice())?;
    Ok(())
}

/// The counters service: a node that does not hold a bucket's object partition (a
/// gateway, or any node of a cluster larger than the replication factor) asks one that
/// does, since counters are kept by the object table's hook where the objects are.
#[derive(Debug)]
pub struct CountersRpc;

impl crate::rpc::Service for CountersRpc {
    const NAME: &'static str = "counters";
    type Req = Uuid;
    type Resp = Result<BucketCounts, String>;
}

/// Serves [`CountersRpc`] from the local counters.
pub(super) struct CountersHandler(pub(super) Db);

#[async_trait::async_trait]
impl crate::rpc::Handler<CountersRpc> for CountersHandler {
    async fn handle(
        &self,
        _from: crate::rpc::NodeId,
        bucket: Uuid,
    ) -> Result<BucketCounts, String> {
        let db = self.0.clone();
        match tokio::task::spawn_blocking(move || read(&db, &bucket)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Current counts of a bucket.
pub(super) fn read(db: &Db, bucket: &Uuid) -> Result<BucketCounts> {
    let txn = db.begin_read()?;
    let t = txn.open_table(COUNTERS)?;
    Ok(match t.get(bucket.as_bytes().as_slice())? {
        Some(v) => decode(v.value())?,
        None => BucketCounts::default(),
    })
}
