//! GarageCluster reconciler against the API double and the fake storaged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;

use crate::crd::GarageCluster;
use crate::crd::common::{condition, find};
use crate::fixtures::{Harness, cluster, timeout};
use crate::{Error, Result};

const NS: &str = "storage";
const ZONES: [&str; 3] = ["paris", "lyon", "berlin"];

async fn reconcile(h: &Harness) -> Result<kube::runtime::controller::Action> {
    let obj: GarageCluster = h.api.get(NS, "garage").unwrap();
    super::reconcile(Arc::new(obj), h.ctx.clone()).await
}

fn replicas(h: &Harness, zone: &str) -> Option<i32> {
    h.api
        .get::<StatefulSet>(NS, &format!("garage-{zone}"))
        .and_then(|s| s.spec.replicas)
}

fn cond(h: &Harness, type_: &str) -> (String, String) {
    let c: GarageCluster = h.api.get(NS, "garage").unwrap();
    let status = c.status.unwrap();
    let cond = find(&status.conditions, type_).unwrap();
    (cond.status.clone(), cond.reason.clone())
}

/// All six pods joined storaged.
fn join_all(h: &Harness) {
    for z in ZONES {
        for i in 0..2 {
            h.storaged
                .add_node(&format!("{z}{i}"), &format!("garage-{z}-{i}"));
        }
    }
}

fn set_zone_replicas(h: &Harness, zone: &str, n: i32) {
    h.api.edit::<GarageCluster>(NS, "garage", |v| {
        for z in v["spec"]["zones"].as_array_mut().unwrap() {
            if z["name"] == zone {
                z["replicas"] = json!(n);
            }
        }
    });
}

#[tokio::test]
async fn create_applies_every_object_and_generates_secrets_once() {
    timeout(async {
        let h = Harness::new();
        h.api.put(&cluster());
        reconcile(&h).await.unwrap();

        assert_eq!(
            h.api.names::<StatefulSet>(NS),
            ["garage-berlin", "garage-lyon", "garage-paris"]
        );
        assert_eq!(h.api.names::<Service>(NS), ["garage-peers", "garage-s3"]);
        assert_eq!(h.api.names::<ConfigMap>(NS), ["garage-config"]);
        assert_eq!(h.api.names::<PodDisruptionBudget>(NS), ["garage"]);
        assert_eq!(
            h.api.names::<Secret>(NS),
            ["garage-admin-token", "garage-rpc-secret"]
        );
        let rpc: Secret = h.api.get(NS, "garage-rpc-secret").unwrap();
        let value = rpc.data.clone().unwrap()["rpc_secret"].clone();
        assert_eq!(value.0.len(), 64);

        // Every object went through server-side apply as the operator.
        let applies: Vec<_> = h
            .api
            .log()
            .into_iter()
            .filter(|r| r.method == "PATCH" && !r.path.contains("/events/"))
            .collect();
        assert!(!applies.is_empty());
        for r in &applies {
            assert!(
                r.content_type.starts_with("application/apply-patch"),
                "{r:?}"
            );
            assert!(
                r.path.contains("fieldManager=garage-operator"),
                "{}",
                r.path
            );
        }

        // The admin API is unreachable (random token, no pods): reported, not fatal.
        assert_eq!(
            cond(&h, condition::PROGRESSING),
            ("True".into(), "AdminAPIUnreachable".into())
        );
        assert_eq!(cond(&h, condition::READY).0, "False");

        // A second reconcile never regenerates a secret.
        let posts_before = h
            .api
            .log()
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains("/secrets"))
            .count();
        reconcile(&h).await.unwrap();
        let posts_after = h
            .api
            .log()
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains("/secrets"))
            .count();
        assert_eq!(posts_before, posts_after);
        let again: Secret = h.api.get(NS, "garage-rpc-secret").unwrap();
        assert_eq!(again.data.unwrap()["rpc_secret"], value);
    })
    .await;
}

