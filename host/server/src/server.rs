//! `wasmpbx run`: wire configuration, store and script runtime together and serve until
//! Ctrl-C. The SIP server, media and admin API join here as they are built.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::admin::{self, Admin};
use crate::clock::Clock;
use crate::clock::SystemClock;
use crate::config::{Config, User};
use crate::directory::MemoryDirectory;
use crate::driver;
use crate::media::{Prompts, RecordingFiles, RelayCounters, RelayManager};
use crate::pbx::Pbx;
use crate::registrar::SharedAuth;
use crate::sip::shards::Shard;
use crate::tls::{ReloadingCert, TlsTrunks};
use crate::writer::{self, StoreWriter};

/// Caller digits waiting for the core; a flood beyond this is dropped (and counted).
const MEDIA_EVENT_QUEUE: usize = 1024;
use crate::script::{HostServices, Limits, ScriptEngine, ScriptHost, watcher};
use crate::store::KvStore;

/// The key-value scope of the host's own settings (demo passwords).
const HOST_SCOPE: &str = "_wasmpbx";

/// Load the configuration: the file, or the embedded default with its demo users.
pub fn load_config(
    path: Option<&Path>,
    store: &dyn KvStore,
) -> anyhow::Result<(Config, Vec<(String, String)>)> {
    match path {
        Some(path) => Ok((Config::load(path)?, Vec::new())),
        None => {
            let mut config = Config::embedded_default();
            let mut demo = Vec::new();
            for (id, extension) in [("demo1", "2001"), ("demo2", "2002")] {
                let key = format!("demo-password-{extension}");
                let password = match store.get(HOST_SCOPE, &key)? {
                    Some(p) => p,
                    None => {
                        let p = random_text(12)?;
                        store.set(HOST_SCOPE, &key, &p)?;
                        p
                    }
                };
                demo.push((extension.to_owned(), password.clone()));
                config.users.push(User {
                    id: id.into(),
                    extension: extension.into(),
                    password: Some(password),
                    ha1: None,
                    role: "agent".into(),
                    pin: None,
                    devices: Default::default(),
                    srtp: None,
                });
            }
            config
                .validate()
                .map_err(|e| anyhow::anyhow!("embedded default: {e}"))?;
            Ok((config, demo))
        }
    }
}

/// `len` random characters from an alphabet without look-alikes: passwords and tokens a
/// person may have to type.
#[allow(clippy::disallowed_methods)] // a secret comes from the OS, at the edge
pub(crate) fn random_text(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a secret: {e}"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// Build the script runtime for a configuration and load the scripts folder.
pub fn script_host(
    config: Arc<Config>,
    kv: Arc<dyn KvStore>,
    devices: Arc<MemoryDirectory>,
) -> anyhow::Result<Arc<ScriptHost>> {
    let limits = Limits {
        deadline: Duration::from_millis(config.scripts.deadline_ms),
        memory_bytes: (config.scripts.memory_mib as usize) << 20,
    };
    // wasmtime's cache wants an absolute folder; a relative one is relative to here.
    let cache_dir = std::path::absolute(config.cache_dir())
        .with_context(|| format!("scripts.cache_dir: {}", config.cache_dir().display()))?;
    let engine = ScriptEngine::new(limits, Some(&cache_dir))?;
    let services = Arc::new(HostServices {
        config: arc_swap::ArcSwap::new(config.clone()),
        kv,
        devices,
        clock: Arc::new(SystemClock),
    });
    let host = Arc::new(ScriptHost::new(engine, services));
    let dir = &config.scripts.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("scripts.dir: cannot create {}", dir.display()))?;
    host.load_dir(dir)
        .with_context(|| format!("scripts.dir: cannot read {}", dir.display()))?;
    Ok(host)
}

