//! Prometheus metrics (CONTRACT §6, "Operations"): every family `GET /metrics` serves is
//! registered here, once, in `Metrics::new`, and encoded by `prometheus-client` in the
//! classic text format (0.0.4).
//!
//! Two kinds of source. Cold paths (HTTP requests, store commits, health probes) are the
//! crate's own counters and histograms, created once here; the code that counts holds a
//! handle (`Probes`, `CommitTiming`) or asks `Metrics` (`http_request`). Everything else is
//! read when scraped, by a collector: the DNS counters summed over their per-worker blocks
//! (`dns::Stats`: the query path never calls this crate), the registry's sizes from the
//! published snapshot, and the process's CPU, memory and file descriptors from `/proc/self`.
//!
//! A new family is a field or a collector registered in `Metrics::new`. The registry's
//! collector also serves `signpost_etcd_up` and `signpost_registry_staleness_seconds` when the
//! store is shared (`Backend::link`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry as Families;

use crate::dns::Stats;
use crate::dns::stats::{
    BUCKET_BOUNDS_NS, FAMILY_NAMES, PROTO_NAMES, RCODE_NAMES, TYPE_NAMES, Totals,
};
use crate::model::Status;
use crate::registry::Registry;

/// The `Content-Type` of what `Metrics::encode` writes.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the store commit histogram, in seconds: an `fdatasync` takes from tens of
/// microseconds (a fast SSD) to tens of milliseconds; a shared store's round trip more.
const COMMIT_BUCKETS: [f64; 14] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 0.5,
    1.0,
];

/// `signpost_http_requests_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRequest {
    /// The route template (`/v1/services/{service}`), or `unmatched`.
    route: Cow<'static, str>,
    code: u16,
}

/// `signpost_health_probes_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Probe {
    kind: &'static str,
    result: &'static str,
}

/// Every metric family, registered once per server.
pub(crate) struct Metrics {
    families: Families,
    http_requests: Family<HttpRequest, Counter>,
    probes: Probes,
    commits: CommitTiming,
}

impl Metrics {
    /// Registers every family: the DNS counters of `dns`, the registry's sizes read from
    /// `registry` at each scrape, the cold-path counters, the build and the process.
    pub(crate) fn new(dns: Arc<Stats>, registry: Arc<Registry>) -> Arc<Self> {
        let mut families = Families::default();
        families.register(
            "signpost_build",
            "The running build: its version in a label, value 1",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        families.register_collector(Box::new(DnsCollector(dns)));
        families.register_collector(Box::new(RegistryCollector(registry)));

        let commits = CommitTiming(Histogram::new(COMMIT_BUCKETS));
        families.register(
            "signpost_store_commit_duration_seconds",
            "Time the store took to commit a batch of changes durably (log append and fdatasync, or the shared store's transaction)",
            commits.0.clone(),
        );
        let probes = Probes(Family::default());
        families.register(
            "signpost_health_probes",
            "HTTP and TCP health probes run, by check kind and the probe's result",
            probes.0.clone(),
        );
        let http_requests = Family::<HttpRequest, Counter>::default();
        families.register(
            "signpost_http_requests",
            "HTTP requests answered, by route template (unmatched: refused before routing, or no route) and status code",
            http_requests.clone(),
        );
        #[cfg(target_os = "linux")]
        families.register_collector(Box::new(ProcessCollector::new()));
        Arc::new(Self {
            families,
            http_requests,
            probes,
            commits,
        })
    }

    /// Every family in the Prometheus text format (0.0.4).
    pub(crate) fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String fails only if a collector fails, and ours do not.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.families)
        {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }

    /// Counts one HTTP response on `route` (a route template, `None` when no route took the
    /// request) with status `code`.
    pub(crate) fn http_request(&self, route: Option<Cow<'static, str>>, code: u16) {
        let route = route.unwrap_or(Cow::Borrowed("unmatched"));
        self.http_requests
            .get_or_create(&HttpRequest { route, code })
            .inc();
    }

