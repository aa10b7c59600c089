//! Process signal handlers, installed once: the daemons' and `pathvm
//! run`'s "stop cleanly" on SIGINT and SIGTERM.

/// Installs `handler` for SIGINT and SIGTERM. The handler must only do
/// what is async-signal-safe (store to an atomic, write an eventfd).
pub fn on_stop_signals(handler: extern "C" fn(libc::c_int)) {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler the caller vouches is async-signal-
        // safe; the sigaction struct is fully initialised (zeroed, the
        // handler and an empty mask set).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
