//! The DNS interface: the name table built from registry snapshots (`table`, `names`), static
//! zones (`zonefile`), protocol policy (`handler`), the query reader (`query`), the response
//! writer (`answer`), the protocol's numbers (`wire`), response-rate limiting (`rrl`), the
//! per-worker counters (`stats`) and the UDP and TCP transports. `DnsView` is the serving state the transports share: the current
//! table and the rate limiter.
//!
//! Only this module imports hickory, to parse zone files and encode their RDATA (and, in
//! tests, to build and read messages); queries are read by `query`.

pub(crate) mod answer;
#[cfg(test)]
mod battery;
mod dynamic;
pub(crate) mod forward;
pub mod handler;
mod name_map;
pub(crate) mod names;
mod notify;
pub(crate) mod query;
pub(crate) mod routing;
pub(crate) mod rrl;
pub(crate) mod stats;
pub(crate) mod table;
mod tcp;
pub(crate) mod transfer;
mod udp;
pub(crate) mod wire;
pub(crate) mod zonefile;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::registry::{Changed, Snapshot, View};
use table::{Settings, Statics};

pub(crate) use stats::Stats;
pub use table::Table;
pub use zonefile::ZoneError;

/// The DNS side of the registry: rebuilds the name table from every snapshot and hands the
/// latest to queries without locks.
pub struct DnsView {
    statics: Statics,
    /// The dynamic names, updated per changed service. Locked only by the registry writer's
    /// `View` calls, on its task; queries never touch it, they read the table it last
    /// published.
    builder: std::sync::Mutex<Prepared>,
    /// The table queries read. Stored by the registry writer (via `publish`), loaded by every
    /// query; readers never wait for writers.
    table: ArcSwap<Table>,
    /// UDP response-rate limiting; `None` when `dns.rate_limit` is 0. Its `dropped` and
    /// `slipped` counters live here for a metrics endpoint to read.
    rrl: Option<rrl::Limiter>,
    /// Who may transfer the zones.
    pub(crate) transfer: transfer::Policy,
    /// What each published version changed, for IXFR; written by `publish` before the
    /// index is stored, read by transfers.
    pub(crate) history: std::sync::Mutex<transfer::History>,
    /// The published index, for the NOTIFY tasks to wait on.
    published: tokio::sync::watch::Sender<u64>,
    /// `dns.notify` and `dns.notify_interval`.
    notify: Vec<SocketAddr>,
    notify_interval: Duration,
    /// Fail-open episodes, counted by the builder.
    fail_open: Arc<stats::FailOpen>,
}

impl DnsView {
    /// Loads the zone files of `config` and prepares the static part of the table.
    pub fn new(config: &Config) -> Result<Arc<Self>, ZoneError> {
        let zones = zonefile::load_dir(&config.dns.zones_dir)?;
        let settings = Settings {
            domain: names::from_dotted(&config.dns.domain).ok_or_else(|| ZoneError {
                path: config.dns.zones_dir.clone(),
                message: format!("dns.domain {:?} is not a name", config.dns.domain),
            })?,
            ttl: config.dns.ttl,
            negative_ttl: config.dns.negative_ttl,
            include_warning: config.dns.include_warning,
            max_answers: config.dns.max_answers,
            max_udp_payload: config.dns.max_udp_payload,
            locality: routing::Locality::new(&config.dns.locality),
            fail_open: config.dns.fail_open,
        };
        let statics = Statics::new(settings, &zones, 0);
        let fail_open = Arc::new(stats::FailOpen::default());
        let builder = dynamic::Builder::counting(fail_open.clone());
        let table = ArcSwap::from_pointee(dynamic::Builder::empty_table(&statics));
        let transfer = transfer::Policy::new(config).map_err(|message| ZoneError {
            path: config.dns.zones_dir.clone(),
            message,
        })?;
        Ok(Arc::new(Self {
            statics,
            builder: std::sync::Mutex::new(Prepared {
                builder,
                ahead: false,
            }),
            table,
            rrl: rrl::Limiter::new(&config.dns),
            transfer,
            history: std::sync::Mutex::new(transfer::History::default()),
            published: tokio::sync::watch::channel(0).0,
            notify: config.dns.notify.clone(),
            notify_interval: config.dns.notify_interval,
            fail_open,
        }))
    }