    /// The handle health checks count their probes with.
    pub(crate) fn probes(&self) -> Probes {
        self.probes.clone()
    }

    /// The handle the registry writer times store commits with.
    pub(crate) fn commit_timing(&self) -> CommitTiming {
        self.commits.clone()
    }
}

/// Counts health probes (`signpost_health_probes_total`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Probes(Family<Probe, Counter>);

/// The kind of a probed check: the `kind` label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProbeKind {
    Http,
    Tcp,
}

impl Probes {
    /// One probe of `kind` came back `result`.
    pub(crate) fn count(&self, kind: ProbeKind, result: Status) {
        let kind = match kind {
            ProbeKind::Http => "http",
            ProbeKind::Tcp => "tcp",
        };
        self.0
            .get_or_create(&Probe {
                kind,
                result: result.as_str(),
            })
            .inc();
    }
}

/// Times store commits (`signpost_store_commit_duration_seconds`). The default is a histogram
/// registered nowhere: a writer not wired to a server's metrics (tests) times into it unseen.
#[derive(Clone, Debug)]
pub(crate) struct CommitTiming(Histogram);

impl Default for CommitTiming {
    fn default() -> Self {
        Self(Histogram::new(COMMIT_BUCKETS))
    }
}

impl CommitTiming {
    /// One commit took `took`.
    pub(crate) fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

/// Writes one counter family from `(labels, value)` pairs, the descriptor only when there is
/// a sample (as the crate does for an empty `Family`).
fn counter_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().filter(|(_, v)| *v > 0).peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a gauge without labels.
fn gauge<V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The DNS counters, summed over the workers' blocks at each scrape.
struct DnsCollector(Arc<Stats>);

impl std::fmt::Debug for DnsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsCollector")
    }
}

impl Collector for DnsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t: Totals = self.0.totals();
        let requests = t.requests.iter().enumerate().flat_map(|(p, families)| {
            families.iter().enumerate().flat_map(move |(f, types)| {
                types.iter().enumerate().map(move |(k, v)| {
                    (
                        [
                            ("proto", PROTO_NAMES[p]),
                            ("family", FAMILY_NAMES[f]),
                            ("type", TYPE_NAMES[k]),
                        ],
                        *v,
                    )
                })
            })
        });
        counter_family(
            &mut encoder,
            "signpost_dns_requests",
            "DNS queries answered or forwarded, by transport, address family (1 IPv4, 2 IPv6) and question type.",
            requests,
        )?;
        let by_rcode = |counts: [u64; RCODE_NAMES.len()]| {
            counts
                .into_iter()
                .enumerate()
                .map(|(k, v)| ([("rcode", RCODE_NAMES[k])], v))
        };
        counter_family(
            &mut encoder,
            "signpost_dns_responses",
            "DNS responses by RCODE; NODATA is NOERROR with an empty answer section.",
            by_rcode(t.responses),
        )?;
        let truncated = ConstCounter::new(t.truncated);
        truncated.encode(encoder.encode_descriptor(
            "signpost_dns_truncated",
            "DNS responses sent with TC set (the answer did not fit the UDP payload size).",
            None,
            MetricType::Counter,
        )?)?;
        let buckets: Vec<(f64, u64)> = BUCKET_BOUNDS_NS
            .iter()
            .map(|ns| *ns as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(t.latency)
            .collect();
        let count = t.latency.iter().sum();
        encoder
            .encode_descriptor(
                "signpost_dns_request_duration_seconds",
                "Time from a DNS query's arrival to its response being sent.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(t.latency_sum_ns as f64 / 1e9, count, &buckets, None)?;
        counter_family(
            &mut encoder,
            "signpost_dns_forward_requests",
            "DNS queries forwarded upstream, by the RCODE their client got (SERVFAIL when no upstream answered).",
            by_rcode(t.forwarded),
        )?;
        let entered = ConstCounter::new(t.fail_open_entered);
        entered.encode(encoder.encode_descriptor(
            "signpost_dns_fail_open",
            "Times a service started failing open: no instance in service, so its DNS answers list every instance not in maintenance.",
            None,
            MetricType::Counter,
        )?)?;
        gauge(
            &mut encoder,
            "signpost_dns_fail_open_services",
            "Services failing open now.",
            t.fail_open_services as i64,
        )
    }
}

