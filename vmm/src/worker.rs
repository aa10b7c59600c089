//! Threads started and confined before their work is known.
//!
//! Starting a VM's two threads (vCPU and device) costs a thread creation,
//! a seccomp filter install and the handshake that confirms it, each; on
//! the request path that was ≈ 0.3 ms of a spawn. A prepared shell holds
//! its two [`Worker`]s already confined, so a request's VM only hands them
//! their work. A worker started by a pool's refill thread (SCHED_IDLE)
//! prepares in that class (the shell's warm-up pass) but waits for its
//! VM in the normal class: a thread woken in SCHED_IDLE waits for a CPU
//! nothing else wants, which on the request path cost 0.4 ms of a boot.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use thiserror::Error;

use crate::seccomp::{self, SeccompError, ThreadKind};

/// Why a worker could not be started.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The thread could not be created.
    #[error("cannot start a VM thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The thread could not be confined; it ran nothing.
    #[error(transparent)]
    Sandbox(#[from] SeccompError),
    /// The thread ended before it reported its confinement.
    #[error("a VM thread ended at its start")]
    Ended,
}

struct Job {
    work: Box<dyn FnOnce() + Send>,
    /// Preparation: in SCHED_IDLE if the thread was started in it.
    prepare: bool,
}

/// A confined thread that runs the jobs it is handed, in order, until it
/// is dropped.
pub struct Worker {
    jobs: Option<SyncSender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a thread named `name` and confines it as a `kind` thread
    /// before it can run any job; it waits for jobs in the normal class.
    pub fn start(name: &str, kind: ThreadKind) -> Result<Self, WorkerError> {
        let (jobs, queue) = sync_channel::<Job>(1);
        let (confined_tx, confined_rx) = sync_channel(1);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .stack_size(256 * 1024)
            .spawn(move || {
                // SAFETY: pid 0 is the calling thread; no memory is passed.
                let started_idle = unsafe { libc::sched_getscheduler(0) } == libc::SCHED_IDLE;
                let confined = seccomp::confine(kind);
                let ok = confined.is_ok();
                let _ = confined_tx.send(confined);
                if !ok {
                    return;
                }
                if started_idle {
                    vm_thread_class(libc::SCHED_OTHER);
                }
                while let Ok(job) = queue.recv() {
                    let idle = job.prepare && started_idle;
                    if idle {
                        vm_thread_class(libc::SCHED_IDLE);
                    }
                    (job.work)();
                    if idle {
                        vm_thread_class(libc::SCHED_OTHER);
                    }
                }
            })
            .map_err(WorkerError::Spawn)?;
        let mut worker = Self { jobs: Some(jobs), handle: Some(handle) };
        match confined_rx.recv() {
            Ok(Ok(())) => Ok(worker),
            Ok(Err(e)) => {
                worker.finish();
                Err(e.into())
            }
            Err(_) => {
                worker.finish();
                Err(WorkerError::Ended)
            }
        }
    }

    /// Runs `f`, a VM's own work, on the worker; its result arrives on the
    /// returned channel, which disconnects without one if `f` panicked. One
    /// job at a time: a second waits until the first has been taken.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Receiver<R> {
        self.send(f, false)
    }

    /// [`Worker::run`] for preparation: in SCHED_IDLE if the thread was
    /// started in it (under a pool), so it never takes a CPU from a request.
    pub fn prepare<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Receiver<R> {
        self.send(f, true)
    }

    fn send<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static, prepare: bool) -> Receiver<R> {
        let (tx, rx) = sync_channel(1);
        if let Some(jobs) = &self.jobs {
            let work = Box::new(move || {
                let _ = tx.send(f());
            });
            let _ = jobs.send(Job { work, prepare });
        }
        rx
    }

    /// Ends the thread once its jobs are done, and waits for it.
    pub fn finish(&mut self) {
        self.jobs.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Moves the calling thread to scheduling class `policy` (SCHED_OTHER or
/// SCHED_IDLE, priority 0).
pub(crate) fn set_class(policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// [`set_class`] for a VM's thread, which says when it fails.
fn vm_thread_class(policy: libc::c_int) {
    if let Err(e) = set_class(policy) {
        tracing::warn!(
            "a VM thread cannot change its scheduling class to {policy} (a VM's thread left in SCHED_IDLE runs only on idle CPUs): {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_runs_its_jobs_in_order_and_returns_their_results() {
        let w = Worker::start("test-worker", ThreadKind::Device).unwrap();
        let a = w.run(|| 1);
        let b = w.run(|| std::thread::current().name().map(str::to_owned));
        assert_eq!(a.recv().unwrap(), 1);
        assert_eq!(b.recv().unwrap().as_deref(), Some("test-worker"));
    }

    /// A pool prepares in SCHED_IDLE; the VM's own work must not run
    /// there (it would run only on otherwise idle CPUs).
    #[test]
    fn a_worker_made_by_an_idle_thread_prepares_idle_and_works_in_the_normal_class() {
        let class = || {
            // SAFETY: pid 0 is the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        };
        let w = std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; `param` outlives the call.
            assert_eq!(unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) }, 0);
            Worker::start("test-worker", ThreadKind::Vcpu).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(w.prepare(class).recv().unwrap(), libc::SCHED_IDLE);
        assert_eq!(w.run(class).recv().unwrap(), libc::SCHED_OTHER);
        assert_eq!(w.prepare(class).recv().unwrap(), libc::SCHED_IDLE);
    }

    #[test]
    fn a_job_that_panics_disconnects_its_result() {
        let w = Worker::start("test-worker", ThreadKind::Device).unwrap();
        let r = w.run(|| -> u8 { panic!("job failed") });
        assert!(r.recv().is_err());
    }
}
