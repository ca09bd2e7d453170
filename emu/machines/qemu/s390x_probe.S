/*
 * foliowalk's bare-metal probe firmware for qemu-system-s390x (-machine s390-ccw-virtio -cpu max).
 * Position independent (every address comes from LARL or the mailbox): the host writes it into
 * guest RAM at the frame it allocated, and QEMU's IPL of a raw -kernel image (an 8-byte short
 * IPL PSW at absolute 0, hw/s390x/ipl.c) starts it in z/Architecture mode, DAT off, at that frame.
 *
 * References: z/Architecture Principles of Operation SA22-7832 (PoP) ch. 3 "Dynamic Address
 * Translation", "Address-Space Control", "Prefixing"; ch. 4 "Program-Status Word"; ch. 6
 * "Interruptions" (assigned storage locations: program-interruption code 142-143, TEID 168-175,
 * SVC old PSW 320, program old PSW 336, SVC new PSW 448, program new PSW 464); ch. 10 LOAD REAL
 * ADDRESS, LOAD/STORE USING REAL ADDRESS, PURGE TLB, STORE FACILITY LIST EXTENDED.
 *
 * The probe loop is the Unicorn machine's (emu/machines/s390x/guest_code.py batch_code): it runs
 * in secondary-space mode (PSW 0x0400800180000000: DAT on, ASC = 10, 64-bit), instructions are
 * fetched through CR1 = 0x20 (a real-space ASCE: identity), operands go through CR7 = the ASCE
 * under test; per address LRAG (the real address, cc), then LG (and STG for writes) of the 8-byte
 * word, and the record (LRAG result, word, IPM, interruption code 0) is written with STURG.  A
 * program interruption at the probe access enters `pgm' (DAT off): it records the interruption
 * code and the TEID over the record and resumes the loop at the next address with LPSWE.  The
 * loop ends with SVC 0, whose new PSW (DAT off) leads back to the idle loop: no instruction here
 * switches to access-register mode.  The host pauses the VM (QMP stop) between requests.
 */
        .set MB_REQ,    0x00
        .set MB_DONE,   0x08
        .set MB_CR0,    0x10
        .set MB_CR1,    0x18
        .set MB_CR7,    0x20
        .set MB_COUNT,  0x28
        .set MB_OP,     0x30                 /* 0 read, 1 write (load, then store it back) */
        .set MB_BUF,    0x38                 /* real address of the VA array (8 bytes each) */
        .set MB_OUT,    0x40                 /* real address of the records (40 bytes each) */
        .set MB_ALIVE,  0x48
        .set MB_PANIC,  0x50                 /* interruption code | 1 << 32 outside the probe access */
        .set MB_PANIC_ADDR, 0x58             /* its old PSW address */
        .set MB_PROBE_PSW, 0x60              /* 16 bytes: the secondary-space PSW of the loop */
        .set MB_RESUME_PSW, 0x70             /* 16 bytes: built by the program-check handler */
        .set MB_STFLE,  0x80                 /* 4 doublewords of facility bits, stored at start */
        .set MB_SKEY_ADDR, 0xa0              /* if not 0: SET STORAGE KEY EXTENDED of MB_SKEY_FRAMES */
        .set MB_SKEY_FRAMES, 0xa8            /*   4K frames from there to MB_SKEY before the loop */
        .set MB_SKEY,   0xb0
        .set MB_SKEY_READ, 0xb8              /* INSERT STORAGE KEY EXTENDED of the first one after */

        .set LC_PGM_CODE, 0x8e
        .set LC_TEID,     0xa8
        .set LC_PGM_OLD,  0x150
        .set LC_SVC_NEW,  0x1c0
        .set LC_PGM_NEW,  0x1d0

        .text
        .globl _start
_start:
        j 1f
        .balign 8
