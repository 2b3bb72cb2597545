//! signpost: service discovery with a DNS interface.
//!
//! Instances register over HTTP; signpost keeps them durably, tracks their health, and
//! answers DNS questions about the healthy ones from an immutable snapshot.
//!
//! # Layout
//!
//! - `model`: validated names, `Instance`, `Health`, `CheckSpec`; no I/O.
//! - `config`: the TOML configuration and its validation.
//! - `store`: the `Backend` trait and the embedded redb backend.
//! - `registry`: the one writer; publishes `Snapshot`s and rebuilds `View`s.
//! - `health`: the checker (HTTP, TCP), TTL and `deregister_after` deadlines.
//! - `dns`: the name table, protocol policy, response writer, UDP/TCP transports.
//! - `http`: the axum API and its hyper accept loop.
//! - `lifecycle`: signals and ordered shutdown.
//! - `metrics`: the Prometheus families `/metrics` serves, registered once.
//! - `memory`: freed start-up memory handed back to the system.
//! - `files`: the open-file limit fitted to the configured connection caps.
//!
//! `start` wires them; `check_config` validates a config and its zone files.
//!
//! The public modules are what the binary, the integration tests and the benchmarks' drivers
//! use: `start`, `check_config`, `Error`, `Running`, the configuration, the domain model, the
//! store and registry handles, and the DNS handler (for `examples/query_cost`); `health` and
//! `http` are private to the crate, and so is everything else inside the public modules
//! (`pub(crate)` by default).

#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod dns;
mod files;
mod health;
mod http;
pub mod lifecycle;
mod memory;
mod metrics;
pub mod model;
pub mod registry;
pub mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::{Config, ConfigError};
use dns::zonefile::ZoneError;
use registry::Registry;
use store::StoreError;

/// Why signpost could not start or stopped badly. One line each, naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot be read or breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A zone file in `dns.zones_dir` cannot be served.
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// The store cannot be opened or loaded, or its final flush failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A DNS or HTTP address cannot be bound; the message names it.
    #[error("{0}")]
    Bind(String),
    /// Any other I/O failure, such as the HTTP server failing.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The registry's writer stopped abnormally (it panicked): writes after that failed.
    #[error("the registry writer stopped abnormally: {0}")]
    Writer(String),
}

/// Validates a config file and every zone file it points at.
pub fn check_config(path: &Path) -> Result<Config, Error> {
    let cfg = Config::load(path)?;
    dns::DnsView::new(&cfg)?;
    dns::forward::Forwarder::from_config(&cfg, &cfg.dns.listen).map_err(|message| {
        Error::Config(ConfigError::Invalid {
            key: "dns.forward",
            message,
        })
    })?;
    Ok(cfg)
}

/// A started server: its bound addresses and the handle to stop and await it.
pub struct Running {
    /// The DNS addresses bound, UDP and TCP each (port 0 resolved).
    pub dns_addrs: Vec<SocketAddr>,
    /// The HTTP API's address (port 0 resolved).
    pub http_addr: SocketAddr,
    /// The registry the server writes and serves from.
    pub registry: Arc<Registry>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    writer: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for shutdown to be requested, then stops in order: listeners stop accepting,
    /// in-flight DNS and HTTP work finishes, checks stop, the registry writer commits what is
    /// pending, flushes the store and stops.
    pub async fn wait(self) -> Result<(), Error> {
        self.shutdown.cancelled().await;
        self.tracker.close();
        let http = self.http.await;
        self.tracker.wait().await;
        let flushed = self.registry.flush().await;
        // A writer that panicked is reported, not hidden behind a clean exit: the flush above
        // then found it gone and had nothing to say.
        if let Err(e) = self.writer.await {
            return Err(Error::Writer(e.to_string()));
        }
        flushed?;
        match http {
            Ok(r) => r?,
            Err(e) => return Err(Error::Io(std::io::Error::other(e))),
        }
        Ok(())
    }
}

/// Opens the configured store: the embedded one in `registry.data_dir`, or a connection to
/// the etcd cluster, as a replica's member when `member` (a server), or only to read and
/// write the registry (`export`, `import`).
pub async fn open_store(config: &Config, member: bool) -> Result<Arc<dyn store::Backend>, Error> {
    match config.registry.backend {
        config::Backend::Embedded => {
            let dir = config.registry.data_dir.clone();
            let store = tokio::task::spawn_blocking(move || store::Embedded::open(&dir))
                .await
                .map_err(std::io::Error::other)??;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "etcd")]
        config::Backend::Etcd => {
            let etcd = &config.registry.etcd;
            let name = etcd.name.clone().unwrap_or_else(host_name);
            let store = store::Etcd::connect(etcd, name, member, CancellationToken::new()).await?;
            Ok(store)
        }
        #[cfg(not(feature = "etcd"))]
        config::Backend::Etcd => {
            let _ = member; // only the etcd backend has members
            Err(Error::Config(ConfigError::Invalid {
                key: "registry.backend",
                message: config::NO_ETCD.to_string(),
            }))
        }
    }
}

/// This machine's host name: a replica's member name and the Consul API's node name unless
/// configured.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // (or truncates, which the length bound below tolerates).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if name.is_empty() {
        "signpost".to_string()
    } else {
        name
    }
}

