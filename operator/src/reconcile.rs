//! The bookkeeping every reconciler shares, written once: reconcile timing and failure
//! metrics, backoff reset on success, exponential requeue on error, and for namespaced
//! objects with external state, the finalizer dance.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{Context, object_key};
use crate::credentials;
use crate::{Error, Result};

/// Runs one reconcile of `obj` under `controller`'s metrics and backoff bookkeeping.
pub async fn instrumented<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: &K,
    ctx: &Context,
    run: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let _timer = ctx.metrics.start(controller);
    let key = object_key(obj);
    let res = run.await;
    match &res {
        Ok(_) => ctx.reset_backoff(&key),
        Err(e) => ctx.metrics.failure(controller, e),
    }
    res
}

/// Requeue with exponential backoff after an error (every controller's error policy).
pub fn requeue_after_error<K: Resource<DynamicType = ()>>(
    obj: &K,
    err: &Error,
    ctx: &Context,
) -> Action {
    let delay = ctx.backoff(&object_key(obj));
    tracing::warn!(kind = %K::kind(&()), name = %obj.name_any(), error = %err, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// A namespaced object whose external state (in storaged) is cleaned up before the object
/// goes away, behind [`Finalized::FINALIZER`].
pub trait Finalized:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Controller name in metrics and logs.
    const CONTROLLER: &'static str;
    /// Finalizer that keeps the object until [`Finalized::cleanup`] succeeded.
    const FINALIZER: &'static str;
    /// Brings storaged and the object's Secrets in line with the spec.
    fn apply(&self, ctx: &Context) -> impl Future<Output = Result<Action>> + Send;
    /// Releases the external state on deletion.
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<Action>> + Send;
}

/// The controller entry point of every [`Finalized`] kind.
pub async fn reconcile_finalized<K: Finalized>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let ns = obj
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let target = Arc::clone(&obj);
    instrumented(K::CONTROLLER, target.as_ref(), &ctx, async {
        finalizer(&api, K::FINALIZER, obj, |ev| async {
            match ev {
                Finalizer::Apply(o) => o.apply(&ctx).await,
                Finalizer::Cleanup(o) => o.cleanup(&ctx).await,
            }
        })
        .await
        .map_err(credentials::finalizer_error)
    })
    .await
}
