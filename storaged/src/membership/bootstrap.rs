//! Bootstrap entries (`host:port`, DNS names) and their resolution.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One `bootstrap_peers` entry, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A literal address: dialled as is, never resolved.
    Addr(SocketAddr),
    /// A DNS name and port: re-resolved periodically, every address it yields is dialled
    /// (a Kubernetes headless Service yields one per pod).
    Name(String, u16),
}

/// Parses a bootstrap entry: `ip:port`, `[ipv6]:port`, a bare IP, `name:port` or a bare
/// `name` (which take `default_port`).
///
/// # Errors
/// A message naming the entry if it is none of these.
pub fn parse(entry: &str, default_port: u16) -> Result<Target, String> {
    let e = entry.trim();
    if e.is_empty() {
        return Err("empty bootstrap peer".into());
    }
    if let Ok(a) = e.parse::<SocketAddr>() {
        return Ok(Target::Addr(a));
    }
    let bare = e
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(e);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Target::Addr(SocketAddr::new(ip, default_port)));
    }
    let (host, port) = match e.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("bootstrap peer {entry:?}: bad port {port:?}"))?;
            (host, port)
        }
        None => (e, default_port),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid {
        return Err(format!("bootstrap peer {entry:?}: not a host name"));
    }
    Ok(Target::Name(host.to_owned(), port))
}

/// Resolves DNS names; a trait so that tests can play a DNS whose answers change.
#[async_trait::async_trait]
pub(super) trait Resolve: Send + Sync + 'static {
    /// Every address of `host`, with `port`.
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver, through [`tokio::net::lookup_host`].
pub(super) struct SystemResolver;

#[async_trait::async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Resolves every target (names bounded by `timeout` each) into one address list, in
/// order and without duplicates. A name that fails to resolve is logged and skipped: the
/// others still bootstrap.
pub(super) async fn resolve_all(
    resolver: &dyn Resolve,
    targets: &[Target],
    timeout: Duration,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for t in targets {
        let addrs = match t {
            Target::Addr(a) => vec![*a],
            Target::Name(host, port) => {
                match tokio::time::timeout(timeout, resolver.resolve(host, *port)).await {
                    Ok(Ok(addrs)) => addrs,
                    Ok(Err(e)) => {
                        tracing::warn!(%host, "cannot resolve bootstrap peer: {e}");
                        Vec::new()
                    }
                    Err(_) => {
                        tracing::warn!(%host, "resolving bootstrap peer timed out");
                        Vec::new()
                    }
                }
            }
        };
        for a in addrs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_names() {
        let a = |s: &str| Target::Addr(s.parse().unwrap());
        let n = |h: &str, p| Target::Name(h.into(), p);
        assert_eq!(parse("10.0.0.1:3901", 1), Ok(a("10.0.0.1:3901")));
        assert_eq!(parse(" 10.0.0.1 ", 3901), Ok(a("10.0.0.1:3901")));
        assert_eq!(parse("[::1]:4000", 1), Ok(a("[::1]:4000")));
        assert_eq!(parse("[::1]", 3901), Ok(a("[::1]:3901")));
        assert_eq!(parse("::1", 3901), Ok(a("[::1]:3901")));
        assert_eq!(
            parse("garage-0.garage:3901", 1),
            Ok(n("garage-0.garage", 3901))
        );
        assert_eq!(
            parse("storaged-headless.ns.svc.cluster.local", 3901),
            Ok(n("storaged-headless.ns.svc.cluster.local", 3901))
        );
        for bad in ["", "host:port", "host:99999", ":3901", "a b:1", "x::y:z"] {
            assert!(parse(bad, 3901).is_err(), "{bad:?}");
        }
    }

    struct Fixed;
    #[async_trait::async_trait]
    impl Resolve for Fixed {
        async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            match host {
                "many" => Ok(vec![
                    SocketAddr::from(([10, 0, 0, 1], port)),
                    SocketAddr::from(([10, 0, 0, 2], port)),
                ]),
                "slow" => std::future::pending().await,
                _ => Err(std::io::Error::other("NXDOMAIN")),
            }
        }
    }

    #[tokio::test]
    async fn resolves_every_address_skipping_failures() {
        let targets = [
            Target::Name("many".into(), 3901),
            Target::Name("nx".into(), 3901),
            Target::Name("slow".into(), 3901),
            Target::Addr("10.0.0.1:3901".parse().unwrap()),
            Target::Addr("10.0.0.9:3901".parse().unwrap()),
        ];
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            resolve_all(&Fixed, &targets, Duration::from_millis(50)),
        )
        .await
        .unwrap();
        let want: Vec<SocketAddr> = ["10.0.0.1:3901", "10.0.0.2:3901", "10.0.0.9:3901"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }
}
