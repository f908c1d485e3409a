//! Checks made before any shard starts, so that a machine or directory
//! that cannot run the broker gives a message naming the cause and the fix
//! instead of a panic in a shard thread.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::config::{Config, ConfigError};

/// glommio's reactor refuses to start below this RLIMIT_MEMLOCK.
const MEMLOCK_BYTES_MIN: u64 = 512 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The message is the whole story: no error source, so that printing
    /// the chain does not repeat it.
    #[error("configuration: {0}")]
    Config(ConfigError),
    #[error("data directory {dir}: {reason}. Fix: {fix}")]
    DataDir {
        dir: String,
        reason: String,
        fix: &'static str,
    },
    #[error("RLIMIT_MEMLOCK is {limit} bytes; io_uring needs at least {needed}. Fix: raise it with `ulimit -l unlimited` (shell) or `LimitMEMLOCK=infinity` (systemd)")]
    MemLock { limit: u64, needed: u64 },
    #[error("io_uring is not usable here: {reason}. Fix: run on Linux 5.8 or newer with io_uring enabled (sysctl kernel.io_uring_disabled=0; containers may need a seccomp profile allowing io_uring_setup)")]
    IoUring { reason: String },
    #[error("metadata: {0}. Fix: restore {1} from a backup or move it away to start empty")]
    Metadata(crate::metadata::MetadataError, String),
    #[error("binding {addr} failed: {reason}. Fix: stop whatever listens there or choose another --listen (or --listeners)")]
    Bind { addr: String, reason: String },
    #[error("binding the metrics endpoint {addr} failed: {reason}. Fix: stop whatever listens there, choose another --metrics-listen, or switch it off with --metrics-listen ''")]
    MetricsBind { addr: String, reason: String },
    #[error("TLS: {0}. Fix: give --tls-cert and --tls-key as readable PEM files whose key matches the certificate (and --tls-client-ca as PEM CA certificates)")]
    Tls(String),
    #[error("OAUTHBEARER: {0}. Fix: give --oauth-jwks a readable JWKS file or a reachable https:// URL serving one")]
    OAuth(String),
    #[error("shard {shard} failed: {reason}")]
    Shard { shard: usize, reason: String },
    #[error("joining the cluster failed: {reason}. Fix: check --node-id, --controller-listen and --controller-voters (the same list on every node)")]
    Cluster { reason: String },
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

/// Held for the life of the process: the data directory's lock.
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Runs every check and takes the data directory's lock.
pub fn check(config: &Config) -> Result<DataDirLock, StartError> {
    config.validate()?;
    check_data_dir(&config.data_dir)?;
    let lock = lock_data_dir(&config.data_dir)?;
    check_port(config)?;
    check_memlock(config)?;
    check_io_uring()?;
    raise_open_files();
    Ok(lock)
}

/// Raises the soft limit on open descriptors to the hard one: a client
/// connection takes two (one read, one written; see `connection`), and
/// shells often start with a soft limit of 1,024.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur >= limit.rlim_max
    {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::warn!(
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            "could not raise the open-file limit to its hard limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Two brokers on one data directory would corrupt each other's logs.
fn lock_data_dir(dir: &Path) -> Result<DataDirLock, StartError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StartError::DataDir {
            dir: dir.display().to_string(),
            reason: format!("cannot open {}: {e}", path.display()),
            fix: "give the broker's user write access or choose another --data-dir",
        })?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StartError::DataDir {
            dir: dir.display().to_string(),
            reason: "another sluice process is using it".into(),
            fix: "stop the other broker or choose another --data-dir",
        });
    }
    Ok(DataDirLock { _file: file })
}

/// How long start-up waits for the port to be released. A broker that was
/// killed leaves its listening sockets to io_uring's asynchronous teardown
/// for a moment after the process is gone.
pub(crate) const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Shards bind with SO_REUSEPORT, which would silently share the port with
/// another broker of the same user (or with the dying sockets of a killed
/// one); a plain bind first makes that an error, after a bounded wait.
fn check_port(config: &Config) -> Result<(), StartError> {
    for listener in config.kafka_listeners()? {
        check_free(listener.bind)?;
    }
    Ok(())
}

fn check_free(addr: std::net::SocketAddr) -> Result<(), StartError> {
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(StartError::Bind {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

fn check_data_dir(dir: &Path) -> Result<(), StartError> {
    let shown = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|e| StartError::DataDir {
        dir: shown.clone(),
        reason: format!("cannot create it: {e}"),
        fix: "choose a --data-dir the broker's user may create and write",
    })?;
    let probe = dir.join(".sluice-probe");
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let result = match opened {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(StartError::DataDir {
            dir: shown,
            reason: "the filesystem refuses O_DIRECT (tmpfs and some overlay filesystems do)"
                .into(),
            fix: "put --data-dir on ext4 or xfs",
        }),
        Err(e) => Err(StartError::DataDir {
            dir: shown,
            reason: format!("not writable: {e}"),
            fix: "give the broker's user write access or choose another --data-dir",
        }),
    };
    let _ = std::fs::remove_file(&probe);
    result
}

fn check_memlock(config: &Config) -> Result<(), StartError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return Ok(());
    }
    let current = limit.rlim_cur;
    if current < MEMLOCK_BYTES_MIN {
        return Err(StartError::MemLock {
            limit: current,
            needed: MEMLOCK_BYTES_MIN,
        });
    }
    // Root normally holds CAP_IPC_LOCK, which lifts the limit.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    // Each shard registers its io_memory in up to three rings.
    let wanted = (config.shards() * 3 * config.io_memory_bytes) as u64;
    if current < wanted {
        tracing::warn!(
            memlock_bytes = current,
            wanted_bytes = wanted,
            "RLIMIT_MEMLOCK is below what the shards' io_memory needs without CAP_IPC_LOCK; \
             direct I/O falls back to unregistered buffers (slower). Raise `ulimit -l`."
        );
    }
    Ok(())
}

/// io_memory of the probe executor: glommio's smallest. The probe asks
/// whether io_uring starts at all; registration failures only warn (see
/// `check_memlock`). A probe with the shards' io_memory pinned, then freed,
/// 2 MiB of the main thread's heap that glibc kept for the process's life.
const PROBE_IO_MEMORY_BYTES: usize = 64 << 10;

fn check_io_uring() -> Result<(), StartError> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(PROBE_IO_MEMORY_BYTES)
        .make()
        .map(drop)
        .map_err(|e| match e {
            glommio::GlommioError::ReactorError(glommio::ReactorErrorKind::MemLockLimit(
                limit,
                needed,
            )) => StartError::MemLock { limit, needed },
            other => StartError::IoUring {
                reason: other.to_string(),
            },
        })
}
