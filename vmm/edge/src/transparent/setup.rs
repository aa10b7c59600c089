//! The app's sandbox: its network namespace, the veth link to this host,
//! the nftables table that steers it, and the app's start inside.

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use thiserror::Error;

/// Why the sandbox could not be made or the app not started.
#[derive(Debug, Error)]
pub enum SetupError {
    /// Transparent mode needs root.
    #[error(
        "transparent mode needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, for its network namespace and \
         nftables table); run it as root, or use --preload (no root, dynamically linked apps only)"
    )]
    NotRoot,
    /// A set-up command failed.
    #[error("`{cmd}` failed: {msg}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it said.
        msg: String,
    },
    /// The relay's sockets.
    #[error("cannot start the relay: {0}")]
    Relay(#[source] io::Error),
    /// Files of the run.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The app.
    #[error("cannot run {app}: {source}")]
    Spawn {
        /// The program.
        app: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// One run's namespace, link, addresses and table; removed on drop.
pub struct Sandbox {
    netns: String,
    host_if: String,
    table: String,
    gw4: Ipv4Addr,
    gw6: Ipv6Addr,
    app4: Ipv4Addr,
    app6: Ipv6Addr,
    resolv: PathBuf,
}

/// The link's /30 and /64 for run `pid`: 169.254.X.Y (X 1-254, never the
/// reserved first and last /24) and fd70:7061:7468:N::/64, so runs at
/// once get different ones.
fn addresses(pid: u32) -> (Ipv4Addr, Ipv4Addr, Ipv6Addr, Ipv6Addr) {
    let block = pid % (254 * 64);
    let (x, y) = (1 + block / 64, (block % 64) * 4);
    let v4 = |h: u32| Ipv4Addr::new(169, 254, x as u8, (y + h) as u8);
    let v6 = |h: u16| Ipv6Addr::new(0xfd70, 0x7061, 0x7468, block as u16, 0, 0, 0, h);
    (v4(1), v4(2), v6(1), v6(2))
}

fn run(args: &[&str]) -> Result<(), SetupError> {
    run_input(args, None).map(|_| ())
}

/// Runs a set-up command, with `input` on its stdin; its stdout.
fn run_input(args: &[&str], input: Option<&str>) -> Result<String, SetupError> {
    let fail = |msg: String| SetupError::Command { cmd: args.join(" "), msg };
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("{e} (the Makefile's `make deps` installs iproute2 and nftables)")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The signal the run was asked to end with (forwarded to the app).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::Relaxed);
}

impl Sandbox {
    /// Makes the namespace and link for run `pid`, with the app's
    /// resolv.conf in `state_dir`. Nothing is steered yet.
    pub fn create(pid: u32, state_dir: &Path) -> Result<Self, SetupError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(SetupError::NotRoot);
        }
        let (gw4, app4, gw6, app6) = addresses(pid);
        let sandbox = Self {
            netns: format!("pvr{pid}"),
            host_if: format!("pvr{pid}h"),
            table: format!("pathvm_run_{pid}"),
            gw4,
            gw6,
            app4,
            app6,
            resolv: state_dir.join(format!("pathvm-run-{pid}.resolv.conf")),
        };
        // A run of an earlier process with this pid that was killed.
        sandbox.remove();
        sandbox.build(app4, app6)?;
        Ok(sandbox)
    }

    fn build(&self, app4: Ipv4Addr, app6: Ipv6Addr) -> Result<(), SetupError> {
        let (ns, host, app) = (&self.netns, &self.host_if, format!("pvr{}a", &self.netns[3..]));
        run(&["ip", "netns", "add", ns])?;
        run(&["ip", "link", "add", host, "type", "veth", "peer", "name", &app, "netns", ns])?;
        // This host may run without IPv6 (test hosts do); this link has it.
        run(&["sysctl", "-qw", &format!("net.ipv6.conf.{host}.disable_ipv6=0")])?;
        run(&["ip", "addr", "add", &format!("{}/30", self.gw4), "dev", host])?;
        run(&["ip", "-6", "addr", "add", &format!("{}/64", self.gw6), "dev", host, "nodad"])?;
        run(&["ip", "link", "set", host, "up"])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", ns, "addr", "add", &format!("{app4}/30"), "dev", &app])?;
        run(&["ip", "-n", ns, "-6", "addr", "add", &format!("{app6}/64"), "dev", &app, "nodad"])?;
        run(&["ip", "-n", ns, "link", "set", &app, "up"])?;
        run(&["ip", "-n", ns, "route", "add", "default", "via", &self.gw4.to_string()])?;
        run(&["ip", "-n", ns, "-6", "route", "add", "default", "via", &self.gw6.to_string()])?;
        let text = format!("# pathvm run: every query is answered by pathvm\nnameserver {}\n", self.gw4);
        std::fs::write(&self.resolv, text).map_err(|source| SetupError::Write { path: self.resolv.clone(), source })
    }

    /// The app's namespace.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// This host's IPv4 address on the link (where the relay listens).
    pub fn gateway_v4(&self) -> Ipv4Addr {
        self.gw4
    }

    /// This host's IPv6 address on the link.
    pub fn gateway_v6(&self) -> Ipv6Addr {
        self.gw6
    }

    /// The app's own end of the link (IPv4, IPv6): the only peer the
    /// relay and the resolver serve (anyone else reaching this host's end
    /// would make them an open proxy into the edge).
    pub fn app_addrs(&self) -> (Ipv4Addr, Ipv6Addr) {
        (self.app4, self.app6)
    }

    /// Steers the app's TCP to `tcp_port` and its DNS to `dns_port` on
    /// this host's end of the link, and refuses the rest.
    pub fn steer(&self, tcp_port: u16, dns_port: u16) -> Result<(), SetupError> {
        let (t, h, g4, g6) = (&self.table, &self.host_if, self.gw4, self.gw6);
        // What IPv6 needs on any link (neighbours, multicast listeners):
        // neither steered nor counted as refused.
        let link_local = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, \
                          mld2-listener-report";
        let rules = format!(
            r#"table inet {t} {{
    counter refused {{ }}
    chain count {{
        type filter hook prerouting priority raw; policy accept;
        iifname "{h}" meta l4proto tcp accept
        iifname "{h}" udp dport 53 accept
        iifname "{h}" icmpv6 type {{ {link_local} }} accept
        iifname "{h}" counter name "refused"
    }}
    chain steer {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{h}" meta nfproto ipv4 meta l4proto tcp dnat ip to {g4}:{tcp_port}
        iifname "{h}" meta nfproto ipv6 meta l4proto tcp dnat ip6 to [{g6}]:{tcp_port}
        iifname "{h}" meta nfproto ipv4 udp dport 53 dnat ip to {g4}:{dns_port}
        iifname "{h}" meta nfproto ipv6 udp dport 53 dnat ip6 to [{g6}]:{dns_port}
    }}
    chain take {{
        type filter hook input priority filter; policy accept;
        iifname "{h}" tcp dport {tcp_port} accept
        iifname "{h}" udp dport {dns_port} accept
        iifname "{h}" icmpv6 type {{ {link_local} }} accept
        iifname "{h}" reject
    }}
    chain pass {{
        type filter hook forward priority filter; policy accept;
        iifname "{h}" reject
        oifname "{h}" drop
    }}
}}
"#
        );
        run_input(&["nft", "-f", "-"], Some(&rules)).map(|_| ())
    }

    /// Packets from the app the sandbox refused so far (anything but TCP
    /// and DNS: other UDP, ICMP; counted before routing, so also those
    /// this host has no route for).
    pub fn refused_packets(&self) -> u64 {
        let Ok(out) = run_input(&["nft", "-j", "list", "counter", "inet", &self.table, "refused"], None) else {
            return 0;
        };
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| {
                v["nftables"].as_array()?.iter().find_map(|o| o.get("counter").and_then(|c| c["packets"].as_u64()))
            })
            .unwrap_or(0)
    }

    /// Starts the app in the namespace, with the run's resolv.conf and,
    /// when started by sudo, as the user who ran it; waits for it, passing
    /// on SIGINT and SIGTERM. Its exit status (128+N for signal N).
    pub fn run_app(&self, app: &[String]) -> Result<i32, SetupError> {
        let ns_path = Path::new("/var/run/netns").join(&self.netns);
        let ns = std::fs::File::open(&ns_path)
            .map_err(|source| SetupError::Spawn { app: format!("{} (namespace)", ns_path.display()), source })?;
        let resolv = std::ffi::CString::new(self.resolv.as_os_str().as_encoded_bytes())
            .map_err(|_| SetupError::Spawn { app: app[0].clone(), source: io::ErrorKind::InvalidInput.into() })?;
        let ids = sudo_ids();
        let ns_fd = ns.as_raw_fd();
        let mut cmd = Command::new(&app[0]);
        cmd.args(&app[1..]);
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes system calls (setns, unshare, mount, set*id) on
        // values prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
                check(libc::setns(ns_fd, libc::CLONE_NEWNET))?;
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    resolv.as_ptr(),
                    c"/etc/resolv.conf".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                if let Some((uid, gid)) = ids {
                    check(libc::setgroups(0, std::ptr::null()))?;
                    check(libc::setgid(gid))?;
                    check(libc::setuid(uid))?;
                }
                Ok(())
            });
        }
        // The handler only stores to an atomic.
        vmm::signals::on_stop_signals(on_signal);
        let mut child = cmd.spawn().map_err(|source| SetupError::Spawn { app: app[0].clone(), source })?;
        drop(ns);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
            }
            let sig = SIGNALLED.swap(0, Ordering::Relaxed);
            if sig != 0 {
                // SAFETY: kill(2) on the child this process started.
                unsafe { libc::kill(child.id() as libc::pid_t, sig) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the table, the namespace (with the link) and the file;
    /// what is not there is already gone.
    fn remove(&self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(&["nft", "delete", "table", "inet", &self.table]);
        quiet(&["ip", "link", "del", &self.host_if]);
        quiet(&["ip", "netns", "del", &self.netns]);
        let _ = std::fs::remove_file(&self.resolv);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The user and group that ran `sudo`, if it did.
fn sudo_ids() -> Option<(libc::uid_t, libc::gid_t)> {
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    (uid != 0).then_some((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_at_once_get_their_own_link_addresses_outside_the_reserved_ends() {
        let (g4, a4, g6, a6) = addresses(4242);
        assert_eq!((&g4.octets()[..2], a4.octets()[3] - g4.octets()[3]), (&[169u8, 254][..], 1));
        assert_eq!((g6.segments()[3], a6.segments()[7]), (a6.segments()[3], 2));
        for pid in [0, 63, 64, 16_255, 16_256, 4_194_303] {
            let x = addresses(pid).0.octets()[2];
            assert!((1..=254).contains(&x), "pid {pid}: 169.254.{x}");
        }
        assert_ne!(addresses(1).0, addresses(2).0);
        assert!(addresses(4_194_303).2.segments()[3] < 0x766d, "never the virtual DNS /64");
    }
}
