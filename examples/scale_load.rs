//! Load generator for `bench/scale.sh`: registrations over HTTP/1.1 and registration-to-DNS
//! visibility. It speaks raw HTTP/1.1 and DNS over tokio sockets and does not use signpost's
//! library, so it builds against any version of it.
//!
//!     cargo build --release --example scale_load
//!     scale_load register --http 127.0.0.1:8500 --from 0 --to 100000 --per-service 4 \
//!         --conns 64 --deadline 300 --slice 10000
//!     scale_load visibility --http 127.0.0.1:8500 --dns 127.0.0.1:8600 --samples 1000
//!     scale_load ready --http 127.0.0.1:8500 --dns 127.0.0.1:8600 --name svc.service.internal
//!         (without --name: /healthz only; dns_ns is then 0)
//!
//! Each mode prints one JSON object on stdout.
//! - `register`: instances `from..to`; instance `i` is `i{i % per}` of service
//!   `scale-{i / per:05}`, address 10.x.y.z from `i`, port 8000 + `i % per`. `conns` keep-alive
//!   connections each keep one PUT in flight; stops at `deadline` seconds. Reports the rate
//!   overall and per `slice` registrations, and PUT latency percentiles.
//! - `visibility`: `samples` times, one after the other: write a PUT for a new service
//!   `vis-N`, then ask `vis-N.service.<domain>` A over UDP in a loop (one query outstanding)
//!   until an answer has records; the visibility latency is first-such-answer time minus the
//!   time the PUT was written. The PUT's own latency (to its response) is reported too.
//! - `ready`: polls `/healthz` and the DNS name (A, with records) every millisecond; prints the
//!   Unix time in nanoseconds at which each first succeeded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

#[path = "support/load.rs"]
mod load;
use load::*;

async fn register(args: &[String]) {
    let http: SocketAddr = arg(args, "--http", None);
    let from: u64 = arg(args, "--from", Some(0));
    let to: u64 = arg(args, "--to", Some(100_000));
    let per: u64 = arg(args, "--per-service", Some(4));
    let conns: usize = arg(args, "--conns", Some(64));
    let deadline_s: f64 = arg(args, "--deadline", Some(300.0));
    let slice: u64 = arg(args, "--slice", Some(10_000));
    let domain_prefix: String = arg(args, "--prefix", Some("scale".to_string()));

    let next = Arc::new(AtomicU64::new(from));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let marks = Arc::new(Mutex::new(Vec::<(u64, f64)>::new()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(deadline_s);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, done, errors, marks, prefix) = (
            next.clone(),
            done.clone(),
            errors.clone(),
            marks.clone(),
            domain_prefix.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn = match Conn::connect(http).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("connect {http}: {e}");
                    errors.fetch_add(1, Ordering::Relaxed);
                    return lat;
                }
            };
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    break;
                }
                let path = format!(
                    "/v1/services/{prefix}-{:05}/instances/i{}",
                    i / per,
                    i % per
                );
                match put_instance(&mut conn, http, &path, (i, per), &errors).await {
                    Some(Some(us)) => {
                        lat.push(us);
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if d % slice == 0 {
                            marks
                                .lock()
                                .unwrap()
                                .push((d, start.elapsed().as_secs_f64()));
                        }
                    }
                    Some(None) => {}
                    None => break,
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let n = done.load(Ordering::Relaxed);
    let mut marks = marks.lock().unwrap().clone();
    marks.sort_by_key(|m| m.0);
    let mut prev = (0u64, 0f64);
    let slices: Vec<String> = marks
        .iter()
        .map(|&(d, t)| {
            let r = (d - prev.0) as f64 / (t - prev.1).max(1e-9);
            prev = (d, t);
            format!(
                r#"{{"upto":{},"at_s":{:.3},"per_second":{:.0}}}"#,
                from + d,
                t,
                r
            )
        })
        .collect();
    println!(
        r#"{{"mode":"register","requested":{},"registered":{},"errors":{},"seconds":{:.3},"per_second":{:.0},"conns":{},"put_p50_us":{},"put_p99_us":{},"put_max_us":{},"slices":[{}],"deadline_hit":{}}}"#,
        to - from,
        n,
        errors.load(Ordering::Relaxed),
        secs,
        n as f64 / secs,
        conns,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(0),
        slices.join(","),
        n < to - from && Instant::now() >= deadline
    );
}

