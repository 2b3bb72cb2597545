//! The domain vocabulary of signpost: validated names (`ServiceName`, `InstanceId`, `Tag`),
//! an `Instance` as registered, its `Health` and its `CheckSpec`.
//!
//! Nothing here does I/O or knows a wire format: the HTTP and store edges convert their own
//! serde types into these by hand, so validation happens once, here, whatever the source.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Why a value was rejected. `field` is the name a user sent it under (`port`, `tags[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

impl InvalidField {
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
label_type!(
    /// A tag an instance carries, usable as a DNS filter label: lowercase.
    Tag,
    "tags"
);

impl Tag {
    /// Validates a tag sent at position `i` of the `tags` list, naming that position on error.
    pub fn parse_at(raw: &str, i: usize) -> Result<Self, InvalidField> {
        label(&format!("tags[{i}]"), raw).map(Self)
    }
}

/// The identity of an instance: its service and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    pub service: ServiceName,
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
    Passing,
    Warning,
    Critical,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

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
    pub status: Status,
    /// A check's or report's own text, or one of signpost's fixed phrases (not allocated
    /// per instance: at 100,000 instances the copies of "registered without a check" were
    /// megabytes).
    pub output: std::borrow::Cow<'static, str>,
    pub since: SystemTime,
}

impl Health {
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

/// A check as registered, with its timing and thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
}

/// Defaults for a check's optional fields, as documented in the README.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Maintenance mode: drained from DNS while set, whatever the checks say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub reason: String,
    pub since: SystemTime,
}

/// One registered instance: what was registered (durable) plus its maintenance mode (durable).
/// Health is kept beside it by the registry, since health is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub key: InstanceKey,
    pub address: IpAddr,
    pub port: u16,
    pub tags: Vec<Tag>,
    pub meta: BTreeMap<String, String>,
    pub weight: u16,
    pub priority: u16,
    /// Per-service DNS TTL in seconds; `None` means `dns.ttl`.
    pub ttl: Option<u32>,
    pub check: Option<CheckSpec>,
    pub deregister_after: Option<Duration>,
    pub maintenance: Option<Maintenance>,
}

impl Instance {
    pub fn has_tag(&self, tag: &Tag) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Limits on metadata, so every `key=value` fits one DNS TXT string (255 bytes).
pub const MAX_META_ENTRIES: usize = 64;
pub const MAX_META_KEY: usize = 128;
pub const MAX_META_PAIR: usize = 255;
/// Limit on tags per instance: each one adds DNS names, so an unbounded list is a memory lever.
pub const MAX_TAGS: usize = 32;
/// Largest per-service TTL accepted: a day. Service discovery wants short TTLs; a typo of
/// seconds for milliseconds should not pin a record in caches for weeks.
pub const MAX_TTL: u32 = 86_400;

/// Validates metadata: keys `[A-Za-z0-9_-]`, 1–128 characters; `key=value` at most 255 bytes.
pub fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), InvalidField> {
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
