//! What one host process can hold: its file-descriptor limit, raised at
//! start, and how many VMs fit in it and in the machine's memory.
//!
//! Every VM costs a KVM VM and vCPU fd, eventfds for its queues and wake-ups,
//! its taps and its console: about 20 fds. The usual soft limit of 1,024
//! fds would stop an edge at about 50 requests with EMFILE, so the process
//! raises its soft limit to its hard limit (and, as root, both to the
//! kernel's `nr_open`) before it serves anything.

use std::io;

/// File descriptors one request VM holds at most, with a margin (measured:
/// 20 on an edge with one link).
pub const FDS_PER_VM: u64 = 32;
/// Descriptors kept for everything else (listeners, netlink, logs).
const FDS_RESERVED: u64 = 256;
/// Memory budgeted per VM by the default cap. A request VM maps 64 MiB of
/// guest memory but touches about 1 MiB of it; four leaves room for a
/// guest that touches more, and the VMs can take at most the whole
/// machine's memory at that rate.
const BUDGET_KIB_PER_VM: u64 = 4 * 1024;
/// The default cap never exceeds this, however large the machine.
const MAX_DEFAULT_VMS: u64 = 4096;

/// Raises this process's file-descriptor limit as far as it may go and
/// returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(lim.rlim_max);
    // As root, both limits may rise to nr_open; otherwise the soft one to
    // the hard one.
    for want in [libc::rlimit { rlim_cur: nr_open, rlim_max: nr_open }, libc::rlimit { rlim_cur: lim.rlim_max, ..lim }]
    {
        if want.rlim_cur <= lim.rlim_cur {
            return Ok(lim.rlim_cur);
        }
        // SAFETY: setrlimit reads one rlimit struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Ok(want.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// This machine's memory, KiB (`MemTotal`), if /proc says.
pub fn mem_total_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// How many VMs a process with `fd_limit` descriptors on a machine of
/// `mem_kib` runs by default: whichever runs out first, fds or memory at
/// [`BUDGET_KIB_PER_VM`], at least one.
pub fn default_max_vms(fd_limit: u64, mem_kib: u64) -> usize {
    let by_fds = fd_limit.saturating_sub(FDS_RESERVED) / FDS_PER_VM;
    let by_mem = mem_kib / BUDGET_KIB_PER_VM;
    by_fds.min(by_mem).clamp(1, MAX_DEFAULT_VMS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_is_set_by_what_runs_out_first() {
        // A million fds: memory decides (8 GiB: 2,048), up to the cap.
        assert_eq!(default_max_vms(1 << 20, 8 << 20), 2048);
        assert_eq!(default_max_vms(1 << 20, 24 << 20), 4096);
        // The usual 1,024 fds: about 24 VMs, not EMFILE at 50.
        assert_eq!(default_max_vms(1024, 24 << 20), 24);
        assert_eq!(default_max_vms(0, 0), 1);
    }

    #[test]
    fn the_limit_only_rises() {
        let mut before = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) }, 0);
        let now = raise_fd_limit().unwrap();
        assert!(now >= before.rlim_cur);
    }
}