/// The registry's sizes, read from the published snapshot at each scrape.
struct RegistryCollector(Arc<Registry>);

impl std::fmt::Debug for RegistryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryCollector")
    }
}

/// The `status` label of `signpost_registry_instances`: the health statuses, and maintenance
/// (which drains an instance whatever its health).
const INSTANCE_STATUSES: [&str; 4] = ["passing", "warning", "critical", "maintenance"];

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.0.snapshot();
        let mut by_status = [0i64; INSTANCE_STATUSES.len()];
        for e in snap.entries() {
            let slot = if e.instance.maintenance().is_some() {
                3
            } else {
                match e.health.status {
                    Status::Passing => 0,
                    Status::Warning => 1,
                    Status::Critical => 2,
                }
            };
            by_status[slot] += 1;
        }
        let mut family = encoder.encode_descriptor(
            "signpost_registry_instances",
            "Registered instances by health status; an instance in maintenance counts as maintenance whatever its health.",
            None,
            MetricType::Gauge,
        )?;
        for (status, n) in INSTANCE_STATUSES.iter().zip(by_status) {
            ConstGauge::new(n).encode(family.encode_family(&[("status", *status)])?)?;
        }
        gauge(
            &mut encoder,
            "signpost_registry_services",
            "Services with at least one registered instance.",
            snap.services.len() as i64,
        )?;
        gauge(
            &mut encoder,
            "signpost_registry_index",
            "The registry's index (X-Signpost-Index): grows with every change.",
            snap.index,
        )?;
        // Replicas on etcd only.
        if let Some(link) = self.0.store_link() {
            gauge(
                &mut encoder,
                "signpost_etcd_up",
                "1 while this replica reaches etcd (its last request or watch message got through), else 0.",
                i64::from(link.up),
            )?;
            gauge(
                &mut encoder,
                "signpost_registry_staleness_seconds",
                "Seconds since etcd last confirmed this replica's copy of the registry current (about 1 while reachable).",
                link.staleness.as_secs_f64(),
            )?;
        }
        Ok(())
    }
}

/// The process's CPU time, memory and file descriptors, as the Go and Python clients name
/// them, read from `/proc/self` at each scrape (`procfs`).
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct ProcessCollector {
    /// Clock ticks per second and page size: fixed for the process's life.
    ticks: f64,
    page: u64,
    /// Boot time (Unix seconds): `stat`'s start time counts ticks from it.
    boot: Option<u64>,
}

#[cfg(target_os = "linux")]
impl ProcessCollector {
    fn new() -> Self {
        // From libc and /proc/stat rather than `procfs::ticks_per_second`, `page_size` and
        // `boot_time_secs`, which read the ELF auxiliary vector through rustix in a way that
        // crashes under valgrind (callgrind is how the query path's cost is measured).
        // SAFETY: sysconf reads a configuration value; it has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Self {
            ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
            page: if page > 0 { page as u64 } else { 4096 },
            boot: std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse().ok())
            }),
        }
    }
}

#[cfg(target_os = "linux")]
impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use procfs::process::{LimitValue, Process};
        let me = match Process::myself() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "process metrics: /proc/self");
                return Ok(());
            }
        };
        if let Ok(stat) = me.stat() {
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / self.ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stat.rss * self.page,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.vsize,
            )?;
            if let Some(boot) = self.boot {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + stat.starttime as f64 / self.ticks,
                )?;
            }
        }
        if let Ok(n) = me.fd_count() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                n as u64,
            )?;
        }
        if let Ok(limits) = me.limits() {
            let max = match limits.max_open_files.soft_limit {
                LimitValue::Value(v) => v as f64,
                LimitValue::Unlimited => f64::INFINITY,
            };
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        Ok(())
    }
}
