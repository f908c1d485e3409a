//! The machine's own limits, measured in the same run as the benchmark:
//! raw O_DIRECT sequential write bandwidth and fdatasync latency on the
//! data directory's file system, and single-stream loopback TCP bandwidth.
//! Shared machines drift; ratios to these figures drift much less.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::DmaFile;
use glommio::{LocalExecutorBuilder, Placement};
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::stats::{latency_histogram, record_us, MB};

/// Every glommio executor of the harness registers this much memory.
pub const IO_MEMORY_BYTES: usize = 2 << 20;
const WRITE_CHUNK_BYTES: usize = 1 << 20;
const WRITES_IN_FLIGHT: usize = 4;
const SYNC_BLOCK_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LimitsConfig {
    /// Bytes the sequential write test writes.
    pub disk_bytes: u64,
    /// fdatasync samples (each after a 4 KiB write).
    pub fdatasync_samples: u32,
    /// Time bound of each test.
    pub time_max_s: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            disk_bytes: 256 << 20,
            fdatasync_samples: 200,
            time_max_s: 5.0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Limits {
    pub data_dir: PathBuf,
    pub disk_bytes_written: u64,
    pub disk_write_mb_per_s: f64,
    pub fdatasync_samples: u64,
    pub fdatasync_us_p50: u64,
    pub fdatasync_us_p99: u64,
    pub fdatasync_us_max: u64,
    pub loopback_bytes: u64,
    pub loopback_mb_per_s: f64,
    /// The lower of the disk and loopback bandwidths.
    pub lower_limit_mb_per_s: f64,
}

/// Runs both measurements; the disk one on its own glommio executor.
pub fn measure(dir: &Path, config: LimitsConfig) -> Result<Limits> {
    let dir_owned = dir.to_path_buf();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("sluice-bench-limits")
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || async move { measure_disk(&dir_owned, config).await })
        .map_err(|e| BenchError::Runtime(e.to_string()))?;
    let mut limits = handle
        .join()
        .map_err(|e| BenchError::Runtime(e.to_string()))??;
    let (bytes, mb_per_s) = measure_loopback(Duration::from_secs_f64(config.time_max_s.min(1.0)))?;
    limits.loopback_bytes = bytes;
    limits.loopback_mb_per_s = mb_per_s;
    limits.lower_limit_mb_per_s = limits.disk_write_mb_per_s.min(mb_per_s);
    Ok(limits)
}

async fn measure_disk(dir: &Path, config: LimitsConfig) -> Result<Limits> {
    let io = |what: &str, e: glommio::GlommioError<()>| {
        BenchError::io(format!("{what} in {}", dir.display()), e.into())
    };
    // glommio settles polled-read support on the first direct-I/O file it
    // opens on a device; the probe makes that file a non-empty one.
    storage::probe_direct_io(dir)
        .await
        .map_err(|e| BenchError::Io {
            context: format!("direct I/O in {}", dir.display()),
            source: std::io::Error::other(e.to_string()),
        })?;
    let path = dir.join(format!(".sluice-bench-limits-{}", std::process::id()));
    let file = Rc::new(DmaFile::create(&path).await.map_err(|e| io("create", e))?);
    let result = write_and_sync(&file, config).await;
    let _ = file.remove().await;
    let _ = Rc::try_unwrap(file).map(|f| f.close());
    let mut limits = result.map_err(|e| io("write", e))?;
    limits.data_dir = dir.to_path_buf();
    Ok(limits)
}

async fn write_and_sync(file: &Rc<DmaFile>, config: LimitsConfig) -> glommio::Result<Limits, ()> {
    let time_max = Duration::from_secs_f64(config.time_max_s);
    let mut limits = Limits::default();
    let started = Instant::now();
    let mut pos = 0u64;
    let mut pending = VecDeque::new();
    while pos < config.disk_bytes && started.elapsed() < time_max {
        let mut buf = file.alloc_dma_buffer(WRITE_CHUNK_BYTES);
        buf.as_bytes_mut().fill(0x5a);
        let f = file.clone();
        let at = pos;
        pending.push_back(glommio::spawn_local(
            async move { f.write_at(buf, at).await },
        ));
        pos += WRITE_CHUNK_BYTES as u64;
        if pending.len() >= WRITES_IN_FLIGHT {
            if let Some(t) = pending.pop_front() {
                t.await?;
            }
        }
    }
    while let Some(t) = pending.pop_front() {
        t.await?;
    }
    file.fdatasync().await?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    limits.disk_bytes_written = pos;
    limits.disk_write_mb_per_s = pos as f64 / MB / seconds;

    let mut h = latency_histogram();
    let started = Instant::now();
    for i in 0..config.fdatasync_samples {
        if started.elapsed() >= time_max {
            break;
        }
        let mut buf = file.alloc_dma_buffer(SYNC_BLOCK_BYTES);
        buf.as_bytes_mut().fill(i as u8);
        file.write_at(buf, pos).await?;
        pos += SYNC_BLOCK_BYTES as u64;
        let t = Instant::now();
        file.fdatasync().await?;
        record_us(&mut h, t.elapsed(), 1);
    }
    limits.fdatasync_samples = h.len();
    if !h.is_empty() {
        limits.fdatasync_us_p50 = h.value_at_quantile(0.5);
        limits.fdatasync_us_p99 = h.value_at_quantile(0.99);
        limits.fdatasync_us_max = h.max();
    }
    Ok(limits)
}

/// One TCP stream over 127.0.0.1 for about `duration`, plain threads.
pub fn measure_loopback(duration: Duration) -> Result<(u64, f64)> {
    let io = |what: &str, e: std::io::Error| BenchError::io(format!("loopback test: {what}"), e);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
    let addr = listener.local_addr().map_err(|e| io("local address", e))?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = TcpStream::connect(addr)?;
        let chunk = vec![0xa5u8; 256 << 10];
        let started = Instant::now();
        while started.elapsed() < duration {
            s.write_all(&chunk)?;
        }
        Ok(())
    });
    let (mut conn, _) = listener.accept().map_err(|e| io("accept", e))?;
    conn.set_read_timeout(Some(duration + Duration::from_secs(5)))
        .map_err(|e| io("timeout", e))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut bytes = 0u64;
    let started = Instant::now();
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) => return Err(io("read", e)),
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    match sender.join() {
        Ok(r) => r.map_err(|e| io("write", e))?,
        Err(_) => return Err(BenchError::Runtime("the loopback sender panicked".into())),
    }
    Ok((bytes, bytes as f64 / MB / seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_measured_on_a_temp_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = measure(
            dir.path(),
            LimitsConfig {
                disk_bytes: 8 << 20,
                fdatasync_samples: 5,
                time_max_s: 0.2,
            },
        )
        .expect("limits");
        assert!(limits.disk_bytes_written > 0);
        assert!(limits.disk_write_mb_per_s > 0.0);
        assert!(limits.fdatasync_samples >= 1);
        assert!(limits.loopback_bytes > 0);
        assert!(limits.lower_limit_mb_per_s <= limits.loopback_mb_per_s);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".sluice-bench"))
            .collect();
        assert!(left.is_empty(), "test file left behind");
    }
}