#[tokio::test]
async fn first_layout_waits_for_every_node() {
    timeout(async {
        let h = Harness::with_cluster();
        h.storaged.add_node("p0", "garage-paris-0");
        reconcile(&h).await.unwrap();
        assert_eq!(h.storaged.0.lock().unwrap().layout.version, 0);
        assert_eq!(
            cond(&h, condition::PROGRESSING),
            ("True".into(), "WaitingForNodes".into())
        );
    })
    .await;
}

#[tokio::test]
async fn joined_nodes_get_roles_and_the_layout_is_applied() {
    timeout(async {
        let h = Harness::with_cluster();
        join_all(&h);
        reconcile(&h).await.unwrap();
        {
            let st = h.storaged.0.lock().unwrap();
            assert_eq!(st.layout.version, 1);
            assert_eq!(st.layout.roles.len(), 6);
            let p1 = st
                .layout
                .roles
                .iter()
                .find(|r| r.node_id == "paris1")
                .unwrap();
            assert_eq!(p1.role.zone, "paris");
            assert_eq!(p1.role.capacity, Some(100 << 30));
        }
        assert_eq!(
            cond(&h, condition::READY),
            ("True".into(), "ClusterAvailable".into())
        );
        let c: GarageCluster = h.api.get(NS, "garage").unwrap();
        let s = c.status.unwrap();
        assert_eq!(s.layout_version, Some(1));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.ready_nodes.as_deref(), Some("6/6"));
        assert!(h.api.log().iter().any(|r| r.method == "POST"
            && r.path.contains("/events")
            && r.body["reason"] == "LayoutApplied"));

        // Steady state: nothing more to apply.
        reconcile(&h).await.unwrap();
        assert_eq!(h.storaged.0.lock().unwrap().layout.version, 1);
        assert_eq!(
            cond(&h, condition::PROGRESSING),
            ("False".into(), "Reconciled".into())
        );
    })
    .await;
}

#[tokio::test]
async fn scale_down_waits_until_partitions_are_fully_replicated() {
    timeout(async {
        let h = Harness::with_cluster();
        join_all(&h);
        reconcile(&h).await.unwrap();
        assert_eq!(replicas(&h, "lyon"), Some(2));

        set_zone_replicas(&h, "lyon", 1);
        reconcile(&h).await.unwrap();
        {
            let st = h.storaged.0.lock().unwrap();
            assert_eq!(st.layout.version, 2, "role of lyon-1 removed");
            assert!(!st.layout.roles.iter().any(|r| r.node_id == "lyon1"));
        }
        assert_eq!(
            replicas(&h, "lyon"),
            Some(2),
            "not shrunk in the round that moved data"
        );

        h.storaged.0.lock().unwrap().partitions_not_fully_replicated = 12;
        reconcile(&h).await.unwrap();
        assert_eq!(replicas(&h, "lyon"), Some(2), "still syncing");
        assert_eq!(
            cond(&h, condition::PROGRESSING),
            ("True".into(), "Draining".into())
        );

        h.storaged.0.lock().unwrap().partitions_not_fully_replicated = 0;
        reconcile(&h).await.unwrap();
        assert_eq!(replicas(&h, "lyon"), Some(1));
        assert_eq!(replicas(&h, "paris"), Some(2));
    })
    .await;
}

#[tokio::test]
async fn scale_down_without_admin_api_is_held() {
    timeout(async {
        let h = Harness::with_cluster();
        join_all(&h);
        reconcile(&h).await.unwrap();
        set_zone_replicas(&h, "paris", 1);
        h.storaged.0.lock().unwrap().token = "rotated".into();
        reconcile(&h).await.unwrap();
        assert_eq!(replicas(&h, "paris"), Some(2));
    })
    .await;
}

