//! Delaying proxies that stand in for a wide-area link between zones, since the kernel here
//! has no netem: each packet (UDP, for storaged's QUIC) or each piece read from a stream
//! (TCP, for Garage's RPC) is held for a fixed one-way delay, in order, and then forwarded.
//! Bandwidth is not limited; only latency is added.
//!
//! A node's advertised RPC address points at its proxy, which forwards to the node's real
//! bind address. The UDP proxy keeps one upstream socket per source address, so the node's
//! replies come back on that socket and are sent, delayed again, to the right source.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Its listening socket could not be bound.
    #[error("binding the proxy on {addr}: {source}")]
    Bind {
        /// Where it tried.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Which transport to delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams (QUIC).
    Udp,
    /// Streams (TCP).
    Tcp,
}

/// A running proxy; its tasks stop when it is dropped.
#[derive(Debug)]
pub struct DelayProxy {
    /// Where peers send to (the node's advertised RPC address).
    pub listen: SocketAddr,
    tasks: Arc<StdMutex<Vec<JoinHandle<()>>>>,
    main: JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.main.abort();
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

/// A FIFO that delivers each item `delay` after it was queued, through `deliver`.
fn delayed<T: Send + 'static, F, Fut>(
    delay: Duration,
    mut deliver: F,
) -> (mpsc::UnboundedSender<(Instant, T)>, JoinHandle<()>)
where
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, T)>();
    let task = tokio::spawn(async move {
        while let Some((queued, item)) = rx.recv().await {
            tokio::time::sleep_until(queued + delay).await;
            if !deliver(item).await {
                break;
            }
        }
    });
    (tx, task)
}

impl DelayProxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`, holding traffic for
    /// `one_way` in each direction.
    ///
    /// # Errors
    /// The listening socket cannot be bound.
    pub async fn start(
        transport: Transport,
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way: Duration,
    ) -> Result<Self, ProxyError> {
        let bind_err = |source| ProxyError::Bind {
            addr: listen,
            source,
        };
        let tasks = Arc::new(StdMutex::new(Vec::new()));
        let (listen, main) = match transport {
            Transport::Udp => {
                let socket = Arc::new(UdpSocket::bind(listen).await.map_err(bind_err)?);
                let addr = socket.local_addr().map_err(bind_err)?;
                let main = tokio::spawn(udp_main(socket, upstream, one_way, tasks.clone()));
                (addr, main)
            }
            Transport::Tcp => {
                let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
                let addr = listener.local_addr().map_err(bind_err)?;
                let main = tokio::spawn(tcp_main(listener, upstream, one_way, tasks.clone()));
                (addr, main)
            }
        };
        Ok(Self {
            listen,
            tasks,
            main,
        })
    }
}

/// Largest datagram forwarded (QUIC never sends more than 64 KiB in one).
const MAX_DATAGRAM: usize = 65_536;

async fn udp_main(
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    one_way: Duration,
    tasks: Arc<StdMutex<Vec<JoinHandle<()>>>>,
) {
    // Source address -> (queue towards the node through this source's own socket).
    let mut flows: HashMap<SocketAddr, mpsc::UnboundedSender<(Instant, Bytes)>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = front.recv_from(&mut buf).await else {
            // A transient error (an ICMP unreachable reported on the socket): keep serving.
            continue;
        };
        let now = Instant::now();
        let packet = Bytes::copy_from_slice(&buf[..n]);
        if let Some(tx) = flows.get(&from)
            && tx.send((now, packet.clone())).is_ok()
        {
            continue;
        }
        let Ok(side) = UdpSocket::bind((upstream.ip(), 0)).await else {
            continue;
        };
        let side = Arc::new(side);
        // Towards the node: delayed, then sent from this source's socket.
        let to_node = side.clone();
        let (tx, forward) = delayed(one_way, move |p: Bytes| {
            let s = to_node.clone();
            async move {
                let _ = s.send_to(&p, upstream).await;
                true
            }
        });
        // Back to the source: replies read from this source's socket, delayed, then sent
        // from the front socket (the address the source sent to).
        let (back_tx, back) = {
            let front = front.clone();
            delayed(one_way, move |p: Bytes| {
                let f = front.clone();
                async move {
                    let _ = f.send_to(&p, from).await;
                    true
                }
            })
        };
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                match side.recv_from(&mut buf).await {
                    Ok((n, _)) => {
                        let p = Bytes::copy_from_slice(&buf[..n]);
                        if back_tx.send((Instant::now(), p)).is_err() {
                            break;
                        }
                    }
                    Err(_) => continue,
                }
            }
        });
        let _ = tx.send((now, packet));
        flows.insert(from, tx);
        if let Ok(mut t) = tasks.lock() {
            t.extend([forward, back, reader]);
        }
    }
}

async fn tcp_main(
    listener: TcpListener,
    upstream: SocketAddr,
    one_way: Duration,
    tasks: Arc<StdMutex<Vec<JoinHandle<()>>>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let t = tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(pump(cr, sw, one_way));
            let down = tokio::spawn(pump(sr, cw, one_way));
            let _ = tokio::join!(up, down);
        });
        if let Ok(mut tasks) = tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(t);
        }
    }
}

/// Copies `from` to `to`, each piece `one_way` after it was read; an end of stream is
/// passed on (as a shutdown) after the same delay.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    to: tokio::net::tcp::OwnedWriteHalf,
    one_way: Duration,
) {
    let to = Arc::new(Mutex::new(to));
    let writer = to.clone();
    let (tx, task) = delayed(one_way, move |piece: Option<Bytes>| {
        let w = writer.clone();
        async move {
            let mut w = w.lock().await;
            match piece {
                Some(p) => w.write_all(&p).await.is_ok(),
                None => {
                    let _ = w.shutdown().await;
                    false
                }
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send((Instant::now(), None));
                break;
            }
            Ok(n) => {
                if tx
                    .send((Instant::now(), Some(Bytes::copy_from_slice(&buf[..n]))))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = task.await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(30);

    #[tokio::test]
    async fn udp_round_trip_takes_two_delays_and_replies_reach_each_source() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let proxy = DelayProxy::start(
            Transport::Udp,
            "127.0.0.1:0".parse().unwrap(),
            echo_addr,
            DELAY,
        )
        .await
        .unwrap();
        for word in [&b"one"[..], b"two"] {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let t0 = std::time::Instant::now();
            client.send_to(word, proxy.listen).await.unwrap();
            let mut buf = [0u8; 16];
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(&buf[..n], word);
            assert_eq!(from, proxy.listen);
            assert!(t0.elapsed() >= 2 * DELAY, "{:?}", t0.elapsed());
        }
    }

    #[tokio::test]
    async fn tcp_round_trip_takes_two_delays_and_end_of_stream_passes() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let proxy = DelayProxy::start(
            Transport::Tcp,
            "127.0.0.1:0".parse().unwrap(),
            echo_addr,
            DELAY,
        )
        .await
        .unwrap();
        let t0 = std::time::Instant::now();
        let mut c = TcpStream::connect(proxy.listen).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"hello");
        assert!(t0.elapsed() >= 2 * DELAY, "{:?}", t0.elapsed());
    }
}
