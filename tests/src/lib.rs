//! Shared harness for pathvm's integration tests.
//!
//! The tests use the real thing: `/dev/kvm`, taps, network namespaces and
//! the `pathvm` binary with the real guest image. When one of those is
//! missing a test fails loudly under `CI=true`; elsewhere it prints why it
//! did not run (never a silent pass).

pub mod capture;
pub mod edge;

pub use topo::lab::{events, ip_bin, Daemon, Lab};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `pathvm` binary: `$PATHVM_BIN`, else beside the test executable's
/// target directory.
pub fn pathvm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PATHVM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let bin = dir.join("pathvm");
    assert!(bin.exists(), "{} missing: build it first (`cargo build --bins` or `make test`)", bin.display());
    bin
}

/// The guest image: `$PATHVM_IMAGE`, else images/out/agent.elf.
pub fn image() -> PathBuf {
    let p =
        std::env::var_os("PATHVM_IMAGE").map(PathBuf::from).unwrap_or_else(|| workspace().join("images/out/agent.elf"));
    assert!(p.exists(), "guest image {} missing: run `make image`", p.display());
    p
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks that what a test needs exists. Returns false (after saying why)
/// when it does not and we are not in CI; panics in CI.
pub fn require(what: &[Need]) -> bool {
    for need in what {
        if let Err(why) = need.check() {
            if in_ci() {
                panic!("required for this test and missing under CI=true: {why}");
            }
            eprintln!("NOT RUN: {why} (set CI=true to make this a failure)");
            return false;
        }
    }
    true
}

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// /dev/kvm, usable.
    Kvm,
    /// /dev/net/tun and network namespaces (root).
    Netns,
    /// qemu-system-x86_64 on PATH.
    Qemu,
}

impl Need {
    fn check(self) -> Result<(), String> {
        match self {
            Need::Kvm => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map(|_| ())
                .map_err(|e| format!("/dev/kvm unusable: {e}")),
            Need::Netns => {
                if !Path::new("/dev/net/tun").exists() {
                    return Err("/dev/net/tun missing".into());
                }
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    return Err("network namespaces need root".into());
                }
                which("ip").map(|_| ()).ok_or_else(|| "iproute2 (`ip`) not installed".into())
            }
            Need::Qemu => which("qemu-system-x86_64")
                .map(|_| ())
                .ok_or_else(|| "qemu-system-x86_64 not installed (make deps)".into()),
        }
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.exists())
}

