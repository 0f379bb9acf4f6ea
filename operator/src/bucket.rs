//! The Bucket reconciler: the bucket in storaged (tagged with the owning object's UID),
//! its own key and credential Secret, quotas, and the deletion policy on delete.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use storaged_api::{
    BucketInfo, CreateBucketRequest, PermissionRequest, Permissions, Quotas, UpdateBucketRequest,
};

use crate::context::{Context, field_manager};
use crate::crd::common::{condition, make_condition};
use crate::crd::{Bucket, BucketStatus, DeletionPolicy};
use crate::credentials::{self, ClusterAccess};
use crate::resources::quantity;
use crate::{Error, Result};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "bucket";
/// Finalizer that keeps the object until the bucket is deleted or released.
pub const FINALIZER: &str = "storage.garage.rs/bucket";
/// Requeue to re-check drift (a key or bucket deleted behind our back).
const REQUEUE: Duration = Duration::from_secs(300);
/// Requeue while waiting for the cluster.
const REQUEUE_WAIT: Duration = Duration::from_secs(15);

/// `Ready=False` reason when another object owns the bucket name.
pub const REASON_NAME_TAKEN: &str = "BucketNameTaken";
/// `Ready=False` reason when deletion is refused because the bucket holds objects.
pub const REASON_NOT_EMPTY: &str = "BucketNotEmpty";

/// Controller entry point (see [`crate::reconcile::reconcile_finalized`]).
pub async fn reconcile(obj: Arc<Bucket>, ctx: Arc<Context>) -> Result<Action> {
    crate::reconcile::reconcile_finalized(obj, ctx).await
}

/// Requeue with exponential backoff after an error.
pub fn error_policy(obj: Arc<Bucket>, err: &Error, ctx: Arc<Context>) -> Action {
    crate::reconcile::requeue_after_error(obj.as_ref(), err, &ctx)
}

impl crate::reconcile::Finalized for Bucket {
    const CONTROLLER: &'static str = CONTROLLER;
    const FINALIZER: &'static str = FINALIZER;

    fn apply(&self, ctx: &Context) -> impl std::future::Future<Output = Result<Action>> + Send {
        Bucket::reconcile(self, ctx)
    }

    fn cleanup(&self, ctx: &Context) -> impl std::future::Future<Output = Result<Action>> + Send {
        Bucket::cleanup(self, ctx)
    }
}

/// The `owner_tag` recorded on the bucket: the object's UID.
fn owner_tag(b: &Bucket) -> Result<String> {
    b.metadata
        .uid
        .clone()
        .ok_or(Error::MissingField("metadata.uid"))
}

/// Whether a tag leaves the bucket free to adopt (never tagged, or released on Retain).
fn is_free(tag: Option<&String>) -> bool {
    tag.is_none_or(String::is_empty)
}

impl Bucket {
    /// The quotas storaged should enforce.
    pub fn quotas(&self) -> Result<Quotas> {
        let Some(q) = &self.spec.quotas else {
            return Ok(Quotas::default());
        };
        let max_size = match &q.max_size {
            Some(s) => Some(quantity::to_bytes(&s.0).ok_or_else(|| {
                Error::InvalidSpec(format!("quotas.maxSize {:?} is not a byte quantity", s.0))
            })?),
            None => None,
        };
        let max_objects = q.max_objects.map(|n| u64::try_from(n).unwrap_or(0));
        Ok(Quotas {
            max_size,
            max_objects,
        })
    }

