//! # storaged: a geo-distributed, S3-compatible object store daemon
//!
//! ## Layout
//!
//! Modules are listed top to bottom in the order data flows; a module uses the ones above
//! it, never the ones below (DESIGN.md).
//!
//! | module | owns |
//! | --- | --- |
//! | [`util`] | ids, time, CRDT primitives, versioned record encoding |
//! | [`config`] | `storaged.toml` + `STORAGED_*` overrides, validated with errors naming the field |
//! | [`layout`] | zones, capacities, partition → nodes assignment, versioned layout CRDT |
//! | [`net`] | QUIC endpoints: node identity, cluster-secret authentication, framed requests and streams |
//! | [`rpc`] | typed messages over net; quorum calls |
//! | [`membership`] | peers, bootstrap and discovery, gossip, failure detection |
//! | [`table`] | generic CRDT tables on redb: schema trait, merge-on-insert, update hooks, insert queue |
//! | [`block`] | blake3-addressed chunk files, refcounts, GC |
//! | [`model`] | the object store's tables (buckets, aliases, keys, objects, versions, block refs, uploads) |
//! | [`s3`] | the S3 API: handlers behind the `s3s` protocol layer (routing, SigV4, XML) |
//! | [`admin`] | admin HTTP API, health, readiness, metrics |
//! | [`server`] | wires everything into a running daemon with graceful shutdown |
//! | [`cli`], [`dev`] | the admin CLI client and the `storaged dev` supervisor |
//!
//! The S3 PUT path: `s3::put` → `s3::writer` (chunks the body) → `model::writer::ObjectWriter`
//! (begin / store chunk / commit / abort: the crash-safety order) → `block` + `model`
//! tables. The GET path: `s3::get` → `model::Object` → `block::BlockManager::read_block`.

// Tests may unwrap: a panic there is a failing test, not a crash a user can cause.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod block;
pub mod cli;
pub mod config;
pub mod dev;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
pub mod membership;
pub mod model;
pub mod net;
pub mod rpc;
pub mod s3;
pub mod server;
pub mod table;
pub mod util;

pub use error::{Error, Result};
