//! The guest's batched register accesses (`guest_agent::virtio::batch`):
//! one exit performs a list of 32-bit virtio-mmio accesses through the
//! same [`MmioBus`] as single exits do, so a batch can do nothing a guest
//! could not do one access at a time, only without an exit per access.
//!
//! The list is the guest's, so it is read like any guest input: at most
//! [`MAX_BATCH`] entries (a longer list is refused whole), each one 4-byte
//! access to a device window; the batch stops at the first entry that is
//! not, and the guest learns how many were done.

use guest_agent::virtio::batch::{ENTRY_LEN, HEADER_LEN, MAX_BATCH, OP_READ, OP_WRITE};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::MmioBus;

/// Performs the batch whose list is at guest-physical `list` and writes the
/// number of accesses done into its header; returns that number (`None` if
/// the header itself could not be read or written).
pub fn run(bus: &mut MmioBus, mem: &GuestMemoryMmap, list: u64) -> Option<u32> {
    let mut header = [0u8; HEADER_LEN];
    mem.read_slice(&mut header, GuestAddress(list)).ok()?;
    let count = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut done = 0u32;
    if count <= MAX_BATCH {
        for i in 0..count {
            let at = GuestAddress(list.checked_add((HEADER_LEN + i * ENTRY_LEN) as u64)?);
            if !access(bus, mem, at) {
                break;
            }
            done += 1;
        }
    }
    mem.write_slice(&done.to_le_bytes(), GuestAddress(list + 4)).ok()?;
    Some(done)
}

/// One entry; false if it is not a valid access to a device.
fn access(bus: &mut MmioBus, mem: &GuestMemoryMmap, at: GuestAddress) -> bool {
    let mut e = [0u8; ENTRY_LEN];
    if mem.read_slice(&mut e, at).is_err() {
        return false;
    }
    let addr = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
    let op = u32::from_le_bytes(e[8..12].try_into().unwrap_or_default());
    let mut value = [e[12], e[13], e[14], e[15]];
    match op {
        OP_READ => {
            if !bus.read(addr, &mut value) {
                return false;
            }
            at.checked_add(12).is_some_and(|v| mem.write_slice(&value, v).is_ok())
        }
        OP_WRITE => bus.write(addr, &value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::console::{Console, ConsoleBackend};
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::Interrupt;
    use guest_agent::virtio::{reg, MMIO_MAGIC};
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EventFd;

    const WINDOW: u64 = 0xd000_0000;
    const LIST: u64 = 0x1000;

    fn setup() -> (MmioBus, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let irq = Interrupt::new(&wake).unwrap();
        let console = Console::new(ConsoleBackend::sink(), irq.clone()).unwrap();
        let mut bus = MmioBus::default();
        bus.insert(WINDOW, 0x1000, MmioTransport::new(Arc::new(Mutex::new(console)), mem.clone(), irq));
        (bus, mem)
    }

    fn put(mem: &GuestMemoryMmap, entries: &[(u64, u32, u32)], count: u32) {
        mem.write_slice(&count.to_le_bytes(), GuestAddress(LIST)).unwrap();
        for (i, (addr, op, value)) in entries.iter().enumerate() {
            let at = LIST + (HEADER_LEN + i * ENTRY_LEN) as u64;
            mem.write_slice(&addr.to_le_bytes(), GuestAddress(at)).unwrap();
            mem.write_slice(&op.to_le_bytes(), GuestAddress(at + 8)).unwrap();
            mem.write_slice(&value.to_le_bytes(), GuestAddress(at + 12)).unwrap();
        }
    }

    fn value(mem: &GuestMemoryMmap, i: usize) -> u32 {
        mem.read_obj(GuestAddress(LIST + (HEADER_LEN + i * ENTRY_LEN + 12) as u64)).unwrap()
    }

    #[test]
    fn reads_and_writes_go_through_the_device_and_reads_come_back() {
        let (mut bus, mem) = setup();
        put(
            &mem,
            &[
                (WINDOW + reg::MAGIC, OP_READ, 0),
                (WINDOW + reg::STATUS, OP_WRITE, 1),
                (WINDOW + reg::STATUS, OP_READ, 0),
            ],
            3,
        );
        assert_eq!(run(&mut bus, &mem, LIST), Some(3));
        assert_eq!(value(&mem, 0), MMIO_MAGIC);
        assert_eq!(value(&mem, 2), 1, "the write reached the device's status");
        assert_eq!(mem.read_obj::<u32>(GuestAddress(LIST + 4)).unwrap(), 3);
    }

    #[test]
    fn a_batch_stops_at_an_access_to_no_device_or_an_unknown_op() {
        let (mut bus, mem) = setup();
        put(&mem, &[(WINDOW + reg::MAGIC, OP_READ, 0), (0x5000, OP_READ, 0), (WINDOW + reg::MAGIC, OP_READ, 0)], 3);
        assert_eq!(run(&mut bus, &mem, LIST), Some(1));
        put(&mem, &[(WINDOW + reg::MAGIC, 7, 0)], 1);
        assert_eq!(run(&mut bus, &mem, LIST), Some(0));
    }

    #[test]
    fn an_overlong_or_out_of_memory_list_does_nothing() {
        let (mut bus, mem) = setup();
        put(&mem, &[(WINDOW + reg::STATUS, OP_WRITE, 1)], MAX_BATCH as u32 + 1);
        assert_eq!(run(&mut bus, &mem, LIST), Some(0));
        put(&mem, &[], 0);
        assert_eq!(run(&mut bus, &mem, 0xfffc), None, "header runs off the end of memory");
        assert_eq!(run(&mut bus, &mem, u64::MAX - 3), None);
        // Entries past the end of memory stop the batch, nothing panics.
        mem.write_slice(&5u32.to_le_bytes(), GuestAddress(0xfff0)).unwrap();
        assert_eq!(run(&mut bus, &mem, 0xfff0), Some(0));
    }
}
