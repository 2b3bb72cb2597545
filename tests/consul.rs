//! The Consul-compatible API (CONTRACT §5) on real sockets: the shape of every endpoint's
//! answer and every error, blocking queries, tokens, and real Consul clients started by the
//! tests:
//!
//! - VictoriaMetrics (Debian's `victoria-metrics`), whose `consul_sd_configs` makes the calls
//!   Prometheus' does (`/v1/agent/self`, blocking `/v1/catalog/services` and
//!   `/v1/health/service/{name}` with `dc` and `stale`), discovering, labelling and dropping
//!   targets, with its `basic_auth` password as the read token;
//! - py-consul (PyPI) and the `consul` npm client, installed pinned into
//!   `target/consul-clients` by `tests/clients/consul-clients.sh`, running
//!   `tests/clients/consul_py.py` and `tests/clients/consul_node.js`.
//!
//! Every wait is bounded; every process a test starts is killed by PID when it ends.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use common::TestServer;

const WRITE: &str = "w-token";
const READ: &str = "r-token";

/// A server whose writes need `WRITE` and reads `READ`, its node named `sp-test`.
async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.http.token = Some(signpost::config::Secret(WRITE.into()));
        c.http.read_token = Some(signpost::config::Secret(READ.into()));
        c.consul.node = Some("sp-test".into());
    })
    .await
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
    fn index(&self) -> u64 {
        self.headers["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
    /// The error of a refusal, in signpost's shape.
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_string()
    }
}

async fn send(s: &TestServer, method: &str, path: &str, body: Option<&str>) -> Reply {
    let token = if method == "GET" { READ } else { WRITE };
    let mut req = s
        .client
        .request(method.parse().unwrap(), s.url(path))
        .header("X-Consul-Token", token);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = req.send().await.unwrap();
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

async fn get(s: &TestServer, path: &str) -> Reply {
    send(s, "GET", path, None).await
}

async fn put(s: &TestServer, path: &str, body: Option<&str>) -> Reply {
    send(s, "PUT", path, body).await
}

/// Registers through the Consul API and asserts Consul's answer: 200, no body.
async fn register(s: &TestServer, body: Value) {
    let r = put(s, "/v1/agent/service/register", Some(&body.to_string())).await;
    assert_eq!((r.status, r.text.as_str()), (200, ""), "register {body}");
}

/// The IDs of a health answer, in order.
fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap().to_string())
        .collect()
}

/// Every Consul read carries the index (never 0) and the leader headers.
fn consul_headers(r: &Reply, what: &str) {
    assert!(r.index() >= 1, "{what}: X-Consul-Index {}", r.index());
    assert_eq!(r.headers["x-consul-knownleader"], "true", "{what}");
    assert_eq!(r.headers["x-consul-lastcontact"], "0", "{what}");
}

/// The registration the Go client sends (`api.AgentServiceRegistration`), nulls included.
fn go_body(id: &str, port: u16, check: Value) -> Value {
    json!({
        "ID": id, "Name": "web", "Tags": ["v2", "canary"], "Port": port,
        "Address": "10.0.0.7", "Meta": {"version": "2.1.0"},
        "Weights": {"Passing": 10, "Warning": 1},
        "Check": check, "Checks": null,
    })
}