async fn visibility(args: &[String]) {
    let http: SocketAddr = arg(args, "--http", None);
    let dns: SocketAddr = arg(args, "--dns", None);
    let samples: u64 = arg(args, "--samples", Some(1000));
    let domain: String = arg(args, "--domain", Some("internal".to_string()));
    let mut conn = Conn::connect(http).await.expect("connect to the HTTP API");
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
    sock.connect(dns).await.expect("connect UDP");
    let (mut vis, mut put, mut before_2xx, mut failed) = (Vec::new(), Vec::new(), 0u64, 0u64);
    let mut id: u16 = 1;
    for i in 0..samples {
        let name = format!("vis-{i:05}.service.{domain}");
        let path = format!("/v1/services/vis-{i:05}/instances/i0");
        let body = format!(r#"{{"address":"{}","port":9000}}"#, address(200_000 + i));
        let (status, put_t, dns_t) =
            visibility_sample(&mut conn, &sock, &mut id, (&path, &body, &name)).await;
        match (status, dns_t) {
            (Ok(200), Some(d)) => {
                vis.push(d.as_micros() as u64);
                put.push(put_t.as_micros() as u64);
                if d < put_t {
                    before_2xx += 1;
                }
            }
            (s, _) => {
                failed += 1;
                if failed < 5 {
                    eprintln!("sample {i}: PUT {s:?}, visible {}", dns_t.is_some());
                }
            }
        }
    }
    vis.sort_unstable();
    put.sort_unstable();
    println!(
        r#"{{"mode":"visibility","samples":{},"ok":{},"failed":{},"visible_p50_us":{},"visible_p99_us":{},"visible_max_us":{},"put_p50_us":{},"put_p99_us":{},"visible_before_2xx":{}}}"#,
        samples,
        vis.len(),
        failed,
        pct(&vis, 50.0),
        pct(&vis, 99.0),
        vis.last().copied().unwrap_or(0),
        pct(&put, 50.0),
        pct(&put, 99.0),
        before_2xx
    );
}

async fn ready(args: &[String]) {
    let http: SocketAddr = arg(args, "--http", None);
    let dns: SocketAddr = arg(args, "--dns", None);
    let name: String = arg(args, "--name", Some(String::new())); // empty: HTTP only
    let timeout: f64 = arg(args, "--timeout", Some(120.0));
    let now_ns = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };
    let end = Instant::now() + Duration::from_secs_f64(timeout);
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
    sock.connect(dns).await.expect("connect UDP");
    let (mut http_at, mut dns_at) = (None, if name.is_empty() { Some(0) } else { None });
    let mut id: u16 = 1;
    while (http_at.is_none() || dns_at.is_none()) && Instant::now() < end {
        if http_at.is_none()
            && let Ok(mut c) = Conn::connect(http).await
            && c.send("GET", "/healthz", "").await.is_ok()
            && matches!(c.response().await, Ok(200))
        {
            http_at = Some(now_ns());
        }
        if dns_at.is_none() {
            id = id.wrapping_add(1);
            if dns_has_records(&sock, id, &name, Duration::from_millis(1)).await {
                dns_at = Some(now_ns());
            }
        }
        if http_at.is_none() || dns_at.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let show = |v: Option<u128>| v.map_or("null".to_string(), |x| x.to_string());
    println!(
        r#"{{"mode":"ready","http_ns":{},"dns_ns":{}}}"#,
        show(http_at),
        show(dns_at)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("register") => register(&args).await,
        Some("visibility") => visibility(&args).await,
        Some("ready") => ready(&args).await,
        _ => {
            eprintln!(
                "usage: scale_load register|visibility|ready [options] (see the source header)"
            );
            std::process::exit(2);
        }
    }
}
