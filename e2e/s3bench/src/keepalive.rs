//! The keep-alive GET benchmark: a fixed number of HTTP/1.1 connections, each opened once
//! and reused for every request, GETting one presigned URL as fast as answers come (what
//! `wrk -c N` does); and, when `wrk` is installed, `wrk` itself on the same URL, so the two
//! load generators can be compared.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::stats::OpStats;

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum KeepAliveError {
    /// The URL is not `http://host:port/...`.
    #[error("bad URL {0}")]
    Url(String),
}

/// GETs `url` over `connections` keep-alive connections for `warmup` + `duration`; returns
/// what was measured after the warm-up and the measured window. Each completed request
/// calls `tick`.
///
/// # Errors
/// The URL cannot be parsed.
pub async fn run(
    url: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    tick: impl Fn() + Clone + Send + 'static,
) -> Result<(OpStats, Duration), KeepAliveError> {
    let uri: http::Uri = url.parse().map_err(|_| KeepAliveError::Url(url.into()))?;
    let authority = uri
        .authority()
        .ok_or_else(|| KeepAliveError::Url(url.into()))?
        .to_string();
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_string();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (authority, path, tick) = (authority.clone(), path.clone(), tick.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = OpStats::default();
            let mut sender = None;
            while Instant::now() < end {
                if sender.is_none() {
                    match connect(&authority).await {
                        Ok(s) => sender = Some(s),
                        Err(e) => {
                            stats.error(e);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let Some(s) = sender.as_mut() else { continue };
                let t0 = Instant::now();
                let r = get(s, &authority, &path).await;
                if r.is_err() {
                    sender = None;
                }
                if t0 < measure_from {
                    continue;
                }
                tick();
                match r {
                    Ok(n) => stats.ok(t0.elapsed(), (n, 0), t0 - measure_from),
                    Err(e) => stats.error(e),
                }
            }
            stats
        }));
    }
    let mut all = OpStats::default();
    for t in tasks {
        match t.await {
            Ok(s) => all.merge(&s),
            Err(e) => all.error(format!("connection task failed: {e}")),
        }
    }
    Ok((all, Instant::now().saturating_duration_since(measure_from)))
}

async fn connect(authority: &str) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn get(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    authority: &str,
    path: &str,
) -> Result<u64, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status.is_success() {
        Ok(body.len() as u64)
    } else {
        Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    }
}

/// What `wrk` reported.
#[derive(Clone, Debug, Serialize)]
pub struct WrkResult {
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Non-2xx/3xx answers and socket errors.
    pub errors: u64,
}

/// Runs `wrk -t2 -cN -dS --latency URL` if `wrk` is on the PATH; `None` when it is not
/// installed or its output cannot be read.
#[must_use]
pub fn run_wrk(url: &str, connections: usize, duration: Duration) -> Option<WrkResult> {
    let out = Command::new("wrk")
        .args(["-t", "2", "-c"])
        .arg(connections.to_string())
        .arg("-d")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg(url)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// `12.3us`, `4.56ms`, `1.2s` in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult {
        requests_per_sec: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
    };
    let mut seen_rps = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => {
                r.requests_per_sec = v.parse().ok()?;
                seen_rps = true;
            }
            ["50%", v] => r.p50_ms = wrk_ms(v)?,
            ["99%", v] => r.p99_ms = wrk_ms(v)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    seen_rps.then_some(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parses() {
        let text = "Running 10s test @ http://127.0.0.1:1/b/k\n  2 threads and 32 connections\n  Latency Distribution\n     50%    1.25ms\n     75%    2.00ms\n     90%    3.10ms\n     99%  850.00us\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  24000.50\nTransfer/sec:      5.00MB\n";
        let r = parse_wrk(text).unwrap();
        assert!((r.requests_per_sec - 24000.5).abs() < 1e-6);
        assert!((r.p50_ms - 1.25).abs() < 1e-9);
        assert!((r.p99_ms - 0.85).abs() < 1e-9);
        assert_eq!(r.errors, 3);
        assert!(parse_wrk("nothing").is_none());
    }
}
