//! The boot-parameter block: how the VMM tells the agent what it is.
//!
//! The VMM writes one [`BootParams`] at [`BOOT_PARAMS_ADDR`] before the vCPU
//! starts and passes that address in `rdi`. The layout is `repr(C)` with
//! explicit padding, so both sides see the same bytes and no byte of it is
//! uninitialised. A change of layout bumps [`BOOT_VERSION`].

/// Guest-physical address of the block (below the page tables, above the TSS).
pub const BOOT_PARAMS_ADDR: u64 = 0x6000;
/// First eight bytes of a valid block.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"PATHVMBP");
/// Layout version of [`BootParams`].
pub const BOOT_VERSION: u32 = 2;
/// Most virtio-mmio devices the block can describe.
pub const MAX_DEVICES: usize = 8;
/// Most RAM regions the block can describe.
pub const MAX_MEM_REGIONS: usize = 4;
/// Size of the free-form argument area.
pub const ARGS_LEN: usize = 2048;

/// What the agent does once booted.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Echo console bytes back until the host closes the console.
    Echo = 1,
    /// Answer ARP and ICMP echo for the configured IP on virtio-net.
    Ping = 2,
    /// Signal ready and idle until stopped (spawn benchmarks, warm pools).
    Idle = 3,
    /// Panic at once (tests the panic path).
    Panic = 4,
    /// Hand the console a descriptor outside guest memory, then echo
    /// (tests that devices reject hostile descriptors and keep working).
    BadDescriptor = 5,
    /// An overlay node: route packets between its virtio-net ports by the
    /// [`NodeConfig`](crate::node::NodeConfig) in the arguments, originate
    /// the console's records and deliver its own packets to the console.
    Node = 6,
    /// A request VM on an edge host: one stream (an
    /// [`EdgeRequest`](crate::node::EdgeRequest)) whose bytes are the
    /// console's, over a node's single port.
    Edge = 7,
    /// Read the console's registers the wrong way (byte-wide)
    /// [`BAD_MMIO_ACCESSES`] times, then exit 0 (tests that what a guest
    /// makes the VMM log is bounded).
    BadMmio = 8,
    /// Touch the image and the first [`WarmArgs::heap_kib`] KiB of heap,
    /// each byte written back unchanged, then exit 0. A prepared VM shell
    /// runs this once before any request, so the hypervisor has mapped
    /// those pages when a request's agent boots there: a fresh VM pays a
    /// nested page fault per page on its first touch (BENCHMARKS.md,
    /// Spawn).
    Warm = 9,
}

/// The arguments of [`Role::Warm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmArgs {
    /// KiB of heap above the image end to touch.
    pub heap_kib: u32,
}

impl WarmArgs {
    /// Encoded length.
    pub const LEN: usize = 4;

    /// The on-wire form (little-endian).
    pub fn encode(&self) -> [u8; Self::LEN] {
        self.heap_kib.to_le_bytes()
    }

    /// Decodes; short input is `None`.
    pub fn decode(b: &[u8]) -> Option<Self> {
        Some(Self { heap_kib: u32::from_le_bytes(b.get(..Self::LEN)?.try_into().ok()?) })
    }
}

/// Wrong-way register reads the [`Role::BadMmio`] guest makes.
pub const BAD_MMIO_ACCESSES: u32 = 100_000;

impl Role {
    /// Decodes the on-wire value; unknown values are `None`.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Echo,
            2 => Self::Ping,
            3 => Self::Idle,
            4 => Self::Panic,
            5 => Self::BadDescriptor,
            6 => Self::Node,
            7 => Self::Edge,
            8 => Self::BadMmio,
            9 => Self::Warm,
            _ => return None,
        })
    }
}

/// Virtio device ids used in [`DeviceDesc::device_id`].
pub mod device_id {
    /// virtio-net.
    pub const NET: u32 = 1;
    /// virtio-console.
    pub const CONSOLE: u32 = 3;
}

/// One RAM region, guest-physical.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemRegion {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One virtio-mmio device window.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceDesc {
    /// Virtio device id (see [`device_id`]).
    pub device_id: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Guest-physical base of the register window.
    pub base: u64,
    /// Length of the register window.
    pub size: u64,
}

/// IPv4 configuration for the agent's virtio-net interface.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// The interface's MAC address.
    pub mac: [u8; 6],
    /// Prefix length of `ip`.
    pub prefix_len: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// The interface's IPv4 address; all zero when unconfigured.
    pub ip: [u8; 4],
    /// Explicit padding.
    pub _pad2: [u8; 4],
}

