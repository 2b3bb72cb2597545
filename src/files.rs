//! The process's open-file limit against what the configuration may open at once.
//!
//! Every HTTP connection, DNS-over-TCP connection, health probe and forwarded TCP query holds
//! a file descriptor. The usual soft limit (1,024) exists for `select(2)`, which signpost
//! does not use, so at start-up the soft limit is raised towards the hard one as far as the
//! configured caps need (as Go's runtime does), and a limit still too low is logged: past it
//! an HTTP flood would take the descriptors DNS over TCP and the store's log need.

use crate::config::Config;

/// Descriptors beside the capped ones: listeners, UDP sockets, the store's files, the
/// runtime's own (epoll, eventfds), with room to spare.
const RESERVED: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to what `config` may use (at most the hard limit), and
/// warns when that is still short.
pub(crate) fn fit_open_file_limit(config: &Config) {
    let wanted = [
        config.http.max_connections,
        config.dns.max_tcp_connections,
        config.health.max_concurrent_checks,
        crate::dns::forward::MAX_IN_FLIGHT,
    ]
    .iter()
    .map(|&n| n as u64)
    .sum::<u64>()
        + RESERVED;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < wanted && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: wanted.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    if lim.rlim_cur < wanted {
        tracing::warn!(
            limit = lim.rlim_cur,
            wanted,
            "the open-file limit is below what http.max_connections, dns.max_tcp_connections \
             and health.max_concurrent_checks may hold at once; raise it (LimitNOFILE= under \
             systemd, ulimit -n) or lower those caps"
        );
    }
}
