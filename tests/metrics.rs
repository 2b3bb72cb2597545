//! `GET /metrics` (CONTRACT §6): the Prometheus text format, accepted by `promtool check
//! metrics` (lint included), with the families and labels the contract names; counters that
//! move by exactly what was sent (A queries, NXDOMAIN, NODATA, a truncated UDP answer, TCP
//! queries, a forwarded query, registrations served by the registration path ahead of the
//! router); the read token; a real Prometheus (Debian package `prometheus`, 2.42) scraping
//! signpost with that token and seeing the target up; and the Grafana dashboard in `dist/`,
//! whose every PromQL expression Prometheus accepts and whose every metric name a live
//! `/metrics` serves.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use common::TestServer;
use signpost::config::{Secret, Upstream};

const READ: &str = "r-metrics-5e1d";
const WRITE: &str = "w-metrics-90aa";
/// The template the registration path's requests are counted under: the router's.
const REGISTER_ROUTE: &str = "/v1/services/{service}/instances/{id}";
/// Answers over 512 bytes without EDNS: 40 A records of 16 bytes.
const BIG: usize = 40;

const UPSTREAM_ZONE: &str = "$ORIGIN example.org.\n$TTL 300\n\
@    IN SOA ns.example.org. hostmaster.example.org. 7 3600 600 86400 120\n\
@    IN NS  ns.example.org.\n\
ns   IN A   192.0.2.53\n\
www  IN A   192.0.2.80\n";

/// A signpost serving example.org, for forwarding to.
async fn upstream() -> TestServer {
    TestServer::start_with(|c| {
        std::fs::write(c.dns.zones_dir.join("example.org.zone"), UPSTREAM_ZONE).unwrap();
    })
    .await
}

/// A signpost with the project's zone, forwarding to `up`, tokens as given.
async fn server(up: &TestServer, tokens: Option<(&str, &str)>) -> TestServer {
    let upstream = up.dns.to_string();
    TestServer::start_with(move |c| {
        std::fs::copy(
            common::project_zone(),
            c.dns.zones_dir.join("internal.zone"),
        )
        .unwrap();
        c.dns.forward.upstreams = vec![Upstream::parse(&upstream).unwrap()];
        c.dns.forward.timeout = Duration::from_millis(500);
        if let Some((write, read)) = tokens {
            c.http.token = Some(Secret(write.into()));
            c.http.read_token = Some(Secret(read.into()));
        }
    })
    .await
}

/// `GET /metrics` with `token`: status, content type and body.
async fn scrape(s: &TestServer, token: Option<&str>) -> (u16, String, String) {
    let mut r = s.client.get(s.url("/metrics"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, r.text().await.unwrap())
}

/// Every sample of a text-format body: series (name and labels as written) → value.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample {l:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value of {l:?}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// Registers over the registration path with the write token (when one is set).
async fn register(s: &TestServer, service: &str, id: &str, body: Value, token: Option<&str>) {
    let mut r = s
        .client
        .put(s.url(&format!("/v1/services/{service}/instances/{id}")))
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "register {service}/{id}");
}

/// A query with RD set, as a stub resolver sends it (forwarded when outside every zone).
fn rd_query(name: &str, rtype: RecordType) -> Vec<u8> {
    common::query_with(name, rtype, None, 0x4d4d, true)
}

/// What `traffic` sent, and so what the counters must have moved by.
const SENT_UDP_A: u64 = 5 + 2 + 1 + 1; // web, nosuch ×2, big, forwarded
const SENT_UDP_TXT: u64 = 3;
const SENT_TCP_A: u64 = 4;
const SENT_NOERROR: u64 = 5 + 1 + 4 + 1; // web, big (truncated), TCP, forwarded
const SENT_NXDOMAIN: u64 = 2;
const SENT_NODATA: u64 = 3;
const SENT_REGISTRATIONS: u64 = 2 + BIG as u64;

