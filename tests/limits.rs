//! The edge under load and abuse: its caps refuse clearly and at once,
//! a client that trickles its handshake is cut at the deadline, and the
//! rest are served meanwhile. Real VMs, real namespaces (line3).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use guest_agent::socks::Reply;
use pathvm_tests::edge::*;
use pathvm_tests::events::is;
use pathvm_tests::*;

#[test]
fn beyond_max_vms_a_request_gets_reply_1_at_once_and_the_edge_serves_the_rest() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let (topo, _nodes, edge, target) = line3_with_echo(&dir, &["--max-vms", "1"]);
    let (mut held, reply) = socks_connect(&topo, target);
    assert_eq!(reply, Reply::Succeeded);
    let data = random_bytes(4096, 1);
    assert_eq!(sha256(&echo_round(&mut held, &data)), sha256(&data));

    // The one VM is taken: the next request is refused with reply 1 and
    // a reason naming the limit; no VM starts for it.
    let (_s, reply) = socks_connect(&topo, target);
    assert_eq!(reply, Reply::GeneralFailure, "{}", edge.events.dump());
    let refused = edge.events.wait(Duration::from_secs(10), |e| is(e, "refused"));
    assert!(refused["reason"].as_str().is_some_and(|r| r.contains("--max-vms")), "{refused}");
    assert_eq!(edge.events.of("vm_up").len(), 1, "a VM beyond the limit started");

    // The held stream is unharmed; once it ends, its place is free again.
    let more = random_bytes(4096, 2);
    assert_eq!(sha256(&echo_round(&mut held, &more)), sha256(&more));
    drop(held);
    edge.wait_vms_ended(1);
    let (mut next, reply) = socks_connect(&topo, target);
    assert_eq!(reply, Reply::Succeeded, "{}", edge.events.dump());
    assert_eq!(sha256(&echo_round(&mut next, &data)), sha256(&data));
    drop(edge.child);
}

#[test]
fn a_client_trickling_its_handshake_is_cut_at_the_deadline_while_others_are_served() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let (topo, _nodes, edge, target) = line3_with_echo(&dir, &["--handshake-timeout", "1"]);
    // A whole handshake (greeting, CONNECT 127.0.0.1:80) one byte per
    // 300 ms: each read is quick, the whole takes 4 s. The edge must close
    // it before it is done.
    let slow = std::thread::spawn({
        let ns = topo.netns("a");
        move || {
            in_netns(&ns, || {
                let mut s = std::net::TcpStream::connect("127.0.0.1:1080").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                let handshake = [5u8, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80];
                for (i, b) in handshake.iter().enumerate() {
                    if s.write_all(&[*b]).is_err() {
                        return Some(i);
                    }
                    let mut got = [0u8; 16];
                    match s.read(&mut got) {
                        Ok(0) => return Some(i),
                        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return Some(i),
                        // Nothing yet, or the method choice.
                        _ => {}
                    }
                }
                None
            })
        }
    });
    // Meanwhile the edge serves others.
    for seed in 0..3 {
        let (mut s, reply) = socks_connect(&topo, target);
        assert_eq!(reply, Reply::Succeeded);
        let data = random_bytes(4096, seed);
        assert_eq!(sha256(&echo_round(&mut s, &data)), sha256(&data));
    }
    let cut_after = slow.join().unwrap();
    assert!(cut_after.is_some(), "the trickling client finished its handshake: never cut");
    let failed = edge.events.wait(Duration::from_secs(10), |e| is(e, "handshake_failed"));
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("too long")), "{failed}");
    drop(edge.child);
}

#[test]
fn the_edge_raises_its_fd_limit_at_start() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let topo = TopoGuard::up("line3.toml");
    let mut cmd = edge_command(&topo, std::path::Path::new("/nonexistent"));
    // Started with the usual soft limit of 1,024 (about 50 request VMs).
    // SAFETY: setrlimit is async-signal-safe and touches only the child's
    // own limits, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max.min(1024);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let edge = start_edge_from(cmd);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", edge.child.pid())).unwrap();
    let (soft, hard): (u64, u64) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let mut w = l.split_whitespace().skip(3);
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .expect("a Max open files line");
    // Raised to the hard limit, which root may raise further where the
    // machine allows.
    assert_eq!(soft, hard, "the edge did not raise its fd limit:\n{limits}");
    drop(edge.child);
}

