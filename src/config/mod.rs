//! The configuration file (`config/signpost.toml`): its TOML structs with the contract's
//! defaults, and the validation that turns a file into a `Config` or a `ConfigError` naming
//! the key at fault. Relative paths are taken from the working directory, as `./data` is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod value;

use value::duration;
pub use value::{Backend, LogFormat, Network, Secret, Upstream};

/// What went wrong reading a configuration; every message names the file or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (an unknown key, a wrong type).
    #[error("config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// A key's value breaks a rule.
    #[error("config key {key}: {message}")]
    Invalid {
        /// The dotted key at fault (`dns.rate_limit`).
        key: &'static str,
        /// What the value must be instead.
        message: String,
    },
}

/// The whole configuration, every key optional with its default.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[dns]`: the DNS listeners, zones and answer policy.
    pub dns: DnsConfig,
    /// `[http]`: the HTTP API's address and limits.
    pub http: HttpConfig,
    /// `[registry]`: where registrations are kept.
    pub registry: RegistryConfig,
    /// `[health]`: how health checks run.
    pub health: HealthConfig,
    /// `[log]`: how logs are written.
    pub log: LogConfig,
    /// `[consul]`: the synthetic node of the Consul-compatible API.
    pub consul: ConsulConfig,
}

/// `[consul]`: what the Consul-compatible API (CONTRACT §5) calls the one synthetic node that
/// holds every instance, and its datacenter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsulConfig {
    /// The datacenter name (`dc1`): `/v1/agent/self` reports it, and a query naming another
    /// (`?dc=`) is answered 500 "No path to datacenter", as Consul does.
    pub datacenter: String,
    /// The node's name; the host name when unset.
    pub node: Option<String>,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            datacenter: "dc1".to_string(),
            node: None,
        }
    }
}

/// `[health]`: how health checks run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Most HTTP/TCP probes in flight at once; further probes wait for a slot.
    pub max_concurrent_checks: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            max_concurrent_checks: 1024,
        }
    }
}

/// `[dns]`: listeners, the served domain and zones, answer policy, TCP limits, rate limiting and forwarding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Addresses to answer DNS on, UDP and TCP each.
    pub listen: Vec<SocketAddr>,
    /// The base domain `D`; a trailing dot is added when missing.
    pub domain: String,
    /// TTL of service and instance answers, seconds.
    pub ttl: u32,
    /// TTL of negative answers: the SOA minimum and the SOA's own TTL there, seconds.
    pub negative_ttl: u32,
    /// Hand out `warning` instances too.
    pub include_warning: bool,
    /// Most records in one answer section; 0 means only the message size limits it.
    pub max_answers: usize,
    /// Folder of RFC 1035 zone files (`*.zone`) served as static zones.
    pub zones_dir: PathBuf,
    /// Most TCP connections served at once; further ones wait in the kernel's backlog.
    pub max_tcp_connections: usize,
    /// Most TCP connections from one client address at once; one more is closed at once.
    pub max_tcp_connections_per_client: usize,
    /// A TCP connection idle this long (no complete query) is closed.
    #[serde(deserialize_with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// Response-rate limiting (RRL) of UDP answers: responses per second per client prefix
    /// and response class (`dns::rrl`). 0: off.
    pub rate_limit: u32,
    /// Every Nth response over the rate is sent truncated (TC, no records) instead of being
    /// dropped, so a real client retries over TCP. 0: drop all; 1: truncate all.
    pub rate_limit_slip: u32,
    /// Prefix length that groups IPv4 clients into one rate-limited source.
    pub rate_limit_ipv4_prefix: u8,
    /// Prefix length that groups IPv6 clients into one rate-limited source.
    pub rate_limit_ipv6_prefix: u8,
    /// Client networks (CIDR) never rate-limited.
    pub rate_limit_exempt: Vec<Network>,
    /// Forwarding of names outside every zone.
    pub forward: ForwardConfig,
    /// The largest UDP answer, bytes, and the payload size advertised in replies' OPT: a
    /// client advertising more still gets at most this; one without EDNS gets 512.
    pub max_udp_payload: u16,
    /// Who may transfer the zones (AXFR, IXFR).
    pub transfer: TransferConfig,
    /// Secondaries (`IP:PORT`) sent a NOTIFY when D changes.
    pub notify: Vec<SocketAddr>,
    /// At most one NOTIFY per this interval to each secondary; also the first retry's wait.
    #[serde(deserialize_with = "duration")]
    pub notify_interval: Duration,
    /// Client networks by zone: a client in one gets that zone's instances (`zone`
    /// metadata) first. Empty: answers do not depend on the client's address.
    pub locality: Vec<LocalityConfig>,
    /// Every service fails open: with no instance in service, its names answer with every
    /// instance not in maintenance instead of NXDOMAIN (a registration's `fail_open` sets it
    /// for its own service).
    pub fail_open: bool,
}

