"""The compiled walk on s390x: a z13 in primary-space mode with DAT on, the guest's own tables
behind a region-third ASCE in CR1.

Where the kernel puts things (v6.12, arch/s390/boot/startup.c setup_kernel_memory_layout(),
arch/s390/include/asm/page.h):

* the identity map: ``__va(pa) = pa + __identity_base`` with ``__identity_base = 0`` (the distro
  profile has no RANDOMIZE_IDENTITY_BASE), so the tables under test are read at their own
  addresses; ``__pa(x)`` is ``x - __identity_base`` below ``__kaslr_offset`` (the image's
  virtual base, :data:`KVA` here) and ``x - __kaslr_offset + __kaslr_offset_phys`` above it;
* ``vmemmap`` (a variable, as the decompressor sets it) at :data:`VMEMMAP_VA`, below the image as
  in the kernel's layout;
* the lowcore: ``get_lowcore()`` is 0 (the ALT_LOWCORE alternative unpatched), reached through
  DAT at virtual 0..8 KiB, which real storage's prefixing gives to this CPU's own lowcore; here
  the guest's tables map those two pages to the lowcore in the private area (foliowalk's RAM
  keeps 0..8 KiB free: archs.s390x RESERVED_LOW).  ``fw_cpu_init`` fills ``current_task``,
  ``preempt_count``, ``spinlock_lockval`` as setup_lowcore()/arch_spin_lock_setup() do.

BUG()/WARN() are ``mc 0,0`` (MONITOR CALL, arch/s390/include/asm/bug.h) with a ``__bug_table``
entry; monitor class 0 is enabled in CR8 as the kernel does, so each is a program interruption
(monitor event) that Unicorn reports to the interrupt hook, as it does every translation
exception (the TEID is stored at real 0xa8, ORACLE-NOTES).  EDAT is not used (Unicorn has none):
the guest maps everything with 4 KiB pages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from unicorn import UC_ARCH_S390X, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_MODE_BIG_ENDIAN, Uc
from unicorn import s390x_const as S

from archs.base import PagingConfig

from ..runner import HarnessRunError
from .common import IMAGE_OFF, PRIV_SIZE, PT_OFF, STACK_OFF, KernelWalk, WalkBuildError, _align, _Oops

KVA = 0x300_0000_0000  # __kaslr_offset: the private area (image at +16 MiB), under 4 TiB
VMEMMAP_VA = 0x200_0000_0000  # vmemmap, between the identity map and the image
PRIV_PA = 0x10_0000_0000  # the private area's physical base (64 GiB, above any foliowalk RAM)
MEMMAP_PA = 0x18_0000_0000  # physical home of the struct page array
LOWCORE_OFF = 0  # the lowcore's place in the private area (8 KiB, mapped at virtual 0)
LOWCORE_SIZE = 0x2000
TEID_ADDRESS = 0xA8  # real address the CPU stores the translation-exception identification at
EXCP_PGM = 3  # Unicorn's exception number for every program interruption
_MC = bytes.fromhex("af000000")  # mc 0,0
_PSWM = 0x0400_0001_8000_0000  # DAT | EA | BA (64-bit addressing), primary space, supervisor
_CR8_MONITOR_CLASS_0 = 0x8000  # CR8 bit 48: monitor-mask bit of class 0 (PoP "MONITOR CALL")
# PoP ch. 3 "Translation Tables": region-third table entry TT=01 (0x04), TL=3 (full table);
# invalid bits: region/segment entry I = bit 58 (0x20), page-table entry I = bit 53 (0x400)
_R3 = 0x04 | 0x03
_INVALID_R3 = 0x20 | 0x04 | 0x03
_INVALID_SEG = 0x20
_INVALID_PTE = 0x400
_SEG = 1 << 20
_R3_SIZE = 1 << 31
_ARGS = (S.UC_S390X_REG_R2, S.UC_S390X_REG_R3, S.UC_S390X_REG_R4, S.UC_S390X_REG_R5, S.UC_S390X_REG_R6)


def image_base(config: PagingConfig) -> int:
    """Where the image is linked (one build serves every ASCE type)."""
    return KVA + IMAGE_OFF


class S390xWalk(KernelWalk):
    ARCH = "s390x"
    BIG_ENDIAN = True
    RET_INSN = b"\x07\x00"  # nopr (the code hook on it stops the run)

    def _place(self, config: PagingConfig) -> None:
        self.kva, self.priv_pa, self.memmap_pa = KVA, PRIV_PA, MEMMAP_PA
        self.page_offset, self.vmemmap_va = 0, VMEMMAP_VA
        if self.mm.pgd < LOWCORE_SIZE:  # the first allocation lands there unless it is reserved
            raise WalkBuildError(f"s390x tables under test must leave real 0..{LOWCORE_SIZE:#x} to the lowcore "
                                 "(reserve archs.s390x RESERVED_LOW in the frame allocator)")

    def _new_uc(self) -> Uc:
        uc = Uc(UC_ARCH_S390X, UC_MODE_BIG_ENDIAN)
        # the kernel is compiled for CONFIG_MARCH_Z13 (s390 defconfig), as the predicate runner
        uc.ctl_set_cpu_model(S.UC_CPU_S390X_Z13)
        return uc

    def map_align(self) -> int:
        return _SEG

    def _paging(self, ram_size: int) -> None:
        """Region-third table -> segment tables -> 4 KiB page tables (256 entries, 2 KiB each):
        the identity map of RAM (its first 8 KiB: the lowcore), the vmemmap, the private area."""
        pt_base = self._pa(self.kva + PT_OFF)
        pt_end = self._pa(self.kva + STACK_OFF) - 0x1000
        nxt = [pt_base]

        def alloc(size: int, align: int) -> int:
            a = _align(nxt[0], align)
            nxt[0] = a + size
            if nxt[0] > pt_end:
                raise WalkBuildError("the s390x walk guest's own page tables do not fit its area")
            return a

        r3t = alloc(2048 * 8, 0x1000)
        r3 = np.full(2048, _INVALID_R3, dtype=">u8")
        segs: dict[int, np.ndarray] = {}  # region-third index -> (segment table pa, entries)
        seg_pa: dict[int, int] = {}
        pts: list[tuple[int, np.ndarray]] = []

        def map_range(va: int, pa: np.ndarray) -> None:
            """Map consecutive pages from ``va`` to the physical pages ``pa`` (-1: invalid)."""
            for first in range(0, len(pa), 256):
                v = va + (first << 12)
                i3, isx = v >> 31, (v >> 20) & 2047
                if i3 not in segs:
                    seg_pa[i3] = alloc(2048 * 8, 0x1000)
                    segs[i3] = np.full(2048, _INVALID_SEG, dtype=">u8")
                    r3[i3] = seg_pa[i3] | _R3
                chunk = pa[first:first + 256]
                pte = np.full(256, _INVALID_PTE, dtype=">u8")
                pte[:len(chunk)] = np.where(chunk >= 0, chunk, _INVALID_PTE)
                pt = alloc(256 * 8, 0x800)
                segs[i3][isx] = pt
                pts.append((pt, pte))

        if self.kva % _SEG or VMEMMAP_VA % _SEG:  # pragma: no cover - constants above
            raise WalkBuildError("s390x walk guest areas must be segment aligned")
        pages = _align(ram_size, _SEG) >> 12
        ident = np.arange(pages, dtype=np.int64) << 12
        ident[ident >= ram_size] = -1
        ident[:LOWCORE_SIZE >> 12] = self.priv_pa + LOWCORE_OFF + (np.arange(LOWCORE_SIZE >> 12) << 12)
        map_range(0, ident)
        map_range(VMEMMAP_VA, self.memmap_pa + (np.arange(self._memmap_size >> 12, dtype=np.int64) << 12))
        map_range(self.kva, self.priv_pa + (np.arange(PRIV_SIZE >> 12, dtype=np.int64) << 12))
        uc = self.uc
        uc.mem_write(r3t, r3.tobytes())
        for i3, st in segs.items():
            uc.mem_write(seg_pa[i3], st.tobytes())
        for pt, pte in pts:
            uc.mem_write(pt, pte.tobytes())
        uc.reg_write(S.UC_S390X_REG_CR1, r3t | _R3)  # primary ASCE: region-third, DT=01, TL=3
        uc.reg_write(S.UC_S390X_REG_CR8, _CR8_MONITOR_CLASS_0)
        uc.reg_write(S.UC_S390X_REG_PSWM, _PSWM)
        uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        self._wv(self.kva + LOWCORE_OFF, bytes(LOWCORE_SIZE))
        self._call("fw_cpu_init")

    def _kernel_data_arch(self) -> None:
        lay = self.layout
        vml = self._sym("vm_layout")
        self._w64(vml + lay["vm_layout_kaslr_offset"], self.kva)
        self._w64(vml + lay["vm_layout_kaslr_offset_phys"], self.priv_pa)
        self._w64(vml + lay["vm_layout_identity_base"], 0)
        self._w64(vml + lay["vm_layout_identity_size"], self.mm.ram.size)
        self._w64(self._sym("vmemmap"), VMEMMAP_VA)  # memstart 0: vmemmap is pfn 0's struct page
        self._w64(self._sym("zero_page_mask"), self.mm.zero_page_mask)

    def _set_call(self, args: tuple[int, ...], sp: int, ret: int) -> None:
        uc = self.uc
        for reg, v in zip(_ARGS, args, strict=False):
            uc.reg_write(reg, v)
        uc.reg_write(S.UC_S390X_REG_R14, ret)
        uc.reg_write(S.UC_S390X_REG_R15, (sp - 4096) & ~7)  # the callee's 160-byte save area above
        uc.reg_write(S.UC_S390X_REG_PSWM, _PSWM)

    def _result(self) -> int:
        return int(self.uc.reg_read(S.UC_S390X_REG_R2))

    def _pc(self) -> int:
        return int(self.uc.reg_read(S.UC_S390X_REG_PC))

    def _lock_arg(self, uc: Uc) -> int:
        return int(uc.reg_read(S.UC_S390X_REG_R2))

    def _trap(self, fn: str, intno: int, pc: int) -> int:
        if intno != EXCP_PGM:
            raise HarnessRunError(f"{fn}: guest exception {intno} at {self._where(pc)}")
        # a monitor event is reported after the MONITOR CALL (PoP: the instruction completes);
        # the bug table names the mc itself
        for at in (pc, pc - 4):
            if at in self.build.bugs and bytes(self.uc.mem_read(self._pa(at), 4)) == _MC:
                nxt = self._bug_at(at, 4)
                if nxt is not None:
                    return nxt
        teid = int.from_bytes(self.uc.mem_read(TEID_ADDRESS, 8), "big")
        self.uc.mem_write(TEID_ADDRESS, bytes(8))  # foliowalk's RAM (its reserved low page, zero)
        raise _Oops(pc, f"program interruption (translation of {teid & ~0xFFF:#x})" if teid
                    else "program interruption")

    def _lock_hooks(self) -> list[tuple[int, int, Any]]:
        """PREEMPT_NONE inlines spin_lock() (no _raw_spin_lock()): arch_spin_lock() is a COMPARE
        AND SWAP of the lock word (asm/spinlock.h arch_spin_trylock_once(), asm/atomic_ops.h
        __atomic_cmpxchg_bool()), so the re-run hooks every place of the image's code where a CS
        may start (RS-a format: 0xBA, R1 R3, B2 D2; PoP "COMPARE AND SWAP"; a hook on a byte that
        is no instruction start never fires) and records its operand address.  Only words that
        then hold this CPU's SPINLOCK_LOCKVAL are unlocked."""
        text = min(self.image.segments, key=lambda seg: seg.vaddr)
        hooks = []
        for i in range(len(text.data) - 3):
            if text.data[i] == 0xBA:
                b2, d2 = text.data[i + 2] >> 4, (text.data[i + 2] & 0xF) << 8 | text.data[i + 3]

                def on_code(uc: Uc, _address: int, _size: int, _user: Any, b2: int = b2, d2: int = d2) -> None:
                    base = int(uc.reg_read(S.UC_S390X_REG_R0 + b2)) if b2 else 0
                    self._locks.append((base + d2) & (1 << 64) - 1)

                hooks.append((text.vaddr + i, text.vaddr + i, on_code))
        return hooks

    def _held(self, word: bytes) -> bool:
        # held by this CPU: the lock word is its SPINLOCK_LOCKVAL (the lowcore's spinlock_lockval)
        return word == self._rv(self.kva + LOWCORE_OFF + self.layout["lc_spinlock_lockval"], 4)

    def _task_state(self) -> list[tuple[int, int]]:
        # the lowcore's preempt_count
        return [(self.kva + LOWCORE_OFF + self.layout["lc_preempt_count"], 4)]


WALK_CLASS = S390xWalk
