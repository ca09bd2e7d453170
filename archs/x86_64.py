"""x86-64 paging: 4-level and 5-level (LA57), entry formats, and Linux v6.12's (and v6.1's) view.

Hardware: Intel SDM vol. 3A ch. 4, "Paging": §4.5 (4-level and 5-level paging), Tables 4-14..4-20
(PML5E, PML4E, PDPTE, PDE, PTE formats), §4.6 (access rights), §4.7 (page-fault error code).
The processor the configurations describe (MAXPHYADDR, IA32_EFER.NXE, 1-GByte pages) is
:data:`CPU`; :meth:`X86_64.hw_rejects` says where the SDM makes a walk stop on an entry.
Linux: arch/x86/include/asm/pgtable_types.h (bit names), pgtable.h (predicates), pgtable_64.h
(swap entry encoding), pgtable-invert.h (inverted PFN of non-present entries, L1TF).
Linux v6.1 (Debian linux-source-6.1, 6.1.192) differs in two facts, keyed by ``kconfig.version``:
_PAGE_BIT_DEVMAP is bit 58 (v6.12: 57) and pud_leaf() = pud_large() asks for _PAGE_PRESENT too.

Never imports Unicorn.
"""

from __future__ import annotations

import functools
from typing import Any

import construct as cs

from .base import U64, EntryFormat, HwLevel, PagingConfig
from .kconfig import KernelConfig
from .linux import DEFAULT_KERNEL, LinuxPgtable, Prot, SwpEntry
from .translate import Entry, Fault, Permissions, Translation, cpu_facts, parse_access, read_entry

ARCH = "x86_64"
PAGE_SHIFT = 12


def _le(name: str, source: str, *fields: cs.Construct) -> EntryFormat:
    # Fields are listed from bit 63 down to bit 0; ByteSwapped makes the 8 bytes little-endian.
    return EntryFormat(name, cs.ByteSwapped(cs.BitStruct(*fields)), byteorder="little", source=source)


_LOW_FLAGS = (  # bits 6..0 of every format (SDM Tables 4-14..4-20)
    "d" / cs.BitsInteger(1),  # 6: dirty (leaf); ignored in a table entry, Linux sets it (_KERNPG_TABLE)
    "a" / cs.BitsInteger(1),  # 5: accessed
    "pcd" / cs.BitsInteger(1),  # 4: page-level cache disable
    "pwt" / cs.BitsInteger(1),  # 3: page-level write-through
    "us" / cs.BitsInteger(1),  # 2: user/supervisor
    "rw" / cs.BitsInteger(1),  # 1: read/write
    "p" / cs.BitsInteger(1),  # 0: present
)
_LINUX_HIGH = (  # bits 63..52 of a leaf: XD, protection key, then ignored bits Linux v6.12 names
    "xd" / cs.BitsInteger(1),  # 63: execute-disable (with EFER.NXE); Linux _PAGE_NX
    "pkey" / cs.BitsInteger(4),  # 62:59: protection key (CR4.PKE); Linux _PAGE_PKEY_BIT0..3
    "saved_dirty" / cs.BitsInteger(1),  # 58: ignored; Linux _PAGE_SAVED_DIRTY (_PAGE_BIT_SOFTW5)
    "devmap" / cs.BitsInteger(1),  # 57: ignored; Linux _PAGE_DEVMAP (_PAGE_BIT_SOFTW4)
    "ignored_56_52" / cs.BitsInteger(5),
)
#: The same bits as Linux v6.1 names them (linux v6.1 arch/x86/include/asm/pgtable_types.h:24
#: "#define _PAGE_BIT_SOFTW4 58", :35 "#define _PAGE_BIT_DEVMAP _PAGE_BIT_SOFTW4"; v6.1 has no
#: _PAGE_BIT_SOFTW5 / _PAGE_SAVED_DIRTY, so bit 57 is an ignored bit it does not name).
_LINUX_HIGH_V61 = (
    "xd" / cs.BitsInteger(1),  # 63: execute-disable; Linux _PAGE_NX
    "pkey" / cs.BitsInteger(4),  # 62:59: protection key; Linux _PAGE_PKEY_BIT0..3
    "devmap" / cs.BitsInteger(1),  # 58: ignored; Linux v6.1 _PAGE_DEVMAP (_PAGE_BIT_SOFTW4 = 58)
    "ignored_57_52" / cs.BitsInteger(6),
)
_LINUX_SW = (  # bits 11..9 of a leaf: ignored by hardware, Linux's software bits
    "soft_dirty" / cs.BitsInteger(1),  # 11: _PAGE_SOFT_DIRTY (_PAGE_BIT_SOFTW3)
    "uffd_wp" / cs.BitsInteger(1),  # 10: _PAGE_UFFD_WP (_PAGE_BIT_SOFTW2)
    "special" / cs.BitsInteger(1),  # 9: _PAGE_SPECIAL (_PAGE_BIT_SOFTW1)
)

#: An entry that references a table: PML5E (Table 4-14), PML4E (4-15), PDPTE (4-17), PDE (4-19).
TABLE = _le(
    "table",
    "Intel SDM vol. 3A Tables 4-14, 4-15, 4-17, 4-19",
    "xd" / cs.BitsInteger(1),
    "ignored_62_52" / cs.BitsInteger(11),
    "addr" / cs.BitsInteger(40),  # 51:12 physical address of the next table (M=52 at most)
    "ignored_11_8" / cs.BitsInteger(4),
    "ps" / cs.BitsInteger(1),  # 7: page size; must be 0 here (reserved in PML5E/PML4E)
    *_LOW_FLAGS,
)

def _pdpte_1g(name: str, source: str, high: tuple[cs.Construct, ...]) -> EntryFormat:
    return _le(
        name,
        source,
        *high,
        "addr" / cs.BitsInteger(22),  # 51:30
        "reserved_29_13" / cs.BitsInteger(17),  # must be 0
        "pat" / cs.BitsInteger(1),  # 12
        *_LINUX_SW,
        "g" / cs.BitsInteger(1),  # 8: global; Linux _PAGE_PROTNONE when P=0
        "ps" / cs.BitsInteger(1),  # 7: 1
        *_LOW_FLAGS,
    )


def _pde_2m(name: str, source: str, high: tuple[cs.Construct, ...]) -> EntryFormat:
    return _le(
        name,
        source,
        *high,
        "addr" / cs.BitsInteger(31),  # 51:21
        "reserved_20_13" / cs.BitsInteger(8),  # must be 0
        "pat" / cs.BitsInteger(1),  # 12
        *_LINUX_SW,
        "g" / cs.BitsInteger(1),
        "ps" / cs.BitsInteger(1),
        *_LOW_FLAGS,
    )


