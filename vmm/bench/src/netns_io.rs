//! Traffic for benchmarks, sent and received from inside test namespaces.
//!
//! Each helper runs on a thread that has joined the namespace (`setns`
//! affects only the calling thread), so one process can play sender on A
//! and receiver on C with one clock.

use std::io;

pub use netdev::packet_socket::RawSocket;

/// Runs fallible `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    netdev::netns::in_netns(ns, f)?
}

/// Pins the calling thread to `cpu` (best effort).
pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in bounds for
    // small cpu numbers; sched_setaffinity reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Packets received so far on `iface` in namespace `ns` (the interface's
/// own counter; read through `ip`, because sysfs shows the namespace it was
/// mounted in, not the calling thread's).
pub fn rx_packets(ns: &str, iface: &str) -> u64 {
    let out = std::process::Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", iface]).output();
    out.ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v[0]["stats64"]["rx"]["packets"].as_u64())
        .unwrap_or(0)
}