/// One entry of `dns.locality`: the client networks of one zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityConfig {
    /// Client networks (CIDR) in the zone.
    pub networks: Vec<Network>,
    /// The zone's name, as instances carry it in their `zone` metadata.
    pub zone: String,
}

/// Most networks `dns.locality` may list in all: each query from a client is matched
/// against every one.
pub const MAX_LOCALITY_NETWORKS: usize = 256;
/// Most zones `dns.locality` may name: each keeps its own answer order per service name.
pub const MAX_LOCALITY_ZONES: usize = 32;

/// `[dns.transfer]`: the clients that may transfer signpost's zones, and the key they sign
/// with.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TransferConfig {
    /// Client networks (CIDR) that may transfer; others get REFUSED. Empty: nobody.
    pub allow: Vec<Network>,
    /// When set, a transfer must also be signed with this TSIG key (RFC 8945), and every
    /// message of the answer is signed with it.
    pub tsig: Option<TsigConfig>,
}

/// `dns.transfer.tsig`: one TSIG key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigConfig {
    /// The key's name, as the secondaries name it (`transfer.`).
    pub name: String,
    /// Its algorithm: `hmac-sha256`.
    pub algorithm: String,
    /// The shared secret, base64 (as `tsig-keygen` and `keymgr -t` print it).
    pub secret: Secret,
}

impl TsigConfig {
    /// The secret's bytes (checked to decode when the config was validated).
    pub fn key(&self) -> Vec<u8> {
        data_encoding::BASE64
            .decode(self.secret.0.trim().as_bytes())
            .unwrap_or_default()
    }
}

/// `[dns.forward]`: where names outside signpost's zones go, and for whom.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Upstream servers: `IP` (port 53) or `IP:PORT` (`[V6]:PORT`), or `"resolv.conf"` for
    /// the nameservers of `resolv_conf`. Empty: forwarding off, outside names REFUSED.
    pub upstreams: Vec<Upstream>,
    /// The file `"resolv.conf"` in `upstreams` stands for.
    pub resolv_conf: PathBuf,
    /// Client networks (CIDR) that may use forwarding; others get REFUSED.
    pub allow: Vec<Network>,
    /// How long to wait for one upstream's answer, e.g. `"2s"`.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Tries per query, each on the next upstream; then SERVFAIL.
    pub attempts: u32,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            allow: ["127.0.0.0/8", "::1/128"]
                .into_iter()
                .filter_map(Network::parse)
                .collect(),
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8600))],
            domain: "internal.".into(),
            ttl: 5,
            negative_ttl: 5,
            include_warning: false,
            max_answers: 0,
            zones_dir: PathBuf::from("zones"),
            max_tcp_connections: 1024,
            max_tcp_connections_per_client: 32,
            tcp_idle_timeout: Duration::from_secs(10),
            rate_limit: 0,
            rate_limit_slip: 2,
            rate_limit_ipv4_prefix: 24,
            rate_limit_ipv6_prefix: 56,
            rate_limit_exempt: ["127.0.0.0/8", "::1/128"]
                .into_iter()
                .filter_map(Network::parse)
                .collect(),
            forward: ForwardConfig::default(),
            // DNS Flag Day 2020: fits an unfragmented datagram on any common path.
            max_udp_payload: 1232,
            transfer: TransferConfig::default(),
            notify: Vec::new(),
            notify_interval: Duration::from_secs(1),
            locality: Vec::new(),
            fail_open: false,
        }
    }
}

/// `[http]`: the HTTP API's address, request limits, timeouts and write guards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Longest `wait` a long-poll may ask for, seconds; longer ones are cut to it.
    #[serde(deserialize_with = "duration")]
    pub max_wait: Duration,
    /// Most HTTP requests handled at once, long-polls aside; more wait for a slot.
    pub max_concurrent_requests: usize,
    /// Most long-polls (`GET /v1/services/{service}?index=`, and the Consul API's blocking
    /// reads) waiting at once; more get 503.
    pub max_watchers: usize,
    /// Most HTTP connections open at once; further ones wait in the kernel's backlog until
    /// one closes.
    pub max_connections: usize,
    /// How long a request's line and headers may take to arrive, from its first byte (or,
    /// on a new connection, from the connection), e.g. `"10s"`.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive once the handler reads it; then 408.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request before it is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Origins (`https://ops.example.com`) whose pages may write; a write carrying any other
    /// `Origin` is refused. Empty: no page may write.
    pub allowed_origins: Vec<String>,
    /// Host names (`signpost.internal`, or with a port) a write may be addressed to, beside
    /// `localhost` and IP addresses; a write naming another `Host` is refused.
    pub allowed_hosts: Vec<String>,
    /// The token every write needs (`Authorization: Bearer ...`); it also reads. None: writes
    /// are open.
    pub token: Option<Secret>,
    /// A file holding `token` (its first line), instead of the config; read at load.
    pub token_file: Option<PathBuf>,
    /// The token reads need besides the write token. None: reads are open.
    pub read_token: Option<Secret>,
    /// A file holding `read_token`, instead of the config; read at load.
    pub read_token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8500)),
            max_body_bytes: 64 * 1024,
            max_wait: Duration::from_secs(600),
            max_concurrent_requests: 1024,
            max_watchers: 4096,
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            token: None,
            token_file: None,
            read_token: None,
            read_token_file: None,
        }
    }
}