param_mailbox: .quad 0                       /* +8: patched by the host */
real_mask:     .quad 0x0000000180000000      /* EA | BA, DAT off: the interruption handlers */
probe_mask:    .quad 0x0400800180000000      /* DAT | ASC secondary | EA | BA: the probe loop */
1:      larl %r1, param_mailbox
        lg %r13, 0(%r1)
        /* new PSWs: SVC -> done, program check -> pgm (both DAT off, 64-bit) */
        lg %r2, real_mask - param_mailbox(%r1)
        stg %r2, LC_SVC_NEW
        larl %r3, done
        stg %r3, LC_SVC_NEW + 8
        stg %r2, LC_PGM_NEW
        larl %r3, pgm
        stg %r3, LC_PGM_NEW + 8
        lg %r2, probe_mask - param_mailbox(%r1)
        stg %r2, MB_PROBE_PSW(%r13)
        larl %r3, loop
        stg %r3, MB_PROBE_PSW + 8(%r13)
        lghi %r0, 3
        stfle MB_STFLE(%r13)
        lghi %r0, 1
        stg %r0, MB_ALIVE(%r13)

idle:
        lg %r0, MB_REQ(%r13)
        clg %r0, MB_DONE(%r13)
        je idle
        lctlg %c0, %c0, MB_CR0(%r13)
        lctlg %c1, %c1, MB_CR1(%r13)
        lctlg %c7, %c7, MB_CR7(%r13)
        lg %r2, MB_SKEY_ADDR(%r13)
        ltgr %r2, %r2
        jz 4f
        lg %r3, MB_SKEY(%r13)
        lg %r4, MB_SKEY_FRAMES(%r13)
        lgr %r5, %r2
5:      sske %r3, %r2
        aghi %r2, 4096
        brctg %r4, 5b
        lghi %r3, 0
        iske %r3, %r5
        stg %r3, MB_SKEY_READ(%r13)
4:      ptlb
        xc LC_TEID(8), LC_TEID
        lg %r6, MB_BUF(%r13)
        lg %r7, MB_OUT(%r13)
        lg %r8, MB_COUNT(%r13)
        lg %r5, MB_OP(%r13)
        ltgr %r8, %r8
        jz done
        lpswe MB_PROBE_PSW(%r13)

/* DAT on, secondary space: nothing below may address storage but through LURAG/STURG (real)
 * and the probe access (through CR7). */
loop:
        lurag %r2, %r6
        lrag %r1, 0(%r2)
        ipm %r4
        nill %r2, 0xfff8
acc_first:
        lg %r3, 0(%r2)
        ltgr %r5, %r5
        jz 2f
        stg %r3, 0(%r2)
acc_end:
2:      sturg %r1, %r7
        la %r9, 8(%r7)
        sturg %r3, %r9
        la %r9, 16(%r7)
        sturg %r4, %r9
        la %r9, 24(%r7)
        lghi %r10, 0
        sturg %r10, %r9
resume:
        la %r6, 8(%r6)
        la %r7, 40(%r7)
        brctg %r8, loop
        svc 0

done:                                        /* SVC new PSW: DAT off */
        lg %r0, MB_REQ(%r13)
        stg %r0, MB_DONE(%r13)
        j idle

/* Program-check new PSW: DAT off.  At the probe access (the old PSW addresses the LG, or the
 * instruction after it or after the STG: translation exceptions nullify, protection and
 * addressing suppress, PoP ch. 6 "Types of Instruction Ending"), store the interruption code and
 * the TEID in the record (with LRAG's result and cc), clear the TEID (an addressing exception stores none) and resume. */
pgm:
        lg %r10, LC_PGM_OLD + 8
        larl %r11, acc_first
        clgr %r10, %r11
        jl panic
        larl %r11, acc_end
        clgr %r10, %r11
        jh panic
        stg %r1, 0(%r7)                      /* LRAG's answer and cc, as for any address */
        stg %r4, 16(%r7)
        llgh %r10, LC_PGM_CODE
        stg %r10, 24(%r7)
        mvc 32(8, %r7), LC_TEID
        xc LC_TEID(8), LC_TEID
        mvc MB_RESUME_PSW(8, %r13), LC_PGM_OLD
        larl %r11, resume
        stg %r11, MB_RESUME_PSW + 8(%r13)
        lpswe MB_RESUME_PSW(%r13)
panic:
        llgh %r11, LC_PGM_CODE
        oihl %r11, 1
        stg %r11, MB_PANIC(%r13)
        stg %r10, MB_PANIC_ADDR(%r13)
3:      j 3b
