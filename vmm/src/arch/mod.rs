//! x86-64 specifics: the guest-physical layout, the page tables and
//! descriptor tables the agent runs on, and the vCPU's initial registers.
//!
//! The recipe is PLATFORM.md's "Starting the vCPU directly at CPL3": no real
//! mode, no firmware, no kernel-mode code at all. The vCPU's first
//! instruction is the agent's ELF entry, in 64-bit mode, at CPL3.

pub mod layout;
pub mod regs;
pub mod tables;

pub use regs::{setup_vcpu, RegsError};
pub use tables::write_tables;