/// Why `backend = "etcd"` is refused by a build without the etcd client.
pub const NO_ETCD: &str = "\"etcd\" needs a signpost built with etcd support: \
     `cargo build --release --features etcd` (which needs protoc: apt-get install -y protobuf-compiler)";

/// `[registry]`: the store backend and its data directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Where registrations are kept: `embedded` (a database file in `data_dir`) or `etcd`.
    pub backend: Backend,
    /// Folder of the embedded store.
    pub data_dir: PathBuf,
    /// `[registry.etcd]`: the cluster, used when `backend = "etcd"`.
    pub etcd: EtcdConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            data_dir: PathBuf::from("data"),
            etcd: EtcdConfig::default(),
        }
    }
}

/// `[registry.etcd]`: the etcd v3 cluster replicas share (CONTRACT §4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// One or more client URLs of members of one cluster (`http://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// Every key signpost writes is under it; ends with `/`.
    pub prefix: String,
    /// The lease of this replica's membership key: how long a dead replica keeps its checks.
    #[serde(deserialize_with = "duration")]
    pub member_ttl: Duration,
    /// How long one request to etcd may take before it counts as failed.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// This replica's member name (unique among replicas); the host name when unset.
    /// `--node-name` overrides it.
    pub name: Option<String>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: "/signpost/".to_string(),
            member_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            name: None,
        }
    }
}

/// `[log]`: the log format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
        }
    }
}

