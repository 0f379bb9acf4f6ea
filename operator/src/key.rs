//! The AccessKey reconciler: a key, its rights on Buckets, its credential Secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use storaged_api::{PermissionRequest, Permissions, UpdateKeyRequest};

use crate::context::{Context, field_manager};
use crate::crd::common::{condition, make_condition};
use crate::crd::{AccessKey, AccessKeyStatus, Bucket};
use crate::credentials;
use crate::{Error, Result};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "accesskey";
/// Finalizer that keeps the object until its key is deleted from storaged.
pub const FINALIZER: &str = "storage.garage.rs/accesskey";
const REQUEUE: Duration = Duration::from_secs(300);
const REQUEUE_WAIT: Duration = Duration::from_secs(15);

/// Controller entry point (see [`crate::reconcile::reconcile_finalized`]).
pub async fn reconcile(obj: Arc<AccessKey>, ctx: Arc<Context>) -> Result<Action> {
    crate::reconcile::reconcile_finalized(obj, ctx).await
}

/// Requeue with exponential backoff after an error.
pub fn error_policy(obj: Arc<AccessKey>, err: &Error, ctx: Arc<Context>) -> Action {
    crate::reconcile::requeue_after_error(obj.as_ref(), err, &ctx)
}

impl crate::reconcile::Finalized for AccessKey {
    const CONTROLLER: &'static str = CONTROLLER;
    const FINALIZER: &'static str = FINALIZER;

    fn apply(&self, ctx: &Context) -> impl std::future::Future<Output = Result<Action>> + Send {
        AccessKey::reconcile(self, ctx)
    }

    fn cleanup(&self, ctx: &Context) -> impl std::future::Future<Output = Result<Action>> + Send {
        AccessKey::cleanup(self, ctx)
    }
}

