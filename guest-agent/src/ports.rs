//! The port-I/O ABI between the agent and the VMM.
//!
//! Every `out` is a VM exit (≈ 58 µs on the project's nested KVM), so the
//! ABI is chosen to need few of them: a log line is one exit (the port takes
//! the guest-physical address of a [`LogLine`]), and an idle agent parks with
//! one exit on [`WAIT`] instead of spinning. [`LOG_BYTE`] and [`EXIT`] match
//! QEMU's `debugcon` and `isa-debug-exit`, so the same image reports under
//! QEMU's microvm machine.

/// One byte of log output per write; QEMU's `-debugcon` default port.
pub const LOG_BYTE: u16 = 0xe9;
/// Exit request; the 32-bit value written is the guest's exit status.
/// QEMU's `isa-debug-exit` port, where the status becomes `(v << 1) | 1`.
pub const EXIT: u16 = 0xf4;
/// A 32-bit write of the guest-physical address of a [`LogLine`].
pub const LOG_LINE: u16 = 0x500;
/// A 32-bit write of a timeout in microseconds: park the vCPU until a
/// device has news for the guest or the timeout passes.
pub const WAIT: u16 = 0x504;
/// A write of any value: the agent has finished booting and is serving.
pub const READY: u16 = 0x508;
/// A 32-bit write from a request VM: its stream to the service is up
/// ([`STREAM_UP`]) or refused ([`STREAM_REFUSED`]). The VMM answers the
/// app (the SOCKS5 reply is the host's to write) before the vCPU runs on,
/// so the answer precedes any stream byte on the app's connection.
pub const STREAM: u16 = 0x50c;
/// [`STREAM`] value: the service is connected.
pub const STREAM_UP: u32 = 0;
/// [`STREAM`] value: refused (service down, no route).
pub const STREAM_REFUSED: u32 = 1;
/// [`STREAM`] value: refused before any packet left, because no onion
/// circuit reaches the destination while avoiding what the app avoids.
pub const STREAM_NO_CIRCUIT: u32 = 2;
/// [`STREAM`] value: refused by the destination's policy (an exit's, on
/// the address a name resolved to).
pub const STREAM_NOT_ALLOWED: u32 = 3;

/// Largest log line the VMM accepts; longer lines are cut.
pub const LOG_LINE_MAX: usize = 4096;

/// Exit status the agent uses after a panic.
pub const EXIT_PANIC: u32 = 101;
/// Exit status for unusable boot parameters.
pub const EXIT_BAD_BOOT: u32 = 102;
/// Exit status when a device could not be brought up.
pub const EXIT_DEVICE: u32 = 103;

/// The in-memory form of one log line handed to [`LOG_LINE`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LogLine {
    /// Number of valid bytes in `bytes`.
    pub len: u32,
    /// UTF-8 text, without the trailing newline.
    pub bytes: [u8; LOG_LINE_MAX],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_layout_is_len_then_bytes() {
        assert_eq!(core::mem::offset_of!(LogLine, bytes), 4);
        assert_eq!(core::mem::size_of::<LogLine>(), 4 + LOG_LINE_MAX);
    }

    #[test]
    fn ports_do_not_overlap() {
        let ports = [LOG_BYTE, EXIT, LOG_LINE, WAIT, READY, STREAM];
        for (i, a) in ports.iter().enumerate() {
            for b in &ports[i + 1..] {
                assert!(a.abs_diff(*b) >= 4, "ports {a:#x} and {b:#x} overlap a 32-bit access");
            }
        }
    }
}
