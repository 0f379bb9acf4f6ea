//! `s3bench`: an S3 load generator (any endpoint, so peers are measured the same way) and a
//! scenario runner that starts the clusters it measures: ours as three plain `storaged
//! server` processes, and peers (Garage, SeaweedFS) from their own binaries.
//!
//! Map: `client` (signed S3 requests), `workload` (concurrent clients, operation mixes),
//! `keepalive` (GETs over fixed keep-alive connections, and `wrk`), `stats` (histograms,
//! reports), `plot` (SVG plots), `procs` (server memory and CPU), `machine` (disk and
//! loopback limits), `scenario` (named scenarios and their steps), `runner` (runs the steps),
//! `nodes` (server processes), `proxy` (delayed links between zones), `cluster` (ours),
//! `peers` (Garage, SeaweedFS).

pub mod client;
pub mod cluster;
pub mod keepalive;
pub mod machine;
pub mod nodes;
pub mod peers;
pub mod plot;
pub mod procs;
pub mod proxy;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod workload;