    /// The fail-open counts the name builder keeps, for `/metrics` (`Stats::with_fail_open`).
    pub(crate) fn fail_open(&self) -> Arc<stats::FailOpen> {
        self.fail_open.clone()
    }

    /// The current table.
    pub fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// The UDP response-rate limiter, when `dns.rate_limit` is on.
    pub(crate) fn rrl(&self) -> Option<&rrl::Limiter> {
        self.rrl.as_ref()
    }

    /// Brings the working copy of the names in line with `snapshot` for the services of
    /// `keys`; readers do not see it before `Builder::publish`.
    fn set_services(
        &self,
        b: &mut Prepared,
        snapshot: &Snapshot,
        keys: &[crate::model::InstanceKey],
    ) {
        let services: std::collections::BTreeSet<_> = keys.iter().map(|k| &k.service).collect();
        for svc in services {
            b.builder
                .set_service(&self.statics, svc, snapshot.services.get(svc).map(|s| &**s));
        }
    }
}

/// The builder and whether its working copy already holds the batch being committed.
struct Prepared {
    builder: dynamic::Builder,
    ahead: bool,
}

impl View for DnsView {
    fn prepare(&self, snapshot: &Snapshot, changed: Changed<'_>) {
        let mut b = self.builder.lock().expect("builder lock");
        if let Changed::Some(keys) = changed {
            self.set_services(&mut b, snapshot, keys);
            b.ahead = true;
        }
    }

    fn discard(&self, committed: &Snapshot, changed: Changed<'_>) {
        let mut b = self.builder.lock().expect("builder lock");
        if b.ahead
            && let Changed::Some(keys) = changed
        {
            // The same services set back to what the registry still holds.
            self.set_services(&mut b, committed, keys);
        }
        b.ahead = false;
    }

    fn publish(&self, snapshot: &Snapshot, changed: Changed<'_>) {
        let mut b = self.builder.lock().expect("builder lock");
        match changed {
            Changed::All => b.builder.set_all(&self.statics, snapshot),
            Changed::Some(keys) if !b.ahead => self.set_services(&mut b, snapshot, keys),
            Changed::Some(_) => {}
        }
        b.ahead = false;
        let published = b.builder.publish(&self.statics, |t| self.table.swap(t));
        let from = self
            .statics
            .index
            .load(std::sync::atomic::Ordering::Acquire);
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(&self.table.load(), from, snapshot.index, published);
        // After the swap and the history: a query or transfer that reads this index's serial
        // reads this snapshot's names.
        self.statics
            .index
            .store(snapshot.index, std::sync::atomic::Ordering::Release);
        self.published.send_replace(snapshot.index);
    }
}

/// A DNS address bound for both UDP and TCP: one UDP socket per worker (SO_REUSEPORT, so
/// the kernel spreads datagrams over them and no two workers contend for one socket), one
/// TCP listener.
pub(crate) struct Bound {
    udp: Vec<std::net::UdpSocket>,
    tcp: std::net::TcpListener,
}

impl Bound {
    /// The UDP sockets, one per worker thread.
    pub(crate) fn udp_workers(&self) -> usize {
        self.udp.len()
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .expect("a bound socket has a local address")
    }
}

/// A UDP socket on `addr` with SO_REUSEPORT, so several can share the address.
fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // A larger receive queue than the default (~200 KiB, a few hundred datagrams) rides out a
    // worker descheduled for a few milliseconds at tens of thousands of queries per second,
    // as NSD and Unbound do; the kernel caps it at net.core.rmem_max, so it is best-effort.
    let _ = s.set_recv_buffer_size(UDP_RECV_BUFFER);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// The receive buffer asked for each UDP socket.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// The number of UDP workers per address: one per core.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Binds UDP (`workers` sockets) and TCP on `addr`. With port 0 both get the same free port.