/// Run the server until Ctrl-C.
pub async fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let store_config = match config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    // Connecting to PostgreSQL blocks (and may wait for its connect timeout).
    let store = tokio::task::spawn_blocking(move || wasmpbx_store::open(&store_config))
        .await?
        .map_err(|e| anyhow::anyhow!(e))?;
    // Calls the last run never ended (it crashed or was killed) get their records closed.
    match store.close_interrupted() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            calls = n,
            "the last run stopped during calls: their records are marked interrupted"
        ),
        Err(e) => tracing::error!("closing the records of interrupted calls: {e}"),
    }
    let (config, demo_users) = load_config(config_path, store.as_ref())?;
    let config = Arc::new(config);
    // Before any socket is opened; said once the server is up (a refused start says one
    // line, its reason).
    let open_files = raise_open_files_limit();
    // Certificates: read before anything is written (an error stops the start), and again
    // whenever their files change.
    let certificate = |cert: &Option<PathBuf>, key: &Option<PathBuf>, keys| match (cert, key) {
        (Some(cert), Some(key)) => ReloadingCert::load(cert, key, keys).map(Some),
        _ => Ok(None),
    };
    let sip_cert = certificate(&config.sip.tls_cert, &config.sip.tls_key, "sip.tls_cert")?;
    let http_cert = certificate(&config.http.tls_cert, &config.http.tls_key, "http.tls_cert")?;
    let tls_trunks = TlsTrunks::new(&config)?;
    let installed =
        crate::default_scripts::install_if_missing(&config.scripts.dir).with_context(|| {
            format!(
                "scripts.dir: cannot create {}",
                config.scripts.dir.display()
            )
        })?;
    if !installed.is_empty() {
        tracing::info!(
            "first run: wrote the default scripts ({}) into {}",
            installed.join(", "),
            config.scripts.dir.display()
        );
    }
    let directory = Arc::new(MemoryDirectory::new());
    let host = tokio::task::spawn_blocking({
        let (config, store, directory) = (config.clone(), store.clone(), directory.clone());
        move || script_host(config, store, directory)
    })
    .await??;

    let (sockets, listeners) = driver::bind(&config).await?;
    let local = listeners
        .locals(config.media.public_ip)
        .context("sip.listen: a UDP listener is needed")?;
    let (prompts, prompt_errors) = Prompts::load(&config.media.prompts);
    for e in &prompt_errors {
        tracing::error!("media.prompts: {e}");
    }
    let prompts = Arc::new(prompts);
    // The other nodes' calls, learnt from their statuses, for pulls that land here.
    let owners = Arc::new(crate::cluster::Owners::default());
    // The signalling shards: a core each, with its slice of the RTP ports; one secret,
    // so a nonce one shard gave is good on any, and one count of failing sources.
    let shard_count =
        config.shard_count(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (secret, shared_auth) = (random_secret()?, SharedAuth::default());
    let relay_counters = Arc::new(RelayCounters::default());
    // One thread writes every shard's recordings, off the calls' paths.
    let recordings = RecordingFiles::start(relay_counters.recording_frames_dropped.clone())
        .context("starting the recordings' writer")?;
    let bindings = store.load_bindings()?;
    let now_secs = SystemClock.now().as_second();
    let (core, inboxes) = driver::channel(shard_count);
    let mut shards = Vec::with_capacity(shard_count);
    let mut restored = 0;
    for (index, inbox) in inboxes.into_iter().enumerate() {
        let shard = Shard {
            index,
            count: shard_count,
        };
        let ports = config
            .media
            .rtp_ports
            .slice(index, shard_count)
            .context("media.rtp_ports: too few ports for sip.shards")?;
        let (media_events, media_inbox) = tokio::sync::mpsc::channel(MEDIA_EVENT_QUEUE);
        let media = RelayManager::new(config.media.public_ip, ports)
            .with_spare_pairs(spare_pairs_per_shard(open_files, shard_count))
            .with_counters(relay_counters.clone())
            .with_recordings(recordings.clone())
            .with_events(media_events);
        let mut pbx = Pbx::new(config.clone(), secret, Box::new(media), local)
            .with_prompts(prompts.clone())
            .with_shard(shard, shared_auth.clone());
        pbx.set_owners(owners.clone());
        restored = pbx.registrar.restore(now_secs, bindings.clone());
        shards.push(driver::Shard {
            pbx,
            inbox,
            media_events: media_inbox,
        });
    }
    let this_node = crate::cluster::ThisNode {
        name: config.cluster.name().to_owned(),
        sip: config
            .cluster
            .advertise
            .clone()
            .unwrap_or_else(|| format!("sip:{}", local.udp)),
    };
    let tls = http_cert
        .as_ref()
        .map(ReloadingCert::acceptor)
        .transpose()?;
    let sip_tls = sip_cert.as_ref().map(ReloadingCert::acceptor).transpose()?;
    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", config.http.listen))?;
    let http_addr = http.local_addr()?;

    Banner {
        config: &config,
        path: config_path,
        demo_users: &demo_users,
        host: &host,
        listeners: &listeners,
        shards: shard_count,
        restored,
        http: http_addr,
        prompts: &prompts,
    }
    .print();
    say_room_for_calls(open_files, &config.media.rtp_ports);

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::overrides::expire(
        store.clone(),
        Arc::new(SystemClock),
    ));
    if config.media.recordings_retention_days > 0 {
        tokio::spawn(crate::recordings::keep_for(
            config.media.recordings.clone(),
            config.media.recordings_retention_days,
        ));
    }
    let events = Arc::new(crate::events::Events::default());
    let webhooks = crate::webhooks::start(&config.webhooks, &events)?;
    let (outcomes, mut outcome_rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn(watcher::watch(
        host.clone(),
        config.scripts.dir.clone(),
        Some(outcomes),
        shutdown_rx.clone(),
    ));
    tokio::spawn({
        let events = events.clone();
        async move {
            while let Some(outcome) = outcome_rx.recv().await {
                crate::events::script_outcome(&events, outcome);
            }
        }
    });
    for cert in sip_cert.into_iter().chain(http_cert) {
        tokio::spawn(cert.watch(shutdown_rx.clone()));
    }
    let stats = Arc::new(driver::CallStats::default());
    let (writer, writer_thread) = StoreWriter::start(
        store.clone(),
        store.clone(),
        writer::QUEUE,
        stats.store_writes_dropped.clone(),
    )
    .context("starting the store writer")?;
    let store_progress = writer.progress();
    let shadow_choices = Arc::new(
        crate::shadow::Choices::load(store.clone()).context("reading the shadow choices")?,
    );
    let (journal, journal_thread) =
        crate::decisions::Journal::start(host.clone(), store.clone(), shadow_choices)
            .context("starting the decision journal")?;
    if config.scripts.journal_retention_days > 0 {
        tokio::spawn(crate::decisions::keep_for(
            store.clone(),
            config.scripts.journal_retention_days,
        ));
    }
    let calls_changed = Arc::new(tokio::sync::Notify::new());
    let wiring = driver::Wiring {
        store: writer,
        directory,
        scripts: host.clone(),
        speaker: Arc::new(wasmpbx_media::speech::Speaker::new()),
        stats: stats.clone(),
        tls_trunks,
        events: events.clone(),
        journal: journal.clone(),
        calls_changed: calls_changed.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(driver::Stop::Running);
    let mut sip = tokio::spawn(driver::run(shards, sockets, sip_tls, wiring, stop_rx));
    let reloader = tokio::spawn(crate::reload::watch(
        config_path.map(Path::to_path_buf),
        host.clone(),
        core.clone(),
        shutdown_rx.clone(),
    ));
    let admin = Arc::new(Admin {
        core,
        scripts: host.clone(),
        cdrs: store.clone(),
        store_progress,
        kv: store.clone(),
        relay: relay_counters,
        calls: stats,
        started: crate::clock::monotonic_now(),
        api_auth_failed: Default::default(),
        events,
        webhooks,
        phones: Default::default(),
        journal,
        shadow_results: store.clone(),
        cluster: store.clone(),
        owners: owners.clone(),
    });
    tokio::spawn(crate::cluster::heartbeat(
        store.clone(),
        this_node,
        owners,
        admin.core.clone(),
        host.clone(),
        Arc::new(SystemClock),
        calls_changed,
    ));
    let http = tokio::spawn(admin::serve(admin, http, tls, shutdown_rx));
    // The first signal drains: no new calls, the live ones run on (up to
    // server.drain_timeout_s); a second one hangs them up at once. The HTTP API stays up
    // meanwhile (`/api/health` says draining).
    let sip = tokio::select! {
        ended = &mut sip => ended,
        signal = stop_signal() => {
            signal?;
            let _ = stop_tx.send(driver::Stop::Drain);
            tokio::select! {
                ended = &mut sip => ended,
                signal = stop_signal() => {
                    signal?;
                    let _ = stop_tx.send(driver::Stop::Now);
                    sip.await
                }
            }
        }
    };
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let (watched, http, reloaded) = (watcher.await, http.await, reloader.await);
    // The driver has ended: the writer writes what is queued, then stops; the calls'
    // recordings are finished and named; the decision journal writes what is queued,
    // decisions and shadow results alike. Each is waited for even if one before failed,
    // and only then is an error reported.
    let written = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(anyhow::Error::from)
        .and_then(|joined| joined.map_err(|_| anyhow::anyhow!("the store writer panicked")));
    let recorded = tokio::task::spawn_blocking(move || recordings.sync()).await;
    let journaled = tokio::task::spawn_blocking(move || journal_thread.finish())
        .await
        .map_err(anyhow::Error::from)
        .and_then(|finished| {
            finished.map_err(|_| anyhow::anyhow!("the decision journal panicked"))
        });
    written?;
    recorded?;
    journaled?;
    watched??;
    reloaded??;
    sip??;
    http?;
    Ok(())
}

/// Raise the open-files limit to the most the system allows: a call holds four sockets,
/// and the soft limit many shells start with (1024) would stop at ~250 calls. The limit
/// in force after; none if it is unlimited or cannot be read.
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current?;
    match limit.maximum {
        Some(maximum) if maximum > current => {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => Some(maximum),
                Err(e) => {
                    tracing::warn!("raising the open-files limit from {current}: {e}");
                    Some(current)
                }
            }
        }
        _ => Some(current),
    }
}

