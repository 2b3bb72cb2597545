//! The web dashboard (CONTRACT §7): `GET /ui/` and `GET /ui/services/{service}` serve one
//! page shell, which reads the `/v1` API with `fetch` and follows it by long-polls; the shell,
//! its script, style sheet and icon are the files of `ui/`, built into the binary.
//!
//! The shell and its assets are the same for everyone and hold no data, so they are served
//! without a token even when `http.read_token` is set (a browser cannot send a bearer token
//! when it navigates to a page): `is_open` names them for the token check. Everything the
//! page shows comes from requests the script makes with the token the operator entered, and
//! those need it like every read. `GET /ui/config.json`, what the page needs to know of this
//! server (the DNS domain and addresses, whether the caller's token may write), is such a
//! read.
//!
//! Every response carries a strict Content-Security-Policy (scripts, styles and requests from
//! this origin only; no inline code, no framing), `X-Content-Type-Options: nosniff` and an
//! `ETag` (a hash of the file, fixed at build time): browsers revalidate (`no-cache`) and get
//! 304 while the binary is the same.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    LOCATION, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::refuse::Check;
use super::token::TokenCheck;
use crate::config::Secret;

/// Only this origin's scripts, styles, images and requests; no inline code, no plugins, no
/// framing (the action buttons cannot be clickjacked), forms post nowhere else.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'; object-src 'none'";

/// One built-in file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: u64,
}

macro_rules! asset {
    ($file:literal, $type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../ui/", $file));
        Asset {
            body: BODY,
            content_type: $type,
            etag: fnv1a(BODY),
        }
    }};
}

/// The page shell: every page of the dashboard (the script reads the path).
const SHELL: Asset = asset!("index.html", "text/html; charset=utf-8");

/// The files the shell loads, by their path under `/ui/`.
const ASSETS: [(&str, Asset); 3] = [
    ("app.js", asset!("app.js", "text/javascript; charset=utf-8")),
    ("app.css", asset!("app.css", "text/css; charset=utf-8")),
    ("favicon.svg", asset!("favicon.svg", "image/svg+xml")),
];

/// FNV-1a, 64 bits: the assets' ETags, computed when the binary is built.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// Whether `path` is part of the page itself (shell, assets), served without a token: a GET
/// or HEAD of it is open whatever `http.read_token` says. Exact paths only, so no data and
/// nothing a later route adds under `/ui/` is opened by accident.
pub(crate) fn is_open(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/ui") else {
        return false;
    };
    match rest.strip_prefix('/') {
        None => rest.is_empty(),
        Some("") => true,
        Some(file) => {
            ASSETS.iter().any(|(name, _)| *name == file)
                || file
                    .strip_prefix("services/")
                    .is_some_and(|s| !s.is_empty() && !s.contains('/'))
        }
    }
}

/// What the dashboard's pages need to know of this server, besides the API.
#[derive(Clone)]
pub(crate) struct Dashboard {
    /// `dns.domain`, with its trailing dot.
    domain: String,
    /// The DNS addresses bound (ports resolved), each once.
    dns: Vec<SocketAddr>,
    /// The write token alone: `config.json` says whether the caller's token may write.
    writes: TokenCheck,
}

impl Dashboard {
    pub(crate) fn new(domain: &str, dns: &[SocketAddr], write_token: Option<&Secret>) -> Self {
        let mut unique = Vec::with_capacity(dns.len());
        for a in dns {
            if !unique.contains(a) {
                unique.push(*a);
            }
        }
        Self {
            domain: domain.to_string(),
            dns: unique,
            writes: TokenCheck::new(write_token, None),
        }
    }

    /// Whether a write carrying `headers`' credentials would pass the token check: asked of
    /// the check itself, so the answer is the API's.
    fn may_write(&self, headers: &HeaderMap) -> bool {
        let mut probe = Request::builder().method(Method::PUT).uri("/v1/");
        if let Some(auth) = headers.get(AUTHORIZATION) {
            probe = probe.header(AUTHORIZATION, auth);
        }
        let probe = probe
            .body(axum::body::Body::empty())
            .expect("a fixed method and URI");
        self.writes.refusal(&probe).is_none()
    }
}