#[test]
fn an_app_that_never_reads_holds_up_only_its_own_stream_and_its_vm_goes_when_it_closes() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let (topo, _nodes, edge, echo_target) = line3_with_echo(&dir, &[]);
    // A service that sends 64 MiB to whoever connects.
    let flood_port = serve_in(&topo.netns("c"), |mut c| {
        let chunk = vec![0x42u8; 1 << 20];
        for _ in 0..64 {
            if c.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let (stuck, reply) = socks_connect(&topo, SocketAddr::from(([10, 231, 1, 2], flood_port)));
    assert_eq!(reply, Reply::Succeeded);
    let stuck_flow = edge.events.wait(Duration::from_secs(10), |e| is(e, "stream_up"))["flow"].clone();
    // The flood fills the app's socket, its VM's console and its stream's
    // window; other requests go on as if nothing happened.
    std::thread::sleep(Duration::from_secs(2));
    for seed in 0..3 {
        let (mut s, reply) = socks_connect(&topo, echo_target);
        assert_eq!(reply, Reply::Succeeded, "{}", edge.events.dump());
        let data = random_bytes(64 << 10, seed);
        assert_eq!(sha256(&echo_round(&mut s, &data)), sha256(&data));
    }
    // The app hangs up without reading: its VM ends and leaves no filter
    // for its flow behind (its taps go back to the edge).
    drop(stuck);
    let ended = edge.wait_flow(&stuck_flow, "vm_ended");
    assert!(ended["exit"].as_str().is_some_and(|x| x.contains("Exited")), "{ended}");
    edge.wait_vms_ended(4);
    let left = edge.leftovers(&topo.netns("a"), "ln0");
    assert!(left.is_empty(), "a request's steering was left: {left:?}");
    drop(edge.child);
}

#[test]
fn a_vm_whose_console_reader_stopped_reading_still_stops_when_told() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let dir = TempDir::new();
    let sock = dir.0.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let console = format!("unix:{}", sock.display());
    let mut vm = ChildGuard::new(boot_cmd(&["--role", "echo", "--console", &console]).spawn().unwrap());
    let (stream, _) = listener.accept().unwrap();
    // 32 MiB in, nothing read back: the echo fills the socket towards us,
    // then the guest's ring, then the socket towards it.
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![9u8; 1 << 20];
        for _ in 0..32 {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(vm.get().try_wait().unwrap().is_none(), "the echo VM ended by itself");
    // SAFETY: kill on the pid of a child we started and still own.
    unsafe { libc::kill(vm.get().id() as i32, libc::SIGTERM) };
    // A device thread blocked on a full console would never join.
    let status = wait_timeout(vm.get(), Duration::from_secs(20));
    let mut err = String::new();
    let _ = vm.get().stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert_eq!(status, Some(130), "the VM did not stop:\n{err}");
    drop(stream);
}

/// line3 with a short stream idle timeout, written beside the test.
fn line3_idle(dir: &TempDir, idle_s: u32) -> TopoGuard {
    let text = std::fs::read_to_string(workspace().join("tests/topologies/line3.toml")).unwrap();
    let text = text.replacen("name = \"line3\"", &format!("name = \"line3\"\nstream_idle_timeout_s = {idle_s}"), 1);
    assert!(text.contains("stream_idle_timeout_s"), "line3.toml has no name line to extend");
    let path = dir.0.join("line3-idle.toml");
    std::fs::write(&path, text).unwrap();
    TopoGuard::up_file(&path)
}

fn threads_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap()
}

#[test]
fn when_the_edge_dies_with_100_open_streams_the_destination_lets_go_of_them_all() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let topo = line3_idle(&dir, 4);
    let c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let _b = topo.start_node("b", 2, &dir.0.join("b.json"));
    // An echo service that counts its open connections.
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let port = serve_in(&topo.netns("c"), {
        let live = live.clone();
        move |mut conn| {
            live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut b = [0u8; 4096];
            while let Ok(n @ 1..) = conn.read(&mut b) {
                if conn.write_all(&b[..n]).is_err() {
                    break;
                }
            }
            live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let target = SocketAddr::from(([10, 231, 1, 2], port));
    let threads_before = threads_of(c.pid());
    let mut edge = start_edge_from(edge_command(&topo, std::path::Path::new("/nonexistent")));
    let mut held = Vec::new();
    for seed in 0..100 {
        let (mut s, reply) = socks_connect(&topo, target);
        assert_eq!(reply, Reply::Succeeded, "{}", edge.events.dump());
        let data = random_bytes(512, seed);
        assert_eq!(sha256(&echo_round(&mut s, &data)), sha256(&data));
        held.push(s);
    }
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 100);
    assert!(threads_of(c.pid()) >= threads_before + 100, "the destination holds a thread per stream");
    // Held past the idle timeout first: keepalives keep them all.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 100, "live streams were reclaimed");
    // The edge dies without a word to anyone.
    edge.child.kill();
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        live.load(std::sync::atomic::Ordering::SeqCst) == 0 && threads_of(c.pid()) <= threads_before
    });
    assert!(
        gone,
        "after 20 s the destination still holds {} service connections and {} threads (had {threads_before})",
        live.load(std::sync::atomic::Ordering::SeqCst),
        threads_of(c.pid())
    );
    drop(held);
}

