//! What Bucket and AccessKey share: reaching their cluster, getting a key whose secret is
//! known (the Secret is the only place it is kept), and the credential Secret itself.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use storaged_api::{CreateKeyRequest, ImportKeyRequest};

use crate::admin_client::AdminClient;
use crate::context::{Context, field_manager};
use crate::crd::ClusterRef;
use crate::resources::{names, services};
use crate::{Error, Result};

/// Environment variable names of a credential Secret (what S3 clients read).
pub mod keys {
    /// Access key id.
    pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    /// Secret access key.
    pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    /// In-cluster S3 URL.
    pub const ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
    /// Region to sign for.
    pub const REGION: &str = "AWS_REGION";
    /// Bucket name (Bucket-owned keys only).
    pub const BUCKET_NAME: &str = "BUCKET_NAME";
}

/// A cluster as seen by a Bucket or AccessKey: its admin API and S3 coordinates.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    /// Admin client.
    pub admin: AdminClient,
    /// In-cluster S3 URL.
    pub s3_endpoint: String,
    /// S3 region.
    pub region: String,
}

/// Resolves `cluster_ref` in `ns`; `Ok(None)` when the cluster does not exist.
pub async fn cluster_access(
    ctx: &Context,
    ns: &str,
    cluster_ref: &ClusterRef,
) -> Result<Option<ClusterAccess>> {
    let Some(cluster) = ctx.cluster(ns, &cluster_ref.name).await? else {
        return Ok(None);
    };
    Ok(Some(ClusterAccess {
        admin: ctx.admin_client(&cluster).await?,
        s3_endpoint: services::s3_endpoint(&cluster, &ctx.render.cluster_domain)?,
        region: cluster.spec.s3.region.clone(),
    }))
}

/// A key with its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for KeyCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches logs.
        f.debug_struct("KeyCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn read(secret: &Secret, key: &str) -> Option<String> {
    crate::resources::secrets::read_key(secret, key).filter(|s| !s.is_empty())
}

/// Whether `owner` is a controller owner of `secret`.
fn owned_by<K: Resource<DynamicType = ()>>(secret: &Secret, owner: &K) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == owner.meta().uid.as_ref())
}

/// The key of `owner`, from its Secret when it exists (re-imported into storaged if the
/// daemon lost it), else found by name (with its secret) or created. `key_name` is the
/// friendly name that finds it again after a crash between creation and Secret write.
pub async fn ensure_key<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    admin: &AdminClient,
    owner: &K,
    secret_name: &str,
    key_name: &str,
) -> Result<KeyCredentials> {
    let ns = owner
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(existing) = api.get_opt(secret_name).await? {
        if !owned_by(&existing, owner) {
            return Err(Error::InvalidSpec(format!(
                "Secret {ns}/{secret_name} exists and is not owned by this object; choose another secret name"
            )));
        }
        if let (Some(id), Some(secret)) = (
            read(&existing, keys::ACCESS_KEY_ID),
            read(&existing, keys::SECRET_ACCESS_KEY),
        ) {
            if admin.key(&id, false).await?.is_none() {
                tracing::info!(key = %id, "key missing from storaged; importing it from its Secret");
                admin
                    .import_key(&ImportKeyRequest {
                        access_key_id: id.clone(),
                        secret_access_key: secret.clone(),
                        name: Some(key_name.to_owned()),
                    })
                    .await?;
            }
            return Ok(KeyCredentials {
                access_key_id: id,
                secret_access_key: secret,
            });
        }
    }
    for k in admin.keys_by_name(key_name).await? {
        if let Some(info) = admin.key(&k.access_key_id, true).await?
            && let Some(secret) = info.secret_access_key
        {
            return Ok(KeyCredentials {
                access_key_id: info.access_key_id,
                secret_access_key: secret,
            });
        }
    }
    let info = admin
        .create_key(&CreateKeyRequest {
            name: Some(key_name.to_owned()),
            allow_create_bucket: false,
        })
        .await?;
    let secret = info.secret_access_key.ok_or_else(|| {
        Error::InvalidSpec("storaged created a key without returning its secret".to_owned())
    })?;
    Ok(KeyCredentials {
        access_key_id: info.access_key_id,
        secret_access_key: secret,
    })
}

/// The access key id recorded in `owner`'s Secret, for cleanup.
pub async fn key_id_from_secret<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    owner: &K,
    secret_name: &str,
) -> Result<Option<String>> {
    let ns = owner
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    Ok(api
        .get_opt(secret_name)
        .await?
        .filter(|s| owned_by(s, owner))
        .and_then(|s| read(&s, keys::ACCESS_KEY_ID)))
}

/// The credential Secret, owned by `owner` (garbage-collected with it), consumable with
/// `envFrom`.
pub fn credentials_secret<K: Resource<DynamicType = ()>>(
    owner: &K,
    secret_name: &str,
    creds: &KeyCredentials,
    access: &ClusterAccess,
    bucket_name: Option<&str>,
) -> Result<Secret> {
    let mut data = BTreeMap::from([
        (keys::ACCESS_KEY_ID.to_owned(), creds.access_key_id.clone()),
        (
            keys::SECRET_ACCESS_KEY.to_owned(),
            creds.secret_access_key.clone(),
        ),
        (keys::ENDPOINT_URL.to_owned(), access.s3_endpoint.clone()),
        (keys::REGION.to_owned(), access.region.clone()),
    ]);
    if let Some(b) = bucket_name {
        data.insert(keys::BUCKET_NAME.to_owned(), b.to_owned());
    }
    let owner_ref = owner
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: owner.namespace(),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                names::MANAGER.to_owned(),
            )])),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    })
}

/// Writes the credential Secret with server-side apply.
pub async fn apply_secret(ctx: &Context, secret: &Secret) -> Result<()> {
    let ns = secret
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = secret
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch(
        &name,
        &PatchParams::apply(field_manager()).force(),
        &Patch::Apply(secret),
    )
    .await?;
    Ok(())
}

/// Maps the finalizer helper's error to ours, keeping the reconcile error when there is one.
#[must_use]
pub fn finalizer_error(e: kube::runtime::finalizer::Error<Error>) -> Error {
    use kube::runtime::finalizer::Error as F;
    match e {
        F::ApplyFailed(e) | F::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    }
}
