/*
 * foliowalk's bare-metal probe firmware for Bochs 2.7 (romimage at 0xffff0000, 64 KiB): the QEMU
 * machine's firmware (emu/machines/qemu/x86_64_probe.S) with one difference that Bochs forces --
 * Bochs cannot map the host's RAM, so guest RAM is a copy, refreshed at every request from an
 * ATA disk image that the host writes (emu/machines/bochs/x86_64.py), and the host waits for the
 * guest at Bochs's magic breakpoint (XCHG BX,BX; bochsrc "magic_break: enabled=1") instead of
 * polling a shared mailbox.
 *
 * Every request runs the same path, from reset on:
 *   1. real mode at 0xfffffff0 (Intel SDM vol. 3A §9.1.4) -> protected mode, paging off (§9.9.1);
 *   2. the loader (32-bit, physical addresses) reads the request stream from the primary ATA
 *      master with PIO READ SECTORS (ATA/ATAPI-6 §8.27, LBA28; status BSY/DRQ/ERR polling) and
 *      applies its records to guest RAM: runs of literal words, of tag words (each TAG | its own
 *      address, emu/machines/ram.py) and of zeros.  The host sends only the pages that changed;
 *   3. IA-32e mode with 4-level paging (§9.8.5, §4.5), through the machine's own tables (root =
 *      PARAM_CR3), 64-bit code in the machine's slot (root entry 511), exceptions through a real
 *      IDT: the #PF handler records the error code and CR2 (§4.7, §6.15) and resumes;
 *   4. the batch: CR3 = the probed root (flushing the TLB, §4.10.4.1), one 8-byte load (read) or
 *      load and store-back (write) per address, results in RTAB; then MAGIC BREAK -- the host
 *      reads RTAB and the mailbox with the debugger's writemem (and "page" for an untagged load);
 *   5. on "continue": CR3 = the machine's root, back to compatibility mode, paging off, EFER.LME
 *      cleared (leaving IA-32e mode, SDM vol. 3A §9.8.5.4), and on to 2. for the next request.
 */
        .set ROM,        0xffff0000
        .set SLOT_RAM,   params + 0x10000       /* slot page 16: mailbox */
        .set MB_REQ,     SLOT_RAM + 0x00
        .set MB_DONE,    SLOT_RAM + 0x08
        .set MB_CR3,     SLOT_RAM + 0x10
        .set MB_COUNT,   SLOT_RAM + 0x18
        .set MB_KIND,    SLOT_RAM + 0x20     /* 0 read, 1 write */
        .set MB_PANIC,   SLOT_RAM + 0x28     /* vector | 0x100 when the machine's own code faulted */
        .set MB_PANIC_RIP, SLOT_RAM + 0x30
        .set MB_PANIC_CODE, SLOT_RAM + 0x38
        .set MB_PANIC_CR2, SLOT_RAM + 0x40
        .set MB_ALIVE,   SLOT_RAM + 0x48     /* set once the 64-bit code runs */
        .set MB_CPUID1,  SLOT_RAM + 0x50     /* CPUID.80000001H:EDX (bit 26 Page1GB, bit 20 NX) */
        .set MB_CPUID8,  SLOT_RAM + 0x58     /* CPUID.80000008H:EAX (bits 7:0 MAXPHYADDR) */
        .set MB_CPUID7,  SLOT_RAM + 0x60     /* CPUID.(EAX=07H,ECX=0):ECX (bit 16 LA57) */
        .set GDT_DESC,   SLOT_RAM + 0x1000   /* page 17: GDTR image, IDTR image, GDT, IDT */
        .set IDT_DESC,   SLOT_RAM + 0x1010
        .set STACK_TOP,  SLOT_RAM + 0x4000   /* pages 18-19 */
        .set ATAB,       SLOT_RAM + 0x10000  /* page 32: addresses, then results (16 bytes each) */
        .set CHUNK,      4096
        .set RTAB,       ATAB + CHUNK * 8
        .set BUFSECT,    96                  /* the loader's disk buffer: slot pages 20..31 */
        .set BUFBYTES,   BUFSECT * 512
        .set MAGIC,      0x7478656b6c6f6621  /* "!folkext": the request stream's first word */

        .text
        .code16
params:                                      /* patched by the host (emu/machines/bochs/x86_64.py) */
param_cr3:      .long 0, 0                   /* +0: root of the machine's own tables (< 4 GiB) */
param_slot:     .quad 0                      /* +8: the slot's base virtual address */
param_cr4:      .long 0                      /* +16: CR4 (PAE) */
param_buf:      .long 0                      /* +20: physical address of the disk buffer */
param_stack:    .long 0                      /* +24: physical stack top for the loader */
                .long 0

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
loader:
        cld
        movl param_stack, %esp
        xorl %ebp, %ebp                      /* next LBA */
        movl param_buf, %esi
        addl $BUFBYTES, %esi                 /* the buffer is empty: the first word refills it */
        call next_qword
        cmpl $(MAGIC & 0xffffffff), %eax
        jne bad_stream
        cmpl $(MAGIC >> 32), %edx
        jne bad_stream
        call next_qword
        movl %eax, %ebx                      /* number of records */
rec_loop:
        testl %ebx, %ebx
        jz enter_long
        call next_qword
        movl %eax, %edi                      /* physical address (RAM lies below 4 GiB) */
        call next_qword
        movl %eax, %ecx                      /* words */
        call next_qword                      /* kind */
        cmpl $1, %eax
        je tag_fill
        cmpl $2, %eax
        je zero_fill