/// Each shard's share of the ended calls' RTP pairs kept bound for the next calls
/// (`wasmpbx_media::relay`): a quarter of the open-files limit in all (two files a
/// pair), so calls and everything else keep the rest; at most `MAX_SPARE` a shard.
fn spare_pairs_per_shard(open_files: Option<u64>, shards: usize) -> usize {
    let Some(files) = open_files else {
        return wasmpbx_media::relay::MAX_SPARE; // no limit
    };
    let pairs = files / 8 / shards.max(1) as u64;
    usize::try_from(pairs).map_or(wasmpbx_media::relay::MAX_SPARE, |p| {
        p.min(wasmpbx_media::relay::MAX_SPARE)
    })
}

/// Log how many concurrent calls the open-files limit leaves room for (four sockets a
/// call), and warn when that is fewer than the media port range has room for.
fn say_room_for_calls(open_files: Option<u64>, ports: &crate::config::PortRange) {
    let Some(files) = open_files else {
        return;
    };
    let by_files = files / 4;
    let by_ports = u64::from(ports.count()) / 4;
    if by_files < by_ports {
        tracing::warn!(
            open_files = files,
            "the open-files limit leaves room for about {by_files} concurrent calls (four \
             sockets each), fewer than media.rtp_ports ({by_ports}): raise it (LimitNOFILE)"
        );
    } else {
        tracing::info!(
            open_files = files,
            "room for about {} concurrent calls (media.rtp_ports)",
            by_ports
        );
    }
}

