//! [`Endpoint`] (one UDP socket, both client and server) and [`Peer`] (an authenticated
//! connection).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use tokio::sync::{Mutex, Semaphore, mpsc};

use super::identity::NodeKey;
use super::stream::{FrameRecv, FrameSend};
use super::tls::{self, CLUSTER_SERVER_NAME, ClusterTls};
use super::{NetConfig, NetError};
use crate::util::budget::{BudgetPermit, MemoryBudget};
use crate::util::id::Id32;

/// Handshakes in progress at once; past this, new connection attempts are refused
/// (cheaply, before any crypto) so a flood cannot exhaust memory or CPU.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Authenticated peers waiting for [`Endpoint::accept`].
const ACCEPT_QUEUE: usize = 64;

/// A QUIC endpoint of this node: listens for peers and connects to them, on one socket.
///
/// Cheap to clone; the socket closes when the last clone is dropped or on
/// [`Endpoint::close`].
#[derive(Clone, Debug)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    quic: quinn::Endpoint,
    node_id: Id32,
    accepted: Mutex<mpsc::Receiver<Peer>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The accept loop holds a clone of the socket: stop it with us.
        self.acceptor.abort();
    }
}

impl Endpoint {
    /// Loads (or creates) the node key, derives the cluster credentials from the secret,
    /// and listens on `cfg.bind`. Must run inside a tokio runtime.
    ///
    /// Handshakes of incoming connections start at once in the background; peers that
    /// complete them queue for [`Endpoint::accept`].
    ///
    /// # Errors
    /// Key file, certificate, TLS setup or socket errors.
    pub async fn bind(cfg: NetConfig) -> Result<Self, NetError> {
        let path = cfg.key_path.clone();
        let key = tokio::task::spawn_blocking(move || NodeKey::load_or_generate(&path)).await??;
        let creds = ClusterTls::new(&cfg.secret, &key)?;

        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(cfg.keep_alive));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(cfg.idle_timeout)
                .map_err(|_| NetError::Config("idle timeout out of range".into()))?,
        ));
        let transport = Arc::new(transport);

        let server_tls = QuicServerConfig::try_from(creds.server_config()?)
            .map_err(|e| NetError::TlsSetup(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport_config(transport.clone());

        let client_tls = QuicClientConfig::try_from(creds.client_config()?)
            .map_err(|e| NetError::TlsSetup(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(transport);

        let mut quic =
            quinn::Endpoint::server(server, cfg.bind).map_err(|source| NetError::Bind {
                addr: cfg.bind,
                source,
            })?;
        quic.set_default_client_config(client);

        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = tokio::spawn(accept_loop(quic.clone(), tx));
        tracing::info!(node = %key.node_id(), addr = ?quic.local_addr().ok(), "QUIC endpoint listening");
        Ok(Self {
            inner: Arc::new(Inner {
                quic,
                node_id: key.node_id(),
                accepted: Mutex::new(rx),
                acceptor,
            }),
        })
    }

    /// This node's id (its public key), as peers see it.
    #[must_use]
    pub fn node_id(&self) -> Id32 {
        self.inner.node_id
    }

    /// The address actually bound (with the real port when bound to port 0).
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.quic.local_addr()
    }

    /// Connects to the node at `addr` and authenticates it by the cluster secret.
    ///
    /// # Errors
    /// [`NetError::NotInCluster`] if either side refused the other's certificate (no
    /// shared secret), or any connection error (unreachable, timed out).
    pub async fn connect(&self, addr: SocketAddr) -> Result<Peer, NetError> {
        let connecting = self.inner.quic.connect(addr, CLUSTER_SERVER_NAME)?;
        let conn = connecting.await.map_err(handshake_error)?;
        let peer = Peer::authenticated(conn)?;
        tracing::debug!(peer = %peer.node_id, %addr, "connected");
        Ok(peer)
    }

    /// Like [`Endpoint::connect`], but fails unless the peer is node `expected`: for
    /// reconnecting to a known node whose address may now belong to another one.
    ///
    /// # Errors
    /// As [`Endpoint::connect`], plus [`NetError::UnexpectedPeer`].
    pub async fn connect_to(&self, addr: SocketAddr, expected: Id32) -> Result<Peer, NetError> {
        let peer = self.connect(addr).await?;
        if peer.node_id != expected {
            peer.close("unexpected node id");
            return Err(NetError::UnexpectedPeer {
                expected,
                got: peer.node_id,
            });
        }
        Ok(peer)
    }

    /// The next peer that connected to us and passed authentication; `None` once the
    /// endpoint is closed. Peers that fail the handshake never come out of here (they
    /// are logged at `warn`).
    pub async fn accept(&self) -> Option<Peer> {
        self.inner.accepted.lock().await.recv().await
    }

    /// Closes every connection at once and stops accepting; peers see `reason`.
    pub fn close(&self, reason: &str) {
        self.inner.acceptor.abort();
        self.inner
            .quic
            .close(quinn::VarInt::from_u32(0), reason.as_bytes());
    }

    /// Waits until closed connections have told their peers (call after
    /// [`Endpoint::close`] on shutdown so peers learn at once, not at idle timeout).
    pub async fn wait_idle(&self) {
        self.inner.quic.wait_idle().await;
    }
}

/// Accepts incoming connections, runs each handshake in its own task, and queues the
/// peers that authenticate.
async fn accept_loop(quic: quinn::Endpoint, tx: mpsc::Sender<Peer>) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    while let Some(incoming) = quic.accept().await {
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "too many handshakes in progress, refusing connection");
            incoming.refuse();
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let result = match incoming.await {
                Ok(conn) => Peer::authenticated(conn),
                Err(e) => Err(handshake_error(e)),
            };
            drop(permit);
            match result {
                Ok(peer) => {
                    tracing::debug!(peer = %peer.node_id, %remote, "accepted");
                    // The receiver is gone only when the endpoint is: nothing to do.
                    let _ = tx.send(peer).await;
                }
                Err(NetError::NotInCluster { reason }) => {
                    tracing::warn!(%remote, "refused connection: peer does not hold this cluster secret ({reason})");
                }
                Err(e) => tracing::warn!(%remote, "incoming connection failed: {e}"),
            }
        });
    }
}