/// Registrations and DNS queries of every kind counted, each checked as it is answered.
async fn traffic(s: &TestServer, token: Option<&str>) {
    for (id, a) in [("web-1", "10.0.0.7"), ("web-2", "10.0.0.8")] {
        register(s, "web", id, json!({"address": a, "port": 80}), token).await;
    }
    for i in 0..BIG {
        let a = format!("10.1.0.{}", i + 1);
        register(
            s,
            "big",
            &format!("n-{i:02}"),
            json!({"address": a, "port": 80}),
            token,
        )
        .await;
    }
    for _ in 0..5 {
        let (m, _) = s.udp("web.service.internal.", RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 2);
    }
    for _ in 0..2 {
        let (m, _) = s.udp("nosuch.service.internal.", RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }
    for _ in 0..3 {
        let (m, _) = s.udp("web.service.internal.", RecordType::TXT, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty(), "NODATA");
    }
    let (m, size) = s.udp("big.service.internal.", RecordType::A, None).await;
    assert!(m.metadata.truncation && size <= 512, "TC at {size} bytes");
    assert!(!m.answers.is_empty());
    for _ in 0..4 {
        let m = s.tcp("web.service.internal.", RecordType::A).await;
        assert_eq!(m.answers.len(), 2);
    }
    let reply = s
        .udp_raw(&rd_query("www.example.org.", RecordType::A))
        .await
        .expect("a forwarded reply");
    let m = hickory_proto::op::Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "the upstream's answer");
}

/// The queries `traffic` sent, all of which the duration histogram counts.
const SENT_QUERIES: u64 = SENT_UDP_A + SENT_UDP_TXT + SENT_TCP_A;

/// Scrapes until the DNS duration histogram has counted `queries` more than in `before` (a
/// worker counts a response just after sending it), at most 5 s; returns the samples.
async fn settled(
    s: &TestServer,
    token: Option<&str>,
    before: &BTreeMap<String, f64>,
    queries: u64,
) -> BTreeMap<String, f64> {
    let key = "signpost_dns_request_duration_seconds_count";
    let want = before.get(key).copied().unwrap_or(0.0) + queries as f64;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = scrape(s, token).await;
        assert_eq!(status, 200);
        let now = samples(&body);
        if now.get(key).copied().unwrap_or(0.0) >= want || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_was_sent() {
    let up = upstream().await;
    let s = server(&up, None).await;
    let (status, ctype, body) = scrape(&s, None).await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    let before = samples(&body);

    traffic(&s, None).await;
    let after = settled(&s, None, &before, SENT_QUERIES).await;
    let moved = |series: &str| -> u64 {
        let d =
            after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0);
        d as u64
    };
    let requests = |proto: &str, t: &str| {
        moved(&format!(
            "signpost_dns_requests_total{{proto=\"{proto}\",family=\"1\",type=\"{t}\"}}"
        ))
    };
    let rcode = |r: &str| moved(&format!("signpost_dns_responses_total{{rcode=\"{r}\"}}"));
    assert_eq!(requests("udp", "A"), SENT_UDP_A);
    assert_eq!(requests("udp", "TXT"), SENT_UDP_TXT);
    assert_eq!(requests("tcp", "A"), SENT_TCP_A);
    assert_eq!(requests("tcp", "TXT"), 0);
    assert_eq!(rcode("NOERROR"), SENT_NOERROR);
    assert_eq!(rcode("NXDOMAIN"), SENT_NXDOMAIN);
    assert_eq!(rcode("NODATA"), SENT_NODATA);
    assert_eq!(rcode("REFUSED"), 0);
    assert_eq!(moved("signpost_dns_truncated_total"), 1);
    assert_eq!(
        moved("signpost_dns_forward_requests_total{rcode=\"NOERROR\"}"),
        1
    );
    assert_eq!(
        moved("signpost_dns_request_duration_seconds_count"),
        SENT_QUERIES
    );
    assert_eq!(
        moved("signpost_dns_request_duration_seconds_bucket{le=\"+Inf\"}"),
        SENT_QUERIES
    );
    // Every series of the families above is accounted for: nothing else moved.
    let total_moved = |prefix: &str| -> u64 {
        after
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(|k| moved(k))
            .sum()
    };
    assert_eq!(total_moved("signpost_dns_requests_total{"), SENT_QUERIES);
    assert_eq!(total_moved("signpost_dns_responses_total{"), SENT_QUERIES);
    assert_eq!(total_moved("signpost_dns_forward_requests_total{"), 1);

    // Registrations, all served by the registration path, under the router's template.
    assert_eq!(
        moved(&format!(
            "signpost_http_requests_total{{route=\"{REGISTER_ROUTE}\",code=\"200\"}}"
        )),
        SENT_REGISTRATIONS
    );
    assert_eq!(
        after["signpost_registry_instances{status=\"passing\"}"],
        SENT_REGISTRATIONS as f64
    );
    assert_eq!(after["signpost_registry_services"], 2.0);
    assert_eq!(after["signpost_registry_index"], SENT_REGISTRATIONS as f64);
    assert!(moved("signpost_store_commit_duration_seconds_count") >= 1);
    assert!(
        moved("signpost_store_commit_duration_seconds_count") <= SENT_REGISTRATIONS,
        "one commit per batch at most"
    );
}

