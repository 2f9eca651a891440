//! The default connection ceiling, derived from the process's file-descriptor limit, and what
//! an accept error says about descriptors. The counter itself is `crate::ceiling`.

/// Descriptors kept back from client connections whatever the worker count: the admin port's
/// connections (`ADMIN_MAX_CONNECTIONS`), the listeners, stdio, the Redis pool, the config watch
/// and some slack for what libraries open.
const RESERVED_FDS: u64 = 128;
/// Per worker runtime: its epoll instance, its wake-up eventfd, its listener `dup`, and slack.
const RESERVED_FDS_PER_WORKER: u64 = 4;
/// Assumed when the limit cannot be read.
const FALLBACK_FD_LIMIT: u64 = 1024;
/// Admin connections are few (operators, scrapers); past this they are refused.
pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The default `server.max_connections`: half of what is left after the reserve, since the
/// upstream connections requests open get as many places again (`proxy::upstream_ceiling`).
pub(crate) fn default_max_connections(workers: usize) -> usize {
    derive(fd_soft_limit().unwrap_or(FALLBACK_FD_LIMIT), workers)
}

fn derive(soft_limit: u64, workers: usize) -> usize {
    let reserve = RESERVED_FDS
        + RESERVED_FDS_PER_WORKER.saturating_mul(u64::try_from(workers).unwrap_or(u64::MAX));
    let cap = crate::config::file::MAX_MAX_CONNECTIONS;
    let max = (soft_limit.saturating_sub(reserve) / 2).clamp(1, cap);
    usize::try_from(max).unwrap_or(usize::MAX)
}

/// The soft `RLIMIT_NOFILE`, the one `accept` fails against with EMFILE.
pub(crate) fn fd_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // The crate's one `unsafe`: libc has no safe getrlimit, and /proc/self/limits is missing
    // where procfs is not mounted.
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return None;
    }
    Some(if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur
    })
}

/// Whether an accept error means the process or system is out of descriptors or memory, where
/// retrying at once would spin.
pub(crate) fn is_resource_exhaustion(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_from_the_fd_limit_with_headroom() {
        assert_eq!(derive(160, 2), 12);
        assert_eq!(derive(1024, 8), 432);
        assert_eq!(derive(1_048_576, 64), 524_096);
        assert_eq!(derive(100, 2), 1);
        assert_eq!(derive(u64::MAX, 2), 1 << 24);
    }

    #[test]
    fn reads_the_limit() {
        assert!(fd_soft_limit().is_some_and(|n| n > 0));
    }
}
