//! Writes from browser pages (DNS rebinding, cross-site requests), over real sockets: a write
//! whose `Origin` is not in `http.allowed_origins`, or whose `Host` is not one of the server's
//! names (`localhost`, an IP address, `http.allowed_hosts`), is refused with 403 and the JSON
//! error shape and changes nothing, on the registration path served ahead of the router and on
//! routes of the router alike; reads and requests without `Origin` are unaffected.

mod common;

use common::TestServer;
use common::raw::{self, RawReply};
use serde_json::{Value, json};

const BODY: &[u8] = br#"{"address": "10.0.0.1", "port": 80}"#;

async fn send(s: &TestServer, method: &str, path: &str, headers: &[(&str, &str)]) -> RawReply {
    let body = if method == "PUT" && !path.ends_with("/maintenance") {
        BODY
    } else if method == "PUT" {
        &br#"{"enabled": true, "reason": "x"}"#[..]
    } else {
        b""
    };
    raw::send(s.http, &raw::request(method, path, headers, body)).await
}

async fn instance(s: &TestServer, id: &str) -> Option<Value> {
    let r = s
        .client
        .get(s.url(&format!("/v1/services/web/instances/{id}")))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return None;
    }
    Some(r.json().await.unwrap())
}

/// Each write path: the registration path's exact shape, and three router routes.
fn writes(id: &str) -> [(&'static str, String); 4] {
    [
        ("PUT", format!("/v1/services/web/instances/{id}")),
        (
            "PUT",
            format!("/v1/services/web/instances/{id}/maintenance"),
        ),
        ("DELETE", format!("/v1/services/web/instances/{id}")),
        // Percent-escaped: declined by the registration path, served by the router.
        ("PUT", format!("/v1/services/w%65b/instances/{id}")),
    ]
}

#[tokio::test]
async fn writes_from_a_foreign_origin_are_refused() {
    let s = TestServer::start_with(|c| {
        c.http.allowed_origins = vec!["https://ops.example.com".into()];
    })
    .await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let before = instance(&s, "web-1").await.unwrap();

    for origin in [
        "http://evil.example",
        "null",
        "https://ops.example.com.evil.example",
    ] {
        for (method, path) in writes("web-1").iter().chain(&writes("web-2")) {
            let r = send(&s, method, path, &[("Origin", origin)]).await;
            assert_eq!(r.status, 403, "{method} {path} from {origin}: {r:?}");
            let e = r.error();
            assert!(e.contains(origin), "{e}");
            assert!(e.contains("http.allowed_origins"), "{e}");
            assert!(r.header("x-signpost-index").is_some(), "{method} {path}");
        }
    }
    assert_eq!(instance(&s, "web-1").await.unwrap(), before, "unchanged");
    assert_eq!(instance(&s, "web-2").await, None, "nothing registered");

    // The allowed origin writes, in any case; reads are open to every origin.
    let r = send(
        &s,
        "PUT",
        "/v1/services/web/instances/web-2",
        &[("Origin", "HTTPS://ops.example.com")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(
        &s,
        "PUT",
        "/v1/services/web/instances/web-2/maintenance",
        &[("Origin", "https://ops.example.com")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(
        &s,
        "GET",
        "/v1/services/web",
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(
        &s,
        "DELETE",
        "/v1/services/web/instances/web-2",
        &[("Origin", "https://ops.example.com")],
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
}

#[tokio::test]
async fn writes_to_a_foreign_host_name_are_refused() {
    let s = TestServer::start_with(|c| {
        c.http.allowed_hosts = vec!["signpost.internal".into()];
    })
    .await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let before = instance(&s, "web-1").await.unwrap();
    let port = s.http.port().to_string();

    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        "localhost.evil.example".to_string(),
        "signpost.internal.evil.example".to_string(),
    ] {
        for (method, path) in writes("web-1").iter().chain(&writes("web-2")) {
            let r = send(&s, method, path, &[("Host", &host)]).await;
            assert_eq!(r.status, 403, "{method} {path} to {host}: {r:?}");
            let e = r.error();
            assert!(e.contains(&host), "{e}");
            assert!(e.contains("http.allowed_hosts"), "{e}");
        }
        // Reads answer whatever the Host.
        let r = send(&s, "GET", "/v1/services/web", &[("Host", &host)]).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(instance(&s, "web-1").await.unwrap(), before, "unchanged");
    assert_eq!(instance(&s, "web-2").await, None, "nothing registered");

    // The server's own names and addresses, with and without a port.
    let mut id = 0;
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
        "[::1]".to_string(),
        "10.1.2.3".to_string(),
        "signpost.internal".to_string(),
        format!("Signpost.Internal:{port}"),
    ] {
        id += 1;
        for (method, path) in writes(&format!("ok-{id}")) {
            let r = send(&s, method, &path, &[("Host", &host)]).await;
            assert!(
                r.status == 200 || r.status == 204,
                "{method} {path} to {host}: {r:?}"
            );
        }
    }
}

/// A page writing to the server that served it (the dashboard at `/ui/`) sends its own origin,
/// which names the request's `Host`: allowed without listing it in `http.allowed_origins`.
/// Another port on the same address is another origin, and a rebound name fails the `Host`
/// check.
#[tokio::test]
async fn a_page_writes_to_its_own_origin() {
    let s = TestServer::start().await;
    let own = format!("http://{}", s.http);
    let r = send(
        &s,
        "PUT",
        "/v1/services/web/instances/web-1",
        &[("Origin", &own), ("Host", &s.http.to_string())],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let other = format!("http://127.0.0.1:{}", s.http.port() + 1);
    for (origin, host) in [
        (other.as_str(), s.http.to_string()),
        ("http://evil.example:8500", "evil.example:8500".to_string()),
    ] {
        let r = send(
            &s,
            "PUT",
            "/v1/services/web/instances/web-1/maintenance",
            &[("Origin", origin), ("Host", &host)],
        )
        .await;
        assert_eq!(r.status, 403, "{origin} to {host}: {r:?}");
    }
    assert!(instance(&s, "web-1").await.unwrap()["maintenance"].is_null());
}
