//! The rebuild worker of a node whose metadata store is new while the node is not (see
//! `table::rebuild`): it syncs every partition the node holds, in every table, from a
//! quorum of the other replicas, then clears the store's rebuilding mark, from which on
//! the node answers reads again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cluster::{all_partitions_if_member, held_partitions};
use crate::layout::manager::LayoutManager;
use crate::model::Model;
use crate::table::sync_all;

/// How soon a rebuild that could not complete (a peer down) is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Rebuilds this node's metadata if its store says so; returns once done or at shutdown.
pub(super) async fn run(
    model: Arc<Model>,
    layout: LayoutManager,
    mut shutdown: watch::Receiver<bool>,
) {
    if !model.db.rebuilding() {
        return;
    }
    tracing::warn!(
        "this node's metadata store is new but the node is not: rebuilding its partitions \
         from its peers; until then it answers no reads from its own tables"
    );
    let me = model.replicator.node_id();
    loop {
        let current = layout.layout();
        let outcome = if current.current().replication_factor <= 1 {
            tracing::warn!(
                "replication_factor is 1: no peer holds a copy of this node's partitions, \
                 whose metadata is lost"
            );
            Ok(())
        } else {
            let sharded = held_partitions(&current, me, true);
            let full = all_partitions_if_member(&current, me);
            match sync_all(&model.sharded_tables(), &sharded).await {
                Ok(()) => sync_all(&model.full_tables(), &full).await,
                Err(e) => Err(e),
            }
        };
        match outcome
            .map_err(|e| e.to_string())
            .and_then(|()| model.db.finish_rebuild().map_err(|e| e.to_string()))
        {
            Ok(()) => {
                tracing::info!("metadata rebuilt from peers: answering reads again");
                return;
            }
            Err(e) => {
                tracing::info!(error = %e, retry_in = ?RETRY, "metadata rebuild not complete yet")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
