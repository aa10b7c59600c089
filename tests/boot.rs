//! The foundation on real KVM: boot, console, tap, errors, hostile input.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use pathvm_tests::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn metrics(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("metrics {}: {e}", path.display()));
    serde_json::from_str(&text).expect("metrics JSON")
}

#[test]
fn boots_to_ready_and_exits_zero_when_console_closes() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let dir = TempDir::new();
    let m = dir.0.join("m.json");
    let out = boot_cmd(&["--role", "echo", "--metrics", m.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let m = metrics(&m);
    assert!(m["ready_us"].as_f64().is_some_and(|us| us > 0.0), "agent never signalled ready: {m}");
    assert_eq!(m["exit"], "Exited(0)");
}

#[test]
fn one_mib_echoes_intact_over_a_unix_socket_console() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let dir = TempDir::new();
    let sock = dir.0.join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let console = format!("unix:{}", sock.display());
    let mut vm = ChildGuard::new(boot_cmd(&["--role", "echo", "--console", &console]).spawn().unwrap());
    let (stream, _) = listener.accept().unwrap();
    let data = random_bytes(1 << 20, 7);
    let want = sha256(&data);
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    (&stream).read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    assert_eq!(echoed.len(), 1 << 20);
    assert_eq!(sha256(&echoed), want);
    assert_eq!(wait_timeout(vm.get(), TIMEOUT), Some(0));
}

#[test]
fn one_mib_echoes_intact_over_stdio_pipes() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let mut cmd = boot_cmd(&["--role", "echo", "--console", "stdio"]);
    cmd.stdin(Stdio::piped());
    let mut vm = ChildGuard::new(cmd.spawn().unwrap());
    let data = random_bytes(1 << 20, 11);
    let want = sha256(&data);
    let mut stdin = vm.get().stdin.take().unwrap();
    let sender = thread::spawn(move || stdin.write_all(&data).unwrap());
    let mut echoed = Vec::new();
    vm.get().stdout.take().unwrap().read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    assert_eq!(sha256(&echoed), want, "echoed {} bytes", echoed.len());
    assert_eq!(wait_timeout(vm.get(), TIMEOUT), Some(0));
}

#[test]
fn vm_answers_ping_from_its_namespace_over_the_tap() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let ns = Netns::new();
    let tap = unique("tp");
    ns.tap(&tap, "10.77.0.1/24");
    let dir = TempDir::new();
    let m = dir.0.join("m.json");
    let mut cmd = ns.command(&pathvm_bin());
    cmd.args(["boot", "--image"]).arg(image());
    cmd.args(["--role", "ping", "--tap", &tap, "--ip", "10.77.0.2/24", "--metrics", m.to_str().unwrap()]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let vm = ChildGuard::new(cmd.spawn().unwrap());
    // The first replies tell us the VM is up; then every ping must come back.
    let up = (0..50).any(|_| {
        ns.command(std::path::Path::new("ping"))
            .args(["-c", "1", "-W", "1", "10.77.0.2"])
            .output()
            .unwrap()
            .status
            .success()
    });
    assert!(up, "VM never answered");
    let ping = ns
        .command(std::path::Path::new("ping"))
        .args(["-c", "5", "-i", "0.2", "-W", "2", "10.77.0.2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success() && text.contains("5 received"), "ping failed: {text}");
    let (code, stderr) = vm.terminate(TIMEOUT);
    assert_eq!(code, Some(130), "stop by SIGTERM: {stderr}");
    let net = &metrics(&m)["devices"]["net"][0];
    assert!(net["rx_frames"].as_u64().unwrap() >= 5, "{net}");
    assert!(net["tx_frames"].as_u64().unwrap() >= 5, "{net}");
    assert_eq!(net["tx_bad_descriptors"], 0);
}

#[test]
fn a_tap_held_by_another_vm_is_a_clear_error() {
    if !require(&[Need::Kvm, Need::Netns]) {
        return;
    }
    let ns = Netns::new();
    let tap = unique("tp");
    let mut first = ns.command(&pathvm_bin());
    first.args(["boot", "--image"]).arg(image()).args(["--role", "idle", "--tap", &tap]);
    first.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let first = ChildGuard::new(first.spawn().unwrap());
    // Wait until the first VM holds the tap.
    for _ in 0..200 {
        if ns.command(std::path::Path::new("ip")).args(["link", "show", &tap]).output().unwrap().status.success() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let mut second = ns.command(&pathvm_bin());
    second.args(["boot", "--image"]).arg(image()).args(["--role", "idle", "--tap", &tap]);
    let out = second.stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("tap {tap} is in use by another process")), "{err}");
    first.terminate(TIMEOUT);
}

#[test]
fn guest_panic_exits_nonzero_with_the_message() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let out = boot_cmd(&["--role", "panic"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{err}");
    assert!(err.contains("agent panic") && err.contains("role 'panic' asked for a panic"), "{err}");
}

#[test]
fn descriptor_outside_guest_memory_is_refused_and_the_vm_keeps_working() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let dir = TempDir::new();
    let m = dir.0.join("m.json");
    let mut cmd = boot_cmd(&["--role", "bad-descriptor", "--metrics", m.to_str().unwrap()]);
    cmd.stdin(Stdio::piped());
    let mut vm = ChildGuard::new(cmd.spawn().unwrap());
    vm.get().stdin.take().unwrap().write_all(b"still alive\n").unwrap();
    let mut out = String::new();
    vm.get().stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(wait_timeout(vm.get(), TIMEOUT), Some(0));
    assert_eq!(out, "still alive\n");
    let console = &metrics(&m)["devices"]["console"];
    assert_eq!(console["tx_bad_descriptors"], 1, "{console}");
    assert_eq!(console["tx_bytes"], 12, "{console}");
}

fn boot_error(image: &std::path::Path, extra: &[&str], env: Option<(&str, &str)>) -> String {
    let mut cmd = std::process::Command::new(pathvm_bin());
    cmd.arg("boot").arg("--image").arg(image).args(extra).stdin(Stdio::null());
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "expected a host error");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "error should be one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn missing_image_is_a_one_line_error() {
    let dir = TempDir::new();
    let err = boot_error(&dir.0.join("nope.elf"), &[], None);
    assert!(err.contains("nope.elf not found") && err.contains("make image"), "{err}");
}

