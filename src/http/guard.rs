//! Writes from browser pages: refused unless their `Origin` is allowed and their `Host` is
//! one of this server's names.
//!
//! A page on another site can make a browser send requests to `127.0.0.1:8500`, and with DNS
//! rebinding (its own name re-pointed at 127.0.0.1) even read the answers. Two checks stop
//! it from changing anything:
//! - a write carrying an `Origin` header (browsers send it on every cross-origin request and
//!   on every same-origin write) must come from `http.allowed_origins`, or from the origin it
//!   is sent to (its `Origin` names the request's own `Host`): the dashboard's pages (`/ui/`)
//!   write to the server that served them. A rebound page passes this too, but not the next
//!   check, as its `Host` is its own name;
//! - a write's `Host` must be `localhost`, an IP address (v4, or v6 in brackets; this covers
//!   the listen address) or a name in `http.allowed_hosts`, with or without a port: a
//!   rebound page addresses its own name, which is none of these.
//!
//! Writes are every method but GET, HEAD and OPTIONS; reads stay open, as a read changes
//! nothing. Requests without `Origin` (curl, scripts, services registering themselves) pass
//! the first check, and tools that send no `Host` at all pass the second. The refusal is 403
//! with the JSON error shape, naming the header value at fault.
//!
//! The layer sits above the registration path (`fast`), so that every request passes it
//! (ARCHITECTURE.md, "Invariants").

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{HOST, ORIGIN};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::refuse::Check;

/// The guard's rules, shared by every connection's copy of the layer.
#[derive(Clone)]
pub(crate) struct Guard {
    rules: Arc<Rules>,
}

struct Rules {
    /// Lowercased, as the config normalised them.
    origins: Vec<String>,
    /// Lowercased names, each with its port when one was given.
    hosts: Vec<(String, Option<u16>)>,
}

impl Guard {
    /// `origins` and `hosts` as `config` validated and lowercased them.
    pub(crate) fn new(origins: &[String], hosts: &[String]) -> Self {
        let hosts = hosts
            .iter()
            .filter_map(|h| split_port(h))
            .map(|(name, port)| (name.trim_end_matches('.').to_string(), port))
            .collect();
        Self {
            rules: Arc::new(Rules {
                origins: origins.to_vec(),
                hosts,
            }),
        }
    }
}

impl Check for Guard {
    fn refusal(&self, req: &Request) -> Option<Response> {
        self.rules.refusal(req).map(IntoResponse::into_response)
    }
}

impl Rules {
    /// Why `req` may not proceed, if it may not.
    fn refusal(&self, req: &Request) -> Option<ApiError> {
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        let forbidden = |m: String| Some(ApiError::new(StatusCode::FORBIDDEN, m));
        // An absolute-form request line names the host in the URI, which then wins.
        let host = match req.uri().authority() {
            Some(a) => Some(a.as_str().to_string()),
            None => req
                .headers()
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        };
        if let Some(origin) = req.headers().get(ORIGIN) {
            let text = String::from_utf8_lossy(origin.as_bytes());
            let lower = text.to_ascii_lowercase();
            let own = host.as_deref().is_some_and(|h| same_origin(&lower, h));
            if !own && !self.origins.contains(&lower) {
                return forbidden(format!(
                    "origin {text:?} may not write here: it is not in http.allowed_origins"
                ));
            }
        }
        match host {
            Some(h) if !self.is_ours(&h) => forbidden(format!(
                "host {h:?} is not one of this server's names (localhost, an IP address, \
                 http.allowed_hosts)"
            )),
            _ => None,
        }
    }

    /// `localhost`, an IP address or an allowed name, with or without a port.
    fn is_ours(&self, host: &str) -> bool {
        let Some((name, port)) = split_port(host) else {
            return false;
        };
        if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok();
        }
        if name.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost"
            || self
                .hosts
                .iter()
                .any(|(h, p)| *h == name && (p.is_none() || *p == port))
    }
}