impl AccessKey {
    /// Friendly name of the key in storaged.
    #[must_use]
    pub fn key_name(&self) -> String {
        format!(
            "accesskey/{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    fn status_with(&self, ready: bool, reason: &str, message: String) -> AccessKeyStatus {
        let prev = self
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let g = self.metadata.generation;
        let mut s = self.status.clone().unwrap_or_default();
        let blocked = reason == "InvalidSpec";
        s.observed_generation = g;
        s.conditions = vec![
            make_condition(&prev, condition::READY, ready, reason, message.clone(), g),
            make_condition(
                &prev,
                condition::PROGRESSING,
                !ready && !blocked,
                reason,
                message.clone(),
                g,
            ),
            make_condition(&prev, condition::DEGRADED, blocked, reason, message, g),
        ];
        s
    }

    async fn write_status(&self, ctx: &Context, status: AccessKeyStatus) -> Result<()> {
        let ns = self
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let api: Api<AccessKey> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": AccessKey::api_version(&()),
            "kind": AccessKey::kind(&()),
            "status": status,
        });
        api.patch_status(
            &self.name_any(),
            &PatchParams::apply(field_manager()).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// Ensures the key, its rights and its Secret.
    pub async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let ns = self
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let Some(access) = credentials::cluster_access(ctx, &ns, &self.spec.cluster_ref).await?
        else {
            let msg = format!(
                "GarageCluster {ns}/{} not found",
                self.spec.cluster_ref.name
            );
            self.write_status(ctx, self.status_with(false, "ClusterNotFound", msg))
                .await?;
            return Ok(Action::requeue(REQUEUE_WAIT));
        };
        let secret_name = self.secret_name();
        let creds =
            match credentials::ensure_key(ctx, &access.admin, self, &secret_name, &self.key_name())
                .await
            {
                Ok(c) => c,
                Err(Error::InvalidSpec(m)) => {
                    self.write_status(ctx, self.status_with(false, "InvalidSpec", m))
                        .await?;
                    return Ok(Action::await_change());
                }
                Err(e) => return Err(e),
            };
        // The Secret first: from here on the key is recoverable whatever fails next.
        let secret = credentials::credentials_secret(self, &secret_name, &creds, &access, None)?;
        credentials::apply_secret(ctx, &secret).await?;

        let info = access
            .admin
            .key(&creds.access_key_id, false)
            .await?
            .ok_or_else(|| Error::NotReady(format!("key {} in storaged", creds.access_key_id)))?;
        if info.allow_create_bucket != self.spec.allow_create_bucket {
            access
                .admin
                .update_key(
                    &info.access_key_id,
                    &UpdateKeyRequest {
                        name: None,
                        allow_create_bucket: Some(self.spec.allow_create_bucket),
                    },
                )
                .await?;
        }

        // Wanted rights by bucket id; Buckets not ready yet are waited for.
        let buckets: Api<Bucket> = Api::namespaced(ctx.client.clone(), &ns);
        let mut wanted: BTreeMap<String, Permissions> = BTreeMap::new();
        let mut waiting = Vec::new();
        for p in &self.spec.permissions {
            let id = buckets
                .get_opt(&p.bucket_ref.name)
                .await?
                .filter(|b| b.spec.cluster_ref == self.spec.cluster_ref)
                .and_then(|b| b.status.and_then(|s| s.bucket_id));
            match id {
                Some(id) => {
                    wanted.insert(
                        id,
                        Permissions {
                            read: p.read,
                            write: p.write,
                            owner: p.owner,
                        },
                    );
                }
                None => waiting.push(p.bucket_ref.name.clone()),
            }
        }
        for (bucket_id, perms) in &wanted {
            let have = info
                .buckets
                .iter()
                .find(|b| &b.bucket_id == bucket_id)
                .map(|b| b.permissions)
                .unwrap_or_default();
            if have != *perms {
                let grant = |p: &Permissions| PermissionRequest {
                    bucket_id: bucket_id.clone(),
                    access_key_id: info.access_key_id.clone(),
                    permissions: *p,
                };
                access.admin.allow(&grant(perms)).await?;
                let revoke = Permissions {
                    read: have.read && !perms.read,
                    write: have.write && !perms.write,
                    owner: have.owner && !perms.owner,
                };
                if !revoke.is_none() {
                    access.admin.deny(&grant(&revoke)).await?;
                }
            }
        }
        // Rights on buckets no longer listed are revoked (waiting ones are kept: their id
        // is unknown, so they cannot be told apart).
        if waiting.is_empty() {
            for b in &info.buckets {
                if !wanted.contains_key(&b.bucket_id) && !b.permissions.is_none() {
                    access
                        .admin
                        .deny(&PermissionRequest {
                            bucket_id: b.bucket_id.clone(),
                            access_key_id: info.access_key_id.clone(),
                            permissions: b.permissions,
                        })
                        .await?;
                }
            }
        }

        let mut status = if waiting.is_empty() {
            self.status_with(
                true,
                "KeyReady",
                format!("key {} ready", creds.access_key_id),
            )
        } else {
            self.status_with(
                false,
                "WaitingForBucket",
                format!("Buckets not ready: {}", waiting.join(", ")),
            )
        };
        status.access_key_id = Some(creds.access_key_id);
        status.secret_name = Some(secret_name);
        self.write_status(ctx, status).await?;
        Ok(Action::requeue(if waiting.is_empty() {
            REQUEUE
        } else {
            REQUEUE_WAIT
        }))
    }

    /// Deletes the key from storaged; its Secret is garbage-collected with this object.
    pub async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let ns = self
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let Some(access) = credentials::cluster_access(ctx, &ns, &self.spec.cluster_ref).await?
        else {
            return Ok(Action::await_change());
        };
        let id = match self.status.as_ref().and_then(|s| s.access_key_id.clone()) {
            Some(id) => Some(id),
            None => credentials::key_id_from_secret(ctx, self, &self.secret_name()).await?,
        };
        if let Some(id) = id {
            access.admin.delete_key(&id).await?;
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
#[path = "key_tests.rs"]
mod tests;
