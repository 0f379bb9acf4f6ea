//! Server processes the harness started (ours or a peer's): their logs go to files, they
//! are stopped with SIGTERM (then killed after a grace period) when dropped, and a start-up
//! step can ask whether any of them died.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a process could not be started or a port found.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// Spawning failed (binary missing, not executable) or its log file could not be made.
    #[error("starting {name}: {source}")]
    Spawn {
        /// Which process.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A process exited while it should be serving.
    #[error("{name} exited ({status}); see {log}")]
    Exited {
        /// Which process.
        name: String,
        /// How it ended.
        status: String,
        /// Its log file.
        log: String,
    },
    /// No free loopback port could be found.
    #[error("no free port on 127.0.0.1: {0}")]
    NoPort(std::io::Error),
}

/// One server process.
#[derive(Debug)]
struct Proc {
    name: String,
    log: String,
    child: Child,
}

/// The processes of one cluster, stopped together on drop.
#[derive(Debug, Default)]
pub struct Nodes {
    procs: Vec<Proc>,
}

/// How long a process may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

impl Nodes {
    /// Starts `cmd` as `name`, its stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// The log cannot be created or the process not started.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> Result<u32, NodesError> {
        let spawn_err = |source| NodesError::Spawn {
            name: name.to_string(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_err)?;
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            log: log.display().to_string(),
            child,
        });
        Ok(pid)
    }

    /// Process ids, in start order (for memory and CPU readings).
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// Fails when any process has exited.
    ///
    /// # Errors
    /// The first process found gone, with its exit status and log file.
    pub fn check_running(&mut self) -> Result<(), NodesError> {
        for p in &mut self.procs {
            match p.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Err(NodesError::Exited {
                        name: p.name.clone(),
                        status: status.to_string(),
                        log: p.log.clone(),
                    });
                }
                Err(e) => {
                    return Err(NodesError::Exited {
                        name: p.name.clone(),
                        status: e.to_string(),
                        log: p.log.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for p in &self.procs {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for p in &mut self.procs {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// `preferred` if it is free on loopback for both TCP and UDP (QUIC), else any such port
/// not in `taken`.
///
/// # Errors
/// No free port after many tries.
pub fn free_port(preferred: Option<u16>, taken: &[u16]) -> Result<u16, NodesError> {
    let ok = |p: u16| {
        p != 0
            && !taken.contains(&p)
            && TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok()
            && UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok()
    };
    if let Some(p) = preferred
        && ok(p)
    {
        return Ok(p);
    }
    for _ in 0..200 {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(NodesError::NoPort)?
            .port();
        if ok(p) {
            return Ok(p);
        }
    }
    Err(NodesError::NoPort(std::io::Error::other(
        "every port tried was taken",
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dead_processes_are_reported_and_live_ones_stopped_on_drop() {
        let dir = std::env::temp_dir().join(format!("s3bench-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Nodes::default();
        let mut sleep = Command::new("sleep");
        sleep.arg("60");
        let pid = nodes.spawn("sleeper", sleep, &dir.join("a.log")).unwrap();
        assert!(nodes.check_running().is_ok());
        let mut fail = Command::new("sh");
        fail.args(["-c", "echo bye; exit 3"]);
        nodes.spawn("quitter", fail, &dir.join("b.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            if let Err(e) = nodes.check_running() {
                break e;
            }
            assert!(Instant::now() < deadline, "quitter never reported");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(err.to_string().contains("quitter"), "{err}");
        drop(nodes);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn free_ports_avoid_taken_ones() {
        let a = free_port(None, &[]).unwrap();
        let b = free_port(Some(a), &[a]).unwrap();
        assert_ne!(a, b);
    }
}
