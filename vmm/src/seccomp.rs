//! Seccomp filters for the threads that face the guest, as Firecracker
//! confines its own: the vCPU thread (which runs guest code and decodes its
//! exits) and the device thread (which walks the guest's descriptor chains).
//!
//! Each thread installs its filter itself, at its start, before the guest
//! runs or its queues are first read; the rest of the process (the edge's
//! SOCKS parser, netlink, /proc) is not confined by them. A syscall off the
//! list fails with `EPERM` instead of killing the process: a compromised
//! thread still cannot open a file, make a socket, exec or ptrace, and a
//! list that missed a rare call costs one failed call, not every VM of the
//! host. `ioctl` on the vCPU thread is limited to the requests it makes
//! (`KVM_RUN`, the register reads of a crash report, and std's FIONBIO and
//! FIOCLEX); the device thread makes none.
//!
//! `PATHVM_NO_SECCOMP=1` leaves the threads unconfined (for strace and
//! debugging; never needed in use).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use thiserror::Error;

/// Why a thread could not be confined.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// The filter did not compile (a bug in the lists below).
    #[error("seccomp filter for the {thread} thread: {msg}")]
    Build {
        /// Which thread's.
        thread: &'static str,
        /// What seccompiler said.
        msg: String,
    },
    /// The kernel refused it (no seccomp support?).
    #[error("cannot install the {thread} thread's seccomp filter: {msg} (PATHVM_NO_SECCOMP=1 runs without)")]
    Install {
        /// Which thread's.
        thread: &'static str,
        /// What the kernel said.
        msg: String,
    },
}

/// Which thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// Runs `KVM_RUN` and handles the guest's exits.
    Vcpu,
    /// Moves bytes between the guest's queues and the host's fds.
    Device,
}

impl ThreadKind {
    fn name(self) -> &'static str {
        match self {
            Self::Vcpu => "vCPU",
            Self::Device => "device",
        }
    }
}

/// The KVM request numbers the vCPU thread issues (linux/kvm.h).
mod kvm_nr {
    #![allow(missing_docs)]
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr};

    const KVMIO: u32 = 0xAE;
    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
    ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
}
use kvm_nr::{KVM_GET_REGS, KVM_GET_SREGS, KVM_RUN};

/// What every such thread does besides its work: memory for its buffers,
/// locks, signals (the vCPU's kick), logging to stderr, and ending.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getscheduler,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Socket data: the console and vhost-user sockets, the app's socket
    // (its SOCKS reply, written on the vCPU thread).
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    // The SOCKS reply's socket is a duplicate (F_DUPFD_CLOEXEC).
    libc::SYS_fcntl,
];

/// The vCPU thread's own: parking on its wake eventfd, and its ioctls.
const VCPU: &[i64] = &[libc::SYS_ppoll, libc::SYS_poll, libc::SYS_tgkill];

/// The device thread's own: its event loop.
const DEVICE: &[i64] = &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait, libc::SYS_epoll_ctl];

fn build(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let err = |e: seccompiler::BackendError| SeccompError::Build { thread: kind.name(), msg: e.to_string() };
    let own = match kind {
        ThreadKind::Vcpu => VCPU,
        ThreadKind::Device => DEVICE,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON.iter().chain(own).map(|&s| (s, Vec::new())).collect();
    // A prepared thread runs its preparation in SCHED_IDLE and waits for
    // its VM in the normal class (crate::worker), and may do nothing else
    // with its scheduling: pid 0 (itself), SCHED_OTHER or SCHED_IDLE only.
    let class = |policy: libc::c_int| {
        SeccompRule::new(vec![
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 0)?,
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, policy as u64)?,
        ])
    };
    let classes = vec![class(libc::SCHED_OTHER).map_err(err)?, class(libc::SCHED_IDLE).map_err(err)?];
    rules.insert(libc::SYS_sched_setscheduler, classes);
    if kind == ThreadKind::Vcpu {
        let request = |v: u64| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)
                .and_then(|c| SeccompRule::new(vec![c]))
        };
        let allowed = [KVM_RUN(), KVM_GET_REGS(), KVM_GET_SREGS(), libc::FIONBIO, libc::FIOCLEX];
        let ioctls = allowed.iter().map(|&r| request(r)).collect::<Result<Vec<_>, _>>().map_err(err)?;
        rules.insert(libc::SYS_ioctl, ioctls);
    }
    let filter =
        SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, TargetArch::x86_64)
            .map_err(err)?;
    filter.try_into().map_err(err)
}

/// Confines the calling thread as a `kind` thread (a no-op with
/// `PATHVM_NO_SECCOMP=1`). The filters are compiled once per process.
pub fn confine(kind: ThreadKind) -> Result<(), SeccompError> {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    static PROGRAMS: OnceLock<Result<(BpfProgram, BpfProgram), String>> = OnceLock::new();
    if *DISABLED.get_or_init(|| std::env::var_os("PATHVM_NO_SECCOMP").is_some_and(|v| v == "1")) {
        return Ok(());
    }
    let programs = PROGRAMS.get_or_init(|| {
        Ok((build(ThreadKind::Vcpu).map_err(|e| e.to_string())?, build(ThreadKind::Device).map_err(|e| e.to_string())?))
    });
    let (vcpu, device) =
        programs.as_ref().map_err(|msg| SeccompError::Build { thread: kind.name(), msg: msg.clone() })?;
    let program = if kind == ThreadKind::Vcpu { vcpu } else { device };
    seccompiler::apply_filter(program).map_err(|e| SeccompError::Install { thread: kind.name(), msg: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn on_confined_thread<T: Send + 'static>(kind: ThreadKind, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            build(kind)
                .and_then(|p| {
                    seccompiler::apply_filter(&p)
                        .map_err(|e| SeccompError::Install { thread: kind.name(), msg: e.to_string() })
                })
                .expect("confined");
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_confined_thread_cannot_open_files_make_sockets_or_exec() {
        for kind in [ThreadKind::Vcpu, ThreadKind::Device] {
            let denied = on_confined_thread(kind, || {
                let open = std::fs::File::open("/etc/hostname").err().and_then(|e| e.raw_os_error());
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").err().and_then(|e| e.raw_os_error());
                let exec = std::process::Command::new("/bin/true").status().err().and_then(|e| e.raw_os_error());
                (open, sock, exec)
            });
            assert_eq!(denied, (Some(libc::EPERM), Some(libc::EPERM), Some(libc::EPERM)), "{kind:?}");
        }
    }

    #[test]
    fn a_confined_thread_still_does_its_work() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let evt = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let got = on_confined_thread(ThreadKind::Device, move || {
            use std::io::{Read, Write};
            (&a).write_all(b"ping").unwrap();
            evt.write(1).unwrap();
            let big = vec![7u8; 1 << 20]; // allocations still work
            let mut four = [0u8; 4];
            (&b).read_exact(&mut four).unwrap();
            (four, evt.read().unwrap(), big.len(), b.as_raw_fd() > 0)
        });
        assert_eq!(got, (*b"ping", 1, 1 << 20, true));
    }

    #[test]
    fn the_vcpu_thread_may_not_issue_other_ioctls() {
        let err = on_confined_thread(ThreadKind::Vcpu, || {
            // TIOCGWINSZ on stdin: harmless, and not on the list.
            let mut ws = [0u16; 4];
            // SAFETY: TIOCGWINSZ writes a winsize (4 u16) into `ws`.
            let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, ws.as_mut_ptr()) };
            (rc, std::io::Error::last_os_error().raw_os_error())
        });
        assert_eq!(err, (-1, Some(libc::EPERM)));
    }
}