#[tokio::test]
async fn every_read_has_consuls_shape() {
    let s = server().await;
    // A fresh registry: empty answers are [] or {}, and the index is still at least 1.
    for path in [
        "/v1/health/service/web",
        "/v1/catalog/service/web",
        "/v1/health/state/any",
    ] {
        let r = get(&s, path).await;
        assert_eq!((r.status, r.text.as_str()), (200, "[]"), "{path}");
        consul_headers(&r, path);
    }
    for path in ["/v1/catalog/services", "/v1/agent/services"] {
        let r = get(&s, path).await;
        assert_eq!((r.status, r.text.as_str()), (200, "{}"), "{path}");
        consul_headers(&r, path);
    }

    register(&s, go_body("web-1", 8080, Value::Null)).await;
    register(
        &s,
        go_body(
            "web-2",
            8081,
            json!({"TTL": "1m0s", "DeregisterCriticalServiceAfter": "1h"}),
        ),
    )
    .await;

    let r = get(&s, "/v1/agent/services").await;
    consul_headers(&r, "agent/services");
    let v = r.json();
    let svc = &v["web-1"];
    let index = svc["ModifyIndex"].as_u64().unwrap();
    assert!(index >= 1);
    assert_eq!(
        svc,
        &json!({
            "ID": "web-1", "Service": "web", "Tags": ["v2", "canary"],
            "Meta": {"version": "2.1.0"}, "Port": 8080, "Address": "10.0.0.7",
            "Weights": {"Passing": 10, "Warning": 1}, "EnableTagOverride": false,
            "Datacenter": "dc1", "CreateIndex": index, "ModifyIndex": index,
        })
    );

    let r = get(&s, "/v1/health/service/web").await;
    consul_headers(&r, "health/service");
    assert_eq!(r.index(), index, "the index of the service's last change");
    let v = r.json();
    assert_eq!(ids(&v), ["web-1", "web-2"]);
    let node = &v[0]["Node"];
    assert_eq!(node["Node"], "sp-test");
    assert_eq!(node["Datacenter"], "dc1");
    assert_eq!(node["Address"], "127.0.0.1");
    assert_eq!(node["Meta"], json!({}));
    assert_eq!(node["ID"].as_str().unwrap().len(), 36);
    let check = &v[0]["Checks"][0];
    assert_eq!(v[0]["Checks"].as_array().unwrap().len(), 1);
    assert_eq!(check["CheckID"], "service:web-1");
    assert_eq!(
        check["Status"], "passing",
        "no check: passing while registered"
    );
    assert_eq!(check["ServiceID"], "web-1");
    assert_eq!(check["ServiceName"], "web");
    assert_eq!(check["ServiceTags"], json!(["v2", "canary"]));
    assert_eq!(check["Node"], "sp-test");
    let ttl = &v[1]["Checks"][0];
    assert_eq!(
        (ttl["CheckID"].as_str(), ttl["Status"].as_str()),
        (Some("service:web-2"), Some("critical"))
    );
    assert_eq!(ttl["Type"], "ttl");

    let r = get(&s, "/v1/catalog/services").await;
    consul_headers(&r, "catalog/services");
    assert_eq!(r.json(), json!({"web": ["canary", "v2"]}));

    let r = get(&s, "/v1/catalog/service/web").await;
    consul_headers(&r, "catalog/service");
    let v = r.json();
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "the catalog does not filter by health"
    );
    let c = &v[0];
    for (field, want) in [
        ("Node", json!("sp-test")),
        ("Address", json!("127.0.0.1")),
        ("Datacenter", json!("dc1")),
        ("ServiceID", json!("web-1")),
        ("ServiceName", json!("web")),
        ("ServiceAddress", json!("10.0.0.7")),
        ("ServicePort", json!(8080)),
        ("ServiceTags", json!(["v2", "canary"])),
        ("ServiceMeta", json!({"version": "2.1.0"})),
        ("ServiceWeights", json!({"Passing": 10, "Warning": 1})),
        ("NodeMeta", json!({})),
    ] {
        assert_eq!(c[field], want, "catalog/service {field}");
    }

    let r = get(&s, "/v1/health/state/critical").await;
    consul_headers(&r, "health/state");
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["CheckID"], "service:web-2");
    assert_eq!(
        get(&s, "/v1/health/state/any")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(get(&s, "/v1/health/state/warning").await.text, "[]");

    let r = get(&s, "/v1/agent/self").await;
    consul_headers(&r, "agent/self");
    let v = r.json();
    assert_eq!(v["Config"]["Datacenter"], "dc1");
    assert_eq!(v["Config"]["NodeName"], "sp-test");
    assert!(
        v.as_object().unwrap().values().all(Value::is_object),
        "the Go client reads agent/self as a map of maps: {v}"
    );

    // The rest of what consul-template, Fabio and Registrator ask.
    let r = get(&s, "/v1/catalog/datacenters").await;
    consul_headers(&r, "catalog/datacenters");
    assert_eq!(r.json(), json!(["dc1"]));
    let v = get(&s, "/v1/catalog/nodes").await.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(
        (v[0]["Node"].as_str(), v[0]["Address"].as_str()),
        (Some("sp-test"), Some("127.0.0.1"))
    );
    let v = get(&s, "/v1/health/checks/web").await.json();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["service:web-1", "service:web-2"]);
    let v = get(&s, "/v1/agent/checks").await.json();
    assert_eq!(v["service:web-2"]["Status"], "critical");
    assert_eq!(v.as_object().unwrap().len(), 2);
    assert_eq!(
        get(&s, "/v1/status/peers").await.json(),
        json!([s.http.to_string()])
    );

    // /v1/status/leader is open, as Consul serves it without a token.
    let r = s
        .client
        .get(s.url("/v1/status/leader"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let leader: String = r.json().await.unwrap();
    assert_eq!(leader, s.http.to_string());
}

#[tokio::test]
async fn one_registry_behind_both_apis_and_dns() {
    let s = server().await;
    register(&s, go_body("web-1", 8080, Value::Null)).await;
    // signpost's own API sees the Consul registration, weights and all...
    let r = s
        .client
        .get(s.url("/v1/services/web/instances/web-1"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["address"].as_str(),
            v["port"].as_u64(),
            v["weight"].as_u64()
        ),
        (Some("10.0.0.7"), Some(8080), Some(10))
    );
    // ...and DNS answers it.
    let (m, _) = s.udp("web.service.internal.", RecordType::A, None).await;
    assert_eq!(m.answers.len(), 1);
    // A native registration shows in the Consul API.
    let r = s
        .client
        .put(s.url("/v1/services/api/instances/api-1"))
        .bearer_auth(WRITE)
        .json(&json!({"address": "10.0.0.9", "port": 9000, "tags": ["blue"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = get(&s, "/v1/catalog/services").await.json();
    assert_eq!(v, json!({"api": ["blue"], "web": ["canary", "v2"]}));

    // Re-registering an ID under another name moves it, as Consul replaces by ID.
    register(
        &s,
        json!({"ID": "web-1", "Name": "shop", "Address": "10.0.0.7", "Port": 1}),
    )
    .await;
    let v = get(&s, "/v1/agent/services").await.json();
    assert_eq!(v["web-1"]["Service"], "shop");
    assert_eq!(get(&s, "/v1/health/service/web").await.text, "[]");
    let (m, _) = s.udp("web.service.internal.", RecordType::A, None).await;
    assert!(m.answers.is_empty(), "moved out of web in DNS too");

    // Deregistering: 200, also when nothing has the ID.
    for id in ["web-1", "web-1", "nobody"] {
        let r = put(&s, &format!("/v1/agent/service/deregister/{id}"), None).await;
        assert_eq!((r.status, r.text.as_str()), (200, ""), "deregister {id}");
    }
    assert_eq!(get(&s, "/v1/health/service/shop").await.text, "[]");
}

/// Tags through the Consul API need not be DNS labels (CONTRACT §5 asks that of names and IDs
/// only): Traefik's and Fabio's tags are kept and shown by both APIs, and filter with `tag`;
/// label tags (any case) also name DNS filters, other tags name nothing in DNS.
#[tokio::test]
async fn tags_that_are_not_labels_are_kept_but_name_nothing_in_dns() {
    let s = server().await;
    let tags = [
        "V2",
        "traefik.enable=true",
        "urlprefix-/web strip=/web",
        "blue_green",
    ];
    register(
        &s,
        json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.7", "Port": 80, "Tags": tags}),
    )
    .await;
    let shown = [
        "v2",
        "traefik.enable=true",
        "urlprefix-/web strip=/web",
        "blue_green",
    ];
    let v = get(&s, "/v1/catalog/service/web").await.json();
    assert_eq!(v[0]["ServiceTags"], json!(shown));
    let v = get(&s, "/v1/agent/services").await.json();
    assert_eq!(v["web-1"]["Tags"], json!(shown));
    let r = s
        .client
        .get(s.url("/v1/services/web/instances/web-1"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(shown));
    // `tag` selects by any tag, without case, as Consul's.
    for (tag, n) in [
        ("Traefik.Enable=true", 1),
        ("traefik.enable=false", 0),
        ("v2", 1),
    ] {
        let q = form_urlencoded::byte_serialize(tag.as_bytes()).collect::<String>();
        let v = get(&s, &format!("/v1/health/service/web?tag={q}"))
            .await
            .json();
        assert_eq!(v.as_array().unwrap().len(), n, "tag {tag}");
    }
    // The label tag is a DNS filter; the others are none (and break no name).
    let (m, _) = s.udp("v2.web.service.internal.", RecordType::A, None).await;
    assert_eq!(m.answers.len(), 1);
    let (m, _) = s.udp("web.service.internal.", RecordType::A, None).await;
    assert_eq!(m.answers.len(), 1);
    // `blue_green` is no DNS label (an underscore) but can be asked as a name: nothing.
    let (m, _) = s
        .udp("blue_green.web.service.internal.", RecordType::A, None)
        .await;
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    // The native API still takes label tags only (CONTRACT §3).
    let r = s
        .client
        .put(s.url("/v1/services/api/instances/api-1"))
        .bearer_auth(WRITE)
        .json(&json!({"address": "10.0.0.9", "port": 9000, "tags": ["traefik.enable=true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("tags[0]"));
}

/// The status and output of check `check` in web's health answer.
async fn check_status(s: &TestServer, check: &str) -> Option<(String, String)> {
    let v = get(s, "/v1/health/service/web").await.json();
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["Checks"].as_array().unwrap().clone())
        .find(|c| c["CheckID"] == check)
        .map(|c| {
            let text = |f: &str| c[f].as_str().unwrap().to_string();
            (text("Status"), text("Output"))
        })
}

#[tokio::test]
async fn ttl_reports_maintenance_passing_and_tags() {
    let s = server().await;
    register(&s, go_body("web-1", 8080, json!({"TTL": "30s"}))).await;
    register(
        &s,
        json!({"Name": "web", "ID": "web-2", "Address": "10.0.0.8", "Port": 8080, "Tags": ["v2"],
               "Checks": [{"TTL": "30s", "Status": "passing"}]}),
    )
    .await;
    let passing = || async { ids(&get(&s, "/v1/health/service/web?passing").await.json()) };
    assert_eq!(
        passing().await,
        ["web-2"],
        "a TTL check's Status is its first status"
    );

    let status = |check: &'static str| check_status(&s, check);
    for (path, want, output) in [
        (
            "/v1/agent/check/pass/service:web-1?note=fine",
            "passing",
            "fine",
        ),
        (
            "/v1/agent/check/warn/service:web-1?note=slow",
            "warning",
            "slow",
        ),
        ("/v1/agent/check/fail/service:web-1", "critical", ""),
    ] {
        let r = put(&s, path, None).await;
        assert_eq!((r.status, r.text.as_str()), (200, ""), "{path}");
        assert_eq!(
            status("service:web-1").await,
            Some((want.into(), output.into())),
            "{path}"
        );
    }
    for (body, want) in [
        (r#"{"Status": "passing", "Output": "back"}"#, "passing"),
        (r#"{"status": "warning", "output": "back"}"#, "warning"),
    ] {
        let r = put(&s, "/v1/agent/check/update/service:web-1", Some(body)).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text);
        assert_eq!(
            status("service:web-1").await,
            Some((want.into(), "back".into()))
        );
    }
    assert_eq!(passing().await, ["web-2"], "?passing drops warning too");
    assert_eq!(
        ids(&get(&s, "/v1/health/service/web?passing=false").await.json()),
        ["web-1", "web-2"]
    );
    put(&s, "/v1/agent/check/pass/service:web-1", None).await;
    assert_eq!(passing().await, ["web-1", "web-2"]);

    // Maintenance: its own critical check; out of ?passing and DNS; back when off.
    let r = put(
        &s,
        "/v1/agent/service/maintenance/web-1?enable=true&reason=kernel+upgrade",
        None,
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));
    let v = get(&s, "/v1/health/service/web").await.json();
    let checks = &v[0]["Checks"];
    assert_eq!(checks[0]["CheckID"], "_service_maintenance:web-1");
    assert_eq!(
        (checks[0]["Status"].as_str(), checks[0]["Notes"].as_str()),
        (Some("critical"), Some("kernel upgrade"))
    );
    assert_eq!(checks[1]["CheckID"], "service:web-1");
    assert_eq!(passing().await, ["web-2"]);
    let (m, _) = s.udp("web.service.internal.", RecordType::A, None).await;
    assert_eq!(m.answers.len(), 1, "drained from DNS");
    let v = get(&s, "/v1/health/state/critical").await.json();
    assert_eq!(v[0]["CheckID"], "_service_maintenance:web-1");
    put(&s, "/v1/agent/service/maintenance/web-1?enable=false", None).await;
    put(&s, "/v1/agent/service/maintenance/web-1?enable=true", None).await;
    let v = get(&s, "/v1/health/service/web").await.json();
    assert!(
        v[0]["Checks"][0]["Notes"]
            .as_str()
            .unwrap()
            .contains("no reason was provided")
    );
    put(&s, "/v1/agent/service/maintenance/web-1?enable=false", None).await;
    assert_eq!(passing().await, ["web-1", "web-2"]);

    // Tags: every one given must match; filters select on tags, meta, name and ID.
    let q = |p: &'static str| {
        let s = &s;
        async move { ids(&get(s, &format!("/v1/health/service/web?{p}")).await.json()) }
    };
    assert_eq!(q("tag=v2").await, ["web-1", "web-2"]);
    assert_eq!(q("tag=v2&tag=canary").await, ["web-1"]);
    assert_eq!(q("tag=V2&tag=nope").await, Vec::<String>::new());
    assert_eq!(q("filter=%22canary%22+in+Service.Tags").await, ["web-1"]);
    assert_eq!(
        q("filter=Service.Meta.version+%3D%3D+%222.1.0%22").await,
        ["web-1"]
    );
    assert_eq!(
        q("filter=ServiceID+%21%3D+web-1+and+ServiceName+%3D%3D+web").await,
        ["web-2"]
    );
    let v = get(
        &s,
        "/v1/catalog/services?filter=%22canary%22+not+in+ServiceTags",
    )
    .await
    .json();
    assert_eq!(v, json!({"web": ["v2"]}));
    let v = get(&s, "/v1/agent/services?filter=Tags+contains+canary")
        .await
        .json();
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["web-1"]);
    let v = get(&s, "/v1/catalog/service/web?tag=canary").await.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    // The one node has no metadata: asking for some selects nothing.
    assert_eq!(
        get(&s, "/v1/health/service/web?node-meta=rack:a")
            .await
            .text,
        "[]"
    );
    // What the tools send on every request is accepted.
    let r = get(&s, "/v1/health/service/web?dc=dc1&stale&consistent&cached&near=_agent&ns=default&partition=default").await;
    assert_eq!((r.status, ids(&r.json()).len()), (200, 2));
}

#[tokio::test]
async fn every_error_is_refused_with_its_field_and_changes_nothing() {
    let s = server().await;
    register(&s, go_body("web-1", 8080, Value::Null)).await;
    let before = get(&s, "/v1/agent/services").await.text;
    let valid = |extra: Value| {
        let mut b = json!({"Name": "web", "ID": "web-9", "Address": "10.0.0.1", "Port": 80});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    for (body, says) in [
        (valid(json!({"Name": "web_app"})), "Name:"),
        (valid(json!({"Name": "-web"})), "Name:"),
        (valid(json!({"ID": "web.9"})), "ID:"),
        (valid(json!({"Name": null})), "Name: is required"),
        (valid(json!({"Address": ""})), "Address:"),
        (valid(json!({"Address": "web.example"})), "Address:"),
        (valid(json!({"Port": 0})), "Port:"),
        (valid(json!({"Port": "80"})), "Port:"),
        (valid(json!({"Tags": ["ok", ""]})), "Tags[1]:"),
        (valid(json!({"Tags": ["ok", "a\u{7}b"]})), "Tags[1]:"),
        (valid(json!({"Tags": ["x".repeat(256)]})), "Tags[0]:"),
        (valid(json!({"Meta": {"bad key": "x"}})), "Meta.bad key:"),
        (
            valid(json!({"Weights": {"Passing": 0}})),
            "Weights.Passing:",
        ),
        (valid(json!({"Check": {"TTL": "10"}})), "Check.TTL:"),
        (valid(json!({"Check": {"TTL": "500ms"}})), "Check.TTL:"),
        (
            valid(json!({"Check": {"HTTP": "ftp://x/", "Interval": "10s"}})),
            "Check.HTTP:",
        ),
        (
            valid(json!({"Check": {"TCP": "10.0.0.1:80", "Interval": "1ms"}})),
            "Check.Interval:",
        ),
        (
            valid(json!({"Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "10ms"}})),
            "Check.DeregisterCriticalServiceAfter:",
        ),
        (
            valid(json!({"Checks": [{"TTL": "10s"}, {"HTTP": "http://x/", "Interval": "1s"}]})),
            "Checks[1]:",
        ),
        (
            valid(json!({"Check": {"Args": ["/bin/check"], "Interval": "10s"}})),
            "HTTP, TCP and TTL checks only",
        ),
        (
            valid(json!({"Check": {"GRPC": "10.0.0.1:9000", "Interval": "10s"}})),
            "HTTP, TCP and TTL checks only",
        ),
        (
            valid(json!({"Check": {"TTL": "10s", "CheckID": "mine"}})),
            "Check.CheckID:",
        ),
        (
            valid(json!({"Check": {"HTTP": "http://x/", "Status": "passing"}})),
            "Check.Status:",
        ),
        (valid(json!({"Connect": {"Native": true}})), "Connect:"),
        (valid(json!({"Kind": "connect-proxy"})), "Kind:"),
        (valid(json!({"Colour": "red"})), "\"colour\" is not a field"),
        (r#"{"Name": "web", "name": "api"}"#.into(), "given twice"),
        ("{not json".into(), "body:"),
        ("".into(), "body:"),
        ("[1]".into(), "body:"),
    ] {
        let r = put(&s, "/v1/agent/service/register", Some(&body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.error().contains(says), "{body}: {}", r.error());
    }
    let r = put(
        &s,
        "/v1/agent/service/register?dc=dc2",
        Some(&valid(json!({}))),
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.error().contains("No path to datacenter"), "{}", r.error());
    assert_eq!(
        get(&s, "/v1/agent/services").await.text,
        before,
        "nothing registered"
    );

    for (method, path, body, status, says) in [
        (
            "PUT",
            "/v1/agent/check/pass/service:nobody",
            None,
            404,
            "Unknown check ID",
        ),
        (
            "PUT",
            "/v1/agent/check/pass/web-1",
            None,
            404,
            "Unknown check ID",
        ),
        (
            "PUT",
            "/v1/agent/check/pass/service:web-1",
            None,
            409,
            "no ttl check",
        ),
        (
            "PUT",
            "/v1/agent/check/update/service:web-1",
            Some(r#"{"Status": "fine"}"#),
            400,
            "Status:",
        ),
        (
            "PUT",
            "/v1/agent/check/update/service:web-1",
            Some(r#"{"Output": "x"}"#),
            400,
            "Status: required",
        ),
        (
            "PUT",
            "/v1/agent/check/update/service:web-1",
            Some(r#"{"Status": "passing", "Colour": 1}"#),
            400,
            "\"Colour\" is not a field",
        ),
        (
            "PUT",
            "/v1/agent/service/maintenance/web-1",
            None,
            400,
            "enable: required",
        ),
        (
            "PUT",
            "/v1/agent/service/maintenance/web-1?enable=maybe",
            None,
            400,
            "enable:",
        ),
        (
            "PUT",
            "/v1/agent/service/maintenance/nobody?enable=true",
            None,
            404,
            "Unknown service ID",
        ),
        (
            "PUT",
            "/v1/agent/service/deregister/Not_A_Label",
            None,
            400,
            "ID:",
        ),
        (
            "GET",
            "/v1/health/service/web?dc=dc2",
            None,
            500,
            "No path to datacenter",
        ),
        (
            "GET",
            "/v1/health/service/web?pasing",
            None,
            400,
            "pasing: unknown query parameter",
        ),
        ("GET", "/v1/health/service/web?index=x", None, 400, "index:"),
        (
            "GET",
            "/v1/health/service/web?index=1&wait=5",
            None,
            400,
            "wait:",
        ),
        (
            "GET",
            "/v1/health/service/web?filter=Node.Meta.rack+%3D%3D+a",
            None,
            400,
            "filter:",
        ),
        (
            "GET",
            "/v1/health/service/web?filter=ServiceName+matches+w",
            None,
            400,
            "not supported",
        ),
        ("GET", "/v1/health/service/web?ns=team", None, 400, "ns:"),
        (
            "GET",
            "/v1/health/service/web_app",
            None,
            400,
            "service name:",
        ),
        ("GET", "/v1/catalog/service/-x", None, 400, "service name:"),
        (
            "GET",
            "/v1/catalog/services?tag=x",
            None,
            400,
            "tag: unknown",
        ),
        ("GET", "/v1/health/state/bogus", None, 400, "state:"),
        ("GET", "/v1/agent/services?filter=", None, 400, "filter:"),
        (
            "GET",
            "/v1/agent/service/register",
            None,
            405,
            "method not allowed",
        ),
        (
            "POST",
            "/v1/agent/service/deregister/web-1",
            None,
            405,
            "method not allowed",
        ),
        ("GET", "/v1/kv/config", None, 404, "no such endpoint"),
        (
            "GET",
            "/v1/health/checks/web_app",
            None,
            400,
            "service name:",
        ),
        (
            "GET",
            "/v1/catalog/datacenters?dc=dc9",
            None,
            500,
            "No path to datacenter",
        ),
    ] {
        let r = send(&s, method, path, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text);
        assert!(r.error().contains(says), "{method} {path}: {}", r.error());
    }
    assert_eq!(
        get(&s, "/v1/agent/services").await.text,
        before,
        "nothing changed"
    );

    // An ID two services share (only signpost's own API makes one) is not guessed at.
    let r = s
        .client
        .put(s.url("/v1/services/api/instances/web-1"))
        .bearer_auth(WRITE)
        .json(&json!({"address": "10.0.0.9", "port": 9000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = put(&s, "/v1/agent/service/deregister/web-1", None).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("several services"), "{}", r.error());
    let v = get(&s, "/v1/agent/services").await.json();
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "both kept and both listed: {v}"
    );
}

#[tokio::test]
async fn tokens_from_consul_header_basic_auth_or_bearer() {
    let s = server().await;
    let body = go_body("web-1", 8080, Value::Null).to_string();
    let url = s.url("/v1/agent/service/register");
    let status = |r: reqwest::Response| r.status().as_u16();
    let c = &s.client;
    assert_eq!(
        status(c.put(&url).body(body.clone()).send().await.unwrap()),
        401
    );
    assert_eq!(
        status(
            c.put(&url)
                .header("X-Consul-Token", READ)
                .body(body.clone())
                .send()
                .await
                .unwrap()
        ),
        401
    );
    assert_eq!(
        status(
            c.put(&url)
                .basic_auth("prometheus", Some(READ))
                .body(body.clone())
                .send()
                .await
                .unwrap()
        ),
        401
    );
    assert_eq!(
        get(&s, "/v1/agent/services").await.text,
        "{}",
        "refused writes changed nothing"
    );
    assert_eq!(
        status(
            c.put(&url)
                .basic_auth("anyone", Some(WRITE))
                .body(body.clone())
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            c.put(&url)
                .bearer_auth(WRITE)
                .body(body.clone())
                .send()
                .await
                .unwrap()
        ),
        200
    );
    let read = s.url("/v1/health/service/web");
    let r = c.get(&read).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        status(
            c.get(&read)
                .basic_auth("prometheus", Some(READ))
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            c.get(&read)
                .header("X-Consul-Token", READ)
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            c.get(&read)
                .header("X-Consul-Token", WRITE)
                .send()
                .await
                .unwrap()
        ),
        200
    );
}

/// A blocking read waits for its own result's change: another service's change does not
/// wake it, its own does, at once.
#[tokio::test]
async fn a_watch_wakes_for_its_own_service_only() {
    let s = server().await;
    register(&s, go_body("web-1", 8080, Value::Null)).await;
    register(
        &s,
        json!({"Name": "api", "Address": "10.0.0.9", "Port": 9000}),
    )
    .await;
    let index = get(&s, "/v1/health/service/web").await.index();

    let watch = {
        let (client, url) = (
            s.client.clone(),
            s.url(&format!("/v1/health/service/web?index={index}&wait=20s")),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .get(url)
                .header("X-Consul-Token", READ)
                .send()
                .await
                .unwrap();
            let index: u64 = r.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let body: Value = r.json().await.unwrap();
            (started.elapsed(), index, body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Other services change, and the registry's index with them.
    register(
        &s,
        json!({"Name": "api", "ID": "api-2", "Address": "10.0.0.9", "Port": 9001}),
    )
    .await;
    put(&s, "/v1/agent/service/deregister/api-2", None).await;
    put(&s, "/v1/agent/service/maintenance/api?enable=true", None).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !watch.is_finished(),
        "a change of another service woke the watch on web"
    );
    let registry_index = get(&s, "/v1/catalog/services").await.index();
    assert!(
        registry_index > index,
        "other changes did move the registry's index"
    );
    assert_eq!(get(&s, "/v1/health/service/web").await.index(), index);

    register(&s, go_body("web-2", 8081, Value::Null)).await;
    let (elapsed, new_index, body) = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("the watch wakes on its own service's change")
        .unwrap();
    assert!(
        elapsed < Duration::from_secs(20),
        "woke by the change, not the wait"
    );
    assert!(
        new_index > registry_index,
        "{new_index} after {registry_index}"
    );
    assert_eq!(ids(&body), ["web-1", "web-2"]);

    // catalog/services follows the registry: any change wakes it.
    let index = get(&s, "/v1/catalog/services").await.index();
    let url = s.url(&format!("/v1/catalog/services?index={index}&wait=20s"));
    let client = s.client.clone();
    let watch = tokio::spawn(async move {
        client
            .get(url)
            .header("X-Consul-Token", READ)
            .send()
            .await
            .unwrap()
            .headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    put(&s, "/v1/agent/check/pass/service:nobody", None).await; // refused: no change
    assert!(!watch.is_finished());
    put(&s, "/v1/agent/service/maintenance/api?enable=false", None).await;
    let woke = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .unwrap()
        .unwrap();
    assert!(woke > index);

    // `wait` ends a watch with the same index; an index above the registry's (a restart
    // below it) answers at once; an empty service's index (1) waits rather than spins.
    let index = get(&s, "/v1/health/service/web").await.index();
    let started = Instant::now();
    let r = get(
        &s,
        &format!("/v1/health/service/web?index={index}&wait=300ms"),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.index(), index);
    let started = Instant::now();
    let r = get(&s, "/v1/health/service/web?index=999999&wait=10s").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.index(), index);
    let r = get(&s, "/v1/health/service/none").await;
    assert_eq!(r.index(), 1);
    let started = Instant::now();
    let r = get(&s, "/v1/health/service/none?index=1&wait=300ms").await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((r.index(), r.text.as_str()), (1, "[]"));
}

/// A child process killed (by its PID) and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require(cmd: &str, args: &[&str], install: &str) {
    let ok = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "`{cmd}` is needed: {install}");
}

/// The active targets VictoriaMetrics lists: `service_id` → its relabelled labels.
async fn vm_targets(client: &reqwest::Client, vm: u16) -> Option<Vec<(String, Value)>> {
    let r = client
        .get(format!("http://127.0.0.1:{vm}/api/v1/targets"))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    let mut out: Vec<(String, Value)> = v["data"]["activeTargets"]
        .as_array()?
        .iter()
        .map(|t| {
            (
                t["labels"]["service_id"].as_str().unwrap_or("").to_string(),
                t["labels"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

/// Polls VictoriaMetrics' targets until `want` holds of them, for at most 20 s.
async fn vm_until(
    client: &reqwest::Client,
    vm: u16,
    what: &str,
    log: &Path,
    want: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(t) = vm_targets(client, vm).await {
            if want(&t) {
                return t;
            }
            last = Some(t);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "VictoriaMetrics never showed {what}; last targets: {last:#?}\nits log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// VictoriaMetrics' `consul_sd_configs` (the calls Prometheus makes) discovers every
/// instance, labels it with its health, tags and metadata, follows health and maintenance,
/// and drops instances and services as they go.
#[tokio::test]
async fn victoria_metrics_consul_sd_discovers_labels_and_drops_targets() {
    require(
        "victoria-metrics",
        &["-version"],
        "apt-get install -y victoria-metrics",
    );
    let s = server().await;
    register(&s, go_body("web-1", 9101, Value::Null)).await;
    register(
        &s,
        json!({"Name": "web", "ID": "web-2", "Address": "127.0.0.1", "Port": 9102,
               "Check": {"TTL": "1m0s"}}),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scrape.yml");
    // The read token as the basic_auth password, as a Prometheus config would carry it.
    let relabel: String = [
        ("__meta_consul_health", "health"),
        ("__meta_consul_tags", "tags"),
        ("__meta_consul_service_metadata_version", "version"),
        ("__meta_consul_service_id", "service_id"),
        ("__meta_consul_service", "service"),
        ("__meta_consul_dc", "dc"),
        ("__meta_consul_node", "node"),
    ]
    .iter()
    .map(|(from, to)| format!("      - source_labels: [{from}]\n        target_label: {to}\n"))
    .collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: consul\n    \
             consul_sd_configs:\n      - server: {}\n        username: prometheus\n        \
             password: {READ}\n    relabel_configs:\n{relabel}",
            s.http
        ),
    )
    .unwrap();
    let vm_port = common::etcd::free_port();
    let log = dir.path().join("vm.log");
    let _vm = Killed(
        Command::new("victoria-metrics")
            .arg(format!("-promscrape.config={}", config.display()))
            .arg("-promscrape.consulSDCheckInterval=1s")
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start victoria-metrics"),
    );
    let c = reqwest::Client::new();
    let ids_of = |t: &[(String, Value)]| t.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();

    let t = vm_until(&c, vm_port, "web-1 and web-2", &log, |t| {
        ids_of(t) == ["web-1", "web-2"]
    })
    .await;
    let web1 = &t[0].1;
    assert_eq!(web1["instance"], "10.0.0.7:9101");
    assert_eq!(web1["health"], "passing");
    assert_eq!(web1["tags"], ",v2,canary,");
    assert_eq!(web1["version"], "2.1.0");
    assert_eq!(
        (
            web1["service"].as_str(),
            web1["dc"].as_str(),
            web1["node"].as_str()
        ),
        (Some("web"), Some("dc1"), Some("sp-test"))
    );
    assert_eq!(
        t[1].1["health"], "critical",
        "a TTL check before its first report"
    );

    put(&s, "/v1/agent/check/pass/service:web-2", None).await;
    put(
        &s,
        "/v1/agent/service/maintenance/web-1?enable=true&reason=x",
        None,
    )
    .await;
    register(
        &s,
        json!({"Name": "api", "Address": "127.0.0.1", "Port": 9200, "Tags": ["blue"]}),
    )
    .await;
    let health = |t: &[(String, Value)], id: &str| {
        t.iter()
            .find(|(i, _)| i == id)
            .map(|(_, l)| l["health"].as_str().unwrap_or("").to_string())
    };
    vm_until(
        &c,
        vm_port,
        "maintenance, passing and the new service",
        &log,
        |t| {
            health(t, "web-1").as_deref() == Some("maintenance")
                && health(t, "web-2").as_deref() == Some("passing")
                && health(t, "api").as_deref() == Some("passing")
        },
    )
    .await;

    put(&s, "/v1/agent/service/deregister/web-1", None).await;
    put(&s, "/v1/agent/service/deregister/api", None).await;
    vm_until(&c, vm_port, "web-1 and api dropped", &log, |t| {
        ids_of(t) == ["web-2"]
    })
    .await;
}

/// Installs (once, pinned) the Consul clients into target/consul-clients.
fn clients(which: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .args(["300", "bash"])
        .arg(root.join("tests/clients/consul-clients.sh"))
        .arg(which)
        .output()
        .expect("run tests/clients/consul-clients.sh");
    assert!(
        out.status.success(),
        "installing the {which} Consul client failed (scripts/test installs it; see tests/clients/consul-clients.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    root.join("target/consul-clients")
}

/// Runs a client scenario under a 60 s bound (`timeout` kills it past that); it must exit 0
/// and end with "ok".
fn scenario(program: &Path, args: &[String], env: &[(&str, PathBuf)], what: &str) {
    let out = Command::new("timeout")
        .args(["-k", "5", "60"])
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{what}:\n{stdout}");
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn py_consul_registers_reports_ttl_maintains_and_blocks() {
    let dir = clients("python");
    let s = server().await;
    let args = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/consul_py.py").to_string(),
        "127.0.0.1".into(),
        s.http.port().to_string(),
        WRITE.into(),
    ];
    let python = dir.join("venv/bin/python");
    tokio::task::spawn_blocking(move || scenario(&python, &args, &[], "py-consul"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_npm_consul_client_registers_reads_and_watches() {
    require("node", &["--version"], "apt-get install -y nodejs npm");
    let dir = clients("node");
    let s = server().await;
    let args = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/consul_node.js").to_string(),
        "127.0.0.1".into(),
        s.http.port().to_string(),
        WRITE.into(),
    ];
    let env = [("NODE_PATH", dir.join("node/node_modules"))];
    tokio::task::spawn_blocking(move || scenario(Path::new("node"), &args, &env, "npm consul"))
        .await
        .unwrap();
}

/// Blocking reads are long-polls: bounded by `http.max_watchers` (503 past it, at once) and
/// taking no slot of `http.max_concurrent_requests`, so parked watches never hold back a write.
#[tokio::test]
async fn blocking_reads_count_as_watchers_not_requests() {
    let s = TestServer::start_with(|c| {
        c.http.max_concurrent_requests = 2;
        c.http.max_watchers = 3;
    })
    .await;
    let body = json!({"Name": "web", "Address": "10.0.0.1", "Port": 80}).to_string();
    let r = s
        .client
        .put(s.url("/v1/agent/service/register"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let index = s
        .client
        .get(s.url("/v1/health/service/web"))
        .send()
        .await
        .unwrap()
        .headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .to_string();
    let mut parked = Vec::new();
    for path in [
        "/v1/health/service/web",
        "/v1/catalog/service/web",
        "/v1/health/checks/web",
    ] {
        let (client, url) = (
            s.client.clone(),
            s.url(&format!("{path}?index={index}&wait=20s")),
        );
        parked.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status()
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        parked.iter().all(|p| !p.is_finished()),
        "the watches are parked"
    );
    let r = s
        .client
        .get(s.url(&format!("/v1/catalog/services?index={index}&wait=20s")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "a fourth watch is refused at once");
    assert!(r.headers().contains_key("retry-after"));
    // Writes and plain reads still get their slots.
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        s.client
            .put(s.url("/v1/agent/service/register"))
            .body(body.replace("\"web\"", "\"api\""))
            .send(),
    )
    .await
    .expect("a write is not held back by parked watches")
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.client
            .get(s.url("/v1/agent/services"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A change of web answers all three.
    let r = s
        .client
        .put(s.url("/v1/agent/service/register"))
        .body(body.replace("80", "81"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for p in parked {
        let status = tokio::time::timeout(Duration::from_secs(5), p)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(status, 200);
    }
}

/// A service's `X-Consul-Index` never goes backwards while it comes and goes, and a watch on
/// a service that is gone wakes when it comes back.
#[tokio::test]
async fn a_services_index_never_goes_backwards() {
    let s = server().await;
    let mut last = get(&s, "/v1/health/service/web").await.index();
    assert_eq!(last, 1, "never 0");
    let step = |last: &mut u64, index: u64, what: &str| {
        assert!(index > *last, "{what}: {index} after {last}");
        *last = index;
    };
    register(&s, go_body("web-1", 8080, Value::Null)).await;
    step(
        &mut last,
        get(&s, "/v1/health/service/web").await.index(),
        "registered",
    );
    register(&s, go_body("web-2", 8081, json!({"TTL": "30s"}))).await;
    step(
        &mut last,
        get(&s, "/v1/catalog/service/web").await.index(),
        "a second instance",
    );
    put(&s, "/v1/agent/check/pass/service:web-2", None).await;
    step(
        &mut last,
        get(&s, "/v1/health/service/web").await.index(),
        "health",
    );
    put(&s, "/v1/agent/service/deregister/web-1", None).await;
    put(&s, "/v1/agent/service/deregister/web-2", None).await;
    let gone = get(&s, "/v1/health/service/web").await;
    assert_eq!(gone.text, "[]");
    step(&mut last, gone.index(), "gone");
    let watch = {
        let (client, url) = (
            s.client.clone(),
            s.url(&format!("/v1/health/service/web?index={last}&wait=20s")),
        );
        tokio::spawn(async move {
            let r = client
                .get(url)
                .header("X-Consul-Token", READ)
                .send()
                .await
                .unwrap();
            r.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!watch.is_finished());
    register(&s, go_body("web-3", 8082, Value::Null)).await;
    let woke = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("woken")
        .unwrap();
    step(&mut last, woke, "back");
}

/// `wait` is capped by `http.max_wait`, and a shutdown answers parked watches at once.
#[tokio::test]
async fn wait_is_capped_and_shutdown_answers_watches() {
    let s = TestServer::start_with(|c| c.http.max_wait = Duration::from_millis(500)).await;
    let body = json!({"Name": "web", "Address": "10.0.0.1", "Port": 80}).to_string();
    let r = s
        .client
        .put(s.url("/v1/agent/service/register"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let index = s
        .client
        .get(s.url("/v1/health/service/web"))
        .send()
        .await
        .unwrap()
        .headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .to_string();
    let url = s.url(&format!("/v1/health/service/web?index={index}&wait=1m"));
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), s.client.get(&url).send())
        .await
        .expect("wait=1m is cut to http.max_wait")
        .unwrap();
    assert_eq!(r.headers()["x-consul-index"].to_str().unwrap(), index);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    let s = TestServer::start().await;
    let body = json!({"Name": "web", "Address": "10.0.0.1", "Port": 80}).to_string();
    s.client
        .put(s.url("/v1/agent/service/register"))
        .body(body)
        .send()
        .await
        .unwrap();
    let r = s
        .client
        .get(s.url("/v1/health/service/web"))
        .send()
        .await
        .unwrap();
    let index = r.headers()["x-consul-index"].to_str().unwrap().to_string();
    let client = s.client.clone();
    let url = s.url(&format!("/v1/health/service/web?index={index}&wait=5m"));
    let watch = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watch.is_finished());
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("shutdown does not wait out a parked watch");
    let status = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.unwrap(), 200, "answered, not cut");
}
