//! Typed values of the configuration file, parsed once when it is loaded: durations (one
//! format throughout: a humantime string like `"10s"` or `"250ms"`, or a plain integer taken
//! as seconds), client networks (CIDR), forwarding upstreams and the few enumerations. A value
//! that does not parse is an error naming its key (`serde_path_to_error` adds the path).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Deserializes a duration written `"10s"`, `"1m30s"`, `"250ms"`, or as whole seconds (`10`).
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration like \"10s\" or \"250ms\", or whole seconds")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            humantime::parse_duration(s)
                .map_err(|e| E::custom(format!("{s:?} is not a duration like \"10s\": {e}")))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            u64::try_from(n)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{n} is not a duration: it is negative")))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(n))
        }
    }
    d.deserialize_any(V)
}

/// A client network written as CIDR (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<ipnet::IpNet>()
            .map(Network)
            .map_err(|_| de::Error::custom(format!("{s:?} is not a network like 10.0.0.0/8")))
    }
}

impl Network {
    /// Parses a CIDR string (defaults and tests).
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok().map(Network)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One forwarding upstream: an address (`IP`, port 53, or `IP:PORT`, `[V6]:PORT`), or the
/// name servers of `dns.forward.resolv_conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// A name server at this address.
    Addr(SocketAddr),
    /// The name servers listed in `dns.forward.resolv_conf`, read at start-up.
    ResolvConf,
}

impl Upstream {
    /// Parses `IP`, `IP:PORT`, `[V6]:PORT` or `resolv.conf`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "resolv.conf" {
            return Some(Upstream::ResolvConf);
        }
        super::parse_upstream(s).map(Upstream::Addr)
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Upstream::parse(&s).ok_or_else(|| {
            de::Error::custom(format!("{s:?} is not IP, IP:PORT or \"resolv.conf\""))
        })
    }
}

/// Where registrations are kept (`registry.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A database file in `registry.data_dir`.
    #[default]
    Embedded,
    /// An etcd v3 cluster shared by several replicas (`[registry.etcd]`).
    Etcd,
}

/// How logs are written (`log.format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    /// One readable line per event (the default).
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A token (`http.token`, `http.read_token`): never shown by `Debug`, so a logged config
/// cannot leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}