def _pte_4k(name: str, source: str, high: tuple[cs.Construct, ...]) -> EntryFormat:
    return _le(
        name,
        source,
        *high,
        "addr" / cs.BitsInteger(40),  # 51:12
        *_LINUX_SW,
        "g" / cs.BitsInteger(1),  # 8: global; Linux _PAGE_PROTNONE when P=0
        "pat" / cs.BitsInteger(1),  # 7
        *_LOW_FLAGS,
    )


#: PDPTE that maps a 1-GByte page (Table 4-16), Linux v6.12's software bits.
PDPTE_1G = _pdpte_1g("pdpte-1g", "Intel SDM vol. 3A Table 4-16", _LINUX_HIGH)

#: PDE that maps a 2-MByte page (Table 4-18).
PDE_2M = _pde_2m("pde-2m", "Intel SDM vol. 3A Table 4-18", _LINUX_HIGH)

#: PTE that maps a 4-KByte page (Table 4-20).
PTE_4K = _pte_4k("pte-4k", "Intel SDM vol. 3A Table 4-20", _LINUX_HIGH)

_V61_SOURCE = "linux v6.1 arch/x86/include/asm/pgtable_types.h (_PAGE_BIT_SOFTW4 58 = _PAGE_BIT_DEVMAP)"
#: The leaf formats as Linux v6.1 names their software bits (the hardware layout is the same).
PDPTE_1G_V61 = _pdpte_1g("pdpte-1g-v6.1", f"Intel SDM vol. 3A Table 4-16; {_V61_SOURCE}", _LINUX_HIGH_V61)
PDE_2M_V61 = _pde_2m("pde-2m-v6.1", f"Intel SDM vol. 3A Table 4-18; {_V61_SOURCE}", _LINUX_HIGH_V61)
PTE_4K_V61 = _pte_4k("pte-4k-v6.1", f"Intel SDM vol. 3A Table 4-20; {_V61_SOURCE}", _LINUX_HIGH_V61)

#: The leaf formats (1 GB, 2 MB, 4 KB) whose software bits each kernel version's headers name.
LEAF_FORMATS: dict[str, tuple[EntryFormat, EntryFormat, EntryFormat]] = {
    "6.12": (PDPTE_1G, PDE_2M, PTE_4K),
    "6.1": (PDPTE_1G_V61, PDE_2M_V61, PTE_4K_V61),
}

#: Linux's non-present swap entry (arch/x86/include/asm/pgtable_64.h, v6.12):
#: | TYPE (59-63) | ~OFFSET (9-58) |0|0|X|X| X| E|F|SD|0|
SWAP = _le(
    "swap",
    "linux v6.12 arch/x86/include/asm/pgtable_64.h (swap entry layout comment)",
    "type" / cs.BitsInteger(5),  # 63:59  __swp_type
    "offset_inv" / cs.BitsInteger(50),  # 58:9  ~offset (inverted: high physical bits set, L1TF)
    "protnone" / cs.BitsInteger(1),  # 8  must be 0 (G/PROTNONE alias)
    "pse" / cs.BitsInteger(1),  # 7  must be 0 (pmd_present() checks PSE)
    "d" / cs.BitsInteger(1),  # 6  unused (KNL erratum may set A/D on non-present entries)
    "a" / cs.BitsInteger(1),  # 5  unused
    "unused_4" / cs.BitsInteger(1),
    "exclusive" / cs.BitsInteger(1),  # 3  _PAGE_SWP_EXCLUSIVE (= _PAGE_PWT)
    "uffd_wp" / cs.BitsInteger(1),  # 2  _PAGE_SWP_UFFD_WP (= _PAGE_USER)
    "soft_dirty" / cs.BitsInteger(1),  # 1  _PAGE_SWP_SOFT_DIRTY (= _PAGE_RW)
    "present" / cs.BitsInteger(1),  # 0  must be 0
)

FORMATS = (TABLE, PDPTE_1G, PDE_2M, PTE_4K, SWAP, PDPTE_1G_V61, PDE_2M_V61, PTE_4K_V61)

# -- arch/x86/include/asm/pgtable_types.h, every mask derived from the declarations above -------
_PAGE_PRESENT = PTE_4K.mask("p")
_PAGE_RW = PTE_4K.mask("rw")
_PAGE_USER = PTE_4K.mask("us")
_PAGE_PWT = PTE_4K.mask("pwt")
_PAGE_PCD = PTE_4K.mask("pcd")
_PAGE_ACCESSED = PTE_4K.mask("a")
_PAGE_DIRTY = PTE_4K.mask("d")
_PAGE_PSE = PDE_2M.mask("ps")
_PAGE_GLOBAL = PTE_4K.mask("g")
_PAGE_PROTNONE = _PAGE_GLOBAL  # _PAGE_BIT_PROTNONE = _PAGE_BIT_GLOBAL
_PAGE_SPECIAL = PTE_4K.mask("special")
_PAGE_UFFD_WP = PTE_4K.mask("uffd_wp")
_PAGE_SOFT_DIRTY = PTE_4K.mask("soft_dirty")
_PAGE_SAVED_DIRTY = PTE_4K.mask("saved_dirty")  # v6.6+ only
_PAGE_DEVMAP = PTE_4K.mask("devmap")  # v6.12 (bit 57); X86_64._PAGE_DEVMAP follows the kconfig's version
_PAGE_NX = PTE_4K.mask("xd")
_PAGE_SWP_SOFT_DIRTY = SWAP.mask("soft_dirty")
_PAGE_SWP_UFFD_WP = SWAP.mask("uffd_wp")
_PAGE_SWP_EXCLUSIVE = SWAP.mask("exclusive")
_PAGE_KNL_ERRATUM_MASK = _PAGE_DIRTY | _PAGE_ACCESSED
_KERNPG_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY
_PAGE_TABLE = _KERNPG_TABLE | _PAGE_USER
PTE_PFN_MASK = PTE_4K.mask("addr")  # PHYSICAL_PAGE_MASK, bits 12..51
PHYSICAL_PMD_PAGE_MASK = PDE_2M.mask("addr")
PHYSICAL_PUD_PAGE_MASK = PDPTE_1G.mask("addr")
PTE_FLAGS_MASK = U64 & ~PTE_PFN_MASK
SWP_TYPE_BITS = SWAP.width("type")
SWP_OFFSET_SHIFT = SWAP.masks["offset_inv"][0] + SWP_TYPE_BITS  # SWP_OFFSET_FIRST_BIT + TYPE_BITS


