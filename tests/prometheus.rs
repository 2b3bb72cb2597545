//! Prometheus as a client (CONTRACT §2, RFC 2782 SRV names): a real `prometheus` (Debian
//! package `prometheus`, 2.42) discovers its scrape targets through signpost with
//!
//! ```yaml
//! global:
//!   scrape_interval: 1s
//!   scrape_timeout: 1s
//! scrape_configs:
//!   - job_name: node
//!     dns_sd_configs:
//!       - names: ['_node._tcp.service.internal']
//!         type: SRV
//!         refresh_interval: 1s
//! ```
//!
//! Prometheus asks the nameservers of `/etc/resolv.conf` on port 53, so the scenario
//! (`tests/clients/prometheus.sh`) runs inside a fresh mount + network namespace
//! (`unshare -m -n`): signpost serves `127.0.0.1:53`, a resolv.conf with
//! `nameserver 127.0.0.1` is bind-mounted over `/etc/resolv.conf`, and two instances of
//! `node` (127.0.0.1:9101 and :9102, `python3 -m http.server` serving a static `metrics` file)
//! are registered over HTTP. Prometheus must list both as active targets, named after the SRV
//! targets (`node-1.node.instance.internal:9101`: Prometheus keeps the SRV target name and
//! port as the address), scrape both successfully (which resolves those instance names' A
//! records through the same resolv.conf), and drop `node-2` once it is deregistered. Needs
//! root (namespaces, port 53), `unshare`/`mount` (util-linux), `ip` (iproute2), `curl` and
//! `python3`, as CI has.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;

const N1: &str = "node-1.node.instance.internal:9101";
const N2: &str = "node-2.node.instance.internal:9102";

/// Fails with a clear message when a tool the scenario needs is missing or unusable.
fn require(cmd: &str, args: &[&str], why: &str) {
    let ok = Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "`{cmd} {}` failed: {why}", args.join(" "));
}

#[test]
fn dns_sd_srv_discovers_and_drops_targets() {
    require(
        "unshare",
        &["-m", "-n", "true"],
        "this test needs root and util-linux `unshare` to make a mount + network namespace",
    );
    require(
        "prometheus",
        &["--version"],
        "install the Debian package `prometheus`",
    );
    require(
        "python3",
        &["--version"],
        "the target listeners need python3",
    );

    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/prometheus.sh");
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["-k", "10", "120", "unshare", "-m", "-n", "bash", script])
        .arg(env!("CARGO_BIN_EXE_signpost"))
        .arg(dir.path())
        .output()
        .expect("run the scenario under unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("scenario took {:?}:\n{stdout}", started.elapsed());
    assert!(
        out.status.success(),
        "script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("RESULT done"), "{stdout}\n{stderr}");
    let result = |what: &str| -> String {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("RESULT {what} ")))
            .unwrap_or_else(|| panic!("no {what} result in:\n{stdout}\n{stderr}"));
        // Drop the trailing "after Ns" timing.
        match line.rsplit_once(" after ") {
            Some((v, _)) => v.to_string(),
            None => line.to_string(),
        }
    };

    // Both registered instances are active targets, and both were scraped.
    assert_eq!(result("discovered"), format!("{N1} up {N2} up"));

    // They came from the SRV answer for the configured name: target and port per instance.
    let labels: Value = serde_json::from_str(&result("labels")).expect("labels JSON");
    let labels = labels.as_array().expect("a list of label sets");
    assert_eq!(labels.len(), 2, "{labels:?}");
    for (l, (n, port)) in labels.iter().zip([(1, 9101), (2, 9102)]) {
        assert_eq!(l["__meta_dns_name"], "_node._tcp.service.internal", "{l}");
        assert_eq!(
            l["__meta_dns_srv_record_target"],
            format!("node-{n}.node.instance.internal."),
            "{l}"
        );
        assert_eq!(l["__meta_dns_srv_record_port"], port.to_string(), "{l}");
    }

    // After deregistering node-2, only node-1 is left.
    assert_eq!(result("remaining"), format!("{N1} up"));
}