#[test]
fn a_datagram_flood_at_the_destination_during_a_64_mib_download_costs_it_no_byte() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let topo = TopoGuard::up("line3.toml");
    // C's delivered datagrams go to its stdout, which nobody reads.
    let c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let mut b = topo.start_node("b", 2, &dir.0.join("b.json"));
    let body = random_bytes(64 << 20, 11);
    let port = http_server(&topo.netns("c"), body.clone());
    let edge = start_edge(&topo);
    // B's host sends C datagrams as fast as it can while the download runs.
    let mut stdin = b.child().stdin.take().unwrap();
    let flood = std::thread::spawn(move || {
        let mut input = Vec::new();
        for i in 0..20_000u32 {
            guest_agent::node::Record { node: 3, flow: i, payload: &[0xdd; 1000] }.encode(&mut input);
        }
        let _ = stdin.write_all(&input);
        stdin
    });
    let (code, got) = curl(&topo, &format!("http://c:{port}/big"), None);
    let _stdin = flood.join().unwrap();
    assert_eq!((code, got.len()), (Some(0), body.len()), "{}", edge.events.dump());
    assert_eq!(sha256(&got), sha256(&body));
    drop((edge.child, c));
}

#[test]
fn a_guest_hammering_registers_the_wrong_way_gets_a_bounded_number_of_log_lines() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let t0 = std::time::Instant::now();
    let out = boot_cmd(&["--role", "bad-mmio"]).env("PATHVM_LOG", "warn").output().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr.lines().filter(|l| l.contains("virtio-mmio")).count();
    // Each of the guest's accesses would have been a line; the limiter's
    // burst and rate over the run's length bound them instead.
    let bound = 20 + (5.0 * secs).ceil() as usize + 5;
    assert!(lines >= 1, "the wrong-way reads were never reported");
    assert!(
        lines <= bound,
        "{lines} lines for {} accesses in {secs:.1} s (bound {bound})",
        guest_agent::boot::BAD_MMIO_ACCESSES
    );
    assert!(stderr.contains("held_back"), "the lines held back are not counted");
}

#[test]
fn the_vcpu_and_device_threads_run_under_seccomp_and_the_rest_does_not() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let mut cmd = boot_cmd(&["--role", "idle"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut vm = ChildGuard::new(cmd.spawn().unwrap());
    let pid = vm.get().id();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        seen.clear();
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let mode = status.lines().find_map(|l| l.strip_prefix("Seccomp:")).map(|v| v.trim().to_string());
            seen.insert(comm, mode.unwrap_or_default());
        }
        if seen.contains_key("pathvm-vcpu") && seen.contains_key("pathvm-dev") {
            break;
        }
    }
    assert_eq!(seen.get("pathvm-vcpu").map(String::as_str), Some("2"), "{seen:?}");
    assert_eq!(seen.get("pathvm-dev").map(String::as_str), Some("2"), "{seen:?}");
    assert_eq!(seen.get("pathvm").map(String::as_str), Some("0"), "the main thread is confined too: {seen:?}");
    // SAFETY: kill on the pid of a child we started and still own.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(wait_timeout(vm.get(), Duration::from_secs(10)), Some(130));
}

#[test]
fn every_file_holding_keys_is_0600_in_a_0700_directory() {
    if !require(&[Need::Netns]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let topo = TopoGuard::up("line3.toml");
    let dir = topo.node_config("a").parent().unwrap().to_path_buf();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let mut keyed = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if text.contains("key = ") || text.contains("lsa_secret") {
            keyed += 1;
            assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        }
    }
    assert_eq!(keyed, 3, "one node config per host, naming its key file");
    // The identity: the CA's secret and each host's keys, 0600; the
    // directories above them not open to others.
    let id = dir.join("identity");
    for f in [id.join("ca/ca.key"), id.join("a.key"), id.join("b.key"), id.join("c.key")] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[test]
fn a_nodes_vhost_user_workers_run_under_seccomp_once_they_serve() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let topo = TopoGuard::up("line3.toml");
    let _c = topo.start_node("c", 3, &dir.0.join("c.json"));
    let b = topo.start_node("b", 2, &dir.0.join("b.json"));
    // Probes between B and C wake B's workers within milliseconds.
    let mut workers = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        workers.clear();
        for t in std::fs::read_dir(format!("/proc/{}/task", b.pid())).unwrap().flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim() == "vring_worker" {
                let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                workers.push(status.lines().find_map(|l| l.strip_prefix("Seccomp:")).unwrap_or("").trim().to_string());
            }
        }
        if workers.len() == 2 && workers.iter().all(|m| m == "2") {
            break;
        }
    }
    assert_eq!(workers, vec!["2", "2"], "B has two ports, each with a confined worker");
}

#[test]
fn an_eight_mib_upload_crosses_the_destinations_credit_window_intact() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let dir = TempDir::new();
    let (topo, _nodes, edge, target) = line3_with_echo(&dir, &[]);
    let (s, reply) = socks_connect(&topo, target);
    assert_eq!(reply, Reply::Succeeded);
    // Eight host windows' worth up while the echo comes back.
    let data = random_bytes(8 << 20, 5);
    let mut writer = s.try_clone().unwrap();
    let up = data.clone();
    let w = std::thread::spawn(move || writer.write_all(&up).unwrap());
    let mut back = vec![0u8; data.len()];
    (&s).read_exact(&mut back).expect("the whole echo");
    w.join().unwrap();
    assert_eq!(sha256(&back), sha256(&data));
    drop(edge.child);
}
