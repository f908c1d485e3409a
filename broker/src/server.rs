//! The node runtime: one glommio executor per core, each opening the logs
//! of the partitions it owns, joining the channel mesh, binding the listen
//! port (SO_REUSEPORT) and serving the connections it accepts; and the
//! graceful shutdown on SIGTERM/SIGINT.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::config::Config;
use crate::connection::{self, Entry};
use crate::listener::http::Https;
use crate::listener::Acceptor;
use crate::mesh::MESH_CHANNEL_CAPACITY;
use crate::node::{Node, ShardEnvelope};
use crate::preflight::StartError;
use crate::security::oauth::{self, Validator};
use crate::security::tls::{ClusterTls, ServerTls};
use crate::shard::Shard;
use net::tls_stream::PeerTls;

/// How often shards look at the process-wide shutdown flag set by the
/// signal handler.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// Counters shared by all shards for start-up and shutdown barriers.
#[derive(Default)]
struct Barriers {
    /// Each node's replication link address, by node.
    link_addrs: std::sync::Mutex<std::collections::BTreeMap<usize, String>>,
    logs_opened: AtomicUsize,
    drained: AtomicUsize,
    readiness: crate::notify::Readiness,
}

/// Runs the broker until SIGTERM/SIGINT (or `shutdown` set), then stops
/// gracefully. Returns once every node has closed its logs.
pub fn run(config: Config, shutdown: Arc<AtomicBool>) -> Result<(), StartError> {
    let data_dir = config.data_dir.clone();
    let shards = config.shards();
    tracing::info!(
        shards,
        listeners = %config
            .kafka_listeners()
            .map(|l| {
                l.iter()
                    .map(|l| format!("{}://{}", l.protocol.name(), l.bind))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        data_dir = %data_dir.display(),
        profile = config.profile.name(),
        fsync = config.fsync_policy().map(|p| p.name()).unwrap_or("?"),
        node = config.node_id,
        "starting"
    );
    // Bound here, before any node starts, so a taken port fails start-up
    // with a message rather than leaving a broker without its endpoint;
    // node 0 takes it over.
    let metrics_listener = Arc::new(std::sync::Mutex::new(bind_metrics(&config)?));
    let tls = match config.tls_files()? {
        Some(files) => Some(Arc::new(
            ServerTls::load(files).map_err(|e| StartError::Tls(e.to_string()))?,
        )),
        None => None,
    };
    let cluster_tls = match config.cluster_tls_files()? {
        Some(files) => Some(Arc::new(
            ClusterTls::load(files).map_err(|e| StartError::Tls(format!("cluster TLS: {e}")))?,
        )),
        None => None,
    };
    let peer_tls = cluster_tls.as_ref().map(|t| t.peer());
    let oauth = start_oauth(&config)?;
    spawn_reload_on_sighup(tls.clone(), cluster_tls);
    let config = Arc::new(config);
    let barriers = Arc::new(Barriers::default());
    let mesh = MeshBuilder::<ShardEnvelope, Full>::full(shards, MESH_CHANNEL_CAPACITY);
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
        .name("sluice-node")
        .io_memory(io_memory)
        .on_all_shards(move || async move {
            let listeners = Listeners {
                metrics: metrics_listener,
                tls,
                peer_tls,
                oauth,
            };
            shard_main(config, mesh, shutdown, barriers, listeners).await
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
    mesh: MeshBuilder<ShardEnvelope, Full>,
    shutdown: Arc<AtomicBool>,
    barriers: Arc<Barriers>,
    listeners: Listeners,
) -> Result<(), StartError> {
    let Listeners {
        metrics: metrics_listener,
        tls,
        peer_tls,
        oauth,
    } = listeners;
    let _stop_all_if_this_panics = PanicStopsAll(shutdown.clone());
    let nr_shards = mesh.nr_peers();
    let (senders, receivers) = mesh.join().await.map_err(|_| StartError::Shard {
        shard: usize::MAX,
        reason: "joining the channel mesh failed".into(),
    })?;
    let id = senders.peer_id();
    let shard = Rc::new(
        Shard::new(id, nr_shards, config.clone(), shutdown.clone())?.with_peer_tls(peer_tls),
    );
    let node = Rc::new(Node::new(shard, Some(senders)));
    node.spawn_mesh_receivers(receivers);
    let stop_early = |e: StartError| {
        shutdown.store(true, Ordering::SeqCst);
        node.begin_shutdown();
        e
    };
    let link = match crate::replicas::bind_link(&node) {
        Ok(l) => l,
        Err(e) => {
            let e = stop_early(e);
            crate::partition::placement::close_logs(&node).await;
            return Err(e);
        }
    };
    let link_addr = match link.local_addr() {
        Ok(a) if a.ip().is_unspecified() => format!("{}:{}", node.advertised.0, a.port()),
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
        // Every node's link address goes into the node's registration.
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
                node.begin_shutdown();
                return Ok(());
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        };
        // Joins the cluster and makes every node apply the metadata.
        if let Err(e) = node.start_cluster(addrs).await {
            let e = stop_early(e);
            crate::partition::placement::close_logs(&node).await;
            return Err(e);
        }
        if let Some(path) = &config.scram_bootstrap_file {
            let seeded = match crate::security::bootstrap::read(path) {
                Ok(seeds) => crate::security::bootstrap::seed(&node.shard, &*node, seeds).await,
                Err(e) => Err(e),
            };
            match seeded {
                Ok(created) => tracing::info!(created, "SCRAM credentials from the bootstrap file"),
                Err(e) => {
                    let e = stop_early(StartError::Config(crate::config::ConfigError {
                        key: "scram_bootstrap_file",
                        value: path.display().to_string(),
                        allowed: e,
                    }));
                    crate::partition::placement::close_logs(&node).await;
                    return Err(e);
                }
            }
        }
    }
    // Nobody accepts before every node has opened its logs, so no request
    // reaches a node that does not know its partitions yet.
    barriers.logs_opened.fetch_add(1, Ordering::SeqCst);
    while barriers.logs_opened.load(Ordering::SeqCst) < nr_shards {
        if shutdown.load(Ordering::SeqCst) {
            // Another node failed (or a signal came) during start-up.
            node.begin_shutdown();
            crate::partition::placement::close_logs(&node).await;
            return Ok(());
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let mut listeners = Vec::new();
    for spec in config.kafka_listeners()? {
        let bound = crate::listener::bind(spec.bind).map_err(|e| StartError::Bind {
            addr: spec.bind.to_string(),
            reason: e.to_string(),
        });
        match bound {
            Ok(l) => listeners.push((spec, l)),
            Err(e) => {
                // Let the other shards stop too instead of serving half a broker.
                shutdown.store(true, Ordering::SeqCst);
                node.begin_shutdown();
                crate::partition::placement::close_logs(&node).await;
                return Err(e);
            }
        }
    }
    // The HTTPS endpoints take the SSL listeners' configuration; `validate`
    // made sure it is loaded when either asks for it.
    let https = |on: bool| {
        tls.clone().filter(|_| on).map(|tls| Https {
            tls,
            handshake_timeout: Duration::from_millis(config.tls_handshake_timeout_ms),
        })
    };
    if let Err(e) = crate::ingest::start(&node, https(config.ingest_http_tls), oauth.clone()) {
        shutdown.store(true, Ordering::SeqCst);
        node.begin_shutdown();
        crate::partition::placement::close_logs(&node).await;
        return Err(e);
    }
    if id == 0 {
        for (spec, _) in &listeners {
            tracing::info!(
                addr = %spec.bind,
                protocol = spec.protocol.name(),
                advertised = %format!("{}:{}", spec.advertised.0, spec.advertised.1),
                "listening"
            );
        }
        let taken = metrics_listener.lock().ok().and_then(|mut l| l.take());
        if let Some(listener) = taken {
            if let Ok(local) = listener.local_addr() {
                tracing::info!(addr = %local, https = config.metrics_tls, "metrics endpoint listening");
            }
            crate::metrics::http::spawn_server(
                &node.shard,
                gatherer(&node),
                https(config.metrics_tls),
                node.metrics.clone(),
                listener,
            );
        }
    }
    node.spawn_replication(link);
    node.metrics.set_serving(true);
    if barriers.readiness.shard_listening(nr_shards) && config.release_startup_pages {
        spawn_release_startup_pages();
    }
    crate::metrics::spawn_reactor_probe(&node.shard, node.metrics.clone());
    spawn_shutdown_watch(&node.shard);
    spawn_retention(&node.shard);
    crate::cleaner::spawn_cleaner(&node.shard);
    // Every listener serves until the shard stops; the connection bound
    // is per listener.
    let acceptors: Vec<(Acceptor, Entry)> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, (spec, listener))| {
            // Checked by `validate` at start-up.
            let sasl = spec
                .protocol
                .sasl()
                .then(|| Arc::new(config.offered(spec.protocol).unwrap_or_default()));
            let entry = Entry {
                listener: i as u8,
                oauth: sasl.as_ref().and(oauth.clone()),
                sasl,
                tls: if spec.protocol.tls() {
                    tls.clone()
                } else {
                    None
                },
            };
            let acceptor =
                Acceptor::new(listener, config.connections_per_shard_max, "kafka listener");
            (acceptor, entry)
        })
        .collect();
    futures_util::future::join_all(acceptors.iter().map(|(acceptor, entry)| {
        acceptor.serve_all(
            node.stopped(),
            || {
                node.metrics.connection_refused();
                tracing::warn!(
                    shard = id,
                    "connection limit reached; refusing a connection"
                );
            },
            |stream| {
                node.metrics.connection_opened();
                let node = node.clone();
                let entry = entry.clone();
                async move {
                    connection::serve(node.clone(), stream, entry).await;
                    node.metrics.connection_closed();
                }
            },
        )
    }))
    .await;
    barriers.readiness.shard_stopping();
    let open: Vec<_> = acceptors.into_iter().map(|(a, _)| a.close()).collect();
    let open_count = || open.iter().map(|o| o.count()).sum::<usize>();
    node.metrics.set_serving(false);
    // Connections finish the request they are handling, then close.
    let deadline = Instant::now() + Duration::from_millis(config.shutdown_timeout_ms);
    while open_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if open_count() > 0 {
        tracing::warn!(
            shard = id,
            connections = open_count(),
            "shutdown timeout; closing anyway"
        );
    }
    if id == 0 {
        node.leave_cluster().await;
    }
    // Logs close only once no node can forward a request any more.
    barriers.drained.fetch_add(1, Ordering::SeqCst);
    while barriers.drained.load(Ordering::SeqCst) < nr_shards && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    crate::partition::placement::close_logs(&node).await;
    Ok(())
}

/// What every shard serves with, besides its configuration: the metrics
/// socket (bound before the shards start; one shard takes it), and the
/// TLS configurations of the Kafka listeners and of the links between
/// nodes.
struct Listeners {
    metrics: Arc<std::sync::Mutex<Option<std::net::TcpListener>>>,
    tls: Option<Arc<ServerTls>>,
    peer_tls: Option<Arc<PeerTls>>,
    oauth: Option<Arc<Validator>>,
}

/// The OAUTHBEARER validator, when a SASL listener offers OAUTHBEARER: its
/// JWKS is read now, so that one that cannot be read stops start-up.
fn start_oauth(config: &Config) -> Result<Option<Arc<Validator>>, StartError> {
    if !config.oauth_offered() {
        return Ok(None);
    }
    let settings = oauth::Settings {
        jwks: config.oauth_jwks().map(str::to_string),
        unsecured: config.oauth_unsecured_jwt,
        clock_skew_s: config.oauth_clock_skew_s,
        expected_issuer: config.oauth_expected_issuer.clone(),
        expected_audiences: config.oauth_expected_audiences(),
        sub_claim_name: config.oauth_sub_claim_name.trim().to_string(),
        jwks_refresh_ms: config.oauth_jwks_refresh_ms,
        jwks_refresh_min_ms: config.oauth_jwks_refresh_min_ms,
    };
    Validator::start(settings)
        .map(|v| Some(Arc::new(v)))
        .map_err(StartError::OAuth)
}

/// SIGHUP re-reads the TLS files (certificates expire; a fleet rotates
/// them without restarts), for the SSL listeners and the HTTPS endpoints. Without TLS there is nothing to re-read, and
/// the signal is only logged rather than ending the process.
fn spawn_reload_on_sighup(tls: Option<Arc<ServerTls>>, cluster_tls: Option<Arc<ClusterTls>>) {
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("SIGHUP cannot be caught, so TLS files cannot be reloaded: {e}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("sluice-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                if tls.is_none() && cluster_tls.is_none() {
                    tracing::info!("SIGHUP: no TLS files to reload");
                }
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                        Err(e) => tracing::error!(
                            "SIGHUP: TLS files not reloaded, the previous ones stay in use: {e}"
                        ),
                    }
                }
                if let Some(tls) = &cluster_tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: cluster TLS files reloaded"),
                        Err(e) => tracing::error!(
                            "SIGHUP: cluster TLS files not reloaded, the previous ones stay in use: {e}"
                        ),
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no thread for SIGHUP reloads: {e}");
    }
}

/// A node that panics must not leave a half broker serving, nor the other
/// shards waiting for it at a barrier: its unwinding sets the shutdown flag.
struct PanicStopsAll(Arc<AtomicBool>);

impl Drop for PanicStopsAll {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("a node panicked; stopping the broker");
            self.0.store(true, Ordering::SeqCst);
        }
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

/// Start-up goes on a moment after the last shard listens (the first
/// controller heartbeats, the first timers); pages released before that
/// would only fault back in.
const STARTUP_SETTLE: Duration = Duration::from_secs(2);

fn spawn_release_startup_pages() {
    glommio::spawn_local(async move {
        glommio::timer::sleep(STARTUP_SETTLE).await;
        // One madvise over the executable's ranges: a few milliseconds of
        // this shard's time, once.
        let released_bytes = crate::footprint::release_startup_pages();
        tracing::debug!(released_bytes, "start-up pages handed back");
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
            crate::partition::placement::enforce_retention(&shard).await;
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

/// The metrics endpoint's way to every shard's snapshot.
fn gatherer(node: &Rc<Node>) -> crate::metrics::http::Gather {
    let node = node.clone();
    Rc::new(move |timeout| {
        let node = node.clone();
        Box::pin(async move { crate::node::gather(&node, timeout).await })
    })
}
