//! Named scenarios: the steps each runs, and what cluster it needs (a delay between zones,
//! a kept data directory). Every step is measured and reported apart.

use std::path::PathBuf;
use std::time::Duration;

use crate::workload::{KeyNaming, Length, Mix, OpKind, Spec};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Why a scenario cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The name is not one of [`NAMES`].
    #[error("unknown scenario {0:?}: {names}", names = NAMES.join(", "))]
    Unknown(String),
}

/// Every scenario, in the order the README presents them.
pub const NAMES: &[&str] = &[
    "small",
    "large",
    "mixed",
    "delete",
    "list",
    "geo",
    "keepalive",
    "smoke",
];

/// One measured step.
#[derive(Clone, Debug)]
pub enum Step {
    /// A workload; each operation kind is reported apart.
    Load(Spec),
    /// DeleteObjects of keys `prefix/0..keys`, `batch` keys per request, `clients` requests
    /// at once (reported as `delete_objects`, with keys per second).
    DeleteBatches {
        /// Key prefix (flat naming).
        prefix: String,
        /// Keys to delete.
        keys: u64,
        /// Keys per request (S3 allows up to 1000).
        batch: usize,
        /// Concurrent requests.
        clients: usize,
    },
    /// A workload run only once per kept data directory (a marker file remembers it), so
    /// a large key space is written once and listed many times.
    Seed(Spec),
    /// Every page (of 1000) of ListObjectsV2 under `prefix`, `passes` times, one client
    /// (reported as `list` or `list_delim`, with keys per second).
    List {
        /// Prefix listed.
        prefix: String,
        /// Delimiter (`/`): common prefixes count as entries.
        delimiter: Option<String>,
        /// Full listings made.
        passes: u32,
    },
    /// GETs of one object (put first) through a presigned URL over `connections`
    /// keep-alive connections (reported as `keepalive_get`; `wrk` too when installed).
    KeepAlive {
        /// The object's key.
        key: String,
        /// Its size.
        size: usize,
        /// Connections, each reused for every request.
        connections: usize,
        /// Not measured.
        warmup: Duration,
        /// Measured.
        duration: Duration,
    },
}

/// Counts a caller may override (CI runs scenarios small; `list` seeds a million keys).
#[derive(Clone, Copy, Debug, Default)]
pub struct Scale {
    /// Keys or operations of the main step (each scenario's default when `None`).
    pub keys: Option<u64>,
    /// Seconds of timed steps.
    pub seconds: Option<u64>,
}

/// A scenario: its steps and the cluster it needs.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// One-way delay between zones (zero: none).
    pub one_way_delay: Duration,
    /// A data directory kept across runs (`list`), named under the results root.
    pub kept_dir: Option<PathBuf>,
}

/// One workload step: one operation, `ops` times, on keys `0..ops`.
fn phase(prefix: &str, op: OpKind, size: usize, clients: usize, ops: u64) -> Spec {
    Spec {
        bucket: String::new(),
        prefix: prefix.into(),
        naming: KeyNaming::Flat,
        mix: Mix(vec![(op, 1)]),
        size: (size, size),
        clients,
        length: Length::Ops(ops),
        keys: ops,
        warmup: Duration::ZERO,
    }
}

fn list(prefix: &str, delimiter: Option<&str>, passes: u32) -> Step {
    Step::List {
        prefix: prefix.into(),
        delimiter: delimiter.map(str::to_string),
        passes,
    }
}

