//! The running daemon: configuration → store → sockets → the proxy loop, with the signals and
//! systemd notifications an IT person expects (`Type=notify`).
//!
//! - READY=1 once the database is migrated and proven writable and every socket is bound;
//!   STATUS= shows the calls in progress and the helpdesk deliveries pending; watchdog pings come
//!   from the proxy loop itself, so a stuck loop is restarted.
//! - SIGHUP re-reads the configuration between RELOADING=1 and READY=1: an invalid file is
//!   logged with its errors and the running configuration stays. Listen addresses and the
//!   database need a restart (logged).
//! - The proxy loop answers the admin API's commands ([`crate::control`]) and publishes the live
//!   snapshot after each change (at most every 200 ms) and once a second.
//! - SIGTERM or SIGINT: STOPPING=1, new calls get 503, calls in progress may finish until
//!   `shutdown_grace` (and the answers to their last BYEs reach the phones), then the loop stops, the store writer commits everything it holds (systemd is asked to
//!   wait, `EXTEND_TIMEOUT_USEC`, while it does) and the process exits.
//! - At start, calls a previous run left open (crash, `kill -9`) are closed as interrupted, with
//!   their helpdesk deliveries.
//! - Three threads: the proxy loop (this one), the store writer and the delivery worker, each
//!   with its own runtime, so neither a slow disk nor a slow helpdesk delays a SIP answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

mod cluster;
mod media;
mod process;
mod shared;

use process::{current_user, database_role, give_back_memory, raise_file_limit};

use crate::admin;
use crate::call::Change;
use crate::config::AdminToken;
use crate::config::{Config, ConfigError};
use crate::control;
use crate::delivery;
use crate::directory::Directory;
use crate::proxy::{Core, Local, MediaPlace, Now, Output, ProxySettings};
use crate::routing::Extension;
use crate::sip::peer::Transport;
use crate::sip::policy::SharedPolicy;
use crate::sip::transport::{Received, Sockets};
use crate::store::spill::Spill;
use crate::store::writer::WriterSettings;
use crate::store::{self, Store, StoreError};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot resolve the PBX address {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on the configured SIP addresses")]
    Bind(#[source] std::io::Error),
    #[error("cannot install the signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("cannot start the database writer thread")]
    Writer(#[source] std::io::Error),
    #[error("cannot start the delivery worker thread")]
    Worker(#[source] std::io::Error),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("cannot create the state directory {path}")]
    StateDirectory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another sipdesk (process {pid}) is running on the SQLite database {database}; SQLite serves one instance: stop it, or run several instances on PostgreSQL"
    )]
    AlreadyRunning { database: String, pid: String },
    #[error(
        "another running sipdesk has the instance name \"{instance}\" on this database; give each instance its own [cluster] instance (by default the host name)"
    )]
    InstanceNameTaken { instance: String },
    #[error(
        "cannot write to the database {database} as user {user}; sipdesk would lose every call record"
    )]
    NotWritable {
        database: String,
        user: String,
        #[source]
        source: StoreError,
    },
}

/// How often a snapshot of the live state is published even when nothing changed (a wrap-up
/// ends by the clock).
const LIVE_EVERY: Duration = Duration::from_secs(1);
/// How long a stop waits, once its calls are over, for the answers to their last requests.
const LAST_ANSWERS: Duration = Duration::from_secs(4);
/// How often the systemd status line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// On stop, how long sipdesk waits for the store writer beyond its own `stop_write_timeout`
/// (which it keeps, then spills): time to write the spill file.
const WRITER_MARGIN: Duration = Duration::from_secs(15);

enum Control {
    Reload,
    /// Calls of a dead instance were closed: their SIP Call-IDs.
    Interrupted(Vec<String>),
}

async fn resolve(config: &Config) -> Result<SocketAddr, DaemonError> {
    let pbx = &config.sip.pbx;
    let mut found = tokio::net::lookup_host((pbx.host.as_str(), pbx.port))
        .await
        .map_err(|source| DaemonError::Resolve {
            host: pbx.to_string(),
            source,
        })?;
    found.next().ok_or_else(|| DaemonError::Resolve {
        host: pbx.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
    })
}

