//! README "Deploying on real hosts", end to end: three network namespaces
//! stand in for three machines joined by two cables; everything after the
//! cabling is what a person types — a CA, keys made on each machine,
//! certificates, hand-written configs (B's is docs/node.example.toml,
//! verbatim), the daemons started as the systemd units start them, and a
//! check through the edge and `pathvm status`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pathvm_tests::edge::http_server;
use pathvm_tests::*;

/// The machines: namespaces joined like cables, removed on drop.
struct Machines {
    prefix: String,
}

impl Machines {
    fn ns(&self, m: &str) -> String {
        format!("{}-{m}", self.prefix)
    }

    /// A (eth0) -- (eth0) B (eth1) -- (eth0) C, 10.240.1.0/24 and 10.240.2.0/24.
    fn cable_up() -> Self {
        let me = Self { prefix: unique("dp") };
        for m in ["a", "b", "c"] {
            sh(&["ip", "netns", "add", &me.ns(m)]);
            sh(&["ip", "-n", &me.ns(m), "link", "set", "lo", "up"]);
        }
        for (x, xi, y, yi, net) in [("a", "eth0", "b", "eth0", 1), ("b", "eth1", "c", "eth0", 2)] {
            let (nx, ny) = (me.ns(x), me.ns(y));
            sh(&["ip", "link", "add", xi, "netns", &nx, "type", "veth", "peer", "name", yi, "netns", &ny]);
            let host = |m: &str| match m {
                "a" => 1,
                "b" => 2,
                _ => 3,
            };
            for (ns, i, m) in [(&nx, xi, x), (&ny, yi, y)] {
                sh(&["ip", "-n", ns, "addr", "add", &format!("10.240.{net}.{}/24", host(m)), "dev", i]);
                sh(&["ip", "-n", ns, "link", "set", i, "up"]);
            }
        }
        me
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for m in ["a", "b", "c"] {
            let ns = self.ns(m);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()) {
                    // SAFETY: kill(2) on a process in this test's own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// `pathvm ARGS` on machine `ns` (None: the CA's machine, here).
fn pathvm(ns: Option<&str>, args: &[&str]) -> Output {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(pathvm_bin());
            c
        }
        None => Command::new(pathvm_bin()),
    };
    let out = c.args(args).output().unwrap();
    assert!(out.status.success(), "pathvm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A's and C's configs, written as B's example is.
fn config(id: u16, ports: &[(&str, u16)]) -> String {
    let example = std::fs::read_to_string(workspace().join("docs/node.example.toml")).unwrap();
    let name = ["", "a", "b", "c"][id as usize];
    let mut out = example
        .replace("id = 2\n", &format!("id = {id}\n"))
        .replace("members/b.crt.toml", &format!("members/{name}.crt.toml"))
        .replace("identity/b.key", &format!("identity/{name}.key"));
    let start = out.find("\n[[port]]\n").unwrap() + 1;
    let end = out.find("# The topology as planned").unwrap();
    let ports: String = ports.iter().map(|(i, p)| format!("[[port]]\niface = \"{i}\"\npeer = {p}\n\n")).collect();
    out.replace_range(start..end, &ports);
    out
}

#[test]
fn three_machines_deployed_with_the_commands_a_person_types_carry_a_file() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let machines = Machines::cable_up();
    let dir = TempDir::new();
    let ca = dir.0.join("ca");
    let home = |m: &str| -> PathBuf { dir.0.join(m) };

    // The CA, on its own machine; keys on each machine; certificates.
    pathvm(None, &["ca", "init", "--dir", s(&ca), "--name", "deploy"]);
    for (m, id, addrs) in
        [("a", "1", vec!["10.240.1.1"]), ("b", "2", vec!["10.240.1.2", "10.240.2.2"]), ("c", "3", vec!["10.240.2.3"])]
    {
        let idd = home(m).join("identity");
        pathvm(Some(&machines.ns(m)), &["cert", "keygen", "--dir", s(&idd), "--name", m]);
        let public = idd.join(format!("{m}.pub.toml"));
        let cert = dir.0.join(format!("{m}.crt.toml"));
        let mut args = vec!["cert", "issue", "--ca", s(&ca), "--pub", s(&public), "--node", id, "--name", m];
        for a in &addrs {
            args.extend(["--addr", a]);
        }
        args.extend(["--out", s(&cert)]);
        pathvm(None, &args);
    }
    // Every machine gets the CA's public file, its list and the members.
    for m in ["a", "b", "c"] {
        let idd = home(m).join("identity");
        std::fs::create_dir_all(idd.join("members")).unwrap();
        std::fs::copy(ca.join("ca.toml"), idd.join("ca.toml")).unwrap();
        std::fs::copy(ca.join("crl.toml"), idd.join("crl.toml")).unwrap();
        for n in ["a", "b", "c"] {
            std::fs::copy(dir.0.join(format!("{n}.crt.toml")), idd.join(format!("members/{n}.crt.toml"))).unwrap();
        }
    }
    // Hand-written configs: B's is the documented example as it is.
    std::fs::copy(workspace().join("docs/node.example.toml"), home("b").join("node.toml")).unwrap();
    std::fs::write(home("a").join("edge.toml"), config(1, &[("eth0", 2)])).unwrap();
    std::fs::write(home("c").join("node.toml"), config(3, &[("eth0", 2)])).unwrap();
    for m in ["a", "b", "c"] {
        let key = home(m).join(format!("identity/{m}.key"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The daemons, as the units start them.
    let body = random_bytes(4 << 20, 51);
    let port = http_server(&machines.ns("c"), body.clone());
    let image = image();
    let daemon = |m: &str, sub: &str, file: &str, extra: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &machines.ns(m)]).arg(pathvm_bin()).arg(sub);
        c.arg("--image").arg(&image).arg("--config").arg(home(m).join(file));
        c.args(extra).arg("--metrics-listen").arg("127.0.0.1:9464");
        c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        Daemon::start(
            &format!("{sub} on {m}"),
            c,
            if sub == "edge" { "edge_up" } else { "node_up" },
            topo::lab::READY_WITHIN,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let _c = daemon("c", "node", "node.toml", &["--console", "none", "--quiet"]);
    let _b = daemon("b", "node", "node.toml", &["--console", "none", "--quiet"]);
    let edge = daemon("a", "edge", "edge.toml", &[]);

    // The check: a file through the edge, by host name.
    let out = Command::new("ip")
        .args(["netns", "exec", &machines.ns("a"), "curl", "-s", "--max-time", "60"])
        .args(["--socks5-hostname", "127.0.0.1:1080"])
        .arg(format!("http://c:{port}/file"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "curl through the deployed edge: {:?}", edge.log_since(0));
    assert_eq!(sha256(&out.stdout), sha256(&body), "the file arrived intact");
    // And what a person looks at: B's links, live (the page refreshes its
    // link table each second).
    let config = home("b").join("node.toml");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = pathvm(
            Some(&machines.ns("b")),
            &["status", "--metrics", "http://127.0.0.1:9464/metrics", "--config", s(&config), "--count", "1", "--json"],
        );
        let frame: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let up = frame["links"].as_array().unwrap().iter().any(|l| l["peer"] == 3 && l["up"] == true);
        if up {
            break;
        }
        assert!(std::time::Instant::now() < until, "B's link to C never shown up: {frame}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A person's typo in a value: refused before anything starts, with
    // the file and the line.
    let typo = home("b").join("typo.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("protocol = \"shortest\"", "protocol = \"shortset\"");
    let line = text.lines().position(|l| l.starts_with("protocol =")).unwrap() + 1;
    std::fs::write(&typo, text).unwrap();
    let out =
        Command::new(pathvm_bin()).args(["node", "--image"]).arg(&image).arg("--config").arg(&typo).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("typo.toml, line {line}: unknown protocol")), "{err}");
}
