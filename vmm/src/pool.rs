//! Prepared VM shells, so a request's spawn skips what every VM shares.
//!
//! Creating the KVM VM, its memory and its vCPU is ≈ 0.6 ms of a spawn and
//! does not depend on the request. A [`ShellPool`] keeps a few such shells
//! ready, refilled by a background thread; a spawn takes one and only adds
//! the request's devices and boot parameters (DESIGN.md: prepare before the
//! request). An empty pool falls back to preparing a shell inline.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::builder::{prepare_shell, BuildError, VmShell};
use crate::kvm::KvmContext;
use crate::loader::AgentImage;

struct Shared {
    shells: Mutex<PoolState>,
    changed: Condvar,
    kvm: Arc<KvmContext>,
    image: Arc<AgentImage>,
    mem_mib: u64,
    target: usize,
}

struct PoolState {
    ready: VecDeque<VmShell>,
    stopping: bool,
}

/// Keeps `target` prepared shells of one image and memory size.
pub struct ShellPool {
    shared: Arc<Shared>,
    filler: Option<JoinHandle<()>>,
}

impl ShellPool {
    /// Starts a pool and its refill thread.
    pub fn new(kvm: Arc<KvmContext>, image: Arc<AgentImage>, mem_mib: u64, target: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            shells: Mutex::new(PoolState { ready: VecDeque::new(), stopping: false }),
            changed: Condvar::new(),
            kvm,
            image,
            mem_mib,
            target: target.max(1),
        });
        let s = shared.clone();
        let filler = std::thread::Builder::new().name("pathvm-pool".into()).spawn(move || refill(&s))?;
        Ok(Self { shared, filler: Some(filler) })
    }

    /// A prepared shell: from the pool, or made now if the pool is empty.
    pub fn take(&self) -> Result<VmShell, BuildError> {
        let shell = self.lock().ready.pop_front();
        self.shared.changed.notify_all();
        match shell {
            Some(s) => Ok(s),
            None => prepare_shell(&self.shared.kvm, &self.shared.image, self.shared.mem_mib),
        }
    }

    /// Waits until the pool holds its target number of shells; false on
    /// timeout.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut st = self.lock();
        while st.ready.len() < self.shared.target {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.changed.wait_timeout(st, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.shared.shells.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long the refill waits after a shell was taken while others remain:
/// the request that took it is booting and connecting then, and a shell
/// prepared beside it on a two-core host slows it by more than the shell
/// saves (measured: tc steering 0.15 → 0.6-1 ms).
const REFILL_DELAY: Duration = Duration::from_millis(15);

fn refill(s: &Shared) {
    loop {
        {
            let mut st = s.shells.lock().unwrap_or_else(|p| p.into_inner());
            while !st.stopping && st.ready.len() >= s.target {
                st = s.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if !st.stopping && !st.ready.is_empty() {
                st = s.changed.wait_timeout(st, REFILL_DELAY).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            }
            if st.stopping {
                return;
            }
        }
        match prepare_shell(&s.kvm, &s.image, s.mem_mib) {
            Ok(shell) => {
                s.shells.lock().unwrap_or_else(|p| p.into_inner()).ready.push_back(shell);
                s.changed.notify_all();
            }
            Err(e) => {
                tracing::warn!("shell pool: cannot prepare a VM: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for ShellPool {
    fn drop(&mut self) {
        self.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(f) = self.filler.take() {
            let _ = f.join();
        }
    }
}
