//! Real etcd clusters for tests: one or three `etcd` processes (Debian's `etcd-server`) on
//! loopback ports, each with its data dir in a temp dir, started by the test and killed by
//! PID when dropped. A member can be stopped (`kill`) and started again on the same data dir
//! and ports, as an operator would.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One test at a time holds it: each test starts its own etcd cluster and replicas, and many
/// at once on a two-core machine starve each other's elections and leases.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free loopback port below the kernel's ephemeral range (so an outgoing connection cannot
/// take it between this check and etcd binding it), picked at random and checked bindable.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos());
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000
            + ((seed
                .wrapping_mul(2654435761)
                .wrapping_add(n.wrapping_mul(7919)))
                % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct Cluster {
    members: Vec<Member>,
    initial: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("e{i}"),
                client: free_port(),
                peer: free_port(),
                dir: dir.path().join(format!("e{i}")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("t{}", free_port());
        let mut c = Cluster {
            members,
            initial,
            token,
            _dir: dir,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    fn start_member(&mut self, i: usize) {
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let log = std::fs::File::create(self._dir.path().join(format!("{}.log", m.name))).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Fast elections on loopback, so a killed leader is replaced within a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts (Debian: apt-get install -y etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// One member's client address.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        format!("127.0.0.1:{}", self.members[i].client)
            .parse()
            .unwrap()
    }

    /// Kills member `i` (SIGKILL, by PID) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir and ports.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.start_member(i);
    }

    /// `etcdctl` against the running members.
    pub fn ctl(&self, args: &[&str]) -> String {
        let endpoints = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&endpoints)
            .args(["--command-timeout", "5s"])
            .args(args)
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The index of the current leader among the members.
    pub fn leader(&self) -> usize {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for e in v.as_array().unwrap() {
            let member = e["Status"]["header"]["member_id"].as_u64().unwrap();
            let leader = e["Status"]["leader"].as_u64().unwrap();
            if member == leader {
                let ep = e["Endpoint"].as_str().unwrap();
                return self
                    .members
                    .iter()
                    .position(|m| ep.ends_with(&format!(":{}", m.client)))
                    .unwrap();
            }
        }
        panic!("no leader in {out}");
    }

    /// Waits until every running member answers `endpoint health`.
    pub fn wait_healthy(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let ok = self.members.iter().filter(|m| m.child.is_some()).all(|m| {
                Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", &format!("http://127.0.0.1:{}", m.client)])
                    .args(["--command-timeout", "1s", "endpoint", "health"])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            });
            if ok {
                return;
            }
            if start.elapsed() >= limit {
                let logs: String = self
                    .members
                    .iter()
                    .map(|m| {
                        let log = std::fs::read_to_string(
                            self._dir.path().join(format!("{}.log", m.name)),
                        )
                        .unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(5).collect();
                        format!(
                            "{} (client {}, peer {}):\n{}\n",
                            m.name,
                            m.client,
                            m.peer,
                            tail.join("\n")
                        )
                    })
                    .collect();
                panic!("etcd not healthy within {limit:?}:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