/// A command that must succeed; panics with its output otherwise.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name (interface names are at most 15 bytes).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace, deleted (with everything in it) on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates a fresh namespace with loopback up.
    pub fn new() -> Self {
        let name = unique("pvt");
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside; panics on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// A command inside, to spawn or run as the caller likes.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Creates a persistent tap with a vnet header and the host side's
    /// address, and brings it up.
    pub fn tap(&self, name: &str, host_cidr: &str) {
        self.exec(&["ip", "tuntap", "add", name, "mode", "tap", "vnet_hdr"]);
        self.exec(&["ip", "addr", "add", host_cidr, "dev", name]);
        self.exec(&["ip", "link", "set", name, "up"]);
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A child process killed (by its PID) and reaped on drop.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Takes ownership of `child`.
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// Sends SIGTERM and waits up to `timeout`; returns exit code and stderr.
    pub fn terminate(mut self, timeout: Duration) -> (Option<i32>, String) {
        let mut child = self.0.take().expect("child present");
        // SAFETY: signals the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let code = wait_timeout(&mut child, timeout);
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (code, err)
    }

    /// The child.
    pub fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for `child` up to `timeout`, killing it after; its exit code.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pathvm boot` with the test image and the given extra arguments.
pub fn boot_cmd(extra: &[&str]) -> Command {
    let mut c = Command::new(pathvm_bin());
    c.arg("boot").arg("--image").arg(image()).args(extra);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// A 32-byte key from the 64 hex digits a node config holds.
pub fn hex32(hex: &str) -> [u8; 32] {
    let key: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    key.try_into().expect("32 bytes")
}

/// The wall clock in µs since the Unix epoch. Nodes refuse link sequence
/// numbers from before their boot (stale: recorded before a restart), so
/// a test's hand-sealed frames number from this, read after the node
/// they are for has started.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_micros() as u64
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// SHA-256 as hex.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates one under the system temp dir.
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique("pathvm-test-"));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Test hosts from a topology file, under a unique name: the harness the
/// benchmarks use ([`topo::lab::Lab`]), with the test image and binary;
/// taken down (with every process in them) on drop.
pub struct TopoGuard {
    /// The namespace prefix.
    pub name: String,
    file: PathBuf,
    lab: Lab,
}

impl TopoGuard {
    /// The hosts of `tests/topologies/<file>`.
    pub fn up(file: &str) -> Self {
        Self::up_file(&workspace().join("tests/topologies").join(file))
    }

    /// The hosts of a topology file anywhere.
    pub fn up_file(file: &Path) -> Self {
        let name = format!("t{}{}", std::process::id() % 10_000, COUNTER.fetch_add(1, Ordering::Relaxed));
        let lab = Lab::up(file, &name, &pathvm_bin(), &image()).unwrap_or_else(|e| panic!("topo up: {e}"));
        Self { name, file: file.to_path_buf(), lab }
    }

    /// The shared harness underneath.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The namespace of `host`.
    pub fn netns(&self, host: &str) -> String {
        self.lab.netns(host)
    }

    /// `pathvm topo set` on link `link` (HOST-HOST): the command a user
    /// would run against hosts that are up.
    pub fn set_link(&self, link: &str, delay_ms: u32, loss_percent: u32) {
        let out = Command::new(pathvm_bin())
            .args(["topo", "set"])
            .arg(&self.file)
            .args(["--name", &self.name, "--link", link])
            .args(["--delay-ms", &delay_ms.to_string(), "--loss-percent", &loss_percent.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "topo set: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The node configuration written for `host`.
    pub fn node_config(&self, host: &str) -> PathBuf {
        self.lab.node_config(host)
    }

    /// `host`'s node config as its node loads it: read inside its
    /// namespace, where its interfaces are (their MACs are defaults), its
    /// identity resolved and link keys agreed.
    pub fn node_file(&self, host: &str) -> node::NodeFile {
        let path = self.node_config(host);
        in_netns(&self.netns(host), move || node::NodeFile::load(&path)).unwrap_or_else(|e| panic!("{host}: {e}"))
    }

    /// `pathvm node` for `host`, inside its namespace, with `--metrics`
    /// and piped stdin and stdout (its console records).
    pub fn node(&self, host: &str, metrics: &Path) -> Command {
        let mut c = self.lab.node_command(host, false);
        c.arg("--metrics").arg(metrics);
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        c
    }

    /// Starts `pathvm node` for `host` (node id `id`) and waits for its
    /// `node_up` event.
    pub fn start_node(&self, host: &str, id: u16, metrics: &Path) -> Daemon {
        self.start_node_from(self.node(host, metrics), id)
    }

    /// Starts a [`TopoGuard::node`] command the caller adjusted.
    pub fn start_node_from(&self, cmd: Command, id: u16) -> Daemon {
        let d = self.lab.start_node_from(&format!("node {id}"), cmd).unwrap_or_else(|e| panic!("{e}"));
        let up = d.events().of("node_up");
        assert_eq!(up[0]["node"], id, "{}", d.events().dump());
        d
    }

    /// `IpExt`-independent IP receive counter of `host`'s kernel stack.
    pub fn ip_in_receives(&self, host: &str) -> u64 {
        let out =
            Command::new("ip").args(["netns", "exec", &self.netns(host), "cat", "/proc/net/snmp"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (ip.next().expect("Ip header"), ip.next().expect("Ip values"));
        let idx = names.split_whitespace().position(|n| n == "InReceives").expect("InReceives");
        values.split_whitespace().nth(idx).and_then(|v| v.parse().ok()).expect("a number")
    }
}

/// Runs `f` on a thread that joined network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    netdev::netns::in_netns(ns, f).unwrap_or_else(|e| panic!("cannot enter namespace {ns}: {e}"))
}

/// A TCP service in namespace `ns` on an ephemeral port: each connection
/// is handed to `handle` on a thread of its own. Returns the port.
pub fn serve_in(ns: &str, handle: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> u16 {
    serve_at(ns, "0.0.0.0:0", handle)
}

/// [`serve_in`] on `bind` (`[::]:PORT` takes IPv4 and IPv6 clients).
pub fn serve_at(ns: &str, bind: &str, handle: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ns, bind) = (ns.to_string(), bind.to_string());
    let handle = std::sync::Arc::new(handle);
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let l = std::net::TcpListener::bind(&bind).unwrap_or_else(|e| panic!("bind {bind} in namespace: {e}"));
            tx.send(l.local_addr().expect("local addr").port()).expect("port");
            for conn in l.incoming().map_while(Result::ok) {
                let handle = handle.clone();
                std::thread::spawn(move || handle(conn));
            }
        })
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("service listening")
}

/// How many `routes_changed` events node `d` reported so far.
pub fn routes_changed(d: &Daemon) -> usize {
    d.events().of("routes_changed").len()
}

/// What is left in namespace `ns` of the request VMs whose flows `flows`
/// name (`0x…`, as events carry them): filters on `link` that steer their
/// flow id. Taps are not a request's: the edge keeps them for later
/// flows ([`request_taps`] lists them).
pub fn request_leftovers(ns: &str, link: &str, flows: &[String]) -> Vec<String> {
    let filters = String::from_utf8_lossy(
        &sh(&["ip", "netns", "exec", ns, "tc", "filter", "show", "dev", link, "ingress"]).stdout,
    )
    .into_owned();
    flows
        .iter()
        .map(|f| f.trim_start_matches("0x").to_lowercase())
        .filter(|h| filters.contains(&format!("match {h}/ffffffff")))
        .map(|h| format!("filter for flow 0x{h} on {link}"))
        .collect()
}

/// The edge's request taps in namespace `ns` (`r` + 8 hex digits + the
/// port's index): the ones steered for requests and the spares kept for
/// the next; none once the edge is gone.
pub fn request_taps(ns: &str) -> Vec<String> {
    let links = String::from_utf8_lossy(&sh(&["ip", "-n", ns, "-o", "link"]).stdout).into_owned();
    links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
        .filter(|n| {
            n.len() == 10
                && n.starts_with('r')
                && n[1..9].chars().all(|c| c.is_ascii_hexdigit())
                && n[9..].chars().all(|c| c.is_ascii_digit())
        })
        .collect()
}
