//! Talking to the VMM: port I/O, logging, parking, exit.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use guest_agent::ports::{self, LogLine, LOG_LINE_MAX};

/// Set once at boot when started by QEMU's PVH entry: no pathvm ports then,
/// logs go a byte at a time to the debugcon port.
static PVH_MODE: AtomicBool = AtomicBool::new(false);

pub fn set_pvh_mode() {
    PVH_MODE.store(true, Ordering::Relaxed);
}

fn outl(port: u16, v: u32) {
    // SAFETY: port I/O has no memory effects in the guest; the TSS I/O
    // bitmap allows every port at CPL3 and the VMM handles the exit.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags)) }
}

fn outb(port: u16, v: u8) {
    // SAFETY: as in `outl`.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) }
}

/// Ends the VM with `status`.
pub fn exit(status: u32) -> ! {
    loop {
        outl(ports::EXIT, status);
    }
}

/// Tells the VMM the agent is serving.
pub fn ready() {
    if !PVH_MODE.load(Ordering::Relaxed) {
        outl(ports::READY, 0);
    }
}

/// Tells the VMM whether the request's stream is up or refused (a
/// `ports::STREAM_*` value); the VMM answers the app before this returns.
pub fn report_stream(value: u32) {
    if !PVH_MODE.load(Ordering::Relaxed) {
        outl(ports::STREAM, value);
    }
}

/// Parks the vCPU until a device signals or `timeout_us` passes.
pub fn wait(timeout_us: u32) {
    if !PVH_MODE.load(Ordering::Relaxed) {
        outl(ports::WAIT, timeout_us);
    }
}

/// The one line buffer; the agent is single-threaded and never re-enters
/// logging (the panic handler takes over the buffer when it runs).
static mut LINE: LogLine = LogLine { len: 0, bytes: [0; LOG_LINE_MAX] };

struct LineWriter;

impl LineWriter {
    fn flush(&mut self) {
        // SAFETY: single-threaded guest, no interrupts: nothing else holds
        // a reference to LINE while this runs.
        let line = unsafe { &mut *core::ptr::addr_of_mut!(LINE) };
        if PVH_MODE.load(Ordering::Relaxed) {
            for &b in &line.bytes[..line.len as usize] {
                outb(ports::LOG_BYTE, b);
            }
            outb(ports::LOG_BYTE, b'\n');
        } else {
            outl(ports::LOG_LINE, line as *const LogLine as u64 as u32);
        }
        line.len = 0;
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.flush();
                continue;
            }
            // SAFETY: as in `flush`.
            let line = unsafe { &mut *core::ptr::addr_of_mut!(LINE) };
            if line.len as usize == LOG_LINE_MAX {
                self.flush();
            }
            // SAFETY: as in `flush`.
            let line = unsafe { &mut *core::ptr::addr_of_mut!(LINE) };
            line.bytes[line.len as usize] = b;
            line.len += 1;
        }
        Ok(())
    }
}

/// Writes one formatted log line.
pub fn log_fmt(args: fmt::Arguments<'_>) {
    let mut w = LineWriter;
    let _ = w.write_fmt(args);
    let _ = w.write_str("\n");
}

/// Logs a line through the VMM (one exit per line).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::io::log_fmt(format_args!($($arg)*)) };
}
