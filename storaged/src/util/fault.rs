//! Test-only fault switches, so the consistency checker (`e2e/checker`) can be shown to catch
//! a loss: a run with a fault on must report `lost > 0`, or the checker proves nothing; and
//! so that a test can reach a failure path the daemon otherwise avoids.
//!
//! A fault is chosen by the environment variable `STORAGED_TEST_FAULT` (never a config key, so
//! no deployed config can turn one on by accident); the daemon logs a warning at start when
//! one is set. Unknown names are refused at start.

use std::sync::OnceLock;

/// The environment variable that names the fault.
pub const ENV: &str = "STORAGED_TEST_FAULT";

/// The faults a test can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// PutObject answers 200 for every other object without committing its metadata: the
    /// acknowledged write is lost (a commit-ordering bug of the kind the checker must see).
    LoseAckedPuts,
    /// The metadata store keeps no free-space reserve, so that a full disk reaches redb
    /// itself: the e2e test of the daemon stopping cleanly when its store fails a write.
    NoMetadataReserve,
}

impl Fault {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "lose_acked_puts" => Some(Self::LoseAckedPuts),
            "no_metadata_reserve" => Some(Self::NoMetadataReserve),
            _ => None,
        }
    }
}

static ACTIVE: OnceLock<Option<Fault>> = OnceLock::new();

/// Reads [`ENV`] once; an unknown fault name is an error naming the variable.
pub fn init() -> Result<Option<Fault>, String> {
    let parsed = match std::env::var(ENV) {
        Ok(name) if !name.is_empty() => Some(Fault::parse(&name).ok_or_else(|| {
            format!("{ENV}={name:?} names no fault (known: lose_acked_puts, no_metadata_reserve)")
        })?),
        _ => None,
    };
    Ok(*ACTIVE.get_or_init(|| parsed))
}

/// Whether `fault` is switched on in this process.
pub fn active(fault: Fault) -> bool {
    ACTIVE.get().copied().flatten() == Some(fault)
}
