//! Bucket reconciler against the API double and the fake storaged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use crate::Result;
use crate::crd::Bucket;
use crate::crd::common::{condition, find};
use crate::fixtures::storaged::FakeBucket;
use crate::fixtures::{Harness, bucket, timeout};

const NS: &str = "storage";

async fn reconcile(h: &Harness) -> Result<kube::runtime::controller::Action> {
    let obj: Bucket = h.api.get(NS, "media").unwrap();
    super::reconcile(Arc::new(obj), h.ctx.clone()).await
}

fn ready(h: &Harness) -> (String, String) {
    let b: Bucket = h.api.get(NS, "media").unwrap();
    let c = find(&b.status.unwrap().conditions, condition::READY)
        .unwrap()
        .clone();
    (c.status, c.reason)
}

fn secret_value(s: &Secret, k: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap()
}

/// First reconcile adds the finalizer; the second does the work.
async fn create(h: &Harness) {
    reconcile(h).await.unwrap();
    let b: Bucket = h.api.get(NS, "media").unwrap();
    assert_eq!(
        b.metadata.finalizers.as_deref(),
        Some(&[super::FINALIZER.to_owned()][..])
    );
    reconcile(h).await.unwrap();
}

fn mark_deleted(h: &Harness) {
    h.api.edit::<Bucket>(NS, "media", |v| {
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
    });
}

#[tokio::test]
async fn creates_bucket_key_and_envfrom_secret() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.put(&bucket());
        create(&h).await;

        let (key_id, key_secret) = {
            let st = h.storaged.0.lock().unwrap();
            let (bucket_id, b) = st.buckets.iter().next().unwrap();
            assert_eq!(b.name, "media");
            assert_eq!(b.owner_tag.as_deref(), Some("uid-media"));
            let (key_id, key) = st.keys.iter().next().unwrap();
            assert_eq!(key.name, "bucket/storage/media");
            let p = st.perms[&(key_id.clone(), bucket_id.clone())];
            assert!(p.read && p.write && !p.owner);

            let s: Secret = h.api.get(NS, "media-bucket").unwrap();
            assert_eq!(secret_value(&s, "AWS_ACCESS_KEY_ID"), *key_id);
            assert_eq!(secret_value(&s, "AWS_SECRET_ACCESS_KEY"), key.secret);
            assert_eq!(
                secret_value(&s, "AWS_ENDPOINT_URL"),
                "http://garage-s3.storage.svc.cluster.local:3900"
            );
            assert_eq!(secret_value(&s, "AWS_REGION"), "garage");
            assert_eq!(secret_value(&s, "BUCKET_NAME"), "media");
            let owner = &s.metadata.owner_references.unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str()),
                ("Bucket", "uid-media")
            );
            (key_id.clone(), key.secret.clone())
        };

        assert_eq!(ready(&h), ("True".into(), "BucketReady".into()));
        let b: Bucket = h.api.get(NS, "media").unwrap();
        let status = b.status.unwrap();
        assert_eq!(status.secret_name.as_deref(), Some("media-bucket"));
        // The secret key never lands in status, events or the request log of status patches.
        let secret = key_secret;
        assert_eq!(status.access_key_id.as_deref(), Some(key_id.as_str()));
        assert!(!serde_json::to_string(&status).unwrap().contains(&secret));
        for r in h.api.log() {
            if r.path.contains("/events")
                || r.path.ends_with("/status")
                || r.path.contains("/status?")
            {
                assert!(!r.body.to_string().contains(&secret), "{r:?}");
            }
        }

        // Idempotent: a second pass creates nothing new.
        reconcile(&h).await.unwrap();
        let st = h.storaged.0.lock().unwrap();
        assert_eq!((st.buckets.len(), st.keys.len()), (1, 1));
    })
    .await;
}

#[tokio::test]
async fn a_lost_key_is_reimported_from_its_secret() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.put(&bucket());
        create(&h).await;
        let (id, secret) = {
            let mut st = h.storaged.0.lock().unwrap();
            let id = st.keys.keys().next().unwrap().clone();
            let k = st.keys.remove(&id).unwrap();
            (id, k.secret)
        };
        reconcile(&h).await.unwrap();
        let st = h.storaged.0.lock().unwrap();
        assert_eq!(
            st.keys[&id].secret, secret,
            "same credentials: pods keep working"
        );
    })
    .await;
}

#[tokio::test]
async fn a_name_owned_by_another_object_is_refused() {
    timeout(async {
        let h = Harness::with_cluster();
        h.storaged.0.lock().unwrap().buckets.insert(
            "b".repeat(64),
            FakeBucket {
                name: "media".into(),
                quotas: Default::default(),
                owner_tag: Some("uid-someone-else".into()),
                objects: 3,
            },
        );
        h.api.put(&bucket());
        create(&h).await;
        assert_eq!(ready(&h), ("False".into(), "BucketNameTaken".into()));
        let st = h.storaged.0.lock().unwrap();
        assert_eq!(
            st.buckets.values().next().unwrap().owner_tag.as_deref(),
            Some("uid-someone-else")
        );
        assert!(st.keys.is_empty());
        assert!(h.api.get::<Secret>(NS, "media-bucket").is_none());
    })
    .await;
}

