//! The tunnels a user would pick instead of pathvm, run on the same test
//! hosts for `pathvm bench connect`: OpenSSH's dynamic forward (`ssh -D`
//! from A to an sshd on B, which connects C) and microsocks (a plain SOCKS5
//! relay on B). Each is started by the benchmark with throwaway keys and
//! files in a directory of its own, measured, and killed by its PID.
//!
//! They run while no pathvm node is up: a node takes every frame of B's
//! links before B's host stack, where sshd and microsocks live.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use topo::lab::{ip_bin, Lab};

/// Where the peers listen: sshd and microsocks on B, ssh's forward on A.
const SSHD_PORT: u16 = 2222;
const MICROSOCKS_PORT: u16 = 1081;
const SSH_FORWARD_PORT: u16 = 1082;
/// How long a peer may take to listen.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A peer process, killed (by its PID) and reaped on drop.
pub struct Peer {
    what: &'static str,
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::debug!("{} stopped", self.what);
    }
}

/// A program of a peer, by the paths Debian installs it to.
fn program(name: &str, dirs: &[&str]) -> std::io::Result<PathBuf> {
    dirs.iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{name} is not installed (make deps installs openssh-server and microsocks)"),
        )
    })
}

fn in_ns(lab: &Lab, host: &str, program: &Path) -> Command {
    let mut c = Command::new(ip_bin());
    c.args(["netns", "exec", &lab.netns(host)]).arg(program);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Waits until something accepts TCP at `addr` inside `host`'s namespace.
fn wait_listening(lab: &Lab, host: &str, addr: SocketAddr, what: &str) -> std::io::Result<()> {
    let ns = lab.netns(host);
    super::netns_io::in_netns(&ns, move || {
        let t0 = Instant::now();
        while t0.elapsed() < READY_WITHIN {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{addr} never listened")))
    })
    .map_err(|e| std::io::Error::other(format!("{what}: {e}")))
}

/// B's address on its link with A.
pub fn b_addr(lab: &Lab) -> std::io::Result<Ipv4Addr> {
    let t = lab.topo();
    let i = t.file.link_index("a", "b").ok_or_else(|| std::io::Error::other("the topology has no link a-b"))?;
    let end = if t.file.links[i].a == "b" { 1 } else { 2 };
    topo::Topo::addr(i, end).parse().map_err(|_| std::io::Error::other("B's link address does not parse"))
}

/// microsocks on B; returns it and where A reaches it.
pub fn microsocks(lab: &Lab) -> std::io::Result<(Peer, SocketAddr)> {
    let b = b_addr(lab)?;
    let bin = program("microsocks", &["/usr/bin", "/usr/local/bin"])?;
    let child = in_ns(lab, "b", &bin).args(["-i", &b.to_string(), "-p", &MICROSOCKS_PORT.to_string()]).spawn()?;
    let peer = Peer { what: "microsocks", child };
    let addr = SocketAddr::V4(SocketAddrV4::new(b, MICROSOCKS_PORT));
    wait_listening(lab, "a", addr, "microsocks on B")?;
    Ok((peer, addr))
}

fn run_ok(c: &mut Command, what: &str) -> std::io::Result<()> {
    let out = c.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim())))
}

/// sshd on B (throwaway host and client keys in `dir`) and `ssh -N -D` on
/// A to it; returns both and where A's forward listens.
pub fn ssh_dynamic_forward(lab: &Lab, dir: &Path) -> std::io::Result<(Vec<Peer>, SocketAddr)> {
    let b = b_addr(lab)?;
    let sshd = program("sshd", &["/usr/sbin", "/usr/local/sbin"])?;
    let ssh = program("ssh", &["/usr/bin", "/usr/local/bin"])?;
    let keygen = program("ssh-keygen", &["/usr/bin", "/usr/local/bin"])?;
    std::fs::create_dir_all(dir)?;
    let (host_key, client_key) = (dir.join("host_ed25519"), dir.join("client_ed25519"));
    for k in [&host_key, &client_key] {
        let _ = std::fs::remove_file(k);
        run_ok(Command::new(&keygen).args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(k), "ssh-keygen")?;
    }
    let authorized = dir.join("authorized_keys");
    std::fs::copy(client_key.with_extension("pub"), &authorized)?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {SSHD_PORT}\nListenAddress {b}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nAllowTcpForwarding yes\n",
            host_key.display(),
            authorized.display(),
            dir.join("sshd.pid").display()
        ),
    )?;
    // sshd's privilege separation wants this directory.
    std::fs::create_dir_all("/run/sshd")?;
    let daemon = in_ns(lab, "b", &sshd).arg("-D").arg("-f").arg(&config).spawn()?;
    let mut peers = vec![Peer { what: "sshd on B", child: daemon }];
    wait_listening(lab, "a", SocketAddr::V4(SocketAddrV4::new(b, SSHD_PORT)), "sshd on B")?;
    let forward = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, SSH_FORWARD_PORT));
    let client = in_ns(lab, "a", &ssh)
        .args(["-N", "-D", &forward.to_string(), "-p", &SSHD_PORT.to_string(), "-i"])
        .arg(&client_key)
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "ExitOnForwardFailure=yes", &format!("root@{b}")])
        .spawn()?;
    peers.push(Peer { what: "ssh -D on A", child: client });
    wait_listening(lab, "a", forward, "ssh -D on A")?;
    Ok((peers, forward))
}
