//! The vCPU's initial state: long mode, paging on, CPL3, at the ELF entry.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, CpuId};
use kvm_ioctls::VcpuFd;
use thiserror::Error;

use super::layout::{BOOT_PARAMS_ADDR, GDT_ADDR, PML4_ADDR, TSS_ADDR, TSS_LIMIT};
use super::tables::{selector, GDT_LIMIT};

/// A register ioctl failed.
#[derive(Debug, Error)]
#[error("cannot set up vCPU registers: {op} failed: {source}")]
pub struct RegsError {
    op: &'static str,
    #[source]
    source: kvm_ioctls::Error,
}

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

fn segment(selector: u16, type_: u8, dpl: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts `vcpu` at `entry` in 64-bit mode at CPL3, `rdi` = boot params.
pub fn setup_vcpu(vcpu: &VcpuFd, entry: u64, cpuid: Option<&CpuId>) -> Result<(), RegsError> {
    let err = |op| move |source| RegsError { op, source };
    if let Some(cpuid) = cpuid {
        vcpu.set_cpuid2(cpuid).map_err(err("KVM_SET_CPUID2"))?;
    }
    let mut sregs = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
    sregs.cs = segment(selector::CODE_USER, 0xb, 3, true);
    let data = segment(selector::DATA_USER, 0x3, 3, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment {
        base: TSS_ADDR,
        limit: TSS_LIMIT,
        selector: selector::TSS,
        type_: 0xb,
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = GDT_LIMIT;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;

    // x87 control word and MXCSR at their architectural reset values.
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(err("KVM_SET_FPU"))?;

    let regs = kvm_regs { rip: entry, rflags: 0x2, rdi: BOOT_PARAMS_ADDR, ..Default::default() };
    vcpu.set_regs(&regs).map_err(err("KVM_SET_REGS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_registers_match_platform_recipe() {
        assert_eq!(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG, 0x8001_0033);
        assert_eq!(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT, 0x620);
        assert_eq!(EFER_LME | EFER_LMA, 0x500);
    }

    #[test]
    fn user_code_segment_is_long_mode_dpl3() {
        let cs = segment(selector::CODE_USER, 0xb, 3, true);
        assert_eq!((cs.selector, cs.l, cs.db, cs.dpl), (0x23, 1, 0, 3));
        let ss = segment(selector::DATA_USER, 0x3, 3, false);
        assert_eq!((ss.selector, ss.l, ss.db), (0x1b, 0, 1));
    }
}
