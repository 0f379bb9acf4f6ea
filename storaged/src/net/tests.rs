//! Endpoint tests on loopback: authentication, requests, streamed bodies, bad frames.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

const SECRET: [u8; 32] = [0x42; 32];
const OTHER_SECRET: [u8; 32] = [0x43; 32];
const BIG: usize = 5 * 1024 * 1024;

/// Every loopback test runs under this bound: a hang is a failure, not a stuck CI job.
async fn within<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out");
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn endpoint(dir: &tempfile::TempDir, name: &str, secret: [u8; 32]) -> Endpoint {
    let cfg = NetConfig::new(loopback(), secret, dir.path().join(name).join("node_key"));
    Endpoint::bind(cfg).await.unwrap()
}

fn big_payload() -> Vec<u8> {
    (0..BIG).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// Log lines captured from the current thread (tests run on a current-thread runtime,
/// so the endpoint's background tasks log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    async fn wait_for(&self, needle: &str) -> String {
        for _ in 0..200 {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no log line containing {needle:?} in:\n{}", self.text());
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A toy server: `ping` → `pong`; `upload` + body → the body's bytes come out of the
/// channel, answer is its length; `download` → a header frame then the big body.
async fn serve(peer: Peer, uploads: tokio::sync::mpsc::Sender<Vec<u8>>) {
    while let Ok(Some(mut s)) = peer.accept().await {
        let uploads = uploads.clone();
        tokio::spawn(async move {
            let header = match s.recv.recv_frame().await {
                Ok(h) => h,
                Err(e) => {
                    let _ = s.send.send_frame(format!("error: {e}").as_bytes()).await;
                    let _ = s.send.finish();
                    return;
                }
            };
            match &header[..] {
                b"ping" => s.send.send_frame(b"pong").await.unwrap(),
                b"upload" => {
                    let mut body = s.recv.recv_body().await.unwrap();
                    let mut got = Vec::new();
                    while let Some(piece) = body.next_piece().await.unwrap() {
                        assert!(piece.len() <= BODY_PIECE);
                        got.extend_from_slice(&piece);
                    }
                    let n = got.len() as u64;
                    uploads.send(got).await.unwrap();
                    s.send.send_frame(&n.to_be_bytes()).await.unwrap();
                }
                b"download" => {
                    s.send.send_frame(b"here").await.unwrap();
                    let data = big_payload();
                    s.send
                        .send_body(data.len() as u64, &mut &data[..])
                        .await
                        .unwrap();
                }
                _ => s.send.send_frame(b"unknown").await.unwrap(),
            }
            s.send.finish().unwrap();
        });
    }
}

#[tokio::test]
async fn request_response_and_streamed_bodies() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let a = endpoint(&dir, "a", SECRET).await;
        let b = endpoint(&dir, "b", SECRET).await;
        assert_ne!(a.node_id(), b.node_id());

        let (tx, mut uploads) = tokio::sync::mpsc::channel(1);
        let b2 = b.clone();
        let a_id = a.node_id();
        tokio::spawn(async move {
            while let Some(peer) = b2.accept().await {
                assert_eq!(peer.node_id(), a_id, "the server sees the client's key");
                tokio::spawn(serve(peer, tx.clone()));
            }
        });

        let peer = a.connect(b.local_addr().unwrap()).await.unwrap();
        assert_eq!(
            peer.node_id(),
            b.node_id(),
            "the client sees the server's key"
        );

        // Request / response.
        assert_eq!(&peer.request(b"ping").await.unwrap()[..], b"pong");
        assert_eq!(&peer.request(b"what").await.unwrap()[..], b"unknown");

        // Upload 5 MiB in pieces.
        let data = big_payload();
        let mut s = peer.open().await.unwrap();
        s.send.send_frame(b"upload").await.unwrap();
        s.send
            .send_body(data.len() as u64, &mut &data[..])
            .await
            .unwrap();
        s.send.finish().unwrap();
        let n = s.recv.recv_frame().await.unwrap();
        assert_eq!(&n[..], &(BIG as u64).to_be_bytes());
        let received = uploads.recv().await.unwrap();
        assert!(received == data, "uploaded body is byte-identical");

        // Download 5 MiB in pieces.
        let mut s = peer.open().await.unwrap();
        s.send.send_frame(b"download").await.unwrap();
        s.send.finish().unwrap();
        assert_eq!(&s.recv.recv_frame().await.unwrap()[..], b"here");
        let mut body = s.recv.recv_body().await.unwrap();
        assert_eq!(body.len(), BIG as u64);
        let mut got = Vec::with_capacity(BIG);
        body.copy_to(&mut got).await.unwrap();
        assert!(got == data, "downloaded body is byte-identical");

        // A known node, reached by id; a wrong expectation is refused.
        let again = a
            .connect_to(b.local_addr().unwrap(), b.node_id())
            .await
            .unwrap();
        assert_eq!(&again.request(b"ping").await.unwrap()[..], b"pong");
        let err = a
            .connect_to(b.local_addr().unwrap(), a.node_id())
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::UnexpectedPeer { .. }), "{err}");

        a.close("test over");
        b.close("test over");
    })
    .await;
}

