//! The machine's own limits, measured in the same run, so that figures read as a fraction
//! of what the disk and the loopback can do at all.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the machine can do.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// Sequential write of 1 MiB pieces with an fsync every 8 MiB, MB/s.
    pub fsync_write_mb_per_sec: f64,
    /// One TCP stream over loopback, MB/s.
    pub loopback_mb_per_sec: f64,
}

const MB: f64 = 1e6;

fn fsync_write(dir: &Path, total: usize) -> std::io::Result<f64> {
    let path = dir.join("s3bench-fsync-probe");
    let piece = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    {
        let mut f = std::fs::File::create(&path)?;
        for i in 0..total / piece.len() {
            f.write_all(&piece)?;
            if i % 8 == 7 {
                f.sync_data()?;
            }
        }
        f.sync_all()?;
    }
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(total as f64 / MB / secs)
}

async fn loopback(total: usize) -> std::io::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        while got < total {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok::<usize, std::io::Error>(got)
    });
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let piece = vec![0xa5u8; 1 << 20];
    for _ in 0..total / piece.len() {
        s.write_all(&piece).await?;
    }
    s.shutdown().await?;
    let got = reader.await.map_err(std::io::Error::other)??;
    Ok(got as f64 / MB / start.elapsed().as_secs_f64())
}

/// Measures the disk under `dir` (256 MiB written) and the loopback (1 GiB sent).
///
/// # Errors
/// I/O errors of either probe.
pub async fn measure(dir: &Path) -> std::io::Result<Limits> {
    let d = dir.to_path_buf();
    let fsync_write_mb_per_sec = tokio::task::spawn_blocking(move || fsync_write(&d, 256 << 20))
        .await
        .map_err(std::io::Error::other)??;
    let loopback_mb_per_sec = loopback(1 << 30).await?;
    Ok(Limits {
        fsync_write_mb_per_sec,
        loopback_mb_per_sec,
    })
}