#[tokio::test]
async fn scaling_below_the_replication_factor_is_refused() {
    timeout(async {
        let h = Harness::with_cluster();
        join_all(&h);
        reconcile(&h).await.unwrap();
        h.api.edit::<GarageCluster>(NS, "garage", |v| {
            v["spec"]["zones"] = json!([v["spec"]["zones"][0].clone(),]);
            v["spec"]["zones"][0]["replicas"] = json!(1);
        });
        reconcile(&h).await.unwrap();
        assert_eq!(
            cond(&h, condition::DEGRADED),
            ("True".into(), "BelowReplicationFactor".into())
        );
        assert_eq!(replicas(&h, "paris"), Some(2), "kept");
        assert_eq!(replicas(&h, "berlin"), Some(2), "removed zone kept");
        assert_eq!(
            h.storaged.0.lock().unwrap().layout.version,
            1,
            "no role removed"
        );
        assert!(
            h.api
                .log()
                .iter()
                .any(|r| r.body["reason"] == "BelowReplicationFactor")
        );
    })
    .await;
}

#[tokio::test]
async fn removed_zone_is_drained_then_its_statefulset_deleted() {
    timeout(async {
        let h = Harness::with_cluster();
        join_all(&h);
        reconcile(&h).await.unwrap();
        h.api.edit::<GarageCluster>(NS, "garage", |v| {
            let zones = v["spec"]["zones"].as_array_mut().unwrap();
            zones.retain(|z| z["name"] != "berlin");
        });
        reconcile(&h).await.unwrap();
        assert!(
            replicas(&h, "berlin").is_some(),
            "kept while its roles leave"
        );
        assert_eq!(h.storaged.0.lock().unwrap().layout.roles.len(), 4);
        reconcile(&h).await.unwrap();
        assert!(replicas(&h, "berlin").is_none(), "deleted once drained");
        assert!(
            h.api
                .log()
                .iter()
                .any(|r| r.body["reason"] == "ZoneRemoved")
        );
    })
    .await;
}

#[tokio::test]
async fn missing_user_secret_is_a_condition_not_a_generated_secret() {
    timeout(async {
        let h = Harness::new();
        let mut c = cluster();
        c.spec.secrets.rpc_secret = Some(crate::crd::SecretKeyRef {
            name: "my-rpc".into(),
            key: "secret".into(),
        });
        h.api.put(&c);
        reconcile(&h).await.unwrap();
        assert_eq!(
            cond(&h, condition::DEGRADED),
            ("True".into(), "SecretMissing".into())
        );
        assert_eq!(h.api.names::<Secret>(NS), ["garage-admin-token"]);
    })
    .await;
}

#[tokio::test]
async fn layout_endpoints_not_implemented_yet_is_reported() {
    timeout(async {
        let h = Harness::with_cluster();
        join_all(&h);
        h.storaged.0.lock().unwrap().layout_not_implemented = true;
        reconcile(&h).await.unwrap();
        assert_eq!(
            cond(&h, condition::PROGRESSING),
            ("True".into(), "LayoutAPIUnavailable".into())
        );
        assert_eq!(replicas(&h, "paris"), Some(2), "objects applied meanwhile");
        h.storaged.0.lock().unwrap().layout_not_implemented = false;
        reconcile(&h).await.unwrap();
        assert_eq!(h.storaged.0.lock().unwrap().layout.version, 1);
    })
    .await;
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.fail_next("PATCH", "/statefulsets/garage-lyon", 500);
        let obj: GarageCluster = h.api.get(NS, "garage").unwrap();
        let err = super::reconcile(Arc::new(obj.clone()), h.ctx.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Kube(_)), "{err}");
        let first = h.ctx.backoff(&crate::context::object_key(&obj));
        let second = h.ctx.backoff(&crate::context::object_key(&obj));
        assert!(second > first);
        reconcile(&h).await.unwrap();
        assert_eq!(replicas(&h, "lyon"), Some(2));
    })
    .await;
}
