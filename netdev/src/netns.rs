//! Running code inside a network namespace.
//!
//! `setns` affects only the calling thread, so the work runs on a thread
//! of its own that joins the namespace first; the rest of the process
//! (and its clock) stays where it was. Benchmarks and tests use it to play
//! hosts of a test topology from one process.

use std::io;
use std::os::fd::AsRawFd;

/// Runs `f` on a thread that joined network namespace `ns` (a name under
/// /var/run/netns) and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let nsfd = std::fs::File::open(&path)?;
        // SAFETY: setns on this thread only, with a namespace fd we own.
        if unsafe { libc::setns(nsfd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_an_error() {
        assert!(in_netns("pathvm-no-such-namespace", || ()).is_err());
    }
}
