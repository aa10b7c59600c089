//! Threads started and confined before their work is known.
//!
//! Starting a VM's two threads (vCPU and device) costs a thread creation,
//! a seccomp filter install and the handshake that confirms it, each; on
//! the request path that was ≈ 0.3 ms of a spawn. A prepared shell holds
//! its two [`Worker`]s already confined, so a request's VM only hands them
//! their work.

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

type Job = Box<dyn FnOnce() + Send>;

/// A confined thread that runs the jobs it is handed, in order, until it
/// is dropped.
pub struct Worker {
    jobs: Option<SyncSender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a thread named `name`, moves it to the normal scheduling
    /// class (a pool's refill thread runs as SCHED_IDLE, and a thread
    /// inherits its creator's class) and confines it as a `kind` thread
    /// before it can run any job.
    pub fn start(name: &str, kind: ThreadKind) -> Result<Self, WorkerError> {
        let (jobs, queue) = sync_channel::<Job>(1);
        let (confined_tx, confined_rx) = sync_channel(1);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .stack_size(256 * 1024)
            .spawn(move || {
                normal_class();
                let confined = seccomp::confine(kind);
                let ok = confined.is_ok();
                let _ = confined_tx.send(confined);
                if !ok {
                    return;
                }
                while let Ok(job) = queue.recv() {
                    job();
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

    /// Runs `f` on the worker; its result arrives on the returned channel,
    /// which disconnects without one if `f` panicked.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Receiver<R> {
        let (tx, rx) = sync_channel(1);
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Box::new(move || {
                let _ = tx.send(f());
            }));
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

/// Leaves SCHED_IDLE for the normal class (no-op in any other class).
fn normal_class() {
    // SAFETY: pid 0 is the calling thread; no memory is passed.
    if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_IDLE {
        return;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) } != 0 {
        tracing::warn!(
            "a VM thread stays in SCHED_IDLE (its VM will run only on idle CPUs): {}",
            std::io::Error::last_os_error()
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

    #[test]
    fn a_job_that_panics_disconnects_its_result() {
        let w = Worker::start("test-worker", ThreadKind::Device).unwrap();
        let r = w.run(|| -> u8 { panic!("job failed") });
        assert!(r.recv().is_err());
    }
}