/// QUIC's crypto error space: `0x100 + TLS alert` (RFC 9001 §4.8).
fn is_tls_error(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// Names a failed handshake: a TLS failure means a certificate was refused, i.e. no
/// shared cluster secret; anything else is a plain connection error.
fn handshake_error(e: quinn::ConnectionError) -> NetError {
    match e {
        quinn::ConnectionError::TransportError(t) if is_tls_error(t.code) => {
            NetError::NotInCluster {
                reason: format!("we refused the peer's certificate: {}", t.reason),
            }
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_tls_error(c.error_code) => {
            NetError::NotInCluster {
                reason: format!(
                    "the peer refused our certificate: {} ({})",
                    String::from_utf8_lossy(&c.reason),
                    c.error_code
                ),
            }
        }
        other => NetError::Connection(other),
    }
}

/// A bidirectional stream: one request and its response, or a streamed transfer.
#[derive(Debug)]
pub struct BiStream {
    /// Our direction.
    pub send: FrameSend,
    /// The peer's direction.
    pub recv: FrameRecv,
}

impl BiStream {
    fn new((send, recv): (quinn::SendStream, quinn::RecvStream)) -> Self {
        Self {
            send: FrameSend::new(send),
            recv: FrameRecv::new(recv),
        }
    }
}

/// An authenticated connection to another node of the cluster.
///
/// Cheap to clone; the connection closes when the last clone is dropped, on
/// [`Peer::close`], or after the idle timeout.
#[derive(Clone, Debug)]
pub struct Peer {
    conn: quinn::Connection,
    node_id: Id32,
}

impl Peer {
    /// Wraps a connection whose handshake succeeded, reading the node id from the
    /// verified certificate.
    fn authenticated(conn: quinn::Connection) -> Result<Self, NetError> {
        let node_id = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or_else(|| NetError::PeerCertificate("no verified certificate".into()))
            .and_then(|chain| tls::peer_node_id(&chain));
        match node_id {
            Ok(node_id) => Ok(Self { conn, node_id }),
            Err(e) => {
                conn.close(quinn::VarInt::from_u32(1), b"bad certificate");
                Err(e)
            }
        }
    }

    /// The peer's node id, from its verified certificate.
    #[must_use]
    pub fn node_id(&self) -> Id32 {
        self.node_id
    }

    /// The peer's current UDP address.
    #[must_use]
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Smoothed round-trip time, for preferring the closest replica.
    #[must_use]
    pub fn rtt(&self) -> std::time::Duration {
        self.conn.rtt()
    }

    /// Opens a new stream to the peer (one per request).
    ///
    /// # Errors
    /// The connection is closed or lost.
    pub async fn open(&self) -> Result<BiStream, NetError> {
        Ok(BiStream::new(self.conn.open_bi().await?))
    }

    /// The next stream the peer opened; `None` once the connection was closed by either
    /// side on purpose.
    ///
    /// # Errors
    /// The connection was lost (timed out, reset).
    pub async fn accept(&self) -> Result<Option<BiStream>, NetError> {
        match self.conn.accept_bi().await {
            Ok(pair) => Ok(Some(BiStream::new(pair))),
            Err(
                quinn::ConnectionError::ApplicationClosed(_)
                | quinn::ConnectionError::LocallyClosed,
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `payload` as one frame on a new stream and returns the one-frame answer.
    ///
    /// # Errors
    /// Connection, stream or frame errors (an oversized payload is refused before
    /// anything is sent).
    pub async fn request(&self, payload: &[u8]) -> Result<Bytes, NetError> {
        let mut stream = self.open().await?;
        stream.send.send_frame(payload).await?;
        stream.send.finish()?;
        stream.recv.recv_frame().await
    }

    /// [`Self::request`], holding the answer's bytes from `budget` (see
    /// [`super::FrameRecv::recv_frame_counted`]).
    ///
    /// # Errors
    /// As [`Self::request`].
    pub async fn request_counted(
        &self,
        payload: &[u8],
        budget: &MemoryBudget,
    ) -> Result<(Bytes, BudgetPermit), NetError> {
        let mut stream = self.open().await?;
        // A call abandoned on the way (its caller timed out or gave up on a slow peer)
        // resets the stream, so that QUIC drops the bytes it still buffers for the peer.
        let mut send = ResetOnDrop(Some(stream.send));
        if let Some(s) = send.0.as_mut() {
            s.send_frame(payload).await?;
            s.finish()?;
        }
        let answer = stream.recv.recv_frame_counted(budget).await;
        send.0 = None;
        answer
    }

    /// Closes the connection; the peer sees `reason`.
    pub fn close(&self, reason: &str) {
        self.conn
            .close(quinn::VarInt::from_u32(0), reason.as_bytes());
    }

    /// Waits until the connection is closed, and says why.
    pub async fn closed(&self) -> NetError {
        NetError::Connection(self.conn.closed().await)
    }
}

/// Resets the stream it holds when dropped, unless taken out first.
struct ResetOnDrop(Option<FrameSend>);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(s) = self.0.as_mut() {
            s.reset(0);
        }
    }
}
