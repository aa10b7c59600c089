//! Moving bytes between virtio descriptor chains and host buffers.
//!
//! Descriptor chains come from the guest and are hostile: every address and
//! length is checked against guest memory by `vm-memory`, totals are capped,
//! and a chain that breaks a rule is refused with a [`ChainError`] for the
//! caller to count. The caller then returns the chain with length 0 and
//! carries on, as Firecracker does.

use std::ops::Deref;

use thiserror::Error;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// Why a chain was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChainError {
    /// A buffer lies (partly) outside guest memory.
    #[error("descriptor {addr:#x}+{len} lies outside guest memory")]
    OutsideMemory {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A transmit chain holds a device-writable buffer, or a receive chain a
    /// device-readable one.
    #[error("descriptor has the wrong direction for this queue")]
    WrongDirection,
    /// The chain carries more bytes than the device accepts.
    #[error("chain carries more than {max} bytes")]
    TooLong {
        /// The cap.
        max: usize,
    },
    /// The chain cannot hold the data to deliver.
    #[error("chain holds {have} bytes, {need} needed")]
    TooShort {
        /// Bytes to deliver.
        need: usize,
        /// Room in the chain.
        have: usize,
    },
}

/// Appends the device-readable buffers of `chain` to `out`, at most `max`
/// bytes in all. `out` is cleared first.
pub fn gather<M>(chain: DescriptorChain<M>, out: &mut Vec<u8>, max: usize) -> Result<(), ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    out.clear();
    let mem = chain.memory();
    for desc in chain.clone() {
        if desc.is_write_only() {
            return Err(ChainError::WrongDirection);
        }
        let len = desc.len() as usize;
        if out.len() + len > max {
            return Err(ChainError::TooLong { max });
        }
        let start = out.len();
        out.resize(start + len, 0);
        mem.read_slice(&mut out[start..], desc.addr())
            .map_err(|_| ChainError::OutsideMemory { addr: desc.addr().0, len: desc.len() })?;
    }
    Ok(())
}

/// Copies all of `data` into the device-writable buffers of `chain`, or
/// nothing if it does not fit (a frame must not be cut). Returns the number
/// of bytes written.
pub fn scatter<M>(chain: DescriptorChain<M>, data: &[u8]) -> Result<u32, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let (bufs, have) = writable_buffers(&chain, data.len())?;
    if have < data.len() {
        return Err(ChainError::TooShort { need: data.len(), have });
    }
    write_buffers(chain.memory(), &bufs, data)?;
    Ok(data.len() as u32)
}

/// Copies as much of `data` as the device-writable buffers of `chain` hold
/// (a byte stream may be cut anywhere). Returns the number of bytes written.
pub fn fill<M>(chain: DescriptorChain<M>, data: &[u8]) -> Result<usize, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let (bufs, have) = writable_buffers(&chain, data.len())?;
    let n = have.min(data.len());
    write_buffers(chain.memory(), &bufs, &data[..n])?;
    Ok(n)
}

/// The chain's writable buffers, each checked against guest memory, up to
/// the first `want` bytes of room; and the room they give.
fn writable_buffers<M>(
    chain: &DescriptorChain<M>,
    want: usize,
) -> Result<(Vec<(GuestAddress, usize)>, usize), ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let mut have = 0usize;
    let mut bufs = Vec::with_capacity(4);
    for desc in chain.clone() {
        if have >= want {
            break;
        }
        if !desc.is_write_only() {
            return Err(ChainError::WrongDirection);
        }
        if !mem.check_range(desc.addr(), desc.len() as usize, Permissions::Write) {
            return Err(ChainError::OutsideMemory { addr: desc.addr().0, len: desc.len() });
        }
        bufs.push((desc.addr(), desc.len() as usize));
        have += desc.len() as usize;
    }
    Ok((bufs, have))
}