/// The block itself.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BootParams {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`BOOT_VERSION`].
    pub version: u32,
    /// A [`Role`] value.
    pub role: u32,
    /// TSC frequency in kHz, for the agent's clock.
    pub tsc_khz: u64,
    /// Number of valid entries in `mem`.
    pub num_mem: u32,
    /// Number of valid entries in `devices`.
    pub num_devices: u32,
    /// RAM regions.
    pub mem: [MemRegion; MAX_MEM_REGIONS],
    /// virtio-mmio devices.
    pub devices: [DeviceDesc; MAX_DEVICES],
    /// virtio-net configuration.
    pub net: NetConfig,
    /// Number of valid bytes in `args`.
    pub args_len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Role-specific arguments (UTF-8).
    pub args: [u8; ARGS_LEN],
}

impl Default for BootParams {
    fn default() -> Self {
        Self {
            magic: BOOT_MAGIC,
            version: BOOT_VERSION,
            role: Role::Echo as u32,
            tsc_khz: 0,
            num_mem: 0,
            num_devices: 0,
            mem: [MemRegion::default(); MAX_MEM_REGIONS],
            devices: [DeviceDesc::default(); MAX_DEVICES],
            net: NetConfig::default(),
            args_len: 0,
            _pad: 0,
            args: [0; ARGS_LEN],
        }
    }
}

/// Why a block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// Wrong magic: not a pathvm block.
    BadMagic,
    /// A layout version this agent does not know.
    BadVersion(u32),
    /// A role value this agent does not know.
    BadRole(u32),
    /// A count field larger than its array.
    BadCount,
}

impl BootParams {
    /// The block as bytes, for the VMM to copy into guest memory.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `BootParams` is `repr(C)`, built only of integers and arrays
        // of integers, with every gap filled by an explicit padding field
        // (checked by `boot_params_has_no_implicit_padding`), so all of its
        // bytes are initialised and any alignment of u8 is fine.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), core::mem::size_of::<Self>()) }
    }

    /// Checks what the agent relies on before it uses the block.
    pub fn validate(&self) -> Result<Role, BootError> {
        if self.magic != BOOT_MAGIC {
            return Err(BootError::BadMagic);
        }
        if self.version != BOOT_VERSION {
            return Err(BootError::BadVersion(self.version));
        }
        if self.num_mem as usize > MAX_MEM_REGIONS
            || self.num_devices as usize > MAX_DEVICES
            || self.args_len as usize > ARGS_LEN
        {
            return Err(BootError::BadCount);
        }
        Role::from_u32(self.role).ok_or(BootError::BadRole(self.role))
    }

    /// The valid device entries.
    pub fn devices(&self) -> &[DeviceDesc] {
        let n = (self.num_devices as usize).min(MAX_DEVICES);
        &self.devices[..n]
    }

    /// The valid RAM regions.
    pub fn mem_regions(&self) -> &[MemRegion] {
        let n = (self.num_mem as usize).min(MAX_MEM_REGIONS);
        &self.mem[..n]
    }

    /// The first device with the given virtio id.
    pub fn find_device(&self, device_id: u32) -> Option<&DeviceDesc> {
        self.devices().iter().find(|d| d.device_id == device_id)
    }

    /// The role arguments.
    pub fn args(&self) -> &[u8] {
        let n = (self.args_len as usize).min(ARGS_LEN);
        &self.args[..n]
    }

    /// Wipes the role arguments (a node's boot seed and keys), once
    /// decoded: whoever reads this memory later finds none of them.
    pub fn wipe_args(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.args[..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn boot_params_has_no_implicit_padding() {
        let fields = offset_of!(BootParams, args) + ARGS_LEN;
        assert_eq!(size_of::<BootParams>(), fields);
        assert_eq!(size_of::<NetConfig>(), 16);
        assert_eq!(size_of::<DeviceDesc>(), 24);
        assert_eq!(offset_of!(BootParams, mem), 32);
    }

    #[test]
    fn boot_params_fit_below_the_page_tables() {
        assert!(BOOT_PARAMS_ADDR as usize + size_of::<BootParams>() <= 0x9000);
    }

    #[test]
    fn validate_accepts_default_block() {
        assert_eq!(BootParams::default().validate(), Ok(Role::Echo));
    }

    #[test]
    fn validate_rejects_bad_magic_version_role_and_counts() {
        let mut p = BootParams { magic: 1, ..Default::default() };
        assert_eq!(p.validate(), Err(BootError::BadMagic));
        p = BootParams { version: 9, ..Default::default() };
        assert_eq!(p.validate(), Err(BootError::BadVersion(9)));
        p = BootParams { role: 77, ..Default::default() };
        assert_eq!(p.validate(), Err(BootError::BadRole(77)));
        p = BootParams { num_devices: 9, ..Default::default() };
        assert_eq!(p.validate(), Err(BootError::BadCount));
    }

    #[test]
    fn accessors_clamp_hostile_counts() {
        let p = BootParams { num_devices: 1000, args_len: 5000, ..Default::default() };
        assert_eq!(p.devices().len(), MAX_DEVICES);
        assert_eq!(p.args().len(), ARGS_LEN);
    }
}
