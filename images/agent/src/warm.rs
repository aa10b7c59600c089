//! The warm-up pass a prepared VM shell runs before any request
//! ([`Role::Warm`](guest_agent::boot::Role::Warm)).
//!
//! Under nested virtualisation every page a fresh VM touches first costs a
//! fault into the hypervisor; a request's boot touches the image and the
//! start of the heap. Touching them once ahead, in the shell, moves those
//! faults off the request's path. Each byte is written back as read, so
//! the memory a request's agent boots from is the image as loaded: the
//! pass leaves no state behind but its own stack frames, which no code
//! reads before writing.

use guest_agent::boot::{BootParams, WarmArgs};
use guest_agent::ports;

use crate::io;

extern "C" {
    static __image_start: u8;
}

const PAGE: usize = 4096;

/// Touches the image and `args.heap_kib` KiB above it, then exits 0.
pub fn run(params: &BootParams, heap_end: usize) -> ! {
    let Some(args) = WarmArgs::decode(params.args()) else {
        io::exit(ports::EXIT_BAD_BOOT);
    };
    let start = core::ptr::addr_of!(__image_start) as usize;
    let end = (crate::image_end() + args.heap_kib as usize * 1024).min(heap_end);
    let mut page = start & !(PAGE - 1);
    while page < end {
        let p = page as *mut u8;
        // SAFETY: `p` lies in the image or the RAM above it up to the heap
        // end the boot parameters give; nothing else runs, and the byte is
        // written back with the value just read.
        unsafe { core::ptr::write_volatile(p, core::ptr::read_volatile(p)) };
        page += PAGE;
    }
    io::exit(0)
}
