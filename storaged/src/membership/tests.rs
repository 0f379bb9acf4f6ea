//! Membership on loopback: discovery from one bootstrap address, failure detection and
//! recovery, the persisted peer list, DNS re-resolution, and the cluster secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::net::NetConfig;
use crate::rpc::{RpcConfig, RpcServer};

const SECRET: [u8; 32] = [0x42; 32];
const OTHER_SECRET: [u8; 32] = [0x43; 32];
const PING: Duration = Duration::from_millis(50);
const PING_TIMEOUT: Duration = Duration::from_millis(300);
const MISSES: u32 = 3;
/// Generous bound for anything that should happen in a few rounds.
const SOON: Duration = Duration::from_secs(15);

async fn within<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(90), test)
        .await
        .expect("test timed out");
}

struct Node {
    rpc: Rpc,
    server: RpcServer,
    m: Membership,
    addr: SocketAddr,
}

fn fast_config(dir: &tempfile::TempDir, name: &str, bootstrap: Vec<String>) -> MembershipConfig {
    MembershipConfig {
        bootstrap_peers: bootstrap,
        zone: Some(format!("zone-{name}")),
        hostname: format!("host-{name}"),
        ping_interval: PING,
        ping_timeout: PING_TIMEOUT,
        failures_before_down: MISSES,
        dns_refresh: Duration::from_millis(100),
        dns_timeout: Duration::from_secs(2),
        dial_backoff_min: Duration::from_millis(20),
        dial_backoff_max: Duration::from_millis(200),
        ..MembershipConfig::new(dir.path().join(name))
    }
}

impl Node {
    async fn start(
        dir: &tempfile::TempDir,
        name: &str,
        secret: [u8; 32],
        bootstrap: Vec<String>,
    ) -> Self {
        let cfg = fast_config(dir, name, bootstrap);
        Self::start_with(dir, name, secret, "127.0.0.1:0".parse().unwrap(), cfg, None).await
    }

    async fn start_with(
        dir: &tempfile::TempDir,
        name: &str,
        secret: [u8; 32],
        bind: SocketAddr,
        cfg: MembershipConfig,
        resolver: Option<Arc<dyn Resolve>>,
    ) -> Self {
        let net = NetConfig::new(bind, secret, dir.path().join(name).join("node_key"));
        let endpoint = crate::net::bind_retrying(net, SOON).await;
        let addr = endpoint.local_addr().unwrap();
        let rpc = Rpc::new(
            endpoint,
            RpcConfig {
                connect_timeout: PING_TIMEOUT,
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
                ..RpcConfig::default()
            },
        );
        let server = rpc.serve();
        let m = match resolver {
            Some(r) => Membership::start_with(rpc.clone(), cfg, r).await,
            None => Membership::start(rpc.clone(), cfg).await,
        }
        .unwrap();
        Self {
            rpc,
            server,
            m,
            addr,
        }
    }

    fn id(&self) -> NodeId {
        self.rpc.node_id()
    }

    async fn stop(self) {
        self.m.shutdown().await;
        self.rpc.endpoint().close("test stop");
        self.server.shutdown().await;
        self.rpc.close_connections();
        self.rpc.endpoint().wait_idle().await;
    }
}

/// Waits until the node's view satisfies `cond`, failing at the deadline.
async fn wait_view(
    node: &Node,
    what: &str,
    deadline: Duration,
    cond: impl Fn(&[NodeStatus]) -> bool,
) {
    let mut rx = node.m.watch();
    let r = tokio::time::timeout(deadline, rx.wait_for(|v| cond(v))).await;
    assert!(
        matches!(r, Ok(Ok(_))),
        "timed out waiting for {what}; view: {:#?}",
        node.m.nodes()
    );
}

fn up_ids(view: &[NodeStatus]) -> Vec<NodeId> {
    view.iter().filter(|n| n.is_up).map(|n| n.id).collect()
}

fn sees_up(ids: &[NodeId]) -> impl Fn(&[NodeStatus]) -> bool + '_ {
    move |v| {
        let up = up_ids(v);
        ids.iter().all(|i| up.contains(i))
    }
}

