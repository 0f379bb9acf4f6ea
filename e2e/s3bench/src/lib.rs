//! `s3bench`: an S3 load generator (any endpoint, so peers are measured the same way) and a
//! scenario runner that starts a local `storaged dev` cluster from the built binary.
//!
//! Map: `client` (signed S3 requests), `workload` (concurrent clients, operation mixes),
//! `stats` (histograms, reports), `procs` (server memory and CPU), `machine` (disk and
//! loopback limits), `scenario` (named scenarios, the cluster they run on).

pub mod client;
pub mod machine;
pub mod procs;
pub mod scenario;
pub mod stats;
pub mod workload;
