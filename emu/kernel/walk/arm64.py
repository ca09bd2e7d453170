"""The compiled walk on arm64: EL1 with the MMU on, the guest's own tables in the TTBR1 half.

Where the kernel puts things for the build's granule and VA size (arch/arm64/include/asm/memory.h,
v6.12, VA_BITS_MIN = VA_BITS for every configuration here, i.e. no 52-bit VA):

* ``PAGE_OFFSET = -(1 << VA_BITS)``: the linear map, ``__va(pa) = (pa - PHYS_OFFSET) |
  PAGE_OFFSET`` with ``PHYS_OFFSET = memstart_addr = 0`` (foliowalk's RAM starts at 0);
* ``PAGE_END = -(1 << (VA_BITS - 1))``; ``MODULES_VADDR = PAGE_END``, ``KIMAGE_VADDR =
  MODULES_END = PAGE_END + 2 GiB``: the guest-private area (the image at ``+16 MiB``);
* ``VMEMMAP_START = -1 GiB - VMEMMAP_SIZE`` (asm/pgtable.h ``vmemmap = VMEMMAP_START -
  (memstart_addr >> PAGE_SHIFT)``): the struct page of pfn 0.

The kernel's own values of these macros are exported by fw_walk.c and checked against the ones
computed here.  ``current`` is SP_EL0 (asm/current.h) = ``&fw_task``; per-CPU offsets come from
TPIDR_EL1 (asm/percpu.h, unpatched alternative), 0.  BUG()/WARN() are ``brk #0x800``
(asm/asm-bug.h, asm/brk-imm.h BUG_BRK_IMM) with a ``__bug_table`` entry: Unicorn reports
EXCP_BKPT to the interrupt hook.  Faults reach the hook as EXCP_DATA_ABORT/EXCP_PREFETCH_ABORT.
"""

from __future__ import annotations

import struct
from typing import cast

from unicorn import UC_ARCH_ARM64, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_MODE_ARM, UC_TLB_CPU, Uc
from unicorn import arm64_const as A
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from archs.base import PagingConfig
from emu.machines.arm64.sysregs import (
    EXCP_BKPT,
    EXCP_DATA_ABORT,
    EXCP_PREFETCH_ABORT,
    HCR_EL2_RW,
    MAIR_EL1_DEFAULT,
    SCR_EL3_NS,
    SCR_EL3_RW,
    SCTLR_M,
    SPSR_EL1H,
    SYSREGS,
    start_level,
    tcr_el1_value,
)

from ..runner import HarnessRunError
from .common import IMAGE_OFF, PRIV_SIZE, PT_OFF, RET_OFF, STACK_OFF, KernelWalk, WalkBuildError, _align, _Oops

PRIV_PA = 0x10_0000_0000  # the private area's physical base (64 GiB, above any foliowalk RAM)
MEMMAP_PA = 0x18_0000_0000  # physical home of the struct page array
_MODULES_VSIZE = 2 << 30  # asm/memory.h MODULES_VSIZE (SZ_2G)
_VMEMMAP_END = (1 << 64) - (1 << 30)  # asm/memory.h VMEMMAP_END (-SZ_1G)
_BRK_BUG = 0xD420_0000 | 0x800 << 5  # brk #BUG_BRK_IMM (asm/brk-imm.h)
_ARGS = (A.UC_ARM64_REG_X0, A.UC_ARM64_REG_X1, A.UC_ARM64_REG_X2, A.UC_ARM64_REG_X3)
# Arm ARM D8.3 (VMSAv8-64 descriptors): valid|table, valid|page (level 3), valid|block; AF bit 10,
# SH[9:8] = 0b11 inner shareable, AttrIndx[4:2] = 0 (MAIR Attr0, normal memory), AP[2:1] = 0b00
# (EL1 read/write)
_TABLE = 0b11
_PAGE = 0b11 | 1 << 10 | 0b11 << 8
_BLOCK = 0b01 | 1 << 10 | 0b11 << 8


def page_offset(va_bits: int) -> int:
    return (1 << 64) - (1 << va_bits)  # _PAGE_OFFSET(VA_BITS)


def page_end(va_bits: int) -> int:
    return (1 << 64) - (1 << (va_bits - 1))  # _PAGE_END(VA_BITS_MIN)


def kimage_vaddr(va_bits: int) -> int:
    return page_end(va_bits) + _MODULES_VSIZE  # MODULES_END


def image_base(config: PagingConfig) -> int:
    """Where the image is linked: 16 MiB into KIMAGE_VADDR (one build per granule and VA size)."""
    return kimage_vaddr(config.va_bits) + IMAGE_OFF