#[test]
fn corrupt_and_foreign_images_are_one_line_errors() {
    let dir = TempDir::new();
    let text = dir.0.join("text.elf");
    std::fs::write(&text, b"hello").unwrap();
    assert!(boot_error(&text, &[], None).contains("is not an ELF file"));

    let mut elf = std::fs::read(image()).unwrap();
    let truncated = dir.0.join("truncated.elf");
    std::fs::write(&truncated, &elf[..100]).unwrap();
    assert!(boot_error(&truncated, &[], None).contains("corrupt ELF"));

    elf[18] = 183; // EM_AARCH64
    let arm = dir.0.join("arm.elf");
    std::fs::write(&arm, &elf).unwrap();
    assert!(boot_error(&arm, &[], None).contains("wrong machine"));
}

#[test]
fn too_little_memory_names_what_is_needed() {
    let err = boot_error(&image(), &["--mem", "1"], None);
    assert!(err.contains("too small") && err.contains("needs at least"), "{err}");
}

#[test]
fn missing_kvm_is_a_one_line_error() {
    let err = boot_error(&image(), &[], Some(("PATHVM_KVM_DEVICE", "/nonexistent/kvm")));
    assert!(err.contains("/nonexistent/kvm does not exist"), "{err}");
}

#[test]
fn the_same_image_boots_under_qemu_microvm_by_its_pvh_note() {
    if !require(&[Need::Kvm, Need::Qemu]) {
        return;
    }
    let out = std::process::Command::new("qemu-system-x86_64")
        .args(["-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "64M", "-nodefaults"])
        .args(["-no-user-config", "-display", "none", "-serial", "none", "-debugcon", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel"])
        .arg(image())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pathvm-agent ready (pvh)"),
        "stdout: {text}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // isa-debug-exit turns the agent's exit(0) into status 1.
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn spawn_benchmark_reports_pooled_cold_and_memory_fields() {
    if !require(&[Need::Kvm]) {
        return;
    }
    let out = std::process::Command::new(pathvm_bin())
        .args(["bench", "spawn", "-n", "3", "--json", "--image"])
        .arg(image())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for field in ["spawn_p50_us", "spawn_p99_us", "cold_spawn_p50_us", "rss_kib_per_vm"] {
        assert!(report[field].as_f64().is_some_and(|v| v > 0.0), "{field} missing or zero: {report}");
    }
    assert!(report["spawn_p50_us"].as_f64() <= report["spawn_p99_us"].as_f64());
    assert_eq!(report["samples"], 3);
}

/// A prepared shell's warm-up pass runs the agent once before any request
/// (vmm::warm): afterwards guest memory must hold the image exactly as
/// loaded, and the shell must still boot a request's agent from its entry.
#[test]
fn a_warmed_shell_holds_the_image_as_loaded_and_boots_it() {
    use vm_memory::{Bytes, GuestAddress};
    use vmm::builder::{finish_vm, prepare_shell, ConsoleConfig, VmConfig};
    if !require(&[Need::Kvm]) {
        return;
    }
    let kvm = vmm::kvm::KvmContext::open().unwrap();
    let agent = vmm::loader::AgentImage::open(&image()).unwrap();
    let warm = prepare_shell(&kvm, &agent, 64, Some(vmm::warm::DEFAULT_HEAP_KIB)).expect("warmed shell");
    let cold = prepare_shell(&kvm, &agent, 64, None).unwrap();
    // The image, its tables and the heap the pass touched, beyond it too;
    // the boot-parameter page is rewritten by every VM's build.
    let span = (agent.end() + u64::from(vmm::warm::DEFAULT_HEAP_KIB) * 1024 + (1 << 20)) as usize;
    let read = |shell: &vmm::builder::VmShell| {
        let mut b = vec![0u8; span];
        shell.memory().read_slice(&mut b, GuestAddress(0)).unwrap();
        let p = guest_agent::boot::BOOT_PARAMS_ADDR as usize;
        b[p..p + 4096].fill(0);
        b
    };
    let (w, c) = (read(&warm), read(&cold));
    let first_diff = w.iter().zip(&c).position(|(a, b)| a != b);
    let diffs: Vec<_> = w
        .iter()
        .zip(&c)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("{i:#x}:{b:#x}->{a:#x}"))
        .take(20)
        .collect();
    assert_eq!(first_diff, None, "the warm-up pass changed guest memory: {diffs:?}");

    let cfg =
        VmConfig { console: Some(ConsoleConfig::Sink), guest_log: vmm::vcpu::GuestLog::Discard, ..Default::default() };
    let mut vm = finish_vm(&kvm, warm, cfg).unwrap().start().unwrap();
    vm.wait_ready(TIMEOUT).expect("the warmed shell's agent signals ready");
    vm.stop();
}
