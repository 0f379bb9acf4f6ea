//! Wires the daemon together: opens the metadata store (first of all, so that a damaged one
//! is the only thing reported), the model, starts background workers, serves S3 and admin
//! over hyper, and shuts down cleanly on SIGTERM / Ctrl-C (accepting stops, requests in
//! flight finish, so no acknowledged write is lost on the way down), or when the metadata
//! store stops working (then with an error). [`repair`] is `storaged repair`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::admin::metrics::{Metrics, RequestLabels};
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Model;

mod cluster;
mod rebuild;
pub mod repair;

/// Largest request head (request line + headers) a client may send.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("{what}: cannot listen on {addr}: {e}")))
}

fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.limits.header_read_timeout_secs))
        .max_buf_size(MAX_HEADER_BYTES);
    b.http2().timer(TokioTimer::new());
    b
}

/// Accepts connections until `shutdown` flips, at most `max_conns` at once.
async fn serve<S, F>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    max_conns: usize,
    mut shutdown: watch::Receiver<bool>,
    make: S,
) where
    S: Fn() -> F,
    F: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<s3s::Body>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    F::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_conns));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), make());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// Answers `Expect: 100-continue` at once by reading the first body frame before the
/// handler runs: hyper only sends `100 Continue` when the body is first polled, and a
/// handler that writes metadata first could keep clients (botocore waits one second)
/// guessing, after which they send the body unasked and the framing goes wrong.
async fn continue_early(req: hyper::Request<Incoming>) -> hyper::Request<s3s::Body> {
    use futures::StreamExt as _;
    use http_body_util::BodyExt as _;
    let expects = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects {
        return req.map(s3s::Body::from);
    }
    let (parts, mut body) = req.into_parts();
    let first = body.frame().await;
    let rest = http_body_util::BodyStream::new(body);
    let stream = futures::stream::iter(first).chain(rest);
    hyper::Request::from_parts(
        parts,
        s3s::Body::http_body(http_body_util::StreamBody::new(stream)),
    )
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A node opened from its config up to its S3 service: what [`run`] serves, and what the
/// fuzz targets ([`crate::fuzzing`]) call in process, without listeners or workers.
pub(crate) struct Standalone {
    pub(crate) s3: s3s::service::S3Service,
    pub(crate) model: Arc<Model>,
    cluster: cluster::ClusterSide,
    db: crate::table::Db,
}

impl Standalone {
    /// Binds the QUIC endpoint, opens the model and, alone, gives itself the layout.
    ///
    /// # Errors
    /// [`Error::MetadataDamaged`] before anything starts when the metadata store cannot be
    /// read (see [`repair`]), [`Error::MetadataUnavailable`] when it cannot be opened,
    /// configuration errors.
    pub(crate) async fn start(config: &Config) -> Result<Self> {
        let had_identity = config.metadata_dir.join(crate::net::NODE_KEY_FILE).exists();
        let db = crate::table::Db::open_for_node(&config.metadata_dir, had_identity)?;
        let cluster = cluster::start(config).await?;
        let model =
            Model::open_in(config, db.clone(), &cluster.handles()).map_err(|e| db.classify(e))?;
        cluster::assign_self_if_alone(config, &cluster).await?;
        let s3 = crate::s3::service(Arc::clone(&model), config)?;
        Ok(Self {
            s3,
            model,
            cluster,
            db,
        })
    }
}

/// Runs the daemon until `stop` resolves.
///
/// # Errors
/// [`Error::MetadataDamaged`] before anything starts when the metadata store cannot be
/// read (see [`repair`]); [`Error::MetadataUnavailable`] when it cannot be opened, or when
/// it stopped working (the daemon then stops like on SIGTERM); configuration errors.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> Result<()> {
    let Standalone {
        s3,
        model,
        cluster,
        db,
    } = Standalone::start(&config).await?;
    let node_id = cluster.endpoint.node_id().to_hex();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    model.spawn_workers(&shutdown_rx);
    cluster::spawn_workers(&cluster, &model, &config, &shutdown_rx);
    tokio::spawn(Arc::clone(&model.blocks).run_gc_worker(
        Duration::from_secs(config.background.gc_interval_secs.max(1)),
        shutdown_rx.clone(),
    ));
    tokio::spawn(Arc::clone(&model.blocks).run_scrub_worker(
        Duration::from_secs(config.background.scrub_interval_secs),
        Duration::from_millis(config.background.scrub_pause_ms),
        shutdown_rx.clone(),
    ));
    tokio::spawn(crate::util::memory::run_trimmer(
        model.budget().clone(),
        shutdown_rx.clone(),
    ));
    let metrics = Arc::new(Metrics::new());
    let cleanup = Arc::clone(&model);
    let mut stopping = shutdown_rx.clone();
    tokio::spawn(async move {
        // Peers may not be up yet at start (the replicas of the objects): retry until done.
        let mut wait = Duration::from_secs(1);
        loop {
            match cleanup.abort_interrupted_uploads().await {
                Ok(0) => return,
                Ok(n) => {
                    tracing::info!(aborted = n, "released uploads interrupted by the last stop");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "could not clean up interrupted uploads yet")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopping.changed() => return,
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    });

    let s3_listener = bind(config.s3_api.api_bind_addr, "s3_api.api_bind_addr").await?;
    let admin_listener = bind(config.admin.api_bind_addr, "admin.api_bind_addr").await?;
    tracing::info!(
        node = %&node_id[..16],
        s3 = %config.s3_api.api_bind_addr,
        admin = %config.admin.api_bind_addr,
        "storaged serving"
    );

    let m = Arc::clone(&metrics);
    let s3_task = tokio::spawn(serve(
        s3_listener,
        http_builder(&config),
        config.limits.max_connections,
        shutdown_rx.clone(),
        move || {
            let s3 = s3.clone();
            let m = Arc::clone(&m);
            service_fn(move |req: hyper::Request<Incoming>| {
                let s3 = s3.clone();
                let m = Arc::clone(&m);
                async move {
                    let start = Instant::now();
                    let method = req.method().to_string();
                    let has_body = req
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .is_some_and(|v| v != "0")
                        || req.headers().contains_key(http::header::TRANSFER_ENCODING);
                    // `Expect: 100-continue` on an empty body gets its final answer without a
                    // `100 Continue` (hyper sends none for an empty body); botocore then
                    // mis-parses the next response on that connection (boto/botocore#3010:
                    // aws-cli uploads fail with `KeyError: 'ETag'`), so that connection is
                    // not reused.
                    let empty_expect = req
                        .headers()
                        .get(http::header::EXPECT)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
                        && !has_body;
                    let mut resp = match s3.call(continue_early(req).await).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(error = ?e, "S3 request failed");
                            let mut r = hyper::Response::new(s3s::Body::empty());
                            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                            r
                        }
                    };
                    // An error answered before the body was read (or with `Expect: 100-continue`
                    // never acknowledged) leaves the connection's framing unknown: close it.
                    let id = hex::encode(rand::random::<[u8; 8]>()).to_uppercase();
                    if let Ok(v) = http::HeaderValue::from_str(&id) {
                        resp.headers_mut().insert("x-amz-request-id", v.clone());
                        resp.headers_mut().insert("x-amz-id-2", v);
                    }
                    if empty_expect || (has_body && !resp.status().is_success()) {
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    m.s3_duration.observe(start.elapsed().as_secs_f64());
                    let status = format!("{}xx", resp.status().as_u16() / 100);
                    m.s3_requests
                        .get_or_create(&RequestLabels { method, status })
                        .inc();
                    Ok::<_, std::convert::Infallible>(resp)
                }
            })
        },
    ));

    let state = Arc::new(AdminState {
        model: Arc::clone(&model),
        config: config.clone(),
        metrics,
        node_id,
        membership: cluster.membership.clone(),
        layout: cluster.layout.clone(),
    });
    let admin_task = tokio::spawn(serve(
        admin_listener,
        http_builder(&config),
        64,
        shutdown_rx.clone(),
        move || {
            let state = Arc::clone(&state);
            service_fn(move |req| {
                let state = Arc::clone(&state);
                async move {
                    let r = admin::handle(state, req).await?;
                    Ok::<_, std::convert::Infallible>(r.map(s3s::Body::http_body))
                }
            })
        },
    ));

    let failure = tokio::select! {
        () = stop => None,
        why = db.failed() => Some(why),
    };
    tracing::info!("shutting down: finishing requests in flight");
    let _ = shutdown_tx.send(true);
    let _ = s3_task.await;
    let _ = admin_task.await;
    cluster.shutdown().await;
    tracing::info!("stopped");
    match failure {
        None => Ok(()),
        Some(why) => Err(Error::MetadataUnavailable {
            path: db.path().to_owned(),
            why,
        }),
    }
}