def _geometry(levels: int) -> tuple[HwLevel, ...]:
    lv = (
        HwLevel("PML4", 39, 9, "p4d"),
        HwLevel("PDPT", 30, 9, "pud", leaf_size=1 << 30),
        HwLevel("PD", 21, 9, "pmd", leaf_size=1 << 21),
        HwLevel("PT", 12, 9, "pte", leaf_size=1 << 12),
    )
    return (HwLevel("PML5", 48, 9, "pgd"), *lv) if levels == 5 else lv


#: The processor every configuration describes: the probe machine's (emu/machines/x86_64/,
#: Unicorn's default x86-64 CPU model), checked against it by tests/verify/test_hw_view_x86_64.py.
#:
#: * ``maxphyaddr``: MAXPHYADDR = CPUID.80000008H:EAX[7:0] of the CPU model (40).  In an entry
#:   with P=1, physical-address bits 51:MAXPHYADDR are reserved (SDM vol. 3A §4.5.4, Tables
#:   4-14..4-20 "Reserved (must be 0)").
#: * ``nxe``: IA32_EFER.NXE (the machine sets it; Linux does wherever the CPU has XD).  With NXE=0
#:   the XD bit (63) of an entry with P=1 is reserved (§4.5.4).
#: * ``gbpages``: 1-GByte pages (CPUID.80000001H:EDX.Page1GB[26]), which Linux needs for PUD
#:   leaves (X86_FEATURE_GBPAGES).  The CPU model does not report them but translates them
#:   (deviation ``x86-1g-pages-without-pdpe1gb``, emu/machines/deviations.py); without them PS=1 in a
#:   PDPTE with P=1 would be reserved (§4.5.4).
CPU: dict[str, Any] = {"maxphyaddr": 40, "nxe": True, "gbpages": True}


def _config(name: str, levels: int, va_bits: int, description: str) -> PagingConfig:
    return PagingConfig(ARCH, name, _geometry(levels), PAGE_SHIFT, va_bits, description, extra=dict(CPU))


CONFIGS = {
    "4level": _config("4level", 4, 48, "4-level paging, 48-bit VA (CR4.LA57=0)"),
    "5level": _config("5level", 5, 57, "5-level paging, 57-bit VA (CR4.LA57=1)"),
}

# -- the architecture's view of an entry (SDM vol. 3A §4.5.4, Tables 4-14..4-20) ---------------
#: The format of an entry that maps a page, by the size it maps (the shift of its address field).
_LEAF_FORMATS = {1 << f.masks["addr"][0]: f for f in (PDPTE_1G, PDE_2M, PTE_4K)}
#: Entry names and the SDM table of each (level, format) pair.
_ENTRY_NAMES = {"PML5": "PML5E", "PML4": "PML4E", "PDPT": "PDPTE", "PD": "PDE", "PT": "PTE"}
_SDM_TABLES = {
    ("PML5", TABLE.name): "4-14",
    ("PML4", TABLE.name): "4-15",
    ("PDPT", PDPTE_1G.name): "4-16",
    ("PDPT", TABLE.name): "4-17",
    ("PD", PDE_2M.name): "4-18",
    ("PD", TABLE.name): "4-19",
    ("PT", PTE_4K.name): "4-20",
}


def _bit_ranges(mask: int) -> str:
    """``0b1110_0100`` -> ``"bits 7:5, 2"``: the set bits of ``mask``, high to low."""
    runs: list[str] = []
    bit = mask.bit_length() - 1
    while bit >= 0:
        if mask >> bit & 1:
            low = bit
            while low > 0 and mask >> (low - 1) & 1:
                low -= 1
            runs.append(str(bit) if low == bit else f"{bit}:{low}")
            bit = low - 1
        else:
            bit -= 1
    return ("bit " if len(runs) == 1 and ":" not in runs[0] else "bits ") + ", ".join(runs)


def canonical(va: int, va_bits: int) -> bool:
    """SDM §3.3.7.1: bits 63..va_bits-1 must all equal bit va_bits-1."""
    top = va >> (va_bits - 1)
    return top == 0 or top == (1 << (65 - va_bits)) - 1


def protnone_mask(val: int) -> int:
    """pgtable-invert.h: a non-zero entry without _PAGE_PRESENT holds an inverted PFN (L1TF)."""
    return U64 if (val and not val & _PAGE_PRESENT) else 0