lit_fill:
        testl %ecx, %ecx
        jz rec_next
        call next_qword
        movl %eax, (%edi)
        movl %edx, 4(%edi)
        addl $8, %edi
        decl %ecx
        jmp lit_fill
tag_fill:                                    /* TAG | own address: 0xf011 << 48 | pa, pa < 4 GiB */
        testl %ecx, %ecx
        jz rec_next
        movl %edi, (%edi)
        movl $0xf0110000, 4(%edi)
        addl $8, %edi
        decl %ecx
        jmp tag_fill
zero_fill:
        shll $1, %ecx
        xorl %eax, %eax
        rep stosl
rec_next:
        decl %ebx
        jmp rec_loop

next_qword:                                  /* edx:eax = the stream's next word */
        movl param_buf, %eax
        addl $BUFBYTES, %eax
        cmpl %eax, %esi
        jb 1f
        call refill
1:      movl (%esi), %eax
        movl 4(%esi), %edx
        addl $8, %esi
        ret

refill:                                      /* BUFSECT sectors at LBA %ebp into the buffer */
        pushl %edi
        pushl %ecx
        call ata_wait
        movw $0x1f6, %dx                     /* drive/head: LBA, master, LBA 27:24 */
        movl %ebp, %eax
        shrl $24, %eax
        andb $0x0f, %al
        orb $0xe0, %al
        outb %al, %dx
        call ata_wait
        movw $0x1f2, %dx                     /* sector count */
        movb $BUFSECT, %al
        outb %al, %dx
        movl %ebp, %eax
        movw $0x1f3, %dx                     /* LBA 7:0, 15:8, 23:16 */
        outb %al, %dx
        shrl $8, %eax
        incw %dx
        outb %al, %dx
        shrl $8, %eax
        incw %dx
        outb %al, %dx
        movw $0x1f7, %dx
        movb $0x20, %al                      /* READ SECTORS */
        outb %al, %dx
        movl param_buf, %edi
        movl $BUFSECT, %ecx
2:      pushl %ecx
        movw $0x1f7, %dx
3:      inb %dx, %al
        testb $0x80, %al                     /* BSY */
        jnz 3b
        testb $0x21, %al                     /* ERR, DF */
        jnz bad_disk
        testb $0x08, %al                     /* DRQ */
        jz 3b
        movw $0x1f0, %dx
        movl $128, %ecx                      /* 32-bit PIO: a sector is 128 doublewords */
        rep insl
        popl %ecx
        loop 2b
        addl $BUFSECT, %ebp
        movl param_buf, %esi
        popl %ecx
        popl %edi
        ret

ata_wait:                                    /* until BSY is clear */
        movw $0x1f7, %dx
1:      inb %dx, %al
        testb $0x80, %al
        jnz 1b
        ret

bad_stream:                                  /* the host sees the break outside the batch */
        movl $0xbad5, %eax
        xchgw %bx, %bx
        jmp bad_stream
bad_disk:
        movl $0xbadd, %eax
        xchgw %bx, %bx
        jmp bad_disk

enter_long:
        movl param_cr4, %eax
        movl %eax, %cr4
        movl param_cr3, %eax
        movl %eax, %cr3
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
        movl $0x80000001, %eax
        cpuid
        movq %rdx, MB_CPUID1(%rip)
        movl $0x80000008, %eax
        cpuid
        movq %rax, MB_CPUID8(%rip)
        movl $7, %eax
        xorl %ecx, %ecx
        cpuid
        movq %rcx, MB_CPUID7(%rip)
        movq $1, MB_ALIVE(%rip)

serve:
        movq MB_COUNT(%rip), %rcx
        leaq RTAB(%rip), %rdi                /* results: zero, so none is stale */
        shlq $1, %rcx
        xorl %eax, %eax
        rep stosq
        movq MB_CR3(%rip), %rax
        movq %rax, %cr3
        movq MB_COUNT(%rip), %rcx
        leaq ATAB(%rip), %rsi
        leaq RTAB(%rip), %rdi
        xorq %r12, %r12
        cmpq $1, MB_KIND(%rip)
        je w_loop
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

done:
        movq MB_REQ(%rip), %rax
        movq %rax, MB_DONE(%rip)
        .globl batch_break
batch_break:
        xchgw %bx, %bx                       /* the host reads the results here */
        movl param_cr3(%rip), %eax           /* leave IA-32e mode (SDM vol. 3A §9.8.5.4): */
        movq %rax, %cr3                      /* the machine's tables map this ROM 1:1 */
        pushq $0x18
        movl $leave32, %eax
        pushq %rax
        lretq                                /* compatibility mode */

        .code32
leave32:
        movl %cr0, %eax
        andl $0x7fffffff, %eax               /* paging off: EFER.LMA = 0 */
        movl %eax, %cr0
        movl $0xc0000080, %ecx
        rdmsr
        andl $0xfffffeff, %eax               /* EFER.LME = 0 */
        wrmsr
        jmp loader

        .code64
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
        jmp panic
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
1:      xchgw %bx, %bx                       /* the host reads MB_PANIC */
        jmp 1b

        .code16
        .org 0xfff0
        .globl reset
reset:
        jmp start16
        .org 0x10000
