"""The x86-64 machine: Unicorn's MMU translating through 4-level or 5-level page tables in guest RAM.

Paging is Intel SDM vol. 3 §4.5 ("4-Level Paging and 5-Level Paging"): CR3 holds the root table
(PML4, or PML5 with CR4.LA57), entries have the formats of SDM vol. 3 Tables 4-14 ... 4-20, a page
fault (#PF, vector 14) pushes the error code of SDM vol. 3 §4.7 (Figure 4-12: P, W/R, U/S, RSVD,
I/D, PK, SS, HLAT, SGX) and leaves the faulting linear address in CR2.

How the oracle is made to work on Unicorn 2.1.4 (see ``/work/shared/ORACLE-NOTES.md``, x86-64):

* x86 cannot run code outside its own paging, so the machine owns ONE top-level slot,
  ``MACHINE_SLOT`` = 511 of the root table (VA 0xffffff8000000000.. for 4-level,
  0xffff000000000000.. for 5-level: PML5 index 511 = VA bits 56:48 all ones, sign-extended;
  0xff00000000000000 would be index 256), with its own sub-tables, code, stack, fault-dummy and
  batch tables.  ``set_root`` writes that slot into the root under test.  Addresses in the slot cannot be
  probed (they give ``ProbeError``).
* Guest exceptions are not delivered through an IDT (ORACLE-NOTES "Common"): a ``UC_HOOK_INTR`` hook
  receives the vector only.  The #PF error code exists only inside the CPU state blob
  (``uc_context_save``); its offset is located at start-up with a marker: ``mov ds, ax`` with a
  selector beyond the GDT limit raises #GP with error code = the selector (SDM vol. 3 §6.13, §6.15
  "Interrupt 13"), so two chosen selectors find the one 32-bit field that holds them.  The same
  runs find the "exception in flight" field (-1 before, 13 after the #GP).  Nothing is hard-coded.
* THE TRAP (ORACLE-NOTES x86-64): QEMU never resets "exception in flight" because no exception is
  ever delivered, so the 2nd #PF is turned into #DF (SDM vol. 3 §6.15 "Interrupt 8", Table 6-5) and
  the 3rd is a triple fault that silently ends ``emu_start``.  Fix, twice over: every guest run
  starts from a context saved before any fault (``set_root`` saves it), and a batch run that
  resumes after a fault clears the located field inside the hook (save blob, patch, restore).
* The TLB is not flushed by host writes, register writes or a new ``emu_start`` (ORACLE-NOTES
  "Common"): every probe and every batch starts with ``flush_tlb()``.
* CPL 3: ``reg_write(CS)`` does not change the CPL (ORACLE-NOTES x86-64); user probes enter CPL 3
  with SYSRETQ (SDM vol. 2B "SYSRET", vol. 3 §5.8.8) from a stub on the machine's kernel code
  page (EFER.SCE is set for that, STAR[63:48] gives the user selectors).
* Instruction fetch without executing anything: a ``UC_HOOK_CODE`` hook covering every address
  below the machine slot fires before the first instruction at the target runs (measured: the
  target's bytes never execute) and sends the guest elsewhere.  QEMU translates the target page
  for execution (``get_page_addr_code``: the MMU walk with the I/D semantics) before it decodes, so
  a fault there is the fetch's own #PF; a #PF whose CR2 lies on the *next* page comes from decoding
  an instruction that straddles the page end, i.e. the target page itself was fetched fine.
* The physical address is observed, never computed: a load of the 8-byte word at ``va & ~7``
  returns a tag (``PhysicalMemory.tag``) when the frame was tagged; otherwise
  ``uc_vmem_translate`` (not wrapped by the Python binding: called through ctypes) is asked, after
  the guest access of the same kind succeeded, so the A/D bits it sets are already set, and CR2,
  which it also writes (ORACLE-NOTES "Common"), is saved and restored around it.
* A leaf may map a physical address with no RAM behind it (below MAXPHYADDR, anything goes).
  Hardware then accesses non-existent memory without a page fault; Unicorn, after its walk
  succeeded, stops the run with UC_ERR_READ/WRITE/FETCH_UNMAPPED at the access.  That access is
  a translation: the machine reports ``Translation(pa, "vmem")`` from ``uc_vmem_translate``
  (a batch hands such an address to the per-address probe).  Unicorn's page walk itself reads
  zeros outside RAM (a table pointer there gives a not-present #PF), so the error cannot come
  from the walk.
* Unicorn's own ``emu_start(timeout=...)`` starts and joins a timer thread per call (measured
  ~120 µs per ``emu_start`` on this machine: 8k probes/s at best), so runs are guarded by one
  watchdog thread per machine instead, which calls ``uc_emu_stop`` exactly as Unicorn's timer does.
* Runs end with HLT (CPL 0) or SYSCALL (CPL 3, stopped by a ``UC_HOOK_INSN`` hook), not at an
  ``until`` address: Unicorn re-translates the code around ``until`` after every run, and a
  translation costs a scan of the whole softmmu TLB, which large batches grow (measured: a probe
  went from 7 to 20 µs).  ``until`` is a non-canonical address that is never reached.
* ``probe_many`` overlaps emulation (a driver thread; ``uc_emu_start`` releases the GIL) with
  building the result objects, which costs about as much as the emulation itself;
  ``probe_many_raw`` builds none: the result table becomes numpy columns (status, physical
  address, #PF error code; ``emu.machines.base.RawProbes``), at about twice the rate.

Writes are probed as "load, then store the loaded value back" (needs W, leaves memory unchanged).
QEMU performs the load first, so a page that cannot even be read would report a *read* error
code; in that case the probe then issues the store alone (it must fault too: every condition that
blocks a read blocks a write, SDM vol. 3 §4.6) so the reported error code is the write's
(W/R = 1), as hardware reports for a store.

Modules: :mod:`~emu.machines.x86_64.guest_code` (SDM constants, the slot's layout, the
hand-assembled probe code), :mod:`~emu.machines.x86_64.native` (direct library calls, the
watchdog, run records), :mod:`~emu.machines.x86_64.machine` (:class:`X86_64Machine`: set-up,
registers, single probes, fault hooks, ``run_code``) and :mod:`~emu.machines.x86_64.batch_probe`
(its batch probe).
"""

from __future__ import annotations

from emu.machines.x86_64.guest_code import (
    CHUNK,
    GUEST_CODE,
    GUEST_LABELS,
    GUEST_USER_CODE,
    PF_ID,
    PF_P,
    PF_PK,
    PF_RSVD,
    PF_U,
    PF_W,
)
from emu.machines.x86_64.machine import X86_64Machine

__all__ = [
    "X86_64Machine",
    "CHUNK",
    "GUEST_CODE",
    "GUEST_USER_CODE",
    "GUEST_LABELS",
    "PF_P",
    "PF_W",
    "PF_U",
    "PF_RSVD",
    "PF_ID",
    "PF_PK",
]