class X86_64(LinuxPgtable):
    """Linux v6.12's x86-64 page-table API (arch/x86/include/asm/pgtable.h), or v6.1's when
    ``kconfig.version`` is "6.1" (the devmap bit and pud_leaf() differ, see the module).

    ``pti`` models CONFIG_PAGE_TABLE_ISOLATION, which makes pgd_bad/p4d_bad ignore _PAGE_NX.
    """

    arch = ARCH
    #: Physical memory kept out of tables and folios: Linux reserves the low 64K
    #: (CONFIG_X86_RESERVE_LOW default, arch/x86/kernel/setup.c), so no table sits at pa 0.
    RESERVED_LOW = 0x10000

    def __init__(self, config: PagingConfig, kernel: str = DEFAULT_KERNEL, *, pti: bool = True,
                 kconfig: KernelConfig | None = None) -> None:
        super().__init__(config, kernel, kconfig)
        self.pgtable_l5_enabled = len(config.levels) == 5
        self.pti = pti
        #: The leaf formats whose software bits this kernel version names (:data:`LEAF_FORMATS`),
        #: and the masks that move between versions, derived from them.
        self.pdpte_1g, self.pde_2m, self.pte_4k = LEAF_FORMATS[self.kconfig.version]
        self._PAGE_DEVMAP = self.pte_4k.mask("devmap")  # v6.12: bit 57; v6.1: bit 58
        # Without CONFIG_TRANSPARENT_HUGEPAGE (x86 defconfig) pgtable.h's pmd_trans_huge(),
        # p?d_devmap() and p?d_special() are not compiled and include/linux/pgtable.h's / mm.h's
        # fallbacks answer 0; ARCH_ENABLE_THP_MIGRATION (arch/x86/Kconfig: "depends on X86_64
        # && TRANSPARENT_HUGEPAGE") goes with it, so swapops.h's PMD swap functions are the stubs.
        # Without CONFIG_NUMA_BALANCING, p?d_protnone() are pgtable.h's "return 0" (v6.12, v6.1).
        self._thp = self.kconfig.enabled("TRANSPARENT_HUGEPAGE")
        self._numa_balancing = self.kconfig.enabled("NUMA_BALANCING")
        self.has_thp_migration = self._thp
        self._reserved_masks: dict[tuple[str, str], int] = {}  # hw_reserved(): (level, format) -> mask

    def section_size_bits(self) -> int:
        # arch/x86/include/asm/sparsemem.h (v6.12 and v6.1): X86_64 "# define SECTION_SIZE_BITS 27"
        return 27

    def max_physmem_bits(self) -> int:
        # arch/x86/include/asm/sparsemem.h: MAX_PHYSMEM_BITS (pgtable_l5_enabled() ? 52 : 46)
        return 52 if self.pgtable_l5_enabled else 46

    # -- table pointers ------------------------------------------------------------------------
    @staticmethod
    def _pfn_mask(val: int, leaf_mask: int) -> int:  # pmd_pfn_mask() / pud_pfn_mask()
        return leaf_mask if val & _PAGE_PSE else PTE_PFN_MASK

    def table_pa(self, linux: str, val: int) -> int:
        if linux == "pud":  # pud_pgtable(): pud_val & pud_pfn_mask
            return val & self._pfn_mask(val, PHYSICAL_PUD_PAGE_MASK)
        if linux == "pmd":  # pmd_page_vaddr(): pmd_val & pmd_pfn_mask
            return val & self._pfn_mask(val, PHYSICAL_PMD_PAGE_MASK)
        return val & PTE_PFN_MASK  # pgd_page_vaddr / p4d_pgtable

    # -- none / bad ----------------------------------------------------------------------------
    def entry_none(self, linux: str, val: int) -> bool:
        if linux == "pgd":  # 5-level: return !native_pgd_val(pgd)
            return val == 0
        # p4d_none/pud_none/pmd_none/pte_none ignore A/D: Xeon Phi (KNL) erratum sets them on
        # non-present entries.
        return val & ~_PAGE_KNL_ERRATUM_MASK == 0

    def upper_present(self, linux: str, val: int) -> bool:
        """v6.12 pgtable.h:1150/1183: ``p?d_flags() & _PAGE_PRESENT``."""
        return bool(val & _PAGE_PRESENT)

    def entry_bad(self, linux: str, val: int) -> bool:
        nx = _PAGE_NX if self.pti else 0
        if linux == "pgd":  # pgd_bad(): exactly _KERNPG_TABLE, ignoring USER (and NX with PTI)
            return (val & PTE_FLAGS_MASK & ~(_PAGE_USER | nx)) != _KERNPG_TABLE
        if linux == "p4d":  # p4d_bad(): nothing beyond _KERNPG_TABLE | USER (| NX with PTI)
            return (val & PTE_FLAGS_MASK & ~(_KERNPG_TABLE | _PAGE_USER | nx)) != 0
        if linux == "pud":  # pud_bad()
            return (self.pud_flags(val) & ~(_KERNPG_TABLE | _PAGE_USER)) != 0
        if linux == "pmd":  # pmd_bad(): tolerate A clear, require P|RW|D
            return (self.pmd_flags(val) & ~(_PAGE_USER | _PAGE_ACCESSED)) != (_KERNPG_TABLE & ~_PAGE_ACCESSED)
        raise ValueError(f"no {linux}_bad on x86-64")

    @staticmethod
    def pud_flags(pud: int) -> int:
        return pud & ~X86_64._pfn_mask(pud, PHYSICAL_PUD_PAGE_MASK) & U64

    @staticmethod
    def pmd_flags(pmd: int) -> int:
        return pmd & ~X86_64._pfn_mask(pmd, PHYSICAL_PMD_PAGE_MASK) & U64

    # -- PUD -----------------------------------------------------------------------------------
    def _pud_present(self, pud: int) -> bool:
        return bool(self.pud_flags(pud) & _PAGE_PRESENT)

    def _pud_leaf(self, pud: int) -> bool:
        if self.kconfig.version == "6.1":
            # linux v6.1 arch/x86/include/asm/pgtable.h:850-855: "#define pud_leaf pud_large",
            # pud_large() is "(pud_val(pud) & (_PAGE_PSE | _PAGE_PRESENT)) == (_PAGE_PSE |
            # _PAGE_PRESENT)" -- PSE and PRESENT (found by the kernel harness on 6.1.192)
            return pud & (_PAGE_PSE | _PAGE_PRESENT) == _PAGE_PSE | _PAGE_PRESENT
        # v6.12 arch/x86/include/asm/pgtable.h: "return pud_val(pud) & _PAGE_PSE;" -- PSE only, no
        # present check (found by the kernel harness: a non-present PUD with PSE is a leaf)
        return bool(pud & _PAGE_PSE)

    def pud_devmap(self, pud: int) -> bool:
        # CONFIG_HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD: !!(pud_val(pud) & _PAGE_DEVMAP) (v6.1 pgtable.h:260)
        return self._thp and bool(pud & self._PAGE_DEVMAP)

    def pud_special(self, pud: int) -> bool:  # v6.12, CONFIG_ARCH_SUPPORTS_PUD_PFNMAP
        return self._thp and bool(self.pud_flags(pud) & _PAGE_SPECIAL)

    def pud_pfn(self, pud: int) -> int:
        pfn = pud ^ protnone_mask(pud)
        return (pfn & self._pfn_mask(pud, PHYSICAL_PUD_PAGE_MASK)) >> PAGE_SHIFT

    # -- PMD -----------------------------------------------------------------------------------
    def _pmd_present(self, pmd: int) -> bool:
        # PSE counts too: split_huge_page temporarily clears _PAGE_PRESENT.
        return bool(self.pmd_flags(pmd) & (_PAGE_PRESENT | _PAGE_PROTNONE | _PAGE_PSE))

    def _pmd_leaf(self, pmd: int) -> bool:
        return bool(self.pmd_flags(pmd) & _PAGE_PSE)

    def pmd_trans_huge(self, pmd: int) -> bool:
        # (pmd_val(pmd) & (_PAGE_PSE|_PAGE_DEVMAP)) == _PAGE_PSE, with this version's _PAGE_DEVMAP
        return self._thp and pmd & (_PAGE_PSE | self._PAGE_DEVMAP) == _PAGE_PSE

    def pmd_devmap(self, pmd: int) -> bool:
        return self._thp and bool(pmd & self._PAGE_DEVMAP)

    def pmd_special(self, pmd: int) -> bool:  # v6.12, CONFIG_ARCH_SUPPORTS_PMD_PFNMAP
        return self._thp and bool(self.pmd_flags(pmd) & _PAGE_SPECIAL)

    def pmd_pfn(self, pmd: int) -> int:
        pfn = pmd ^ protnone_mask(pmd)
        return (pfn & self._pfn_mask(pmd, PHYSICAL_PMD_PAGE_MASK)) >> PAGE_SHIFT

    # -- PTE -----------------------------------------------------------------------------------
    def pte_none(self, pte: int) -> bool:
        return pte & ~_PAGE_KNL_ERRATUM_MASK == 0

    def pte_present(self, pte: int) -> bool:
        return bool(pte & (_PAGE_PRESENT | _PAGE_PROTNONE))

    def pte_protnone(self, pte: int) -> bool:  # CONFIG_NUMA_BALANCING
        return self._numa_balancing and pte & (_PAGE_PROTNONE | _PAGE_PRESENT) == _PAGE_PROTNONE

    def pmd_protnone(self, pmd: int) -> bool:
        return self._numa_balancing and pmd & (_PAGE_PROTNONE | _PAGE_PRESENT) == _PAGE_PROTNONE

    def pte_pfn(self, pte: int) -> int:
        return ((pte ^ protnone_mask(pte)) & PTE_PFN_MASK) >> PAGE_SHIFT

    def pte_special(self, pte: int) -> bool:
        return bool(pte & _PAGE_SPECIAL)

    def pte_devmap(self, pte: int) -> bool:
        return bool(pte & self._PAGE_DEVMAP)

    # -- swap entries (pgtable_64.h + swapops.h) -------------------------------------------------
    @staticmethod
    def __swp_type(val: int) -> int:
        return val >> (64 - SWP_TYPE_BITS)

    @staticmethod
    def __swp_offset(val: int) -> int:
        return ((~val << SWP_TYPE_BITS) & U64) >> SWP_OFFSET_SHIFT

    def pte_to_swp_entry(self, pte: int) -> SwpEntry:
        """``pte_to_swp_entry()``: clear soft-dirty/uffd-wp/exclusive, then __swp_type/__swp_offset."""
        val = pte & ~(_PAGE_SWP_SOFT_DIRTY | _PAGE_SWP_UFFD_WP | _PAGE_SWP_EXCLUSIVE)
        return SwpEntry(self.__swp_type(val), self.__swp_offset(val))

    def _pmd_to_swp_entry(self, pmd: int) -> SwpEntry:
        val = pmd & ~(_PAGE_SWP_SOFT_DIRTY | _PAGE_SWP_UFFD_WP)
        return SwpEntry(self.__swp_type(val), self.__swp_offset(val))

    def swp_entry_to_pte(self, entry: SwpEntry, *, exclusive: bool = False) -> int:
        """``swp_entry_to_pte()`` = ``__swp_entry(type, offset)``, offset inverted and shifted."""
        val = ((~entry.offset << SWP_OFFSET_SHIFT) & U64) >> SWP_TYPE_BITS
        val |= entry.type << (64 - SWP_TYPE_BITS)
        return val | (_PAGE_SWP_EXCLUSIVE if exclusive else 0)

    swp_entry_to_pmd = swp_entry_to_pte

    # -- building entries ----------------------------------------------------------------------
    def mk_table(self, linux: str, table_pa: int) -> int:
        """``pgd_populate``/``p4d_populate``/``pud_populate``/``pmd_populate``: _PAGE_TABLE | pa."""
        if table_pa & ~PTE_PFN_MASK:
            raise ValueError(f"table address {table_pa:#x} is not a 4K-aligned 52-bit address")
        return TABLE.build(p=1, rw=1, us=1, a=1, d=1, addr=table_pa >> PAGE_SHIFT)

    def _prot_bits(self, prot: Prot) -> int:
        """The pgprot (PAGE_NONE, or PAGE_READONLY/SHARED[_EXEC]: pgtable_types.h) then
        pte_mkyoung()/pte_mkold(), pte_mkdirty(), pte_mkspecial(), pte_mkdevmap() (pgtable.h),
        as the kernel harness's pfn_pte op makes them."""
        val = _PAGE_ACCESSED if prot.young else 0  # PAGE_* have ___A; pte_mkold() clears it
        if prot.protnone:  # PAGE_NONE = ___A | ___G: not present, no user
            val |= _PAGE_PROTNONE
        else:
            val |= _PAGE_PRESENT
            val |= _PAGE_RW if prot.write else 0
            val |= _PAGE_USER if prot.user else 0
            val |= 0 if prot.exec else _PAGE_NX
        if prot.dirty:
            # pte_mkdirty(): _PAGE_DIRTY | _PAGE_SOFT_DIRTY (the latter 0 without
            # CONFIG_MEM_SOFT_DIRTY), then since v6.6 ("x86/mm: Introduce _PAGE_SAVED_DIRTY")
            # pte_mksaveddirty(): a Write=0 entry keeps Dirty in _PAGE_SAVED_DIRTY (bit 58) instead
            # of _PAGE_DIRTY, which would make it a shadow-stack entry (pgtable.h:404).
            val |= _PAGE_DIRTY | (_PAGE_SOFT_DIRTY if self.kconfig.enabled("MEM_SOFT_DIRTY") else 0)
            if self.kconfig.version != "6.1" and not val & _PAGE_RW:
                val = (val & ~_PAGE_DIRTY) | _PAGE_SAVED_DIRTY
        val |= _PAGE_SPECIAL if prot.special else 0
        val |= self._PAGE_DEVMAP if prot.devmap else 0
        return val

    def _pfn_entry(self, pfn: int, prot: Prot, mask: int, huge: bool) -> int:
        flags = self._prot_bits(prot) | (_PAGE_PSE if huge else 0)
        if prot.devmap and not huge:  # pte_mkdevmap() sets _PAGE_SPECIAL | _PAGE_DEVMAP
            flags |= _PAGE_SPECIAL
        pa = ((pfn << PAGE_SHIFT) ^ protnone_mask(flags)) & mask  # pfn_pte(): invert if PROT_NONE
        if (pfn << PAGE_SHIFT) & ~mask:
            raise ValueError(f"pfn {pfn:#x} is not aligned for this leaf size")
        return pa | flags

    def pfn_pte(self, pfn: int, prot: Prot) -> int:
        return self._pfn_entry(pfn, prot, PTE_PFN_MASK, huge=False)

    def pfn_pmd(self, pfn: int, prot: Prot) -> int:
        """``pmd_mkhuge(pfn_pmd(pfn, prot))``."""
        self.check_pmd_prot(prot)
        return self._pfn_entry(pfn, prot, PHYSICAL_PMD_PAGE_MASK, huge=True)

    def pfn_pud(self, pfn: int, prot: Prot) -> int:
        return self._pfn_entry(pfn, prot, PHYSICAL_PUD_PAGE_MASK, huge=True)

    @staticmethod
    def pte_mkspecial(pte: int) -> int:
        """v6.12 arch/x86/include/asm/pgtable.h:532: ``pte_set_flags(pte, _PAGE_SPECIAL)``."""
        return pte | _PAGE_SPECIAL

    @staticmethod
    def pmd_mkhuge(pmd: int) -> int:
        """v6.12 arch/x86/include/asm/pgtable.h:618: ``pmd_set_flags(pmd, _PAGE_PSE)``."""
        return pmd | _PAGE_PSE

    def pmd_mkinvalid(self, pmd: int) -> int:
        """v6.12 arch/x86/include/asm/pgtable.h:808 (same in v6.1): ``pfn_pmd(pmd_pfn(pmd),
        pmd_flags(pmd) & ~(_PAGE_PRESENT | _PAGE_PROTNONE))`` -- pfn_pmd() inverts the pfn again
        when the flags left are non-zero and not present (protnone_mask(), L1TF)."""
        flags = self.pmd_flags(pmd) & ~(_PAGE_PRESENT | _PAGE_PROTNONE)
        pa = ((self.pmd_pfn(pmd) << PAGE_SHIFT) ^ protnone_mask(flags)) & PHYSICAL_PMD_PAGE_MASK
        return pa | flags

    def mk_bad(self, linux: str, val: int) -> int:
        """A table entry that ``pXd_bad()`` rejects but the MMU still walks: bit 9 is ignored by
        the hardware (SDM Tables 4-14..4-19) and outside _KERNPG_TABLE | _PAGE_USER."""
        return val | TABLE.mask("ignored_11_8") & (1 << 9)

    # -- the architecture as third party (SDM vol. 3A §4.5.4, §4.7) ------------------------------
    def hw_format(self, linux: str, val: int) -> EntryFormat:
        """The format the MMU reads an entry at Linux level ``linux`` in, by the entry's own bits:
        a PT entry maps a 4-KByte page (Table 4-20); a PDPTE / PDE with PS=1 maps a 1-GByte /
        2-MByte page (Tables 4-16, 4-18); any other entry references a table (Tables 4-14, 4-15,
        4-17, 4-19 -- at PML5/PML4, where no page can be mapped, PS is a reserved bit)."""
        lv = self.hw_level(linux)
        if lv.leaf_size is not None and (lv.leaf_size == self.PAGE_SIZE or val & _PAGE_PSE):
            return _LEAF_FORMATS[lv.leaf_size]
        return TABLE

    def hw_reserved(self, linux: str, val: int) -> int:
        """The reserved bits (must be 0) that ``val`` sets, read in its own format at Linux level
        ``linux`` (SDM vol. 3A §4.5.4 "reserved bits"; the masks come from the construct formats):
        the format's ``reserved_*`` fields, PS in a PML5E/PML4E, address bits 51:MAXPHYADDR, XD
        with IA32_EFER.NXE=0, PS in a PDPTE without 1-GByte pages.  Only meaningful with P=1."""
        fmt = self.hw_format(linux, val)
        key = (linux, fmt.name)
        cached = self._reserved_masks.get(key)
        if cached is not None:  # the mask depends on the level, the format and the CPU facts only
            return val & cached
        cpu = self.config.extra
        lv = self.hw_level(linux)
        bad = fmt.mask(*(f for f in fmt.fields if f.startswith("reserved")))
        if fmt is TABLE and lv.leaf_size is None:
            bad |= TABLE.mask("ps")  # Tables 4-14, 4-15: "PS: Reserved (must be 0)"
        if fmt is PDPTE_1G and not cpu["gbpages"]:
            bad |= PDPTE_1G.mask("ps")
        bad |= fmt.mask("addr") & ~((1 << cpu["maxphyaddr"]) - 1)  # bits 51:M
        if not cpu["nxe"]:
            bad |= fmt.mask("xd")
        self._reserved_masks[key] = bad
        return val & bad

    def hw_rejects(self, linux: str, val: int, *, leaf: bool, addr: int | None = None) -> str | None:
        """Why the MMU's walk stops at this entry (a #PF, SDM vol. 3A §4.5.4, §4.7), or None.

        The hardware decides by the entry alone, whatever Linux made of it (neither ``leaf`` nor
        ``addr`` is needed: PS selects the format at the PDPT and PD levels, §4.5.4): P=0 (a
        not-present #PF, error code P=0), else any reserved bit set (a #PF with RSVD=1, §4.7).
        Access rights (§4.6) are not reasons here: they depend on the access, not on the entry."""
        lv = self.hw_level(linux)
        entry = _ENTRY_NAMES.get(lv.name, lv.name + "E")
        if not val & _PAGE_PRESENT:
            return f"P=0 in the {entry}: not present (SDM vol. 3A §4.5.4; #PF with P=0, §4.7)"
        bad = self.hw_reserved(linux, val)
        if not bad:
            return None
        fmt = self.hw_format(linux, val)
        what = []
        reserved = bad & fmt.mask(*(f for f in fmt.fields if f.startswith("reserved")))
        for f in fmt.fields:
            if f.startswith("reserved") and reserved & fmt.mask(f):
                what.append(f"{_bit_ranges(reserved & fmt.mask(f))} of reserved {_bit_ranges(fmt.mask(f))}")
        if fmt is TABLE and bad & TABLE.mask("ps"):
            what.append(f"PS=1 ({_bit_ranges(TABLE.mask('ps'))} is reserved in a {entry})")
        if fmt is PDPTE_1G and bad & PDPTE_1G.mask("ps"):
            what.append("PS=1 without 1-GByte pages")
        high = bad & fmt.mask("addr")
        if high:
            m = self.config.extra["maxphyaddr"]
            what.append(f"address {_bit_ranges(high)} at or above MAXPHYADDR ({m})")
        if bad & fmt.mask("xd"):
            what.append("XD=1 with IA32_EFER.NXE=0")
        table = _SDM_TABLES.get((lv.name, fmt.name), "4-14..4-20")
        return f"reserved bits in the {entry}: {'; '.join(what)} (SDM vol. 3A §4.5.4, Table {table}; #PF RSVD=1, §4.7)"

    def hw_uses(self, linux: str, val: int) -> str | None:
        """None on x86-64: the MMU uses an entry only with P=1 (§4.5.4), and every entry with
        _PAGE_PRESENT is neither none nor non-present to Linux (pXd_none() needs it clear;
        pte_present(), pmd_present(), pud_present() all accept it)."""
        return None

    # -- decoding for people -------------------------------------------------------------------
    def entry_format(self, linux: str, val: int) -> EntryFormat:
        """The format an entry at Linux level ``linux`` has, by its own bits."""
        if not val & (_PAGE_PRESENT | _PAGE_PROTNONE) or (linux in ("pgd", "p4d") and not val & _PAGE_PRESENT):
            return SWAP if linux in ("pmd", "pte") and val else (self.pte_4k if linux == "pte" else TABLE)
        if linux == "pte":
            return self.pte_4k
        if linux in ("pud", "pmd") and val & _PAGE_PSE:
            return self.pdpte_1g if linux == "pud" else self.pde_2m
        return TABLE

    def decode(self, linux: str, val: int) -> dict[str, Any]:
        fmt = self.entry_format(linux, val)
        out = {"format": fmt.name, **fmt.parse(val)}  # type: ignore[dict-item]
        return out