pub(crate) fn bind(addr: SocketAddr, workers: usize) -> Result<Bound, String> {
    let fail =
        |proto: &str, a: SocketAddr, e: std::io::Error| format!("cannot bind DNS {proto} {a}: {e}");
    let tries = if addr.port() == 0 { 50 } else { 1 };
    let mut last = String::new();
    for _ in 0..tries {
        let first = if addr.port() == 0 {
            // A port picked for a socket that has SO_REUSEPORT set may be one another server
            // of the same user already holds with it (Linux counts the two as sharing it), and
            // the kernel would then split this server's datagrams with that one. A probe
            // without it gets a port nobody holds; the group binds that port right after.
            let probe = std::net::UdpSocket::bind(addr).map_err(|e| fail("UDP", addr, e))?;
            let port = probe.local_addr().map_err(|e| fail("UDP", addr, e))?.port();
            drop(probe);
            match reuseport_udp(SocketAddr::new(addr.ip(), port)) {
                Ok(s) => s,
                Err(e) => {
                    last = fail("UDP", addr, e);
                    continue;
                }
            }
        } else {
            reuseport_udp(addr).map_err(|e| fail("UDP", addr, e))?
        };
        let at = first.local_addr().map_err(|e| fail("UDP", addr, e))?;
        match std::net::TcpListener::bind(at) {
            Ok(tcp) => {
                tcp.set_nonblocking(true).map_err(|e| fail("TCP", at, e))?;
                let mut udp = vec![first];
                while udp.len() < workers.max(1) {
                    udp.push(reuseport_udp(at).map_err(|e| fail("UDP", at, e))?);
                }
                return Ok(Bound { udp, tcp });
            }
            Err(e) => last = fail("TCP", at, e),
        }
    }
    Err(last)
}

/// Limits of the TCP side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub max_connections: usize,
    /// Most connections from one client address (`dns.max_tcp_connections_per_client`).
    pub max_per_client: usize,
    pub idle_timeout: Duration,
}

/// Serves DNS on every bound address until `shutdown`; tasks join `tracker`. `stats` must
/// have a block for every UDP socket of `bound` (`Bound::udp_workers`): without, nothing is
/// started and the error says so.
pub(crate) fn serve(
    bound: Vec<Bound>,
    view: Arc<DnsView>,
    forwarder: Option<Arc<forward::Forwarder>>,
    limits: TcpLimits,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<()> {
    let sockets: usize = bound.iter().map(Bound::udp_workers).sum();
    if stats.workers() < sockets {
        return Err(std::io::Error::other(format!(
            "DNS counters for {} UDP workers, {sockets} sockets bound",
            stats.workers()
        )));
    }
    let runtime = tokio::runtime::Handle::current();
    // One count per client address for every listener: the cap is the client's, not a port's.
    let clients = Arc::new(tcp::Clients::default());
    let mut worker = 0;
    for b in bound {
        for socket in b.udp {
            let (view, forwarder, stats, shutdown, runtime) = (
                view.clone(),
                forwarder.clone(),
                stats.clone(),
                shutdown.clone(),
                runtime.clone(),
            );
            tracker.spawn_blocking(move || {
                udp::run(socket, view, forwarder, stats, worker, shutdown, runtime)
            });
            worker += 1;
        }
        let tcp = tokio::net::TcpListener::from_std(b.tcp)?;
        tracker.spawn(tcp::run(
            tcp,
            view.clone(),
            forwarder.clone(),
            limits,
            clients.clone(),
            stats.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    for secondary in view.notify.clone() {
        tracker.spawn(notify::run(
            view.clone(),
            secondary,
            view.notify_interval,
            view.published.subscribe(),
            shutdown.clone(),
        ));
    }
    Ok(())
}
