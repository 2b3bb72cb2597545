//! DNS over UDP: receive, answer from the current table, send. Several workers share one
//! socket so every core can answer; each owns its buffers, so a query allocates nothing here.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::DnsView;
use super::handler::{Outcome, Transport, handle};

/// Largest datagram read; bigger ones are cut by the kernel and then fail to parse (FORMERR).
const MAX_DATAGRAM: usize = 65_535;

pub async fn run(socket: Arc<UdpSocket>, view: Arc<DnsView>, shutdown: CancellationToken) {
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
        let outcome = handle(&view.table(), &buf[..n], Transport::Udp, &mut out);
        if let Outcome::Answered(_) = outcome
            && let Err(e) = socket.send_to(&out, peer).await
        {
            tracing::debug!(%peer, error = %e, "udp send");
        }
    }
}
