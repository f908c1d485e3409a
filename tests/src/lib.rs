//! Helpers for the end-to-end tests: start the real `sluice` binary on a
//! free port with a temporary data directory, stop it with SIGTERM (and
//! check its exit status), restart it on the same data, and kill it by PID
//! if a test fails half-way.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod certs;

/// How long a broker may take to start listening or to stop.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The `sluice` binary of this workspace's target directory, brought up
/// to date once per test process (a dev-dependency builds only the broker
/// library, and a stale binary would test old code).
pub fn sluice_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf();
    let binary = profile_dir.join("sluice");
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "broker", "--bin", "sluice"]);
        // What cargo tells a test about its own package: a build script
        // that watches it (ring's watches CARGO_MANIFEST_DIR) would rebuild
        // the broker for every test package, and again for a plain build.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let about_the_test = key == "CARGO_MANIFEST_DIR"
                || key == "CARGO_MANIFEST_PATH"
                || key == "CARGO_CRATE_NAME"
                || key == "CARGO_PRIMARY_PACKAGE"
                || key == "CARGO_TARGET_TMPDIR"
                || key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_");
            if about_the_test {
                build.env_remove(key.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("running cargo build for the sluice binary");
        assert!(status.success(), "building sluice failed");
    });
    binary
}

/// A port nothing listens on now and that this test process has not
/// handed out before: tests run in parallel threads, and the kernel may
/// give a port that one broker has not bound yet to the next caller.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `sluice serve` process.
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra_args: Vec<String>,
    log_path: PathBuf,
}

impl Broker {
    /// Starts a broker on a free port with a fresh data directory.
    pub fn start(extra_args: &[&str]) -> Broker {
        Broker::start_with(|_| extra_args.iter().map(|s| s.to_string()).collect())
    }

    /// Like `start`, with arguments that depend on the broker's PLAINTEXT
    /// address (`--listeners` naming it beside others, say).
    pub fn start_with(extra_args: impl FnOnce(SocketAddr) -> Vec<String>) -> Broker {
        let tmp = tempfile::Builder::new()
            .prefix("sluice-e2e-")
            .tempdir_in(std::env::temp_dir())
            .expect("temp dir");
        let data_dir = tmp.path().join("data");
        let log_path = tmp.path().join("broker.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let mut b = Broker {
            child: None,
            addr,
            data_dir,
            _tmp: Some(tmp),
            extra_args: extra_args(addr),
            log_path,
        };
        b.spawn();
        b
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the broker wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("broker log file");
        let child = Command::new(sluice_binary())
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            // Tests run brokers side by side: each takes a free port for
            // its metrics endpoint unless the test names one.
            .args(
                (!self.extra_args.iter().any(|a| a == "--metrics-listen"))
                    .then_some(["--metrics-listen", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sluice");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sluice exited at start with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not listen within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker is running");
        // SAFETY: kill with a PID we spawned and have not reaped yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for sluice") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sluice did not stop within {STOP_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (a crash) and starts it again on the
    /// same port and data directory.
    pub fn crash_and_restart(&mut self) {
        let mut child = self.child.take().expect("broker is running");
        child.kill().expect("SIGKILL sluice");
        child.wait().expect("reap sluice");
        // The dead process's listening sockets go away with its io_uring
        // instances, asynchronously: wait until the port is free, or the
        // readiness check below would connect to a dying listener.
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpListener::bind(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {} never released",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
    }

    /// Stops with SIGTERM (asserting exit status 0) and starts again on the
    /// same port and data directory.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "sluice exited with {status}:\n{}",
            self.log()
        );
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
