//! DNS over UDP: one thread per socket (one socket per core, SO_REUSEPORT), each a plain
//! blocking loop — receive, answer from the current table, send — like an authoritative
//! server's worker: no async readiness bookkeeping per datagram, and each thread owns its
//! buffers, so an answer allocates nothing here. A forwarded query runs as a task on the
//! runtime (bounded by the forwarder's in-flight limit) so an upstream's round trip never
//! holds up the worker. With `dns.rate_limit` on, each answer passes the response-rate
//! limiter (`rrl`) before it is sent; off, that is one branch. Each worker counts its
//! queries in its own block of `stats` (a forwarded query's answer, sent by a task, in the
//! shared one).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::DnsView;
use super::forward::Forwarder;
use super::handler::{Outcome, Transport, handle, servfail};
use super::rrl::Slips;
use super::stats::{self, Answer, Proto, Stats};

/// Largest datagram read; bigger ones are cut by the kernel and then fail to parse (FORMERR).
const MAX_DATAGRAM: usize = 65_535;
/// How often an idle worker looks at the shutdown token.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

pub(crate) fn run(
    socket: UdpSocket,
    view: Arc<DnsView>,
    forwarder: Option<Arc<Forwarder>>,
    stats: Arc<Stats>,
    worker: usize,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
) {
    // `serve` checked that every socket has a block.
    let Some(counts) = stats.worker(worker) else {
        tracing::error!(
            worker,
            "udp worker without a stats block; worker not started"
        );
        return;
    };
    if let Err(e) = socket.set_read_timeout(Some(SHUTDOWN_POLL)) {
        tracing::error!(error = %e, "udp socket: cannot set a read timeout; worker not started");
        return;
    }
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(4096);
    let rrl = view.rrl();
    let mut slips = Slips::default();
    while !shutdown.is_cancelled() {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // ICMP errors of earlier sends surface here; they concern one peer only.
            Err(e) => {
                tracing::debug!(error = %e, "udp receive");
                continue;
            }
        };
        let started = Instant::now();
        let family = stats::family(peer.ip());
        let recursion = forwarder.as_ref().is_some_and(|f| f.allows(peer.ip()));
        match handle(
            &view.table(),
            &buf[..n],
            Transport::Udp,
            recursion,
            peer.ip(),
            &mut out,
        ) {
            Outcome::Signed { rcode, qtype } => {
                counts.request(Proto::Udp, family, qtype);
                let answer = Answer::of(rcode, &out);
                // Signed queries come from holders of the transfer key (secondaries checking
                // the SOA): their answers are not rate-limited.
                super::transfer::sign_answer(&view.transfer, &buf[..n], &mut out);
                send(&socket, &out, peer);
                counts.response(answer, started);
            }
            Outcome::Answered { rcode, qtype } => {
                counts.request(Proto::Udp, family, qtype);
                // Read before the rate limiter may rewrite it to its slipped form.
                let answer = Answer::of(rcode, &out);
                let admitted = match rrl {
                    Some(rrl) => rrl.admit(peer.ip(), rcode, &mut out, &mut slips),
                    None => true,
                };
                if admitted {
                    send(&socket, &out, peer);
                }
                counts.response(answer, started);
            }
            Outcome::Dropped => {}
            Outcome::Forward { qtype } => {
                counts.request(Proto::Udp, family, qtype);
                let fwd = forwarder.clone().expect("forwarding implies a forwarder");
                match fwd.in_flight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let socket = socket.clone();
                        let query = buf[..n].to_vec();
                        let stats = stats.clone();
                        runtime.spawn(async move {
                            let reply = match fwd.forward(&query, false).await {
                                Some(r) => r,
                                None => {
                                    let mut out = Vec::new();
                                    servfail(&query, &mut out);
                                    out
                                }
                            };
                            // A UDP send does not wait for the peer; blocking here is brief.
                            send(&socket, &reply, peer);
                            drop(permit);
                            let answer = Answer::relayed(&reply);
                            let shared = stats.shared();
                            shared.forwarded(answer);
                            shared.response(answer, started);
                        });
                    }
                    Err(_) => {
                        servfail(&buf[..n], &mut out);
                        send(&socket, &out, peer);
                        let answer = Answer::relayed(&out);
                        counts.forwarded(answer);
                        counts.response(answer, started);
                    }
                }
            }
        }
    }
}

fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer) {
        tracing::debug!(%peer, error = %e, "udp send");
    }
}
