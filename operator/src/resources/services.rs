//! Services: headless peer discovery, S3, web.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{names, owned_meta, ports, selector_labels};
use crate::Result;
use crate::crd::GarageCluster;

fn port(name: &str, port: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some(protocol.to_owned()),
        ..ServicePort::default()
    }
}

/// Headless Service over every pod of every zone. `publishNotReadyAddresses` because pods
/// must find each other (through this DNS name, `bootstrap_peers`) before any is ready:
/// readiness needs a quorum, which needs peers. The operator also reaches the admin API
/// through it, for the same reason.
pub fn peers_service(cluster: &GarageCluster) -> Result<Service> {
    Ok(Service {
        metadata: owned_meta(cluster, names::peers_service(cluster))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![
                port("rpc", ports::RPC, "UDP"),
                port("admin", ports::ADMIN, "TCP"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The S3 endpoint, over ready pods only.
pub fn s3_service(cluster: &GarageCluster) -> Result<Service> {
    Ok(Service {
        metadata: owned_meta(cluster, names::s3_service(cluster))?,
        spec: Some(ServiceSpec {
            type_: Some(cluster.spec.s3.service_type.as_str().to_owned()),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![port("s3", ports::S3, "TCP")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The website endpoint, when `spec.web.enabled`.
pub fn web_service(cluster: &GarageCluster) -> Result<Option<Service>> {
    let Some(web) = cluster.spec.web.as_ref().filter(|w| w.enabled) else {
        return Ok(None);
    };
    Ok(Some(Service {
        metadata: owned_meta(cluster, names::web_service(cluster))?,
        spec: Some(ServiceSpec {
            type_: Some(web.service_type.as_str().to_owned()),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![port("web", ports::WEB, "TCP")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }))
}

/// In-cluster URL of the S3 endpoint, written to credential Secrets and status.
pub fn s3_endpoint(cluster: &GarageCluster, cluster_domain: &str) -> Result<String> {
    Ok(format!(
        "http://{}:{}",
        names::service_host(
            &names::s3_service(cluster),
            &super::namespace(cluster)?,
            cluster_domain
        ),
        ports::S3
    ))
}

/// In-cluster URL of the admin API, through the headless Service (any pod answers).
pub fn admin_endpoint(cluster: &GarageCluster, cluster_domain: &str) -> Result<String> {
    Ok(format!(
        "http://{}:{}",
        names::service_host(
            &names::peers_service(cluster),
            &super::namespace(cluster)?,
            cluster_domain
        ),
        ports::ADMIN
    ))
}
