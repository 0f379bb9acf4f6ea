//! Wiring: the three kube-runtime controllers, on all namespaces or a chosen list.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::runtime::{Controller, watcher};

use crate::context::Context;
use crate::crd::{AccessKey, Bucket, GarageCluster};
use crate::{bucket, cluster, key};

fn api<K>(ctx: &Context, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Runs every controller until they stop (they stop on SIGTERM/SIGINT).
/// `namespaces` empty means all namespaces.
pub async fn run(ctx: Arc<Context>, namespaces: Vec<String>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let mut all = Vec::new();
    for ns in scopes {
        let ns = ns.as_deref();
        // Owned objects are filtered by label, so the operator does not cache every
        // Secret and ConfigMap of the cluster.
        let owned =
            watcher::Config::default().labels("app.kubernetes.io/managed-by=garage-operator");
        let clusters = Controller::new(api::<GarageCluster>(&ctx, ns), watcher::Config::default())
            .owns(api::<StatefulSet>(&ctx, ns), owned.clone())
            .owns(api::<Service>(&ctx, ns), owned.clone())
            .owns(api::<ConfigMap>(&ctx, ns), owned.clone())
            .owns(api::<PodDisruptionBudget>(&ctx, ns), owned.clone())
            .shutdown_on_signal()
            .run(cluster::reconcile, cluster::error_policy, ctx.clone())
            .for_each(|r| async move { log("garagecluster", r) })
            .boxed();
        let buckets = Controller::new(api::<Bucket>(&ctx, ns), watcher::Config::default())
            .owns(api::<Secret>(&ctx, ns), owned.clone())
            .shutdown_on_signal()
            .run(bucket::reconcile, bucket::error_policy, ctx.clone())
            .for_each(|r| async move { log("bucket", r) })
            .boxed();
        let keys = Controller::new(api::<AccessKey>(&ctx, ns), watcher::Config::default())
            .owns(api::<Secret>(&ctx, ns), owned)
            .shutdown_on_signal()
            .run(key::reconcile, key::error_policy, ctx.clone())
            .for_each(|r| async move { log("accesskey", r) })
            .boxed();
        all.extend([clusters, buckets, keys]);
    }
    futures::future::join_all(all).await;
}

fn log<T: std::fmt::Debug, E: std::fmt::Display>(controller: &str, r: Result<T, E>) {
    match r {
        Ok(o) => tracing::debug!(controller, object = ?o, "reconciled"),
        Err(e) => tracing::debug!(controller, error = %e, "reconcile error"),
    }
}