/// SIGINT (Ctrl-C) or SIGTERM (service managers, `kill`).
async fn stop_signal() -> anyhow::Result<()> {
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("waiting for Ctrl-C"),
        () = terminate() => Ok(()),
    }
}

/// SIGTERM.
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// A per-process secret for nonces.
#[allow(clippy::disallowed_methods)] // a secret comes from the OS, at the edge
fn random_secret() -> anyhow::Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no randomness for the nonce secret: {e}"))?;
    Ok(secret)
}

/// Write a banner line; a closed stdout (a detached service) is not a reason to stop.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// What `wasmpbx run` prints at start: where everything is and listens.
struct Banner<'a> {
    config: &'a Config,
    path: Option<&'a Path>,
    demo_users: &'a [(String, String)],
    host: &'a ScriptHost,
    listeners: &'a driver::Listeners,
    /// How many signalling shards (`sip.shards`) run.
    shards: usize,
    restored: usize,
    http: std::net::SocketAddr,
    prompts: &'a Prompts,
}

impl Banner<'_> {
    fn print(&self) {
        let Banner {
            config,
            path,
            demo_users,
            host,
            listeners,
            shards,
            restored,
            http,
            prompts,
        } = *self;
        let mut out = std::io::stdout().lock();
        let source = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the embedded default".into());
        say!(out, "wasmpbx {} on {source}", env!("CARGO_PKG_VERSION"));
        let scripts: Vec<String> = host
            .registry
            .status()
            .into_iter()
            .map(|s| match (&s.hash, &s.last_error) {
                (Some(_), _) => format!("{} [{}]", s.name, s.exports.join(", ")),
                (None, Some(e)) => format!("{} (rejected: {})", s.name, e.message),
                (None, None) => s.name,
            })
            .collect();
        say!(
            out,
            "  scripts   {} (watched): {}",
            config.scripts.dir.display(),
            if scripts.is_empty() {
                "none yet — drop .wasm components here".into()
            } else {
                scripts.join("; ")
            }
        );
        say!(
            out,
            "  prompts   {} + built-in: {}; recordings to {}",
            config.media.prompts.display(),
            prompts.names().join(", "),
            config.media.recordings.display()
        );
        say!(
            out,
            "  store     {} ({restored} registrations restored)",
            config.store.path.display()
        );
        for addr in &listeners.udp {
            say!(out, "  SIP       udp:{addr}");
        }
        for addr in &listeners.tcp {
            say!(out, "  SIP       tcp:{addr}");
        }
        for addr in &listeners.tls {
            say!(out, "  SIP       tls:{addr}");
        }
        if shards > 1 {
            say!(out, "  SIP       {shards} shards, calls split by Call-ID");
        }
        let scheme = if self.config.http.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        say!(
            out,
            "  HTTP      {scheme}://{http}/api/health  (admin API, /metrics, SIP over WebSocket at /ws)"
        );
        for location in &config.locations {
            say!(
                out,
                "  location  {} on flip number {} runs script {}{}",
                location.name,
                location.flip_number,
                location.script,
                location
                    .shadow
                    .as_ref()
                    .map_or(String::new(), |shadow| format!(" (shadow {shadow})"))
            );
        }
        for (extension, password) in demo_users {
            say!(out, "  demo user extension {extension} password {password}");
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    #[test]
    fn the_spare_rtp_pairs_take_a_quarter_of_the_open_files_at_most() {
        use super::spare_pairs_per_shard as spare;
        // The shipped unit's 65 536 files on two cores: the cap.
        assert_eq!(spare(Some(65_536), 2), 2048);
        // 20 000 files: 2 500 pairs (5 000 files) between two shards.
        assert_eq!(spare(Some(20_000), 2), 1250);
        assert_eq!(spare(Some(1024), 4), 32);
        assert_eq!(spare(None, 2), 2048);
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_most_allowed() {
        let hard = getrlimit(Resource::Nofile)
            .maximum
            .expect("a finite hard limit on open files");
        // As a shell might start it: a soft limit well under the hard one.
        let lowered = Rlimit {
            current: Some(hard / 2),
            maximum: Some(hard),
        };
        setrlimit(Resource::Nofile, lowered).unwrap();
        assert_eq!(super::raise_open_files_limit(), Some(hard));
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
    }
}
