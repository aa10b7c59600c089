//! Things prepared before a request needs them, so its path skips what
//! does not depend on it (DESIGN.md: prepare before the request).
//!
//! [`Prepared`] keeps a few of any such thing ready, refilled by a
//! background thread. [`ShellPool`] is the VMM's: creating the KVM VM, its
//! memory and its vCPU is ≈ 0.6 ms of a spawn and the same for every
//! request, so a spawn takes a prepared shell and only adds the request's
//! devices and boot parameters. An empty pool falls back to preparing
//! inline; the caller never waits for the refill.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::builder::{prepare_shell, BuildError, VmShell};
use crate::kvm::KvmContext;
use crate::loader::AgentImage;

/// How long the refill waits after an item was taken while others remain:
/// the request that took it is booting and connecting then, and preparing
/// beside it on a two-core host slows it by more than the item saves
/// (measured on the edge: tc steering 0.15 → 0.6-1 ms).
const REFILL_DELAY: Duration = Duration::from_millis(15);
/// Pause after a failed preparation before the next try.
const RETRY_DELAY: Duration = Duration::from_millis(100);

struct Shared<T> {
    state: Mutex<PoolState<T>>,
    changed: Condvar,
    target: usize,
}

struct PoolState<T> {
    ready: VecDeque<T>,
    stopping: bool,
}

/// Keeps `target` items made by a function, refilled on a thread.
pub struct Prepared<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    filler: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prepared<T> {
    /// Starts a pool and its refill thread (named `thread`); `make` says
    /// why it failed as a line for the log.
    pub fn new(
        target: usize,
        thread: &str,
        make: impl Fn() -> Result<T, String> + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(PoolState { ready: VecDeque::new(), stopping: false }),
            changed: Condvar::new(),
            target: target.max(1),
        });
        let s = shared.clone();
        let name = thread.to_string();
        let filler = std::thread::Builder::new().name(name.clone()).spawn(move || refill(&s, &name, make))?;
        Ok(Self { shared, filler: Some(filler) })
    }

    /// A prepared item, if one is ready.
    pub fn take(&self) -> Option<T> {
        let item = self.lock().ready.pop_front();
        self.shared.changed.notify_all();
        item
    }

    /// Waits until the pool holds its target number of items; false on
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

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState<T>> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Puts the calling thread in the SCHED_IDLE class: it runs only on a CPU
/// nothing else wants, so preparing never delays a request in flight.
fn run_when_idle(name: &str) {
    if let Err(e) = crate::worker::set_class(libc::SCHED_IDLE) {
        tracing::debug!("{name}: stays in the normal scheduling class: {e}");
    }
}

fn refill<T>(s: &Shared<T>, name: &str, make: impl Fn() -> Result<T, String>) {
    run_when_idle(name);
    loop {
        {
            let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
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
        match make() {
            Ok(item) => {
                s.state.lock().unwrap_or_else(|p| p.into_inner()).ready.push_back(item);
                s.changed.notify_all();
            }
            Err(e) => {
                tracing::warn!("{name}: cannot prepare: {e}");
                std::thread::sleep(RETRY_DELAY);
            }
        }
    }
}

impl<T: Send + 'static> Drop for Prepared<T> {
    fn drop(&mut self) {
        self.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(f) = self.filler.take() {
            let _ = f.join();
        }
    }
}

/// Keeps `target` prepared shells of one image and memory size, each
/// warmed ([`crate::warm`]) over `warm_heap_kib` KiB of heap.
pub struct ShellPool {
    shells: Prepared<VmShell>,
    kvm: Arc<KvmContext>,
    image: Arc<AgentImage>,
    mem_mib: u64,
}

impl ShellPool {
    /// Starts a pool and its refill thread.
    pub fn new(
        kvm: Arc<KvmContext>,
        image: Arc<AgentImage>,
        mem_mib: u64,
        warm_heap_kib: u32,
        target: usize,
    ) -> std::io::Result<Self> {
        let (k, i) = (kvm.clone(), image.clone());
        let shells = Prepared::new(target, "pathvm-pool", move || {
            prepare_shell(&k, &i, mem_mib, Some(warm_heap_kib)).map_err(|e| format!("a VM shell: {e}"))
        })?;
        Ok(Self { shells, kvm, image, mem_mib })
    }

    /// A prepared shell: from the pool, or made now if the pool is empty
    /// (unwarmed: a warm-up pass on the request's path costs what it saves).
    pub fn take(&self) -> Result<VmShell, BuildError> {
        match self.shells.take() {
            Some(s) => Ok(s),
            None => prepare_shell(&self.kvm, &self.image, self.mem_mib, None),
        }
    }

    /// Waits until the pool holds its target number of shells; false on
    /// timeout.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        self.shells.wait_full(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_pool_fills_to_its_target_and_refills_what_is_taken() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let pool = Prepared::new(2, "test-pool", move || Ok(m.fetch_add(1, Ordering::SeqCst))).unwrap();
        assert!(pool.wait_full(Duration::from_secs(5)));
        assert_eq!(pool.take(), Some(0));
        assert!(pool.wait_full(Duration::from_secs(5)));
        assert_eq!(made.load(Ordering::SeqCst), 3);
        assert_eq!((pool.take(), pool.take()), (Some(1), Some(2)));
    }

    #[test]
    fn a_failing_maker_leaves_the_pool_empty_and_take_says_none() {
        let pool: Prepared<u8> = Prepared::new(1, "test-pool", || Err("no".into())).unwrap();
        assert!(!pool.wait_full(Duration::from_millis(50)));
        assert_eq!(pool.take(), None);
    }
}