async fn three(dir: &tempfile::TempDir) -> (Node, Node, Node) {
    let a = Node::start(dir, "a", SECRET, vec![]).await;
    let boot = vec![a.addr.to_string()];
    let b = Node::start(dir, "b", SECRET, boot).await;
    // c bootstraps through a DNS name (the system resolver), b through an address.
    let c = Node::start(
        dir,
        "c",
        SECRET,
        vec![format!("localhost:{}", a.addr.port())],
    )
    .await;
    let ids = [a.id(), b.id(), c.id()];
    for n in [&a, &b, &c] {
        wait_view(n, "3 nodes up", SOON, sees_up(&ids)).await;
    }
    (a, b, c)
}

#[tokio::test]
async fn three_nodes_discover_each_other_from_one_bootstrap_address() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = three(&dir).await;
        for n in [&a, &b, &c] {
            let view = n.m.nodes();
            assert_eq!(view.len(), 3);
            assert!(view.iter().all(|s| s.is_up));
            assert_eq!(view.iter().filter(|s| s.is_self).count(), 1);
        }
        // b learnt c (which only knew a) through gossip, with c's status.
        let name = |n: &Node| n.m.node(c.id()).unwrap().info.map(|i| (i.hostname, i.zone));
        wait_view(&b, "c's status at b", SOON, |v| {
            v.iter().any(|s| s.id == c.id() && s.info.is_some())
        })
        .await;
        assert_eq!(name(&b), Some(("host-c".into(), Some("zone-c".into()))));
        assert_eq!(b.m.node(c.id()).unwrap().addresses, vec![c.addr]);
        // Status changes are gossiped.
        c.m.set_layout_version(7);
        wait_view(&a, "c's layout version", SOON, |v| {
            v.iter()
                .any(|s| s.id == c.id() && s.info.as_ref().is_some_and(|i| i.layout_version == 7))
        })
        .await;
        for n in [a, b, c] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_stopped_node_is_seen_down_then_up_after_restart() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = three(&dir).await;
        let (c_id, c_addr) = (c.id(), c.addr);
        let start = tokio::time::Instant::now();
        c.stop().await;
        // Down within the configured bound: MISSES pings, each at most PING_TIMEOUT,
        // one per PING interval (plus scheduling slack).
        let bound = PING * MISSES + PING_TIMEOUT * MISSES + Duration::from_secs(2);
        for n in [&a, &b] {
            wait_view(n, "c down", bound, |v| {
                v.iter().any(|s| s.id == c_id && !s.is_up)
            })
            .await;
        }
        let took = start.elapsed();
        assert!(took <= bound, "down after {took:?}, bound {bound:?}");

        // Same key, same address.
        let cfg = fast_config(&dir, "c", vec![]);
        let c = Node::start_with(&dir, "c", SECRET, c_addr, cfg, None).await;
        assert_eq!(c.id(), c_id);
        let ids = [a.id(), b.id(), c.id()];
        for n in [&a, &b, &c] {
            wait_view(n, "3 nodes up again", SOON, sees_up(&ids)).await;
        }
        for n in [a, b, c] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_persisted_peer_list_lets_a_node_rejoin_without_bootstrap() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = three(&dir).await;
        let c_id = c.id();
        let file = dir.path().join("c").join(PEERS_FILE);
        let end = tokio::time::Instant::now() + SOON;
        while persist::load(&file).peers.len() < 2 {
            assert!(tokio::time::Instant::now() < end, "peer list never written");
            tokio::time::sleep(PING).await;
        }
        c.stop().await;

        // No bootstrap, and a new port: c finds a and b from its file, and they learn
        // its new address from its pings.
        let cfg = fast_config(&dir, "c", vec![]);
        let c =
            Node::start_with(&dir, "c", SECRET, "127.0.0.1:0".parse().unwrap(), cfg, None).await;
        assert_eq!(c.id(), c_id);
        let ids = [a.id(), b.id(), c.id()];
        for n in [&a, &b, &c] {
            wait_view(n, "3 nodes up after restart", SOON, sees_up(&ids)).await;
        }
        let new_addr = c.addr;
        wait_view(&a, "c's new address", SOON, |v| {
            v.iter()
                .any(|s| s.id == c_id && s.addresses.first() == Some(&new_addr))
        })
        .await;
        for n in [a, b, c] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_node_with_a_wrong_secret_never_appears() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let intruder = Node::start(&dir, "x", OTHER_SECRET, vec![]).await;
        let a = Node::start(&dir, "a", SECRET, vec![intruder.addr.to_string()]).await;
        intruder.m.add_peer_addr(a.addr);
        let boot = vec![a.addr.to_string()];
        let b = Node::start(&dir, "b", SECRET, boot.clone()).await;
        let c = Node::start(&dir, "c", SECRET, boot).await;
        let ids = [a.id(), b.id(), c.id()];
        for n in [&a, &b, &c] {
            wait_view(n, "3 nodes up", SOON, sees_up(&ids)).await;
        }
        // Both sides tried, more than once, and were refused for the secret.
        let refused = |n: &Node, addr: SocketAddr| {
            n.m.dial_status().iter().any(|d| {
                d.addr == addr
                    && d.node.is_none()
                    && d.failures >= 2
                    && d.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("cluster secret"))
            })
        };
        let end = tokio::time::Instant::now() + SOON;
        while !(refused(&a, intruder.addr) && refused(&intruder, a.addr)) {
            assert!(
                tokio::time::Instant::now() < end,
                "{:?} / {:?}",
                a.m.dial_status(),
                intruder.m.dial_status()
            );
            tokio::time::sleep(PING).await;
        }
        for n in [&a, &b, &c] {
            assert!(
                n.m.node(intruder.id()).is_none(),
                "the intruder is in a peer list"
            );
            assert_eq!(n.m.nodes().len(), 3);
        }
        let alone = intruder.m.nodes();
        assert_eq!((alone.len(), alone[0].is_self), (1, true), "{alone:?}");
        for n in [a, b, c, intruder] {
            n.stop().await;
        }
    })
    .await;
}

