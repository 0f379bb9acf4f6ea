//! The GarageCluster reconciler: Secrets created once, desired objects applied with
//! server-side apply, the layout driven through the admin API, safe scale-down, status.
//!
//! One reconcile runs these steps in order; each is idempotent, so a crash at any point
//! is repaired by the next reconcile:
//! 1. create the generated Secrets when absent (never rewrite them);
//! 2. read the zones' StatefulSets (current replicas) and, through the admin API, the
//!    nodes, layout and replication health;
//! 3. stage and apply role changes ([`crate::layout::plan`]);
//! 4. apply the desired objects, keeping a shrinking zone at its current size until its
//!    leaving nodes are out of the layout and every partition is fully replicated; delete
//!    the StatefulSet of a removed zone at that point;
//! 5. write status and conditions.

pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use storaged_api::{ClusterHealth, ClusterStatus, LayoutInfo, StageLayoutRequest};

use crate::admin_client::AdminClient;
use crate::context::{Context, field_manager};
use crate::crd::GarageCluster;
use crate::crd::common::{condition, find};
use crate::layout::{self, LayoutPlan, ZoneTarget};
use crate::resources::secrets::{self, ClusterSecret, SecretSource};
use crate::resources::{self, names, quantity, services};
use crate::{Error, Result};

pub use status::Observation;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "garagecluster";

/// Requeue while something is moving (nodes joining, data draining).
pub const REQUEUE_BUSY: Duration = Duration::from_secs(10);
/// Requeue in steady state, to refresh status from the cluster's health.
pub const REQUEUE_IDLE: Duration = Duration::from_secs(60);

/// Entry point for the controller: metrics and backoff bookkeeping around
/// [`GarageCluster::reconcile`].
pub async fn reconcile(obj: Arc<GarageCluster>, ctx: Arc<Context>) -> Result<Action> {
    crate::reconcile::instrumented(CONTROLLER, obj.as_ref(), &ctx, obj.reconcile(&ctx)).await
}

/// Requeue with exponential backoff after an error.
pub fn error_policy(obj: Arc<GarageCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    crate::reconcile::requeue_after_error(obj.as_ref(), err, &ctx)
}

/// What the admin API told us this round.
struct Admin {
    client: AdminClient,
    status: ClusterStatus,
    /// `None` while the daemon answers 501 on the layout routes.
    layout: Option<LayoutInfo>,
    health: ClusterHealth,
}

impl GarageCluster {
    /// Drives the cluster toward its spec (see the module doc for the steps).
    pub async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let ns = resources::namespace(self)?;
        let name = self.name_any();
        let client = ctx.client.clone();

        // 1. Secrets: created once, never regenerated.
        let missing_secrets = self.ensure_secrets(ctx, &ns).await?;

        // 2. What runs now.
        let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        let selector = resources::selector_labels(self)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let existing = sts_api
            .list(&ListParams::default().labels(&selector))
            .await?;
        let mut current: BTreeMap<String, (i32, i32)> = BTreeMap::new();
        for s in &existing.items {
            if let Some(zone) = s.labels().get(names::ZONE_LABEL) {
                let ready = s
                    .status
                    .as_ref()
                    .and_then(|st| st.ready_replicas)
                    .unwrap_or(0);
                current.insert(zone.clone(), (s.spec.replicas.unwrap_or(1), ready));
            }
        }
        let rf = i64::from(self.spec.replication_factor);
        let refused = self.desired_nodes() < rf;
        // While a scale-down is refused, removed zones keep their nodes and roles.
        let gone_zones: Vec<String> = if refused {
            Vec::new()
        } else {
            current
                .keys()
                .filter(|z| !self.spec.zones.iter().any(|s| &s.name == *z))
                .cloned()
                .collect()
        };
        let targets = self.zone_targets(&current, refused)?;

        let mut admin = None;
        let mut admin_error = None;
        if missing_secrets.is_empty() {
            match self.observe(ctx).await {
                Ok(a) => admin = Some(a),
                Err(e) => admin_error = Some(e.to_string()),
            }
        }

