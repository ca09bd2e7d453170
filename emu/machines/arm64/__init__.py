"""arm64 (AArch64) machine: EL1&0 stage-1 translation done by Unicorn's MMU, observed with AT.

One ``Uc(UC_ARCH_ARM64)`` (Cortex-A72 model, Unicorn 2.1.4) maps guest RAM at physical 0 with
``mem_map_ptr`` (no copies: the tables the host writes into ``ram.buf`` are the tables the MMU
walks) and runs in ``UC_TLB_CPU`` mode, so the emulated CPU's own table walker translates.

How an address is probed (see ``/work/shared/ORACLE-NOTES.md``, arm64 section):

* **Data accesses -- AT + PAR_EL1.**  Guest code runs at **EL3** with ``SCTLR_EL3.M = 0``, so it is
  fetched from physical addresses and never has to be mapped by the tables under test.  It
  executes ``AT S1E1R`` / ``AT S1E1W`` (EL1 read/write) or ``AT S1E0R`` / ``AT S1E0W`` (EL0 read/
  write) on the address and reads ``PAR_EL1`` (Arm ARM DDI 0487, D19 "PAR_EL1"; the AT
  instructions are in C5 "A64 System instructions for address translation").  ``PAR_EL1.F == 0``
  gives the physical address, ``F == 1`` the fault status code FST (kind and level).  AT from EL3
  translates the EL1&0 regime of the Security state selected by ``SCR_EL3.NS``; we use
  Non-secure, as Linux runs.  AT never raises an exception, so faults cost nothing extra and the
  batch loop needs no fault handling at all.
* **Batches of real fetches and real loads/stores** (``probe_fetch_many``, ``probe_access_many``;
  ``probe_many(fetch)`` uses the first): one ERET into EL1/EL0, then the hooks write the next
  target into the PC (fetches) or X1 (a mapped ``<insn> X2, [X1]; BRK #0`` stub) and Unicorn
  leaves the TB and resumes there: one ``emu_start`` per chunk; each abort's syndrome comes
  from the exception record below.  PSTATE.PAN (``set_pan``, FEAT_PAN; the ``max`` CPU model,
  ``cpu_model=UC_CPU_ARM64_MAX``) goes into EL3's PSTATE for AT S1E1RP/WP (FEAT_PAN2) and into
  SPSR_EL3 of every ERET.
* **Instruction fetches -- a real fetch.**  AT ignores execute permission (ORACLE-NOTES), so a
  fetch probe really branches to the address: EL3 code does ``ERET`` into EL1 (or EL0) at the
  address on a second ``Uc`` that shares the same RAM and carries a code hook on every address.
  The hook stops emulation the moment the first instruction at the target would execute (the
  fetch passed the MMU); a prefetch abort reaches the interrupt hook as exception 3 instead.
  Because exceptions are never delivered architecturally, ``ESR_EL1`` stays 0; the abort's
  syndrome is read from QEMU's ``env->exception`` record inside the ``context_save()`` blob, whose
  offset is located at run time with a marker fault (ORACLE-NOTES "Common": never hard-code blob
  offsets).  The physical address of a successful fetch is read with ``AT S1E1R`` (the walk is the
  same; only the permission check differs).

Set-up facts this module depends on, each measured and re-checked by ``tests/machines/test_machine_arm64.py``:

* Unicorn resets ``SCR_EL3.RW = 0``: EL1 would then be AArch32 and its tables would be walked in
  the LPAE format.  We set ``SCR_EL3.RW`` (bit 10) and ``SCR_EL3.NS`` (bit 0), and
  ``HCR_EL2.RW`` (bit 31) because EL2 exists and is below EL3 in Non-secure state
  (D19 "SCR_EL3", "HCR_EL2").
* PSTATE written from the host does not refresh QEMU's cached hflags (current EL, MMU index); any
  ``CP_REG`` write does (``arm_rebuild_hflags``), so every PSTATE write is followed by one.
* QEMU's TLB survives table edits, register writes and new ``emu_start`` calls: every probe starts
  with ``flush_tlb()``.
* Unicorn's ``timeout`` starts a timer thread per ``emu_start`` (measured ~125 us); single-address
  probes are therefore bounded with an instruction ``count`` instead (their code is straight-line),
  and ``timeout_us`` bounds every batch ``emu_start``.
* ``emu_start(..., until=X)`` re-translates ``X - 1`` through the MMU *after* the run, in whatever
  regime the CPU ended in; when that page faults the stale fault reaches the interrupt hook as a
  spurious prefetch abort.  Fetch probes therefore run with ``until=0`` (for which Unicorn skips
  that step) and stop from the code hook.

Where Unicorn departs from the Arm ARM is listed in :data:`DEVIATIONS`.

Modules: :mod:`~emu.machines.arm64.sysregs` (system registers, TCR_EL1, fault status codes),
:mod:`~emu.machines.arm64.unicorn_deviations` (Unicorn's departures, as data),
:mod:`~emu.machines.arm64.guest_code` (the A64 probe routines) and
:mod:`~emu.machines.arm64.machine` (:class:`Arm64Machine`).
"""

