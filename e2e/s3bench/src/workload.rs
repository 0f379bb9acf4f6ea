//! A workload: N concurrent clients doing a mix of operations on a key space, for a number
//! of operations or a duration, with a warm-up that is not measured.
//!
//! Every PUT body is unique (random bytes, stamped with the operation number every 4 KiB),
//! so a content-addressed store cannot skip writes by deduplicating them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};

use crate::client::S3Client;
use crate::stats::OpStats;

/// One kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// PutObject.
    Put,
    /// GetObject.
    Get,
    /// HeadObject.
    Head,
    /// DeleteObject.
    Delete,
    /// ListObjectsV2, every page of the workload's prefix.
    List,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Put => "put",
            Self::Get => "get",
            Self::Head => "head",
            Self::Delete => "delete",
            Self::List => "list",
        })
    }
}

impl FromStr for OpKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "put" => Self::Put,
            "get" => Self::Get,
            "head" => Self::Head,
            "delete" => Self::Delete,
            "list" => Self::List,
            _ => {
                return Err(format!(
                    "unknown operation {s:?} (put, get, head, delete, list)"
                ));
            }
        })
    }
}

/// Weighted operations, e.g. `get=70,put=25,delete=5` (or a single `put`).
#[derive(Clone, Debug)]
pub struct Mix(pub Vec<(OpKind, u32)>);

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let (op, weight) = match part.split_once('=') {
                Some((op, w)) => (
                    op.trim().parse()?,
                    w.trim()
                        .parse::<u32>()
                        .map_err(|e| format!("weight of {op:?}: {e}"))?,
                ),
                None => (part.trim().parse()?, 1),
            };
            out.push((op, weight));
        }
        if out.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
            return Err("the mix has no weight".into());
        }
        Ok(Self(out))
    }
}

impl Mix {
    fn pick(&self, rng: &mut impl Rng) -> OpKind {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut x = rng.random_range(0..total);
        for (op, w) in &self.0 {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        self.0[0].0
    }
}

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    /// After this many operations in total (keys `0..n`, each once, in order).
    Ops(u64),
    /// After this long (random keys of the key space).
    Time(Duration),
}

/// How key number `n` is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyNaming {
    /// `<prefix>/<n>`.
    Flat,
    /// `<prefix>/dNN/sN/kNNNNNNN`: 100 "directories" of 10 "subdirectories" each, so that
    /// prefix and delimiter listings have something to group.
    Tree,
}

