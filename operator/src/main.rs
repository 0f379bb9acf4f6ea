//! The `operator` binary: runs the controllers (with leader election, metrics and health
//! endpoints, structured logs), or renders a manifest's objects offline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use kube::runtime::events::Reporter;
use operator::context::Context;
use operator::resources::RenderOptions;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "operator",
    version,
    about = "Kubernetes operator for storaged clusters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the controllers (the default when no subcommand is given).
    Run,
    /// Print the objects the operator would create for the GarageClusters of a manifest.
    Render {
        /// Manifest file (multi-document YAML); kinds other than GarageCluster are skipped.
        #[arg(long)]
        example: PathBuf,
        /// DNS suffix of the Kubernetes cluster.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Take a Lease before reconciling, so that several replicas can run.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "garage-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// DNS suffix of the Kubernetes cluster.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Admin endpoint to use for every cluster (operator outside the cluster).
    #[arg(long, env = "ADMIN_ENDPOINT_OVERRIDE")]
    admin_endpoint_override: Option<String>,
    /// `json` or `text` logs.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Render {
            example,
            cluster_domain,
        }) => {
            let text = std::fs::read_to_string(&example)
                .with_context(|| format!("reading {}", example.display()))?;
            let out = operator::render::render_manifest(&text, &RenderOptions { cluster_domain })?;
            print!("{out}");
            Ok(())
        }
        Some(Cmd::Run) | None => run(cli.run).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(&args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("garage-operator-{}", std::process::id()));
    let reporter = Reporter {
        controller: operator::resources::names::MANAGER.to_owned(),
        instance: Some(identity.clone()),
    };
    let mut ctx = Context::new(
        client.clone(),
        operator::admin_client::http_transport(),
        reporter,
    );
    ctx.render.cluster_domain = args.cluster_domain.clone();
    ctx.admin_endpoint_override = args.admin_endpoint_override.clone();
    let ctx = Arc::new(ctx);

    let mut registry = Registry::default();
    ctx.metrics.register(&mut registry);
    let (ready_tx, ready_rx) = watch::channel(false);
    let server = tokio::spawn(serve_http(args.metrics_addr, Arc::new(registry), ready_rx));

    if !args.leader_election {
        let _ = ready_tx.send(true);
        operator::controller::run(ctx, args.namespaces).await;
        server.abort();
        return Ok(());
    }

    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .context("building the lease manager")?;
    let (mut leader, lease_task) = manager.watch().await;
    // A standby replica is healthy and ready: it serves probes while it waits.
    let _ = ready_tx.send(true);
    tracing::info!(lease = %args.lease_name, %identity, "waiting for leadership");
    while !*leader.borrow_and_update() {
        leader.changed().await.context("lease manager stopped")?;
    }
    tracing::info!("leading: starting controllers");
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow() {
                return;
            }
        }
    };
    tokio::select! {
        () = operator::controller::run(ctx, args.namespaces) => {
            tracing::info!("controllers stopped");
        }
        () = lost => {
            // Another replica may already act: stop at once, Kubernetes restarts us.
            anyhow::bail!("lost leadership");
        }
    }
    drop(leader);
    let _ = lease_task.await;
    server.abort();
    Ok(())
}

/// `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (serving).
async fn serve_http(
    addr: SocketAddr,
    registry: Arc<Registry>,
    ready: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "metrics and health endpoints");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let registry = registry.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                let ready = *ready.borrow();
                async move {
                    Ok::<_, std::convert::Infallible>(respond(req.uri().path(), &registry, ready))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "http connection");
            }
        });
    }
}

fn respond(path: &str, registry: &Registry, ready: bool) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, "ok".to_owned()),
        "/readyz" if ready => (StatusCode::OK, "ok".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "starting".to_owned()),
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => (StatusCode::OK, text),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}