/// Families the contract names (the etcd backend's aside), each with HELP and TYPE.
const FAMILIES: [(&str, &str); 18] = [
    ("signpost_dns_requests_total", "counter"),
    ("signpost_dns_responses_total", "counter"),
    ("signpost_dns_truncated_total", "counter"),
    ("signpost_dns_request_duration_seconds", "histogram"),
    ("signpost_dns_forward_requests_total", "counter"),
    ("signpost_registry_instances", "gauge"),
    ("signpost_registry_services", "gauge"),
    ("signpost_registry_index", "gauge"),
    ("signpost_store_commit_duration_seconds", "histogram"),
    ("signpost_health_probes_total", "counter"),
    ("signpost_http_requests_total", "counter"),
    ("signpost_build_info", "gauge"),
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
];

/// A server that has seen every kind of traffic, a passing HTTP check (on its own
/// `/healthz`) and a failing TCP check among it, so every family has samples.
async fn busy_server(up: &TestServer, tokens: Option<(&str, &str)>) -> TestServer {
    let s = server(up, tokens).await;
    let write = tokens.map(|(w, _)| w);
    let read = tokens.map(|(_, r)| r);
    traffic(&s, write).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let healthz = format!("http://{}/healthz", s.http);
    register(
        &s,
        "checked",
        "http",
        json!({"address": "127.0.0.1", "port": s.http.port(),
               "check": {"http": healthz, "interval": "200ms", "timeout": "1s"}}),
        write,
    )
    .await;
    register(
        &s,
        "checked",
        "tcp",
        json!({"address": "127.0.0.1", "port": closed_addr.port(),
               "check": {"tcp": closed_addr.to_string(), "interval": "200ms", "timeout": "1s"}}),
        write,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = scrape(&s, read).await;
        let m = samples(&body);
        let probed = |kind: &str, result: &str| {
            m.contains_key(&format!(
                "signpost_health_probes_total{{kind=\"{kind}\",result=\"{result}\"}}"
            ))
        };
        if probed("http", "passing") && probed("tcp", "critical") {
            break;
        }
        assert!(Instant::now() < deadline, "no probes counted:\n{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics_of_a_busy_server() {
    let up = upstream().await;
    let s = busy_server(&up, None).await;
    let (_, _, body) = scrape(&s, None).await;
    let lines = format!("\n{body}");
    for (name, kind) in FAMILIES {
        assert!(
            lines.contains(&format!("\n# HELP {name} ")),
            "no HELP for {name}:\n{body}"
        );
        assert!(
            lines.contains(&format!("\n# TYPE {name} {kind}\n")),
            "no TYPE {kind} for {name}:\n{body}"
        );
        let sampled = body
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with(name));
        assert!(sampled, "no sample of {name}:\n{body}");
    }
    assert!(body.contains("signpost_build_info{version=\"") && body.contains("\"} 1\n"));
    let first_bucket = body
        .lines()
        .find_map(|l| l.strip_prefix("signpost_dns_request_duration_seconds_bucket{le=\""))
        .and_then(|rest| rest.split('"').next())
        .map(|le| le.parse::<f64>().unwrap());
    assert_eq!(first_bucket, Some(5e-6), "buckets start at 5 µs");

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{body}");
    assert!(said.trim().is_empty(), "promtool found problems: {said}");
}

#[tokio::test]
async fn metrics_need_the_read_token_when_one_is_set() {
    let up = upstream().await;
    let s = server(&up, Some((WRITE, READ))).await;
    for token in [None, Some("wrong")] {
        let mut r = s.client.get(s.url("/metrics"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    for token in [READ, WRITE] {
        let (status, ctype, body) = scrape(&s, Some(token)).await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("# TYPE signpost_build_info gauge"));
    }
    let r = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "/healthz stays open");
    // The refusals were counted, like every response.
    let (_, _, body) = scrape(&s, Some(READ)).await;
    assert_eq!(
        samples(&body)["signpost_http_requests_total{route=\"unmatched\",code=\"401\"}"],
        2.0
    );
}

/// A child process killed (by its PID) and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// aggregations, keywords, label names (in `{}` and in `by (…)` and its kin), strings,
/// numbers or durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const OPERATORS: [&str; 5] = ["bool", "and", "or", "unless", "offset"];
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let skip_string = |mut i: usize| {
        let q = b[i];
        i += 1;
        while i < b.len() && b[i] != q {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        i + 1
    };
    // From an opening bracket, past its closing one (strings inside skipped).
    let skip_group = |mut i: usize, close: u8| {
        while i < b.len() && b[i] != close {
            i = if matches!(b[i], b'"' | b'\'' | b'`') {
                skip_string(i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let next_char = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        (i, b.get(i).copied())
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(i);
        } else if c == b'{' {
            i = skip_group(i, b'}');
        } else if c == b'[' {
            i = skip_group(i, b']');
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let (at, next) = next_char(i);
            if GROUPING.contains(&word) {
                if next == Some(b'(') {
                    i = skip_group(at, b')');
                }
            } else if AGGREGATIONS.contains(&word)
                || OPERATORS.contains(&word)
                || next == Some(b'(')
            {
                // A function, an aggregation (its grouping may come first) or an operator.
            } else {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn promql_metric_names_are_found() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{x="}", le!="1e-3"}[5m]))) / on(instance) group_left(route) b_total offset 5m + sum without(code)(c) > bool 1e3"#,
    );
    let want: BTreeSet<String> = ["a_bucket", "b_total", "c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
}

/// Every `expr` of a dashboard panel.
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("an expr").to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_signpost_and_runs_every_dashboard_query() {
    let ok = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "install the Debian package `prometheus`");

    let up = upstream().await;
    let s = busy_server(&up, Some((WRITE, READ))).await;

    // The dashboard: a Prometheus data source variable, every panel on it.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/grafana-signpost.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let exprs = dashboard_exprs(&dash);
    let mut names: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    // The query variables' `label_values(<metric>{...}, label)`.
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let q = v["definition"]
            .as_str()
            .expect("a query variable's definition");
        let inner = q
            .strip_prefix("label_values(")
            .unwrap_or_else(|| panic!("{q}"));
        let (selector, _label) = inner.rsplit_once(',').unwrap_or_else(|| panic!("{q}"));
        names.extend(metric_names(selector));
    }
    for needed in [
        "signpost_dns_requests_total",
        "signpost_dns_responses_total",
        "signpost_dns_request_duration_seconds_bucket",
        "signpost_registry_instances",
        "signpost_store_commit_duration_seconds_bucket",
        "signpost_health_probes_total",
    ] {
        assert!(names.contains(needed), "no panel uses {needed}: {names:?}");
    }
    // Each name is served by a live /metrics.
    let (_, _, body) = scrape(&s, Some(READ)).await;
    let served: BTreeSet<String> = samples(&body)
        .keys()
        .map(|k| k.split('{').next().unwrap().to_string())
        .collect();
    for n in &names {
        assert!(
            served.contains(n),
            "the dashboard uses {n}, which /metrics does not serve"
        );
    }

    // A real Prometheus scrapes signpost with the read token.
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: signpost\n    metrics_path: /metrics\n\
         \x20   authorization:\n      credentials: {READ}\n\
         \x20   static_configs:\n      - targets: ['{}']\n",
        s.http
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let logs = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let target = loop {
        let t: Option<Value> = async {
            let v: Value = client
                .get(format!("{api}/targets"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["data"]["activeTargets"]
                .as_array()?
                .iter()
                .find(|t| t["labels"]["job"] == "signpost" && t["health"] == "up")
                .cloned()
        }
        .await;
        if let Some(t) = t {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the signpost target never came up:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(target["labels"]["instance"], s.http.to_string());
    assert_eq!(target["lastError"], "");

    let query = |q: String| {
        let client = client.clone();
        let api = api.clone();
        async move {
            let v: Value = client
                .get(format!("{api}/query"))
                .query(&[("query", q.as_str())])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let upv = query("up{job=\"signpost\"}".into()).await;
    assert_eq!(upv["data"]["result"][0]["value"][1], "1", "{upv}");
    // Every dashboard query, with Grafana's variables filled in, is valid PromQL.
    for e in &exprs {
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".+")
            .replace("$job", ".+");
        let v = query(q.clone()).await;
        assert_eq!(v["status"], "success", "{q}: {v}");
    }
    let built = query("signpost_build_info{job=\"signpost\"}".into()).await;
    assert_eq!(
        built["data"]["result"][0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{built}"
    );
}