#[tokio::test]
async fn quotas_are_applied_and_updated() {
    timeout(async {
        let h = Harness::with_cluster();
        let mut b = bucket();
        b.spec.quotas = Some(crate::crd::BucketQuotas {
            max_size: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                "1Gi".into(),
            )),
            max_objects: Some(10),
        });
        h.api.put(&b);
        create(&h).await;
        let q = h
            .storaged
            .0
            .lock()
            .unwrap()
            .buckets
            .values()
            .next()
            .unwrap()
            .quotas;
        assert_eq!((q.max_size, q.max_objects), (Some(1 << 30), Some(10)));
        h.api.edit::<Bucket>(NS, "media", |v| {
            v["spec"]["quotas"]["maxObjects"] = json!(20)
        });
        reconcile(&h).await.unwrap();
        let q = h
            .storaged
            .0
            .lock()
            .unwrap()
            .buckets
            .values()
            .next()
            .unwrap()
            .quotas;
        assert_eq!(q.max_objects, Some(20));
    })
    .await;
}

#[tokio::test]
async fn retain_keeps_the_bucket_releases_the_name_and_drops_the_key() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.put(&bucket());
        create(&h).await;
        mark_deleted(&h);
        reconcile(&h).await.unwrap();
        assert!(
            h.api.get::<Bucket>(NS, "media").is_none(),
            "finalizer removed"
        );
        let st = h.storaged.0.lock().unwrap();
        let b = st.buckets.values().next().expect("bucket kept");
        assert_eq!(b.owner_tag.as_deref(), Some(""), "released for adoption");
        assert!(st.keys.is_empty());
    })
    .await;
}

#[tokio::test]
async fn delete_refuses_a_non_empty_bucket_without_force() {
    timeout(async {
        let h = Harness::with_cluster();
        let mut b = bucket();
        b.spec.deletion_policy = crate::crd::DeletionPolicy::Delete;
        h.api.put(&b);
        create(&h).await;
        h.storaged
            .0
            .lock()
            .unwrap()
            .buckets
            .values_mut()
            .next()
            .unwrap()
            .objects = 5;
        mark_deleted(&h);
        let err = reconcile(&h).await.unwrap_err();
        assert!(err.to_string().contains("holds 5 objects"), "{err}");
        assert_eq!(ready(&h), ("False".into(), "BucketNotEmpty".into()));
        assert_eq!(h.storaged.0.lock().unwrap().buckets.len(), 1);
        assert!(h.api.get::<Bucket>(NS, "media").is_some(), "finalizer kept");

        // Emptied: deletion goes through.
        h.storaged
            .0
            .lock()
            .unwrap()
            .buckets
            .values_mut()
            .next()
            .unwrap()
            .objects = 0;
        reconcile(&h).await.unwrap();
        assert!(h.storaged.0.lock().unwrap().buckets.is_empty());
        assert!(h.api.get::<Bucket>(NS, "media").is_none());
    })
    .await;
}

#[tokio::test]
async fn force_delete_removes_a_non_empty_bucket() {
    timeout(async {
        let h = Harness::with_cluster();
        let mut b = bucket();
        b.spec.deletion_policy = crate::crd::DeletionPolicy::Delete;
        b.spec.force_delete = true;
        h.api.put(&b);
        create(&h).await;
        h.storaged
            .0
            .lock()
            .unwrap()
            .buckets
            .values_mut()
            .next()
            .unwrap()
            .objects = 5;
        mark_deleted(&h);
        reconcile(&h).await.unwrap();
        assert!(h.storaged.0.lock().unwrap().buckets.is_empty());
        assert!(
            h.storaged
                .0
                .lock()
                .unwrap()
                .log
                .iter()
                .any(|l| l.contains("?force=true"))
        );
    })
    .await;
}

#[tokio::test]
async fn missing_cluster_is_a_condition_and_cleanup_does_not_block() {
    timeout(async {
        let h = Harness::new();
        h.api.put(&bucket());
        create(&h).await;
        assert_eq!(ready(&h), ("False".into(), "ClusterNotFound".into()));
        mark_deleted(&h);
        reconcile(&h).await.unwrap();
        assert!(h.api.get::<Bucket>(NS, "media").is_none());
    })
    .await;
}

#[tokio::test]
async fn a_foreign_secret_with_the_same_name_is_not_overwritten() {
    timeout(async {
        let h = Harness::with_cluster();
        let mut foreign = crate::fixtures::admin_token_secret();
        foreign.metadata.name = Some("media-bucket".into());
        h.api.put(&foreign);
        h.api.put(&bucket());
        create(&h).await;
        let (status, reason) = ready(&h);
        assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
        let s: Secret = h.api.get(NS, "media-bucket").unwrap();
        assert!(s.data.unwrap().contains_key("admin_token"), "untouched");
    })
    .await;
}

#[tokio::test]
async fn admin_api_failure_is_an_error_for_backoff() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.put(&bucket());
        reconcile(&h).await.unwrap();
        h.storaged.0.lock().unwrap().token = "other".into();
        let err = reconcile(&h).await.unwrap_err();
        assert_eq!(err.metric_label(), "admin");
    })
    .await;
}
