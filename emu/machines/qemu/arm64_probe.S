/*
 * foliowalk's bare-metal probe firmware for qemu-system-aarch64 (-machine none -cpu max: RAM at
 * physical 0, the CPU resets into EL3 in AArch64 with its MMU off).  Loaded into guest RAM with
 * -device loader, which also sets the PC.
 *
 * At EL3 with SCTLR_EL3.M = 0 every access is physical, so the code needs no mapping by the
 * tables under test.  SCR_EL3.RW | NS and HCR_EL2.RW make the EL1&0 regime the Non-secure AArch64
 * one (Arm ARM D19 "SCR_EL3", "HCR_EL2"), as the Unicorn machine (emu/machines/arm64/) does.
 * A request (mailbox REQ != DONE) loads TCR_EL1, TTBR0_EL1, TTBR1_EL1 and SCTLR_EL1 (M set),
 * invalidates the EL1&0 TLB (TLBI ALLE1), then for every address runs AT S1E1R/S1E1W/S1E0R/S1E0W
 * (C5 "A64 System instructions for address translation") and stores PAR_EL1 over the address.
 * AT never raises an exception.  The host pauses the VM (QMP stop) between requests.
 */
        .set MB_REQ,   0x00
        .set MB_DONE,  0x08
        .set MB_TCR,   0x10
        .set MB_TTBR0, 0x18
        .set MB_TTBR1, 0x20
        .set MB_COUNT, 0x28
        .set MB_OP,    0x30                  /* 0 S1E1R, 1 S1E1W, 2 S1E0R, 3 S1E0W */
        .set MB_SCTLR, 0x38
        .set MB_MAIR,  0x40
        .set MB_ALIVE, 0x48
        .set MB_BUF,   0x50                  /* physical address of the address/PAR buffer */
        .set MB_PANIC, 0x58                  /* ESR_EL3 of an exception outside an AT */
        .set MB_PANIC_ELR, 0x60
        .set MB_MMFR0, 0x68                  /* ID_AA64MMFR0_EL1, stored at start */
        .set MB_MMFR2, 0x70                  /* ID_AA64MMFR2_EL1 (VARange: FEAT_LVA), stored at start */

        .text
        .globl _start
_start:
        b 1f
        .balign 8
param_mailbox: .quad 0                       /* +8: patched by the host */
1:      ldr x20, param_mailbox
        mrs x0, scr_el3
        orr x0, x0, #(1 << 10)               /* RW: EL2/EL1 AArch64 */
        orr x0, x0, #1                       /* NS */
        msr scr_el3, x0
        mrs x0, hcr_el2
        orr x0, x0, #(1 << 31)               /* HCR_EL2.RW: EL1 AArch64 */
        msr hcr_el2, x0
        adr x0, vectors
        msr vbar_el3, x0
        isb
        mrs x0, id_aa64mmfr0_el1
        str x0, [x20, #MB_MMFR0]
        mrs x0, id_aa64mmfr2_el1
        str x0, [x20, #MB_MMFR2]
        mov x0, #1
        str x0, [x20, #MB_ALIVE]

idle:
        ldr x0, [x20, #MB_REQ]
        ldr x1, [x20, #MB_DONE]
        cmp x0, x1
        b.eq idle

        ldr x0, [x20, #MB_MAIR]
        msr mair_el1, x0
        ldr x0, [x20, #MB_TCR]
        msr tcr_el1, x0
        ldr x0, [x20, #MB_TTBR0]
        msr ttbr0_el1, x0
        ldr x0, [x20, #MB_TTBR1]
        msr ttbr1_el1, x0
        ldr x0, [x20, #MB_SCTLR]
        msr sctlr_el1, x0
        isb
        tlbi alle1
        dsb sy
        isb
        ldr x0, [x20, #MB_BUF]
        ldr x3, [x20, #MB_COUNT]
        ldr x4, [x20, #MB_OP]
        cbz x3, done
        cmp x4, #1
        b.eq l_e1w
        cmp x4, #2
        b.eq l_e0r
        cmp x4, #3
        b.eq l_e0w
l_e1r:  ldr x1, [x0]
        at s1e1r, x1
        isb
        mrs x2, par_el1
        str x2, [x0], #8
        subs x3, x3, #1
        b.ne l_e1r
        b done
l_e1w:  ldr x1, [x0]
        at s1e1w, x1
        isb
        mrs x2, par_el1
        str x2, [x0], #8
        subs x3, x3, #1
        b.ne l_e1w
        b done
l_e0r:  ldr x1, [x0]
        at s1e0r, x1
        isb
        mrs x2, par_el1
        str x2, [x0], #8
        subs x3, x3, #1
        b.ne l_e0r
        b done
l_e0w:  ldr x1, [x0]
        at s1e0w, x1
        isb
        mrs x2, par_el1
        str x2, [x0], #8
        subs x3, x3, #1
        b.ne l_e0w
done:
        dsb sy
        ldr x0, [x20, #MB_REQ]
        str x0, [x20, #MB_DONE]
        b idle

/* A synchronous External abort on the walk of an AT instruction is taken as a Data Abort
 * exception, not reported in PAR_EL1 (Arm ARM D8 "Address translation instructions"): the
 * handler turns ESR_EL3.ISS.DFSC into what PAR_EL1 would hold (F = 1, FST = DFSC) in x2 and
 * resumes at the STR after AT; ISB; MRS.  Any other exception is recorded and stops the guest. */
        .balign 2048
vectors:
        .rept 16
        b exc
        .balign 128
        .endr
exc:
        mrs x5, elr_el3
        ldr w6, [x5]
        and w6, w6, #0xffffff80
        movz w7, #0x7800
        movk w7, #0xd508, lsl #16
        cmp w6, w7
        b.ne panic
        mrs x6, esr_el3
        and x6, x6, #0x3f
        lsl x2, x6, #1
        orr x2, x2, #1
        add x5, x5, #12
        msr elr_el3, x5
        eret
panic:
        mrs x6, esr_el3
        orr x6, x6, #(1 << 62)
        str x6, [x20, #MB_PANIC]
        str x5, [x20, #MB_PANIC_ELR]
1:      b 1b
