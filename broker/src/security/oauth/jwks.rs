//! Where the JWKS comes from (a file, or an HTTPS URL) and its refresh, off
//! the shards: a thread of its own re-reads it every `oauth_jwks_refresh_ms`
//! (Kafka's `sasl.oauthbearer.jwks.endpoint.refresh.ms`), and a token whose
//! `kid` is unknown asks for one more read, at most once per
//! `oauth_jwks_refresh_min_ms`, on glommio's blocking pool. Shards read the
//! current set through an `Arc` that a refresh swaps whole; a failed refresh
//! keeps the old set and logs why.

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use super::jws::KeySet;

/// A JWKS document's bytes, at most.
pub const JWKS_BYTES_MAX: u64 = 1 << 20;

/// Bound on one fetch of a JWKS URL, connection to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// `https://`, or `http://` when given so explicitly (tests, a sidecar
    /// on the same host).
    Url(String),
}

impl Source {
    /// A URL when it starts with `https://` or `http://`, else a file.
    pub fn parse(text: &str) -> Source {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            Source::Url(text.to_string())
        } else {
            Source::File(PathBuf::from(text))
        }
    }

    fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Source::File(path) => {
                let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
                let mut bytes = Vec::new();
                file.take(JWKS_BYTES_MAX + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| e.to_string())?;
                if bytes.len() as u64 > JWKS_BYTES_MAX {
                    return Err(format!("larger than {JWKS_BYTES_MAX} bytes"));
                }
                Ok(bytes)
            }
            Source::Url(url) => fetch(url),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Url(url) => f.write_str(url),
        }
    }
}

/// One GET of the URL with ureq (rustls on ring, the webpki roots):
/// bounded in time and size; a redirect is not followed, since it could
/// lead from `https` to clear text.
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .max_redirects(0)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .map_err(|e| e.to_string())?;
    response
        .body_mut()
        .with_config()
        .limit(JWKS_BYTES_MAX)
        .read_to_vec()
        .map_err(|e| e.to_string())
}

/// The current key set of one source, and its refreshes.
pub struct Jwks {
    source: Source,
    current: RwLock<Arc<KeySet>>,
    refresh_min: Duration,
    /// When a refresh was last asked for by an unknown `kid`.
    last_asked: Mutex<Option<Instant>>,
}

impl Jwks {
    /// Reads the set once; an error names the source and the cause.
    pub fn load(source: Source, refresh_min: Duration) -> Result<Jwks, String> {
        let set = load(&source).map_err(|e| format!("the JWKS at {source}: {e}"))?;
        log_loaded(&source, &set);
        Ok(Jwks {
            source,
            current: RwLock::new(Arc::new(set)),
            refresh_min,
            last_asked: Mutex::new(None),
        })
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the source again and swaps the set in; a failure keeps the
    /// old one and says why. Blocking: never on a shard.
    pub fn refresh(&self) -> Result<(), String> {
        let set = load(&self.source)?;
        let changed = {
            let old = self.current();
            old.keys.len() != set.keys.len()
                || old.keys.iter().zip(&set.keys).any(|(a, b)| a.kid != b.kid)
        };
        if changed {
            log_loaded(&self.source, &set);
        }
        let set = Arc::new(set);
        match self.current.write() {
            Ok(mut current) => *current = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        Ok(())
    }

    /// Whether an unknown `kid` may have the set read again now: once per
    /// `refresh_min`, so that made-up `kid`s cannot hammer the provider.
    pub fn may_refresh_for_unknown_kid(&self) -> bool {
        let Ok(mut last) = self.last_asked.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.refresh_min) {
            return false;
        }
        *last = Some(now);
        true
    }

    pub fn source(&self) -> &Source {
        &self.source
    }
}

fn load(source: &Source) -> Result<KeySet, String> {
    KeySet::parse(&source.read()?)
}

fn log_loaded(source: &Source, set: &KeySet) {
    let kids: Vec<&str> = set
        .keys
        .iter()
        .map(|k| k.kid.as_deref().unwrap_or("(no kid)"))
        .collect();
    tracing::info!(%source, keys = %kids.join(","), "JWKS loaded");
    for why in &set.skipped {
        tracing::warn!(%source, "JWKS key left out: {why}");
    }
}

/// Re-reads the set every `every` on a thread of its own, until the set
/// is dropped.
pub fn spawn_refresher(jwks: &Arc<Jwks>, every: Duration) -> std::io::Result<()> {
    let weak: Weak<Jwks> = Arc::downgrade(jwks);
    std::thread::Builder::new()
        .name("sluice-jwks".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(jwks) = weak.upgrade() else { return };
            if let Err(e) = jwks.refresh() {
                tracing::warn!(source = %jwks.source, "JWKS refresh failed, keeping the keys in force: {e}");
            }
        })
        .map(|_| ())
}
