//! AccessKey reconciler against the API double and the fake storaged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use crate::Result;
use crate::crd::common::{condition, find};
use crate::crd::{AccessKey, Bucket, BucketPermission, LocalRef};
use crate::fixtures::{Harness, access_key, bucket, timeout};

const NS: &str = "storage";

async fn reconcile_key(h: &Harness) -> Result<kube::runtime::controller::Action> {
    let obj: AccessKey = h.api.get(NS, "app").unwrap();
    super::reconcile(Arc::new(obj), h.ctx.clone()).await
}

async fn reconcile_bucket(h: &Harness) {
    for _ in 0..2 {
        let obj: Bucket = h.api.get(NS, "media").unwrap();
        crate::bucket::reconcile(Arc::new(obj), h.ctx.clone())
            .await
            .unwrap();
    }
}

fn perm(read: bool, write: bool, owner: bool) -> BucketPermission {
    BucketPermission {
        bucket_ref: LocalRef {
            name: "media".into(),
        },
        read,
        write,
        owner,
    }
}

fn ready(h: &Harness) -> (String, String) {
    let k: AccessKey = h.api.get(NS, "app").unwrap();
    let c = find(&k.status.unwrap().conditions, condition::READY)
        .unwrap()
        .clone();
    (c.status, c.reason)
}

#[tokio::test]
async fn waits_for_the_bucket_then_grants_rights() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.put(&access_key(vec![perm(true, false, false)]));
        reconcile_key(&h).await.unwrap(); // finalizer
        reconcile_key(&h).await.unwrap();
        assert_eq!(ready(&h), ("False".into(), "WaitingForBucket".into()));
        let s: Secret = h
            .api
            .get(NS, "app-key")
            .expect("Secret written before the wait");
        let data = s.data.unwrap();
        assert!(
            data.contains_key("AWS_ACCESS_KEY_ID") && data.contains_key("AWS_SECRET_ACCESS_KEY")
        );
        assert!(!data.contains_key("BUCKET_NAME"));

        h.api.put(&bucket());
        reconcile_bucket(&h).await;
        reconcile_key(&h).await.unwrap();
        assert_eq!(ready(&h), ("True".into(), "KeyReady".into()));
        let st = h.storaged.0.lock().unwrap();
        let key_id = st
            .keys
            .iter()
            .find(|(_, k)| k.name == "accesskey/storage/app")
            .unwrap()
            .0
            .clone();
        let p = st.perms.iter().find(|((k, _), _)| *k == key_id).unwrap().1;
        assert!(p.read && !p.write && !p.owner);
    })
    .await;
}

#[tokio::test]
async fn changed_rights_are_granted_and_revoked() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.put(&bucket());
        reconcile_bucket(&h).await;
        h.api.put(&access_key(vec![perm(true, true, false)]));
        reconcile_key(&h).await.unwrap();
        reconcile_key(&h).await.unwrap();
        h.api.edit::<AccessKey>(NS, "app", |v| {
            v["spec"]["permissions"][0]["write"] = json!(false);
            v["spec"]["permissions"][0]["owner"] = json!(true);
            v["spec"]["allowCreateBucket"] = json!(true);
        });
        reconcile_key(&h).await.unwrap();
        {
            let st = h.storaged.0.lock().unwrap();
            let (key_id, k) = st
                .keys
                .iter()
                .find(|(_, k)| k.name == "accesskey/storage/app")
                .unwrap();
            assert!(k.allow_create_bucket);
            let p = st.perms.iter().find(|((k, _), _)| k == key_id).unwrap().1;
            assert!(p.read && !p.write && p.owner);
        }
        h.api
            .edit::<AccessKey>(NS, "app", |v| v["spec"]["permissions"] = json!([]));
        reconcile_key(&h).await.unwrap();
        let st = h.storaged.0.lock().unwrap();
        let key_id = st
            .keys
            .iter()
            .find(|(_, k)| k.name == "accesskey/storage/app")
            .unwrap()
            .0;
        assert!(
            st.perms
                .iter()
                .filter(|((k, _), _)| k == key_id)
                .all(|(_, p)| p.is_none())
        );
    })
    .await;
}

#[tokio::test]
async fn deleting_the_object_deletes_the_key() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.put(&access_key(vec![]));
        reconcile_key(&h).await.unwrap();
        reconcile_key(&h).await.unwrap();
        assert_eq!(h.storaged.0.lock().unwrap().keys.len(), 1);
        h.api.edit::<AccessKey>(NS, "app", |v| {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
        });
        reconcile_key(&h).await.unwrap();
        assert!(h.storaged.0.lock().unwrap().keys.is_empty());
        assert!(h.api.get::<AccessKey>(NS, "app").is_none());
    })
    .await;
}

#[tokio::test]
async fn a_crash_between_key_creation_and_secret_write_finds_the_key_again() {
    timeout(async {
        let h = Harness::with_cluster();
        h.api.put(&access_key(vec![]));
        reconcile_key(&h).await.unwrap();
        h.api.fail_next("PATCH", "/secrets/app-key", 500);
        assert!(reconcile_key(&h).await.is_err());
        reconcile_key(&h).await.unwrap();
        let st = h.storaged.0.lock().unwrap();
        assert_eq!(st.keys.len(), 1, "no second key");
        let s: Secret = h.api.get(NS, "app-key").unwrap();
        let id = String::from_utf8(s.data.unwrap()["AWS_ACCESS_KEY_ID"].0.clone()).unwrap();
        assert!(st.keys.contains_key(&id));
    })
    .await;
}
