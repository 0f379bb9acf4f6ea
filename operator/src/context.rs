//! What every reconciler shares, and the lookups they all need (a cluster's admin client).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use crate::admin_client::{AdminClient, Transport};
use crate::crd::GarageCluster;
use crate::metrics::Metrics;
use crate::resources::secrets::{ClusterSecret, read_key};
use crate::resources::{RenderOptions, names, services};
use crate::{Error, Result};

/// Shared state of the controllers.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// HTTP transport to storaged admin APIs.
    pub admin_transport: Transport,
    /// Environment settings (cluster DNS domain).
    pub render: RenderOptions,
    /// Reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Talk to this admin endpoint instead of each cluster's Service (operator running
    /// outside the cluster, e.g. with `kubectl port-forward`).
    pub admin_endpoint_override: Option<String>,
    /// Consecutive failures per object, for exponential requeue backoff.
    pub failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl Context {
    /// A context for `client`, publishing Events as `reporter`.
    #[must_use]
    pub fn new(client: Client, admin_transport: Transport, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            admin_transport,
            render: RenderOptions::default(),
            metrics: Arc::new(Metrics::default()),
            admin_endpoint_override: None,
            failures: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Publishes an Event about `obj`; a failure is logged, never fatal (events are
    /// best effort and must not block a reconcile).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Requeue delay after a failure of `key`: 5 s doubling up to 5 min.
    #[must_use]
    pub fn backoff(&self, key: &str) -> Duration {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(5u64.saturating_mul(1 << (*n - 1).min(6)).min(300))
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(key);
    }

    /// Admin endpoint of a cluster.
    pub fn admin_endpoint(&self, cluster: &GarageCluster) -> Result<String> {
        match &self.admin_endpoint_override {
            Some(e) => Ok(e.clone()),
            None => services::admin_endpoint(cluster, &self.render.cluster_domain),
        }
    }

    /// An admin client for `cluster`, with the token read from its Secret.
    pub async fn admin_client(&self, cluster: &GarageCluster) -> Result<AdminClient> {
        let ns = crate::resources::namespace(cluster)?;
        let src = ClusterSecret::AdminToken.source(cluster);
        let r = src.key_ref();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = secrets
            .get_opt(&r.name)
            .await?
            .ok_or_else(|| Error::NotReady(format!("Secret {ns}/{}", r.name)))?;
        let token = read_key(&secret, &r.key)
            .ok_or_else(|| Error::NotReady(format!("key {} in Secret {ns}/{}", r.key, r.name)))?;
        Ok(AdminClient::new(
            self.admin_endpoint(cluster)?,
            token,
            self.admin_transport.clone(),
        ))
    }

    /// Looks up the `GarageCluster` a Bucket or AccessKey refers to.
    pub async fn cluster(&self, namespace: &str, name: &str) -> Result<Option<GarageCluster>> {
        let api: Api<GarageCluster> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?)
    }

    /// Creates `obj` unless it exists; an existing object is never touched (generated
    /// secrets must not be rotated by a reconcile).
    pub async fn create_if_absent<K>(&self, namespace: &str, obj: &K) -> Result<bool>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Field manager of every server-side apply of the operator.
#[must_use]
pub fn field_manager() -> &'static str {
    names::MANAGER
}

/// Stable key of an object for backoff bookkeeping.
#[must_use]
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}
