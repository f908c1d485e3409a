//! The broker as a local child process: finding and starting the `sluice`
//! binary on a free port with a temporary data directory, waiting until it
//! accepts connections, stopping it with SIGTERM, and reading its CPU time
//! and memory from /proc (which works for any local broker, by pid).

use std::fs::File;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{BenchError, Result};

const START_WAIT_MAX: Duration = Duration::from_secs(30);
const STOP_WAIT_MAX: Duration = Duration::from_secs(15);
const LOG_TAIL_BYTES: usize = 2000;

/// CPU and memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU seconds since the process started.
    pub cpu_s: f64,
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM).
    pub rss_peak_kib: u64,
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime in ticks from the text of /proc/PID/stat. The command
/// name may hold spaces and parentheses, so fields count from the last ')'.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm*:` value in KiB from the text of /proc/PID/status.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_s: parse_stat_ticks(&stat)? as f64 / clock_ticks_per_s(),
        rss_kib: parse_status_kib(&status, "VmRSS:").unwrap_or(0),
        rss_peak_kib: parse_status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS, so that a
/// later peak is the load's, not start-up's or an earlier phase's. Linux
/// 4.0 and later; false when refused (another user's process, an old
/// kernel), and then the peak still counts from the process's start.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU seconds this process (the harness) has used so far.
pub fn self_cpu_s() -> f64 {
    sample(std::process::id()).map_or(0.0, |s| s.cpu_s)
}

/// The `sluice` beside this executable, or the one given.
pub fn find_sluice(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(BenchError::Broker(format!(
            "--sluice-bin {}: no such file",
            p.display()
        )));
    }
    let exe = std::env::current_exe().map_err(|e| BenchError::io("finding this executable", e))?;
    let beside = exe
        .parent()
        .map(|d| d.join("sluice"))
        .unwrap_or_else(|| PathBuf::from("sluice"));
    if beside.is_file() {
        return Ok(beside);
    }
    Err(BenchError::Broker(format!(
        "no sluice binary at {} (build it with `cargo build -p broker`, pass --sluice-bin PATH, or run against a broker with --bootstrap HOST:PORT)",
        beside.display()
    )))
}

/// A single-node Sluice run for the benchmark, stopped on drop.
pub struct EmbeddedBroker {
    child: Option<Child>,
    pub addr: String,
    pub pid: u32,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl EmbeddedBroker {
    /// Starts `sluice serve` and waits until its port accepts connections.
    /// `parent` holds the temporary data directory (default: the system
    /// temp dir), so the disk limits are measured where the broker writes.
    pub fn start(
        bin: &Path,
        profile: &str,
        cores: usize,
        parent: Option<&Path>,
    ) -> Result<EmbeddedBroker> {
        let dir = match parent {
            Some(p) => tempfile::Builder::new()
                .prefix("sluice-bench-")
                .tempdir_in(p),
            None => tempfile::Builder::new().prefix("sluice-bench-").tempdir(),
        }
        .map_err(|e| BenchError::io("creating the broker's temporary directory", e))?;
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("sluice.log");
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let log =
            File::create(&log_path).map_err(|e| BenchError::io("creating the broker log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| BenchError::io("creating the broker log", e))?;
        let child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                &addr,
                "--advertise",
                &addr,
                "--data-dir",
            ])
            .arg(&data_dir)
            .args(["--profile", profile, "--cores", &cores.to_string()])
            // Its own process group: Ctrl-C reaches only sluice-bench,
            // which then stops the broker itself and removes its data.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| BenchError::Broker(format!("starting {}: {e}", bin.display())))?;
        let pid = child.id();
        let mut broker = EmbeddedBroker {
            child: Some(child),
            addr,
            pid,
            data_dir,
            log_path,
            _dir: dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(BenchError::Broker(format!(
                        "sluice exited during start-up ({status}); its log ends with:\n{}",
                        self.log_tail()
                    )));
                }
            }
            if TcpStream::connect_timeout(
                &self
                    .addr
                    .parse()
                    .map_err(|_| BenchError::Broker(self.addr.clone()))?,
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > START_WAIT_MAX {
                return Err(BenchError::Broker(format!(
                    "sluice did not accept connections on {} within {} s; its log ends with:\n{}",
                    self.addr,
                    START_WAIT_MAX.as_secs(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let from = text.len().saturating_sub(LOG_TAIL_BYTES);
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// SIGTERM, then SIGKILL if it has not exited in time.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let started = Instant::now();
        while started.elapsed() < STOP_WAIT_MAX {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io("finding a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| BenchError::io("finding a free port", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let stat = "1234 (we (ird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 200 300";
        assert_eq!(parse_stat_ticks(stat), Some(300));
    }

    #[test]
    fn own_process_is_sampled() {
        let s = sample(std::process::id()).expect("own /proc");
        assert!(s.rss_kib > 0 && s.rss_peak_kib >= s.rss_kib);
        assert_eq!(
            parse_status_kib("Name:\tx\nVmHWM:\t  5120 kB\n", "VmHWM:"),
            Some(5120)
        );
    }

    #[test]
    fn the_peak_can_be_reset_to_the_current_size() {
        let pid = std::process::id();
        let grown: Vec<u8> = vec![1; 32 << 20];
        assert!(grown.iter().all(|&b| b == 1));
        drop(grown);
        let before = sample(pid).expect("own /proc");
        if !reset_peak(pid) {
            return; // an old kernel or a restricted /proc: nothing to check
        }
        let after = sample(pid).expect("own /proc");
        assert!(after.rss_peak_kib <= before.rss_peak_kib);
        assert!(after.rss_peak_kib >= after.rss_kib);
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = find_sluice(Some(Path::new("/nonexistent/sluice"))).expect_err("missing");
        assert!(err.to_string().contains("--sluice-bin"));
    }
}
