//! Writing command output to stdout without panicking when the reader has gone away.
//!
//! `println!` panics on a closed pipe (`polylith key list | head -1`). [`line`] and the
//! [`outln!`](crate::outln) macro return [`StdoutClosed`] instead, which `main` turns into a
//! quiet, successful exit; any other write error is an ordinary error.

use std::io::Write;

/// Standard output was closed by its reader (EPIPE): stop printing and exit successfully.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Writes `args` and a newline to stdout.
pub fn line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    write(format_args!("{args}\n"))
}

/// Writes `args` to stdout as they are (no newline added) and flushes.
pub fn write(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                anyhow::Error::new(StdoutClosed)
            } else {
                anyhow::Error::new(e).context("writing to standard output")
            }
        })
}

/// `println!` that returns `anyhow::Result<()>` instead of panicking on a closed stdout.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cmd::out::line(format_args!($($arg)*))
    };
}