/// Whether `origin` (lowercased, `scheme://host[:port]`) names `host` (a `Host` header): a
/// page writing to the server it came from. The scheme's default port may be left out of
/// either.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let host = host.to_ascii_lowercase();
    let bare = |a: &'_ str| a.strip_suffix(default).unwrap_or(a).to_string();
    !authority.is_empty() && bare(authority) == bare(&host)
}

/// `host[:port]` split; `None` when the port is not a number.
fn split_port(s: &str) -> Option<(&str, Option<u16>)> {
    match s.rsplit_once(':') {
        // `[v6]:port`, or `name:port`; a bare v6 address has colons but no brackets.
        Some((h, p)) if h.ends_with(']') || !h.contains(':') => Some((h, Some(p.parse().ok()?))),
        _ => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;

    fn rules() -> Guard {
        Guard::new(
            &["https://ops.example.com".into()],
            &["signpost.internal".into(), "sp.internal:8500".into()],
        )
    }

    fn req(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri("/v1/services");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn hosts() {
        let g = rules();
        for ok in [
            "localhost",
            "LOCALHOST:8500",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8500",
            "[::1]",
            "[::1]:8500",
            "[fe80::1]:1",
            "signpost.internal",
            "Signpost.Internal:9999",
            "sp.internal:8500",
        ] {
            assert!(g.rules.is_ours(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8500",
            "localhost.evil.example",
            "sp.internal",
            "sp.internal:8501",
            "127.0.0.1.evil.example",
            "127.1",
            "::1",
            "[::1",
            "localhost:http",
            "",
        ] {
            assert!(!g.rules.is_ours(bad), "{bad}");
        }
    }

    #[test]
    fn only_writes_are_checked() {
        let g = rules();
        let evil = [("origin", "http://evil.example"), ("host", "evil.example")];
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(g.rules.refusal(&req(m, &evil)).is_none());
        }
        for m in [Method::PUT, Method::DELETE, Method::POST, Method::PATCH] {
            let e = g.rules.refusal(&req(m.clone(), &evil)).expect("refused");
            assert_eq!(e.status, StatusCode::FORBIDDEN);
            assert!(e.message.contains("evil.example"), "{m}");
            assert!(g.rules.refusal(&req(m.clone(), &[])).is_none(), "{m}");
            let ok = [("origin", "https://OPS.example.com"), ("host", "localhost")];
            assert!(g.rules.refusal(&req(m.clone(), &ok)).is_none());
        }
    }

    #[test]
    fn a_page_writes_to_its_own_origin() {
        let g = rules();
        let put = |origin: &str, host: &str| {
            g.rules
                .refusal(&req(Method::PUT, &[("origin", origin), ("host", host)]))
        };
        for (origin, host) in [
            ("http://127.0.0.1:8500", "127.0.0.1:8500"),
            ("http://LOCALHOST:8500", "localhost:8500"),
            ("http://[::1]:8500", "[::1]:8500"),
            ("http://signpost.internal", "signpost.internal:80"),
            ("https://signpost.internal:443", "Signpost.Internal"),
        ] {
            assert!(put(origin, host).is_none(), "{origin} to {host}");
        }
        for (origin, host) in [
            // Another port is another origin (another local web app).
            ("http://127.0.0.1:3000", "127.0.0.1:8500"),
            ("http://127.0.0.1", "127.0.0.1:8500"),
            ("null", "127.0.0.1:8500"),
            ("http://", ""),
            ("ftp://127.0.0.1:8500", "127.0.0.1:8500"),
        ] {
            assert!(put(origin, host).is_some(), "{origin} to {host}");
        }
        // A rebound page's origin is its own name: same origin, but not one of ours.
        let e = put("http://evil.example:8500", "evil.example:8500").expect("refused");
        assert!(e.message.contains("http.allowed_hosts"), "{}", e.message);
    }
}
