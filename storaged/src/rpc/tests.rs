//! RPC tests on loopback: typed round trips, in-process calls, quorum calls with a node
//! down, the per-peer concurrency bound, reconnection, and the cluster secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::*;
use crate::net::{NetConfig, NetError};

const SECRET: [u8; 32] = [0x42; 32];
const OTHER_SECRET: [u8; 32] = [0x43; 32];
const T: Duration = Duration::from_secs(5);

/// Every loopback test runs under this bound: a hang is a failure, not a stuck CI job.
async fn within<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out");
}

/// Polls `cond` until it holds, failing the test at the deadline.
async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Echo;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum EchoReq {
    Say(String),
    /// Waits for the test to release it: lets tests hold requests in flight.
    Hold,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum EchoResp {
    Said {
        by: NodeId,
        from: NodeId,
        text: String,
    },
    Held,
}

impl Service for Echo {
    const NAME: &'static str = "test/echo";
    type Req = EchoReq;
    type Resp = EchoResp;
}

/// A service nobody registers.
struct Nobody;
impl Service for Nobody {
    const NAME: &'static str = "test/nobody";
    type Req = ();
    type Resp = ();
}

#[derive(Default)]
struct EchoHandler {
    me: NodeId,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    release: Notify,
}

#[async_trait::async_trait]
impl Handler<Echo> for EchoHandler {
    async fn handle(&self, from: NodeId, req: EchoReq) -> EchoResp {
        match req {
            EchoReq::Say(text) => EchoResp::Said {
                by: self.me,
                from,
                text,
            },
            EchoReq::Hold => {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                self.release.notified().await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                EchoResp::Held
            }
        }
    }
}

struct Node {
    rpc: Rpc,
    server: RpcServer,
    handler: Arc<EchoHandler>,
    addr: SocketAddr,
}

impl Node {
    async fn start(dir: &tempfile::TempDir, name: &str, secret: [u8; 32], cfg: RpcConfig) -> Self {
        Self::start_at(dir, name, secret, cfg, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_at(
        dir: &tempfile::TempDir,
        name: &str,
        secret: [u8; 32],
        cfg: RpcConfig,
        bind: SocketAddr,
    ) -> Self {
        let net = NetConfig::new(bind, secret, dir.path().join(name).join("node_key"));
        let endpoint = crate::net::bind_retrying(net, Duration::from_secs(10)).await;
        let addr = endpoint.local_addr().unwrap();
        let rpc = Rpc::new(endpoint, cfg);
        let handler = Arc::new(EchoHandler {
            me: rpc.node_id(),
            ..EchoHandler::default()
        });
        rpc.register::<Echo>(handler.clone());
        let server = rpc.serve();
        Self {
            rpc,
            server,
            handler,
            addr,
        }
    }

    fn id(&self) -> NodeId {
        self.rpc.node_id()
    }

    async fn stop(self) {
        self.rpc.endpoint().close("test stop");
        self.server.shutdown().await;
        self.rpc.close_connections();
        self.rpc.endpoint().wait_idle().await;
    }
}

fn introduce(nodes: &[&Node]) {
    for a in nodes {
        for b in nodes {
            a.rpc.set_addrs(b.id(), &[b.addr]);
        }
    }
}

#[tokio::test]
async fn typed_round_trip_local_call_and_unknown_service() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let a = Node::start(&dir, "a", SECRET, RpcConfig::default()).await;
        let b = Node::start(&dir, "b", SECRET, RpcConfig::default()).await;
        introduce(&[&a, &b]);

        let resp = a
            .rpc
            .call::<Echo>(b.id(), &EchoReq::Say("hi".into()), T)
            .await
            .unwrap();
        assert_eq!(
            resp,
            EchoResp::Said {
                by: b.id(),
                from: a.id(),
                text: "hi".into()
            },
            "b handled it and saw a's verified id"
        );

        // A call to self runs in-process: no address is needed for it.
        let own = a
            .rpc
            .call::<Echo>(a.id(), &EchoReq::Say("me".into()), T)
            .await
            .unwrap();
        assert_eq!(
            own,
            EchoResp::Said {
                by: a.id(),
                from: a.id(),
                text: "me".into()
            }
        );

        let err = a.rpc.call::<Nobody>(b.id(), &(), T).await.unwrap_err();
        assert!(
            matches!(&err, RpcError::Remote(RemoteError::UnknownService(n)) if n == "test/nobody"),
            "{err}"
        );
        let err = a.rpc.call::<Nobody>(a.id(), &(), T).await.unwrap_err();
        assert!(
            matches!(err, RpcError::Remote(RemoteError::UnknownService(_))),
            "{err}"
        );

        // The other way round, over b's own connection.
        let back = b
            .rpc
            .call::<Echo>(a.id(), &EchoReq::Say("back".into()), T)
            .await
            .unwrap();
        assert!(matches!(back, EchoResp::Said { by, .. } if by == a.id()));

        let unknown = NodeId::from([7; 32]);
        let err = a
            .rpc
            .call::<Echo>(unknown, &EchoReq::Say("?".into()), T)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RpcError::NoAddress(n) if n == unknown),
            "{err}"
        );

        a.stop().await;
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn quorum_of_two_with_one_of_three_down() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let a = Node::start(&dir, "a", SECRET, RpcConfig::default()).await;
        let b = Node::start(&dir, "b", SECRET, RpcConfig::default()).await;
        let c = Node::start(&dir, "c", SECRET, RpcConfig::default()).await;
        introduce(&[&a, &b, &c]);
        let nodes = [a.id(), b.id(), c.id()];
        let req = EchoReq::Say("q".into());

        let all = a
            .rpc
            .try_call_many::<Echo>(&nodes, &req, 3, T)
            .await
            .unwrap();
        assert_eq!(all.len(), 3);

        let c_id = c.id();
        c.stop().await;
        let got = a
            .rpc
            .try_call_many::<Echo>(&nodes, &req, 2, Duration::from_secs(2))
            .await
            .unwrap();
        let mut ids: Vec<NodeId> = got.iter().map(|(n, _)| *n).collect();
        ids.sort();
        let mut want = vec![a.id(), b.id()];
        want.sort();
        assert_eq!(
            ids, want,
            "the two live nodes (one of them local) make the quorum"
        );
        for (n, resp) in &got {
            assert!(matches!(resp, EchoResp::Said { by, .. } if by == n));
        }

        let err = a
            .rpc
            .try_call_many::<Echo>(&nodes, &req, 3, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!((err.needed, err.got), (3, 2));
        assert!(matches!(err.errors[..], [(n, _)] if n == c_id), "{err}");

        a.stop().await;
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_per_peer_are_bounded() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RpcConfig {
            max_concurrent_per_peer: 2,
            ..RpcConfig::default()
        };
        let a = Node::start(&dir, "a", SECRET, RpcConfig::default()).await;
        let b = Node::start(&dir, "b", SECRET, cfg).await;
        introduce(&[&a, &b]);

        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let rpc = a.rpc.clone();
            let target = b.id();
            calls.spawn(async move { rpc.call::<Echo>(target, &EchoReq::Hold, T).await });
        }
        let h = b.handler.clone();
        wait_until("two requests in flight", T, || {
            h.in_flight.load(Ordering::SeqCst) == 2
        })
        .await;
        // Release one at a time: each release lets exactly one more request in.
        let mut answered = 0;
        while answered < 5 {
            h.release.notify_waiters();
            if let Some(r) = calls.try_join_next() {
                assert_eq!(r.unwrap().unwrap(), EchoResp::Held);
                answered += 1;
            } else {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(
            h.max_in_flight.load(Ordering::SeqCst),
            2,
            "never more than the bound"
        );

        a.stop().await;
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reconnects_after_a_restart_and_backs_off_while_down() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RpcConfig {
            connect_timeout: Duration::from_millis(200),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            ..RpcConfig::default()
        };
        let a = Node::start(&dir, "a", SECRET, cfg.clone()).await;
        let b = Node::start(&dir, "b", SECRET, cfg.clone()).await;
        introduce(&[&a, &b]);
        let req = EchoReq::Say("1".into());
        a.rpc.call::<Echo>(b.id(), &req, T).await.unwrap();

        let (b_id, b_addr) = (b.id(), b.addr);
        b.stop().await;
        // The cached connection is dead, a new one cannot be made: an error, then
        // back-off errors that do not even try.
        let short = Duration::from_millis(300);
        assert!(a.rpc.call::<Echo>(b_id, &req, short).await.is_err());
        let mut saw_backoff = false;
        for _ in 0..50 {
            if let Err(RpcError::Backoff { node, .. }) = a.rpc.call::<Echo>(b_id, &req, short).await
            {
                assert_eq!(node, b_id);
                saw_backoff = true;
                break;
            }
        }
        assert!(saw_backoff, "a failed node is held back");

        // Same key, same port: calls work again once the back-off expires.
        let b = Node::start_at(&dir, "b", SECRET, cfg, b_addr).await;
        assert_eq!(b.id(), b_id);
        let end = tokio::time::Instant::now() + T;
        loop {
            match a.rpc.call::<Echo>(b_id, &req, short).await {
                Ok(resp) => {
                    assert!(matches!(resp, EchoResp::Said { by, .. } if by == b_id));
                    break;
                }
                Err(e) => {
                    assert!(tokio::time::Instant::now() < end, "never reconnected: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        a.stop().await;
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_node_without_the_secret_gets_no_rpc_through() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let a = Node::start(&dir, "a", SECRET, RpcConfig::default()).await;
        let intruder = Node::start(&dir, "x", OTHER_SECRET, RpcConfig::default()).await;

        let err = intruder.rpc.connect_addr(a.addr, T).await.unwrap_err();
        assert!(
            matches!(err, RpcError::Net(NetError::NotInCluster { .. })),
            "{err}"
        );
        intruder.rpc.set_addrs(a.id(), &[a.addr]);
        let err = intruder
            .rpc
            .call::<Echo>(a.id(), &EchoReq::Say("let me in".into()), T)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RpcError::Net(NetError::NotInCluster { .. })),
            "{err}"
        );
        let err = a.rpc.connect_addr(intruder.addr, T).await.unwrap_err();
        assert!(
            matches!(err, RpcError::Net(NetError::NotInCluster { .. })),
            "{err}"
        );

        // connect_addr to a cluster member learns its id.
        let b = Node::start(&dir, "b", SECRET, RpcConfig::default()).await;
        assert_eq!(a.rpc.connect_addr(b.addr, T).await.unwrap(), b.id());
        assert_eq!(a.rpc.addrs(b.id()), vec![b.addr]);
        assert_eq!(a.rpc.connect_addr(a.addr, T).await.unwrap(), a.id(), "self");

        a.stop().await;
        b.stop().await;
        intruder.stop().await;
    })
    .await;
}