#[tokio::test]
async fn wrong_secret_is_refused_both_ways_and_logged() {
    within(async {
        let (logs, _guard) = capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let a = endpoint(&dir, "a", SECRET).await;
        let c = endpoint(&dir, "c", OTHER_SECRET).await;

        // c dials a, then a dials c: both fail on the dialling side...
        let err = c.connect(a.local_addr().unwrap()).await.unwrap_err();
        assert!(matches!(err, NetError::NotInCluster { .. }), "{err}");
        assert!(err.to_string().contains("cluster secret"), "{err}");
        let err = a.connect(c.local_addr().unwrap()).await.unwrap_err();
        assert!(matches!(err, NetError::NotInCluster { .. }), "{err}");

        // ...the accepting side logs why...
        let text = logs.wait_for("refused connection").await;
        let refusals: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("cluster secret"))
            .collect();
        assert!(!refusals.is_empty(), "{text}");
        for _ in 0..200 {
            if logs
                .text()
                .lines()
                .filter(|l| l.contains("WARN") && l.contains("cluster secret"))
                .count()
                >= 2
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        // ...and neither ever yields the other as a peer.
        for ep in [&a, &c] {
            let accepted = tokio::time::timeout(Duration::from_millis(300), ep.accept()).await;
            assert!(accepted.is_err(), "no peer may be accepted");
        }
        let text = logs.text();
        let warns = text
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("cluster secret"))
            .count();
        assert!(warns >= 2, "both accepting sides log the refusal:\n{text}");
    })
    .await;
}

/// A client that skips server verification, so its own handshake completes: the
/// server must still refuse it and never serve a stream.
#[derive(Debug)]
struct TrustAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn attacker_request(server: SocketAddr, with_foreign_cert: bool) -> Result<Vec<u8>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = if with_foreign_cert {
        let key =
            NodeKey::from_key_pair(rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap())
                .unwrap();
        tls::ClusterTls::new(&OTHER_SECRET, &key)
            .unwrap()
            .client_config()
            .unwrap()
    } else {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg
    };
    tls.dangerous()
        .set_certificate_verifier(Arc::new(TrustAnything(provider)));
    let quic_tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client(loopback()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic_tls)));
    let result = async {
        let conn = ep
            .connect(server, CLUSTER_SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&[0, 0, 0, 4])
            .await
            .map_err(|e| e.to_string())?;
        send.write_all(b"ping").await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(1024).await.map_err(|e| e.to_string())
    }
    .await;
    ep.close(quinn::VarInt::from_u32(0), b"");
    result
}

#[tokio::test]
async fn client_without_the_secret_cannot_issue_a_request() {
    within(async {
        let (logs, _guard) = capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let a = endpoint(&dir, "a", SECRET).await;
        let addr = a.local_addr().unwrap();

        let foreign = attacker_request(addr, true).await;
        assert!(
            foreign.is_err(),
            "a foreign certificate got an answer: {foreign:?}"
        );
        let anonymous = attacker_request(addr, false).await;
        assert!(
            anonymous.is_err(),
            "no certificate got an answer: {anonymous:?}"
        );

        let text = logs.wait_for("we refused the peer's certificate").await;
        assert!(text.contains("cluster secret"), "{text}");
        let accepted = tokio::time::timeout(Duration::from_millis(300), a.accept()).await;
        assert!(accepted.is_err(), "no peer may be accepted");
    })
    .await;
}

#[tokio::test]
async fn node_key_persists_across_restarts() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let a = endpoint(&dir, "a", SECRET).await;
        let id = a.node_id();
        a.close("restart");
        drop(a);
        let a = endpoint(&dir, "a", SECRET).await;
        assert_eq!(a.node_id(), id);
        // The secret does not enter the identity.
        let a2 = endpoint(&dir, "a", OTHER_SECRET).await;
        assert_eq!(a2.node_id(), id);
        let mode = std::fs::metadata(dir.path().join("a/node_key"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    })
    .await;
}

#[tokio::test]
async fn truncated_oversized_and_garbage_frames_are_errors() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let a = endpoint(&dir, "a", SECRET).await;
        let b = endpoint(&dir, "b", SECRET).await;

        let (results_tx, mut results) = tokio::sync::mpsc::channel(8);
        let b2 = b.clone();
        tokio::spawn(async move {
            let peer = b2.accept().await.unwrap();
            while let Ok(Some(mut s)) = peer.accept().await {
                let r = s.recv.recv_frame().await;
                results_tx.send(r).await.unwrap();
            }
        });
        let peer = a.connect(b.local_addr().unwrap()).await.unwrap();

        let cases: [(&[u8], &str); 5] = [
            (&[], "empty stream"),
            (&[0, 0], "short length"),
            (&[0, 0, 0, 100, 1, 2, 3], "short payload"),
            (&[0xff, 0xff, 0xff, 0xff, 1, 2], "oversized"),
            (&[0x04, 0x00, 0x00, 0x01], "just over the limit"),
        ];
        for (bytes, what) in cases {
            let mut s = peer.open().await.unwrap();
            s.send.write_raw(bytes).await.unwrap();
            s.send.finish().unwrap();
            let r = results.recv().await.unwrap();
            match what {
                "oversized" | "just over the limit" => assert!(
                    matches!(r, Err(NetError::Frame(FrameError::TooLarge { .. }))),
                    "{what}: {r:?}"
                ),
                _ => assert!(
                    matches!(r, Err(NetError::Frame(FrameError::Incomplete))),
                    "{what}: {r:?}"
                ),
            }
        }

        // Sending an oversized frame is refused locally, before anything goes out.
        let mut s = peer.open().await.unwrap();
        let huge = vec![0u8; MAX_FRAME_LEN + 1];
        let err = s.send.send_frame(&huge).await.unwrap_err();
        assert!(
            matches!(err, NetError::Frame(FrameError::TooLarge { .. })),
            "{err}"
        );

        // A body source shorter than announced is an error for the sender.
        let mut s = peer.open().await.unwrap();
        let err = s.send.send_body(10, &mut &b"abc"[..]).await.unwrap_err();
        assert!(
            matches!(
                err,
                NetError::BodyTooShort {
                    expected: 10,
                    got: 3
                }
            ),
            "{err}"
        );
    })
    .await;
}