fn write_buffers<G: GuestMemory + ?Sized>(
    mem: &G,
    bufs: &[(GuestAddress, usize)],
    data: &[u8],
) -> Result<(), ChainError> {
    let mut rest = data;
    for &(addr, len) in bufs {
        let n = len.min(rest.len());
        mem.write_slice(&rest[..n], addr).map_err(|_| ChainError::OutsideMemory { addr: addr.0, len: len as u32 })?;
        rest = &rest[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::GuestMemoryMmap;

    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// Builds a queue holding one chain of (addr, len, flags) descriptors.
    fn queue_with_chain(m: &GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> Queue {
        let mq = MockSplitQueue::new(m, 16);
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, f))| {
                let next = if i + 1 < descs.len() { (i + 1) as u16 } else { 0 };
                let flags = if i + 1 < descs.len() { f | F_NEXT } else { f };
                RawDescriptor::from(SplitDescriptor::new(a, l, flags, next))
            })
            .collect();
        mq.build_desc_chain(&raw).unwrap();
        mq.create_queue().unwrap()
    }

    #[test]
    fn gather_concatenates_readable_buffers() {
        let m = mem();
        m.write_slice(b"hello ", GuestAddress(0x1000)).unwrap();
        m.write_slice(b"world", GuestAddress(0x2000)).unwrap();
        let mut q = queue_with_chain(&m, &[(0x1000, 6, 0), (0x2000, 5, 0)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        let mut out = Vec::new();
        gather(chain, &mut out, 100).unwrap();
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn gather_refuses_buffer_outside_memory() {
        let m = mem();
        let mut q = queue_with_chain(&m, &[(0x20_0000, 64, 0)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        let err = gather(chain, &mut Vec::new(), 100).unwrap_err();
        assert_eq!(err, ChainError::OutsideMemory { addr: 0x20_0000, len: 64 });
    }

    #[test]
    fn gather_refuses_buffer_straddling_the_end_of_memory() {
        let m = mem();
        let mut q = queue_with_chain(&m, &[(0xf_fff0, 64, 0)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        assert!(matches!(gather(chain, &mut Vec::new(), 100), Err(ChainError::OutsideMemory { .. })));
    }

    #[test]
    fn gather_caps_total_length() {
        let m = mem();
        let mut q = queue_with_chain(&m, &[(0x1000, 60, 0), (0x2000, 60, 0)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        assert_eq!(gather(chain, &mut Vec::new(), 100), Err(ChainError::TooLong { max: 100 }));
    }

    #[test]
    fn gather_refuses_writable_buffer() {
        let m = mem();
        let mut q = queue_with_chain(&m, &[(0x1000, 8, F_WRITE)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        assert_eq!(gather(chain, &mut Vec::new(), 100), Err(ChainError::WrongDirection));
    }

    #[test]
    fn scatter_spreads_data_over_writable_buffers() {
        let m = mem();
        let mut q = queue_with_chain(&m, &[(0x1000, 4, F_WRITE), (0x2000, 100, F_WRITE)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        assert_eq!(scatter(chain, b"abcdefgh").unwrap(), 8);
        let mut a = [0u8; 4];
        let mut b = [0u8; 4];
        m.read_slice(&mut a, GuestAddress(0x1000)).unwrap();
        m.read_slice(&mut b, GuestAddress(0x2000)).unwrap();
        assert_eq!((&a, &b), (b"abcd", b"efgh"));
    }

    #[test]
    fn scatter_refuses_short_chain_without_writing() {
        let m = mem();
        let mut q = queue_with_chain(&m, &[(0x1000, 4, F_WRITE)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        assert_eq!(scatter(chain, b"abcdefgh"), Err(ChainError::TooShort { need: 8, have: 4 }));
        let mut a = [0u8; 4];
        m.read_slice(&mut a, GuestAddress(0x1000)).unwrap();
        assert_eq!(a, [0; 4]);
    }

    #[test]
    fn scatter_refuses_buffer_outside_memory() {
        let m = mem();
        let mut q = queue_with_chain(&m, &[(0xffff_0000, 4096, F_WRITE)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        assert!(matches!(scatter(chain, b"x"), Err(ChainError::OutsideMemory { .. })));
    }

    #[test]
    fn fill_writes_what_fits_of_a_stream() {
        let m = mem();
        let mut q = queue_with_chain(&m, &[(0x1000, 3, F_WRITE), (0x2000, 2, F_WRITE)]);
        let chain = q.iter(&m).unwrap().next().unwrap();
        assert_eq!(fill(chain, b"abcdefgh").unwrap(), 5);
        let mut b = [0u8; 2];
        m.read_slice(&mut b, GuestAddress(0x2000)).unwrap();
        assert_eq!(&b, b"de");
    }
}
