//! The shard runtime: one glommio executor per core, each opening the logs
//! of the partitions it owns, joining the channel mesh, binding the listen
//! port (SO_REUSEPORT) and serving the connections it accepts; and the
//! graceful shutdown on SIGTERM/SIGINT.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers};
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::config::Config;
use crate::connection;
use crate::mesh::{Envelope, Mesh, MESH_CHANNEL_CAPACITY};
use crate::preflight::StartError;
use crate::shard::Shard;

/// How often shards look at the process-wide shutdown flag set by the
/// signal handler.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// Counters shared by all shards for start-up and shutdown barriers.
#[derive(Default)]
struct Barriers {
    /// Each shard's replication link address, by shard.
    link_addrs: std::sync::Mutex<std::collections::BTreeMap<usize, String>>,
    logs_opened: AtomicUsize,
    drained: AtomicUsize,
    readiness: crate::notify::Readiness,
}

/// Runs the broker until SIGTERM/SIGINT (or `shutdown` set), then stops
/// gracefully. Returns once every shard has closed its logs.
pub fn run(config: Config, shutdown: Arc<AtomicBool>) -> Result<(), StartError> {
    let data_dir = config.data_dir.clone();
    let shards = config.shards();
    tracing::info!(
        shards,
        listen = %config.listen,
        data_dir = %data_dir.display(),
        profile = config.profile.name(),
        fsync = config.fsync_policy().map(|p| p.name()).unwrap_or("?"),
        node = config.node_id,
        "starting"
    );
    // Bound here, before any shard starts, so a taken port fails start-up
    // with a message rather than leaving a broker without its endpoint;
    // shard 0 takes it over.
    let metrics_listener = Arc::new(std::sync::Mutex::new(bind_metrics(&config)?));
    let config = Arc::new(config);
    let barriers = Arc::new(Barriers::default());
    let mesh = MeshBuilder::<Envelope, Full>::full(shards, MESH_CHANNEL_CAPACITY);
    let io_memory = config.io_memory_bytes;
    let cpus = match config.cpu_list()? {
        Some(list) => Some(
            glommio::CpuSet::online()
                .map_err(|e| StartError::IoUring {
                    reason: format!("reading the machine's CPUs: {e}"),
                })?
                .filter(|l| list.contains(&l.cpu)),
        ),
        None => None,
    };
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(shards, cpus))
        .name("sluice-shard")
        .io_memory(io_memory)
        .on_all_shards(move || async move {
            shard_main(config, mesh, shutdown, barriers, metrics_listener).await
        })
        .map_err(|e| StartError::IoUring {
            reason: e.to_string(),
        })?;
    let mut first_error = None;
    for (i, result) in handles.join_all().into_iter().enumerate() {
        let err = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => StartError::Shard {
                shard: i,
                reason: e.to_string(),
            },
        };
        tracing::error!("{err}");
        first_error.get_or_insert(err);
    }
    match first_error {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(e) => Err(e),
    }
}