OPS_CLASS = X86_64


# -- the architecture's whole walk: foreign tables by the manual (SDM vol. 3A ch. 4) ---------------
#: CPU facts :func:`translate` takes (``cpu=``), with their defaults (the probe machine's CPU):
#: :data:`CPU`'s ``maxphyaddr``/``nxe``/``gbpages``, and ``wp`` (CR0.WP, §4.6.1: supervisor writes
#: honour R/W), ``smep`` (CR4.SMEP: no supervisor fetch from a user-mode address), ``smap``
#: (CR4.SMAP: no supervisor data access to a user-mode address unless ``ac``), ``ac`` (EFLAGS.AC,
#: which lifts SMAP for explicit supervisor data accesses, §4.6.1), ``pke`` (CR4.PKE: protection
#: keys, §4.6.2) and ``pkru`` (the PKRU register: AD of key i is bit 2i, WD bit 2i+1, §2.7, §4.6.2).
TRANSLATE_CPU: dict[str, Any] = {**CPU, "wp": True, "smep": False, "smap": False, "ac": False,
                                 "pke": False, "pkru": 0}

_PF_P, _PF_W, _PF_U, _PF_RSVD, _PF_ID, _PF_PK = 1, 2, 4, 8, 16, 32  # #PF error code bits (SDM vol. 3A §4.7)
_PKEY_SHIFT = 59  # bits 62:59 of a leaf: its protection key (Tables 4-16, 4-18, 4-20)


