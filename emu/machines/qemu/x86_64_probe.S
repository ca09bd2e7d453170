/*
 * foliowalk's bare-metal probe firmware for qemu-system-x86_64 (loaded with -bios, 64 KiB).
 *
 * The CPU starts in real mode at 0xfffffff0 (Intel SDM vol. 3A §9.1.4), enters protected mode
 * (§9.9.1), then IA-32e mode with 4- or 5-level paging (§9.8.5, §4.5): the tables are the
 * machine's own (built by the host in guest RAM; PARAM_CR3 is their root), identity-mapping this
 * ROM's last 64 KiB for the switch and mapping the machine's slot (root entry 511) where the
 * 64-bit code runs from then on (this ROM again, plus RAM pages: mailbox, descriptor tables,
 * stack, batch tables).  Link address: 0xffff0000 (ld -Ttext); in the slot, ROM offset o is at
 * slot_base + o, RAM page k of the slot at slot_base + k * 4096 (k >= 16).  64-bit code is
 * position independent (RIP-relative only).
 *
 * Idle: the CPU halts with interrupts off; the host wakes it with an NMI (QMP inject-nmi), whose
 * handler returns to the idle loop.  A request (mailbox REQ != DONE) loads CR3 (flushing the
 * TLB, SDM §4.10.4.1), runs the batch and sets DONE = REQ.  Faults are delivered through the IDT
 * architecturally: the #PF handler records the error code and CR2 and resumes at the next address.
 */
        .set ROM,        0xffff0000
        .set SLOT_RAM,   params + 0x10000       /* slot page 16: mailbox */
        .set MB_REQ,     SLOT_RAM + 0x00
        .set MB_DONE,    SLOT_RAM + 0x08
        .set MB_CR3,     SLOT_RAM + 0x10
        .set MB_COUNT,   SLOT_RAM + 0x18
        .set MB_KIND,    SLOT_RAM + 0x20     /* 0 read, 1 write, 2 flip CR4.LA57 */
        .set MB_PANIC,   SLOT_RAM + 0x28     /* vector | 0x100 when the machine's own code faulted */
        .set MB_PANIC_RIP, SLOT_RAM + 0x30
        .set MB_PANIC_CODE, SLOT_RAM + 0x38
        .set MB_PANIC_CR2, SLOT_RAM + 0x40
        .set MB_ALIVE,   SLOT_RAM + 0x48     /* set once the 64-bit code runs */
        .set GDT_DESC,   SLOT_RAM + 0x1000   /* page 17: GDTR image, IDTR image, GDT, IDT */
        .set IDT_DESC,   SLOT_RAM + 0x1010
        .set STACK_TOP,  SLOT_RAM + 0x4000   /* pages 18-19 */
        .set ATAB,       SLOT_RAM + 0x10000  /* page 32: addresses, then results (16 bytes each) */
        .set CHUNK,      4096
        .set RTAB,       ATAB + CHUNK * 8

        .text
        .code16
params:                                      /* patched by the host (emu/machines/qemu/x86_64.py) */
param_cr3:      .long 0, 0                   /* +0: root of the machine's own tables (< 4 GiB) */
param_slot:     .quad 0                      /* +8: the slot's base virtual address */
param_cr4:      .long 0, 0                   /* +16: CR4 (PAE, LA57 for 5-level) */

        .balign 8
boot_gdt:
        .quad 0
        .quad 0x00af9b000000ffff             /* 0x08: 64-bit code, DPL 0 */
        .quad 0x00cf93000000ffff             /* 0x10: flat data */
        .quad 0x00cf9b000000ffff             /* 0x18: 32-bit flat code */
boot_gdt_end:
boot_gdtr:
        .word boot_gdt_end - boot_gdt - 1
        .long boot_gdt

start16:
        cli
        lgdtl %cs:(boot_gdtr - params)
        movl %cr0, %eax
        orl $1, %eax
        movl %eax, %cr0
        ljmpl $0x18, $start32

        .code32
start32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movl param_cr4, %eax
        movl %eax, %cr4
        movl param_cr3, %eax
        movl %eax, %cr3
        movl $0x1ff, 0xfee000f0              /* local APIC: software enable (SVR bit 8), and */
        movl $0x400, 0xfee00360              /* LVT LINT1 = NMI, unmasked: QEMU's inject-nmi */
                                             /* arrives there (SDM vol. 3A §11.5.1) */
        movl $0xc0000080, %ecx               /* IA32_EFER: LME | NXE */
        movl $0x00000900, %eax
        xorl %edx, %edx
        wrmsr
        movl $0x80010011, %eax               /* PG | WP | ET | PE */
        movl %eax, %cr0
        ljmpl $0x08, $start64

        .code64
start64:                                     /* identity-mapped ROM: jump into the slot */
        movq param_slot(%rip), %rax
        leaq (main64 - params)(%rax), %rax
        jmp *%rax

main64:
        leaq STACK_TOP(%rip), %rsp
        lgdt GDT_DESC(%rip)
        lidt IDT_DESC(%rip)
        pushq $0x08
        leaq 1f(%rip), %rax
        pushq %rax
        lretq
