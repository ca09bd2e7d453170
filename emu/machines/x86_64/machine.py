"""The x86-64 machine: Unicorn in long mode with CR3 pointing at the tables under test, probed
by guest loads, stores and fetches at CPL 0 or 3 (see the package docstring).  The batch
probe's methods live in :mod:`emu.machines.x86_64.batch_probe`.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_INTR,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UC_TLB_CPU,
)
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import Uc, UcError

from emu.errors import AddressError, ConfigError, EmulatorError
from emu.machines.base import (
    READ,
    Access,
    Fault,
    ProbeError,
    ProbeResult,
    RawProbes,
    Translation,
)
from emu.machines.ram import FrameAllocator, PhysicalMemory
from emu.machines.x86_64 import batch_probe
from emu.machines.x86_64.guest_code import (
    CHUNK,
    CR0,
    CR0_WP,
    CR4_LA57,
    CR4_PAE,
    CR4_PKE,
    CR4_SMAP,
    CR4_SMEP,
    EFER,
    EFER_NXE,
    EFLAGS_AC,
    ENT_A,
    ENT_ADDR,
    ENT_D,
    ENT_P,
    ENT_RW,
    ENT_US,
    ENT_XD,
    GUEST_LABELS,
    KCODE,
    MARKERS,
    MSR_EFER,
    MSR_STAR,
    PAGE_4K,
    PF_P,
    PF_U,
    PF_W,
    PG_DUMMY,
    PG_HOLE,
    PG_KCODE,
    PG_RO,
    PG_RUN,
    PG_STACK,
    PG_TABLES,
    PG_UCODE,
    STAR,
    TABLE_PAGES,
    U64_MASK,
    UCODE,
    USER_RFLAGS,
    VEC_PF,
)
from emu.machines.x86_64.native import (
    ACT_FINAL_RBX,
    ACT_FINAL_RBX_STORE,
    ACT_OBS_R8,
    ACT_PROV_R8,
    CTL_TLB_FLUSH,
    M_BATCH,
    M_CALIB,
    M_IDLE,
    M_PROBE,
    M_PROBE_FETCH,
    M_RUN,
    NEVER,
    UNMAPPED,
    BatchRecord,
    RunRecord,
    Watchdog,
    page_fault,
    uc_context_restore,
    uc_context_save,
    uc_ctl,
    uc_reg_read,
    uc_reg_write,
    uc_vmem_translate,
    vector_name,
)

_WRPKRU = bytes.fromhex("0f01ef")  # WRPKRU: PKRU = EAX (ECX = EDX = 0), SDM vol. 2


class X86_64Machine:
    """An x86-64 CPU (Unicorn, UC_TLB_CPU) in long mode whose MMU walks tables in ``ram``.

    ``levels`` is 4 (PML4, 48-bit VA) or 5 (PML5 with CR4.LA57, 57-bit VA), SDM vol. 3 §4.5.
    ``timeout_us`` bounds one guest run (one probe; a batch chunk of n addresses gets
    ``timeout_us + n * 200`` µs); a run that overruns is stopped and reported as ``ProbeError``.
    ``nxe`` is IA32_EFER.NXE (default set, as Linux runs; without it XD is a reserved bit, SDM
    vol. 3 §4.5.4, and the machine's own pages do without it).  Frames for the machine's own
    code and tables come from ``alloc`` (about 80 pages).  Call
    ``set_root`` before probing.  Not thread-safe: one caller at a time (``probe_many`` runs the
    engine from a helper thread of its own while it turns results into objects).

    Every access sets Accessed bits (and a write the Dirty bit of the leaf) in the entries the MMU
    uses, as hardware does (SDM vol. 3 §4.8); data is never changed.
    """

    MACHINE_SLOT = 511
    CHUNK = CHUNK

    def __init__(
        self,
        ram: PhysicalMemory,
        alloc: FrameAllocator,
        *,
        levels: int = 4,
        timeout_us: int = 1_000_000,
        nxe: bool = True,
        cpu_model: int | None = None,
    ) -> None:
        if levels not in (4, 5):
            raise ConfigError(
                f"x86-64 paging has 4 levels (PML4) or 5 levels (PML5, CR4.LA57), not {levels!r}"
            )
        if ram.big_endian:
            raise ConfigError("x86-64 guest RAM must be little-endian")
        if not isinstance(timeout_us, int) or timeout_us <= 0:
            raise ConfigError(f"timeout_us must be a positive integer, not {timeout_us!r}")
        self.ram = ram
        self.alloc = alloc
        self.levels = levels
        self.timeout_us = timeout_us
        self._xd = ENT_XD if nxe else 0  # XD in the machine's own entries: reserved without NXE
        # The slot's VA: index 511 at the top level, sign-extended (SDM vol. 3 §4.5: canonical).
        top_shift = 39 if levels == 4 else 48
        self._slot_base = (U64_MASK << (top_shift + 9) | (self.MACHINE_SLOT << top_shift)) & U64_MASK
        self._va_bits_1 = top_shift + 8  # 47 / 56: bits 63..this are equal in a canonical VA
        self._root: int | None = None
        self._smap = False  # set_controls(smap=True): own data pages are supervisor pages
        self._has_pku: bool | None = None  # CPUID.7.0:ECX.PKU, asked on first use
        self._pkru = 0  # PKRU in the saved state (0 after reset, SDM vol. 3A §2.7)

        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        if cpu_model is not None:  # a UC_CPU_X86_* model (default: Unicorn's qemu64)
            uc.ctl_set_cpu_model(cpu_model)
        self._uc = uc
        self._h = uc._uch
        uc.ctl_set_tlb_mode(UC_TLB_CPU)
        uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.host_address)

        self._build_slot()
        self._install_code()

        uc.reg_write(X.UC_X86_REG_CR4, CR4_PAE | (CR4_LA57 if levels == 5 else 0))
        uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, EFER if nxe else EFER & ~EFER_NXE))
        uc.reg_write(X.UC_X86_REG_MSR, (MSR_STAR, STAR))
        uc.reg_write(X.UC_X86_REG_CR0, CR0)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0, 0))  # limit 0: the #GP markers
        uc.reg_write(X.UC_X86_REG_CR3, self._scratch_root)

        self._mode = M_IDLE
        self._run = RunRecord()
        self._batch = BatchRecord()
        self._batch_actions: dict[int, int] = {}
        self._batch_after = 0
        self._batch_next = 0
        self._batch_stop: str | None = None
        self._hook_error: str | None = None
        self._uc_errno = 0  # the UC_ERR_* of the last run that ended in a Unicorn error
        self._ended = False
        self._expect_va = 0
        self._calib_blob = b""
        self._rbuf = ctypes.c_uint64()
        self._rbuf_ref = ctypes.byref(self._rbuf)
        self._wbuf = ctypes.c_uint64()
        self._wbuf_ref = ctypes.byref(self._wbuf)
        self._ctx = uc.context_save()  # scratch blob: hooks read and patch it
        self._ctx_ptr = ctypes.c_void_p(self._ctx.context.value)
        self._base = uc.context_save()  # the pre-fault state every run starts from
        self._err_cell: ctypes.c_int32 | None = None
        self._old_cell: ctypes.c_int32 | None = None
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)
        # Covers every address below the slot: any fetch target (the slot itself is never probed).
        uc.hook_add(UC_HOOK_CODE, self._on_code, begin=0, end=self._slot_base - 1)

        poll = min(max(timeout_us / 4e6, 0.001), 0.05)
        self._watchdog = Watchdog(self._h, poll)
        weakref.finalize(self, self._watchdog.close)

        self._calibrate()
        self._self_check()

    # -- the machine's own tables --------------------------------------------------------------
    def _zeroed_frame(self) -> int:
        pa = self.alloc.alloc(PAGE_4K)
        self.ram.buf[pa : pa + PAGE_4K] = bytes(PAGE_4K)
        return pa

    def _build_slot(self) -> None:
        """Allocate and build the slot's sub-tables and pages (raw entries, SDM vol. 3 §4.5)."""
        ram = self.ram
        inter = ENT_P | ENT_RW | ENT_US | ENT_A  # non-leaf: permissive; each leaf decides
        # Chain below the slot entry: (PML4 for 5-level,) PDPT, PD, PT; entry 0 at each level.
        chain = [self._zeroed_frame() for _ in range(self.levels - 1)]
        for upper, lower in zip(chain[:-1], chain[1:], strict=True):
            ram.write_u64(upper, lower | inter)
        self._slot_next = chain[0]  # what root[511] points to
        pt = chain[-1]
        self._slot_tables = chain
        self._frames: dict[int, int] = {}

        def page(index: int, flags: int) -> int:
            pa = self._zeroed_frame()
            ram.write_u64(pt + 8 * index, pa | flags | ENT_A | ENT_D)
            self._frames[index] = pa
            return pa

        page(PG_KCODE, ENT_P)  # supervisor, read-only, executable
        page(PG_UCODE, ENT_P | ENT_US)  # user, read-only, executable
        xd = self._xd
        page(PG_DUMMY, ENT_P | ENT_RW | ENT_US | xd)
        page(PG_RUN, ENT_P | ENT_RW | ENT_US)
        page(PG_STACK, ENT_P | ENT_RW | ENT_US | xd)
        ro = page(PG_RO, ENT_P | ENT_US | xd)
        ram.tag(ro, PAGE_4K)
        # PG_HOLE stays 0: not present.
        tables = self.alloc.alloc(2 * TABLE_PAGES * PAGE_4K, PAGE_4K)
        ram.buf[tables : tables + 2 * TABLE_PAGES * PAGE_4K] = bytes(2 * TABLE_PAGES * PAGE_4K)
        for i in range(2 * TABLE_PAGES):
            flags = ENT_P | ENT_RW | ENT_US | xd | ENT_A | ENT_D
            ram.write_u64(pt + 8 * (PG_TABLES + i), (tables + i * PAGE_4K) | flags)
        self._atab_pa = tables
        self._rtab_pa = tables + TABLE_PAGES * PAGE_4K
        self._zero_table = bytes(CHUNK * 8)
        # A root of the machine's own, used until set_root (calibration runs on it).
        self._scratch_root = self._zeroed_frame()
        ram.write_u64(self._scratch_root + 8 * self.MACHINE_SLOT, self._slot_next | inter)

    def _va(self, page_index: int, offset: int = 0) -> int:
        return self._slot_base + page_index * PAGE_4K + offset

    def _install_code(self) -> None:
        for index, code in ((PG_KCODE, KCODE), (PG_UCODE, UCODE)):
            pa = self._frames[index]
            self.ram.buf[pa : pa + PAGE_4K] = code.buf
        # The user page has no business with SYSRETQ: a HLT stands where the stub is.
        ucode = self._frames[PG_UCODE]
        self.ram.buf[ucode : ucode + 3] = b"\xf4\xf4\xf4"
        labels = GUEST_LABELS  # the same offsets on both code pages
        self._kcode = self._va(PG_KCODE)
        self._ucode = self._va(PG_UCODE)
        self._user_ends = {self._ucode + off for name, off in labels.items() if name.endswith(".end")}
        self._dummy = self._va(PG_DUMMY)
        acts: dict[int, int] = {}
        for base in (self._kcode, self._ucode):
            acts[base + labels["b_read.access"]] = ACT_FINAL_RBX
            acts[base + labels["b_write.load"]] = ACT_PROV_R8
            acts[base + labels["b_write.store"]] = ACT_FINAL_RBX_STORE
            acts[base + labels["b_fetch.after"]] = ACT_OBS_R8
        self._actions_all = acts

    # -- public API ----------------------------------------------------------------------------
    def reserved_va_range(self) -> tuple[int, int]:
        """The machine's slot as a half-open range ``[start, end)``; ``end`` is 2**64.

        4-level: ``[0xffffff8000000000, 2**64)``; 5-level: ``[0xffff000000000000, 2**64)``.
        """
        return (self._slot_base, 1 << 64)

    def set_root(self, root_pa: int) -> None:
        """Use the root table (PML4 / PML5) at ``root_pa``: write its entry 511, load CR3, flush.

        Entry 511 of the root is overwritten with the machine's slot (present, writable, user,
        accessed; SDM vol. 3 Table 4-14/4-15).  Call again after replacing the root or its
        entry 511.  The state saved here is what every later guest run starts from.
        """
        if not isinstance(root_pa, int) or root_pa & (PAGE_4K - 1):
            raise AddressError(f"root table address {root_pa!r} is not a 4 KiB-aligned integer")
        self.ram.check_range(root_pa, PAGE_4K, "root table")
        if root_pa & ~ENT_ADDR:
            raise AddressError(f"root table address {root_pa:#x} does not fit CR3")
        self.ram.write_u64(root_pa + 8 * self.MACHINE_SLOT, self._slot_next | ENT_P | ENT_RW | ENT_US | ENT_A)
        self._root = root_pa
        self._uc.context_restore(self._base)
        self._uc.reg_write(X.UC_X86_REG_CR3, root_pa)
        self._uc.context_update(self._base)
        self.flush_tlb()

    def set_controls(self, *, wp: bool | None = None, smep: bool | None = None,
                     smap: bool | None = None, ac: bool | None = None,
                     pke: bool | None = None, pkru: int | None = None) -> None:
        """Set CR0.WP (supervisor writes honour R/W, SDM vol. 3A §4.6.1), CR4.SMEP (no
        supervisor fetch from a user-mode address), CR4.SMAP (no supervisor data access to a
        user-mode address unless EFLAGS.AC) and EFLAGS.AC of the CPL-0 probes, CR4.PKE
        (protection keys, §4.6.2) and PKRU, for every later guest run; None leaves a control as
        it is.  The machine's own code page is a supervisor
        page, so its probe code keeps running with SMEP.  With SMAP its own data pages (stack,
        redirect word, address and result tables) become supervisor pages, so the CPL-0 loop
        keeps running; user probes need them as user pages and are refused until SMAP is off.

        CR4.PKE needs a CPU model with PKU in CPUID (e.g. ``UC_CPU_X86_SKYLAKE_SERVER``): without
        it a guest MOV to CR4 setting PKE would #GP (SDM vol. 3A §2.5) and this refuses it.  PKRU
        has no Unicorn register: the guest's own WRPKRU writes it (SDM vol. 2, "WRPKRU": EAX,
        with ECX = EDX = 0 and CR4.PKE = 1 -- set for that one instruction when ``pke`` is off, so
        a PKRU can be loaded that must then have no effect).  The machine's own pages carry key
        0, so AD0 and WD0 (PKRU bits 1:0) must stay 0."""
        uc = self._uc
        if pke or pkru is not None:
            self._check_pku(pkru)
        if smap is not None:
            pt = self._slot_tables[-1]
            pages = [PG_DUMMY, PG_RUN, PG_STACK, *range(PG_TABLES, PG_TABLES + 2 * TABLE_PAGES)]
            for index in pages:
                val = self.ram.read_u64(pt + 8 * index)
                self.ram.write_u64(pt + 8 * index, val & ~ENT_US if smap else val | ENT_US)
            self._smap = smap
        uc.context_restore(self._base)
        for on, reg, bit in ((ac, X.UC_X86_REG_EFLAGS, EFLAGS_AC), (smap, X.UC_X86_REG_CR4, CR4_SMAP),
                             (wp, X.UC_X86_REG_CR0, CR0_WP), (smep, X.UC_X86_REG_CR4, CR4_SMEP),
                             (pke, X.UC_X86_REG_CR4, CR4_PKE)):
            if on is not None:  # set or clear one control bit, the others as they are
                value = uc.reg_read(reg)
                uc.reg_write(reg, value | bit if on else value & ~bit)
        if pkru is not None and pkru != self._pkru:
            self._wrpkru(pkru)
            self._pkru = pkru
        uc.context_update(self._base)
        self.flush_tlb()

    def _check_pku(self, pkru: int | None) -> None:
        """Refuse protection keys the CPU model does not have (CPUID.(EAX=07H,ECX=0):ECX.PKU,
        bit 3; SDM vol. 3A §2.7) and a PKRU that shuts the machine out of its own key-0 pages."""
        if pkru is not None and (not isinstance(pkru, int) or not 0 <= pkru < 1 << 32 or pkru & 3):
            raise ConfigError(f"PKRU {pkru!r} is not a 32-bit value with AD0 = WD0 = 0 "
                              "(the machine's own pages have protection key 0)")
        if self._has_pku is None:
            words = self._cpuid(7, 0)
            self._has_pku = bool(isinstance(words, dict) and words["rcx"] >> 3 & 1)
        if not self._has_pku:
            raise ConfigError("this CPU model has no PKU in CPUID (leaf 7, ECX bit 3): CR4.PKE and PKRU "
                              "need a model that has it, e.g. UC_CPU_X86_SKYLAKE_SERVER")

    def _cpuid(self, leaf: int, sub: int) -> dict[str, int] | Fault | ProbeError:
        """CPUID in the guest (a scratch root if none is set yet)."""
        if self._root is None:
            self.set_root(self._scratch_root)
            try:
                return self.run_code(bytes.fromhex("0fa2"), regs={"rax": leaf, "rcx": sub})
            finally:
                self._root = None
        return self.run_code(bytes.fromhex("0fa2"), regs={"rax": leaf, "rcx": sub})

    def _wrpkru(self, value: int) -> None:
        """PKRU = ``value`` in the saved state by the guest's WRPKRU at CPL 0 (``run_code``), every
        other register as it was.  The run page is a user page: CR4.SMEP is off for the run.
        (Runs of a WRPKRU on the code page that ended in its HLT, done twice, left Unicorn 2.1.4
        not delivering the next #PF to the interrupt hook -- the probe stopped at the faulting
        access; the run page, ending at ``until`` with its translation cache dropped, does not.)"""
        uc = self._uc
        names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{i}" for i in range(8, 16)]
        regs = [getattr(X, f"UC_X86_REG_{n.upper()}") for n in names]
        regs += [X.UC_X86_REG_RIP, X.UC_X86_REG_EFLAGS, X.UC_X86_REG_CR2, X.UC_X86_REG_CR4]
        saved = [uc.reg_read(r) for r in regs]
        uc.reg_write(X.UC_X86_REG_CR4, (saved[-1] | CR4_PKE) & ~CR4_SMEP)
        uc.context_update(self._base)
        out = self.run_code(_WRPKRU, regs={"rax": value, "rcx": 0, "rdx": 0})
        if not isinstance(out, dict):
            raise EmulatorError(f"WRPKRU {value:#x} did not run: {out}")
        for r, v in zip(regs, saved, strict=True):  # the live state has the new PKRU: the rest back
            uc.reg_write(r, v)

    def flush_tlb(self) -> None:
        """Drop every cached translation (QEMU's TLB survives host edits: ORACLE-NOTES "Common")."""
        status = uc_ctl(self._h, CTL_TLB_FLUSH)
        if status:
            raise EmulatorError(f"uc_ctl(UC_CTL_TLB_FLUSH) failed with Unicorn error {status}")

    def scratch_ranges(self) -> list[tuple[int, int]]:
        """``(pa, size)`` of the guest RAM a probe writes: the redirect word, run_code()'s page and
        stack (a #PF pushes its frame there), and the batch address and result tables."""
        pages = [(self._frames[i], PAGE_4K) for i in (PG_DUMMY, PG_RUN, PG_STACK)]
        return pages + [(self._atab_pa, 2 * TABLE_PAGES * PAGE_4K)]

    def registers(self) -> dict[str, int]:
        """CR0, CR3, CR4 and EFER as the guest runs with them (for fixture manifests)."""
        uc = self._uc
        return {
            "CR0": uc.reg_read(X.UC_X86_REG_CR0),
            "CR3": uc.reg_read(X.UC_X86_REG_CR3),
            "CR4": uc.reg_read(X.UC_X86_REG_CR4),
            "EFER": int(uc.reg_read(X.UC_X86_REG_MSR, MSR_EFER)),
        }

    def close(self) -> None:
        """Stop the watchdog thread (the Unicorn engine is freed with the object)."""
        self._watchdog.close()

    def __enter__(self) -> X86_64Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running the guest ---------------------------------------------------------------------
    def _rr(self, reg: int) -> int:
        """Read a 64-bit register (general-purpose, RIP, CR2)."""
        uc_reg_read(self._h, reg, self._rbuf_ref)
        return self._rbuf.value

    def _rw(self, reg: int, value: int) -> None:
        """Write a 64-bit register (general-purpose, RIP, CR2)."""
        self._wbuf.value = value
        uc_reg_write(self._h, reg, self._wbuf_ref)

    def _start(self, label: str, user: bool, regs: dict[int, int]) -> tuple[int, int | None]:
        """Restore the pre-fault state, flush the TLB, load registers.

        Returns ``begin`` and the RIP a CPL-0 run ends at (after its HLT); None for a CPL-3 run,
        which the syscall hook ends (``self._ended``).
        """
        uc_context_restore(self._h, self._base.context)
        self.flush_tlb()
        for reg, value in regs.items():
            self._rw(reg, value)
        off = GUEST_LABELS[label]
        if user:
            self._rw(X.UC_X86_REG_RCX, self._ucode + off)
            self._rw(X.UC_X86_REG_R11, USER_RFLAGS)
            return self._kcode + GUEST_LABELS["stub"], None
        return self._kcode + off, self._kcode + GUEST_LABELS[label + ".end"] + 1

    def _emu(self, begin: int, done_rip: int | None, budget_us: float, until: int = NEVER) -> str | None:
        """One ``emu_start``; None if the run ended where it should, else why it did not.

        A run has ended properly if RIP is ``done_rip`` (CPL 0: after the final HLT; run_code:
        its ``until``) or, for ``done_rip`` None, if the syscall hook saw the final SYSCALL.
        """
        self._hook_error = None
        self._ended = False
        self._uc_errno = 0
        gen = self._watchdog.arm(budget_us)
        try:
            self._uc.emu_start(begin, until)
            error = None
        except UcError as exc:
            error = f"Unicorn error: {exc}"
            self._uc_errno = exc.errno
        except Exception as exc:  # an exception raised inside one of our hooks
            error = f"internal error in a hook: {exc!r}"
        finally:
            fired = self._watchdog.disarm(gen)
        rip = self._rr(X.UC_X86_REG_RIP)
        ended = self._ended if done_rip is None else rip == done_rip
        if fired and not (error is None and self._hook_error is None and ended):
            return f"timeout: the guest run did not finish within {budget_us:.0f} µs"
        if error is not None:
            return error
        if self._hook_error is not None:
            return self._hook_error
        if not ended:
            return f"the guest stopped at RIP {rip:#x} before the end of its code"
        return None

    def _decode_fault(self, intno: int, cr2: int, va: int) -> bool:
        """True if an exception at fetch target ``va`` came from decoding past va's page.

        QEMU translates va's page for execution (the fetch under test) before it decodes, so an
        exception raised there after that means the fetch itself succeeded: a #PF on the *next*
        page (the instruction straddles the page end), or a #GP at a canonical ``va`` (in 64-bit
        mode a fetch #GP only comes from a non-canonical address: here the straddled bytes lie
        beyond the top of the lower half, SDM vol. 3 §6.15 "Interrupt 13").
        """
        if intno == VEC_PF:
            return cr2 >> 12 != va >> 12
        if intno == 13:
            top = va >> self._va_bits_1
            return top == 0 or top == (1 << (64 - self._va_bits_1)) - 1
        return False

    def _on_syscall(self, uc: Uc, _data: Any) -> None:
        """The final SYSCALL of a CPL-3 snippet (Unicorn's SYSCALL only calls this hook)."""
        if self._rr(X.UC_X86_REG_RIP) in self._user_ends:
            self._ended = True
            uc.emu_stop()

    def _fault_state(self, patch: bool) -> tuple[int, int]:
        """(error code, CR2) of the exception being handled; clear "exception in flight" if patch.

        The error code exists only in the CPU state blob (ORACLE-NOTES x86-64); its offset and the
        offset of QEMU's ``old_exception`` were located by ``_calibrate``.  Patching restores the
        blob with ``old_exception = -1``, which is what delivering the exception would have done.
        """
        assert self._err_cell is not None and self._old_cell is not None
        uc_context_save(self._h, self._ctx_ptr)
        code = self._err_cell.value & 0xFFFF_FFFF
        if patch:
            self._old_cell.value = -1
            uc_context_restore(self._h, self._ctx_ptr)
        return code, self._rr(X.UC_X86_REG_CR2)

    # -- hooks ---------------------------------------------------------------------------------
    def _on_intr(self, uc: Uc, intno: int, _data: Any) -> None:
        mode = self._mode
        if mode == M_BATCH:
            self._on_batch_intr(uc, intno)
            return
        if mode == M_CALIB:
            uc_context_save(self._h, self._ctx_ptr)
            self._calib_blob = ctypes.string_at(self._ctx_ptr, self._ctx.size)
            self._run.faults.append((intno, 0, 0, self._rr(X.UC_X86_REG_RIP)))
            uc.emu_stop()
            return
        rip = self._rr(X.UC_X86_REG_RIP)
        if self._err_cell is None:
            self._run.faults.append((intno, 0, self._rr(X.UC_X86_REG_CR2), rip))
        else:
            code, cr2 = self._fault_state(patch=False)
            if mode == M_PROBE_FETCH and rip == self._expect_va and self._decode_fault(intno, cr2, rip):
                self._run.fetched = True
            else:
                self._run.faults.append((intno, code, cr2, rip))
        uc.emu_stop()

    def _on_batch_intr(self, uc: Uc, intno: int) -> None:
        code, cr2 = self._fault_state(patch=True)
        rip = self._rr(X.UC_X86_REG_RIP)
        idx = self._rr(X.UC_X86_REG_RCX)
        act = self._batch_actions.get(rip)
        rec = self._batch
        if act == ACT_FINAL_RBX or act == ACT_FINAL_RBX_STORE:
            rec.final[idx] = (intno, code, cr2)
            self._rw(X.UC_X86_REG_RBX, self._dummy)
        elif act == ACT_PROV_R8:
            rec.provisional[idx] = (intno, code, cr2)
            self._rw(X.UC_X86_REG_R8, self._dummy)
        elif act == ACT_OBS_R8:
            rec.observe_failed.add(idx)
            self._rw(X.UC_X86_REG_R8, self._dummy)
        elif self._batch_after and rip < self._slot_base and rip == self._rr(X.UC_X86_REG_RBX):
            # A fetch at va faulted -- or decoding at va crossed into a page that faulted.
            if self._decode_fault(intno, cr2, rip):
                self._rw(X.UC_X86_REG_RIP, self._batch_after)
            else:
                rec.final[idx] = (intno, code, cr2)
                self._rw(X.UC_X86_REG_RIP, self._batch_next)
        else:
            self._batch_stop = (
                f"{vector_name(intno)} (error code {code:#x}, CR2 {cr2:#x}) in the machine's own code"
            )
            uc.emu_stop()

    def _on_code(self, uc: Uc, address: int, size: int, _data: Any) -> None:
        """An instruction below the slot is about to run: only fetch targets get here."""
        mode = self._mode
        if mode == M_BATCH and self._batch_after:
            if address != self._rr(X.UC_X86_REG_RBX):
                self._hook_error = f"code hook at {address:#x}, not at the fetch target"
                uc.emu_stop()
                return
            self._rw(X.UC_X86_REG_RIP, self._batch_after)
        elif mode == M_PROBE_FETCH and address == self._expect_va:
            self._run.fetched = True
            uc.emu_stop()
        elif mode != M_RUN:
            self._hook_error = f"guest code reached {address:#x} outside the machine's slot"
            uc.emu_stop()

    # -- start-up: locate the blob fields, then prove the #PF path -----------------------------
    def _calibrate(self) -> None:
        """Find the error-code and exception-in-flight fields of the CPU state blob at run time.

        ``mov ds, ax`` with a selector beyond the GDT limit (0) raises #GP with that selector as
        error code (SDM vol. 3 §6.13 / "Interrupt 13"); with two different selectors, exactly one
        32-bit field must hold the selector after and not before.  QEMU's ``old_exception`` is the
        field that goes from -1 to 13 in both runs (ORACLE-NOTES: locate at run time).
        """
        err_sets, old_sets = [], []
        self._mode = M_CALIB
        try:
            for marker in MARKERS:
                begin, done = self._start("calib", False, {X.UC_X86_REG_RAX: marker})
                before = bytes(self._uc.context_save())
                self._run = RunRecord()
                self._calib_blob = b""
                reason = self._emu(begin, done, self.timeout_us)
                if not self._run.faults or self._run.faults[0][0] != 13:
                    raise EmulatorError(
                        f"x86-64 start-up: the #GP marker did not raise #GP (faults {self._run.faults}, "
                        f"{reason})"
                    )
                n = min(len(before), len(self._calib_blob)) // 4
                b = np.frombuffer(before, dtype="<i4", count=n)
                a = np.frombuffer(self._calib_blob, dtype="<i4", count=n)
                err_sets.append(set(np.nonzero((a == marker) & (b != marker))[0].tolist()))
                old_sets.append(set(np.nonzero((b == -1) & (a == 13))[0].tolist()))
        finally:
            self._mode = M_IDLE
        err = set.intersection(*err_sets)
        old = set.intersection(*old_sets)
        if len(err) != 1 or len(old) != 1:
            raise EmulatorError(
                "x86-64 start-up: cannot locate the exception error code / exception-in-flight "
                f"fields in the CPU state blob (candidates {sorted(err)} / {sorted(old)})"
            )
        base = self._ctx_ptr.value
        assert base is not None
        self._err_cell = ctypes.c_int32.from_address(base + 4 * err.pop())
        self._old_cell = ctypes.c_int32.from_address(base + 4 * old.pop())

    def _self_check(self) -> None:
        """Prove on the machine's own pages that #PF, its error code and the trap fix work."""
        hole, ro = self._va(PG_HOLE), self._va(PG_RO)
        vas = np.array([hole, hole + 8, hole + 16, ro], dtype=np.uint64)
        raw = RawProbes(np.zeros(4, dtype=np.uint8), np.zeros(4, dtype=np.uint64), np.zeros(4, dtype=np.uint32),
                        "vmem", page_fault)
        errors: dict[int, ProbeError] = {}
        self._probe_many_guest(vas, "read", False, raw, errors, None)
        got = raw.results(errors)
        want: list[ProbeResult] = [Fault("page-fault", None, 0, VEC_PF)] * 3
        want.append(Translation(self._frames[PG_RO], "tag"))
        checks = [(got, want)]
        checks.append(([self._probe_guest(ro, "write", False)], [Fault("page-fault", None, PF_P | PF_W, 14)]))
        checks.append(
            ([self._probe_guest(hole, "write", True)], [Fault("page-fault", None, PF_W | PF_U, 14)])
        )
        for got_, want_ in checks:
            if got_ != want_:
                raise EmulatorError(f"x86-64 start-up self-check failed: got {got_}, expected {want_}")

    # -- observation of the physical address ---------------------------------------------------
    def _vmem(self, vas: Sequence[int], kind: str, user: bool) -> list[int | None]:
        """``uc_vmem_translate`` at the probe's privilege; CR2 saved and restored around it.

        Only called after the guest access of the same kind succeeded, so the A/D bits it sets
        are already set (ORACLE-NOTES "Common": it sets A/D bits and CR2).
        """
        prot = {"read": UC_PROT_READ, "write": UC_PROT_WRITE, "fetch": UC_PROT_EXEC}[kind]
        if user:  # uc_vmem_translate uses the current CPL's MMU index: get to CPL 3 first
            begin, done = self._start("p_user", True, {})
            if self._emu(begin, done, self.timeout_us) is not None:
                return [None] * len(vas)
        else:
            uc_context_restore(self._h, self._base.context)
        cr2 = self._rr(X.UC_X86_REG_CR2)
        out: list[int | None] = []
        pa = ctypes.c_uint64()
        for va in vas:
            status = uc_vmem_translate(self._h, va, prot, ctypes.byref(pa))
            out.append(pa.value if status == 0 else None)
        self._rw(X.UC_X86_REG_CR2, cr2)
        return out

    @staticmethod
    def _no_vmem(kind: str, va: int) -> ProbeError:
        return ProbeError(f"the {kind} at {va:#x} succeeded but uc_vmem_translate found no translation")

    def _observed(self, va: int, word: int, kind: str, user: bool) -> ProbeResult:
        pa = self.ram.tagged_pa(word, va)
        if pa is not None:
            return Translation(pa, "tag")
        vpa = self._vmem([va], kind, user)[0]
        if vpa is None:
            return self._no_vmem(kind, va)
        return Translation(vpa, "vmem")

    # -- single-address probe ------------------------------------------------------------------
    def _check_probe_args(self, access: Access) -> None:
        if self._root is None:
            raise ConfigError("X86_64Machine: call set_root(root_pa) before probing")
        if self._smap and getattr(access, "user", False):
            raise ConfigError("X86_64Machine: user probes need the machine's data pages as user pages: "
                              "set_controls(smap=False) first")
        if not isinstance(access, Access) or access.kind not in ("read", "write", "fetch"):
            raise ConfigError(f"unknown access {access!r}")

    def _reserved_error(self, va: int) -> ProbeError:
        return ProbeError(
            f"{va:#x} lies in the machine's own top-level slot {self.MACHINE_SLOT} "
            f"({self._slot_base:#x}..): it cannot be probed"
        )

    def _pf_result(self, vector: int, code: int, cr2: int, expect_cr2: int) -> ProbeResult:
        if vector != VEC_PF:
            return ProbeError(
                f"{vector_name(vector)} instead of a page fault (error code {code:#x}); "
                "e.g. #GP for a non-canonical address"
            )
        if cr2 >= self._slot_base > expect_cr2:
            return ProbeError(
                f"page fault on the machine's own slot (CR2 {cr2:#x}, error code {code:#x}): "
                "root entry 511 was changed after set_root()"
            )
        if cr2 != expect_cr2:
            return ProbeError(
                f"page fault with CR2 {cr2:#x}, expected {expect_cr2:#x} (error code {code:#x})"
            )
        return Fault("page-fault", None, code, VEC_PF)

    def probe(self, va: int, access: Access = READ) -> ProbeResult:
        """Translate ``va`` by one guest access, one ``emu_start`` (the per-address baseline).

        read: 8-byte load at ``va & ~7``; write: that load, then a store of the loaded value
        (needs W, leaves memory unchanged); fetch: a jump to ``va`` stopped by a code hook before
        anything there runs.  ``Access(user=True)``: the same at CPL 3.  Returns ``Translation``
        (``observed_by`` "tag" or "vmem"), ``Fault("page-fault", None, error code, 14)``
        (SDM vol. 3 §4.7) or ``ProbeError`` (another exception, a Unicorn error, a timeout).
        """
        self._check_probe_args(access)
        if isinstance(va, bool) or not isinstance(va, (int, np.integer)) or not 0 <= va <= U64_MASK:
            raise AddressError(f"virtual address {va!r} is not a 64-bit unsigned integer")
        va = int(va)
        if va >= self._slot_base:
            return self._reserved_error(va)
        return self._probe_guest(va, access.kind, access.user)

    def _probe_guest(self, va: int, kind: str, user: bool) -> ProbeResult:
        try:
            return self._probe_guest_inner(va, kind, user)
        finally:
            self._mode = M_IDLE

    def _single(self, label: str, user: bool, regs: dict[int, int], mode: int) -> tuple[str | None, RunRecord]:
        begin, done = self._start(label, user, regs)
        self._run = run = RunRecord()
        self._mode = mode
        reason = self._emu(begin, done, self.timeout_us)
        self._mode = M_IDLE
        if run.faults or run.fetched:
            reason = None  # stopped on purpose by a hook
        return reason, run

    def _probe_guest_inner(self, va: int, kind: str, user: bool) -> ProbeResult:
        va_al = va & ~7
        R = X
        code = self._ucode if user else self._kcode
        if kind == "read":
            reason, run = self._single("p_read", user, {R.UC_X86_REG_RBX: va_al}, M_PROBE)
            if self._unmapped_at(reason, "read", code + GUEST_LABELS["p_read.access"]):
                return self._beyond_ram(va, "read", user, reason)
        elif kind == "write":
            regs = {R.UC_X86_REG_RBX: va_al, R.UC_X86_REG_R8: va_al}
            reason, run = self._single("p_write", user, regs, M_PROBE)
            load_at = code + GUEST_LABELS["p_write.load"]
            load_unmapped = self._unmapped_at(reason, "read", load_at)
            if load_unmapped or (reason is None and run.faults and run.faults[0][3] == load_at):
                # The load faulted or reached no RAM: issue the store alone for the write's own
                # error code / translation.
                first = reason if load_unmapped else run.faults[0]
                reason, run2 = self._single("p_store", user, {R.UC_X86_REG_RBX: va_al}, M_PROBE)
                if load_unmapped and self._unmapped_at(reason, "write", code + GUEST_LABELS["p_store.store"]):
                    return self._beyond_ram(va, "write", user, reason)
                if reason is None and not run2.faults:
                    return ProbeError(
                        f"the store to {va:#x} succeeded although the load faulted "
                        f"({first}); memory at {va_al:#x} may have been overwritten"
                    )
                run = run2
        else:
            self._expect_va = va
            reason, run = self._single("p_fetch", user, {R.UC_X86_REG_RBX: va}, M_PROBE_FETCH)
            if self._unmapped_at(reason, "fetch", va):
                vpa = self._vmem([va], "fetch", user)[0]
                if vpa is None:
                    return ProbeError(f"{reason}; uc_vmem_translate found no translation")
                if not self.ram.contains(vpa & ~7, 8):
                    return Translation(vpa, "vmem")  # see _beyond_ram
                # va's own page is in RAM: decoding ran on into a next page with no RAM behind
                # it (an instruction straddling the page end), so the fetch at va succeeded.
                reason, run = None, RunRecord(fetched=True)
            if reason is None and not run.faults and not run.fetched:
                reason = "the fetch neither faulted nor reached the target"
        if reason is not None:
            return ProbeError(reason)
        if run.faults:
            vector, code_, cr2, _rip = run.faults[0]
            return self._pf_result(vector, code_, cr2, va if kind == "fetch" else va_al)
        if kind == "fetch":
            # Observe the physical address: load the word at va & ~7 (same privilege).
            reason, run = self._single("p_read", user, {R.UC_X86_REG_RBX: va_al}, M_PROBE)
            if reason is not None:
                return ProbeError(reason)
            if run.faults:
                return self._observed(va, 0, "fetch", user)  # not a tag: ask uc_vmem_translate
        word = self._rr(X.UC_X86_REG_RAX)
        return self._observed(va, word, kind, user)

    def _unmapped_at(self, reason: str | None, kind: str, rip: int) -> bool:
        """The last run stopped with Unicorn's ``UC_ERR_<kind>UNMAPPED`` at ``rip``: the access
        there was translated, and the physical address it reached has no RAM behind it."""
        return reason is not None and UNMAPPED.get(self._uc_errno) == kind and self._rr(X.UC_X86_REG_RIP) == rip

    def _beyond_ram(self, va: int, kind: str, user: bool, reason: str | None) -> ProbeResult:
        """The answer for a load or store that translated to a physical address outside RAM.

        The MMU's walk succeeded and the leaf maps a physical address where this machine has no
        memory (Unicorn then stops with UC_ERR_*UNMAPPED instead of accessing it; its page walk
        itself reads zeros outside RAM, i.e. a not-present entry, so the error can only come from
        the access).  Hardware accesses non-existent memory without a page fault: the
        translation is the MMU's answer, observed by ``uc_vmem_translate`` (``observed_by="vmem"``).
        ``ProbeError(reason)`` if there is no translation or it lies in RAM after all.
        """
        vpa = self._vmem([va], kind, user)[0]
        if vpa is None or self.ram.contains(vpa & ~7, 8):
            return ProbeError(f"{reason}; uc_vmem_translate gives {'no translation' if vpa is None else hex(vpa)}")
        return Translation(vpa, "vmem")

    # -- batch probe ---------------------------------------------------------------------------
    # -- the batch probe: methods defined in emu/machines/x86_64/batch_probe.py ----------------------
    probe_many = batch_probe.probe_many
    probe_many_raw = batch_probe.probe_many_raw
    _probe_many = batch_probe._probe_many
    _probe_many_guest = batch_probe._probe_many_guest
    _pipeline = batch_probe._pipeline
    _drive_chunk = batch_probe._drive_chunk
    _decode = batch_probe._decode
    _resolve = batch_probe._resolve

    def run_code(
        self, code: bytes, *, user: bool = False, regs: dict[str, int] | None = None
    ) -> dict[str, int] | Fault | ProbeError:
        """Run ``code`` (raw x86-64 bytes, at most 4 KiB - 1) on the machine's run page.

        It starts from the saved pre-fault state (at CPL 3 via SYSRETQ if ``user``), with
        ``regs`` ("rax", "rbx", ... "r15") loaded and RSP at the top of the machine's stack page,
        and ends when RIP reaches the end of ``code``.  Returns the general-purpose registers and
        CR2, or the first exception (``Fault`` for #PF, else ``ProbeError``), or ``ProbeError``
        for a timeout / Unicorn error.  For tests and for showing emulator deviations.
        """
        if self._root is None:
            raise ConfigError("X86_64Machine: call set_root(root_pa) before running code")
        if not 0 < len(code) < PAGE_4K:
            raise ConfigError(f"run_code takes 1..{PAGE_4K - 1} bytes of code, not {len(code)}")
        names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{i}" for i in range(8, 16)]
        ids = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in names}
        unknown = set(regs or {}) - set(ids)
        if unknown:
            raise ConfigError(f"unknown registers {sorted(unknown)}")
        run_pa = self._frames[PG_RUN]
        self.ram.buf[run_pa : run_pa + PAGE_4K] = bytes(code) + b"\xf4" * (PAGE_4K - len(code))
        start = self._va(PG_RUN)
        uc_context_restore(self._h, self._base.context)
        self.flush_tlb()
        self._uc.ctl_remove_cache(start, start + PAGE_4K)  # the page's code changed under QEMU
        self._rw(X.UC_X86_REG_RSP, self._va(PG_STACK, PAGE_4K - 16))
        for name, value in (regs or {}).items():
            self._rw(ids[name], value & U64_MASK)
        if user:
            self._rw(X.UC_X86_REG_RCX, start)
            self._rw(X.UC_X86_REG_R11, USER_RFLAGS)
            begin = self._kcode + GUEST_LABELS["stub"]
        else:
            begin = start
        self._run = run = RunRecord()
        self._mode = M_RUN
        try:
            end = start + len(code)
            reason = self._emu(begin, end, self.timeout_us, until=end)
        finally:
            self._mode = M_IDLE
        if run.faults:
            vector, ecode, cr2, _rip = run.faults[0]
            if vector == VEC_PF:
                return Fault("page-fault", None, ecode, VEC_PF)
            return ProbeError(f"{vector_name(vector)} (error code {ecode:#x}) at RIP {_rip:#x}")
        if reason is not None:
            return ProbeError(reason)
        result = {name: self._rr(rid) for name, rid in ids.items()}
        result["cr2"] = self._rr(X.UC_X86_REG_CR2)
        return result