    /// Friendly name of the bucket's own key in storaged.
    #[must_use]
    pub fn key_name(&self) -> String {
        format!(
            "bucket/{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    async fn write_status(&self, ctx: &Context, status: BucketStatus) -> Result<()> {
        let ns = self
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let api: Api<Bucket> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": Bucket::api_version(&()),
            "kind": Bucket::kind(&()),
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

    /// A status with one verdict: `Ready` as given, `Progressing`/`Degraded` derived.
    fn status_with(&self, ready: bool, reason: &str, message: String) -> BucketStatus {
        let prev = self
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let g = self.metadata.generation;
        let mut s = self.status.clone().unwrap_or_default();
        let blocked = matches!(reason, REASON_NAME_TAKEN | REASON_NOT_EMPTY | "InvalidSpec");
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

    /// Creates or adopts the bucket, its key and Secret.
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
        let quotas = match self.quotas() {
            Ok(q) => q,
            Err(e) => {
                self.write_status(ctx, self.status_with(false, "InvalidSpec", e.to_string()))
                    .await?;
                return Ok(Action::await_change());
            }
        };
        let name = self.bucket_name();
        let tag = owner_tag(self)?;
        let info = match find_bucket(&access, &name).await? {
            Some(info)
                if !is_free(info.owner_tag.as_ref())
                    && info.owner_tag.as_deref() != Some(tag.as_str()) =>
            {
                let msg = format!(
                    "bucket name {name:?} is owned by another Bucket object (UID {})",
                    info.owner_tag.unwrap_or_default()
                );
                if self
                    .status
                    .as_ref()
                    .and_then(|s| crate::crd::common::find(&s.conditions, condition::READY))
                    .is_none_or(|c| c.reason != REASON_NAME_TAKEN)
                {
                    ctx.event(self, EventType::Warning, REASON_NAME_TAKEN, msg.clone())
                        .await;
                }
                self.write_status(ctx, self.status_with(false, REASON_NAME_TAKEN, msg))
                    .await?;
                return Ok(Action::requeue(REQUEUE));
            }
            Some(info)
                if info.owner_tag.as_deref() != Some(tag.as_str()) || info.quotas != quotas =>
            {
                access
                    .admin
                    .update_bucket(
                        &info.id,
                        &UpdateBucketRequest {
                            quotas: Some(quotas),
                            owner_tag: Some(tag.clone()),
                        },
                    )
                    .await?
            }
            Some(info) => info,
            None => {
                let created = access
                    .admin
                    .create_bucket(&CreateBucketRequest {
                        name: name.clone(),
                        quotas: Some(quotas),
                        owner_tag: Some(tag.clone()),
                    })
                    .await?;
                ctx.event(
                    self,
                    EventType::Normal,
                    "BucketCreated",
                    format!("bucket {name} created"),
                )
                .await;
                created
            }
        };

        let mut status = self.status_with(true, "BucketReady", format!("bucket {name} ready"));
        status.bucket_id = Some(info.id.clone());
        status.bucket_name = Some(name.clone());
        if self.spec.credentials.enabled {
            let secret_name = self.secret_name();
            let creds = match credentials::ensure_key(
                ctx,
                &access.admin,
                self,
                &secret_name,
                &self.key_name(),
            )
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
            access
                .admin
                .allow(&PermissionRequest {
                    bucket_id: info.id.clone(),
                    access_key_id: creds.access_key_id.clone(),
                    permissions: Permissions {
                        read: true,
                        write: true,
                        owner: false,
                    },
                })
                .await?;
            let secret =
                credentials::credentials_secret(self, &secret_name, &creds, &access, Some(&name))?;
            credentials::apply_secret(ctx, &secret).await?;
            status.access_key_id = Some(creds.access_key_id);
            status.secret_name = Some(secret_name);
        } else {
            status.access_key_id = None;
            status.secret_name = None;
        }
        self.write_status(ctx, status).await?;
        Ok(Action::requeue(REQUEUE))
    }

    /// Applies the deletion policy; an error keeps the finalizer (and the object).
    pub async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let ns = self
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let Some(access) = credentials::cluster_access(ctx, &ns, &self.spec.cluster_ref).await?
        else {
            // The cluster (and its data) is gone: nothing left to clean.
            return Ok(Action::await_change());
        };
        let tag = owner_tag(self)?;
        let info = find_bucket(&access, &self.bucket_name()).await?;
        let ours = info
            .as_ref()
            .filter(|i| i.owner_tag.as_deref() == Some(tag.as_str()));

        if let (Some(i), DeletionPolicy::Delete) = (ours, self.spec.deletion_policy)
            && (i.objects > 0 || i.unfinished_uploads > 0)
            && !self.spec.force_delete
        {
            let msg = format!(
                "bucket {} holds {} objects and {} unfinished uploads: deletion refused; empty it or set forceDelete",
                i.name, i.objects, i.unfinished_uploads
            );
            ctx.event(self, EventType::Warning, REASON_NOT_EMPTY, msg.clone())
                .await;
            self.write_status(ctx, self.status_with(false, REASON_NOT_EMPTY, msg.clone()))
                .await?;
            return Err(Error::Finalizer(msg));
        }

        // The bucket's own key goes in every case: its Secret goes with this object.
        let key_id = match self.status.as_ref().and_then(|s| s.access_key_id.clone()) {
            Some(id) => Some(id),
            None => credentials::key_id_from_secret(ctx, self, &self.secret_name()).await?,
        };
        if let Some(id) = key_id {
            access.admin.delete_key(&id).await?;
        }
        if let Some(i) = ours {
            match self.spec.deletion_policy {
                DeletionPolicy::Delete => {
                    access
                        .admin
                        .delete_bucket(&i.id, self.spec.force_delete)
                        .await?;
                    ctx.event(
                        self,
                        EventType::Normal,
                        "BucketDeleted",
                        format!("bucket {} deleted", i.name),
                    )
                    .await;
                }
                DeletionPolicy::Retain => {
                    // Release the name so that a new Bucket object can adopt the data.
                    access
                        .admin
                        .update_bucket(
                            &i.id,
                            &UpdateBucketRequest {
                                quotas: None,
                                owner_tag: Some(String::new()),
                            },
                        )
                        .await?;
                    ctx.event(
                        self,
                        EventType::Normal,
                        "BucketRetained",
                        format!("bucket {} retained", i.name),
                    )
                    .await;
                }
            }
        }
        Ok(Action::await_change())
    }
}

async fn find_bucket(access: &ClusterAccess, name: &str) -> Result<Option<BucketInfo>> {
    Ok(access
        .admin
        .bucket_by_name(name)
        .await?
        .filter(|b| b.name == name))
}

#[cfg(test)]
#[path = "bucket_tests.rs"]
mod tests;
