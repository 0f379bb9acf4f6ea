//! # Layout
//!
//! The Kubernetes operator of storaged. Data flows top to bottom:
//!
//! | module | owns |
//! | --- | --- |
//! | [`crd`] | `GarageCluster`, `Bucket`, `AccessKey` types (kube `CustomResource` + schemars), defaults, validation |
//! | [`resources`] | pure functions: a `GarageCluster` in, the desired StatefulSets / Services / ConfigMap / Secrets / PDB out |
//! | [`admin_client`] | typed client for storaged's admin API over the `storaged-api` types, never a second copy |
//! | [`layout`] | pure layout planning: which nodes get a role, which leave, when a zone may shrink |
//! | [`cluster`] | the GarageCluster reconciler: server-side apply of `resources`, layout management, status, safe scale-down |
//! | [`credentials`] | key lookup/creation shared by Bucket and AccessKey, and the credential Secret they write |
//! | [`bucket`], [`key`] | Bucket / AccessKey reconcilers: admin API calls, credential Secrets, finalizers, deletion policy |
//! | [`context`] | what every reconciler shares: the kube client, the admin transport, metrics, events |
//! | [`reconcile`] | the bookkeeping written once: metrics, backoff, requeue, finalizers |
//! | [`metrics`] | Prometheus counters and histograms of reconciles |
//! | [`controller`] | wiring: the three kube-runtime controllers and their error policy |
//! | [`render`] | `operator render`: desired objects of a manifest as YAML, for offline validation |
//!
//! Binaries: `operator` (controllers, leader election, metrics and health endpoints,
//! `render` to print desired objects) and `crdgen` (prints `crds/`).

pub mod admin_client;
pub mod bucket;
pub mod cluster;
pub mod context;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod error;
pub mod key;
pub mod layout;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod resources;

#[cfg(test)]
pub(crate) mod fixtures;

pub use error::{Error, Result};