/// Says when `max_connections` cannot be reached under the open-file limit.
fn warn_file_limit(config: &Config, file_limit: usize) {
    let room = file_limit.saturating_sub(crate::sip::transport::RESERVED_FILES);
    if config.sip.max_connections > room {
        tracing::warn!(
            max_connections = config.sip.max_connections,
            open_files = file_limit,
            "the open-file limit allows only {room} TCP connections; raise LimitNOFILE= or lower max_connections"
        );
    }
}

/// sipdesk's address in Via and Record-Route: the configured `advertise`, else the first UDP
/// (or TCP) listen address, with an unspecified IP replaced by the local address towards the PBX.
async fn local_address(
    config: &Config,
    bound: &[(Transport, SocketAddr)],
    pbx: SocketAddr,
) -> Local {
    if let Some(advertise) = &config.sip.advertise {
        return Local {
            host: advertise.host.clone(),
            port: advertise.port,
        };
    }
    let first = bound
        .iter()
        .find(|(t, _)| *t == Transport::Udp)
        .or(bound.first())
        .map(|(_, a)| *a)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
    let mut ip = first.ip();
    if ip.is_unspecified() {
        let probe = if pbx.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        if let Ok(socket) = tokio::net::UdpSocket::bind(probe).await {
            if socket.connect(pbx).await.is_ok() {
                if let Ok(local) = socket.local_addr() {
                    ip = local.ip();
                }
            }
        }
    }
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    Local {
        host,
        port: first.port(),
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(state);
}

/// Opens the store and proves it can be written, writes back what a previous run spilled and
/// closes the calls it left open. sipdesk is not ready (and does not start) before this
/// succeeds.
/// Returns the store and the SIP Call-IDs of the calls closed as interrupted.
async fn open_store(
    config: &Config,
    token: &str,
) -> Result<(Store, Vec<String>, Option<cluster::SqliteLock>), DaemonError> {
    let database = &config.database;
    std::fs::create_dir_all(&database.state_directory).map_err(|source| {
        DaemonError::StateDirectory {
            path: database.state_directory.display().to_string(),
            source,
        }
    })?;
    // The spill file goes there: a directory sipdesk cannot write (under ProtectSystem=strict,
    // anything outside /var/lib/sipdesk) would only show when records had nowhere to go.
    let probe = database.state_directory.join(".sipdesk-write-check");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| DaemonError::StateDirectory {
            path: database.state_directory.display().to_string(),
            source,
        })?;
    // One instance per SQLite file; held until sipdesk exits.
    let sqlite_lock = match database.sqlite_file() {
        Some(file) if file.as_os_str() != ":memory:" && !database.url.contains("mode=memory") => {
            Some(cluster::lock_sqlite(&file)?)
        }
        _ => None,
    };
    let (name, user) = match database.sqlite_file() {
        Some(file) => (file.display().to_string(), current_user()),
        None => (
            store::redact(&database.url),
            format!("role {}", database_role(&database.url)),
        ),
    };
    let not_writable = |source| DaemonError::NotWritable {
        database: name.clone(),
        user: user.clone(),
        source,
    };
    // SQLite: a file sipdesk may not write often fails already at opening (the migrations
    // write); a database server that cannot be reached is a plain connection error.
    let store = match Store::open(&database.url).await {
        Ok(store) => store,
        Err(error) if database.sqlite_file().is_some() => return Err(not_writable(error)),
        Err(error) => return Err(error.into()),
    };
    store.check_writable().await.map_err(not_writable)?;
    let instance = &config.cluster.instance;
    if store.backend() == store::Backend::Postgres {
        // Alive before anything else (the spill file below may take minutes): no other
        // instance takes this one's calls for a dead one's.
        // A process that did not stop cleanly (killed, crashed) holds the name until its
        // heartbeat is older than dead_after: a restart waits that long, then gives up.
        let dead_after = config.cluster.dead_after;
        let until = tokio::time::Instant::now() + dead_after + Duration::from_secs(2);
        // systemd is told this start may take that long.
        let wait = dead_after + Duration::from_secs(30);
        notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(
            u32::try_from(wait.as_micros()).unwrap_or(u32::MAX),
        )]);
        let mut said = false;
        while !store.join_cluster(instance, token, dead_after).await? {
            // A run of this host that died (a crash, kill -9): its name is taken at once.
            if let Some(holder) = store.cluster_holder(instance).await? {
                if cluster::is_dead_here(&holder)
                    && store
                        .take_cluster_name(instance, &holder, token, dead_after)
                        .await?
                {
                    tracing::info!(%instance, "the previous run of this instance did not stop cleanly; its name is taken over");
                    break;
                }
            }
            if tokio::time::Instant::now() >= until {
                return Err(DaemonError::InstanceNameTaken {
                    instance: instance.clone(),
                });
            }
            if !said {
                tracing::info!(%instance, wait = %humantime::format_duration(dead_after), "the instance name is held by a running sipdesk or by a run that did not stop cleanly; waiting for it to be free");
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let outbox = |record: &crate::call::CallRecord| delivery::outbox_entries(config, record);
    let spill = Spill::in_directory(&database.state_directory);
    if spill.exists() {
        // A long outage can leave a large file: systemd is asked to wait while it is written.
        notify(&[
            sd_notify::NotifyState::ExtendTimeoutUsec(600_000_000),
            sd_notify::NotifyState::Status("writing the call records the last run could not"),
        ]);
        let writing = store::writer::write_back(&store, &spill, &outbox);
        tokio::pin!(writing);
        // This may take minutes: the instance keeps saying it is alive meanwhile, or another
        // would close its calls while their end records are still in the file.
        let clustered = store.backend() == store::Backend::Postgres;
        let every = config.cluster.dead_after / 3;
        let written = loop {
            tokio::select! {
                written = &mut writing => break written,
                _ = tokio::time::sleep(every), if clustered => {
                    let _ = store
                        .heartbeat(&config.cluster.instance, token, config.cluster.dead_after)
                        .await;
                }
            }
        }
        .map_err(not_writable)?;
        tracing::info!(
            records = written,
            file = %spill.path().display(),
            "call records the previous run could not write are now in the database"
        );
    }
    let closed = store
        .close_interrupted(jiff::Timestamp::now(), instance, &outbox)
        .await?;
    if !closed.is_empty() {
        tracing::warn!(
            calls = closed.len(),
            "closed calls left in progress by the previous run as interrupted"
        );
    }
    Ok((store, closed, sqlite_lock))
}

/// Runs sipdesk until `cancel` fires (or a signal asks it to stop).
pub async fn run(config_path: PathBuf, cancel: CancellationToken) -> Result<(), DaemonError> {
    let config = Arc::new(Config::load(&config_path)?);
    // This process's token: the instance's name is its own while the token is in the row.
    let token = cluster::token();
    let (store, interrupted, _sqlite_lock) = open_store(&config, &token).await?;
    let cursors = store.cursors().await?;
    let away: Vec<(Extension, Option<String>)> = store
        .agent_states()
        .await?
        .into_iter()
        .filter(|s| s.away)
        .filter_map(|s| Some((Extension::parse(&s.extension).ok()?, s.reason)))
        .collect();
    let pbx = resolve(&config).await?;
    // One network policy, read by the sockets and the proxy alike; a reload replaces it whole.
    let policy = SharedPolicy::new(config.sip.policy(pbx.ip()));
    let file_limit = raise_file_limit();
    warn_file_limit(&config, file_limit);
    let listen: Vec<(Transport, SocketAddr)> = config
        .sip
        .listen
        .iter()
        .map(|l| (l.transport, l.addr))
        .collect();
    // Not a child of `cancel`: while stopping, sipdesk keeps receiving so calls in progress can
    // end (their BYEs); the sockets close once the loop is done.
    let sockets_cancel = CancellationToken::new();
    let (mut sockets, mut received, bound) =
        Sockets::bind(&listen, policy.clone(), file_limit, sockets_cancel.clone())
            .await
            .map_err(DaemonError::Bind)?;
    let local = local_address(&config, &bound, pbx).await;
    let listening: Vec<SocketAddr> = bound.iter().map(|(_, a)| *a).collect();
    let mut settings = ProxySettings::new(&config, local.clone(), listening, pbx);
    let media_ip = config
        .media
        .address
        .or_else(|| local.host.trim_matches(['[', ']']).parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let recordings = config.database.state_directory.join("voicemail");
    std::fs::create_dir_all(&recordings).map_err(|source| DaemonError::StateDirectory {
        path: recordings.display().to_string(),
        source,
    })?;
    settings.media = Some(MediaPlace {
        ip: media_ip,
        ports: crate::media::runner::Ports::new(
            config.media.rtp_ports.clone(),
            config.media.max_sessions,
        ),
        directory: recordings,
    });
    let (mut media, mut media_ended) = media::Sessions::new(media_ip);
    let mut core = Core::new(settings, config.clone(), policy, cursors, &away);
    let directory = Arc::new(Directory::from_entries(&store.contacts().await?));
    core.set_directory(directory.clone());
    // Several instances on PostgreSQL share agents: claimed before ringing, and every
    // instance's holds heard.
    let shared_stop = CancellationToken::new();
    let (shared_agents, mut claimed, mut remote) = if store.backend() == store::Backend::Postgres {
        core.share_agents(
            &config.cluster.instance,
            u64::try_from(jiff::Timestamp::now().as_microsecond()).unwrap_or(0),
        );
        let (agents, claimed, remote) = shared::spawn(
            store.clone(),
            config.database.url.clone(),
            config.cluster.instance.clone(),
            directory.clone(),
            shared_stop.clone(),
        );
        (Some(agents), claimed, remote)
    } else {
        // Never sent on: a single instance decides alone.
        let (_, claimed) = mpsc::unbounded_channel();
        let (_, remote) = mpsc::unbounded_channel();
        (None, claimed, remote)
    };
    core.remember_interrupted(Now::system(), interrupted);

    // The running configuration, for the writer (which integrations a call is delivered to)
    // and the delivery worker; a reload reaches both.
    let (config_tx, config_rx) = watch::channel(config.clone());
    let (changes, changes_rx) = mpsc::unbounded_channel::<Change>();
    // Customers' texts the writer has kept: only then are they answered 202.
    let (kept_tx, mut kept_rx) = mpsc::unbounded_channel::<String>();
    let outbox_config = config_rx.clone();
    let health = Arc::new(store::writer::Health::default());
    let writer = store::writer::spawn(
        WriterSettings {
            url: config.database.url.clone(),
            queue_limit: config.database.queue_limit,
            stop_write_timeout: config.database.stop_write_timeout,
            spill: Spill::in_directory(&config.database.state_directory),
            kept: Some(kept_tx),
        },
        changes_rx,
        Arc::new(move |record: &crate::call::CallRecord| {
            delivery::outbox_entries(&outbox_config.borrow(), record)
        }),
        health.clone(),
    )
    .map_err(DaemonError::Writer)?;
    let worker_stop = CancellationToken::new();
    let worker = delivery::spawn(
        config.database.url.clone(),
        config_rx.clone(),
        directory,
        worker_stop.clone(),
    )
    .map_err(DaemonError::Worker)?;

    // The admin API, on loopback; it reaches the proxy through `handle`.
    let (handle, mut commands, publisher) = control::Handle::new();
    let admin_stop = CancellationToken::new();
    if let Some(addr) = config.admin.listen {
        if let AdminToken::Generated(path) = &config.admin.token {
            admin::generate_token(path)?;
        }
        let listener = admin::bind(addr).await?;
        tokio::spawn(admin::serve(
            listener,
            admin::Shared {
                handle: handle.clone(),
                health: health.clone(),
                store: store.clone(),
                config: config_rx.clone(),
            },
            admin_stop.clone(),
        ));
        tracing::info!(%addr, "admin API listening");
    }

    // Agents' replies on text tickets, sent back as texts through the proxy.
    let replies_stop = CancellationToken::new();
    tokio::spawn(crate::replies::run(
        config_rx.clone(),
        store.clone(),
        handle.clone(),
        config.cluster.instance.clone(),
        replies_stop.clone(),
    ));

    let (control, mut control_rx) = mpsc::unbounded_channel::<Control>();
    spawn_signals(control.clone(), cancel.clone()).map_err(DaemonError::Signals)?;
    let cluster_stop = CancellationToken::new();
    if store.backend() == store::Backend::Postgres {
        cluster::spawn(
            store.clone(),
            token.clone(),
            config_rx.clone(),
            control.clone(),
            cluster_stop.clone(),
        );
    }

    crate::phone::warm_up();
    for (transport, addr) in &bound {
        tracing::info!(%addr, transport = transport.via_name(), "listening");
    }
    tracing::info!(pbx = %pbx, via = %format!("{}:{}", local.host, local.port), groups = config.groups.len(), "sipdesk ready");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("ready, no calls in progress"),
    ]);

    let mut watchdog = tokio::time::interval(
        sd_notify::watchdog_enabled()
            .map_or(Duration::from_secs(3600), |d| d / 2)
            .max(Duration::from_millis(100)),
    );
    let mut status = tokio::time::interval(STATUS_EVERY);
    let pending = count_pending(store.clone(), cancel.clone());
    let mut live_every = tokio::time::interval(LIVE_EVERY);
    let mut published = tokio::time::Instant::now();
    let mut publish_at: Option<tokio::time::Instant> = None;
    publish(&publisher, &mut core);
    let mut held_peak = 0;
    let mut config = config;
    let mut draining_until: Option<tokio::time::Instant> = None;
    let left_active: usize;
    let mut calls_over_at: Option<tokio::time::Instant> = None;
    let primary = sockets.primary_udp();
    let mut datagram = vec![0u8; 65_536];
    // Helpdesk replies sent as texts, until the PBX answers them.
    let mut texts_waiting = HashMap::new();
    loop {
        let deadline = core.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            readable = udp_readable(primary.as_deref()) => {
                if readable.is_ok() {
                    if let Some(socket) = &primary {
                        // Everything waiting is handled in one go, then the outputs go out.
                        for _ in 0..UDP_BURST {
                            match socket.try_recv_from(&mut datagram) {
                                Ok((n, from)) => {
                                    trace_datagram(&datagram[..n], from);
                                    core.on_datagram(Now::system(), &datagram[..n], from);
                                    // Out at once: a burst must not hold the first answers back.
                                    flush(&mut core, &mut sockets, &changes, &mut media, shared_agents.as_ref(), &mut texts_waiting);
                                }
                                // WouldBlock ends the burst; ICMP errors from earlier sends
                                // surface here on Linux and are not fatal.
                                Err(_) => break,
                            }
                        }
                    }
                }
            },
            Some(event) = received.recv() => match event {
                Received::Datagram { bytes, from } => {
                    trace_datagram(&bytes, from);
                    core.on_datagram(Now::system(), &bytes, from)
                }
                Received::Stream { item, peer } => core.on_stream(Now::system(), item, peer),
                Received::Failed { peer } => core.transport_failed(Now::system(), peer),
            },
            _ = sleep_until(deadline) => core.poll(Now::system()),
            Some((call, version, answer)) = claimed.recv() => {
                core.on_claimed(Now::system(), call, version, answer);
            }
            Some(said) = remote.recv() => core.on_remote(Now::system(), said),
            Some(id) = kept_rx.recv() => core.text_kept(Now::system(), &id),
            Some((call, result)) = media_ended.recv() => {
                media.finished(call);
                core.on_media_ended(Now::system(), call, result);
            }
            Some(command) = control_rx.recv() => match command {
                Control::Reload => {
                    notify(&[
                        sd_notify::NotifyState::Reloading,
                        sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Status("reloading")),
                    ]);
                    if let Some(reloaded) = reload(&config_path, &config) {
                        warn_file_limit(&reloaded, file_limit);
                        // The proxy and the sockets take the new policy in this one step.
                        core.reload(reloaded.clone());
                        sockets.close_untrusted();
                        let _ = config_tx.send(reloaded.clone());
                        config = reloaded;
                    }
                    notify(&[sd_notify::NotifyState::Ready]);
                }
                Control::Interrupted(sip_call_ids) => {
                    core.remember_interrupted(Now::system(), sip_call_ids);
                }
            },
            Some(command) = commands.recv() => match command {
                control::Command::EndCall { id, reply } => {
                    let ended = core.end_call(Now::system(), &id);
                    if ended {
                        tracing::info!(call = %id, "call ended by an admin");
                    }
                    let _ = reply.send(ended);
                }
                control::Command::FreeAgent { extension, reply } => {
                    let freed = core.free_agent(Now::system(), &extension);
                    tracing::info!(%extension, calls = freed, "agent freed by an admin");
                    let _ = reply.send(freed);
                }
                control::Command::SendText { order, reply } => {
                    texts_waiting.insert(order.id.clone(), reply);
                    core.send_text(Now::system(), order);
                }
                control::Command::SetAgent { extension, away, reason, reply } => {
                    let changed = core.set_away(Now::system(), &extension, away, reason);
                    // Published before the answer, so what the caller reads next shows it.
                    publish(&publisher, &mut core);
                    published = tokio::time::Instant::now();
                    let _ = reply.send(changed);
                }
            },
            _ = watchdog.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
            _ = live_every.tick() => {
                publish(&publisher, &mut core);
                published = tokio::time::Instant::now();
            }
            _ = sleep_until(publish_at) => {
                publish_at = None;
                publish(&publisher, &mut core);
                published = tokio::time::Instant::now();
            }
            _ = status.tick() => {
                // After a burst (a flood of requests) has drained, the memory goes back.
                let census = core.census();
                let held = census.calls + census.server_transactions + census.client_transactions;
                if core.housekeeping() || held + 1_000 < held_peak {
                    give_back_memory();
                    held_peak = held;
                }
                held_peak = held_peak.max(held);
                let active = core.active_calls();
                let deliveries = pending.load(std::sync::atomic::Ordering::Relaxed);
                let line = if health.writable() {
                    format!("{active} calls in progress, {deliveries} helpdesk deliveries pending")
                } else {
                    format!("{active} calls in progress, {deliveries} helpdesk deliveries pending; the database cannot be written, {} records waiting", health.waiting())
                };
                notify(&[sd_notify::NotifyState::Status(&line)]);
            }
            _ = cancel.cancelled(), if draining_until.is_none() => {
                let grace = config.sip.shutdown_grace;
                tracing::info!(calls = core.active_calls(), grace = %humantime::format_duration(grace), "stopping: new calls are refused, calls in progress may finish");
                // systemd waits for the calls, then for the last records (TimeoutStopSec may be
                // shorter than shutdown_grace).
                let wait = grace + config.database.stop_write_timeout + WRITER_MARGIN;
                notify(&[
                    sd_notify::NotifyState::Stopping,
                    sd_notify::NotifyState::ExtendTimeoutUsec(u32::try_from(wait.as_micros()).unwrap_or(u32::MAX)),
                ]);
                handle.set_draining();
                core.drain(Now::system());
                draining_until = Some(tokio::time::Instant::now() + grace);
            }
        }
        flush(
            &mut core,
            &mut sockets,
            &changes,
            &mut media,
            shared_agents.as_ref(),
            &mut texts_waiting,
        );
        if core.take_changed() {
            // At most every PUBLISH_EVERY; a change in between waits for the next one (or the
            // once-a-second tick).
            if published.elapsed() >= control::PUBLISH_EVERY {
                publish(&publisher, &mut core);
                published = tokio::time::Instant::now();
            } else {
                publish_at = Some(published + control::PUBLISH_EVERY);
            }
        }
        if let Some(until) = draining_until {
            let active = core.active_calls();
            // The last BYE's answer too: a call ends for sipdesk when the BYE passes, and the
            // answer coming back from the other side must still reach the one who hung up.
            // An answer that does not come (the other phone is gone) holds the stop back a few
            // seconds at most once the calls are over, not the whole grace.
            let now = tokio::time::Instant::now();
            if active > 0 {
                calls_over_at = None;
            } else if calls_over_at.is_none() {
                calls_over_at = Some(now);
            }
            let answers_done = core.census().pending_requests == 0
                || calls_over_at.is_some_and(|at| now >= at + LAST_ANSWERS);
            let settled = active == 0 && answers_done;
            if settled || now >= until {
                if active > 0 {
                    tracing::warn!(
                        calls = active,
                        "stopping with calls still in progress; they will be closed as interrupted at the next start (or, sharing PostgreSQL, by another instance after dead_after)"
                    );
                }
                left_active = active;
                break;
            }
        }
    }
    sockets_cancel.cancel();
    admin_stop.cancel();
    replies_stop.cancel();
    drop(changes);
    worker_stop.cancel();
    // Every record the proxy produced reaches the database, or the spill file when the database
    // does not take it within `stop_write_timeout`: the stop ends in bounded time. systemd is
    // asked to wait while it does.
    let limit = config.database.stop_write_timeout + WRITER_MARGIN;
    let mut writing = tokio::task::spawn_blocking(move || writer.join());
    let since = tokio::time::Instant::now();
    let report = loop {
        match tokio::time::timeout(Duration::from_secs(5), &mut writing).await {
            Ok(Ok(Ok(report))) => break Some(report),
            Ok(_) => break None,
            Err(_) if since.elapsed() < limit => {
                notify(&[
                    sd_notify::NotifyState::ExtendTimeoutUsec(15_000_000),
                    sd_notify::NotifyState::Status("stopping: writing the last call records"),
                ]);
                tracing::info!(
                    waiting = health.waiting(),
                    "stopping: still writing call records to the database"
                );
            }
            Err(_) => {
                tracing::error!(
                    waiting = health.waiting(),
                    "the database writer did not finish in {}; the records it held are lost",
                    humantime::format_duration(limit)
                );
                break None;
            }
        }
    };
    // Heartbeats went on while the last records were written (that may outlast dead_after).
    cluster_stop.cancel();
    shared_stop.cancel();
    let everything_written = report
        .as_ref()
        .is_some_and(|r| !r.spill_left && r.lost == 0);
    if store.backend() == store::Backend::Postgres && left_active == 0 && everything_written {
        // Nothing of this run is left open: the name is free at once for the next start. (With
        // calls open or records in the spill file, the row stays: the next start of this
        // instance writes them back before anyone takes its calls.)
        if let Err(error) = store.leave_cluster(&config.cluster.instance, &token).await {
            tracing::warn!(error = %error, "could not release the instance name; the next start waits dead_after for it");
        }
    }
    let joined = tokio::task::spawn_blocking(move || worker.join());
    if tokio::time::timeout(Duration::from_secs(15), joined)
        .await
        .is_err()
    {
        tracing::warn!(
            "the delivery worker did not stop in 15 s; its deliveries resume at the next start"
        );
    }
    match report {
        Some(report) if report.spill_left || report.lost > 0 => tracing::warn!(
            spilled = report.spilled,
            lost = report.lost,
            file = %Spill::in_directory(&config.database.state_directory).path().display(),
            "sipdesk stopped; call records it could not write wait in the spill file for the next start"
        ),
        _ => tracing::info!("sipdesk stopped"),
    }
    Ok(())
}