def _x86_ops(config_or_ops: Any, facts: dict[str, Any]) -> X86_64:
    from dataclasses import replace

    if isinstance(config_or_ops, X86_64):
        config = config_or_ops.config
    elif isinstance(config_or_ops, PagingConfig):
        config = config_or_ops
    else:
        name = str(config_or_ops).split(":", 1)[-1]
        if name not in CONFIGS:
            raise ValueError(f"unknown x86_64 configuration {config_or_ops!r}; known: 4level, 5level")
        config = CONFIGS[name]
    if config.arch != ARCH:
        raise ValueError(f"{config.key} is not an x86_64 configuration")
    return X86_64(replace(config, extra={**config.extra, **facts}))


@functools.lru_cache(maxsize=64)
def _x86_ops_cached(name: str, facts: tuple[tuple[str, Any], ...]) -> X86_64:
    return _x86_ops(name, dict(facts))


def translate(config_or_ops: Any, read: Any, va: int, access: Any = "read", *, cr3: int,
              cpu: dict[str, Any] | None = None, decode: bool = True) -> Translation | Fault:
    """What the SDM says the access ``access`` (``read``/``write``/``fetch``, ``user-`` prefixed
    for CPL 3) to linear address ``va`` does with CR3 = ``cr3`` and the tables ``read(pa)``
    returns: an :class:`archs.translate.Translation` or :class:`archs.translate.Fault`.

    ``config_or_ops``: ``x86_64:4level`` (CR4.LA57=0) or ``x86_64:5level`` (LA57=1), a
    :class:`PagingConfig` or an :class:`X86_64`.  ``cpu``: facts of :data:`TRANSLATE_CPU`.
    ``decode=False`` leaves each trace entry's ``fields`` empty (the construct decoding is
    three quarters of the cost; campaigns such as ``foliowalk conform`` need only the values).
    The rules, in the order the processor applies them:

    * a non-canonical ``va`` (bits 63:47, or 63:56 with LA57, not all equal) is a #GP, kind
      ``general-protection``, code 0 (SDM vol. 3A §3.3.7.1, vol. 1 §3.3.7.1; no walk);
    * the root is CR3 bits 51:12 (§4.5.2, Table 4-12); each entry is read at
      ``table + 8 * index`` (§4.5.4, Figures 4-8..4-11);
    * P=0: #PF, error code P=0 (§4.5.4, §4.7); reserved bits set (:meth:`X86_64.hw_reserved`:
      the format's reserved fields, PS in a PML5E/PML4E, address bits at or above MAXPHYADDR, XD
      without NXE, PS in a PDPTE without 1-GByte pages): #PF with P=1 and RSVD=1 (§4.5.4, §4.7);
    * PS=1 in a PDPTE / PDE maps a 1-GByte / 2-MByte page, a PTE a 4-KByte page (Tables 4-16,
      4-18, 4-20);
    * access rights combine R/W, U/S and XD over every entry (§4.6.1): a violation is a #PF with
      P=1 (§4.7).  W/R, U/S and I/D of the error code follow the access (I/D only with NXE or
      SMEP);
    * with CR4.PKE (``pke``) a user-mode address's data accesses are also subject to PKRU for
      the leaf's protection key (§4.6.2, :func:`_pkru_rights`); an access PKRU forbids is a #PF
      with P=1 and PK=1, whether or not the other rights forbid it too (§4.7 "PK flag (bit 5)",
      §6.15 "Interrupt 14").
    """

    kind, user = parse_access(access)
    facts = cpu_facts(TRANSLATE_CPU, cpu, ARCH)
    if isinstance(config_or_ops, str):
        ops = _x86_ops_cached(config_or_ops, tuple(sorted(facts.items())))
    else:
        ops = _x86_ops(config_or_ops, facts)
    m = facts["maxphyaddr"]
    if not isinstance(cr3, int) or cr3 < 0 or cr3 >> m:
        raise ValueError(f"CR3 {cr3!r} sets bits at or above MAXPHYADDR ({m}): MOV to CR3 would #GP (SDM §4.5.2)")
    if not 0 <= va < 1 << 64:
        raise ValueError(f"linear address {va!r} is not a 64-bit value")
    code = (_PF_W if kind == "write" else 0) | (_PF_U if user else 0)
    if kind == "fetch" and (facts["nxe"] or facts["smep"]):
        code |= _PF_ID
    trace: list[Entry] = []
    va_bits = ops.config.va_bits
    if not canonical(va, va_bits):
        return Fault("general-protection", None, 0,
                     f"non-canonical address: bits 63:{va_bits - 1} of {va:#x} are not all equal "
                     f"(SDM vol. 3A §3.3.7.1 and §6.15: #GP(0), no page walk)", ())
    table = cr3 & PTE_PFN_MASK  # CR3 bits 51:12 (Table 4-12); 11:0 are PWT/PCD or a PCID
    writable = user_ok = True
    xd = False
    for lv in ops.config.levels:
        pa = table + 8 * lv.index(va)
        val = read_entry(read, pa)
        fmt = ops.hw_format(lv.linux, val)
        trace.append(Entry(lv.name, pa, val, fmt.name, fmt.parse(val) if decode else {}))
        entry = _ENTRY_NAMES.get(lv.name, lv.name + "E")
        why = ops.hw_rejects(lv.linux, val, leaf=False)
        if why is not None:
            rsvd = bool(val & _PAGE_PRESENT)
            return Fault("page-fault", lv.name, code | (_PF_P | _PF_RSVD if rsvd else 0), why, tuple(trace))
        writable &= bool(val & _PAGE_RW)
        user_ok &= bool(val & _PAGE_USER)
        xd |= bool(facts["nxe"] and val & _PAGE_NX)
        if fmt is TABLE:
            table = val & TABLE.mask("addr")
            continue
        size = lv.leaf_size or 0
        pa_out = (val & fmt.mask("addr")) | (va & (size - 1))
        perms = _x86_rights(facts, user, writable, user_ok, xd)
        pk_read, pk_write = _pkru_rights(facts, user, user_ok, val)
        pk_refused = {"read": not pk_read, "write": not pk_write, "fetch": False}[kind]
        refused = {"read": not perms.read, "write": not perms.write, "fetch": not perms.execute}[kind]
        if refused or pk_refused:
            key = f", PKRU for key {val >> _PKEY_SHIFT & 0xF} (§4.6.2)" if pk_refused else ""
            return Fault("page-fault", lv.name, code | _PF_P | (_PF_PK if pk_refused else 0),
                         f"{'user' if user else 'supervisor'} {kind} not allowed by the {entry} path "
                         f"({perms}; R/W {int(writable)}, U/S {int(user_ok)}, XD {int(xd)} over all entries{key}): "
                         f"SDM vol. 3A §4.6; #PF with P=1, §4.7", tuple(trace))
        if not (pk_read and pk_write):
            perms = Permissions(read=perms.read and pk_read, write=perms.write and pk_write,
                                execute=perms.execute, user=perms.user)
        return Translation(pa_out, size, perms, tuple(trace))
    raise AssertionError("the last level maps a page")  # pragma: no cover