/// Opens the store, binds every listener and starts serving. Returns once everything is
/// bound, so callers (tests, the binary) can read the addresses.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    files::fit_open_file_limit(&config);
    let view = dns::DnsView::new(&config)?;
    let backend = open_store(&config, true).await?;
    let checker = Arc::new(health::checker::Supervisor::new(backend.owners()));
    let (registry, writer) = Registry::open(backend, vec![view.clone(), checker.clone()]).await?;
    memory::release_free_memory();

    // Every socket is bound before any task is spawned: a failed bind leaves nothing running.
    let mut bound = Vec::new();
    for addr in &config.dns.listen {
        bound.push(dns::bind(*addr, dns::workers()).map_err(Error::Bind)?);
    }
    let dns_addrs: Vec<SocketAddr> = bound.iter().map(dns::Bound::local_addr).collect();
    let forwarder = dns::forward::Forwarder::from_config(&config, &dns_addrs)
        .map_err(|e| {
            Error::Config(config::ConfigError::Invalid {
                key: "dns.forward",
                message: e,
            })
        })?
        .map(Arc::new);
    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| Error::Bind(format!("cannot bind HTTP {}: {e}", config.http.listen)))?;
    let http_addr = http_listener.local_addr()?;

    let dns_stats = Arc::new(
        dns::Stats::new(bound.iter().map(dns::Bound::udp_workers).sum())
            .with_fail_open(view.fail_open()),
    );
    let metrics = metrics::Metrics::new(dns_stats.clone(), registry.clone());
    let writer = writer.timing_commits(metrics.commit_timing());
    // Not in the tracker: the writer serves until `Running::wait` flushes it, after every
    // tracked task (and HTTP) has drained.
    let writer = tokio::spawn(writer.run(shutdown.clone()));
    let tracker = TaskTracker::new();
    if let Some(f) = &forwarder {
        tracing::info!(upstreams = ?f.upstreams(), "forwarding names outside signpost's zones");
    }
    dns::serve(
        bound,
        view,
        forwarder,
        dns::TcpLimits {
            max_connections: config.dns.max_tcp_connections,
            max_per_client: config.dns.max_tcp_connections_per_client,
            idle_timeout: config.tcp_idle_timeout(),
        },
        dns_stats,
        shutdown.clone(),
        &tracker,
    )?;
    tracker.spawn(checker.clone().run(
        registry.clone(),
        config.health.max_concurrent_checks,
        metrics.probes(),
        shutdown.clone(),
        tracker.clone(),
    ));
    let app = http::app(
        http::AppState {
            registry: registry.clone(),
            max_wait: config.http.max_wait,
            shutdown: shutdown.clone(),
            body_timeout: config.http_body_timeout(),
            max_body: config.http.max_body_bytes,
            metrics,
            dashboard: http::Dashboard::new(
                &config.dns.domain,
                &dns_addrs,
                config.http.token.as_ref(),
            ),
            consul: Arc::new(http::ConsulAgent::new(
                &config.consul,
                &host_name(),
                http_addr,
            )),
            watches: Default::default(),
        },
        &config.http,
    );
    let limits = http::Limits {
        max_connections: config.http.max_connections,
        timeouts: http::Timeouts {
            header: config.http_header_timeout(),
            idle: config.http_idle_timeout(),
        },
    };
    let http = tokio::spawn(http::serve(http_listener, app, limits, shutdown.clone()));

    let snap = registry.snapshot();
    let dns_list = dns_addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        dns = %dns_list,
        http = %http_addr,
        domain = %config.dns.domain,
        instances = snap.entries().count(),
        index = snap.index,
        "signpost ready"
    );
    Ok(Running {
        dns_addrs,
        http_addr,
        registry,
        shutdown,
        tracker,
        http,
        writer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view that panics on its first publish after start-up: the writer task dies with it.
    struct Panics;

    impl registry::View for Panics {
        fn publish(&self, _: &registry::Snapshot, changed: registry::Changed<'_>) {
            if let registry::Changed::Some(_) = changed {
                panic!("a view failed");
            }
        }
    }

    /// A writer that panicked is an error at shutdown (exit status 1), not a clean exit.
    #[tokio::test]
    async fn a_panicked_writer_is_reported_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(store::Embedded::open(dir.path()).unwrap());
        let (registry, writer) = Registry::open(store, vec![Arc::new(Panics)]).await.unwrap();
        let shutdown = CancellationToken::new();
        let writer = tokio::spawn(writer.run(shutdown.clone()));
        let inst = model::testing::instance("web", "a").build();
        let err = registry.register(inst).await.unwrap_err();
        assert!(matches!(err, registry::RegistryError::Stopped), "{err}");
        let running = Running {
            dns_addrs: Vec::new(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            registry,
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
            http: tokio::spawn(async { Ok(()) }),
            writer,
        };
        shutdown.cancel();
        let e = running.wait().await.expect_err("must report the writer");
        assert!(matches!(e, Error::Writer(_)), "{e}");
        assert!(e.to_string().contains("stopped abnormally"), "{e}");
    }
}