/// Hands the proxy's live state, counters and census to the admin API.
fn publish(publisher: &control::Publisher, core: &mut Core) {
    let live = core.live(Now::system());
    publisher.publish(live, core.counters(), core.census());
}

/// Sends what the proxy produced and hands its records to the store writer.
fn flush(
    core: &mut Core,
    sockets: &mut Sockets,
    changes: &mpsc::UnboundedSender<Change>,
    media: &mut media::Sessions,
    shared: Option<&shared::SharedAgents>,
    texts_waiting: &mut HashMap<String, tokio::sync::oneshot::Sender<Option<String>>>,
) {
    for output in core.outputs() {
        match output {
            Output::Send { peer, bytes } => {
                if tracing::enabled!(tracing::Level::TRACE) {
                    let first = bytes.split(|b| *b == b'\r').next().unwrap_or_default();
                    tracing::trace!(%peer, first_line = %String::from_utf8_lossy(first), "send");
                }
                sockets.send(peer, bytes)
            }
            Output::Store(change) => {
                let _ = changes.send(change);
            }
            Output::Media(order) => media.order(order),
            Output::Claim(claim) => match shared {
                Some(shared) => shared.claim(claim),
                None => tracing::error!("a claim without shared agents"),
            },
            Output::Hold {
                extension,
                hold,
                version,
            } => {
                if let Some(shared) = shared {
                    shared.hold(extension, hold, version);
                }
            }
            Output::TextAnswered { id, failure } => {
                if let Some(waiting) = texts_waiting.remove(&id) {
                    let _ = waiting.send(failure);
                }
            }
        }
    }
}

