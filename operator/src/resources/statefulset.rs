//! One StatefulSet per zone.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretProjection, SecurityContext,
    Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{self, ADMIN_TOKEN_FILE, RPC_SECRET_FILE};
use super::secrets::ClusterSecret;
use super::{RenderOptions, labels, names, namespace, owned_meta, ports, selector_labels};
use crate::Result;
use crate::crd::{GarageCluster, VolumeSpec, ZoneSpec};

/// UID and GID storaged runs as (the image's non-root user).
pub const RUN_AS: i64 = 1000;

/// Labels of a zone's pods: the cluster's selector labels plus the zone.
#[must_use]
pub fn zone_selector(cluster: &GarageCluster, zone: &ZoneSpec) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(names::ZONE_LABEL.to_owned(), zone.name.clone());
    l
}

/// The StatefulSet of `zone` with `replicas` pods. `config_hash` lands in a pod annotation
/// so that a config change rolls the pods.
pub fn stateful_set(
    cluster: &GarageCluster,
    zone: &ZoneSpec,
    replicas: i32,
    config_hash: &str,
    opts: &RenderOptions,
) -> Result<StatefulSet> {
    let mut meta = owned_meta(cluster, names::stateful_set(cluster, zone))?;
    let mut all_labels = labels(cluster);
    all_labels.insert(names::ZONE_LABEL.to_owned(), zone.name.clone());
    meta.labels = Some(all_labels.clone());
    let selector = zone_selector(cluster, zone);
    Ok(StatefulSet {
        metadata: meta,
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names::peers_service(cluster)),
            // Pods start together: they need each other to become ready.
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(all_labels),
                    annotations: Some(BTreeMap::from([(
                        names::CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(cluster, zone, opts)?),
            },
            volume_claim_templates: Some(vec![
                claim("data", &zone.storage.data),
                claim("metadata", &zone.storage.metadata),
            ]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    })
}

fn claim(name: &str, v: &VolumeSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: v.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), v.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn pod_spec(cluster: &GarageCluster, zone: &ZoneSpec, opts: &RenderOptions) -> Result<PodSpec> {
    let ns = namespace(cluster)?;
    let instance = selector_labels(cluster);
    Ok(PodSpec {
        // storaged never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(60),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            fs_group_change_policy: Some("OnRootMismatch".to_owned()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        affinity: Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: cluster.spec.zone_label_key.clone(),
                            operator: "In".to_owned(),
                            values: Some(vec![zone.label_value().to_owned()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
                ..NodeAffinity::default()
            }),
            // Two nodes of a cluster on one host would share a disk and a failure.
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".to_owned(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some(instance),
                        ..LabelSelector::default()
                    }),
                    ..PodAffinityTerm::default()
                }]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }),
        tolerations: (!zone.tolerations.is_empty()).then(|| zone.tolerations.clone()),
        containers: vec![container(cluster, zone, &ns, opts)],
        volumes: Some(vec![
            Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::config_map(cluster),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "secrets".to_owned(),
                projected: Some(ProjectedVolumeSource {
                    default_mode: Some(0o400),
                    sources: Some(vec![
                        secret_projection(cluster, ClusterSecret::Rpc, RPC_SECRET_FILE),
                        secret_projection(cluster, ClusterSecret::AdminToken, ADMIN_TOKEN_FILE),
                    ]),
                    ..ProjectedVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    })
}

fn secret_projection(
    cluster: &GarageCluster,
    which: ClusterSecret,
    file: &str,
) -> VolumeProjection {
    let r = which.source(cluster);
    let r = r.key_ref();
    VolumeProjection {
        secret: Some(SecretProjection {
            name: r.name.clone(),
            items: Some(vec![KeyToPath {
                key: r.key.clone(),
                path: file.to_owned(),
                ..KeyToPath::default()
            }]),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("250m".to_owned())),
            ("memory".to_owned(), Quantity("512Mi".to_owned())),
        ])),
        ..ResourceRequirements::default()
    }
}

fn container(
    cluster: &GarageCluster,
    zone: &ZoneSpec,
    ns: &str,
    opts: &RenderOptions,
) -> Container {
    let port = |name: &str, p: i32, proto: &str| ContainerPort {
        name: Some(name.to_owned()),
        container_port: p,
        protocol: Some(proto.to_owned()),
        ..ContainerPort::default()
    };
    // The pod's stable DNS name under the headless Service: survives IP changes.
    let public = format!(
        "$(POD_NAME).{}:{}",
        names::service_host(&names::peers_service(cluster), ns, &opts.cluster_domain),
        ports::RPC
    );
    Container {
        name: "storaged".to_owned(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: cluster
            .spec
            .image_pull_policy
            .map(|p| p.as_str().to_owned()),
        args: Some(vec![
            "server".to_owned(),
            "-c".to_owned(),
            config::config_path(),
        ]),
        env: Some(vec![
            env_field("POD_NAME", "metadata.name"),
            env("STORAGED_ZONE", &zone.name),
            env("STORAGED_RPC_PUBLIC_ADDR", &public),
            env("RUST_LOG", "info"),
        ]),
        ports: Some(vec![
            port("s3", ports::S3, "TCP"),
            port("rpc", ports::RPC, "UDP"),
            port("web", ports::WEB, "TCP"),
            port("admin", ports::ADMIN, "TCP"),
        ]),
        readiness_probe: Some(http_probe(storaged_api::paths::READY, 5, 3)),
        liveness_probe: Some(http_probe(storaged_api::paths::HEALTH, 10, 6)),
        startup_probe: Some(http_probe(storaged_api::paths::HEALTH, 5, 60)),
        resources: Some(zone.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_owned(),
                mount_path: config::CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "secrets".to_owned(),
                mount_path: config::SECRETS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".to_owned(),
                mount_path: config::DATA_DIR.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "metadata".to_owned(),
                mount_path: config::METADATA_DIR.to_owned(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}
