//! glibc as a client: `getent` (getaddrinfo/gethostbyname through /etc/resolv.conf and
//! nsswitch `hosts: files dns`) inside a fresh mount + network namespace where signpost
//! serves 127.0.0.1:53, with a search domain and forwarding to a second local DNS server.
//! The scenario is `tests/clients/glibc.sh`; this test runs it under `unshare -m -n` and checks
//! what glibc resolved. Needs root (namespaces, port 53), as CI has.

use std::process::Command;

#[test]
fn getent_resolves_through_resolv_conf() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/glibc.sh");
    let out = Command::new("timeout")
        .args(["60", "unshare", "-m", "-n", "bash", script])
        .arg(env!("CARGO_BIN_EXE_signpost"))
        .arg(dir.path())
        .output()
        .expect("unshare runs (util-linux; needs root)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed: {stdout}\n{stderr}");
    let result = |what: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("RESULT {what} ")))
            .unwrap_or_else(|| panic!("no {what} result in: {stdout}\n{stderr}"))
            .to_string()
    };
    assert!(stdout.contains("RESULT done"), "{stdout}");
    // gethostbyname: one of the two addresses, under the name asked for.
    let hosts = result("hosts");
    assert!(
        (hosts.contains("10.0.0.7") || hosts.contains("fd00::7"))
            && hosts.contains("web.service.internal"),
        "{hosts}"
    );
    // getaddrinfo: both families.
    let ahosts = result("ahosts");
    assert!(
        ahosts.contains("10.0.0.7") && ahosts.contains("fd00::7"),
        "{ahosts}"
    );
    let v4 = result("ahostsv4");
    assert!(v4.contains("10.0.0.7") && !v4.contains("fd00::7"), "{v4}");
    // The search domain completes a short name.
    let short = result("short");
    assert!(short.contains("web.service.internal"), "{short}");
    // A name outside signpost's zones is forwarded to the upstream.
    let fwd = result("forwarded");
    assert!(
        fwd.contains("192.0.2.80") && fwd.contains("www.example.org"),
        "{fwd}"
    );
    // An unknown service resolves to nothing.
    let missing = result("missing");
    assert!(
        !missing.contains("10.") && !missing.contains("fd00"),
        "{missing}"
    );
}
