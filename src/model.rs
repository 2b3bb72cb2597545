//! The domain vocabulary of signpost: validated names (`ServiceName`, `InstanceId`, `Tag`),
//! an `Instance` as registered, its `Health` and its `CheckSpec`.
//!
//! Nothing here does I/O or knows a wire format: the HTTP and store edges convert their own
//! serde types into these by hand, through the constructors here (`Instance::new`,
//! `CheckSpec::new`, `Maintenance::new`), so every rule of a registration lives here once and
//! holds whatever the source. The fields of `Instance`, `CheckSpec` and `Maintenance` are
//! private: outside this module they can be read, not set to what a rule forbids.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Why a value was rejected. `field` is the name a user sent it under (`port`, `tags[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The field as the client named it (`port`, `tags[2]`, `check.interval`).
    pub field: String,
    /// What is wrong with its value, for the client to read.
    pub reason: String,
}

impl InvalidField {
    /// A rejection of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a DNS label as the contract defines names: `[a-z0-9-]`, 1–63 characters, no
/// leading or trailing hyphen. Upper case is accepted and folded, since names compare
/// lowercased.
fn label(field: &str, raw: &str) -> Result<String, InvalidField> {
    let s = raw.to_ascii_lowercase();
    if s.is_empty() || s.len() > 63 {
        return Err(InvalidField::new(
            field,
            format!("{raw:?} must be 1 to 63 characters"),
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(InvalidField::new(
            field,
            format!("{raw:?} may hold only letters, digits and '-'"),
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(InvalidField::new(
            field,
            format!("{raw:?} may not start or end with '-'"),
        ));
    }
    Ok(s)
}

macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and lowercases `raw`.
            pub fn parse(raw: &str) -> Result<Self, InvalidField> {
                label($field, raw).map(Self)
            }
            /// The validated, lowercase text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

label_type!(
    /// A service's name: one DNS label, lowercase.
    ServiceName,
    "service"
);
label_type!(
    /// An instance's id, unique within its service: one DNS label, lowercase.
    InstanceId,
    "id"
);
/// A tag an instance carries. Through the native API it is a DNS label (lowercased), usable
/// as a DNS filter label (`<tag>.<service>.service.D`). Through the Consul API (CONTRACT §5,
/// which asks labels of names and IDs only) it may also be other text, as the tools that
/// speak it use tags (Traefik's `traefik.enable=true`, Fabio's `urlprefix-/`): such a tag is
/// kept and shown by both APIs but names nothing in DNS (`is_label` is false).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

/// Longest tag that is not a DNS label, in bytes.
pub const MAX_TEXT_TAG: usize = 255;

label_type!(
    /// The name of a named port (`grpc` in `_grpc._tcp.<service>.service.D`): lowercase.
    PortName,
    "ports"
);

impl Tag {
    /// Validates and lowercases a DNS label tag (a `?tag=` filter, say).
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        label("tags", raw).map(Self)
    }

    /// Validates a tag sent at position `i` of the `tags` list as a DNS label, naming that
    /// position on error.
    pub fn parse_at(raw: &str, i: usize) -> Result<Self, InvalidField> {
        label(&format!("tags[{i}]"), raw).map(Self)
    }

    /// A tag sent at position `i` that may be any text: a DNS label (any case) becomes the
    /// lowercase label, as through `parse_at`; anything else is kept as sent, when it is
    /// 1 to 255 bytes without control characters.
    pub fn parse_text_at(raw: &str, i: usize) -> Result<Self, InvalidField> {
        if let Ok(l) = label("tags", raw) {
            return Ok(Self(l));
        }
        let field = || format!("tags[{i}]");
        if raw.is_empty() || raw.len() > MAX_TEXT_TAG {
            return Err(InvalidField::new(
                field(),
                format!("{raw:?} must be 1 to {MAX_TEXT_TAG} bytes"),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidField::new(
                field(),
                format!("{raw:?} may not hold control characters"),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// The tag as stored: a lowercase label, or the text as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the tag is a DNS label, and so names a DNS filter (`<tag>.<service>.service.D`).
    /// A stored tag is either a lowercase label or text that is none, so this is the check
    /// of a label's characters alone.
    pub fn is_label(&self) -> bool {
        is_lowercase_label(&self.0)
    }
}

/// Whether `s` is a DNS label as stored: lowercase `[a-z0-9-]`, 1–63 characters, no leading
/// or trailing hyphen (no allocation, unlike `label`).
pub fn is_lowercase_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of an instance: its service and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    /// The service the instance belongs to.
    pub service: ServiceName,
    /// The instance's id within its service.
    pub id: InstanceId,
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.id)
    }
}

/// Health as the contract names it. Order matters: worse is greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Checks pass: DNS hands the instance out (unless it is in maintenance).
    Passing,
    /// Degraded (an HTTP 429, or a report saying so): answered only when `dns.include_warning` is on.
    Warning,
    /// Checks fail or a TTL expired: never answered in DNS.
    Critical,
}

impl Status {
    /// The status as the contract spells it: `passing`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    /// Parses a status as the contract spells it; an error names `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, InvalidField> {
        match raw {
            "passing" => Ok(Status::Passing),
            "warning" => Ok(Status::Warning),
            "critical" => Ok(Status::Critical),
            other => Err(InvalidField::new(
                field,
                format!("{other:?} is not one of passing, warning, critical"),
            )),
        }
    }
}

/// An instance's current health: its status, why, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Passing, warning or critical.
    pub status: Status,
    /// A check's or report's own text, or one of signpost's fixed phrases (not allocated
    /// per instance: at 100,000 instances the copies of "registered without a check" were
    /// megabytes).
    pub output: std::borrow::Cow<'static, str>,
    /// When the status last changed.
    pub since: SystemTime,
}

impl Health {
    /// Health with `status` and `output` since `since`.
    pub fn new(
        status: Status,
        output: impl Into<std::borrow::Cow<'static, str>>,
        since: SystemTime,
    ) -> Self {
        Self {
            status,
            output: output.into(),
            since,
        }
    }
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// GET this URL: 2xx passing, 429 warning, anything else critical.
    Http(String),
    /// Connect to this `HOST:PORT`.
    Tcp(String),
    /// Critical unless a health report arrives within this long.
    Ttl(Duration),
}

/// A check as registered, with its timing and thresholds; only `CheckSpec::new` makes one,
/// so every rule holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    kind: CheckKind,
    interval: Duration,
    timeout: Duration,
    success_before_passing: u32,
    failures_before_critical: u32,
}

/// Defaults for a check's optional fields, as documented in the README.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Default check timeout (or the interval, if that is shorter).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest check interval: below this a check is a load generator.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest check timeout.
pub const MIN_CHECK_TIMEOUT: Duration = Duration::from_millis(10);
/// Shortest TTL of a TTL check, and shortest `deregister_after`.
pub const MIN_TTL_CHECK: Duration = Duration::from_secs(1);
/// Most consecutive results a threshold may ask for.
pub const MAX_THRESHOLD: u32 = 100;

fn at_least(field: &str, d: Duration, min: Duration) -> Result<Duration, InvalidField> {
    if d < min {
        return Err(InvalidField::new(
            field,
            format!("must be at least {}", humantime::format_duration(min)),
        ));
    }
    Ok(d)
}

/// An `http://` URL with a host.
fn check_url(raw: &str) -> Result<(), InvalidField> {
    let bad = |why: &str| InvalidField::new("check.http", format!("{raw:?} {why}"));
    let uri: http::Uri = raw.parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        // The checker carries no TLS stack; a tcp check covers a TLS port's liveness.
        Some("https") => {
            return Err(bad(
                "is https, which checks do not support: use http:// or a tcp check",
            ));
        }
        _ => return Err(bad("must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(())
}

/// `HOST:PORT` or `[V6]:PORT`, port 1–65535.
fn check_host_port(raw: &str) -> Result<(), InvalidField> {
    let bad = || InvalidField::new("check.tcp", format!("{raw:?} is not HOST:PORT"));
    let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    Ok(())
}

impl CheckSpec {
    /// Validates a check: its target (`http://` URL with a host, `HOST:PORT`, a TTL of at
    /// least 1 s), an interval of at least 100 ms (default 10 s), a timeout of at least
    /// 10 ms (default 2 s, or the interval if shorter) and thresholds of 1 to 100 (default
    /// 1). Errors name the field as a client sends it (`check.interval`).
    pub fn new(
        kind: CheckKind,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        success_before_passing: Option<u32>,
        failures_before_critical: Option<u32>,
    ) -> Result<Self, InvalidField> {
        match &kind {
            CheckKind::Http(url) => check_url(url)?,
            CheckKind::Tcp(addr) => check_host_port(addr)?,
            CheckKind::Ttl(d) => {
                at_least("check.ttl", *d, MIN_TTL_CHECK)?;
            }
        }
        let interval = match interval {
            Some(d) => at_least("check.interval", d, MIN_CHECK_INTERVAL)?,
            None => DEFAULT_CHECK_INTERVAL,
        };
        let timeout = match timeout {
            Some(d) => at_least("check.timeout", d, MIN_CHECK_TIMEOUT)?,
            None => DEFAULT_CHECK_TIMEOUT.min(interval),
        };
        let count = |field: &str, v: Option<u32>| match v {
            None => Ok(1),
            Some(0) => Err(InvalidField::new(field, "must be at least 1")),
            Some(n) if n > MAX_THRESHOLD => Err(InvalidField::new(
                field,
                format!("must be at most {MAX_THRESHOLD}"),
            )),
            Some(n) => Ok(n),
        };
        Ok(CheckSpec {
            kind,
            interval,
            timeout,
            success_before_passing: count("check.success_before_passing", success_before_passing)?,
            failures_before_critical: count(
                "check.failures_before_critical",
                failures_before_critical,
            )?,
        })
    }

    /// What the check probes.
    pub fn kind(&self) -> &CheckKind {
        &self.kind
    }
    /// Time between probes (for a TTL check, the TTL).
    pub fn interval(&self) -> Duration {
        self.interval
    }
    /// How long one probe may take before it counts as a failure.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Consecutive passes that turn the instance passing.
    pub fn success_before_passing(&self) -> u32 {
        self.success_before_passing
    }
    /// Consecutive failures that turn the instance critical.
    pub fn failures_before_critical(&self) -> u32 {
        self.failures_before_critical
    }
}

/// Longest maintenance reason.
pub const MAX_REASON: usize = 1024;

/// Maintenance mode: drained from DNS while set, whatever the checks say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    reason: String,
    since: SystemTime,
}

impl Maintenance {
    /// Validates the reason (at most 1,024 bytes).
    pub fn new(reason: String, since: SystemTime) -> Result<Self, InvalidField> {
        if reason.len() > MAX_REASON {
            return Err(InvalidField::new(
                "reason",
                format!("at most {MAX_REASON} bytes"),
            ));
        }
        Ok(Maintenance { reason, since })
    }
    /// The same maintenance, started at `since` (turning it on again keeps the first start).
    pub fn started(mut self, since: SystemTime) -> Self {
        self.since = since;
        self
    }
    /// Why the instance was put in maintenance, as its operator wrote it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// When maintenance mode was turned on.
    pub fn since(&self) -> SystemTime {
        self.since
    }
}

/// What a registration asks for, before it is validated into an `Instance`.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// An IPv4 or IPv6 address, as text.
    pub address: String,
    /// The port, 1–65535 (also the SRV target port).
    pub port: u16,
    /// Tags as sent (at most 32); each must be a DNS label unless `text_tags`.
    pub tags: Vec<String>,
    /// Tags that are not DNS labels are kept as text (`Tag::parse_text_at`): the Consul API's
    /// registrations, and stored records (which may hold one).
    pub text_tags: bool,
    /// Metadata served as TXT `key=value` strings (at most 64, each at most 255 bytes).
    pub meta: BTreeMap<String, String>,
    /// Default 1.
    pub weight: Option<u16>,
    /// Default 0.
    pub priority: Option<u16>,
    /// DNS TTL in seconds for the service's answers, at most 86400; `None` means `dns.ttl`.
    pub ttl: Option<u32>,
    /// The health check, already validated; `None`: passing until reported otherwise.
    pub check: Option<CheckSpec>,
    /// Deregister the instance once it has been critical this long (at least 1 s).
    pub deregister_after: Option<Duration>,
    /// Named ports (`{"grpc": 9090}`), each served as `_<name>._tcp.<service>.service.D`
    /// SRV; names are DNS labels, at most `MAX_PORTS`.
    pub ports: BTreeMap<String, u16>,
    /// Answer with every instance not in maintenance when none is in service (fail-open).
    pub fail_open: bool,
}

/// One registered instance: what was registered (durable) plus its maintenance mode (durable).
/// Health is kept beside it by the registry, since health is not stored. Only
/// `Instance::new` makes one, so every rule of a registration holds, whatever its source (a
/// client, a stored record, another replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    key: InstanceKey,
    address: IpAddr,
    port: u16,
    tags: Vec<Tag>,
    meta: BTreeMap<String, String>,
    weight: u16,
    priority: u16,
    ttl: Option<u32>,
    check: Option<CheckSpec>,
    deregister_after: Option<Duration>,
    /// Named ports and fail-open, boxed and only when registered: most instances have
    /// neither, and inline they cost 24 bytes each (2.4 MB at 100,000 instances).
    routing: Option<Box<Routing>>,
    maintenance: Option<Maintenance>,
}

impl Instance {
    /// Validates `r` as instance `key`: an IP address, a port other than 0, at most 32 tags
    /// (DNS labels, duplicates dropped), metadata within its limits, a TTL of at most a day,
    /// `deregister_after` of at least 1 s. Errors name the field as a client sends it.
    pub fn new(key: InstanceKey, r: Registration) -> Result<Self, InvalidField> {
        let address = r.address.parse().map_err(|_| {
            InvalidField::new(
                "address",
                format!("{:?} is not an IPv4 or IPv6 address", r.address),
            )
        })?;
        if r.port == 0 {
            return Err(InvalidField::new("port", "must be 1 to 65535"));
        }
        if r.tags.len() > MAX_TAGS {
            return Err(InvalidField::new(
                "tags",
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(r.tags.len());
        for (i, t) in r.tags.iter().enumerate() {
            let t = if r.text_tags {
                Tag::parse_text_at(t, i)?
            } else {
                Tag::parse_at(t, i)?
            };
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        validate_meta(&r.meta)?;
        if let Some(t) = r.ttl
            && t > MAX_TTL
        {
            return Err(InvalidField::new(
                "ttl",
                format!("at most {MAX_TTL} seconds"),
            ));
        }
        let deregister_after = r
            .deregister_after
            .map(|d| at_least("deregister_after", d, MIN_TTL_CHECK))
            .transpose()?;
        let ports = validate_ports(r.ports)?;
        let routing = (!ports.is_empty() || r.fail_open).then(|| {
            Box::new(Routing {
                ports: ports.into_boxed_slice(),
                fail_open: r.fail_open,
            })
        });
        Ok(Instance {
            key,
            address,
            port: r.port,
            tags,
            meta: r.meta,
            weight: r.weight.unwrap_or(1),
            priority: r.priority.unwrap_or(0),
            ttl: r.ttl,
            check: r.check,
            deregister_after,
            routing,
            maintenance: None,
        })
    }

    /// The same instance with maintenance mode on (`Some`) or off.
    pub fn with_maintenance(mut self, maintenance: Option<Maintenance>) -> Self {
        self.maintenance = maintenance;
        self
    }

    /// The instance's service and id.
    pub fn key(&self) -> &InstanceKey {
        &self.key
    }
    /// The address DNS answers with (A or AAAA).
    pub fn address(&self) -> IpAddr {
        self.address
    }
    /// The port SRV answers carry.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Validated tags, duplicates dropped, in the order sent.
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }
    /// Metadata, served as TXT `key=value` strings.
    pub fn meta(&self) -> &BTreeMap<String, String> {
        &self.meta
    }
    /// SRV weight (default 1).
    pub fn weight(&self) -> u16 {
        self.weight
    }
    /// SRV priority (default 0).
    pub fn priority(&self) -> u16 {
        self.priority
    }
    /// Per-service DNS TTL in seconds; `None` means `dns.ttl`.
    pub fn ttl(&self) -> Option<u32> {
        self.ttl
    }
    /// The health check, if one was registered.
    pub fn check(&self) -> Option<&CheckSpec> {
        self.check.as_ref()
    }
    /// How long the instance may stay critical before it is deregistered.
    pub fn deregister_after(&self) -> Option<Duration> {
        self.deregister_after
    }
    /// Maintenance mode, when on: the instance is drained from DNS.
    pub fn maintenance(&self) -> Option<&Maintenance> {
        self.maintenance.as_ref()
    }
    /// Named ports, sorted by name.
    pub fn ports(&self) -> &[(PortName, u16)] {
        self.routing.as_ref().map_or(&[], |r| &r.ports)
    }
    /// Whether this registration asks its service to fail open.
    pub fn fail_open(&self) -> bool {
        self.routing.as_ref().is_some_and(|r| r.fail_open)
    }

    /// Whether the instance carries `tag`.
    pub fn has_tag(&self, tag: &Tag) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// What an instance registered of CONTRACT §2 "Routing" beside its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Routing {
    /// Named ports, sorted by name.
    ports: Box<[(PortName, u16)]>,
    fail_open: bool,
}

/// Most named ports per registration: each adds a DNS name to its service.
pub const MAX_PORTS: usize = 16;

/// Validates named ports: names are DNS labels (folded to lowercase, no two alike), ports
/// 1–65535, at most `MAX_PORTS`. Errors name the port (`ports.grpc`).
fn validate_ports(raw: BTreeMap<String, u16>) -> Result<Vec<(PortName, u16)>, InvalidField> {
    if raw.len() > MAX_PORTS {
        return Err(InvalidField::new(
            "ports",
            format!("at most {MAX_PORTS} named ports"),
        ));
    }
    let mut ports: Vec<(PortName, u16)> = Vec::with_capacity(raw.len());
    for (name, port) in raw {
        let field = format!("ports.{name}");
        let name = PortName(label(&field, &name)?);
        if port == 0 {
            return Err(InvalidField::new(field, "must be 1 to 65535"));
        }
        if ports.iter().any(|(n, _)| *n == name) {
            return Err(InvalidField::new(
                field,
                "names a port twice (names compare lowercased)",
            ));
        }
        ports.push((name, port));
    }
    ports.sort();
    Ok(ports)
}

/// Limits on metadata, so every `key=value` fits one DNS TXT string (255 bytes).
pub const MAX_META_ENTRIES: usize = 64;
/// Longest metadata key, in characters.
pub const MAX_META_KEY: usize = 128;
/// Longest metadata `key=value` pair, in bytes (one TXT string).
pub const MAX_META_PAIR: usize = 255;
/// Limit on tags per instance: each one adds DNS names, so an unbounded list is a memory lever.
pub const MAX_TAGS: usize = 32;
/// Largest per-service TTL accepted: a day. Service discovery wants short TTLs; a typo of
/// seconds for milliseconds should not pin a record in caches for weeks.
pub const MAX_TTL: u32 = 86_400;

/// Validates metadata: keys `[A-Za-z0-9_-]`, 1–128 characters; `key=value` at most 255 bytes.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), InvalidField> {
    if meta.len() > MAX_META_ENTRIES {
        return Err(InvalidField::new(
            "meta",
            format!("at most {MAX_META_ENTRIES} entries"),
        ));
    }
    for (k, v) in meta {
        let field = format!("meta.{k}");
        if k.is_empty() || k.len() > MAX_META_KEY {
            return Err(InvalidField::new(
                field,
                format!("key must be 1 to {MAX_META_KEY} characters"),
            ));
        }
        if !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(InvalidField::new(
                field,
                "key may hold only letters, digits, '_' and '-'",
            ));
        }
        if k.len() + 1 + v.len() > MAX_META_PAIR {
            return Err(InvalidField::new(
                field,
                format!("key=value must fit {MAX_META_PAIR} bytes (one DNS TXT string)"),
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(InvalidField::new(
                field,
                "value may not hold control characters",
            ));
        }
    }
    Ok(())
}

/// Parses a duration written like `5s`, `1m30s`, `250ms`, naming `field` on error.
pub fn parse_duration(field: &str, raw: &str) -> Result<Duration, InvalidField> {
    humantime::parse_duration(raw).map_err(|e| {
        InvalidField::new(field, format!("{raw:?} is not a duration like \"5s\": {e}"))
    })
}

/// Instances for tests, built from a few calls instead of a literal of every field:
/// `instance("web", "a").address("10.0.0.2").tags(&["v2"]).build()`. Panics on what
/// `Instance::new` refuses.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) struct Draft {
        key: InstanceKey,
        r: Registration,
        maintenance: Option<Maintenance>,
    }

    /// `service`/`id` at 10.0.0.1:80, no tags, no check.
    pub(crate) fn instance(service: &str, id: &str) -> Draft {
        Draft {
            key: key(service, id),
            r: Registration {
                address: "10.0.0.1".into(),
                port: 80,
                ..Registration::default()
            },
            maintenance: None,
        }
    }

    pub(crate) fn key(service: &str, id: &str) -> InstanceKey {
        InstanceKey {
            service: ServiceName::parse(service).unwrap(),
            id: InstanceId::parse(id).unwrap(),
        }
    }

    impl Draft {
        pub(crate) fn address(mut self, a: &str) -> Self {
            self.r.address = a.into();
            self
        }
        pub(crate) fn port(mut self, p: u16) -> Self {
            self.r.port = p;
            self
        }
        pub(crate) fn tags(mut self, t: &[&str]) -> Self {
            self.r.tags = t.iter().map(|s| s.to_string()).collect();
            self
        }
        /// Tags that need not be DNS labels, as the Consul API takes them.
        pub(crate) fn text_tags(mut self, t: &[&str]) -> Self {
            self.r.text_tags = true;
            self.tags(t)
        }
        pub(crate) fn meta(mut self, k: &str, v: &str) -> Self {
            self.r.meta.insert(k.into(), v.into());
            self
        }
        pub(crate) fn weight(mut self, w: u16) -> Self {
            self.r.weight = Some(w);
            self
        }
        pub(crate) fn priority(mut self, p: u16) -> Self {
            self.r.priority = Some(p);
            self
        }
        pub(crate) fn ttl(mut self, t: u32) -> Self {
            self.r.ttl = Some(t);
            self
        }
        pub(crate) fn check(mut self, c: CheckSpec) -> Self {
            self.r.check = Some(c);
            self
        }
        /// A TTL check of `ttl` with default timing.
        pub(crate) fn ttl_check(self, ttl: Duration) -> Self {
            self.check(CheckSpec::new(CheckKind::Ttl(ttl), None, None, None, None).unwrap())
        }
        pub(crate) fn deregister_after(mut self, d: Duration) -> Self {
            self.r.deregister_after = Some(d);
            self
        }
        pub(crate) fn port_named(mut self, name: &str, port: u16) -> Self {
            self.r.ports.insert(name.into(), port);
            self
        }
        pub(crate) fn fail_open(mut self) -> Self {
            self.r.fail_open = true;
            self
        }
        pub(crate) fn maintenance(mut self, reason: &str, since: SystemTime) -> Self {
            self.maintenance = Some(Maintenance::new(reason.into(), since).unwrap());
            self
        }
        pub(crate) fn build(self) -> Instance {
            Instance::new(self.key, self.r)
                .unwrap()
                .with_maintenance(self.maintenance)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_contract() {
        for ok in ["web", "a", "web-1", "0", &"x".repeat(63)] {
            assert!(ServiceName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", "web-", "we_b", "we.b", "wéb", &"x".repeat(64)] {
            let e = ServiceName::parse(bad).unwrap_err();
            assert_eq!(e.field, "service", "{bad}");
        }
        assert_eq!(
            ServiceName::parse("UpperCase").unwrap().as_str(),
            "uppercase"
        );
        assert_eq!(Tag::parse_at("-x", 2).unwrap_err().field, "tags[2]");
    }

    #[test]
    fn meta_limits_name_the_key() {
        let mut m = BTreeMap::new();
        m.insert("version".to_string(), "2.1.0".to_string());
        assert!(validate_meta(&m).is_ok());
        m.insert("bad key".to_string(), "x".to_string());
        assert_eq!(validate_meta(&m).unwrap_err().field, "meta.bad key");
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), "v".repeat(254));
        assert!(validate_meta(&m).is_err());
        m.insert("k".to_string(), "v".repeat(253));
        assert!(validate_meta(&m).is_ok());
    }

    #[test]
    fn named_ports_are_labels_and_ports() {
        let reg = |ports: &[(&str, u16)]| Registration {
            address: "10.0.0.1".into(),
            port: 80,
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            ..Registration::default()
        };
        let key = testing::key("web", "a");
        let i = Instance::new(key.clone(), reg(&[("GRPC", 9090), ("admin", 81)])).unwrap();
        let names: Vec<(&str, u16)> = i.ports().iter().map(|(n, p)| (n.as_str(), *p)).collect();
        assert_eq!(names, [("admin", 81), ("grpc", 9090)]);
        for (bad, field) in [
            (reg(&[("_grpc", 1)]), "ports._grpc"),
            (reg(&[("grpc", 0)]), "ports.grpc"),
            (reg(&[("grpc", 1), ("GRPC", 2)]), "ports.grpc"),
            (reg(&[("", 1)]), "ports."),
        ] {
            assert_eq!(Instance::new(key.clone(), bad).unwrap_err().field, field);
        }
        let many: Vec<(String, u16)> = (0..=MAX_PORTS).map(|k| (format!("p{k}"), 1)).collect();
        let e = Instance::new(
            key,
            Registration {
                ports: many.into_iter().collect(),
                ..reg(&[])
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "ports");
    }

    #[test]
    fn status_parses_and_orders() {
        assert_eq!(Status::parse("status", "warning").unwrap(), Status::Warning);
        assert!(Status::parse("status", "ok").is_err());
        assert!(Status::Passing < Status::Warning && Status::Warning < Status::Critical);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("x", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration("interval", "soon").unwrap_err().field,
            "interval"
        );
    }
}