/// `GET /ui`: the dashboard lives at `/ui/`.
pub(crate) async fn redirect() -> Response {
    let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/ui/"));
    secure(resp.headers_mut());
    resp
}

/// `GET /ui/` and `GET /ui/services/{service}`: the page shell. An invalid service name is
/// the page's to report, as the API names what is wrong with it.
pub(crate) async fn shell(headers: HeaderMap) -> Response {
    serve(&SHELL, &headers)
}

/// `GET /ui/{file}`: the shell's script, style sheet and icon.
pub(crate) async fn asset(
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    match ASSETS.iter().find(|(name, _)| *name == file) {
        Some((_, a)) => serve(a, &headers),
        None => super::not_found().await.into_response(),
    }
}

#[derive(Serialize)]
struct ConfigOut<'a> {
    /// `dns.domain`, e.g. `internal.`.
    domain: &'a str,
    /// The DNS listen addresses, `IP:PORT` (UDP and TCP both).
    dns: Vec<String>,
    /// Whether this request's token (or none, when no write token is set) may write.
    write: bool,
    /// The server's version.
    version: &'static str,
}

/// `GET /ui/config.json`: the DNS domain and addresses (for the names and `dig` lines a
/// service page shows) and whether the caller may write. A read: it needs the read token when
/// one is set (the token check sees to that), and is never cached.
pub(crate) async fn config(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let d = &st.dashboard;
    let body = ConfigOut {
        domain: &d.domain,
        dns: d.dns.iter().map(ToString::to_string).collect(),
        write: d.may_write(&headers),
        version: env!("CARGO_PKG_VERSION"),
    };
    let mut resp = Json(body).into_response();
    let h = resp.headers_mut();
    secure(h);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `asset`, or 304 when the browser's copy (`If-None-Match`) is current.
fn serve(asset: &Asset, req: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let current = req
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        // If-None-Match compares weakly (RFC 9110 §13.1.2).
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag);
    let mut resp = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = resp.headers_mut();
    secure(h);
    h.insert(
        ETAG,
        HeaderValue::from_str(&etag).expect("hex digits in quotes"),
    );
    // Stored, but asked again each time: a new binary's files are seen at once.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The headers every dashboard response carries.
fn secure(h: &mut HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_paths_are_the_page_and_its_files_only() {
        for open in [
            "/ui",
            "/ui/",
            "/ui/app.js",
            "/ui/app.css",
            "/ui/favicon.svg",
            "/ui/services/web",
            "/ui/services/Not_A_Label",
        ] {
            assert!(is_open(open), "{open}");
        }
        for closed in [
            "/ui/config.json",
            "/ui/services/",
            "/ui/services/web/x",
            "/ui/services",
            "/ui/app.jsx",
            "/ui//app.js",
            "/uix",
            "/ui-app.js",
            "/v1/services",
            "/",
        ] {
            assert!(!is_open(closed), "{closed}");
        }
    }

    #[test]
    fn a_current_copy_is_not_sent_again() {
        let a = &ASSETS[0].1;
        let etag = format!("\"{:016x}\"", a.etag);
        let mut h = HeaderMap::new();
        assert_eq!(serve(a, &h).status(), StatusCode::OK);
        for sent in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            h.insert(IF_NONE_MATCH, HeaderValue::from_str(&sent).unwrap());
            let r = serve(a, &h);
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{sent}");
            assert_eq!(r.headers()[ETAG], etag.as_str());
        }
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"0\""));
        assert_eq!(serve(a, &h).status(), StatusCode::OK);
    }

    #[test]
    fn the_files_differ_and_so_do_their_tags() {
        let mut tags: Vec<u64> = ASSETS.iter().map(|(_, a)| a.etag).collect();
        tags.push(SHELL.etag);
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len() + 1);
    }

    #[test]
    fn the_caller_may_write_with_the_write_token_or_when_none_is_set() {
        let w = Secret("w-token".into());
        let d = Dashboard::new("internal.", &[], Some(&w));
        let mut h = HeaderMap::new();
        assert!(!d.may_write(&h));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer r-token"));
        assert!(!d.may_write(&h));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer w-token"));
        assert!(d.may_write(&h));
        let open = Dashboard::new("internal.", &[], None);
        assert!(open.may_write(&HeaderMap::new()));
    }
}
