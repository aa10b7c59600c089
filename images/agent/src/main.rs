//! pathvm's guest agent image: a freestanding unikernel that runs at CPL3.
//!
//! Boot: `_start` (start.rs) sets a stack and calls [`agent_main`] with the
//! boot-parameter address. The agent claims its heap, brings up the devices
//! its role needs, signals ready, and serves until done or stopped.
#![no_std]
#![no_main]

extern crate alloc;

mod clock;
mod heap;
mod io;
mod mem;
mod node;
mod roles;
mod start;
mod warm;

use guest_agent::boot::BootParams;
use guest_agent::ports;

extern "C" {
    static __image_end: u8;
}

/// Lowest heap address: the end of the loaded image (page aligned).
fn image_end() -> usize {
    core::ptr::addr_of!(__image_end) as usize
}

/// Largest address the agent's page tables cover (4 GiB identity map),
/// and where the VMM's MMIO windows begin.
const MAX_RAM: u64 = 0xc000_0000;

#[no_mangle]
extern "C" fn agent_main(params_addr: u64) -> ! {
    if params_addr == 0 {
        pvh_main();
    }
    let boot = params_addr as *mut BootParams;
    // SAFETY: the VMM placed an initialised BootParams at this address
    // before starting the vCPU, and nothing else refers to it: the agent
    // copies it once, then wipes the original's role arguments (a node's
    // boot seed and keys) so that no later reader of guest memory finds
    // them there; the copy is wiped as soon as it is decoded.
    let mut params: BootParams = unsafe { core::ptr::read(boot) };
    // SAFETY: as above; the pointer is valid, aligned and unaliased.
    unsafe { (*boot).wipe_args() };
    let params = &mut params;
    let role = match params.validate() {
        Ok(r) => r,
        Err(e) => {
            log!("agent: unusable boot parameters: {e:?}");
            io::exit(ports::EXIT_BAD_BOOT);
        }
    };
    let Some(ram) =
        params.mem_regions().iter().find(|r| r.base <= image_end() as u64 && image_end() as u64 <= r.base + r.size)
    else {
        log!("agent: no RAM region holds the image end {:#x}", image_end());
        io::exit(ports::EXIT_BAD_BOOT);
    };
    let heap_end = (ram.base + ram.size).min(MAX_RAM) as usize;
    // Before anything writes a static: the pass must leave the image as
    // loaded.
    if role == guest_agent::boot::Role::Warm {
        warm::run(params, heap_end);
    }
    clock::init(params.tsc_khz);
    // SAFETY: from the image end to the end of its RAM region nothing else
    // lives (the VMM puts its tables below 1 MiB, the image at 1 MiB).
    if !unsafe { heap::init(image_end(), heap_end - image_end()) } {
        log!("agent: heap region too small");
        io::exit(ports::EXIT_BAD_BOOT);
    }
    roles::run(role, params)
}

/// Under QEMU's PVH entry: prove the image boots, then leave.
fn pvh_main() -> ! {
    io::set_pvh_mode();
    log!("pathvm-agent ready (pvh)");
    io::exit(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    log!("agent panic: {info}");
    io::exit(ports::EXIT_PANIC)
}
