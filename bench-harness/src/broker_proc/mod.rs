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

mod secured;
use secured::make_certificates;
pub use secured::ListenerSecurity;

const START_WAIT_MAX: Duration = Duration::from_secs(30);
pub const STOP_WAIT_MAX: Duration = Duration::from_secs(15);
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

/// Busy CPU ticks of the whole machine from the text of /proc/stat's
/// `cpu` line: user, nice, system, irq, softirq and steal (guest time is
/// already in user), everything but idle and iowait.
pub fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// CPU seconds every process on the machine has used so far (all cores).
pub fn machine_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(parse_machine_busy_ticks(&stat)? as f64 / clock_ticks_per_s())
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

/// A `sluice` child process with its log in a file: started in its own
/// process group, waited for until it accepts connections, stopped with
/// SIGTERM (then SIGKILL) on `stop` or drop.
struct Process {
    child: Option<Child>,
    addr: String,
    pid: u32,
    log_path: PathBuf,
    /// How it ended, once stopped or found dead.
    exit: Option<ExitStatus>,
    /// It did not exit within [`STOP_WAIT_MAX`] of SIGTERM: SIGKILL.
    killed: bool,
}

impl Process {
    fn spawn(bin: &Path, args: &[String], addr: &str, log_path: PathBuf) -> Result<Process> {
        let log =
            File::create(&log_path).map_err(|e| BenchError::io("creating the broker log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| BenchError::io("creating the broker log", e))?;
        let child = Command::new(bin)
            .args(args)
            // Its own process group: Ctrl-C reaches only sluice-bench,
            // which then stops the broker itself and removes its data.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| BenchError::Broker(format!("starting {}: {e}", bin.display())))?;
        Ok(Process {
            pid: child.id(),
            child: Some(child),
            addr: addr.to_string(),
            log_path,
            exit: None,
            killed: false,
        })
    }

    /// Ok(true) once the port accepts, Ok(false) not yet, Err when the
    /// process has exited.
    fn poll_ready(&mut self, what: &str) -> Result<bool> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                self.exit = Some(status);
                return Err(BenchError::Broker(format!(
                    "{what} exited during start-up ({status}); its log ends with:\n{}",
                    self.log_tail()
                )));
            }
        }
        let addr = self
            .addr
            .parse()
            .map_err(|_| BenchError::Broker(self.addr.clone()))?;
        Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let from = text.len().saturating_sub(LOG_TAIL_BYTES);
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// Whether it still runs; records its exit status when it does not.
    fn alive(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.exit = Some(status);
                self.child = None;
                false
            }
            Some(Err(_)) => true,
            None => false,
        }
    }

    fn terminate(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status);
                self.child = None;
                return;
            }
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on our own child's pid, which we have not reaped.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
    }

    /// After `terminate`: waits until `deadline`, then SIGKILL.
    fn reap(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return self.exit;
        };
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status);
                return self.exit;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        self.killed = true;
        self.exit = child.wait().ok();
        self.exit
    }

    /// SIGTERM, then SIGKILL if it has not exited in time.
    fn stop(&mut self) -> Option<ExitStatus> {
        self.terminate();
        self.reap(Instant::now() + STOP_WAIT_MAX)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls every process until each accepts connections.
fn wait_all_ready(processes: &mut [(String, &mut Process)]) -> Result<()> {
    let started = Instant::now();
    let mut ready = vec![false; processes.len()];
    loop {
        for (i, (what, p)) in processes.iter_mut().enumerate() {
            if !ready[i] {
                ready[i] = p.poll_ready(what)?;
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        if started.elapsed() > START_WAIT_MAX {
            let (what, p) = processes
                .iter()
                .zip(&ready)
                .find(|(_, r)| !**r)
                .map(|(p, _)| p)
                .ok_or_else(|| BenchError::Broker("start-up".into()))?;
            return Err(BenchError::Broker(format!(
                "{what} did not accept connections on {} within {} s; its log ends with:\n{}",
                p.addr,
                START_WAIT_MAX.as_secs(),
                p.log_tail()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bench_tempdir(parent: Option<&Path>) -> Result<tempfile::TempDir> {
    match parent {
        Some(p) => tempfile::Builder::new()
            .prefix("sluice-bench-")
            .tempdir_in(p),
        None => tempfile::Builder::new().prefix("sluice-bench-").tempdir(),
    }
    .map_err(|e| BenchError::io("creating the broker's temporary directory", e))
}

/// A single-node Sluice run for the benchmark, stopped on drop.
pub struct EmbeddedBroker {
    process: Process,
    pub addr: String,
    pub pid: u32,
    pub data_dir: PathBuf,
    /// The CA of the broker's certificate, when its listener is TLS.
    pub ca: Option<PathBuf>,
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
        EmbeddedBroker::start_with(bin, profile, cores, parent, &[])
    }

    /// `start` with more `sluice serve` arguments (the ingest listener's).
    pub fn start_with(
        bin: &Path,
        profile: &str,
        cores: usize,
        parent: Option<&Path>,
        extra_args: &[String],
    ) -> Result<EmbeddedBroker> {
        let plain = ListenerSecurity::default();
        EmbeddedBroker::start_secured(bin, profile, cores, parent, &plain, extra_args)
    }

    /// `start_with`, its Kafka listener secured as `security` says: TLS
    /// with a certificate of a CA made for the run (`ca`), SASL with the
    /// login created at first start.
    pub fn start_secured(
        bin: &Path,
        profile: &str,
        cores: usize,
        parent: Option<&Path>,
        security: &ListenerSecurity,
        extra_args: &[String],
    ) -> Result<EmbeddedBroker> {
        let dir = bench_tempdir(parent)?;
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("sluice.log");
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let listener = format!("{}://{addr}", security.protocol());
        let mut args: Vec<String> = [
            "serve",
            "--listeners",
            &listener,
            "--advertised-listeners",
            &listener,
        ]
        .map(String::from)
        .to_vec();
        let mut ca = None;
        if security.tls {
            make_certificates(dir.path())?;
            for (flag, name) in [("--tls-cert", "server.pem"), ("--tls-key", "server.key")] {
                args.extend([
                    flag.to_string(),
                    dir.path().join(name).display().to_string(),
                ]);
            }
            ca = Some(dir.path().join("ca.pem"));
        }
        if let Some(login) = &security.sasl {
            // PLAIN checks SCRAM credentials: the user is made one.
            let stored = if login.mechanism == "PLAIN" {
                "SCRAM-SHA-512"
            } else {
                &login.mechanism
            };
            let file = dir.path().join("scram-bootstrap");
            std::fs::write(
                &file,
                format!("{}:{stored}:{}\n", login.username, login.password),
            )
            .map_err(|e| BenchError::io("writing the SCRAM bootstrap file", e))?;
            args.extend([
                "--scram-bootstrap-file".to_string(),
                file.display().to_string(),
                "--sasl-mechanisms".to_string(),
                login.mechanism.clone(),
            ]);
            if login.mechanism == "PLAIN" && !security.tls {
                args.extend(["--sasl-plain-insecure".to_string(), "true".to_string()]);
            }
        }
        args.push("--data-dir".into());
        args.push(data_dir.display().to_string());
        // The default 127.0.0.1:9644 may belong to a broker already running
        // on this machine; the harness reads nothing from it.
        args.extend(["--metrics-listen".to_string(), String::new()]);
        args.extend(["--profile", profile, "--cores", &cores.to_string()].map(String::from));
        args.extend_from_slice(extra_args);
        let mut process = Process::spawn(bin, &args, &addr, log_path)?;
        wait_all_ready(&mut [("sluice".to_string(), &mut process)])?;
        Ok(EmbeddedBroker {
            addr,
            pid: process.pid,
            process,
            data_dir,
            ca,
            _dir: dir,
        })
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    pub fn log_path(&self) -> &Path {
        &self.process.log_path
    }

    /// SIGTERM, then SIGKILL if it has not exited in time.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.process.stop()
    }
}

/// Where each node of a local cluster listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePorts {
    pub node_id: i32,
    pub kafka: u16,
    pub controller: u16,
    /// Shard i's replication link listens on `link + i`.
    pub link: u16,
}

/// `--controller-voters`: `1@127.0.0.1:C1,2@127.0.0.1:C2,...`.
pub fn controller_voters(nodes: &[NodePorts]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.node_id, n.controller))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `sluice serve` arguments of one node of a local cluster.
pub fn node_args(
    nodes: &[NodePorts],
    me: &NodePorts,
    data_dir: &Path,
    profile: &str,
    cores: usize,
) -> Vec<String> {
    let addr = format!("127.0.0.1:{}", me.kafka);
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--node-id".into(),
        me.node_id.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen".into(),
        addr.clone(),
        "--advertise".into(),
        addr,
        "--controller-listen".into(),
        format!("127.0.0.1:{}", me.controller),
        "--controller-voters".into(),
        controller_voters(nodes),
        "--link-listen".into(),
        format!("127.0.0.1:{}", me.link),
        // Every node would take the default 127.0.0.1:9644.
        "--metrics-listen".into(),
        String::new(),
    ];
    args.extend(["--profile", profile, "--cores", &cores.to_string()].map(String::from));
    args
}

/// Free loopback ports for `nodes` nodes of `cores` shards each: a Kafka
/// and a controller port per node, and `cores` consecutive link ports.
/// Every port is held until all are chosen, so none is handed out twice;
/// they are free again when this returns, for the nodes to bind.
pub fn cluster_ports(nodes: u32, cores: usize) -> Result<Vec<NodePorts>> {
    let io = |e| BenchError::io("finding free ports", e);
    let mut held = Vec::new();
    let mut bind = |port: u16| -> Option<(u16, std::net::TcpListener)> {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
        let p = l.local_addr().ok()?.port();
        Some((p, l))
    };
    let mut out = Vec::new();
    for node_id in 1..=nodes as i32 {
        let (kafka, l) = bind(0).ok_or_else(|| io(std::io::Error::other("bind")))?;
        held.push(l);
        let (controller, l) = bind(0).ok_or_else(|| io(std::io::Error::other("bind")))?;
        held.push(l);
        let mut link = None;
        for _ in 0..64 {
            let (base, first) = bind(0).ok_or_else(|| io(std::io::Error::other("bind")))?;
            let mut run = vec![first];
            for i in 1..cores {
                match u16::try_from(usize::from(base) + i)
                    .ok()
                    .and_then(&mut bind)
                {
                    Some((_, l)) => run.push(l),
                    None => break,
                }
            }
            if run.len() == cores {
                held.extend(run);
                link = Some(base);
                break;
            }
        }
        let link = link.ok_or_else(|| {
            io(std::io::Error::other(format!(
                "no {cores} consecutive free ports"
            )))
        })?;
        out.push(NodePorts {
            node_id,
            kafka,
            controller,
            link,
        });
    }
    drop(held);
    Ok(out)
}

/// One node of an embedded cluster.
pub struct ClusterNode {
    process: Process,
    pub node_id: i32,
    pub addr: String,
    pub pid: u32,
    pub data_dir: PathBuf,
}

impl ClusterNode {
    pub fn log_path(&self) -> &Path {
        &self.process.log_path
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Whether the node still runs (false once it exited, for any reason).
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// Its exit status, once stopped or found dead.
    pub fn exit(&self) -> Option<ExitStatus> {
        self.process.exit
    }

    /// True when it had to be killed: still running [`STOP_WAIT_MAX`]
    /// after SIGTERM.
    pub fn killed(&self) -> bool {
        self.process.killed
    }
}

/// A local cluster of `sluice` nodes on loopback for the benchmark, every
/// node a controller voter, stopped on drop. Nodes are numbered from 1.
pub struct EmbeddedCluster {
    pub nodes: Vec<ClusterNode>,
    /// The parent of the nodes' data directories (the disk test runs here).
    pub dir_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl EmbeddedCluster {
    /// Starts every node, then waits until each accepts connections (a
    /// node listens once a majority of the controller voters is up).
    pub fn start(
        bin: &Path,
        profile: &str,
        nodes: u32,
        cores: usize,
        parent: Option<&Path>,
    ) -> Result<EmbeddedCluster> {
        let dir = bench_tempdir(parent)?;
        let ports = cluster_ports(nodes, cores)?;
        let mut started = Vec::new();
        for me in &ports {
            let data_dir = dir.path().join(format!("n{}", me.node_id));
            let log_path = dir.path().join(format!("n{}.log", me.node_id));
            let addr = format!("127.0.0.1:{}", me.kafka);
            let args = node_args(&ports, me, &data_dir, profile, cores);
            let process = Process::spawn(bin, &args, &addr, log_path)?;
            started.push(ClusterNode {
                node_id: me.node_id,
                addr,
                pid: process.pid,
                data_dir,
                process,
            });
        }
        let mut waiting: Vec<(String, &mut Process)> = started
            .iter_mut()
            .map(|n| (format!("sluice node {}", n.node_id), &mut n.process))
            .collect();
        wait_all_ready(&mut waiting)?;
        Ok(EmbeddedCluster {
            nodes: started,
            dir_path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    /// SIGTERM to every node at once, then each gets until the same
    /// deadline before SIGKILL. Exit statuses by node, in order.
    pub fn stop(&mut self) -> Vec<Option<ExitStatus>> {
        for n in &mut self.nodes {
            n.process.terminate();
        }
        let deadline = Instant::now() + STOP_WAIT_MAX;
        self.nodes
            .iter_mut()
            .map(|n| n.process.reap(deadline))
            .collect()
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The length of a log file now, to tell later lines from earlier ones.
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Warnings and errors in a broker's log: (WARN lines, ERROR lines, the
/// first `keep` of them). The text format puts the level after the
/// timestamp (`2026-11-25T10:00:00.000000Z  WARN target: message`); JSON
/// logs carry `"level":"WARN"`.
pub fn log_problems(text: &str, keep: usize) -> (u64, u64, Vec<String>) {
    let (mut warn, mut error, mut kept) = (0, 0, Vec::new());
    for line in text.lines() {
        let level = line
            .split_whitespace()
            .nth(1)
            .filter(|l| *l == "WARN" || *l == "ERROR")
            .or_else(|| {
                ["WARN", "ERROR"]
                    .into_iter()
                    .find(|l| line.contains(&format!("\"level\":\"{l}\"")))
            });
        match level {
            Some("WARN") => warn += 1,
            Some("ERROR") => error += 1,
            _ => continue,
        }
        if kept.len() < keep {
            kept.push(line.chars().take(400).collect());
        }
    }
    (warn, error, kept)
}

/// The CPUs each thread of `pid` may run on, for threads whose set is
/// narrower than the process's first thread (pinned executors and their
/// io_uring workers), as `name (N threads): cpu LIST`; empty when none is
/// pinned or /proc says nothing.
pub fn pinned_threads(pid: u32) -> Vec<String> {
    let allowed = |task: &Path| -> Option<String> {
        let status = std::fs::read_to_string(task.join("status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))?
            .split_whitespace()
            .nth(1)
            .map(str::to_string)
    };
    let base = PathBuf::from(format!("/proc/{pid}/task"));
    let Some(process_cpus) = allowed(&base.join(pid.to_string())) else {
        return Vec::new();
    };
    let Ok(tasks) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let threads: Vec<(String, String)> = tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| {
            let cpus = allowed(&t.path())?;
            let name = std::fs::read_to_string(t.path().join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            Some((name, cpus))
        })
        .collect();
    group_pinned(&threads, &process_cpus)
}

/// The CPUs online, by number: `0..N`.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a constant of the running system.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

/// Lets every thread of `pid` run on any online CPU, undoing the pinning of
/// its executors (an experiment: several one-shard nodes on one machine
/// each pin their shard to the same first CPU). Threads started later
/// (io_uring workers) keep whatever the kernel gives them. Returns how
/// many threads were changed.
pub fn unpin(pid: u32) -> Result<usize> {
    let cpus = online_cpus();
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in 0..cpus {
        // SAFETY: as above, within the set's CPU_SETSIZE bits.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| BenchError::io(format!("listing the threads of {pid}"), e))?;
    let mut changed = 0;
    for t in tasks.filter_map(|t| t.ok()) {
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: sched_setaffinity reads the set we own; a thread that
        // exited meanwhile only makes it fail.
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc == 0 {
            changed += 1;
        }
    }
    Ok(changed)
}

/// Threads (name, allowed CPUs) not allowed `process_cpus`, grouped by
/// name (io_uring workers `iou-wrk-PID` as one name) and CPU list.
pub fn group_pinned(threads: &[(String, String)], process_cpus: &str) -> Vec<String> {
    let mut groups: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for (name, cpus) in threads {
        if cpus == process_cpus {
            continue;
        }
        let name = if name.starts_with("iou-wrk") {
            "iou-wrk".to_string()
        } else {
            name.clone()
        };
        *groups.entry((name, cpus.clone())).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((name, cpus), n)| {
            if n == 1 {
                format!("{name}: cpu {cpus}")
            } else {
                format!("{name} ({n} threads): cpu {cpus}")
            }
        })
        .collect()
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io("finding a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| BenchError::io("finding a free port", e))
}

#[cfg(test)]
mod tests;
