"""The compiled walk on x86-64: long mode with the guest's own 4-level tables (2 MiB pages).

* the private area at ``__START_KERNEL_map`` (0xffffffff80000000; the image at ``+16 MiB`` =
  ``__START_KERNEL``, where ``-mcmodel=kernel`` code must be), physically at 64 GiB;
* the linear map at ``__PAGE_OFFSET_BASE_L4`` -> physical 0 (no KASLR), the vmemmap at
  ``__VMEMMAP_BASE_L4`` -> 96 GiB (arch/x86/include/asm/page_64_types.h, pgtable_64_types.h);
* GS base 0, so ``%gs:pcpu_hot`` is the image's own ``pcpu_hot`` (current, preempt count);
* BUG()/WARN() are ``ud2`` (arch/x86/include/asm/bug.h): Unicorn stops with INSN_INVALID.
"""

from __future__ import annotations

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

from archs.base import PagingConfig

from ..runner import HarnessRunError
from .common import PRIV_SIZE, PT_OFF, KernelWalk, _align, _Oops

KVA = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map: the guest-private area's virtual base
PRIV_PA = 0x10_0000_0000  # ... and its physical base (64 GiB, above any foliowalk RAM)
MEMMAP_PA = 0x18_0000_0000  # physical home of the struct page array
PAGE_OFFSET_BASE = 0xFFFF_8880_0000_0000  # __PAGE_OFFSET_BASE_L4 (no KASLR)
VMEMMAP_BASE = 0xFFFF_EA00_0000_0000  # __VMEMMAP_BASE_L4
_CR0 = 0x8001_0011  # PG | WP | NE | ET | PE
_CR4_PAE = 1 << 5
_MSR_EFER = 0xC000_0080
_EFER = (1 << 8) | (1 << 10) | (1 << 11)  # LME | LMA | NXE
_X86_FEATURE_LA57 = 16 * 32 + 16  # arch/x86/include/asm/cpufeatures.h (word 16, bit 16)
_PMD = 1 << 21
_ARGS = (X.UC_X86_REG_RDI, X.UC_X86_REG_RSI, X.UC_X86_REG_RDX, X.UC_X86_REG_RCX)


def image_base(config: PagingConfig) -> int:
    """Where the image is linked: __START_KERNEL (one image serves 4- and 5-level paging)."""
    return KVA + 0x0100_0000


class X86Walk(KernelWalk):
    ARCH = "x86_64"
    RET_INSN = b"\xf4"  # HLT

    def _place(self, config: PagingConfig) -> None:
        self.kva, self.priv_pa = KVA, PRIV_PA
        self.page_offset, self.vmemmap_va, self.memmap_pa = PAGE_OFFSET_BASE, VMEMMAP_BASE, MEMMAP_PA

    def _new_uc(self) -> Uc:
        return Uc(UC_ARCH_X86, UC_MODE_64)

    def map_align(self) -> int:
        return _PMD

    def _paging(self, ram_size: int) -> None:
        """The guest's own 4-level tables, 2 MiB pages: the private area, linear map, vmemmap."""
        uc = self.uc
        pml4 = self._pa(self.kva + PT_OFF)
        nxt = [pml4 + 0x1000]

        def table(parent: int, idx: int) -> int:  # physical addresses throughout
            raw = int.from_bytes(uc.mem_read(parent + 8 * idx, 8), "little")
            if raw & 1:
                return raw & 0x000F_FFFF_FFFF_F000
            t = nxt[0]
            nxt[0] += 0x1000
            uc.mem_write(parent + 8 * idx, (t | 0x3).to_bytes(8, "little"))
            return t

        def map2m(va: int, pa: int, size: int) -> None:
            for off in range(0, size, _PMD):
                v = va + off
                pdpt = table(pml4, (v >> 39) & 511)
                pd = table(pdpt, (v >> 30) & 511)
                uc.mem_write(pd + 8 * ((v >> 21) & 511), ((pa + off) | 0x83).to_bytes(8, "little"))  # P|RW|PS

        map2m(KVA, PRIV_PA, PRIV_SIZE)
        map2m(PAGE_OFFSET_BASE, 0, _align(ram_size, _PMD))
        map2m(VMEMMAP_BASE, MEMMAP_PA, self._memmap_size)
        uc.reg_write(X.UC_X86_REG_CR4, _CR4_PAE)
        uc.reg_write(X.UC_X86_REG_MSR, (_MSR_EFER, _EFER))
        uc.reg_write(X.UC_X86_REG_CR0, _CR0)
        uc.reg_write(X.UC_X86_REG_CR3, pml4)
        uc.reg_write(X.UC_X86_REG_GS_BASE, 0)

    def _kernel_data_arch(self) -> None:
        """arch/x86/kernel/head64.c, arch/x86/mm/kaslr.c: the bases (no KASLR); 5-level:
        check_la57_support() and identify_cpu() put LA57 in boot_cpu_data."""
        self._w64(self._sym("page_offset_base"), PAGE_OFFSET_BASE)
        self._w64(self._sym("vmemmap_base"), VMEMMAP_BASE)
        if len(self.config.levels) == 5:
            self._w64(self._sym("pgdir_shift"), 48, 4)
            self._w64(self._sym("ptrs_per_p4d"), 512, 4)
            cap = self._sym("boot_cpu_data") + self.layout["cpuinfo_x86_capability"]
            word = cap + 4 * (_X86_FEATURE_LA57 // 32)
            self._w64(word, self._r64(word, 4) | 1 << (_X86_FEATURE_LA57 % 32), 4)

    def _set_call(self, args: tuple[int, ...], sp: int, ret: int) -> None:
        uc = self.uc
        for reg, v in zip(_ARGS, args, strict=False):
            uc.reg_write(reg, v)
        sp &= ~0xF
        self._w64(sp, ret)  # the return address, as CALL pushes it
        uc.reg_write(X.UC_X86_REG_RSP, sp)

    def _result(self) -> int:
        return int(self.uc.reg_read(X.UC_X86_REG_RAX))

    def _pc(self) -> int:
        return int(self.uc.reg_read(X.UC_X86_REG_RIP))

    def _lock_arg(self, uc: Uc) -> int:
        return int(uc.reg_read(X.UC_X86_REG_RDI))

    def _run_error(self, fn: str, err: UcError, pc: int) -> int:
        # ud2 of the kernel's BUG()/WARN() (Unicorn stops with INSN_INVALID): a WARN is reported
        # and skipped, as the kernel's #UD handler (handle_bug()) does
        nxt = self._bug_at(pc, 2)
        if nxt is None:
            raise HarnessRunError(f"{fn}: {err} at {self._where(pc)}")
        return nxt

    def _trap(self, fn: str, intno: int, pc: int) -> int:
        if intno == 14:
            raise _Oops(pc, f"page fault at {int(self.uc.reg_read(X.UC_X86_REG_CR2)):#x}")
        if intno == 13:
            raise _Oops(pc, "general protection fault")
        what = "#UD (ud2: BUG/WARN)" if intno == 6 else f"exception {intno}"
        raise HarnessRunError(f"{fn}: guest {what} at {self._where(pc)}")

    def _task_state(self) -> list[tuple[int, int]]:
        # pcpu_hot (current, preempt count) and current->rcu_read_lock_nesting
        return [(self._sym("pcpu_hot"), self.layout["sizeof_pcpu_hot"]),
                (self._sym("fw_task") + self.layout["task_rcu_read_lock_nesting"], 4)]


WALK_CLASS = X86Walk