        // 3. Layout.
        let mut plan = LayoutPlan::default();
        let mut layout_applied = None;
        let mut layout_unsupported = None;
        if let Some(a) = admin.as_mut() {
            match a.layout.clone() {
                None => layout_unsupported = Some("the layout routes answer 501".to_owned()),
                Some(current_layout) => {
                    plan = layout::plan(&name, &targets, &gone_zones, &a.status, &current_layout);
                    let pending =
                        !current_layout.staged.is_empty() && !plan.waiting_for_first_layout;
                    if !plan.changes.is_empty() || pending {
                        match apply_layout(&a.client, &plan, &current_layout).await {
                            Ok(l) => {
                                let msg = format!(
                                    "layout version {} applied ({} role changes)",
                                    l.version,
                                    plan.changes.len()
                                );
                                ctx.event(self, EventType::Normal, "LayoutApplied", msg)
                                    .await;
                                layout_applied = Some(l.version);
                                a.layout = Some(l);
                                // Storage nodes and partitions changed with the layout.
                                a.health = a.client.health().await?;
                            }
                            Err(Error::Admin(e)) if e.is_not_implemented() => {
                                layout_unsupported = Some(e.to_string());
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        // Shrinking is safe only with a layout we manage and nothing moved this round.
        let can_shrink = |zone: &str| {
            layout_applied.is_none()
                && layout_unsupported.is_none()
                && admin.as_ref().is_some_and(|a| {
                    a.layout.is_some() && layout::drain_complete(&plan, zone, &a.health)
                })
        };

        // 4. Objects, with shrinking zones held until drained.
        let mut overrides = BTreeMap::new();
        let mut draining = Vec::new();
        for t in &targets {
            let cur = current.get(&t.name).map_or(0, |c| c.0);
            if t.replicas < cur {
                if !can_shrink(&t.name) {
                    overrides.insert(t.name.clone(), cur);
                    draining.push(t.name.clone());
                }
            } else {
                overrides.insert(t.name.clone(), t.replicas);
            }
        }
        let desired = resources::desired(self, &ctx.render, &overrides)?;
        apply(ctx, &ns, &desired.config_map).await?;
        apply(ctx, &ns, &desired.peers_service).await?;
        apply(ctx, &ns, &desired.s3_service).await?;
        match &desired.web_service {
            Some(w) => apply(ctx, &ns, w).await?,
            None => delete_if_owned::<Service>(ctx, &ns, &names::web_service(self), self).await?,
        }
        apply(ctx, &ns, &desired.pdb).await?;
        for s in &desired.stateful_sets {
            apply(ctx, &ns, s).await?;
        }
        for zone in &gone_zones {
            if can_shrink(zone) {
                let sts = names::stateful_set_for(&name, zone);
                delete_if_owned::<StatefulSet>(ctx, &ns, &sts, self).await?;
                let msg = format!("zone {zone} drained; StatefulSet {sts} deleted");
                ctx.event(self, EventType::Normal, "ZoneRemoved", msg).await;
            } else {
                draining.push(zone.clone());
            }
        }

        // 5. Status.
        let obs = Observation {
            current,
            overrides,
            draining,
            refused,
            missing_secrets,
            admin_error,
            layout_unsupported,
            layout_applied,
            plan,
            layout_version: admin
                .as_ref()
                .and_then(|a| a.layout.as_ref().map(|l| l.version)),
            health: admin.map(|a| a.health),
            s3_endpoint: services::s3_endpoint(self, &ctx.render.cluster_domain)?,
        };
        let new_status = status::build(self, &obs);
        let was_refused = self
            .status
            .as_ref()
            .and_then(|s| find(&s.conditions, condition::DEGRADED))
            .is_some_and(|c| c.reason == status::REASON_BELOW_RF);
        if refused && !was_refused {
            let msg = format!(
                "zones add up to {} nodes, fewer than replicationFactor {rf}: scale-down refused",
                self.desired_nodes()
            );
            ctx.event(self, EventType::Warning, status::REASON_BELOW_RF, msg)
                .await;
        }
        let busy = status::is_true(&new_status, condition::PROGRESSING);
        let api: Api<GarageCluster> = Api::namespaced(client, &ns);
        let patch = serde_json::json!({
            "apiVersion": GarageCluster::api_version(&()),
            "kind": GarageCluster::kind(&()),
            "status": new_status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(field_manager()).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(Action::requeue(if busy {
            REQUEUE_BUSY
        } else {
            REQUEUE_IDLE
        }))
    }

    /// Creates generated Secrets that are absent; returns user-named Secrets that are
    /// missing (the cluster cannot start without them).
    async fn ensure_secrets(&self, ctx: &Context, ns: &str) -> Result<Vec<String>> {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let mut missing = Vec::new();
        for which in ClusterSecret::ALL {
            let src = which.source(self);
            let existing = api.get_opt(&src.key_ref().name).await?;
            if let (SecretSource::User(r), None) = (&src, &existing) {
                missing.push(r.name.clone());
            }
            if let Some(s) =
                secrets::to_create(self, which, existing.as_ref(), || which.new_value())?
                && ctx.create_if_absent(ns, &s).await?
            {
                let msg = format!(
                    "generated Secret {}",
                    s.metadata.name.clone().unwrap_or_default()
                );
                ctx.event(self, EventType::Normal, "SecretGenerated", msg)
                    .await;
            }
        }
        Ok(missing)
    }

    /// Per-zone targets: replicas from the spec (or the current size while a scale-down
    /// is refused), capacity from the override or the data volume size.
    fn zone_targets(
        &self,
        current: &BTreeMap<String, (i32, i32)>,
        refused: bool,
    ) -> Result<Vec<ZoneTarget>> {
        self.spec
            .zones
            .iter()
            .map(|z| {
                let q = z.capacity.as_ref().unwrap_or(&z.storage.data.size);
                let capacity = quantity::to_bytes(&q.0).ok_or_else(|| {
                    Error::InvalidSpec(format!(
                        "zone {}: capacity {:?} is not a byte quantity",
                        z.name, q.0
                    ))
                })?;
                let cur = current.get(&z.name).map_or(0, |c| c.0);
                let replicas = if refused {
                    z.replicas.max(cur)
                } else {
                    z.replicas
                };
                Ok(ZoneTarget {
                    name: z.name.clone(),
                    replicas,
                    capacity,
                })
            })
            .collect()
    }

    async fn observe(&self, ctx: &Context) -> Result<Admin> {
        let client = ctx.admin_client(self).await?;
        let status = client.status().await?;
        let layout = match client.layout().await {
            Ok(l) => Some(l),
            Err(e) if e.is_not_implemented() => None,
            Err(e) => return Err(e.into()),
        };
        let health = client.health().await?;
        Ok(Admin {
            client,
            status,
            layout,
            health,
        })
    }
}

/// Stages the plan's changes and applies them as the next layout version.
async fn apply_layout(
    admin: &AdminClient,
    plan: &LayoutPlan,
    layout: &LayoutInfo,
) -> Result<LayoutInfo> {
    if !plan.changes.is_empty() {
        admin
            .stage_layout(&StageLayoutRequest {
                changes: plan.changes.clone(),
                zone_redundancy: None,
            })
            .await?;
    }
    let applied = admin.apply_layout(layout.version + 1).await?;
    for m in &applied.messages {
        tracing::info!(message = %m, "layout");
    }
    Ok(applied.layout)
}

/// Server-side apply of one object, owning every field the operator sets.
async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    api.patch(
        &name,
        &PatchParams::apply(field_manager()).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// Deletes an object if it exists and `owner` controls it (never someone else's object
/// that happens to have the name).
async fn delete_if_owned<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    owner: &GarageCluster,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(());
    };
    let owned = obj
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == owner.metadata.uid.as_ref());
    if owned {
        api.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

/// Kinds the cluster controller owns, for `Controller::owns`.
pub type OwnedKinds = (StatefulSet, Service, ConfigMap, PodDisruptionBudget, Secret);

#[cfg(test)]
mod tests;