def _x86_rights(facts: dict[str, Any], user: bool, writable: bool, user_ok: bool, xd: bool) -> Permissions:
    """SDM vol. 3A §4.6.1: the rights of an access at CPL 3 (``user``) or below, from R/W and U/S
    ANDed over the walk's entries and XD ORed (with NXE)."""

    if user:
        return Permissions(read=user_ok, write=user_ok and writable, execute=user_ok and not xd, user=user_ok)
    smap = facts["smap"] and not facts["ac"] and user_ok  # supervisor data access to a user-mode address
    write = (writable or not facts["wp"]) and not smap
    execute = not xd and not (facts["smep"] and user_ok)
    return Permissions(read=not smap, write=write, execute=execute, user=user_ok)


def _pkru_rights(facts: dict[str, Any], user: bool, user_ok: bool, leaf: int) -> tuple[bool, bool]:
    """(read, write) that protection keys allow a data access (SDM vol. 3A §4.6.2 "Protection
    Keys"; IA-32e paging only, which both configurations are).

    With CR4.PKE=0 the processor associates no keys with linear addresses and PKRU controls
    nothing.  With CR4.PKE=1 the key of a linear address is bits 62:59 of the entry that maps its
    page -- the leaf; the same bits in an entry that references a table are ignored (Tables
    4-15, 4-17, 4-19).  The key of a supervisor-mode address (U/S=0 in some entry) does not
    control access (that is PKS, IA32_PKRS, not modelled: it needs CR4.PKS).  For a user-mode
    address with key i: ADi = PKRU[2i] = 1 permits no data access at all, by user- or
    supervisor-mode accesses alike; WDi = PKRU[2i+1] = 1 forbids user-mode writes, and
    supervisor-mode writes if CR0.WP = 1.  Instruction fetches are not affected (§4.6.2; the
    caller never asks for them)."""
    if not facts["pke"] or not user_ok:
        return True, True
    key = leaf >> _PKEY_SHIFT & 0xF
    ad = bool(facts["pkru"] >> 2 * key & 1)
    wd = bool(facts["pkru"] >> (2 * key + 1) & 1)
    return not ad, not ad and not (wd and (user or facts["wp"]))