impl Scenario {
    /// Scenario `name` at `scale` (its buckets left for the runner to fill in).
    ///
    /// # Errors
    /// An unknown name (the message lists the known ones).
    pub fn new(name: &str, scale: Scale) -> Result<Self, ScenarioError> {
        let run = format!("{name}-{}", std::process::id());
        let load = Step::Load;
        let mut one_way_delay = Duration::ZERO;
        let mut kept_dir = None;
        let steps = match name {
            // 4 KiB objects, 32 clients: PUT 3000, then GET them.
            "small" => {
                let n = scale.keys.unwrap_or(3000);
                vec![
                    load(phase(&run, OpKind::Put, 4 * KIB, 32, n)),
                    load(phase(&run, OpKind::Get, 4 * KIB, 32, n)),
                ]
            }
            // 64 MiB objects, 4 clients: PUT 8, then GET them.
            "large" => {
                let n = scale.keys.unwrap_or(8);
                vec![
                    load(phase(&run, OpKind::Put, 64 * MIB, 4, n)),
                    load(phase(&run, OpKind::Get, 64 * MIB, 4, n)),
                ]
            }
            // 70% GET / 25% PUT / 5% DELETE of 16 KiB to 4 MiB for 30 s, on 200 keys put first.
            "mixed" => {
                let mut fill = phase(&run, OpKind::Put, 16 * KIB, 8, scale.keys.unwrap_or(200));
                fill.size = (16 * KIB, 4 * MIB);
                let mut mix = fill.clone();
                mix.mix = Mix(vec![
                    (OpKind::Get, 70),
                    (OpKind::Put, 25),
                    (OpKind::Delete, 5),
                ]);
                mix.length = Length::Time(Duration::from_secs(scale.seconds.unwrap_or(30)));
                mix.warmup = Duration::from_secs(2);
                mix.clients = 16;
                vec![load(fill), load(mix)]
            }
            // PUT 1000 keys, DeleteObjects of all of them in one request; PUT 1000 more,
            // DeleteObjects in requests of 100, 4 at once; a listing shows none is left.
            "delete" => {
                let n = scale.keys.unwrap_or(1000);
                let (a, b) = (format!("{run}/a"), format!("{run}/b"));
                let batch = usize::try_from(n.min(1000)).unwrap_or(1000);
                vec![
                    load(phase(&a, OpKind::Put, KIB, 32, n)),
                    Step::DeleteBatches {
                        prefix: a.clone(),
                        keys: n,
                        batch,
                        clients: 1,
                    },
                    load(phase(&b, OpKind::Put, KIB, 32, n)),
                    Step::DeleteBatches {
                        prefix: b,
                        keys: n,
                        batch: (batch / 10).max(1),
                        clients: 4,
                    },
                    list(&format!("{run}/"), None, 1),
                ]
            }
            // A kept key space of 100k keys (`--keys 1000000` for a million) under
            // `list/dNN/sN/`, written once; then full listings and prefix / delimiter ones.
            "list" => {
                let n = scale.keys.unwrap_or(100_000);
                kept_dir = Some(PathBuf::from(format!("list-data-{n}")));
                let mut seed = phase("list", OpKind::Put, 100, 32, n);
                seed.naming = KeyNaming::Tree;
                vec![
                    Step::Seed(seed),
                    list("list/", None, 1),
                    list("list/d07/", None, 3),
                    list("list/", Some("/"), 5),
                    list("list/d07/", Some("/"), 5),
                ]
            }
            // Zones 50 ms apart (RTT), one sequential client on node 1: 4 KiB PUT, then GET.
            "geo" => {
                one_way_delay = Duration::from_millis(25);
                let n = scale.keys.unwrap_or(300);
                vec![
                    load(phase(&run, OpKind::Put, 4 * KIB, 1, n)),
                    load(phase(&run, OpKind::Get, 4 * KIB, 1, n)),
                ]
            }
            // One 4 KiB object GET over 32 keep-alive connections for 15 s.
            "keepalive" => vec![
                load(phase(&run, OpKind::Put, 4 * KIB, 1, 1)),
                Step::KeepAlive {
                    key: format!("{run}/0"),
                    size: 4 * KIB,
                    connections: 32,
                    warmup: Duration::from_secs(2),
                    duration: Duration::from_secs(scale.seconds.unwrap_or(15)),
                },
            ],
            // A short run that proves the harness works (CI): no figure is read from it.
            "smoke" => vec![
                load(phase(&run, OpKind::Put, 4 * KIB, 8, 200)),
                load(phase(&run, OpKind::Get, 4 * KIB, 8, 200)),
                load(phase(&run, OpKind::Put, 3 * MIB, 2, 4)),
                load(phase(&run, OpKind::Head, 0, 4, 100)),
                load(phase(&run, OpKind::List, 0, 1, 2)),
                load(phase(&run, OpKind::Delete, 0, 4, 200)),
            ],
            _ => return Err(ScenarioError::Unknown(name.into())),
        };
        Ok(Self {
            name: name.into(),
            steps,
            one_way_delay,
            kept_dir,
        })
    }
}

/// Where a run's results go when `--out` is not given.
#[must_use]
pub fn default_out(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from("target/s3bench").join(format!("{name}-{secs}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_steps_and_unknown_ones_are_refused() {
        for name in NAMES {
            assert!(
                !Scenario::new(name, Scale::default())
                    .unwrap()
                    .steps
                    .is_empty(),
                "{name}"
            );
        }
        let e = Scenario::new("huge", Scale::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("small, large") && e.contains("geo"), "{e}");
    }

    #[test]
    fn geo_delays_list_keeps_its_data_and_scale_shrinks_counts() {
        let geo = Scenario::new("geo", Scale::default()).unwrap();
        assert_eq!(geo.one_way_delay, Duration::from_millis(25));
        let list = Scenario::new(
            "list",
            Scale {
                keys: Some(500),
                seconds: None,
            },
        )
        .unwrap();
        assert_eq!(list.kept_dir, Some(PathBuf::from("list-data-500")));
        let del = Scenario::new(
            "delete",
            Scale {
                keys: Some(50),
                seconds: None,
            },
        )
        .unwrap();
        assert!(matches!(
            del.steps[1],
            Step::DeleteBatches {
                keys: 50,
                batch: 50,
                ..
            }
        ));
        assert!(matches!(
            del.steps[3],
            Step::DeleteBatches {
                batch: 5,
                clients: 4,
                ..
            }
        ));
    }
}
