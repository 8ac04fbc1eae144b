//! Raising the open-files limit: the usual soft limit (1024) is what a thousand idle
//! connections exhaust, after which the daemon cannot even open its own outbound sockets.

/// The open-files limit before and after [`try_raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit found at start (`None`: unlimited).
    pub before: Option<u64>,
    /// Soft limit now in force (`None`: unlimited).
    pub soft: Option<u64>,
    /// Hard limit, the most an unprivileged process may raise to (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Why the open-files limit could not be raised.
#[derive(Debug, thiserror::Error)]
pub enum NofileError {
    /// `setrlimit` refused the new soft limit.
    #[error("raising RLIMIT_NOFILE from {from:?} to {to}: {source}")]
    Set {
        /// Soft limit in force (`None`: unlimited).
        from: Option<u64>,
        /// The limit asked for.
        to: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where no hard limit is set, ask for this many: above it the kernel may refuse anyway
/// (Linux `nr_open`, macOS `OPEN_MAX`), and more connections than this are capped elsewhere.
const UNLIMITED_TARGET: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limits now in force.
#[cfg(unix)]
pub fn try_raise_nofile_limit() -> Result<NofileLimit, NofileError> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let target = now.maximum.unwrap_or(UNLIMITED_TARGET);
    if now.current.is_none_or(|soft| soft >= target) {
        return Ok(NofileLimit {
            before: now.current,
            soft: now.current,
            hard: now.maximum,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: now.maximum,
        },
    )
    .map_err(|e| NofileError::Set {
        from: now.current,
        to: target,
        source: e.into(),
    })?;
    Ok(NofileLimit {
        before: now.current,
        soft: Some(target),
        hard: now.maximum,
    })
}

/// Without rlimits there is nothing to raise.
#[cfg(not(unix))]
pub fn try_raise_nofile_limit() -> Result<NofileLimit, NofileError> {
    Ok(NofileLimit {
        before: None,
        soft: None,
        hard: None,
    })
}

/// [`try_raise_nofile_limit`], logging the outcome; a failure is a warning, not fatal, since
/// the connection caps still bound what the listeners take.
pub fn raise_nofile_limit() -> NofileLimit {
    match try_raise_nofile_limit() {
        Ok(limit) => {
            if limit.before != limit.soft {
                tracing::info!(
                    before = ?limit.before,
                    soft = ?limit.soft,
                    "raised the open-files limit"
                );
            }
            limit
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot raise the open-files limit; connection caps above it will fail with \
                 'too many open files' instead"
            );
            current()
        }
    }
}

#[cfg(unix)]
fn current() -> NofileLimit {
    let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    NofileLimit {
        before: now.current,
        soft: now.current,
        hard: now.maximum,
    }
}

#[cfg(not(unix))]
fn current() -> NofileLimit {
    NofileLimit {
        before: None,
        soft: None,
        hard: None,
    }
}