/// A DNS whose answer the test changes: a headless Service whose pods come and go.
struct FakeDns(std::sync::Mutex<Vec<SocketAddr>>);

#[async_trait::async_trait]
impl Resolve for FakeDns {
    async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
        assert_eq!(host, "storaged.test");
        Ok(self.0.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn a_dns_name_dials_every_address_and_is_re_resolved() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        // Three separate nodes that do not know each other.
        let a = Node::start(&dir, "a", SECRET, vec![]).await;
        let b = Node::start(&dir, "b", SECRET, vec![]).await;
        let c = Node::start(&dir, "c", SECRET, vec![]).await;
        let dns = Arc::new(FakeDns(std::sync::Mutex::new(vec![a.addr, b.addr])));
        let cfg = fast_config(&dir, "d", vec!["storaged.test:3901".into()]);
        let d = Node::start_with(
            &dir,
            "d",
            SECRET,
            "127.0.0.1:0".parse().unwrap(),
            cfg,
            Some(dns.clone()),
        )
        .await;
        wait_view(&d, "a and b up", SOON, sees_up(&[a.id(), b.id()])).await;
        let dialled = |addr: SocketAddr, id: NodeId| {
            d.m.dial_status()
                .iter()
                .any(|s| s.addr == addr && s.node == Some(id))
        };
        assert!(
            dialled(a.addr, a.id()) && dialled(b.addr, b.id()),
            "{:?}",
            d.m.dial_status()
        );
        assert!(d.m.node(c.id()).is_none(), "nobody knows c yet");

        // The name now points at c only: d dials it (and drops the old addresses).
        *dns.0.lock().unwrap() = vec![c.addr];
        wait_view(&d, "c up", SOON, sees_up(&[c.id()])).await;
        let end = tokio::time::Instant::now() + SOON;
        while !(dialled(c.addr, c.id()) && d.m.dial_status().len() == 1) {
            assert!(tokio::time::Instant::now() < end, "{:?}", d.m.dial_status());
            tokio::time::sleep(PING).await;
        }
        // And through d's gossip, a, b and c all meet.
        let ids = [a.id(), b.id(), c.id(), d.id()];
        for n in [&a, &b, &c, &d] {
            wait_view(n, "4 nodes up", SOON, sees_up(&ids)).await;
        }
        for n in [a, b, c, d] {
            n.stop().await;
        }
    })
    .await;
}

#[test]
fn gossip_from_a_peer_is_clamped() {
    let info = NodeInfo {
        id: NodeId::from([1; 32]),
        hostname: "é".repeat(200),
        zone: Some("z".repeat(1000)),
        addresses: (0..20u16)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .chain(["0.0.0.0:3901".parse().unwrap()])
            .collect(),
        layout_version: 1,
        free_space: None,
    }
    .sanitized();
    assert!(info.hostname.len() <= MAX_NAME);
    assert_eq!(info.zone.map(|z| z.len()), Some(MAX_NAME));
    assert_eq!(info.addresses.len(), MAX_ADDRS);
    assert!(
        info.addresses
            .iter()
            .all(|a| a.port() != 0 && !a.ip().is_unspecified())
    );
}