/// Parses an upstream written `IP`, `IP:PORT` or `[V6]:PORT`; port 53 when none is given.
pub(crate) fn parse_upstream(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    s.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

/// The largest `dns.rate_limit`: the limiter counts thousandths of a response per bucket in
/// 32 bits, so a second's worth must stay below 2^32 / 1000.
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// The largest `dns.rate_limit_slip`, Knot's bound: past it almost nothing is slipped.
pub const MAX_RATE_LIMIT_SLIP: u32 = 100;

/// The bounds of `dns.max_udp_payload`: RFC 1035's 512, which every client takes, and the
/// 4096 beyond which datagrams fragment on every common path (Knot's bounds too).
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// See `MIN_UDP_PAYLOAD`.
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// Where `signpost serve` looks when no `--config` is given.
pub const DEFAULT_PATH: &str = "config/signpost.toml";

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // serde_path_to_error names the key (`dns.ttl: invalid type ...`).
        let de = toml::de::Deserializer::new(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().to_string();
            if key != "." && key != "?" && !key.is_empty() {
                message = format!("{key}: {message}");
            }
            if let Some(s) = inner.span() {
                message.push_str(&format!(" (at byte {})", s.start));
            }
            ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every key's value and normalises the domain to lowercase with a trailing dot.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            key,
            message: message.to_string(),
        };
        let mut d = self.dns.domain.trim().to_ascii_lowercase();
        if !d.ends_with('.') {
            d.push('.');
        }
        if d == "." {
            return Err(invalid("dns.domain", "must name a domain, not the root"));
        }
        for l in d.trim_end_matches('.').split('.') {
            if l.is_empty()
                || l.len() > 63
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "dns.domain",
                    &format!("{:?} is not a domain name", self.dns.domain),
                ));
            }
        }
        self.dns.domain = d;
        if self.dns.listen.is_empty() {
            return Err(invalid("dns.listen", "needs at least one address"));
        }
        if self.dns.ttl > crate::model::MAX_TTL {
            return Err(invalid("dns.ttl", "at most 86400 seconds"));
        }
        if self.dns.negative_ttl > crate::model::MAX_TTL {
            return Err(invalid("dns.negative_ttl", "at most 86400 seconds"));
        }
        if self.dns.max_tcp_connections == 0 {
            return Err(invalid("dns.max_tcp_connections", "must be at least 1"));
        }
        if self.dns.max_tcp_connections_per_client == 0 {
            return Err(invalid(
                "dns.max_tcp_connections_per_client",
                "must be at least 1",
            ));
        }
        if self.dns.tcp_idle_timeout < Duration::from_secs(1) {
            return Err(invalid("dns.tcp_idle_timeout", "must be at least 1 second"));
        }
        if self.dns.rate_limit > MAX_RATE_LIMIT {
            return Err(invalid(
                "dns.rate_limit",
                "at most 1000000 responses per second",
            ));
        }
        if self.dns.rate_limit_slip > MAX_RATE_LIMIT_SLIP {
            return Err(invalid("dns.rate_limit_slip", "must be 0 to 100"));
        }
        if self.dns.rate_limit_ipv4_prefix > 32 {
            return Err(invalid("dns.rate_limit_ipv4_prefix", "must be 0 to 32"));
        }
        if self.dns.rate_limit_ipv6_prefix > 128 {
            return Err(invalid("dns.rate_limit_ipv6_prefix", "must be 0 to 128"));
        }
        self.validate_locality()?;
        self.validate_etcd()?;
        if self.registry.backend == Backend::Etcd && !cfg!(feature = "etcd") {
            return Err(invalid("registry.backend", NO_ETCD));
        }
        if !(MIN_UDP_PAYLOAD..=MAX_UDP_PAYLOAD).contains(&self.dns.max_udp_payload) {
            return Err(invalid("dns.max_udp_payload", "must be 512 to 4096 bytes"));
        }
        if let Some(t) = &mut self.dns.transfer.tsig {
            let name = t.name.trim().to_ascii_lowercase();
            let name = if name.ends_with('.') {
                name
            } else {
                format!("{name}.")
            };
            let labels_ok = name.len() <= 254
                && name.trim_end_matches('.').split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_graphic())
                });
            if name == "." || !labels_ok {
                return Err(invalid(
                    "dns.transfer.tsig.name",
                    &format!("{:?} is not a key name like \"transfer.\"", t.name),
                ));
            }
            t.name = name;
            if !t.algorithm.eq_ignore_ascii_case("hmac-sha256") {
                return Err(invalid(
                    "dns.transfer.tsig.algorithm",
                    "must be \"hmac-sha256\"",
                ));
            }
            t.algorithm = "hmac-sha256".into();
            match data_encoding::BASE64.decode(t.secret.0.trim().as_bytes()) {
                Ok(k) if k.len() >= 16 => {}
                Ok(_) => {
                    return Err(invalid(
                        "dns.transfer.tsig.secret",
                        "must be at least 16 bytes (128 bits)",
                    ));
                }
                Err(_) => return Err(invalid("dns.transfer.tsig.secret", "is not base64")),
            }
        }
        if self.dns.notify_interval < Duration::from_millis(100)
            || self.dns.notify_interval > Duration::from_secs(3600)
        {
            return Err(invalid(
                "dns.notify_interval",
                "must be a duration from 100ms to 1h, like \"1s\"",
            ));
        }
        let f = &self.dns.forward;
        if f.timeout < Duration::from_millis(10) || f.timeout > Duration::from_secs(30) {
            return Err(invalid(
                "dns.forward.timeout",
                "must be a duration from 10ms to 30s, like \"2s\"",
            ));
        }
        if f.attempts == 0 || f.attempts > 10 {
            return Err(invalid("dns.forward.attempts", "must be 1 to 10"));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if self.http.max_concurrent_requests == 0 {
            return Err(invalid(
                "http.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if self.http.max_watchers == 0 {
            return Err(invalid("http.max_watchers", "must be at least 1"));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        let h = &self.http;
        for (key, value) in [
            ("http.header_timeout", h.header_timeout),
            ("http.body_timeout", h.body_timeout),
            ("http.idle_timeout", h.idle_timeout),
        ] {
            http_timeout(key, value)?;
        }
        for o in &mut self.http.allowed_origins {
            *o = normalise_origin(o).ok_or_else(|| {
                invalid(
                    "http.allowed_origins",
                    &format!("{o:?} is not an origin like \"https://ops.example.com\""),
                )
            })?;
        }
        for h in &mut self.http.allowed_hosts {
            *h = normalise_host(h).ok_or_else(|| {
                invalid(
                    "http.allowed_hosts",
                    &format!(
                        "{h:?} is not a host name like \"signpost.internal\" (a port may follow)"
                    ),
                )
            })?;
        }
        let h = &mut self.http;
        h.token = token(
            h.token.take(),
            &h.token_file,
            "http.token",
            "http.token_file",
        )?;
        h.read_token = token(
            h.read_token.take(),
            &h.read_token_file,
            "http.read_token",
            "http.read_token_file",
        )?;
        if self.health.max_concurrent_checks == 0 {
            return Err(invalid(
                "health.max_concurrent_checks",
                "must be at least 1",
            ));
        }
        self.validate_consul()?;
        Ok(())
    }

    /// `[consul]`: names as Consul allows them (letters, digits, `-`, `_`; a node also `.`),
    /// so a client's URL or filter built from them needs no escaping.
    fn validate_consul(&self) -> Result<(), ConfigError> {
        let ok = |s: &str, max: usize, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || extra.contains(&b)
                })
        };
        if !ok(&self.consul.datacenter, 64, b"") {
            return Err(ConfigError::Invalid {
                key: "consul.datacenter",
                message: format!(
                    "{:?} is not a datacenter name (1 to 64 letters, digits, '-', '_')",
                    self.consul.datacenter
                ),
            });
        }
        if let Some(n) = &self.consul.node
            && !ok(n, 253, b".")
        {
            return Err(ConfigError::Invalid {
                key: "consul.node",
                message: format!(
                    "{n:?} is not a node name (1 to 253 letters, digits, '-', '_', '.')"
                ),
            });
        }
        Ok(())
    }

    /// `dns.tcp_idle_timeout`, validated.
    /// `[registry.etcd]` (checked whatever the backend, so a typo shows before it is used):
    /// endpoints are URLs, the prefix a key folder, the TTL a whole number
    /// of seconds (etcd's leases count seconds) of at least 2, the timeout sensible.
    /// `dns.locality`: zone names as metadata values may spell them (1–255 bytes, no control
    /// characters), each zone once, every network in one zone only, within the limits.
    fn validate_locality(&mut self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "dns.locality",
            message,
        };
        let mut zones: Vec<&str> = Vec::new();
        let mut networks: Vec<ipnet::IpNet> = Vec::new();
        for (i, entry) in self.dns.locality.iter().enumerate() {
            let z = entry.zone.as_str();
            if z.is_empty() || z.len() > 255 || z.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "[{i}].zone {z:?} must be 1 to 255 bytes without control characters"
                )));
            }
            if zones.contains(&z) {
                return Err(invalid(format!(
                    "[{i}].zone {z:?} is listed twice: give one entry all its networks"
                )));
            }
            zones.push(z);
            if entry.networks.is_empty() {
                return Err(invalid(format!(
                    "[{i}].networks needs at least one network"
                )));
            }
            for n in &entry.networks {
                // The network as written may have host bits (10.1.2.3/16); matching uses
                // its prefix.
                let net = n.0.trunc();
                if networks.contains(&net) {
                    return Err(invalid(format!("[{i}].networks: {net} is listed twice")));
                }
                networks.push(net);
            }
        }
        if networks.len() > MAX_LOCALITY_NETWORKS {
            return Err(invalid(format!(
                "at most {MAX_LOCALITY_NETWORKS} networks in all"
            )));
        }
        if zones.len() > MAX_LOCALITY_ZONES {
            return Err(invalid(format!("at most {MAX_LOCALITY_ZONES} zones")));
        }
        Ok(())
    }

    fn validate_etcd(&mut self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { key, message };
        let e = &mut self.registry.etcd;
        if e.endpoints.is_empty() {
            return Err(invalid(
                "registry.etcd.endpoints",
                "needs at least one URL like \"http://127.0.0.1:2379\"".into(),
            ));
        }
        for url in &e.endpoints {
            let ok = ["http://", "https://"]
                .iter()
                .any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
            if !ok {
                return Err(invalid(
                    "registry.etcd.endpoints",
                    format!("{url:?} is not a URL like \"http://127.0.0.1:2379\""),
                ));
            }
        }
        if e.prefix.is_empty() || e.prefix.contains('\0') {
            return Err(invalid(
                "registry.etcd.prefix",
                "must name a key prefix like \"/signpost/\"".into(),
            ));
        }
        if !e.prefix.ends_with('/') {
            e.prefix.push('/');
        }
        let ttl = e.member_ttl;
        if ttl < Duration::from_secs(2)
            || ttl > Duration::from_secs(3600)
            || ttl.subsec_nanos() != 0
        {
            return Err(invalid(
                "registry.etcd.member_ttl",
                "must be whole seconds from 2s to 1h (etcd leases count seconds)".into(),
            ));
        }
        if e.timeout < Duration::from_millis(50) || e.timeout > Duration::from_secs(60) {
            return Err(invalid(
                "registry.etcd.timeout",
                "must be a duration from 50ms to 60s, like \"2s\"".into(),
            ));
        }
        if let Some(name) = &e.name {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(invalid(
                    "registry.etcd.name",
                    format!("{name:?} is not a member name (letters, digits, '-', '_', '.')"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn tcp_idle_timeout(&self) -> Duration {
        self.dns.tcp_idle_timeout
    }

    /// `http.header_timeout`, validated.
    pub(crate) fn http_header_timeout(&self) -> Duration {
        self.http.header_timeout
    }

    /// `http.body_timeout`, validated.
    pub(crate) fn http_body_timeout(&self) -> Duration {
        self.http.body_timeout
    }

    /// `http.idle_timeout`, validated.
    pub(crate) fn http_idle_timeout(&self) -> Duration {
        self.http.idle_timeout
    }
}

/// An origin as browsers send it: `http://` or `https://`, a host (a name, an IPv4 address
/// or a bracketed IPv6 one) and an optional port, lowercased, with no path; `None` for
/// anything else.
fn normalise_origin(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('/').unwrap_or(&s);
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))?;
    normalise_host(rest)?;
    Some(s.to_string())
}

/// A host as a `Host` header names it: a name, an IPv4 address or a bracketed IPv6 one, and
/// an optional port, lowercased; `None` for anything else.
fn normalise_host(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => (h, Some(p)),
        _ => (s.as_str(), None),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    let ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        // Labels of letters, digits and hyphens; a trailing dot (the root) is allowed.
        let name = host.strip_suffix('.').unwrap_or(host);
        !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    ok.then_some(s)
}

/// An HTTP timeout written like `"10s"` or `"300ms"`: from 10 ms (shorter would close
/// connections before a client on a busy network could speak) to an hour.
fn http_timeout(key: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value >= Duration::from_millis(10) && value <= Duration::from_secs(3600) {
        return Ok(value);
    }
    Err(ConfigError::Invalid {
        key,
        message: format!(
            "{} must be a duration from 10ms to 1h, like \"10s\"",
            humantime::format_duration(value)
        ),
    })
}

/// A token from the config or from its file (first line, surrounding whitespace dropped);
/// both at once, an empty one or an unreadable file are errors naming the key.
fn token(
    inline: Option<Secret>,
    file: &Option<PathBuf>,
    key: &'static str,
    file_key: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    let t = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(key, format!("set {key} or {file_key}, not both")));
        }
        (Some(t), None) => t.0,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| invalid(file_key, format!("cannot read {}: {e}", path.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        (None, None) => return Ok(None),
    };
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(invalid(key, "is empty".into()));
    }
    Ok(Some(Secret(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contracts() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(c.dns.listen, vec!["127.0.0.1:8600".parse().unwrap()]);
        assert_eq!(c.http.listen, "127.0.0.1:8500".parse().unwrap());
        assert_eq!(c.dns.domain, "internal.");
        assert_eq!(
            (c.dns.ttl, c.dns.negative_ttl, c.dns.max_answers),
            (5, 5, 0)
        );
        assert!(!c.dns.include_warning);
        assert_eq!(
            (
                c.dns.max_tcp_connections,
                c.dns.max_tcp_connections_per_client
            ),
            (1024, 32)
        );
        assert_eq!(c.registry.data_dir, PathBuf::from("data"));
        assert_eq!((c.http.max_connections, c.http.max_watchers), (4096, 4096));
        assert_eq!(
            (
                c.http_header_timeout(),
                c.http_body_timeout(),
                c.http_idle_timeout()
            ),
            (
                Duration::from_secs(10),
                Duration::from_secs(30),
                Duration::from_secs(60)
            )
        );
    }

    #[test]
    fn locality_and_fail_open_keys() {
        let c = Config::parse(
            "[dns]\nfail_open = true\n[[dns.locality]]\nnetworks = [\"10.1.0.0/16\", \"fd00:1::/32\"]\nzone = \"eu-1\"\n[[dns.locality]]\nnetworks = [\"10.2.0.0/16\"]\nzone = \"us-1\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert!(c.dns.fail_open);
        assert_eq!(c.dns.locality.len(), 2);
        assert_eq!(c.dns.locality[1].zone, "us-1");
        assert!(!Config::parse("", Path::new("x")).unwrap().dns.fail_open);
        for (bad, why) in [
            ("networks = [\"10.1.0.0/16\"]\nzone = \"\"", "zone"),
            ("networks = []\nzone = \"a\"", "at least one"),
            ("networks = [\"10.1.0.0/33\"]\nzone = \"a\"", "network"),
            (
                "networks = [\"10.1.0.0/16\"]\nzone = \"a\"\nregion = \"x\"",
                "unknown field",
            ),
        ] {
            let e = Config::parse(&format!("[[dns.locality]]\n{bad}\n"), Path::new("x"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let twice = "[[dns.locality]]\nnetworks = [\"10.1.0.0/16\"]\nzone = \"a\"\n\
            [[dns.locality]]\nnetworks = [\"10.1.0.0/16\"]\nzone = \"b\"\n";
        let e = Config::parse(twice, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dns.locality") && e.contains("twice"), "{e}");
    }

    #[test]
    fn domain_is_normalised() {
        let c = Config::parse("[dns]\ndomain = \"Consul\"", Path::new("x")).unwrap();
        assert_eq!(c.dns.domain, "consul.");
    }

    #[test]
    fn forwarding_keys() {
        let c = Config::parse(
            "[dns.forward]\nupstreams = [\"10.0.0.2\", \"[::1]:5353\", \"resolv.conf\"]\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.dns.forward.attempts, 2);
        assert_eq!(
            parse_upstream("10.0.0.2"),
            Some("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("[::1]:5353"),
            Some("[::1]:5353".parse().unwrap())
        );
        for (bad, key) in [
            ("upstreams = [\"nope\"]", "dns.forward.upstreams"),
            ("allow = [\"10.0.0.0/33\"]", "dns.forward.allow"),
            ("timeout = \"forever\"", "dns.forward.timeout"),
            ("attempts = 0", "dns.forward.attempts"),
        ] {
            let e = Config::parse(&format!("[dns.forward]\n{bad}"), Path::new("x")).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn max_udp_payload_defaults_to_1232_and_is_bounded() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(c.dns.max_udp_payload, 1232);
        let c = Config::parse("[dns]\nmax_udp_payload = 4096", Path::new("x")).unwrap();
        assert_eq!(c.dns.max_udp_payload, 4096);
        for bad in ["511", "4097", "70000", "\"big\""] {
            let e = Config::parse(&format!("[dns]\nmax_udp_payload = {bad}"), Path::new("x"))
                .unwrap_err();
            assert!(e.to_string().contains("dns.max_udp_payload"), "{bad}: {e}");
        }
    }

    #[test]
    fn transfer_and_notify_keys() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert!(c.dns.transfer.allow.is_empty() && c.dns.transfer.tsig.is_none());
        assert!(c.dns.notify.is_empty());
        assert_eq!(c.dns.notify_interval, Duration::from_secs(1));
        let c = Config::parse(
            "[dns]\nnotify = [\"127.0.0.1:5300\"]\nnotify_interval = \"250ms\"\n\
             [dns.transfer]\nallow = [\"127.0.0.0/8\"]\n\
             tsig = { name = \"Transfer\", algorithm = \"HMAC-SHA256\", secret = \"c2lnbnBvc3Qtc2VjcmV0LWtleQ==\" }\n",
            Path::new("x"),
        )
        .unwrap();
        let t = c.dns.transfer.tsig.as_ref().unwrap();
        assert_eq!(
            (t.name.as_str(), t.algorithm.as_str()),
            ("transfer.", "hmac-sha256")
        );
        assert_eq!(t.key(), b"signpost-secret-key");
        assert_eq!(c.dns.notify, vec!["127.0.0.1:5300".parse().unwrap()]);
        let tsig = |name: &str, alg: &str, secret: &str| {
            format!(
                "[dns.transfer]\ntsig = {{ name = \"{name}\", algorithm = \"{alg}\", secret = \"{secret}\" }}"
            )
        };
        for (bad, key) in [
            (
                tsig("k", "hmac-md5", "c2lnbnBvc3Qtc2VjcmV0LWtleQ=="),
                "dns.transfer.tsig.algorithm",
            ),
            (
                tsig("k", "hmac-sha256", "not base64!"),
                "dns.transfer.tsig.secret",
            ),
            (
                tsig("k", "hmac-sha256", "c2hvcnQ="),
                "dns.transfer.tsig.secret",
            ),
            (
                tsig("a..b", "hmac-sha256", "c2lnbnBvc3Qtc2VjcmV0LWtleQ=="),
                "dns.transfer.tsig.name",
            ),
            (
                "[dns.transfer]\nallow = [\"10.0.0.0/33\"]".into(),
                "dns.transfer.allow",
            ),
            ("[dns]\nnotify = [\"127.0.0.1\"]".into(), "dns.notify"),
            (
                "[dns]\nnotify_interval = \"1ms\"".into(),
                "dns.notify_interval",
            ),
        ] {
            let e = Config::parse(&bad, Path::new("x")).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn rate_limit_keys() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(
            (
                c.dns.rate_limit,
                c.dns.rate_limit_slip,
                c.dns.rate_limit_ipv4_prefix,
                c.dns.rate_limit_ipv6_prefix
            ),
            (0, 2, 24, 56)
        );
        let exempt: Vec<String> = c
            .dns
            .rate_limit_exempt
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(exempt, ["127.0.0.0/8", "::1/128"]);
        let c = Config::parse(
            "[dns]\nrate_limit = 20\nrate_limit_slip = 0\nrate_limit_exempt = []\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!((c.dns.rate_limit, c.dns.rate_limit_slip), (20, 0));
        for (bad, key) in [
            ("rate_limit = -1", "dns.rate_limit"),
            ("rate_limit = 1000001", "dns.rate_limit"),
            ("rate_limit_slip = 101", "dns.rate_limit_slip"),
            ("rate_limit_ipv4_prefix = 33", "dns.rate_limit_ipv4_prefix"),
            ("rate_limit_ipv6_prefix = 129", "dns.rate_limit_ipv6_prefix"),
            (
                "rate_limit_exempt = [\"10.0.0.0/33\"]",
                "dns.rate_limit_exempt",
            ),
        ] {
            let e = Config::parse(&format!("[dns]\n{bad}"), Path::new("x")).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn origins_and_hosts_are_normalised() {
        let c = Config::parse(
            "[http]\nallowed_origins = [\"HTTPS://Ops.Example.com/\", \"http://[::1]:8080\"]\n\
             allowed_hosts = [\"Signpost.Internal\", \"sp.internal:8500\", \"[::1]:80\"]\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            c.http.allowed_origins,
            ["https://ops.example.com", "http://[::1]:8080"]
        );
        assert_eq!(
            c.http.allowed_hosts,
            ["signpost.internal", "sp.internal:8500", "[::1]:80"]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[dns]\nttl = \"x\"", Path::new("f.toml")).unwrap_err();
        assert!(
            e.to_string().contains("f.toml") && e.to_string().contains("dns.ttl"),
            "{e}"
        );
        let e = Config::parse("[dns]\nbogus = 1", Path::new("f.toml")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::parse("[dns]\ndomain = \"a..b\"", Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("dns.domain"), "{e}");
        let e =
            Config::parse("[dns]\nmax_tcp_connections_per_client = 0", Path::new("f")).unwrap_err();
        assert!(
            e.to_string().contains("dns.max_tcp_connections_per_client"),
            "{e}"
        );
        for bad in [
            "max_connections = 0",
            "max_watchers = 0",
            "header_timeout = \"soon\"",
            "body_timeout = \"1ms\"",
            "idle_timeout = \"2h\"",
        ] {
            let e = Config::parse(&format!("[http]\n{bad}"), Path::new("f")).unwrap_err();
            let key = format!("http.{}", bad.split(' ').next().unwrap());
            assert!(e.to_string().contains(&key), "{bad}: {e}");
        }
        for bad in [
            "allowed_origins = [\"ops.example.com\"]",
            "allowed_origins = [\"https://ops.example.com/ui\"]",
            "allowed_origins = [\"ftp://ops.example.com\"]",
            "allowed_hosts = [\"sign post\"]",
            "allowed_hosts = [\"signpost:http\"]",
            "allowed_hosts = [\"a..b\"]",
        ] {
            let e = Config::parse(&format!("[http]\n{bad}"), Path::new("f")).unwrap_err();
            let key = format!("http.{}", bad.split(' ').next().unwrap());
            assert!(e.to_string().contains(&key), "{bad}: {e}");
        }
        let e = Config::parse("[registry]\nbackend = \"x\"", Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("registry.backend"), "{e}");
    }

    /// Every duration key takes one format: a humantime string, or whole seconds.
    #[test]
    fn durations_take_one_format() {
        let c = Config::parse(
            "[dns]\ntcp_idle_timeout = \"1m30s\"\n[dns.forward]\ntimeout = \"250ms\"\n\
             [http]\nmax_wait = 30\nidle_timeout = \"2m\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.dns.tcp_idle_timeout, Duration::from_secs(90));
        assert_eq!(c.dns.forward.timeout, Duration::from_millis(250));
        assert_eq!(c.http.max_wait, Duration::from_secs(30));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(120));
        let c = Config::parse("[dns]\ntcp_idle_timeout = 7", Path::new("x")).unwrap();
        assert_eq!(c.tcp_idle_timeout(), Duration::from_secs(7));
        for (bad, key) in [
            ("[dns]\ntcp_idle_timeout = -1", "dns.tcp_idle_timeout"),
            ("[http]\nmax_wait = \"later\"", "http.max_wait"),
            (
                "[dns]\nrate_limit_exempt = [\"nope\"]",
                "dns.rate_limit_exempt",
            ),
            ("[log]\nformat = \"xml\"", "log.format"),
        ] {
            let e = Config::parse(bad, Path::new("f")).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
        let c = Config::parse("[log]\nformat = \"json\"", Path::new("x")).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.registry.backend, Backend::Embedded);
    }

    #[test]
    fn tokens_from_the_config_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "  s3cret \nignored\n").unwrap();
        let c = Config::parse(
            &format!("[http]\ntoken_file = {:?}\nread_token = \"r\"\n", file),
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.http.token, Some(Secret("s3cret".into())));
        assert_eq!(c.http.read_token, Some(Secret("r".into())));
        assert!(!format!("{c:?}").contains("s3cret"), "never shown by Debug");
        for (bad, key) in [
            (
                format!("token = \"a\"\ntoken_file = {file:?}"),
                "http.token",
            ),
            ("token = \"  \"".to_string(), "http.token"),
            (
                "read_token_file = \"/nonexistent/t\"".to_string(),
                "http.read_token_file",
            ),
        ] {
            let e = Config::parse(&format!("[http]\n{bad}"), Path::new("f")).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn consul_node_and_datacenter() {
        let c = Config::parse("", Path::new("f")).unwrap();
        assert_eq!(c.consul.datacenter, "dc1");
        assert_eq!(c.consul.node, None);
        let c = Config::parse(
            "[consul]\ndatacenter = \"eu-west_1\"\nnode = \"sp-1.example\"",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(c.consul.datacenter, "eu-west_1");
        assert_eq!(c.consul.node.as_deref(), Some("sp-1.example"));
        for (text, key) in [
            ("[consul]\ndatacenter = \"\"", "consul.datacenter"),
            ("[consul]\ndatacenter = \"a.b\"", "consul.datacenter"),
            ("[consul]\nnode = \"a b\"", "consul.node"),
            ("[consul]\nbogus = 1", "bogus"),
        ] {
            let e = Config::parse(text, Path::new("f")).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }
}
