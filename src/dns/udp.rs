//! DNS over UDP: receive, answer from the current table, send. Several workers share one
//! socket so every core can answer; each owns its buffers, so an answer allocates nothing
//! here. A forwarded query runs in its own task (bounded by the forwarder's in-flight limit)
//! so an upstream's round trip never holds up the worker.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::DnsView;
use super::forward::Forwarder;
use super::handler::{Outcome, Transport, handle, servfail};

/// Largest datagram read; bigger ones are cut by the kernel and then fail to parse (FORMERR).
const MAX_DATAGRAM: usize = 65_535;

pub async fn run(
    socket: Arc<UdpSocket>,
    view: Arc<DnsView>,
    forwarder: Option<Arc<Forwarder>>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(4096);
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors of earlier sends surface here; they concern one peer only.
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive");
                    continue;
                }
            },
        };
        let recursion = forwarder.as_ref().is_some_and(|f| f.allows(peer.ip()));
        match handle(
            &view.table(),
            &buf[..n],
            Transport::Udp,
            recursion,
            &mut out,
        ) {
            Outcome::Answered(_) => send(&socket, &out, peer).await,
            Outcome::Dropped => {}
            Outcome::Forward => {
                let fwd = forwarder.clone().expect("forwarding implies a forwarder");
                match fwd.in_flight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let socket = socket.clone();
                        let query = buf[..n].to_vec();
                        tokio::spawn(async move {
                            let reply = match fwd.forward(&query, false).await {
                                Some(r) => r,
                                None => {
                                    let mut out = Vec::new();
                                    servfail(&query, &mut out);
                                    out
                                }
                            };
                            send(&socket, &reply, peer).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        servfail(&buf[..n], &mut out);
                        send(&socket, &out, peer).await;
                    }
                }
            }
        }
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer).await {
        tracing::debug!(%peer, error = %e, "udp send");
    }
}
