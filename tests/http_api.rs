//! The HTTP API of CONTRACT §3 and the persistence of §4, end to end over real sockets: every
//! endpoint with its success and error cases (each error a 4xx `{"error": ...}` naming the
//! field, with nothing changed), the `X-Signpost-Index` header, long-polls, TTL health
//! reports and their expiry, maintenance mode, and registrations that come back after an
//! in-process restart on the same data dir.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, test_config};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// A response reduced to what the tests look at.
struct Reply {
    status: StatusCode,
    index: Option<u64>,
    body: Value,
}

impl Reply {
    fn index(&self) -> u64 {
        self.index.expect("X-Signpost-Index header")
    }

    /// The `error` text of a JSON error reply, asserting its shape and a 4xx status.
    fn error(&self) -> &str {
        assert!(
            self.status.is_client_error(),
            "want a 4xx, got {} {}",
            self.status,
            self.body
        );
        let obj = self
            .body
            .as_object()
            .expect("an error body is a JSON object");
        assert_eq!(
            obj.len(),
            1,
            "an error body holds only `error`: {}",
            self.body
        );
        let text = obj["error"].as_str().expect("`error` is a string");
        assert!(!text.is_empty(), "empty error text");
        text
    }
}

async fn reply(r: Response) -> Reply {
    let status = r.status();
    let index = r.headers().get("x-signpost-index").map(|v| {
        v.to_str()
            .unwrap()
            .parse::<u64>()
            .expect("X-Signpost-Index is a number")
    });
    let bytes = r.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {bytes:?}"))
    };
    Reply {
        status,
        index,
        body,
    }
}

async fn get(s: &TestServer, path: &str) -> Reply {
    reply(s.client.get(s.url(path)).send().await.unwrap()).await
}

async fn put(s: &TestServer, path: &str, body: Value) -> Reply {
    reply(s.client.put(s.url(path)).json(&body).send().await.unwrap()).await
}

async fn put_raw(s: &TestServer, path: &str, body: impl Into<reqwest::Body>) -> Reply {
    reply(s.client.put(s.url(path)).body(body).send().await.unwrap()).await
}

async fn delete(s: &TestServer, path: &str) -> Reply {
    reply(s.client.delete(s.url(path)).send().await.unwrap()).await
}

fn inst_path(service: &str, id: &str) -> String {
    format!("/v1/services/{service}/instances/{id}")
}