/// Most datagrams handled per wake-up before the loop looks at its other sources.
const UDP_BURST: usize = 64;

async fn udp_readable(socket: Option<&tokio::net::UdpSocket>) -> std::io::Result<()> {
    match socket {
        Some(socket) => socket.readable().await,
        None => std::future::pending().await,
    }
}

fn trace_datagram(bytes: &[u8], from: SocketAddr) {
    if tracing::enabled!(tracing::Level::TRACE) {
        let first = bytes.split(|b| *b == b'\r').next().unwrap_or_default();
        tracing::trace!(%from, first_line = %String::from_utf8_lossy(first), "received");
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The configuration re-read, or `None` (logged) when it is invalid.
fn reload(path: &std::path::Path, running: &Config) -> Option<Arc<Config>> {
    match Config::load(path) {
        Ok(mut config) => {
            let changes = config.reloaded_over(running);
            let applied = if changes.applied.is_empty() {
                "nothing".to_owned()
            } else {
                changes.applied.join(", ")
            };
            if changes.need_restart.is_empty() {
                tracing::info!(changed = %applied, summary = config.summary(), "configuration reloaded");
            } else {
                tracing::warn!(
                    changed = %applied,
                    need_restart = %changes.need_restart.join(", "),
                    summary = config.summary(),
                    "configuration reloaded; some changes wait for a restart (systemctl restart sipdesk)"
                );
            }
            Some(Arc::new(config))
        }
        Err(error) => {
            tracing::error!("configuration not reloaded, the running one stays:\n{error}");
            None
        }
    }
}

fn spawn_signals(
    control: mpsc::UnboundedSender<Control>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = control.send(Control::Reload);
                }
                _ = terminate.recv() => cancel.cancel(),
                _ = interrupt.recv() => cancel.cancel(),
                _ = cancel.cancelled() => return,
            }
        }
    });
    Ok(())
}

/// How many helpdesk deliveries wait (pending or being sent), for the status line: counted in
/// the store every [`STATUS_EVERY`] off the proxy's loop, which only reads the last count.
fn count_pending(store: Store, cancel: CancellationToken) -> Arc<std::sync::atomic::AtomicU64> {
    let pending = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = pending.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {
                    if let Ok(backlog) = store.backlog().await {
                        let n = backlog.iter().map(|b| b.pending + b.in_progress).sum();
                        count.store(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    });
    pending
}