1:      movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movq $1, MB_ALIVE(%rip)

idle:
        movq MB_REQ(%rip), %rax
        cmpq MB_DONE(%rip), %rax
        jne serve
        hlt
        jmp idle

serve:
        movq MB_CR3(%rip), %rax
        movq %rax, %cr3
        movq MB_COUNT(%rip), %rcx
        leaq ATAB(%rip), %rsi
        leaq RTAB(%rip), %rdi
        xorq %r12, %r12
        cmpq $1, MB_KIND(%rip)
        je w_loop
        cmpq $2, MB_KIND(%rip)
        je cr4_flip
r_loop:
        cmpq %rcx, %r12
        jae done
        movq (%rsi,%r12,8), %rbx
        movq %r12, %r13
        shlq $4, %r13
        addq %rdi, %r13                      /* r13: this address's result */
r_access:
        movq (%rbx), %rax
        movq %rax, 8(%r13)
        movq $1, (%r13)
r_next:
        incq %r12
        jmp r_loop

w_loop:
        cmpq %rcx, %r12
        jae done
        movq (%rsi,%r12,8), %rbx
        movq %r12, %r13
        shlq $4, %r13
        addq %rdi, %r13
w_load:                                      /* load, then store the loaded value back */
        movq (%rbx), %rax
w_store:
        movq %rax, (%rbx)
        movq %rax, 8(%r13)
        movq $1, (%r13)
w_next:
        incq %r12
        jmp w_loop
w_store_only:                                /* the load faulted: the store's own fault */
        xorl %eax, %eax
w_store2:
        movq %rax, (%rbx)
        movq $5, (%r13)                      /* the store succeeded although the load faulted */
        jmp w_next

cr4_flip:                                    /* MOV to CR4 changing LA57 with EFER.LMA = 1: */
        movq %rdi, %r13                      /* #GP(0) (SDM vol. 3A §2.5, §4.1.1) */
        movq %cr4, %rax
        xorq $0x1000, %rax
cr4_write:
        movq %rax, %cr4
        movq $1, (%r13)                      /* it took effect (and paging changed under us) */
        jmp done

done:
        movq MB_REQ(%rip), %rax
        movq %rax, MB_DONE(%rip)
        jmp idle

/* Exceptions: every vector 0..31 has a stub that pushes a dummy error code where the CPU pushes
 * none (SDM vol. 3A §6.13, Table 6-1), then its vector.  Frame: vector, code, RIP, CS, RFLAGS,
 * RSP, SS. */
        .macro stub vec
        .balign 16
        .if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21)
        pushq $\vec
        .else
        pushq $0
        pushq $\vec
        .endif
        jmp exception
        .endm
        .balign 16
stubs:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        stub \v
        .endr

exception:
        cmpq $2, (%rsp)                      /* NMI: the host's wake-up */
        je nmi
        movq 16(%rsp), %rax                  /* the faulting RIP */
        leaq r_access(%rip), %rdx
        cmpq %rdx, %rax
        je 1f
        leaq w_store(%rip), %rdx
        cmpq %rdx, %rax
        je 1f
        leaq w_store2(%rip), %rdx
        cmpq %rdx, %rax
        je 1f
        leaq w_load(%rip), %rdx
        cmpq %rdx, %rax
        je 3f
        leaq cr4_write(%rip), %rdx
        cmpq %rdx, %rax
        je 4f
        jmp panic
4:      leaq done(%rip), %rdx
        movq %rdx, 16(%rsp)
        call record
        addq $16, %rsp
        iretq
1:      leaq r_next(%rip), %rdx              /* record; resume at the next address */
        cmpq $0, MB_KIND(%rip)
        je 2f
        leaq w_next(%rip), %rdx
2:      movq %rdx, 16(%rsp)
        call record
        addq $16, %rsp
        iretq
3:      leaq w_store_only(%rip), %rdx        /* the load of a write probe faulted */
        movq %rdx, 16(%rsp)
        addq $16, %rsp
        iretq

record:                                      /* 8(%rsp): vector, 16(%rsp): error code */
        movq 16(%rsp), %rax
        shlq $32, %rax
        movq 8(%rsp), %rdx
        shlq $8, %rdx
        orq %rdx, %rax
        cmpq $14, 8(%rsp)
        jne 1f
        orq $3, %rax
        movq %cr2, %rdx
        jmp 2f
1:      orq $4, %rax
        movq %rbx, %rdx                      /* the address probed */
2:      movq %rdx, 8(%r13)
        movq %rax, (%r13)
        ret

nmi:
        addq $16, %rsp
        iretq

panic:
        movq 16(%rsp), %rax
        movq %rax, MB_PANIC_RIP(%rip)
        movq 8(%rsp), %rax
        movq %rax, MB_PANIC_CODE(%rip)
        movq %cr2, %rax
        movq %rax, MB_PANIC_CR2(%rip)
        movq (%rsp), %rax
        orq $0x100, %rax
        movq %rax, MB_PANIC(%rip)
1:      hlt
        jmp 1b

        .code16
        .org 0xfff0
        .globl reset
reset:
        jmp start16
        .org 0x10000