from __future__ import annotations

from emu.machines.arm64.guest_code import BATCH_OFF, LOAD_STUB_OFF, SINGLE_OFF
from emu.machines.arm64.machine import Arm64Machine
from emu.machines.arm64.sysregs import (
    EL1_REGS,
    EXCP_BKPT,
    EXCP_DATA_ABORT,
    EXCP_PREFETCH_ABORT,
    GRANULES,
    HCR_EL2_RW,
    MAIR_EL1_DEFAULT,
    PAR_F,
    PAR_FST_MASK,
    PAR_FST_SHIFT,
    PAR_PA_MASK,
    PSTATE_EL3H,
    PSTATE_PAN,
    SCR_EL3_NS,
    SCR_EL3_RW,
    SCTLR_M,
    SCTLR_WXN,
    SPSR_EL0T,
    SPSR_EL1H,
    SYSREGS,
    TCR_EPD0,
    TCR_EPD1,
    TCR_HA,
    TCR_HPD0,
    TCR_IPS_SHIFT,
    TCR_T0SZ_SHIFT,
    TCR_T1SZ_SHIFT,
    TCR_TG0_SHIFT,
    TCR_TG1_SHIFT,
    VA_BITS_RANGE,
    decode_fst,
    start_level,
    tcr_el1_value,
)
from emu.machines.arm64.unicorn_deviations import DEVIATIONS, Deviation

__all__ = [
    "Arm64Machine",
    "Deviation",
    "DEVIATIONS",
    "SINGLE_OFF",
    "BATCH_OFF",
    "LOAD_STUB_OFF",
    "SYSREGS",
    "EL1_REGS",
    "SCR_EL3_NS",
    "SCR_EL3_RW",
    "HCR_EL2_RW",
    "SCTLR_M",
    "PSTATE_EL3H",
    "PSTATE_PAN",
    "SCTLR_WXN",
    "TCR_HA",
    "TCR_HPD0",
    "SPSR_EL1H",
    "SPSR_EL0T",
    "MAIR_EL1_DEFAULT",
    "PAR_F",
    "PAR_PA_MASK",
    "PAR_FST_SHIFT",
    "PAR_FST_MASK",
    "EXCP_PREFETCH_ABORT",
    "EXCP_DATA_ABORT",
    "EXCP_BKPT",
    "GRANULES",
    "VA_BITS_RANGE",
    "TCR_T0SZ_SHIFT",
    "TCR_EPD0",
    "TCR_TG0_SHIFT",
    "TCR_T1SZ_SHIFT",
    "TCR_EPD1",
    "TCR_TG1_SHIFT",
    "TCR_IPS_SHIFT",
    "decode_fst",
    "start_level",
    "tcr_el1_value",
]