# -- Accessed and Dirty flags after an access (SDM vol. 3A §4.8) -----------------------------------
#: An entry's A or D flag after the access: set, unchanged, or left open by the manual.
AD_SET, AD_KEEP, AD_OPEN = "set", "unchanged", "open"


def accessed_dirty(result: Translation | Fault, access: Any = "read") -> tuple[tuple[str, str, str], ...]:
    """What the access that gave ``result`` (:func:`translate`'s answer, with its ``trace``) does
    to the Accessed and Dirty flags of each entry it read: ``((level, A, D), ...)`` top down, each
    flag :data:`AD_SET`, :data:`AD_KEEP` or :data:`AD_OPEN`.

    SDM vol. 3A §4.8: "whenever the processor uses a paging-structure entry as part of
    linear-address translation, it sets the accessed flag in that entry (if it is not already
    set)"; "whenever there is a write to a linear address, the processor sets the dirty flag (if
    it is not already set) in the paging-structure entry that identifies the final physical
    address" -- the leaf only (bit 6 is ignored in entries that reference a table, Tables 4-14,
    4-15, 4-17, 4-19).  So an allowed access sets A everywhere and, for a write, D in the leaf.
    A faulting access writes no memory, so no D, and the manual does not make the translation
    "used" for the entry that stops it (P=0 or a reserved bit: nothing to set; a rights
    violation: the access does not happen) -- A of that entry stays as it was.  Whether the
    entries above it, which the walk did pass, get A is not specified for a faulting access
    (§4.8 ties A to translations used; §4.10.2 lets a processor cache and set them early):
    :data:`AD_OPEN`, as kvm-unit-tests ``x86/access.c`` treats it (``ignore_pde``).
    """
    kind, _user = parse_access(access)
    trace = result.trace
    out: list[tuple[str, str, str]] = []
    if isinstance(result, Translation):
        for i, e in enumerate(trace):
            leaf = i == len(trace) - 1
            out.append((e.level, AD_SET, AD_SET if leaf and kind == "write" else AD_KEEP))
        return tuple(out)
    for i, e in enumerate(trace):
        last = i == len(trace) - 1
        out.append((e.level, AD_KEEP if last else AD_OPEN, AD_KEEP))
    return tuple(out)
