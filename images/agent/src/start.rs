//! Entry points.
//!
//! `_start` is the ELF entry the pathvm VMM jumps to: the vCPU is already
//! in 64-bit mode at CPL3 with `rdi` = the boot-parameter address
//! (PLATFORM.md's recipe). `pvh_start` is the PVH entry QEMU uses: 32-bit
//! protected mode, paging off, CPL0. It builds just enough (static page
//! tables for the first GiB, a GDT, a TSS with an all-allowing I/O bitmap),
//! enters long mode and drops to CPL3 at `_start` with `rdi` = 0, because on
//! this KVM every CPL0 instruction is emulated.

core::arch::global_asm!(
    r#"
    .section .text._start, "ax"
    .code64
    .global _start
_start:
    lea stack_top(%rip), %rsp
    xor %ebp, %ebp
    call agent_main
    ud2

    .section .text.pvh, "ax"
    .code32
    .global pvh_start
pvh_start:
    movl $pvh_pml4, %eax
    movl %eax, %cr3
    movl $0x620, %eax
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl $0x80010033, %eax
    movl %eax, %cr0
    lgdt pvh_gdt_ptr
    ljmp $0x08, $pvh_long
    .code64
pvh_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $pvh_tss, %eax
    movw %ax, pvh_gdt + 0x2a
    shrl $16, %eax
    movb %al, pvh_gdt + 0x2c
    movb %ah, pvh_gdt + 0x2f
    movw $104, pvh_tss + 102
    movb $0xff, pvh_tss + 104 + 8192
    movw $0x28, %ax
    ltr %ax
    pushq $0x1b
    pushq $stack_top
    pushq $0x2
    pushq $0x23
    pushq $_start
    xorl %edi, %edi
    iretq

    .section .data.pvh, "aw"
    .balign 4096
pvh_pml4:
    .quad pvh_pdpt + 0x7
    .fill 511, 8, 0
pvh_pdpt:
    .quad pvh_pd + 0x7
    .fill 511, 8, 0
pvh_pd:
    .set pvh_i, 0
    .rept 512
    .quad (pvh_i << 21) | 0x87
    .set pvh_i, pvh_i + 1
    .endr
    .balign 8
pvh_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
    .quad 0x00CFF3000000FFFF
    .quad 0x00AFFB000000FFFF
    .quad 0x0000890000002068
    .quad 0
pvh_gdt_ptr:
    .word 55
    .long pvh_gdt

    .section .bss.pvh, "aw", @nobits
    .balign 16
pvh_tss:
    .skip 104 + 8192 + 1

    .section .bss.stack, "aw", @nobits
    .balign 16
    .skip 65536
stack_top:

    .section .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start
    .balign 4
    .text
"#,
    options(att_syntax)
);