/// The ids of a `GET /v1/services/{s}` reply, sorted.
fn ids(body: &Value) -> Vec<String> {
    let mut v: Vec<String> = body["instances"]
        .as_array()
        .expect("instances is a list")
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// An RFC 3339 UTC timestamp like `2026-11-23T10:00:00Z`.
fn assert_rfc3339(v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is a string: {v}"));
    let b = s.as_bytes();
    assert!(
        s.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && s.ends_with('Z'),
        "not RFC 3339 UTC: {s}"
    );
}

#[tokio::test]
async fn register_returns_the_stored_instance() {
    let s = TestServer::start().await;
    let r = put(
        &s,
        &inst_path("web", "web-1"),
        json!({
            "address": "10.0.0.7", "port": 8080, "tags": ["v2", "canary"],
            "meta": {"version": "2.1.0"}, "weight": 10, "priority": 3
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["service"], "web");
    assert_eq!(b["id"], "web-1");
    assert_eq!(b["address"], "10.0.0.7");
    assert_eq!(b["port"], 8080);
    assert_eq!(b["tags"], json!(["v2", "canary"]));
    assert_eq!(b["meta"], json!({"version": "2.1.0"}));
    assert_eq!(b["weight"], 10);
    assert_eq!(b["priority"], 3);
    assert_eq!(
        b["health"]["status"], "passing",
        "no check: passing while registered"
    );
    assert!(b["health"]["output"].is_string());
    assert_rfc3339(&b["health"]["since"]);
    assert!(b.get("maintenance").is_some_and(Value::is_null), "{b}");

    let g = get(&s, &inst_path("web", "web-1")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body, r.body, "GET returns what PUT stored");

    // Only address and port are required; the rest gets defaults.
    let r = put(
        &s,
        &inst_path("web", "web-2"),
        json!({"address": "fd00::2", "port": 1}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["address"], "fd00::2");
    assert_eq!(r.body["tags"], json!([]));
    assert_eq!(r.body["meta"], json!({}));
    assert!(r.body["weight"].is_u64() && r.body["priority"].is_u64());
}

#[tokio::test]
async fn register_is_idempotent() {
    let s = TestServer::start().await;
    let body = json!({"address": "10.0.0.7", "port": 8080, "tags": ["v2"]});
    let first = put(&s, &inst_path("web", "web-1"), body.clone()).await;
    assert_eq!(first.status, 200);
    let second = put(&s, &inst_path("web", "web-1"), body).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.body, first.body,
        "the same registration twice stores the same"
    );
    let svc = get(&s, "/v1/services/web").await;
    assert_eq!(ids(&svc.body), ["web-1"]);
}

#[tokio::test]
async fn names_and_tags_are_lowercased() {
    let s = TestServer::start().await;
    let r = put(
        &s,
        "/v1/services/WEB/instances/Web-1",
        json!({"address": "10.0.0.7", "port": 80, "tags": ["V2", "Canary"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["service"], "web");
    assert_eq!(r.body["id"], "web-1");
    assert_eq!(r.body["tags"], json!(["v2", "canary"]));
    assert_eq!(get(&s, &inst_path("web", "web-1")).await.status, 200);
    assert_eq!(get(&s, &inst_path("Web", "WEB-1")).await.status, 200);
    // Same instance, whatever the case: a re-PUT in lower case replaces it.
    put(
        &s,
        &inst_path("web", "web-1"),
        json!({"address": "10.0.0.8", "port": 80}),
    )
    .await;
    let svc = get(&s, "/v1/services/web").await;
    assert_eq!(ids(&svc.body), ["web-1"]);
    assert_eq!(svc.body["instances"][0]["address"], "10.0.0.8");
    let tagged = get(&s, "/v1/services/WEB?tag=CANARY").await;
    assert_eq!(tagged.status, 200);
    assert_eq!(
        ids(&tagged.body),
        Vec::<String>::new(),
        "replacement dropped the tag"
    );
}

#[tokio::test]
async fn replacement_changes_fields() {
    let s = TestServer::start().await;
    s.register(
        "web",
        "web-1",
        json!({
            "address": "10.0.0.7", "port": 8080, "tags": ["v1"], "meta": {"a": "1"}, "weight": 1
        }),
    )
    .await;
    let r = put(
        &s,
        &inst_path("web", "web-1"),
        json!({
            "address": "10.0.0.9", "port": 9090, "tags": ["v2"], "meta": {"b": "2"},
            "weight": 7, "priority": 2
        }),
    )
    .await;
    assert_eq!(r.status, 200);
    let g = get(&s, &inst_path("web", "web-1")).await;
    assert_eq!(g.body["address"], "10.0.0.9");
    assert_eq!(g.body["port"], 9090);
    assert_eq!(g.body["tags"], json!(["v2"]));
    assert_eq!(g.body["meta"], json!({"b": "2"}));
    assert_eq!(g.body["weight"], 7);
    assert_eq!(g.body["priority"], 2);
    assert_eq!(ids(&get(&s, "/v1/services/web").await.body), ["web-1"]);
}

/// One refused registration: where it is sent, what, and the field its error must name.
struct Bad {
    service: &'static str,
    id: &'static str,
    body: Vec<u8>,
    names: &'static str,
}

fn bad_json(names: &'static str, body: Value) -> Bad {
    Bad {
        service: "web",
        id: "",
        body: serde_json::to_vec(&body).unwrap(),
        names,
    }
}

#[tokio::test]
async fn invalid_registrations_are_refused_and_change_nothing() {
    let s = TestServer::start().await;
    s.register(
        "web",
        "web-1",
        json!({"address": "10.0.0.1", "port": 80, "tags": ["v1"]}),
    )
    .await;
    let before_web = get(&s, "/v1/services/web").await;
    let before_all = get(&s, "/v1/services").await;

    let ok = |extra: Value| {
        let mut b = json!({"address": "10.0.0.2", "port": 81});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let long = "a".repeat(64);
    let long: &'static str = Box::leak(long.into_boxed_str());
    let mut cases = vec![
        Bad {
            service: "-web",
            id: "x",
            body: serde_json::to_vec(&ok(json!({}))).unwrap(),
            names: "service",
        },
        Bad {
            service: long,
            id: "x",
            body: serde_json::to_vec(&ok(json!({}))).unwrap(),
            names: "service",
        },
        Bad {
            service: "we_b",
            id: "x",
            body: serde_json::to_vec(&ok(json!({}))).unwrap(),
            names: "service",
        },
        Bad {
            service: "web",
            id: "web_2",
            body: serde_json::to_vec(&ok(json!({}))).unwrap(),
            names: "id",
        },
        Bad {
            service: "web",
            id: "web-",
            body: serde_json::to_vec(&ok(json!({}))).unwrap(),
            names: "id",
        },
        bad_json("address", json!({"port": 80})),
        bad_json("address", json!({"address": "example.com", "port": 80})),
        bad_json("port", json!({"address": "10.0.0.2"})),
        bad_json("port", ok(json!({"port": 0}))),
        bad_json("port", ok(json!({"port": 70000}))),
        bad_json("port", ok(json!({"port": "80"}))),
        bad_json("tags[1]", ok(json!({"tags": ["ok", "-bad"]}))),
        bad_json("meta.bad key", ok(json!({"meta": {"bad key": "x"}}))),
        bad_json("meta.k", ok(json!({"meta": {"k": "v".repeat(254)}}))),
        bad_json("ttl", ok(json!({"ttl": 86401}))),
        bad_json(
            "check",
            ok(json!({"check": {"http": "http://10.0.0.2/", "tcp": "10.0.0.2:81"}})),
        ),
        bad_json("check", ok(json!({"check": {}}))),
        bad_json("check", ok(json!({"check": {"interval": "5s"}}))),
        bad_json(
            "check.interval",
            ok(json!({"check": {"ttl": "10s", "interval": "x"}})),
        ),
        bad_json("check.http", ok(json!({"check": {"http": "ftp://x"}}))),
        bad_json("check.tcp", ok(json!({"check": {"tcp": "nohost"}}))),
        bad_json("deregister_after", ok(json!({"deregister_after": "soon"}))),
        bad_json("colour", ok(json!({"colour": "red"}))),
    ];
    // Invalid JSON and an empty body: the error need only exist, there is no field to name.
    for raw in [
        &b"{\"address\": \"10.0.0.2\", "[..],
        b"not json",
        b"",
        b"  \n",
    ] {
        cases.push(Bad {
            service: "web",
            id: "",
            body: raw.to_vec(),
            names: "",
        });
    }

    for c in &cases {
        // Body errors are tried on the existing instance (a replacement) and on a new one.
        let targets: Vec<(&str, &str)> = if c.id.is_empty() {
            vec![("web", "web-1"), ("web", "web-2")]
        } else {
            vec![(c.service, c.id)]
        };
        for (svc, id) in targets {
            let r = put_raw(&s, &inst_path(svc, id), c.body.clone()).await;
            let what = format!("PUT {svc}/{id} {}", String::from_utf8_lossy(&c.body));
            let err = r.error();
            assert!(
                err.contains(c.names),
                "{what}: error {err:?} should name {:?}",
                c.names
            );
            assert_eq!(r.index(), before_web.index(), "{what}: the index moved");
        }
        let after = get(&s, "/v1/services/web").await;
        assert_eq!(
            after.body, before_web.body,
            "web changed after a refused write"
        );
        assert_eq!(after.index(), before_web.index());
        assert_eq!(get(&s, &inst_path("web", "web-2")).await.status, 404);
        assert_eq!(get(&s, "/v1/services").await.body, before_all.body);
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let s = TestServer::start().await;
    let mut body = json!({"address": "10.0.0.1", "port": 80});
    body["meta"] = json!({"k": "x".repeat(70 * 1024)});
    let r = put_raw(
        &s,
        &inst_path("web", "web-1"),
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(r.status, 413);
    r.error();
    assert!(r.index.is_some(), "413 carries the index too");
    assert_eq!(get(&s, &inst_path("web", "web-1")).await.status, 404);

    // A configured limit: 2 KiB. A valid 1.5 KB body passes, a 3 KB one does not.
    let s = TestServer::start_with(|c| c.http.max_body_bytes = 2048).await;
    let meta: serde_json::Map<String, Value> = (0..6)
        .map(|i| (format!("k{i}"), json!("v".repeat(240))))
        .collect();
    let fits = json!({"address": "10.0.0.1", "port": 80, "meta": meta});
    let fits = serde_json::to_vec(&fits).unwrap();
    assert!(fits.len() > 1400 && fits.len() < 2048, "{}", fits.len());
    let r = put_raw(&s, &inst_path("web", "web-1"), fits).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let too_big = json!({"address": "10.0.0.1", "port": 80, "meta": {"k": "v".repeat(3000)}});
    let r = put_raw(
        &s,
        &inst_path("web", "web-2"),
        serde_json::to_vec(&too_big).unwrap(),
    )
    .await;
    assert_eq!(r.status, 413);
    r.error();
    assert_eq!(get(&s, &inst_path("web", "web-2")).await.status, 404);
    // The health endpoint reads its body under the same limit.
    let r = put_raw(&s, &inst_path("web", "web-1/health"), vec![b' '; 4096]).await;
    assert_eq!(r.status, 413);
    r.error();
}

#[tokio::test]
async fn deregister_and_unknown_instances() {
    let s = TestServer::start().await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    s.register("web", "web-2", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    let r = delete(&s, &inst_path("web", "web-1")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.body, Value::Null, "204 has no body");
    let r = get(&s, &inst_path("web", "web-1")).await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("web-1"), "{}", r.body);
    assert_eq!(ids(&get(&s, "/v1/services/web").await.body), ["web-2"]);

    let r = delete(&s, &inst_path("web", "web-1")).await;
    assert_eq!(r.status, 404, "deleting twice");
    r.error();
    let r = delete(&s, &inst_path("nosuch", "x")).await;
    assert_eq!(r.status, 404);
    r.error();
    let r = get(&s, &inst_path("nosuch", "x")).await;
    assert_eq!(r.status, 404);
    r.error();
    let r = delete(&s, &inst_path("we_b", "x")).await;
    assert!(r.error().contains("service"), "{}", r.body);
    assert_eq!(get(&s, &inst_path("web", "web-2")).await.status, 200);
}

#[tokio::test]
async fn ttl_health_reports() {
    let s = TestServer::start().await;
    let r = put(
        &s,
        &inst_path("web", "web-1"),
        json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["health"]["status"], "critical",
        "a ttl check starts critical"
    );

    let health = inst_path("web", "web-1/health");
    let r = put(&s, &health, json!({"status": "passing", "output": "ok"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["health"]["status"], "passing");
    assert_eq!(r.body["health"]["output"], "ok");
    let g = get(&s, &inst_path("web", "web-1")).await;
    assert_eq!(g.body["health"]["status"], "passing");
    assert_eq!(g.body["health"]["output"], "ok");

    let r = put(&s, &health, json!({"status": "warning", "output": "slow"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["health"]["status"], "warning");

    let r = put_raw(&s, &health, Vec::new()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["health"]["status"], "passing",
        "an empty body means passing"
    );

    put(&s, &health, json!({"status": "critical", "output": "down"})).await;
    let before = get(&s, &inst_path("web", "web-1")).await;
    assert_eq!(before.body["health"]["status"], "critical");
    let r = put(&s, &health, json!({"status": "bogus"})).await;
    assert!(r.error().contains("status"), "{}", r.body);
    let after = get(&s, &inst_path("web", "web-1")).await;
    assert_eq!(after.body, before.body, "a refused report changes nothing");
    assert_eq!(after.index(), before.index());

    // No ttl check: its health is not reported from outside.
    s.register("web", "web-2", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    let r = put(
        &s,
        &inst_path("web", "web-2/health"),
        json!({"status": "critical"}),
    )
    .await;
    assert_eq!(r.status, 409);
    r.error();
    assert_eq!(
        get(&s, &inst_path("web", "web-2")).await.body["health"]["status"],
        "passing"
    );

    let r = put(
        &s,
        &inst_path("web", "nosuch/health"),
        json!({"status": "passing"}),
    )
    .await;
    assert_eq!(r.status, 404);
    r.error();
}

#[tokio::test]
async fn ttl_check_goes_critical_after_the_last_report() {
    let s = TestServer::start().await;
    s.register(
        "web",
        "web-1",
        json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "1s"}}),
    )
    .await;
    s.report("web", "web-1", "passing").await;
    // A second report restarts the TTL: the deadline is 1 s after this one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.report("web", "web-1", "passing").await;
    let last = Instant::now();
    let deadline = last + Duration::from_secs(5);
    let critical_at = loop {
        let g = get(&s, &inst_path("web", "web-1")).await;
        let status = g.body["health"]["status"].as_str().unwrap().to_string();
        if status == "critical" {
            assert!(
                g.body["health"]["output"].as_str().unwrap().contains("ttl"),
                "{}",
                g.body
            );
            break last.elapsed();
        }
        assert_eq!(status, "passing");
        assert!(
            Instant::now() < deadline,
            "still passing 5 s after the last report"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        critical_at >= Duration::from_millis(800),
        "critical {critical_at:?} after the last report of a 1 s ttl"
    );
    assert!(
        critical_at <= Duration::from_secs(3),
        "critical only after {critical_at:?}"
    );
}

#[tokio::test]
async fn maintenance_on_and_off() {
    let s = TestServer::start().await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let path = inst_path("web", "web-1/maintenance");
    let r = put(&s, &path, json!({"enabled": true, "reason": "deploy"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["maintenance"]["reason"], "deploy");
    let g = get(&s, &inst_path("web", "web-1")).await;
    assert_eq!(g.body["maintenance"]["reason"], "deploy");
    assert_eq!(g.body["maintenance"]["enabled"], true);
    assert_rfc3339(&g.body["maintenance"]["since"]);
    let list = get(&s, "/v1/services").await;
    assert_eq!(
        list.body["services"][0]["passing"], 0,
        "drained while in maintenance"
    );

    let r = put(&s, &path, json!({"reason": "no flag"})).await;
    assert!(r.error().contains("enabled"), "{}", r.body);
    assert_eq!(
        get(&s, &inst_path("web", "web-1")).await.body["maintenance"]["reason"],
        "deploy",
        "a refused request changes nothing"
    );

    let r = put(&s, &path, json!({"enabled": false})).await;
    assert_eq!(r.status, 200);
    assert!(r.body["maintenance"].is_null(), "{}", r.body);
    let g = get(&s, &inst_path("web", "web-1")).await;
    assert!(g.body["maintenance"].is_null());
    assert_eq!(
        get(&s, "/v1/services").await.body["services"][0]["passing"],
        1
    );

    let r = put(
        &s,
        &inst_path("web", "nosuch/maintenance"),
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(r.status, 404);
    r.error();
    let r = put_raw(&s, &path, Vec::new()).await;
    r.error();
}

/// What follows the JSON value in a refused body: garbage, a second value, stray tokens.
const TRAILERS: [&[u8]; 4] = [b"garbage", b"{}", b" x", b"\n]"];

#[tokio::test]
async fn trailing_data_after_the_json_body_is_refused() {
    let s = TestServer::start().await;
    let reg = br#"{"address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}}"#;
    let start = get(&s, "/v1/services").await.index();
    for tail in TRAILERS {
        let body = [&reg[..], tail].concat();
        // The registration route ahead of the router, and the router's (escapes go there).
        for path in [
            inst_path("web", "web-1"),
            "/v1/services/w%65b/instances/web-1".to_string(),
        ] {
            let r = put_raw(&s, &path, body.clone()).await;
            let what = format!("PUT {path} {}", String::from_utf8_lossy(&body));
            assert_eq!(r.status, 400, "{what}");
            assert!(
                r.error()
                    .contains("trailing characters after the JSON value"),
                "{what}: {}",
                r.body
            );
            assert_eq!(r.index(), start, "{what}: the index moved");
        }
        assert_eq!(get(&s, &inst_path("web", "web-1")).await.status, 404);
        assert_eq!(get(&s, "/v1/services").await.body, json!({"services": []}));
    }
    // Whitespace after the value is no trailing data.
    let r = put_raw(
        &s,
        &inst_path("web", "web-1"),
        [&reg[..], b" \r\n\t"].concat(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let health = inst_path("web", "web-1/health");
    let r = put_raw(
        &s,
        &health,
        &br#"{"status": "passing", "output": "ok"} "#[..],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let maintenance = inst_path("web", "web-1/maintenance");
    let before = get(&s, &inst_path("web", "web-1")).await;
    for tail in TRAILERS {
        for (path, body) in [
            (&health, &br#"{"status": "critical", "output": "down"}"#[..]),
            (
                &maintenance,
                &br#"{"enabled": true, "reason": "deploy"}"#[..],
            ),
        ] {
            let body = [body, tail].concat();
            let r = put_raw(&s, path, body.clone()).await;
            let what = format!("PUT {path} {}", String::from_utf8_lossy(&body));
            assert_eq!(r.status, 400, "{what}");
            assert!(
                r.error()
                    .contains("trailing characters after the JSON value"),
                "{what}: {}",
                r.body
            );
            assert_eq!(r.index(), before.index(), "{what}: the index moved");
        }
    }
    let after = get(&s, &inst_path("web", "web-1")).await;
    assert_eq!(
        after.body, before.body,
        "a refused body changed the instance"
    );
    assert_eq!(after.body["health"]["output"], "ok");
    assert!(after.body["maintenance"].is_null());
}

#[tokio::test]
async fn services_list_and_filters() {
    let s = TestServer::start().await;
    s.register(
        "web",
        "web-1",
        json!({"address": "10.0.0.1", "port": 80, "tags": ["v1"]}),
    )
    .await;
    s.register(
        "web",
        "web-2",
        json!({"address": "10.0.0.2", "port": 80, "tags": ["v2"], "check": {"ttl": "60s"}}),
    )
    .await;
    s.register("db", "db-1", json!({"address": "10.0.1.1", "port": 5432}))
        .await;

    let r = get(&s, "/v1/services").await;
    assert_eq!(r.status, 200);
    let mut services = r.body["services"].as_array().unwrap().clone();
    services.sort_by_key(|v| v["name"].as_str().unwrap().to_string());
    assert_eq!(
        services,
        vec![
            json!({"name": "db", "instances": 1, "passing": 1, "warning": 0, "critical": 0,
                   "maintenance": 0}),
            json!({"name": "web", "instances": 2, "passing": 1, "warning": 0, "critical": 1,
                   "maintenance": 0}),
        ]
    );

    let r = get(&s, "/v1/services/web").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "web");
    assert_eq!(ids(&r.body), ["web-1", "web-2"]);
    assert_eq!(r.body["instances"][0]["service"], "web");
    assert_eq!(
        ids(&get(&s, "/v1/services/web?status=passing").await.body),
        ["web-1"]
    );
    assert_eq!(
        ids(&get(&s, "/v1/services/web?status=critical").await.body),
        ["web-2"]
    );
    assert_eq!(
        ids(&get(&s, "/v1/services/web?tag=v2").await.body),
        ["web-2"]
    );
    assert_eq!(
        ids(&get(&s, "/v1/services/web?tag=v2&status=passing").await.body),
        Vec::<String>::new()
    );
    s.report("web", "web-2", "passing").await;
    assert_eq!(
        ids(&get(&s, "/v1/services/web?status=passing").await.body),
        ["web-1", "web-2"]
    );

    let r = get(&s, "/v1/services/nosuch").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"name": "nosuch", "instances": []}));

    let r = get(&s, "/v1/services/web?colour=red").await;
    assert!(r.error().contains("colour"), "{}", r.body);
    let r = get(&s, "/v1/services/web?status=bogus").await;
    assert!(r.error().contains("status"), "{}", r.body);
    let r = get(&s, "/v1/services/web?tag=-x").await;
    assert!(r.error().contains("tag"), "{}", r.body);
    let r = get(&s, "/v1/services/we_b").await;
    assert!(r.error().contains("service"), "{}", r.body);
}

#[tokio::test]
async fn index_header_on_every_response() {
    let s = TestServer::start().await;
    let i0 = get(&s, "/v1/services").await.index();

    let r = put(
        &s,
        &inst_path("web", "web-1"),
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    let i1 = r.index();
    assert!(i1 > i0, "registration: {i0} -> {i1}");
    let r = put(
        &s,
        &inst_path("web", "web-2"),
        json!({"address": "10.0.0.2", "port": 80, "check": {"ttl": "60s"}}),
    )
    .await;
    let i2 = r.index();
    assert!(i2 > i1, "registration: {i1} -> {i2}");

    // Reads do not move it, and all carry it.
    for path in [
        "/v1/services",
        "/v1/services/web",
        "/v1/services/web?status=passing",
        "/v1/services/web/instances/web-1",
        "/v1/services/nosuch",
    ] {
        let r = get(&s, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.index(), i2, "{path}");
    }

    let r = put(
        &s,
        &inst_path("web", "web-2/health"),
        json!({"status": "passing"}),
    )
    .await;
    let i3 = r.index();
    assert!(i3 > i2, "health change: {i2} -> {i3}");
    assert_eq!(get(&s, "/v1/services").await.index(), i3);

    let r = delete(&s, &inst_path("web", "web-1")).await;
    assert_eq!(r.status, 204);
    let i4 = r.index();
    assert!(i4 > i3, "deregistration: {i3} -> {i4}");

    // Errors carry the current index too.
    let errors = [
        get(&s, &inst_path("web", "web-1")).await,
        delete(&s, &inst_path("web", "web-1")).await,
        put_raw(&s, &inst_path("web", "web-3"), "not json").await,
        put(&s, &inst_path("web", "web-1/health"), json!({})).await,
        put(
            &s,
            &inst_path("web", "web-2/health"),
            json!({"status": "bogus"}),
        )
        .await,
        get(&s, "/v1/services/web?bogus=1").await,
        get(&s, "/v1/nosuch").await,
        put(&s, "/v1/services", json!({})).await,
    ];
    for (i, r) in errors.iter().enumerate() {
        r.error();
        assert_eq!(r.index(), i4, "error #{i} ({}, {})", r.status, r.body);
    }
    assert_eq!(get(&s, "/v1/services").await.index(), i4);
}

#[tokio::test]
async fn long_poll_returns_on_change() {
    let s = TestServer::start().await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let n = get(&s, "/v1/services/web").await.index();

    let url = s.url(&inst_path("web", "web-9"));
    let client = s.client.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = client
            .put(url)
            .json(&json!({"address": "10.0.0.9", "port": 80}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });

    let started = Instant::now();
    let r = get(&s, &format!("/v1/services/web?index={n}&wait=5s")).await;
    let took = started.elapsed();
    writer.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        took >= Duration::from_millis(150),
        "returned before the change: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "returned only after {took:?}"
    );
    assert!(r.index() > n, "index {} after {n}", r.index());
    assert_eq!(ids(&r.body), ["web-1", "web-9"]);
}

#[tokio::test]
async fn long_poll_times_out_unchanged() {
    let s = TestServer::start().await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let before = get(&s, "/v1/services/web").await;
    let n = before.index();
    let started = Instant::now();
    let r = get(&s, &format!("/v1/services/web?index={n}&wait=300ms")).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(took >= Duration::from_millis(280), "did not wait: {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "waited {took:?} for wait=300ms"
    );
    assert_eq!(r.index(), n);
    assert_eq!(r.body, before.body);

    // A bad index or wait is refused at once.
    let r = get(&s, "/v1/services/web?index=x&wait=1s").await;
    assert!(r.error().contains("index"), "{}", r.body);
    let r = get(&s, &format!("/v1/services/web?index={n}&wait=soon")).await;
    assert!(r.error().contains("wait"), "{}", r.body);
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let s = TestServer::start().await;
    let r = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/nosuch", "/v1/nosuch", "/v1/services/web/instances"] {
        let r = get(&s, path).await;
        assert_eq!(r.status, 404, "{path}");
        r.error();
    }
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    let s = TestServer::start().await;
    s.register(
        "web",
        "web-1",
        json!({
            "address": "10.0.0.1", "port": 8080, "tags": ["v1"], "meta": {"a": "b"}, "weight": 5
        }),
    )
    .await;
    s.register(
        "web",
        "web-2",
        json!({"address": "10.0.0.2", "port": 80, "check": {"ttl": "60s"}}),
    )
    .await;
    s.register("db", "db-1", json!({"address": "10.0.1.1", "port": 5432}))
        .await;
    s.report("web", "web-2", "passing").await;
    let r = put(
        &s,
        &inst_path("web", "web-1/maintenance"),
        json!({"enabled": true, "reason": "deploy"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.deregister("db", "db-1").await, 204);
    let web1 = get(&s, &inst_path("web", "web-1")).await.body;
    assert_eq!(
        get(&s, &inst_path("web", "web-2")).await.body["health"]["status"],
        "passing"
    );

    let dir = s.stop().await;
    let cfg = test_config(dir.path());
    let s = TestServer::start_in(dir, cfg).await;

    assert_eq!(
        ids(&get(&s, "/v1/services/web").await.body),
        ["web-1", "web-2"]
    );
    let again = get(&s, &inst_path("web", "web-1")).await.body;
    for field in [
        "service", "id", "address", "port", "tags", "meta", "weight", "priority",
    ] {
        assert_eq!(again[field], web1[field], "{field} after restart");
    }
    assert_eq!(again["maintenance"]["reason"], "deploy");
    assert_eq!(again["maintenance"]["since"], web1["maintenance"]["since"]);
    assert_eq!(again["health"]["status"], "passing", "no check: passing");
    let web2 = get(&s, &inst_path("web", "web-2")).await.body;
    assert_eq!(
        web2["health"]["status"], "critical",
        "health is re-established by the check"
    );
    assert_eq!(
        get(&s, &inst_path("db", "db-1")).await.status,
        404,
        "deletion persisted"
    );
    // And it still takes reports and writes.
    s.report("web", "web-2", "passing").await;
    s.register("web", "web-3", json!({"address": "10.0.0.3", "port": 80}))
        .await;
}

/// A long-poll on one service returns when *that* service changes (its registrations or
/// health), not on every write anywhere, as Consul's blocking queries; the index header still
/// grows registry-wide.
#[tokio::test]
async fn long_poll_wakes_only_for_its_own_service() {
    let s = TestServer::start().await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let n = get(&s, "/v1/services/web").await.index();

    let url = |svc: &str, id: &str| s.url(&inst_path(svc, id));
    let (other, mine) = (url("api", "api-1"), url("web", "web-2"));
    let client = s.client.clone();
    let writer = tokio::spawn(async move {
        // Writes elsewhere first: they must not end the watch.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let r = client
                .put(&other)
                .json(&json!({"address": "10.0.0.2", "port": 80}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = client
            .put(&mine)
            .json(&json!({"address": "10.0.0.3", "port": 80}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    let started = Instant::now();
    let r = get(&s, &format!("/v1/services/web?index={n}&wait=10s")).await;
    let took = started.elapsed();
    writer.await.unwrap();
    assert!(
        took >= Duration::from_millis(450),
        "woken by another service's write after {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "returned only after {took:?}"
    );
    assert_eq!(ids(&r.body), ["web-1", "web-2"]);
    assert!(
        r.index() > n + 1,
        "the index grew registry-wide: {}",
        r.index()
    );

    // A watch from an index older than the service's last change returns at once; one from
    // before only other services' changes waits.
    let m = r.index();
    let before = Instant::now();
    let again = get(&s, &format!("/v1/services/web?index={n}&wait=5s")).await;
    assert!(before.elapsed() < Duration::from_secs(1));
    assert_eq!(ids(&again.body), ["web-1", "web-2"]);
    s.register("api", "api-2", json!({"address": "10.0.0.4", "port": 80}))
        .await;
    let before = Instant::now();
    let unchanged = get(&s, &format!("/v1/services/web?index={m}&wait=300ms")).await;
    assert!(
        before.elapsed() >= Duration::from_millis(280),
        "woken by api"
    );
    assert_eq!(unchanged.body, again.body);
}

/// `GET /v1/services` counts each service's instances by health (maintenance apart, whatever
/// the health: the four add up to `instances`) and long-polls: `?index=N&wait=` returns at the
/// next change of any service, or after `wait` unchanged.
#[tokio::test]
async fn the_services_list_counts_by_health_and_long_polls_on_any_change() {
    let s = TestServer::start().await;
    for i in 1..=4 {
        s.register(
            "web",
            &format!("web-{i}"),
            json!({"address": format!("10.0.0.{i}"), "port": 80, "check": {"ttl": "60s"}}),
        )
        .await;
    }
    s.report("web", "web-1", "passing").await;
    s.report("web", "web-2", "warning").await;
    s.report("web", "web-4", "passing").await;
    let r = put(
        &s,
        &inst_path("web", "web-4/maintenance"),
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    let list = get(&s, "/v1/services").await;
    assert_eq!(
        list.body,
        json!({"services": [{"name": "web", "instances": 4, "passing": 1, "warning": 1,
                             "critical": 1, "maintenance": 1}]})
    );

    // Unchanged: the wait runs out and the same list comes back.
    let n = list.index();
    let started = Instant::now();
    let r = get(&s, &format!("/v1/services?index={n}&wait=300ms")).await;
    assert!(
        started.elapsed() >= Duration::from_millis(280),
        "did not wait"
    );
    assert_eq!((r.index(), &r.body), (n, &list.body));

    // A change of another service wakes it too (it lists them all).
    let client = s.client.clone();
    let url = s.url(&inst_path("db", "db-1"));
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = client
            .put(url)
            .json(&json!({"address": "10.0.1.1", "port": 5432}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    let started = Instant::now();
    let r = get(&s, &format!("/v1/services?index={n}&wait=30s")).await;
    let took = started.elapsed();
    writer.await.unwrap();
    assert!(
        took >= Duration::from_millis(150),
        "returned early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "returned only after {took:?}"
    );
    assert!(r.index() > n);
    assert_eq!(r.body["services"].as_array().unwrap().len(), 2);

    // An index the registry already passed returns at once; bad parameters are refused.
    let r = get(&s, "/v1/services?index=1&wait=30s").await;
    assert_eq!(r.body["services"].as_array().unwrap().len(), 2);
    for (query, field) in [
        ("index=x", "index"),
        ("index=1&wait=soon", "wait"),
        ("tag=v1", "tag"),
    ] {
        let r = get(&s, &format!("/v1/services?{query}")).await;
        assert_eq!(r.status, 400, "{query}");
        assert!(r.error().contains(field), "{query}: {}", r.body);
    }
}
