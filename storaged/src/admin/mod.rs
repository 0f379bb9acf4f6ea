//! Admin HTTP API (`/v1/`, bearer token), unauthenticated `/health` and `/ready`, and
//! Prometheus `/metrics`. Request and response types come from `storaged-api`.

mod handlers;
mod layout;
pub mod metrics;
pub mod ready;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use storaged_api::{ErrorResponse, paths};

use crate::config::Config;
use crate::model::Model;

/// Largest admin request body.
const MAX_BODY: usize = 1024 * 1024;

/// What the admin handlers need.
pub struct AdminState {
    /// Tables.
    pub model: Arc<Model>,
    /// Daemon configuration (tokens, zone, addresses).
    pub config: Config,
    /// Metrics registry.
    pub metrics: Arc<metrics::Metrics>,
    /// This node's id.
    pub node_id: String,
    /// The peers this node knows.
    pub membership: crate::membership::Membership,
    /// The cluster layout.
    pub layout: crate::layout::manager::LayoutManager,
}

/// An admin API answer.
pub(crate) type Reply = Response<Full<Bytes>>;

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    json(
        status,
        &ErrorResponse {
            code: code.to_string(),
            message: message.into(),
        },
    )
}

fn text(status: StatusCode, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// Constant-time comparison of a bearer token.
fn bearer_ok(req: &Request<Incoming>, expected: &str) -> bool {
    let got = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    got.len() == expected.len()
        && got
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// This node's [`ready::readiness`] from its layout and the nodes its membership sees up.
fn node_readiness(state: &AdminState) -> Result<(), ready::NotReady> {
    let layout = state.layout.layout();
    let me = state.model.replicator.node_id();
    let up: std::collections::HashSet<_> = (state.membership.nodes().into_iter())
        .filter(|n| n.is_up)
        .map(|n| n.id)
        .collect();
    let rf = layout.current().replication_factor;
    let quorums = crate::table::Quorums::new(rf, state.config.consistency_mode);
    ready::readiness(&layout, me, &up, quorums)
}

/// Entry point of the admin server.
pub async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_string();
    let reply = match (req.method(), path.as_str()) {
        (&Method::GET, paths::HEALTH) => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, paths::READY) => match node_readiness(&state) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        (&Method::GET, paths::METRICS) => match &state.config.admin.metrics_token {
            Some(t) if !bearer_ok(&req, t) => error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "metrics token required",
            ),
            _ => {
                state.metrics.refresh(&state.model);
                text(StatusCode::OK, state.metrics.render())
            }
        },
        (_, p) if p.starts_with("/v1/") || p == "/v1" => match &state.config.admin.admin_token {
            None => error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "admin API disabled: no admin_token configured",
            ),
            Some(t) if !bearer_ok(&req, t) => error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "missing or wrong bearer token",
            ),
            Some(_) => {
                let method = req.method().clone();
                let query = req.uri().query().unwrap_or_default().to_string();
                match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(body) => {
                        handlers::route(&state, &method, &path, &query, &body.to_bytes()).await
                    }
                    Err(_) => error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "BadRequest",
                        "request body too large or unreadable",
                    ),
                }
            }
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route for {path}"),
        ),
    };
    Ok(reply)
}