impl KeyNaming {
    /// The key of number `n` under `prefix`.
    #[must_use]
    pub fn key(self, prefix: &str, n: u64) -> String {
        match self {
            Self::Flat => format!("{prefix}/{n}"),
            Self::Tree => format!(
                "{prefix}/d{:02}/s{}/k{:07}",
                n % 100,
                (n / 100) % 10,
                n / 1000
            ),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Bucket (created if missing).
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// How keys under the prefix are named.
    pub naming: KeyNaming,
    /// Operations and their weights.
    pub mix: Mix,
    /// Object size range in bytes (inclusive).
    pub size: (usize, usize),
    /// Concurrent clients.
    pub clients: usize,
    /// When to stop.
    pub length: Length,
    /// Keys that exist (for GET, HEAD and DELETE in a timed run).
    pub keys: u64,
    /// Not measured at the start of a timed run.
    pub warmup: Duration,
}

/// Measurements by operation kind, and the measured window.
pub type Results = (BTreeMap<OpKind, OpStats>, Duration);

fn body(base: &Bytes, len: usize, op: u64) -> Bytes {
    let mut b = base[..len].to_vec();
    for (i, piece) in b.chunks_mut(4096).enumerate() {
        let tag = format!("{op:016x}{i:08x}");
        let n = piece.len().min(tag.len());
        piece[..n].copy_from_slice(&tag.as_bytes()[..n]);
    }
    Bytes::from(b)
}

async fn one(
    client: &S3Client,
    spec: &Spec,
    op: OpKind,
    key_no: u64,
    size: usize,
    base: &Bytes,
) -> Result<(u64, u64), String> {
    let key = spec.naming.key(&spec.prefix, key_no);
    let r = match op {
        OpKind::Put => {
            let data = body(base, size, key_no ^ rand::rng().next_u64());
            client
                .put(&spec.bucket, &key, data)
                .await
                .map(|()| (size, 0))
        }
        OpKind::Get => client.get(&spec.bucket, &key).await.map(|n| (n, 0)),
        OpKind::Head => client.head(&spec.bucket, &key).await.map(|()| (0, 0)),
        OpKind::Delete => client.delete(&spec.bucket, &key).await.map(|()| (0, 0)),
        OpKind::List => {
            let (mut token, mut keys) = (None, 0);
            loop {
                let page = client
                    .list(&spec.bucket, &format!("{}/", spec.prefix), token.as_deref())
                    .await
                    .map_err(|e| format!("{op}: {e}"))?;
                keys += page.keys;
                match page.next {
                    Some(t) => token = Some(t),
                    None => break Ok((0, keys)),
                }
            }
        }
    };
    r.map(|(b, n)| (b as u64, n as u64))
        .map_err(|e| format!("{op} {key}: {e}"))
}

/// Runs `spec` through `client`; returns what was measured after the warm-up. Each
/// completed operation advances `progress`.
pub async fn run(client: &S3Client, spec: &Spec, progress: &indicatif::ProgressBar) -> Results {
    let mut seed = rand::rngs::SmallRng::from_os_rng();
    let mut base = vec![0u8; spec.size.1.max(1)];
    seed.fill_bytes(&mut base);
    let base = Bytes::from(base);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = match spec.length {
        Length::Ops(_) => start,
        Length::Time(_) => start + spec.warmup,
    };
    let mut tasks = Vec::with_capacity(spec.clients);
    for _ in 0..spec.clients {
        let (client, spec, base, next) = (client.clone(), spec.clone(), base.clone(), next.clone());
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::from_os_rng();
            let mut stats: BTreeMap<OpKind, OpStats> = BTreeMap::new();
            loop {
                let key_no = match spec.length {
                    Length::Ops(n) => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        i
                    }
                    Length::Time(d) => {
                        if start.elapsed() >= spec.warmup + d {
                            break;
                        }
                        rng.random_range(0..spec.keys.max(1))
                    }
                };
                let op = spec.mix.pick(&mut rng);
                let size = rng.random_range(spec.size.0..=spec.size.1);
                let t0 = Instant::now();
                let r = one(&client, &spec, op, key_no, size, &base).await;
                progress.inc(1);
                if t0 < measure_from {
                    continue;
                }
                let s = stats.entry(op).or_default();
                match r {
                    Ok(bytes) => s.ok(t0.elapsed(), bytes, t0 - measure_from),
                    Err(e) => s.error(e),
                }
            }
            stats
        }));
    }
    let mut all: BTreeMap<OpKind, OpStats> = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok(stats) => {
                for (op, s) in stats {
                    all.entry(op).or_default().merge(&s);
                }
            }
            Err(e) => all
                .entry(OpKind::Put)
                .or_default()
                .error(format!("client task failed: {e}")),
        }
    }
    let window = Instant::now().saturating_duration_since(measure_from);
    (all, window)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_refuse_nonsense() {
        let m: Mix = "get=70,put=25,delete=5".parse().unwrap();
        assert_eq!(m.0.len(), 3);
        assert_eq!(m.0[0], (OpKind::Get, 70));
        let single: Mix = "put".parse().unwrap();
        assert_eq!(single.0, vec![(OpKind::Put, 1)]);
        assert!(
            "copy"
                .parse::<Mix>()
                .unwrap_err()
                .contains("unknown operation")
        );
        assert!("put=0".parse::<Mix>().is_err());
        assert!("put=x".parse::<Mix>().is_err());
    }

    #[test]
    fn bodies_differ_per_operation_and_keep_their_size() {
        let base = Bytes::from(vec![7u8; 10_000]);
        let (a, b) = (body(&base, 9_000, 1), body(&base, 9_000, 2));
        assert_eq!(a.len(), 9_000);
        assert_ne!(a, b);
        assert_ne!(a[4096..4200], b[4096..4200]);
    }

    #[test]
    fn tree_keys_group_under_directories() {
        assert_eq!(KeyNaming::Flat.key("p", 7), "p/7");
        assert_eq!(KeyNaming::Tree.key("list", 12_345), "list/d45/s3/k0000012");
        let mut keys: Vec<String> = (0..2000).map(|n| KeyNaming::Tree.key("l", n)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 2000);
    }
}