async fn shard_main(
    config: Arc<Config>,
    mesh: MeshBuilder<Envelope, Full>,
    shutdown: Arc<AtomicBool>,
    barriers: Arc<Barriers>,
    metrics_listener: Arc<std::sync::Mutex<Option<std::net::TcpListener>>>,
) -> Result<(), StartError> {
    let _stop_all_if_this_panics = PanicStopsAll(shutdown.clone());
    let nr_shards = mesh.nr_peers();
    let (senders, receivers) = mesh.join().await.map_err(|_| StartError::Shard {
        shard: usize::MAX,
        reason: "joining the channel mesh failed".into(),
    })?;
    let id = senders.peer_id();
    let shard = Rc::new(Shard::new(
        id,
        nr_shards,
        config.clone(),
        Mesh::new(Some(senders)),
        shutdown.clone(),
    )?);
    spawn_mesh_receivers(&shard, receivers);
    let stop_early = |e: StartError| {
        shutdown.store(true, Ordering::SeqCst);
        shard.begin_shutdown();
        e
    };
    let link = match crate::replicas::bind_link(&shard) {
        Ok(l) => l,
        Err(e) => {
            let e = stop_early(e);
            shard.close_logs().await;
            return Err(e);
        }
    };
    let link_addr = match link.local_addr() {
        Ok(a) if a.ip().is_unspecified() => format!("{}:{}", shard.advertised.0, a.port()),
        Ok(a) => a.to_string(),
        Err(e) => {
            return Err(stop_early(StartError::Shard {
                shard: id,
                reason: e.to_string(),
            }))
        }
    };
    if let Ok(mut addrs) = barriers.link_addrs.lock() {
        addrs.insert(id, link_addr);
    }
    if id == 0 {
        // Every shard's link address goes into the node's registration.
        let addrs = loop {
            let ready = barriers
                .link_addrs
                .lock()
                .ok()
                .filter(|a| a.len() == nr_shards)
                .map(|a| a.values().cloned().collect::<Vec<String>>());
            if let Some(addrs) = ready {
                break addrs;
            }
            if shutdown.load(Ordering::SeqCst) {
                shard.begin_shutdown();
                return Ok(());
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        };
        // Joins the cluster and makes every shard apply the metadata.
        if let Err(e) = crate::cluster::start(&shard, addrs).await {
            let e = stop_early(e);
            shard.close_logs().await;
            return Err(e);
        }
    }
    // Nobody accepts before every shard has opened its logs, so no request
    // reaches a shard that does not know its partitions yet.
    barriers.logs_opened.fetch_add(1, Ordering::SeqCst);
    while barriers.logs_opened.load(Ordering::SeqCst) < nr_shards {
        if shutdown.load(Ordering::SeqCst) {
            // Another shard failed (or a signal came) during start-up.
            shard.begin_shutdown();
            shard.close_logs().await;
            return Ok(());
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let addr = config.listen_addr()?;
    let listener = crate::listen::bind(addr).map_err(|e| StartError::Bind {
        addr: addr.to_string(),
        reason: e.to_string(),
    });
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            // Let the other shards stop too instead of serving half a broker.
            shutdown.store(true, Ordering::SeqCst);
            shard.begin_shutdown();
            shard.close_logs().await;
            return Err(e);
        }
    };
    if let Err(e) = crate::ingest::start(&shard) {
        shutdown.store(true, Ordering::SeqCst);
        shard.begin_shutdown();
        shard.close_logs().await;
        return Err(e);
    }
    if id == 0 {
        tracing::info!(%addr, "listening");
        let taken = metrics_listener.lock().ok().and_then(|mut l| l.take());
        if let Some(listener) = taken {
            if let Ok(local) = listener.local_addr() {
                tracing::info!(addr = %local, "metrics endpoint listening");
            }
            crate::metrics::http::spawn_server(&shard, listener);
        }
    }
    crate::replicas::spawn(&shard, link);
    shard.metrics.set_serving(true);
    barriers.readiness.shard_listening(nr_shards);
    crate::metrics::spawn_reactor_probe(&shard);
    spawn_shutdown_watch(&shard);
    spawn_retention(&shard);
    crate::cleaner::spawn_cleaner(&shard);
    let active = Rc::new(Cell::new(0usize));
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.stopped().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(shard = id, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if active.get() >= config.connections_per_shard_max {
            shard.metrics.connection_refused();
            tracing::warn!(
                shard = id,
                "connection limit reached; refusing a connection"
            );
            drop(stream);
            continue;
        }
        active.set(active.get() + 1);
        shard.metrics.connection_opened();
        let shard = shard.clone();
        let active = active.clone();
        glommio::spawn_local(async move {
            connection::serve(shard.clone(), stream).await;
            shard.metrics.connection_closed();
            active.set(active.get() - 1);
        })
        .detach();
    }
    barriers.readiness.shard_stopping();
    drop(listener);
    shard.metrics.set_serving(false);
    // Connections finish the request they are handling, then close.
    let deadline = Instant::now() + Duration::from_millis(config.shutdown_timeout_ms);
    while active.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if active.get() > 0 {
        tracing::warn!(
            shard = id,
            connections = active.get(),
            "shutdown timeout; closing anyway"
        );
    }
    if id == 0 {
        crate::cluster::leave(&shard).await;
    }
    // Logs close only once no shard can forward a request any more.
    barriers.drained.fetch_add(1, Ordering::SeqCst);
    while barriers.drained.load(Ordering::SeqCst) < nr_shards && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    shard.close_logs().await;
    Ok(())
}

/// A shard that panics must not leave a half broker serving, nor the other
/// shards waiting for it at a barrier: its unwinding sets the shutdown flag.
struct PanicStopsAll(Arc<AtomicBool>);

impl Drop for PanicStopsAll {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("a shard panicked; stopping the broker");
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

fn spawn_mesh_receivers(shard: &Rc<Shard>, receivers: Receivers<Envelope>) {
    let receivers = Rc::new(receivers);
    for peer in 0..shard.nr_shards {
        if peer == shard.id {
            continue;
        }
        let shard = shard.clone();
        let receivers = receivers.clone();
        glommio::spawn_local(async move {
            while let Ok(Some(envelope)) = receivers.recv_from(peer).await {
                match envelope {
                    Envelope::Request { id, from, body } => {
                        // Served in its own task so this loop never blocks
                        // and answers can flow both ways without deadlock.
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let answer = shard.serve(body).await;
                            shard.mesh.respond(from, id, answer).await;
                        })
                        .detach();
                    }
                    Envelope::Response { id, body } => shard.mesh.complete(id, body),
                }
            }
        })
        .detach();
    }
}

fn spawn_shutdown_watch(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        while !shard.shutdown.load(Ordering::SeqCst) {
            glommio::timer::sleep(SHUTDOWN_POLL).await;
        }
        if shard.id == 0 {
            tracing::info!("shutting down: no new connections, finishing requests in flight");
        }
        shard.begin_shutdown();
    })
    .detach();
}

fn spawn_retention(shard: &Rc<Shard>) {
    let shard = shard.clone();
    let interval = Duration::from_millis(shard.config.retention_check_interval_ms);
    glommio::spawn_local(async move {
        loop {
            let woke = shard.nap(interval).await;
            if !woke {
                return;
            }
            shard.enforce_retention().await;
        }
    })
    .detach();
}

/// Binds the metrics endpoint's address (a plain bind, no SO_REUSEPORT, so
/// a second broker cannot share it); `None` when it is switched off.
fn bind_metrics(config: &Config) -> Result<Option<std::net::TcpListener>, StartError> {
    let Some(addr) = config.metrics_addr()? else {
        return Ok(None);
    };
    let deadline = Instant::now() + crate::preflight::PORT_RELEASE_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(Some(l)),
            // A killed broker's socket lingers a moment in io_uring teardown.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(StartError::MetricsBind {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
}
