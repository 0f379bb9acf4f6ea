//! Resources of the server processes the runner started: peak resident memory of the
//! busiest one and CPU seconds of all, read from `/proc`.

use serde::Serialize;

/// What the servers used.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    /// The highest resident set of any one server (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
    /// The highest current resident set of any one server (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// User + system CPU seconds of every server together.
    pub cpu_seconds: f64,
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// Reads the usage of `pids` now (processes gone are skipped).
#[must_use]
pub fn sample(pids: &[u32]) -> Usage {
    let mut u = Usage::default();
    for &pid in pids {
        // The current size first: the peak, read after it, is never below it.
        let rss = status_kib(pid, "VmRSS:").unwrap_or(0) * 1024;
        let peak = status_kib(pid, "VmHWM:").unwrap_or(0) * 1024;
        u.rss_bytes = u.rss_bytes.max(rss);
        u.peak_rss_bytes = u.peak_rss_bytes.max(peak);
        u.cpu_seconds += cpu_seconds(pid).unwrap_or(0.0);
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let u = sample(&[std::process::id()]);
        assert!(u.peak_rss_bytes > 0 && u.rss_bytes > 0);
        assert!(u.peak_rss_bytes >= u.rss_bytes);
    }
}
