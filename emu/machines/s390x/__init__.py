"""s390x: Unicorn's emulated z/Architecture MMU as the oracle for DAT tables in guest RAM.

References: z/Architecture Principles of Operation, SA22-7832 (PoP), chapter 3 "Storage" --
"Dynamic Address Translation" (the address-space-control element, "Translation Tables",
"Translation Process", "Enhanced DAT"), "Address Spaces" / "Address-Space Control",
"Prefixing", "Protection" (DAT protection); chapter 4 "Control" (program-status word); chapter 6
"Interruptions" ("Program-Interruption Conditions", "Translation-Exception Identification",
assigned storage locations); chapter 10 "Control Instructions" (LOAD REAL ADDRESS, LOAD USING REAL
ADDRESS, STORE USING REAL ADDRESS).  Measured emulator facts: ``shared/ORACLE-NOTES.md``, s390x
section.

How a probe works
-----------------
The CPU runs in **secondary-space mode** (PSW mask ``0x0400800180000000``: DAT on, ASC = 10,
64-bit addressing; PoP ch. 4 "Program-Status Word", ch. 3 "Address-Space Control").  In that mode
instructions are fetched from the *primary* space and operands live in the *secondary* space, so
CR1 holds a real-space ASCE (``0x20``, R bit: identity mapping, PoP ch. 3 "Address-Space-Control
Element") and the probe code is fetched from real storage, never through the tables under test;
CR7 holds the ASCE under test (ORACLE-NOTES: "secondary space ... CR1 = 0x20 ... CR7 = ASCE under
test").  The guest routine for one address is::

    lrag  %r1, 0(%r2)      # LOAD REAL ADDRESS: the real address DAT produces (observed, cc 0)
    ipm   %r4              # its condition code
    nill  %r2, 0xfff8      # align the access to the 8-byte word
    lg    %r3, 0(%r2)      # the real access through CR7: faults with the true interruption code
    stg   %r3, 0(%r2)      # (write probes only) store the same value back

``Translation.pa`` is the LRAG result, i.e. observed by the MMU, never computed from our own walk;
when the loaded word is a tag (``PhysicalMemory.tag``) it must name the same physical word, and the
translation is reported as ``observed_by="tag"`` (otherwise ``"lrag"``); a mismatch is a
:class:`ProbeError`.  The batch routine (:meth:`S390xMachine.probe_many`) is the same sequence in a
loop that reads its addresses with LURAG and writes LRAG result / loaded word / condition code with
STURG (real-address accesses, PoP ch. 10), so the bookkeeping never goes through CR7 either.

Why not LRAG alone: Unicorn/QEMU's LRA/LRAG set cc 3 for *every* exception (ORACLE-NOTES
"Deviations"; the PoP distinguishes cc 1/2/3), and a read-only LRAG cannot see DAT protection or an
addressing exception for a frame outside RAM.  So LRAG is the fast path and the program-interruption
code always comes from the real LG/STG access.

Faults
------
Program interruptions are not delivered architecturally (no PSW swap, ORACLE-NOTES "Common"): the
``UC_HOOK_INTR`` hook receives exception number 3 and the PSW still addresses the faulting
instruction.  The program-interruption code is not exposed as a register; it is read from the CPU
state blob (``context_save``) at an offset located **at run time**: the start-up self-test provokes
five known interruptions on scratch tables and keeps the single offset that holds each code
(ORACLE-NOTES "marker technique").  The translation-exception identification (TEID, PoP ch. 6) is
stored at real locations 168-175 (``0xa8``); each probe clears it first and reports it as
:attr:`S390xMachine.last_teid` / :attr:`S390xMachine.last_teids` (None when no TEID was stored --
an addressing exception stores none).

Kinds (PoP ch. 6 "Program-Interruption Conditions"): 0x04 protection, 0x05 addressing, 0x10
segment-translation, 0x11 page-translation, 0x12 translation-specification, 0x38 ASCE-type, 0x39 /
0x3a / 0x3b region-first / -second / -third-translation.  ``Fault.level`` names the table whose
entry (or table-length check) caused the translation exception: :data:`LEVEL_PAGE` (0),
:data:`LEVEL_SEGMENT` (1), :data:`LEVEL_REGION3` (2), :data:`LEVEL_REGION2` (3),
:data:`LEVEL_REGION1` (4); ``None`` for ASCE-type, translation-specification, protection and
addressing (the code does not name one table).

Access kinds
------------
* read: 8-byte load through the secondary space.
* write: load, then store the same value back; DAT protection faults with code 0x04 and storage is
  unchanged (PoP ch. 3 "DAT Protection": the store is suppressed).
* fetch: basic z/Architecture DAT has no execute permission (that is the separate
  instruction-execution-protection facility: no z14/gen15 CPU model of Unicorn 2.1.4 has it, see
  the deviation ``s390x-iep-not-in-cpu-models``; ``S390xMachine(iep=True)`` sets it in the z13
  model, and ``foliowalk conform --arch s390x`` runs real instruction fetches with it), and an
  instruction fetch is translated exactly like an operand fetch.  A fetch probe is therefore executed as a read
  (executing bytes from the tables under test could run an instruction that switches to
  access-register mode, see below).
* ``Access.user``: DAT and DAT protection do not depend on the problem-state bit (PoP ch. 3
  "Protection"); key-controlled protection is not implemented by Unicorn (ORACLE-NOTES).  User
  probes run like supervisor probes.

DANGER: access-register mode
----------------------------
PSW ASC bits ``01`` select access-register mode, which this QEMU fork does not implement:
``cpu_mmu_index()`` calls ``abort()`` and ``lowprot_enabled()`` calls ``exit(1)`` -- the WHOLE
PROCESS dies (ORACLE-NOTES).  This module writes only the constant secondary-space PSW mask
(asserted at import), and the guest routines contain no instruction that can change the
address-space control (SAC, SACF, LPSW, LPSWE, PC, PR, ...); ``tests/machines/test_machine_s390x.py``
disassembles them to prove it.  Never probe by executing code out of the tables under test.

EDAT-1 / EDAT-2
---------------
Large entries (1 MB segment-table entries with STE.FC, 2 GB region-third entries with RTTE.FC; PoP
ch. 3 "Enhanced DAT") are honoured by QEMU only if ``CR0.EDAT`` (bit 40) is set *and* the CPU
model has the EDAT facility (STFLE bit 8; bit 78 for EDAT-2): ``mmu_translate_asce()`` tests
``s390_has_feat(S390_FEAT_EDAT)`` / ``S390_FEAT_EDAT_2`` (target/s390x/mmu_helper.c).  In Unicorn
2.1.4 **no** CPU model has them: every named model (z900 ... gen15b, 36 of them) is created from
its *base* feature list (``is_static``), and no base list contains EDAT; the ``qemu`` and ``max``
models' lists do not either (measured: all 38 models ignore FC with CR0.EDAT set).  The facility
list is not part of the CPU state blob (it lives in the heap-allocated ``S390CPUModel``), so it
cannot be edited through ``context_restore``.

What this module does when ``edat=True``: it selects the z13 model (real z13 machines have both
facilities), locates that model's static ``S390CPUDef`` record inside the loaded
``libunicorn.so`` at run time (find the name string ``"z13"`` in the library's mappings, then the
pointer to it in the library's writable data, then check the record's generation / type / EC-GA /
description and that its bitmaps look like feature bitmaps), sets the two feature bits in the
record's ``base_init`` list just while the CPU is created (the CPU copies the bits into its own
model), and restores the record at once, so later ``Uc`` instances are unaffected (a module lock
serialises machines; another thread creating a z13 ``Uc`` in that window would see the bits too).
No CPU model is patched when ``edat=False``; the z13 model is used either way.  This is
fragile by nature (it depends on this build's struct layout and feature numbering), so it is never
trusted: the start-up self-test builds a 1 MB segment entry and a 2 GB region-third entry on
scratch tables, requires the load to reach the right tagged real word, requires the FC=0 path to
still translate and fault as before, and requires the same large entries to be *ignored* with
``CR0.EDAT`` off (so the result cannot be a coincidence).  Only then are :attr:`edat1_works` /
:attr:`edat2_works` True; otherwise large entries are a case the oracle cannot check (the reason is
in :attr:`edat_note`) and ``CR0.EDAT`` stays off.

Lowcore
-------
Prefix 0: real 0..0x1fff is the lowcore and every fault overwrites 0xa8..0xaf (TEID).  The caller
must keep tables and data out of it (reserve ``0..0x2000`` in the :class:`FrameAllocator`; if that
range is still free, the machine reserves it).  The machine's own code, buffers and self-test
tables come from the allocator (about 150 KiB with the default chunk size).

Modules: :mod:`~emu.machines.s390x.guest_code` (architecture constants and the probe routines),
:mod:`~emu.machines.s390x.edat` (EDAT enablement inside the loaded library) and
:mod:`~emu.machines.s390x.machine` (:class:`S390xMachine`).
"""

from __future__ import annotations

from emu.machines.s390x.guest_code import (
    CR0_EDAT,
    CR0_SECONDARY_SPACE,
    EXCP_PGM,
    LEVEL_PAGE,
    LEVEL_REGION1,
    LEVEL_REGION2,
    LEVEL_REGION3,
    LEVEL_SEGMENT,
    LOWCORE_SIZE,
    PGM_KINDS,
    PGM_LEVELS,
    PSW_MASK,
    REAL_SPACE_ASCE,
    TEID_ADDRESS,
)
from emu.machines.s390x.machine import S390xMachine

__all__ = [
    "S390xMachine",
    "PSW_MASK",
    "REAL_SPACE_ASCE",
    "LOWCORE_SIZE",
    "TEID_ADDRESS",
    "PGM_KINDS",
    "PGM_LEVELS",
    "LEVEL_PAGE",
    "LEVEL_SEGMENT",
    "LEVEL_REGION3",
    "LEVEL_REGION2",
    "LEVEL_REGION1",
    "EXCP_PGM",
    "CR0_SECONDARY_SPACE",
    "CR0_EDAT",
]