class Arm64Walk(KernelWalk):
    ARCH = "arm64"
    RET_INSN = b"\x1f\x20\x03\xd5"  # NOP (the code hook on it stops the run)

    _far_off: int | None = None  # where QEMU's exception.vaddress sits in the context blob

    def _place(self, config: PagingConfig) -> None:
        v, s = config.va_bits, config.page_shift
        self.kva, self.priv_pa, self.memmap_pa = kimage_vaddr(v), PRIV_PA, MEMMAP_PA
        self.page_offset = page_offset(v)
        self._granule = 1 << s
        self._bits = s - 3  # index bits per level
        # VMEMMAP_SIZE = (VMEMMAP_RANGE >> PAGE_SHIFT) * sizeof(struct page); vmemmap at pfn 0
        # (memstart_addr = 0) is VMEMMAP_START
        self.vmemmap_va = _VMEMMAP_END - ((page_end(v) - page_offset(v)) >> s) * self.layout["sizeof_page"]

    def _check_layout(self) -> None:
        lay = self.layout
        mine = {"PAGE_OFFSET": self.page_offset, "PAGE_END": page_end(self.config.va_bits),
                "VMEMMAP_START": self.vmemmap_va, "KIMAGE_VADDR": self.kva, "PAGE_SHIFT": self.config.page_shift}
        for name, value in mine.items():
            if lay[name] != value:
                raise WalkBuildError(f"the arm64 walk image says {name} = {lay[name]:#x}, the guest layout for "
                                     f"{self.config.key} computes {value:#x}: built for another geometry?")

    def _new_uc(self) -> Uc:
        uc = cast(UcAArch64, Uc(UC_ARCH_ARM64, UC_MODE_ARM))
        uc.ctl_set_tlb_mode(UC_TLB_CPU)  # the CPU's own MMU walks the guest's tables
        return cast(Uc, uc)

    def map_align(self) -> int:
        return 1 << (self.config.page_shift + self._bits)  # a level-2 block

    def memmap_align(self) -> int:
        """v6.12 arch/arm64/mm/mmu.c vmemmap_populate(): PMD blocks (vmemmap_populate_hugepages)
        only with 4K pages (2 MiB of struct pages = one 128 MiB section), base pages otherwise --
        so with 16K/64K pages no struct page beyond the last present section is mapped (a level-2
        block here would map 32 MiB / 512 MiB of them and hide the kernel's oops on a pfn there,
        seen on arm64:16k:47 by bench/kernel_walk_diff)."""
        return self.map_align() if self.config.page_shift == 12 else 1 << self.config.page_shift

    def _wr(self, name: str, value: int) -> None:
        cast(UcAArch64, self.uc).cpr_write(*SYSREGS[name], value)

    def _rd(self, name: str) -> int:
        return int(cast(UcAArch64, self.uc).cpr_read(*SYSREGS[name]))

    def _paging(self, ram_size: int) -> None:
        """The guest's own TTBR1 tables (level-2 blocks where aligned, else pages): the private
        area, the linear map of RAM, the vmemmap.  TTBR0 walks are disabled (TCR_EL1.EPD0): the
        tables under test are read only through __va()."""
        cfg, g, bits = self.config, self._granule, self._bits
        s = cfg.page_shift
        level0 = start_level(g, cfg.va_bits)
        pt_base = self._pa(self.kva + PT_OFF)
        pt_end = self._pa(self.kva + STACK_OFF) - 0x1000
        nxt = [pt_base]
        entries: dict[int, int] = {}  # physical address of a descriptor -> its value

        def shift(level: int) -> int:
            return s + bits * (3 - level)

        def index(va: int, level: int) -> int:
            width = cfg.va_bits - shift(level) if level == level0 else bits
            return (va >> shift(level)) & ((1 << width) - 1)

        def new_table() -> int:
            t = _align(nxt[0], g)
            nxt[0] = t + g
            if nxt[0] > pt_end:
                raise WalkBuildError("the arm64 walk guest's own page tables do not fit its area")
            return t

        # the kernel's swapper_pg_dir is TTBR1's root (kept by --gc-sections where the code reads
        # it: in_swapper_pgdir() of the 2-level configurations), else a table of our own
        root = self._pa(self._sym("swapper_pg_dir")) if "swapper_pg_dir" in self.image.symbols else new_table()

        def table_at(parent: int, idx: int) -> int:
            d = entries.get(parent + 8 * idx)
            if d is None:
                t = new_table()
                entries[parent + 8 * idx] = t | _TABLE
                return t
            return d & ((1 << 48) - 1) & ~(g - 1)

        block = 1 << shift(2)

        def map_range(va: int, pa: int, size: int) -> None:
            off, size = 0, _align(size, g)
            while off < size:
                v, p = va + off, pa + off
                t = root
                for level in range(level0, 2):
                    t = table_at(t, index(v, level))
                # t: the level-2 table (the root itself when the walk starts there)
                if v % block == 0 and p % block == 0 and size - off >= block:
                    entries[t + 8 * index(v, 2)] = p | _BLOCK
                    off += block
                    continue
                t = table_at(t, index(v, 2))
                entries[t + 8 * index(v, 3)] = p | _PAGE
                off += g

        map_range(self.kva, self.priv_pa, PRIV_SIZE)
        map_range(self.page_offset, 0, ram_size)
        map_range(self.vmemmap_va, self.memmap_pa, self._memmap_size)
        self.uc.mem_write(pt_base, bytes(nxt[0] - pt_base))
        if root < pt_base:
            self.uc.mem_write(root, bytes(self.layout["PTRS_PER_PGD"] * 8))
        for pa, d in entries.items():
            self.uc.mem_write(pa, d.to_bytes(8, "little"))
        # ORACLE-NOTES MUST-FIX: SCR_EL3.RW (else EL1 tables are walked as AArch32 LPAE); NS and
        # HCR_EL2.RW: the Non-secure EL1&0 regime, as Linux runs in
        self._wr("SCR_EL3", self._rd("SCR_EL3") | SCR_EL3_RW | SCR_EL3_NS)
        self._wr("HCR_EL2", self._rd("HCR_EL2") | HCR_EL2_RW)
        self.uc.reg_write(A.UC_ARM64_REG_PSTATE, SPSR_EL1H)  # EL1h, DAIF masked
        self._wr("MAIR_EL1", MAIR_EL1_DEFAULT)
        self._wr("TCR_EL1", tcr_el1_value(g, cfg.va_bits, epd0=True))
        self._wr("TTBR0_EL1", 0)
        self._wr("TTBR1_EL1", root)
        self._wr("SCTLR_EL1", self._rd("SCTLR_EL1") | SCTLR_M)
        self.uc.reg_write(A.UC_ARM64_REG_SP_EL0, self._sym("fw_task"))  # current (asm/current.h)
        self.uc.reg_write(A.UC_ARM64_REG_TPIDR_EL1, 0)  # this CPU's per-CPU offset
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def _kernel_data_arch(self) -> None:
        self._w64(self._sym("memstart_addr"), 0)  # arm64_memblock_init(): RAM starts at 0

    def _set_call(self, args: tuple[int, ...], sp: int, ret: int) -> None:
        uc = self.uc
        for reg, v in zip(_ARGS, args, strict=False):
            uc.reg_write(reg, v)
        uc.reg_write(A.UC_ARM64_REG_X30, ret)
        uc.reg_write(A.UC_ARM64_REG_SP, sp & ~0xF)

    def _result(self) -> int:
        return int(self.uc.reg_read(A.UC_ARM64_REG_X0))

    def _pc(self) -> int:
        return int(self.uc.reg_read(A.UC_ARM64_REG_PC))

    def _lock_arg(self, uc: Uc) -> int:
        return int(uc.reg_read(A.UC_ARM64_REG_X0))

    def _trap(self, fn: str, intno: int, pc: int) -> int:
        if intno == EXCP_BKPT:
            insn = int.from_bytes(self.uc.mem_read(self._kernel_pa(pc) or 0, 4), "little")
            nxt = self._bug_at(pc, 4) if insn == _BRK_BUG else None
            if nxt is None:
                raise HarnessRunError(f"{fn}: guest brk {insn:#x} that is no BUG/WARN at {self._where(pc)}")
            return nxt
        if intno in (EXCP_DATA_ABORT, EXCP_PREFETCH_ABORT):
            kind = "data" if intno == EXCP_DATA_ABORT else "instruction"
            far = self._fault_address(bytes(self.uc.context_save()))
            raise _Oops(pc, f"{kind} abort" + (f" at {far:#x}" if far is not None else ""))
        raise HarnessRunError(f"{fn}: guest exception {intno} at {self._where(pc)}")

    _LDR_X1_X0 = 0xF940_0401  # ldr x1, [x0, #8]: the faulting VA is in no register
    _MARKERS = (0x5A5A_5000, 0x3C3C_3000)  # offsets into the (unmapped) modules area at PAGE_END

    def _fault_address(self, blob: bytes) -> int | None:
        """The faulting VA (FAR) of the abort just taken.  Unicorn leaves FAR_EL1/ESR_EL1 at 0
        (ORACLE-NOTES); QEMU's ``env->exception.vaddress`` holds it, at an offset of the
        context blob found once by two marker loads (as emu/machines/arm64 locates it)."""
        if self._far_off is None:
            self._far_off = self._locate_far()
        if self._far_off < 0:
            return None
        return int(struct.unpack_from("<Q", blob, self._far_off)[0])

    def _locate_far(self) -> int:
        code = self.kva + RET_OFF + 16
        self._wv(code, self._LDR_X1_X0.to_bytes(4, "little") + self.RET_INSN)
        found: list[set[int]] = []
        for off in self._MARKERS:
            marker = page_end(self.config.va_bits) + off
            self.uc.reg_write(A.UC_ARM64_REG_X0, marker - 8)
            self._exc.clear()
            self.uc.emu_start(code, code + 0x100, count=2)
            if not self._exc or self._exc[0][0] != EXCP_DATA_ABORT:
                return -1
            blob = bytes(self.uc.context_save())
            found.append({o for o in range(0, len(blob) - 7, 8) if struct.unpack_from("<Q", blob, o)[0] == marker})
        common = set.intersection(*found)
        return common.pop() if len(common) == 1 else -1

    def _task_state(self) -> list[tuple[int, int]]:
        # current's thread_info.preempt_count (count and need_resched) and rcu_read_lock_nesting
        task = self._sym("fw_task")
        return [(task + self.layout["task_preempt_count"], 8),
                (task + self.layout["task_rcu_read_lock_nesting"], 4)]


WALK_CLASS = Arm64Walk
