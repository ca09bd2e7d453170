"""s390x (z/Architecture) DAT: the four ASCE types, entry formats, and Linux v6.12's view of them.

Hardware: z/Architecture Principles of Operation, SA22-7832 (PoP), chapter 3 "Storage":
"Address-Space-Control Element" (ASCE), "Dynamic Address Translation" -- "Translation Tables"
(region-first/-second/-third-table entries, segment-table entries, page-table entries, with the
formats for FC=1 of "Enhanced DAT": 1 MB segments under EDAT-1, 2 GB regions under EDAT-2),
"Translation Process" (virtual-address fields RFX/RSX/RTX/SX/PX/BX, table offset/length checks).
Every entry is a 64-bit BIG-ENDIAN doubleword and the PoP numbers its bits MSB first: bit 0 is
2**63, bit 63 is 2**0.  A ``BitStruct`` over big-endian bytes lists its fields from bit 0 down, so
each declaration below follows the manual's figure left to right; :func:`pop_bits` is the one
helper that turns PoP bit numbers into ``(shift, mask)`` (fast paths and tests only -- the
declarations are the source of every mask).

Linux (v6.12): arch/s390/include/asm/pgtable.h (bit names, predicates, pgd/p4d/pud/pmd_offset,
the swap PTE layout comment and __SWP_* macros, pXd_clear), asm/pgalloc.h (pXd_populate,
crst_table_init), asm/mmu_context.h (init_new_context: mm->context.asce), arch/s390/mm/pgalloc.c
(page_table_alloc fills _PAGE_INVALID), arch/s390/mm/init.c (setup_zero_pages: coloured zero
pages), arch/s390/mm/hugetlbpage.c (__pte_to_rste: 2 GB hugetlb leaves), arch/s390/Kconfig (no
ARCH_HAS_PTE_DEVMAP, no ARCH_ENABLE_THP_MIGRATION, no ARCH_SUPPORTS_PMD/PUD_PFNMAP).  Checked
against the Debian linux-source-6.12 tree (6.12.107); its changelog shows no 6.12.y stable change
to these definitions except page_table_alloc()'s switch to whole 4 KB pages (6.12.43 backport of
"s390/mm: Allocate page table with PAGE_SIZE granularity"): v6.12.0 packs two 2 KB page tables
in a 4 KB page, as the builder does.

Linux level folding on s390 is DYNAMIC: there is one set of ``pXd_*`` functions whatever the
ASCE type, and each decides from the table-type (TT) bits of the entry in hand whether its level
is real (``pgd_folded()``: TT < region-first, ...).  ``pgd_offset_raw()`` takes the index shift
from the TT bits of the FIRST entry of the top table; ``p4d/pud/pmd_offset()`` descend only when
the upper entry's TT says it designates a lower table, else return the same pointer.  Empty
entries are therefore never 0: ``pXd_clear()`` / ``crst_table_init()`` store a typed invalid
entry (``_REGION1_ENTRY_EMPTY`` ...), and an empty PTE is exactly ``_PAGE_INVALID``.

Never imports Unicorn.

Why one module of ~930 lines: archs/ keeps one module per architecture (the product card), so
that an entry's construct format, Linux's predicates on it and the architecture's view of it
(``hw_rejects``, ``hw_fault_level``, ``walk_diverges``) are read side by side with the same PoP
references; s390x has four ASCE types, two EDAT leaf formats and its own folding, and every part
here is facts about one entry format.  Nothing here decides a verdict (emu/judge.py does).
"""

from __future__ import annotations

import construct as cs

from .base import U64, EntryFormat, HwLevel, PagingConfig
from .kconfig import KernelConfig
from .linux import DEFAULT_KERNEL, LinuxPgtable, Prot, Reader, SwpEntry
from .translate import Entry, Fault, Permissions, Translation, cpu_facts, parse_access, read_entry

ARCH = "s390x"
PAGE_SHIFT = 12


# -- PoP bit numbering ---------------------------------------------------------------------------
def pop_bits(first: int, last: int | None = None, width: int = 64) -> tuple[int, int]:
    """PoP bits ``first..last`` (bit 0 = most significant bit of a ``width``-bit unit) as
    ``(shift, mask in place)``: e.g. the I bit 58 of a region entry is ``(5, 0x20)``."""
    last = first if last is None else last
    if not 0 <= first <= last < width:
        raise ValueError(f"PoP bits {first}-{last} are not inside a {width}-bit unit")
    shift = width - 1 - last
    return shift, ((1 << (last - first + 1)) - 1) << shift


def pop_range(mask: int, width: int = 64) -> tuple[int, int]:
    """The inverse of :func:`pop_bits`: the PoP ``(first, last)`` bits of a contiguous mask."""
    shift = (mask & -mask).bit_length() - 1 if mask > 0 else 0
    ones = mask >> shift
    if mask <= 0 or mask >> width or ones & (ones + 1):
        raise ValueError(f"{mask:#x} is not one contiguous field of a {width}-bit unit")
    return width - mask.bit_length(), width - 1 - shift


def _be(name: str, source: str, *fields: cs.Construct) -> EntryFormat:
    # Fields are listed from PoP bit 0 (the MSB) to bit 63; the 8 bytes are big-endian.
    return EntryFormat(name, cs.BitStruct(*fields), byteorder="big", source=source)


def _b(n: int) -> cs.BitsInteger:
    return cs.BitsInteger(n)


# -- formats ----------------------------------------------------------------------------------------
#: Address-space-control element (CR1/CR7/CR13): PoP ch. 3 "Address-Space-Control Element",
#: designation types 11/10/01/00 (region-first/-second/-third/segment table).
ASCE = _be(
    "asce",
    "PoP SA22-7832 ch. 3, Address-Space-Control Element; linux v6.12 asm/pgtable.h _ASCE_*",
    "origin" / _b(52),  # 0-51: table origin (a 4K-aligned real address), _ASCE_ORIGIN
    "unassigned_52_53" / _b(2),
    "g" / _b(1),  # 54: subspace-group control
    "p" / _b(1),  # 55: private-space control, _ASCE_PRIVATE_SPACE
    "s" / _b(1),  # 56: storage-alteration-event control, _ASCE_ALT_EVENT
    "x" / _b(1),  # 57: space-switch-event control, _ASCE_SPACE_SWITCH
    "r" / _b(1),  # 58: real-space control, _ASCE_REAL_SPACE
    "unassigned_59" / _b(1),
    "dt" / _b(2),  # 60-61: designation type, _ASCE_TYPE_MASK
    "tl" / _b(2),  # 62-63: table length (in units of 512 entries, minus 1), _ASCE_TABLE_LENGTH
)

#: Region-first/-second/-third-table entry designating the next table (FC=0): PoP ch. 3
#: "Region-Table Entries".  One layout for the three; TT says which table the entry is in.
REGION = _be(
    "region",
    "PoP SA22-7832 ch. 3, Region-Table Entries (FC=0); linux v6.12 asm/pgtable.h _REGION_ENTRY_*",
    "origin" / _b(52),  # 0-51: next table origin (region-second/-third or segment table), 4K-aligned
    "unassigned_52" / _b(1),
    "fc" / _b(1),  # 53: format control, region-third entries only (EDAT-2); 0 here
    "p" / _b(1),  # 54: DAT protection (EDAT-1), _REGION_ENTRY_PROTECT
    "unassigned_55" / _b(1),  # IEP exists only in the FC=1 form; Linux's _REGION_ENTRY_NOEXEC
    "tf" / _b(2),  # 56-57: table offset of the next table, _REGION_ENTRY_OFFSET
    "i" / _b(1),  # 58: region invalid, _REGION_ENTRY_INVALID
    "cr" / _b(1),  # 59: common region (region-third entries, EDAT-2); unassigned in first/second
    "tt" / _b(2),  # 60-61: table type 11/10/01 = region-first/-second/-third
    "tl" / _b(2),  # 62-63: table length of the next table, _REGION_ENTRY_LENGTH
)

#: Region-third-table entry with FC=1: a 2 GB region frame (EDAT-2), PoP ch. 3 "Enhanced DAT".
#: Bits 48-51 are the access-control bits, used only when AV (bit 47) is one; Linux keeps AV=0
#: and puts its software bits there, and READ/WRITE in bits 62-63 (no table length in this form).
REGION3_LARGE = _be(
    "region3-large",
    "PoP SA22-7832 ch. 3, Region-Third-Table Entry FC=1 (EDAT-2); linux v6.12 asm/pgtable.h _REGION3_ENTRY_*",
    "rfaa" / _b(33),  # 0-32: region-frame absolute address, _REGION3_ENTRY_ORIGIN_LARGE
    "unassigned_33_46" / _b(14),
    "av" / _b(1),  # 47: ACCF validity; 0 = ACC and F are not used
    "unused_48" / _b(1),  # ACC bit 0: not used by Linux v6.12
    "soft_dirty" / _b(1),  # 49 (ACC): _REGION3_ENTRY_SOFT_DIRTY (CONFIG_MEM_SOFT_DIRTY)
    "dirty" / _b(1),  # 50 (ACC): _REGION3_ENTRY_DIRTY
    "young" / _b(1),  # 51 (ACC): _REGION3_ENTRY_YOUNG
    "f" / _b(1),  # 52: fetch-protection bit (with AV)
    "fc" / _b(1),  # 53: format control = 1, _REGION3_ENTRY_LARGE
    "p" / _b(1),  # 54: DAT protection, _REGION_ENTRY_PROTECT
    "iep" / _b(1),  # 55: instruction-execution protection, _REGION_ENTRY_NOEXEC
    "unassigned_56_57" / _b(2),
    "i" / _b(1),  # 58: region invalid
    "cr" / _b(1),  # 59: common region
    "tt" / _b(2),  # 60-61: 01
    "write" / _b(1),  # 62: _REGION3_ENTRY_WRITE (software)
    "read" / _b(1),  # 63: _REGION3_ENTRY_READ (software)
)

#: Segment-table entry designating a page table (FC=0): PoP ch. 3 "Segment-Table Entries".
SEGMENT = _be(
    "segment",
    "PoP SA22-7832 ch. 3, Segment-Table Entries (FC=0); linux v6.12 asm/pgtable.h _SEGMENT_ENTRY_*",
    "origin" / _b(53),  # 0-52: page-table origin (2K-aligned), _SEGMENT_ENTRY_ORIGIN
    "fc" / _b(1),  # 53: format control (EDAT-1); 0 here, _SEGMENT_ENTRY_LARGE
    "p" / _b(1),  # 54: DAT protection, _SEGMENT_ENTRY_PROTECT
    "unassigned_55" / _b(1),  # IEP exists only in the FC=1 form; Linux's _SEGMENT_ENTRY_NOEXEC
    "unassigned_56_57" / _b(2),
    "i" / _b(1),  # 58: segment invalid, _SEGMENT_ENTRY_INVALID
    "cs" / _b(1),  # 59: common segment
    "tt" / _b(2),  # 60-61: 00, _SEGMENT_ENTRY_TYPE_MASK
    "unassigned_62_63" / _b(2),
)

#: Segment-table entry with FC=1: a 1 MB segment frame (EDAT-1), PoP ch. 3 "Enhanced DAT".
SEGMENT_LARGE = _be(
    "segment-large",
    "PoP SA22-7832 ch. 3, Segment-Table Entry FC=1 (EDAT-1); linux v6.12 asm/pgtable.h _SEGMENT_ENTRY_*",
    "sfaa" / _b(44),  # 0-43: segment-frame absolute address, _SEGMENT_ENTRY_ORIGIN_LARGE
    "unassigned_44_46" / _b(3),
    "av" / _b(1),  # 47: ACCF validity
    "unused_48" / _b(1),  # ACC bit 0: not used by Linux v6.12
    "soft_dirty" / _b(1),  # 49 (ACC): _SEGMENT_ENTRY_SOFT_DIRTY
    "dirty" / _b(1),  # 50 (ACC): _SEGMENT_ENTRY_DIRTY
    "young" / _b(1),  # 51 (ACC): _SEGMENT_ENTRY_YOUNG
    "f" / _b(1),  # 52: fetch-protection bit (with AV)
    "fc" / _b(1),  # 53: format control = 1, _SEGMENT_ENTRY_LARGE
    "p" / _b(1),  # 54: DAT protection
    "iep" / _b(1),  # 55: instruction-execution protection, _SEGMENT_ENTRY_NOEXEC
    "unassigned_56_57" / _b(2),
    "i" / _b(1),  # 58: segment invalid
    "cs" / _b(1),  # 59: common segment
    "tt" / _b(2),  # 60-61: 00
    "write" / _b(1),  # 62: _SEGMENT_ENTRY_WRITE (software)
    "read" / _b(1),  # 63: _SEGMENT_ENTRY_READ (software)
)

#: Page-table entry (256 of them in a 2 KB page table): PoP ch. 3 "Page-Table Entries".
#: Bits 56-63 are available to programming: Linux's software bits.
PTE = _be(
    "pte",
    "PoP SA22-7832 ch. 3, Page-Table Entries; linux v6.12 asm/pgtable.h _PAGE_*",
    "pfra" / _b(52),  # 0-51: page-frame real address
    "bit52" / _b(1),  # 52: must be 0 (translation-specification exception); Linux _PAGE_LARGE
    "i" / _b(1),  # 53: page invalid, _PAGE_INVALID
    "p" / _b(1),  # 54: DAT protection, _PAGE_PROTECT
    "iep" / _b(1),  # 55: instruction-execution protection, _PAGE_NOEXEC
    "unused" / _b(1),  # 56: _PAGE_UNUSED (pgste usage state)
    "special" / _b(1),  # 57: _PAGE_SPECIAL
    "write" / _b(1),  # 58: _PAGE_WRITE
    "read" / _b(1),  # 59: _PAGE_READ
    "dirty" / _b(1),  # 60: _PAGE_DIRTY
    "young" / _b(1),  # 61: _PAGE_YOUNG
    "soft_dirty" / _b(1),  # 62: _PAGE_SOFT_DIRTY (CONFIG_MEM_SOFT_DIRTY)
    "present" / _b(1),  # 63: _PAGE_PRESENT
)

#: Linux's swap PTE (asm/pgtable.h, v6.12 layout comment):
#: | offset (0-51) | E (52) | 1 1 (53-54) | X X (55-56) | type (57-61) | S (62) | 0 (63) |
SWAP = _be(
    "swap",
    "linux v6.12 arch/s390/include/asm/pgtable.h (64 bit swap entry format comment, __SWP_*)",
    "offset" / _b(52),  # 0-51: __SWP_OFFSET_MASK << __SWP_OFFSET_SHIFT
    "exclusive" / _b(1),  # 52: _PAGE_SWP_EXCLUSIVE (= _PAGE_LARGE)
    "i" / _b(1),  # 53: _PAGE_INVALID, always 1
    "p" / _b(1),  # 54: _PAGE_PROTECT, always 1 (pte_swap: (pte & 0x201) == 0x200)
    "unused_55_56" / _b(2),
    "type" / _b(5),  # 57-61: __SWP_TYPE_MASK << __SWP_TYPE_SHIFT
    "soft_dirty" / _b(1),  # 62: _PAGE_SOFT_DIRTY (pte_swp_soft_dirty)
    "present" / _b(1),  # 63: 0
)

FORMATS = (ASCE, REGION, REGION3_LARGE, SEGMENT, SEGMENT_LARGE, PTE, SWAP)

# -- arch/s390/include/asm/pgtable.h (v6.12), every mask derived from the declarations above -------
_PAGE_NOEXEC = PTE.mask("iep")
_PAGE_PROTECT = PTE.mask("p")
_PAGE_INVALID = PTE.mask("i")
_PAGE_LARGE = PTE.mask("bit52")
_PAGE_PRESENT = PTE.mask("present")
_PAGE_YOUNG = PTE.mask("young")
_PAGE_DIRTY = PTE.mask("dirty")
_PAGE_READ = PTE.mask("read")
_PAGE_WRITE = PTE.mask("write")
_PAGE_SPECIAL = PTE.mask("special")
_PAGE_UNUSED = PTE.mask("unused")
_PAGE_SOFT_DIRTY = PTE.mask("soft_dirty")
_PAGE_SWP_EXCLUSIVE = SWAP.mask("exclusive")
PAGE_MASK = U64 & ~((1 << PAGE_SHIFT) - 1)

_ASCE_ORIGIN = ASCE.mask("origin")
_ASCE_PRIVATE_SPACE = ASCE.mask("p")
_ASCE_ALT_EVENT = ASCE.mask("s")
_ASCE_SPACE_SWITCH = ASCE.mask("x")
_ASCE_REAL_SPACE = ASCE.mask("r")
_ASCE_TYPE_MASK = ASCE.mask("dt")
_ASCE_TABLE_LENGTH = ASCE.mask("tl")
_ASCE_USER_BITS = _ASCE_SPACE_SWITCH | _ASCE_PRIVATE_SPACE | _ASCE_ALT_EVENT

_REGION_ENTRY_ORIGIN = REGION.mask("origin")
_REGION_ENTRY_PROTECT = REGION.mask("p")
_REGION_ENTRY_NOEXEC = REGION3_LARGE.mask("iep")
_REGION_ENTRY_OFFSET = REGION.mask("tf")
_REGION_ENTRY_INVALID = REGION.mask("i")
_REGION_ENTRY_TYPE_MASK = REGION.mask("tt")
_REGION_ENTRY_LENGTH = REGION.mask("tl")
TT_SEGMENT, TT_REGION3, TT_REGION2, TT_REGION1 = 0, 1, 2, 3  # PoP table-type / designation-type codes
_REGION_ENTRY_TYPE_R1 = REGION.build(tt=TT_REGION1)
_REGION_ENTRY_TYPE_R2 = REGION.build(tt=TT_REGION2)
_REGION_ENTRY_TYPE_R3 = REGION.build(tt=TT_REGION3)
_REGION1_ENTRY = _REGION_ENTRY_TYPE_R1 | _REGION_ENTRY_LENGTH
_REGION1_ENTRY_EMPTY = _REGION_ENTRY_TYPE_R1 | _REGION_ENTRY_INVALID
_REGION2_ENTRY = _REGION_ENTRY_TYPE_R2 | _REGION_ENTRY_LENGTH
_REGION2_ENTRY_EMPTY = _REGION_ENTRY_TYPE_R2 | _REGION_ENTRY_INVALID
_REGION3_ENTRY = _REGION_ENTRY_TYPE_R3 | _REGION_ENTRY_LENGTH
_REGION3_ENTRY_EMPTY = _REGION_ENTRY_TYPE_R3 | _REGION_ENTRY_INVALID
_REGION3_ENTRY_ORIGIN_LARGE = REGION3_LARGE.mask("rfaa")
_REGION3_ENTRY_DIRTY = REGION3_LARGE.mask("dirty")
_REGION3_ENTRY_YOUNG = REGION3_LARGE.mask("young")
_REGION3_ENTRY_LARGE = REGION3_LARGE.mask("fc")
_REGION3_ENTRY_WRITE = REGION3_LARGE.mask("write")
_REGION3_ENTRY_READ = REGION3_LARGE.mask("read")
_REGION3_ENTRY_SOFT_DIRTY = REGION3_LARGE.mask("soft_dirty")
#: _REGION_ENTRY_BITS (0xfffffffffffff22f): what pgd_bad()/p4d_bad()/pud_bad() tolerate.
_REGION_ENTRY_BITS = (
    _REGION_ENTRY_ORIGIN | _REGION_ENTRY_PROTECT | _REGION_ENTRY_INVALID | _REGION_ENTRY_TYPE_MASK
    | _REGION_ENTRY_LENGTH
)

_SEGMENT_ENTRY_ORIGIN = SEGMENT.mask("origin")
_SEGMENT_ENTRY_ORIGIN_LARGE = SEGMENT_LARGE.mask("sfaa")
_SEGMENT_ENTRY_PROTECT = SEGMENT.mask("p")
_SEGMENT_ENTRY_NOEXEC = SEGMENT_LARGE.mask("iep")
_SEGMENT_ENTRY_INVALID = SEGMENT.mask("i")
_SEGMENT_ENTRY_TYPE_MASK = SEGMENT.mask("tt")
_SEGMENT_ENTRY = 0
_SEGMENT_ENTRY_EMPTY = _SEGMENT_ENTRY_INVALID
_SEGMENT_ENTRY_DIRTY = SEGMENT_LARGE.mask("dirty")
_SEGMENT_ENTRY_YOUNG = SEGMENT_LARGE.mask("young")
_SEGMENT_ENTRY_LARGE = SEGMENT_LARGE.mask("fc")
_SEGMENT_ENTRY_WRITE = SEGMENT_LARGE.mask("write")
_SEGMENT_ENTRY_READ = SEGMENT_LARGE.mask("read")
_SEGMENT_ENTRY_SOFT_DIRTY = SEGMENT_LARGE.mask("soft_dirty")
#: _SEGMENT_ENTRY_BITS (0xfffffffffffffe3f): what pmd_bad() tolerates.
_SEGMENT_ENTRY_BITS = (
    _SEGMENT_ENTRY_ORIGIN | SEGMENT.mask("fc") | _SEGMENT_ENTRY_PROTECT | _SEGMENT_ENTRY_INVALID
    | SEGMENT.mask("cs") | _SEGMENT_ENTRY_TYPE_MASK | SEGMENT.mask("unassigned_62_63")
)

# Page protections (asm/pgtable.h PAGE_NONE ... PAGE_RWX) and the large-entry forms
# (SEGMENT_NONE ... SEGMENT_RWX); vm_page_prot is one of the PAGE_* values.
PAGE_NONE = _PAGE_PRESENT | _PAGE_INVALID | _PAGE_PROTECT
PAGE_RO = _PAGE_PRESENT | _PAGE_READ | _PAGE_NOEXEC | _PAGE_INVALID | _PAGE_PROTECT
PAGE_RX = _PAGE_PRESENT | _PAGE_READ | _PAGE_INVALID | _PAGE_PROTECT
PAGE_RW = _PAGE_PRESENT | _PAGE_READ | _PAGE_WRITE | _PAGE_NOEXEC | _PAGE_INVALID | _PAGE_PROTECT
PAGE_RWX = _PAGE_PRESENT | _PAGE_READ | _PAGE_WRITE | _PAGE_INVALID | _PAGE_PROTECT
SEGMENT_NONE = _SEGMENT_ENTRY_INVALID | _SEGMENT_ENTRY_PROTECT
SEGMENT_RO = _SEGMENT_ENTRY_PROTECT | _SEGMENT_ENTRY_READ | _SEGMENT_ENTRY_NOEXEC
SEGMENT_RX = _SEGMENT_ENTRY_PROTECT | _SEGMENT_ENTRY_READ
SEGMENT_RW = _SEGMENT_ENTRY_READ | _SEGMENT_ENTRY_WRITE | _SEGMENT_ENTRY_NOEXEC
SEGMENT_RWX = _SEGMENT_ENTRY_READ | _SEGMENT_ENTRY_WRITE

# swap PTE: the kernel's __SWP_OFFSET_SHIFT/_MASK and __SWP_TYPE_SHIFT/_MASK, derived from SWAP
_SWP_OFFSET_SHIFT, _swp_offset_mask = SWAP.masks["offset"]
_SWP_OFFSET_MASK = _swp_offset_mask >> _SWP_OFFSET_SHIFT
_SWP_TYPE_SHIFT, _swp_type_mask = SWAP.masks["type"]
_SWP_TYPE_MASK = _swp_type_mask >> _SWP_TYPE_SHIFT

_CRST_ENTRIES = 2048
_PAGE_ENTRIES = 256
MAX_PHYSMEM_BITS = 46  # arch/s390/include/asm/sparsemem.h: CONFIG_MAX_PHYSMEM_BITS, default 46


# -- geometry ---------------------------------------------------------------------------------------
def _level(name: str, first: int, last: int, linux: str, leaf_size: int | None = None) -> HwLevel:
    """A translation level indexed by virtual-address bits ``first..last`` (PoP numbering,
    ch. 3 "Translation Process": RFX 0-10, RSX 11-21, RTX 22-32, SX 33-43, PX 44-51)."""
    shift, _ = pop_bits(first, last)
    return HwLevel(name, shift, last - first + 1, linux, leaf_size)


REGION1 = _level("region-first", 0, 10, "pgd")
REGION2 = _level("region-second", 11, 21, "p4d")
REGION3 = _level("region-third", 22, 32, "pud", leaf_size=1 << 31)  # EDAT-2 2 GB region frame
SEGMENT_LEVEL = _level("segment", 33, 43, "pmd", leaf_size=1 << 20)  # EDAT-1 1 MB segment frame
PAGE_LEVEL = _level("page", 44, 51, "pte", leaf_size=1 << 12)
_ALL_LEVELS = (REGION1, REGION2, REGION3, SEGMENT_LEVEL, PAGE_LEVEL)
#: Level number of the table a translation exception names (0 page table ... 4 region-first
#: table, as emu.machines.s390x numbers Fault.level) -> HwLevel.name.
LEVEL_NAMES = {4 - i: lv.name for i, lv in enumerate(_ALL_LEVELS)}

#: Designation type (ASCE bits 60-61) of each configuration's top table.
DESIGNATION_TYPE = {
    "region1": TT_REGION1, "region2": TT_REGION2, "region3": TT_REGION3, "segment": TT_SEGMENT,
}


def _config(name: str, top: int, description: str) -> PagingConfig:
    levels = _ALL_LEVELS[top:]
    va_bits = levels[0].shift + levels[0].bits
    return PagingConfig(ARCH, name, levels, PAGE_SHIFT, va_bits, description, {"dt": DESIGNATION_TYPE[name]})


CONFIGS = {
    "region1": _config("region1", 0, "ASCE DT=11: region-first table on top, 2^64 bytes (Linux 5-level)"),
    "region2": _config("region2", 1, "ASCE DT=10: region-second table on top, 2^53 bytes (Linux 4-level)"),
    "region3": _config("region3", 2, "ASCE DT=01: region-third table on top, 2^42 bytes (Linux 3-level)"),
    "segment": _config("segment", 3, "ASCE DT=00: segment table on top, 2^31 bytes (no Linux user mm)"),
}

_EMPTY = {"pgd": _REGION1_ENTRY_EMPTY, "p4d": _REGION2_ENTRY_EMPTY, "pud": _REGION3_ENTRY_EMPTY,
          "pmd": _SEGMENT_ENTRY_EMPTY, "pte": _PAGE_INVALID}
_POPULATE = {"pgd": _REGION1_ENTRY, "p4d": _REGION2_ENTRY, "pud": _REGION3_ENTRY, "pmd": _SEGMENT_ENTRY}


def _tt(val: int) -> int:
    return (val & _REGION_ENTRY_TYPE_MASK) >> REGION.masks["tt"][0]


# -- what DAT does with an entry (the architecture as third party between Linux and the MMU) ---------
# PoP SA22-7832 ch. 3 "Translation Process" ("Lookup in a Table Designated by an Address-Space-
# Control Element", "Region-Table Lookup", "Segment-Table Lookup", "Page-Table Lookup", "Enhanced
# DAT"), ch. 6 "Program-Interruption Conditions" (the translation exceptions, "Translation-
# Specification Exception", "Addressing Exception") and the priority of access exceptions: for each
# table entry DAT fetches, in this order, the invalid bit, then the table type, then the common-
# segment / common-region bit against the ASCE's private-space control, then (FC=0 region entries)
# the next table's offset and length against the next index; a page-table entry: the invalid bit,
# then bit 52.  The real address the operand access then uses must lie in main storage.

#: The translation exception (name, program-interruption code) that names each table: an invalid
#: entry in it, or an index outside it (table offset/length), PoP ch. 6.
TRANSLATION_EXCEPTION: dict[str, tuple[str, int]] = {
    REGION1.name: ("region-first-translation", 0x39),
    REGION2.name: ("region-second-translation", 0x3A),
    REGION3.name: ("region-third-translation", 0x3B),
    SEGMENT_LEVEL.name: ("segment-translation", 0x10),
    PAGE_LEVEL.name: ("page-translation", 0x11),
}
TRANSLATION_SPECIFICATION = ("translation-specification", 0x12)
ADDRESSING = ("addressing", 0x05)
#: The table type DAT requires in the entries of each table (PoP: TT 11/10/01/00).
TABLE_TYPE = {REGION1.name: TT_REGION1, REGION2.name: TT_REGION2, REGION3.name: TT_REGION3,
              SEGMENT_LEVEL.name: TT_SEGMENT}
#: The table an entry of each table designates (FC=0).
NEXT_LEVEL = {a.name: b for a, b in zip(_ALL_LEVELS[:-1], _ALL_LEVELS[1:], strict=True)}


def _bits(fmt: EntryFormat, field: str) -> str:
    """'bit 58' / 'bits 60-61': a field's PoP bit numbers, from its declaration."""
    first, last = pop_range(fmt.mask(field))
    return f"bit {first}" if first == last else f"bits {first}-{last}"


def _exception(exc: tuple[str, int]) -> str:
    return f"{exc[0]} exception ({exc[1]:#04x})"


def move_set_bit(x: int, a: int, b: int) -> int:
    """hugetlbpage.c ``move_set_bit()``: if bit ``a`` is set in ``x``, bit ``b`` of the result."""
    return b if x & a else 0


class S390x(LinuxPgtable):
    """Linux v6.12's s390 page-table API (arch/s390/include/asm/pgtable.h).

    ``machine_has_nx`` models MACHINE_HAS_NX (z14 and later: the instruction-execution-protection
    facility); without it mk_pte_phys() clears _PAGE_NOEXEC.
    """

    arch = ARCH
    big_endian = True
    has_pte_devmap = False  # arch/s390/Kconfig selects no ARCH_HAS_PTE_DEVMAP
    has_thp_migration = False  # ... and no ARCH_ENABLE_THP_MIGRATION: no PMD swap entries
    #: setup_zero_pages() (arch/s390/mm/init.c): order 7 (512 KB of zero pages, "latest machines
    #: require a mapping granularity of 512KB") on a machine with >= 512 MB, split into order-0
    #: pages; ZERO_PAGE(vaddr) picks one by (vaddr & zero_page_mask).
    ZERO_PAGE_ORDER = 7
    #: Real 0..0x1fff is the lowcore (prefix area): keep tables and data out of it.
    RESERVED_LOW = 0x2000
    #: Main storage of the configuration in bytes (absolute 0 up), when known: DAT-table entries
    #: and frames at or beyond it are addressing exceptions (:meth:`hw_rejects`).  The MMU oracle
    #: sets it for the machine it probes (emu/machines/oracle.py S390xOracle); None: not known.
    storage_size: int | None = None
    #: The private-space control (bit 55) of the ASCE the tables are walked with: Linux's user
    #: ASCE has it (_ASCE_USER_BITS), so common-segment / common-region bits are translation-
    #: specification exceptions (:meth:`hw_rejects`); :func:`translate` sets it from a foreign ASCE.
    asce_private: bool = bool(_ASCE_USER_BITS & _ASCE_PRIVATE_SPACE)

    def __init__(
        self, config: PagingConfig, kernel: str = DEFAULT_KERNEL, *, machine_has_nx: bool = True,
        kconfig: KernelConfig | None = None,
    ) -> None:
        super().__init__(config, kernel, kconfig)
        self.machine_has_nx = machine_has_nx
        # asm/pgtable.h: PMD_SIZE = _SEGMENT_SIZE, PUD_SIZE = _REGION3_SIZE whatever the ASCE type.
        self.PMD_SIZE = SEGMENT_LEVEL.leaf_size or 0
        self.PUD_SIZE = REGION3.leaf_size or 0
        self.dt = DESIGNATION_TYPE[config.name]

    def pxd_index(self, linux: str, addr: int) -> int:
        """v6.12 arch/s390/include/asm/pgtable.h: ``pgd_index()`` .. ``pmd_index()`` are plain
        shifts by the region-first .. segment index (PTRS_PER_* 2048) whatever the ASCE type; the
        folding is done by ``p?d_offset()`` from each entry's type, not by the index."""
        return {"pgd": REGION1, "p4d": REGION2, "pud": REGION3, "pmd": SEGMENT_LEVEL,
                "pte": PAGE_LEVEL}[linux].index(addr)

    def va_valid(self, va: int) -> bool:
        """No canonical form on s390: an address is translatable if the ASCE's top table reaches
        it (PoP "Translation Process": else an ASCE-type or region/segment-translation exception)."""
        return 0 <= va < 1 << self.config.va_bits

    def section_size_bits(self) -> int:
        # arch/s390/include/asm/sparsemem.h (v6.12 and v6.1): "#define SECTION_SIZE_BITS 28"
        return 28

    def max_physmem_bits(self) -> int:
        return MAX_PHYSMEM_BITS

    def asce(self, pgd: int, *, user: bool = True) -> int:
        """``mm->context.asce`` (mmu_context.h init_new_context): ``__pa(pgd) | _ASCE_TABLE_LENGTH |
        _ASCE_USER_BITS | asce_type``, built through :data:`ASCE`."""
        if pgd & ~_ASCE_ORIGIN:
            raise ValueError(f"top table {pgd:#x} is not 4K-aligned")
        bits = dict(p=1, s=1, x=1) if user else {}
        return ASCE.build(origin=pgd >> ASCE.masks["origin"][0], dt=self.dt, tl=3, **bits)

    # -- dynamic folding: the TT bits of the entry in hand ---------------------------------------------
    @staticmethod
    def pgd_folded(pgd: int) -> bool:
        return (pgd & _REGION_ENTRY_TYPE_MASK) < _REGION_ENTRY_TYPE_R1

    @staticmethod
    def p4d_folded(p4d: int) -> bool:
        return (p4d & _REGION_ENTRY_TYPE_MASK) < _REGION_ENTRY_TYPE_R2

    @staticmethod
    def pud_folded(pud: int) -> bool:
        return (pud & _REGION_ENTRY_TYPE_MASK) < _REGION_ENTRY_TYPE_R3

    def pgd_offset(self, pgd_base: int, addr: int, read: Reader) -> int:
        """``pgd_offset_raw()``: the shift comes from the table type of the FIRST top-level entry:
        ``((rste & _REGION_ENTRY_TYPE_MASK) >> 2) * 11 + 20``."""
        rste = read(pgd_base)
        shift = _tt(rste) * 11 + 20
        return pgd_base + ((addr >> shift) & (_CRST_ENTRIES - 1)) * 8

    # p4d/pud/pmd_offset() (v6.12 arch/s390/include/asm/pgtable.h:1486-1525) add the index to a
    # pointer, ``(p4d_t *) pgd_deref(pgd) + p4d_index(address)``, with pgd_deref() =
    # __va(pgd_val & _REGION_ENTRY_ORIGIN) (:1427-1428) and __va(x) = x + __identity_base
    # (asm/page.h:241; 0 without RANDOMIZE_IDENTITY_BASE, as foliowalk assumes): a table origin in
    # the last page of the 64-bit space plus index * 8 wraps around 2**64.  (A page
    # table's origin is 2K-aligned and its index at most 255: pte_offset() cannot wrap.)  A wrap to
    # real 0..0x1fff reaches, on a machine, the CPU's own lowcore by prefixing; the model reads its
    # RAM there, which RESERVED_LOW keeps free (zero): the same answer only while the lowcore
    # words read hold no table or PTE the walk would take.
    def kernel_reads_elsewhere(self, pa: int) -> str | None:
        if 0 <= pa < self.RESERVED_LOW:
            return (f"the entry at real {pa:#x} is in the lowcore: prefixing gives a running kernel its own "
                    "CPU's lowcore there (PoP ch. 3 'Prefixing'), not this word of RAM")
        return None

    def p4d_offset(self, pgdp: int, pgd: int, addr: int) -> int:
        if (pgd & _REGION_ENTRY_TYPE_MASK) >= _REGION_ENTRY_TYPE_R1:
            return ((pgd & _REGION_ENTRY_ORIGIN) + REGION2.index(addr) * 8) & U64
        return pgdp

    def pud_offset(self, p4dp: int, p4d: int, addr: int) -> int:
        if (p4d & _REGION_ENTRY_TYPE_MASK) >= _REGION_ENTRY_TYPE_R2:
            return ((p4d & _REGION_ENTRY_ORIGIN) + REGION3.index(addr) * 8) & U64
        return p4dp

    def pmd_offset(self, pudp: int, pud: int, addr: int) -> int:
        if (pud & _REGION_ENTRY_TYPE_MASK) >= _REGION_ENTRY_TYPE_R3:
            return (self.pud_deref(pud) + SEGMENT_LEVEL.index(addr) * 8) & U64
        return pudp

    def pud_deref(self, pud: int) -> int:
        return pud & (_REGION3_ENTRY_ORIGIN_LARGE if self._pud_leaf(pud) else _REGION_ENTRY_ORIGIN)

    def pmd_deref(self, pmd: int) -> int:
        return pmd & (_SEGMENT_ENTRY_ORIGIN_LARGE if self._pmd_leaf(pmd) else _SEGMENT_ENTRY_ORIGIN)

    def table_pa(self, linux: str, val: int) -> int:
        if linux == "pmd":
            return self.pmd_deref(val)  # pmd_page_vaddr()
        if linux == "pud":
            return self.pud_deref(val)
        return val & _REGION_ENTRY_ORIGIN  # pgd_deref / p4d_deref

    # -- none / bad / present / leaf (the kernel's own, folding included) ---------------------------
    def pgd_none(self, pgd: int) -> bool:
        return False if self.pgd_folded(pgd) else bool(pgd & _REGION_ENTRY_INVALID)

    def pgd_bad(self, pgd: int) -> bool:
        if (pgd & _REGION_ENTRY_TYPE_MASK) < _REGION_ENTRY_TYPE_R1:
            return False
        return bool(pgd & ~_REGION_ENTRY_BITS & U64)

    def p4d_none(self, p4d: int) -> bool:
        return False if self.p4d_folded(p4d) else p4d == _REGION2_ENTRY_EMPTY

    def pgd_present(self, pgd: int) -> bool:
        """v6.12 pgtable.h:684: 1 if folded, else an origin at all."""
        return True if self.pgd_folded(pgd) else bool(pgd & _REGION_ENTRY_ORIGIN)

    def p4d_present(self, p4d: int) -> bool:
        """v6.12 pgtable.h:718."""
        return True if self.p4d_folded(p4d) else bool(p4d & _REGION_ENTRY_ORIGIN)

    def p4d_bad(self, p4d: int) -> bool:
        t = p4d & _REGION_ENTRY_TYPE_MASK
        if t > _REGION_ENTRY_TYPE_R2:
            return True
        if t < _REGION_ENTRY_TYPE_R2:
            return False
        return bool(p4d & ~_REGION_ENTRY_BITS & U64)

    def pud_none(self, pud: int) -> bool:
        return False if self.pud_folded(pud) else pud == _REGION3_ENTRY_EMPTY

    def pud_present(self, pud: int) -> bool:
        return True if self.pud_folded(pud) else bool(pud & _REGION_ENTRY_ORIGIN)

    def _pud_present(self, pud: int) -> bool:
        return self.pud_present(pud)

    def pud_leaf(self, pud: int) -> bool:
        return self._pud_leaf(pud)

    def _pud_leaf(self, pud: int) -> bool:
        if (pud & _REGION_ENTRY_TYPE_MASK) != _REGION_ENTRY_TYPE_R3:
            return False
        return bool(pud & _REGION3_ENTRY_LARGE)

    def pud_bad(self, pud: int) -> bool:
        t = pud & _REGION_ENTRY_TYPE_MASK
        if t > _REGION_ENTRY_TYPE_R3 or self._pud_leaf(pud):
            return True
        if t < _REGION_ENTRY_TYPE_R3:
            return False
        return bool(pud & ~_REGION_ENTRY_BITS & U64)

    def pmd_none(self, pmd: int) -> bool:
        return pmd == _SEGMENT_ENTRY_EMPTY

    def pmd_present(self, pmd: int) -> bool:
        return pmd != _SEGMENT_ENTRY_EMPTY

    def _pmd_present(self, pmd: int) -> bool:
        return self.pmd_present(pmd)

    def pmd_leaf(self, pmd: int) -> bool:
        return self._pmd_leaf(pmd)

    def _pmd_leaf(self, pmd: int) -> bool:
        return bool(pmd & _SEGMENT_ENTRY_LARGE)

    def pmd_bad(self, pmd: int) -> bool:
        if (pmd & _SEGMENT_ENTRY_TYPE_MASK) > 0 or self._pmd_leaf(pmd):
            return True
        return bool(pmd & ~_SEGMENT_ENTRY_BITS & U64)

    def entry_none(self, linux: str, val: int) -> bool:
        if linux == "pte":
            return self.pte_none(val)
        return bool(getattr(self, f"{linux}_none")(val))

    def entry_bad(self, linux: str, val: int) -> bool:
        return bool(getattr(self, f"{linux}_bad")(val))

    def clear_value(self, linux: str) -> int:
        """``pgd_clear``/``p4d_clear``/``pud_clear``/``pmd_clear``/``pte_clear`` and
        ``crst_table_init()``: the typed empty entry of the table ``linux`` lives in."""
        return _EMPTY[self._hw[linux].linux]

    #: pgd/p4d/pud_clear() write only an entry of their own region type (v6.12
    #: arch/s390/include/asm/pgtable.h:1001-1017); pmd_clear() always writes (:1019-1022).
    _CLEAR_TYPE = {"pgd": (_REGION_ENTRY_TYPE_R1, _REGION1_ENTRY_EMPTY),
                   "p4d": (_REGION_ENTRY_TYPE_R2, _REGION2_ENTRY_EMPTY),
                   "pud": (_REGION_ENTRY_TYPE_R3, _REGION3_ENTRY_EMPTY)}

    def pxd_clear(self, linux: str, val: int) -> int | None:
        """v6.12 arch/s390/include/asm/pgtable.h:1001-1022: ``pgd_clear()`` stores
        ``_REGION1_ENTRY_EMPTY`` only ``if ((pgd_val(*pgd) & _REGION_ENTRY_TYPE_MASK) ==
        _REGION_ENTRY_TYPE_R1)``, ``p4d_clear()`` / ``pud_clear()`` likewise for R2 / R3;
        ``pmd_clear()`` stores ``_SEGMENT_ENTRY_EMPTY`` unconditionally.  So a bad p4d of type R1
        (``p4d_bad()``: a type above R2) or a bad pud of type R1/R2 is reported and left as it is."""
        typed = self._CLEAR_TYPE.get(linux)
        if typed is None:
            return self.clear_value(linux)
        typ, empty = typed
        return empty if val & _REGION_ENTRY_TYPE_MASK == typ else None

    # -- PUD / PMD leaves --------------------------------------------------------------------------
    def pud_pfn(self, pud: int) -> int:
        return self.pud_deref(pud) >> PAGE_SHIFT

    def pmd_pfn(self, pmd: int) -> int:
        return self.pmd_deref(pmd) >> PAGE_SHIFT

    def pmd_trans_huge(self, pmd: int) -> bool:
        return bool(pmd & _SEGMENT_ENTRY_LARGE)

    # Not selected on s390 (Kconfig): the generic stubs of include/linux/pgtable.h and mm.h.
    def pud_devmap(self, pud: int) -> bool:
        return False

    def pmd_devmap(self, pmd: int) -> bool:
        return False

    def pte_devmap(self, pte: int) -> bool:
        return False

    def pud_special(self, pud: int) -> bool:  # !CONFIG_ARCH_SUPPORTS_PUD_PFNMAP
        return False

    def pmd_special(self, pmd: int) -> bool:  # !CONFIG_ARCH_SUPPORTS_PMD_PFNMAP
        return False

    def pmd_protnone(self, pmd: int) -> bool:
        """CONFIG_NUMA_BALANCING: ``pmd_leaf(pmd) && !(pmd_val(pmd) & _SEGMENT_ENTRY_READ)``."""
        return self._pmd_leaf(pmd) and not pmd & _SEGMENT_ENTRY_READ

    # -- PTE ---------------------------------------------------------------------------------------
    def pte_none(self, pte: int) -> bool:
        return pte == _PAGE_INVALID

    def pte_present(self, pte: int) -> bool:
        return bool(pte & _PAGE_PRESENT)

    def pte_swap(self, pte: int) -> bool:
        return pte & (_PAGE_PROTECT | _PAGE_PRESENT) == _PAGE_PROTECT

    def pte_protnone(self, pte: int) -> bool:
        return self.pte_present(pte) and not pte & _PAGE_READ

    def pte_pfn(self, pte: int) -> int:
        return pte >> PAGE_SHIFT

    def hw_absent_reason(self, linux: str, val: int) -> str | None:
        """PROT_NONE, or an old page: s390 has no hardware young bit, so ``pte_mkold()`` /
        ``pmd_mkold()`` set the hardware invalid bit and the next access faults
        (arch/s390/include/asm/pgtable.h, v6.12)."""
        why = super().hw_absent_reason(linux, val)
        if why:
            return why
        if linux == "pte" and self.pte_present(val) and val & _PAGE_INVALID:
            return "old-page (_PAGE_INVALID tracks young)"
        if linux in ("pmd", "pud") and val & _SEGMENT_ENTRY_INVALID:
            return "old-page (_SEGMENT_ENTRY_INVALID tracks young)"
        return None

    # -- the architecture's own view of an entry (PoP ch. 3 "Translation Process") --------------------
    def hw_rejects(self, linux: str, val: int, *, leaf: bool, addr: int | None = None) -> str | None:
        """Why DAT faults at this entry when it reaches it for ``addr``, or None where DAT takes
        it (as a table designation, or as a page / EDAT-1 segment / EDAT-2 region frame).

        ``linux`` names the table the entry is in (its hardware level in this configuration).
        The checks, in the PoP's order: the invalid bit (the table's translation exception), the
        table type (translation specification), the common-segment / common-region bit with the
        ASCE's private-space control (Linux's user ASCE has it: translation specification), for a
        region entry that designates a table the next index's leftmost two bits against its
        table offset and length (the next table's translation exception; needs ``addr``); a
        page-table entry: the invalid bit, then bit 52 (translation specification).  A frame that
        ``addr`` reaches at or beyond main storage (:attr:`storage_size`) is an addressing
        exception.  EDAT-1 and EDAT-2 are taken as installed and enabled (FC=1 entries are
        frames): where the probe machine cannot prove them, those rows are oracle-cannot-check.
        ``leaf`` changes nothing: DAT decides by the entry's own bits."""
        got = self._dat_rejects(linux, val, addr)
        return got[0] if got else None

    def hw_fault_level(self, linux: str, val: int, *, leaf: bool, addr: int | None = None) -> str | None:
        """The table the program-interruption code names for :meth:`hw_rejects`' reason: the
        entry's own for its invalid bit, the next table for an index outside the table offset /
        length, none for a translation-specification or addressing exception."""
        got = self._dat_rejects(linux, val, addr)
        return got[1] if got else self.hw_level(linux).name

    def _dat_rejects(self, linux: str, val: int, addr: int | None) -> tuple[str, str | None] | None:
        """(reason, the table the exception names) for :meth:`hw_rejects`, or None."""
        hw = self.hw_level(linux)
        spec = _exception(TRANSLATION_SPECIFICATION)
        if hw.name == PAGE_LEVEL.name:
            if val & PTE.mask("i"):
                exc = _exception(TRANSLATION_EXCEPTION[hw.name])
                return f"page-invalid bit ({_bits(PTE, 'i')}) is one: {exc}", hw.name
            if val & PTE.mask("bit52"):
                return f"{_bits(PTE, 'bit52')} is one: {spec}", None
            return self._frame_rejects(val & PTE.mask("pfra"), hw.leaf_size or 0, addr)
        if val & REGION.mask("i"):  # the same bit in segment-table entries
            kind = "segment" if hw.name == SEGMENT_LEVEL.name else "region"
            return (f"{kind}-invalid bit ({_bits(REGION, 'i')}) is one: "
                    f"{_exception(TRANSLATION_EXCEPTION[hw.name])}", hw.name)
        tt, want = _tt(val), TABLE_TYPE[hw.name]
        if tt != want:
            why = f"table type ({_bits(REGION, 'tt')}) is {tt:02b}, a {hw.name}-table entry has {want:02b}: {spec}"
            return why, None
        private = self.asce_private
        if hw.name == SEGMENT_LEVEL.name:
            if private and val & SEGMENT.mask("cs"):
                return (f"common-segment bit ({_bits(SEGMENT, 'cs')}) is one and the ASCE's private-space "
                        f"control is one: {spec}", None)
            if val & SEGMENT.mask("fc"):  # EDAT-1: a 1 MB segment frame
                return self._frame_rejects(val & SEGMENT_LARGE.mask("sfaa"), hw.leaf_size or 0, addr)
            return None  # a page table: 256 entries, no offset/length to check
        if hw.name == REGION3.name:
            if private and val & REGION.mask("cr"):
                return (f"common-region bit ({_bits(REGION, 'cr')}, EDAT-2) is one and the ASCE's private-space "
                        f"control is one: {spec}", None)
            if val & REGION3_LARGE.mask("fc"):  # EDAT-2: a 2 GB region frame
                return self._frame_rejects(val & REGION3_LARGE.mask("rfaa"), hw.leaf_size or 0, addr)
        if addr is None:
            return None
        lower = NEXT_LEVEL[hw.name]
        x = lower.index(addr) >> (lower.bits - 2)
        tf, tl = REGION.get(val, "tf"), REGION.get(val, "tl")
        if not tf <= x <= tl:
            return (f"the {lower.name} index of {addr:#x} starts with {x:02b}, outside the table offset {tf} "
                    f"({_bits(REGION, 'tf')}) .. length {tl} ({_bits(REGION, 'tl')}): "
                    f"{_exception(TRANSLATION_EXCEPTION[lower.name])}", lower.name)
        return None

    def walk_diverges(self, trace: list[tuple[str, int, int]], addr: int) -> str | None:
        """``pgd_offset_raw()`` indexes the top table with the VA field of the table type in its
        FIRST entry (the first read of the walk); DAT indexes it with the field the ASCE's
        designation type names.  Linux's tables never differ (crst_table_init() and the
        pXd_populate()s give every entry of a table its table's type), so where a first entry
        says otherwise and the two indexes of ``addr`` differ, Linux walks other entries than
        DAT -- by its convention, not the architecture's (PoP ch. 3 "Translation Process": the
        ASCE alone says which table the address's first index selects in)."""
        if not trace or trace[0][0] != "pgd":
            return None
        _, base, first = trace[0]
        top = self.config.levels[0]
        linux_index = (self.pgd_offset(base, addr, lambda _pa: first) - base) // 8
        dat_index = top.index(addr)
        if linux_index == dat_index:
            return None
        tt = _tt(first)
        linux_table = next(name for name, t in TABLE_TYPE.items() if t == tt)
        return (f"pgd_offset() takes the top table's type from its first entry ({first:#x} at {base:#x}, "
                f"table type {tt:02b}: a {linux_table} table), the ASCE designates a {top.name} table "
                f"(DT {self.dt:02b}): Linux reads top entry {linux_index} for {addr:#x}, DAT entry {dat_index}")

    def _frame_rejects(self, origin: int, size: int, addr: int | None) -> tuple[str, str | None] | None:
        """An addressing exception (PoP ch. 6) when the real address ``addr`` reaches in the frame
        at ``origin`` is not in main storage; without ``addr``, when the whole frame is not."""
        if self.storage_size is None:
            return None
        pa = origin + (addr & (size - 1)) if addr is not None else origin
        if pa < self.storage_size:
            return None
        return (f"real address {pa:#x} is beyond main storage ({self.storage_size:#x} bytes): "
                f"{_exception(ADDRESSING)}", None)

    def hw_uses(self, linux: str, val: int) -> str | None:
        """For an entry Linux reads as none / not present / swap: why DAT translates through it
        all the same -- a PTE whose page-invalid bit is zero (Linux's _PAGE_PRESENT is bit 63,
        a bit DAT leaves to programming), or an upper entry that is valid to DAT (Linux's
        pud_present() asks for a non-zero origin, DAT does not)."""
        if self.hw_rejects(linux, val, leaf=True) is not None:
            return None
        hw = self.hw_level(linux)
        if hw.name == PAGE_LEVEL.name:
            return (f"page-invalid bit ({_bits(PTE, 'i')}) and {_bits(PTE, 'bit52')} are zero: DAT translates to "
                    f"{val & PTE.mask('pfra'):#x} (_PAGE_PRESENT, {_bits(PTE, 'present')}, is a software bit)")
        if (hw.name == SEGMENT_LEVEL.name and val & SEGMENT.mask("fc")) or (
            hw.name == REGION3.name and val & REGION3_LARGE.mask("fc")
        ):
            what = f"a {hw.leaf_size or 0:#x}-byte frame"
        else:
            what = f"the {NEXT_LEVEL[hw.name].name} table at {self.table_pa(hw.linux, val):#x}"
        return (f"invalid bit ({_bits(REGION, 'i')}) zero and table type {_tt(val):02b}: DAT takes it as "
                f"designating {what}")

    def pte_special(self, pte: int) -> bool:
        return bool(pte & _PAGE_SPECIAL)

    # -- swap entries (asm/pgtable.h + include/linux/swapops.h) ---------------------------------------
    @staticmethod
    def mk_swap_pte(swp_type: int, offset: int) -> int:
        """``mk_swap_pte()``: _PAGE_INVALID | _PAGE_PROTECT, offset and type in place."""
        return SWAP.build(
            i=1, p=1, offset=offset & _SWP_OFFSET_MASK, type=swp_type & _SWP_TYPE_MASK
        )

    def pte_to_swp_entry(self, pte: int) -> SwpEntry:
        """``pte_to_swp_entry()``: clear soft-dirty and exclusive, then __swp_type/__swp_offset of
        ``__pte_to_swp_entry(pte)`` (the raw value)."""
        val = pte & ~(_PAGE_SOFT_DIRTY | _PAGE_SWP_EXCLUSIVE)
        return SwpEntry(SWAP.get(val, "type"), SWAP.get(val, "offset"))

    def swp_entry_to_pte(self, entry: SwpEntry, *, exclusive: bool = False) -> int:
        return self.mk_swap_pte(entry.type, entry.offset) | (_PAGE_SWP_EXCLUSIVE if exclusive else 0)

    def swp_entry_to_pmd(self, entry: SwpEntry) -> int:
        raise ValueError("s390 (Linux v6.12) has no PMD swap entries: no CONFIG_ARCH_ENABLE_THP_MIGRATION")

    # -- building entries (the kernel's own constructors) ---------------------------------------------
    def mk_table(self, linux: str, table_pa: int) -> int:
        """``pgd_populate``/``p4d_populate``/``pud_populate``/``pmd_populate`` (asm/pgalloc.h):
        ``_REGION1_ENTRY | __pa(p4d)`` ... ``_SEGMENT_ENTRY | __pa(pte)``."""
        if linux == "pmd":
            if table_pa & ~_SEGMENT_ENTRY_ORIGIN:
                raise ValueError(f"page table {table_pa:#x} is not 2K-aligned")
            return SEGMENT.build(origin=table_pa >> SEGMENT.masks["origin"][0]) | _POPULATE[linux]
        if linux not in _POPULATE:
            raise ValueError(f"no {linux}_populate on s390")
        if table_pa & ~_REGION_ENTRY_ORIGIN:
            raise ValueError(f"table {table_pa:#x} is not 4K-aligned")
        return REGION.build(origin=table_pa >> REGION.masks["origin"][0]) | _POPULATE[linux]

    @staticmethod
    def vm_page_prot(prot: Prot) -> int:
        """The PAGE_* protection a VMA with ``prot`` has (arch/s390/mm/mmap.c protection_map)."""
        if prot.protnone:
            return PAGE_NONE
        if prot.write:
            return PAGE_RWX if prot.exec else PAGE_RW
        return PAGE_RX if prot.exec else PAGE_RO

    # pte_mk*() of asm/pgtable.h, on raw values
    @staticmethod
    def pte_mkyoung(pte: int) -> int:
        pte |= _PAGE_YOUNG
        return pte & ~_PAGE_INVALID if pte & _PAGE_READ else pte

    @staticmethod
    def pte_mkold(pte: int) -> int:
        return (pte & ~_PAGE_YOUNG) | _PAGE_INVALID

    @staticmethod
    def pte_mkdirty(pte: int) -> int:
        pte |= _PAGE_DIRTY | _PAGE_SOFT_DIRTY
        return pte & ~_PAGE_PROTECT if pte & _PAGE_WRITE else pte

    @staticmethod
    def pte_mkspecial(pte: int) -> int:
        """v6.12 arch/s390/include/asm/pgtable.h:1094: ``set_pte_bit(pte, _PAGE_SPECIAL)``."""
        return pte | _PAGE_SPECIAL

    @staticmethod
    def pmd_mkhuge(pmd: int) -> int:
        """v6.12 arch/s390/include/asm/pgtable.h:1781: LARGE | YOUNG | PROTECT set."""
        return pmd | _SEGMENT_ENTRY_LARGE | _SEGMENT_ENTRY_YOUNG | _SEGMENT_ENTRY_PROTECT

    def mk_pte_phys(self, physpage: int, pgprot: int) -> int:
        """``mk_pte_phys()``: physpage | pgprot, _PAGE_NOEXEC dropped without NX, then pte_mkyoung."""
        pte = physpage | pgprot
        if not self.machine_has_nx:
            pte &= ~_PAGE_NOEXEC
        return self.pte_mkyoung(pte)

    def pfn_pte(self, pfn: int, prot: Prot) -> int:
        """``pfn_pte(pfn, vm_page_prot)`` then pte_mkold/pte_mkdirty/pte_mkspecial as ``prot`` says."""
        if prot.devmap:
            raise ValueError("s390 has no devmap PTEs (no CONFIG_ARCH_HAS_PTE_DEVMAP)")
        pte = self.mk_pte_phys(pfn << PAGE_SHIFT, self.vm_page_prot(prot))
        if not prot.young:
            pte = self.pte_mkold(pte)
        if prot.dirty:
            pte = self.pte_mkdirty(pte)
        if prot.special:
            pte |= _PAGE_SPECIAL  # pte_mkspecial()
        return pte

    @staticmethod
    def massage_pgprot_pmd(pgprot: int) -> int:
        """``massage_pgprot_pmd()``: PAGE_NONE/RO/RX/RW/RWX -> SEGMENT_NONE/RO/RX/RW/RWX."""
        return {PAGE_NONE: SEGMENT_NONE, PAGE_RO: SEGMENT_RO, PAGE_RX: SEGMENT_RX, PAGE_RW: SEGMENT_RW}.get(
            pgprot, SEGMENT_RWX
        )

    def pfn_pmd(self, pfn: int, prot: Prot) -> int:
        """A THP leaf: ``pmd_mkhuge(pfn_pmd(pfn, vm_page_prot))`` (mk_pmd_phys + LARGE|YOUNG|PROTECT)
        then pmd_mkyoung/pmd_mkold and pmd_mkdirty.  pmd_mkspecial() is a no-op on s390 v6.12
        (no ARCH_SUPPORTS_PMD_PFNMAP)."""
        self.check_pmd_prot(prot)
        if prot.devmap:
            raise ValueError("s390 has no devmap PMDs (no CONFIG_ARCH_HAS_PTE_DEVMAP)")
        pa = pfn << PAGE_SHIFT
        if pa & ~_SEGMENT_ENTRY_ORIGIN_LARGE:
            raise ValueError(f"pfn {pfn:#x} is not aligned for a 1 MB segment")
        pmd = pa + self.massage_pgprot_pmd(self.vm_page_prot(prot))  # mk_pmd_phys()
        pmd |= _SEGMENT_ENTRY_LARGE | _SEGMENT_ENTRY_YOUNG | _SEGMENT_ENTRY_PROTECT  # pmd_mkhuge()
        if prot.young:  # pmd_mkyoung()
            pmd = pmd & ~_SEGMENT_ENTRY_INVALID if pmd & _SEGMENT_ENTRY_READ else pmd
        else:  # pmd_mkold()
            pmd = (pmd & ~_SEGMENT_ENTRY_YOUNG) | _SEGMENT_ENTRY_INVALID
        if prot.dirty:  # pmd_mkdirty()
            pmd |= _SEGMENT_ENTRY_DIRTY | _SEGMENT_ENTRY_SOFT_DIRTY
            if pmd & _SEGMENT_ENTRY_WRITE:
                pmd &= ~_SEGMENT_ENTRY_PROTECT
        if not self.machine_has_nx:  # set_pmd_at()
            pmd &= ~_SEGMENT_ENTRY_NOEXEC
        return pmd

    def pte_to_rste(self, pte: int) -> int:
        """``__pte_to_rste()`` (arch/s390/mm/hugetlbpage.c): a huge PTE-format value to the
        segment/region-third entry bits."""
        if not self.pte_present(pte):
            return _SEGMENT_ENTRY_EMPTY
        rste = pte & PAGE_MASK
        rste |= move_set_bit(pte, _PAGE_READ, _SEGMENT_ENTRY_READ)
        rste |= move_set_bit(pte, _PAGE_WRITE, _SEGMENT_ENTRY_WRITE)
        rste |= move_set_bit(pte, _PAGE_INVALID, _SEGMENT_ENTRY_INVALID)
        rste |= move_set_bit(pte, _PAGE_PROTECT, _SEGMENT_ENTRY_PROTECT)
        rste |= move_set_bit(pte, _PAGE_DIRTY, _SEGMENT_ENTRY_DIRTY)
        rste |= move_set_bit(pte, _PAGE_YOUNG, _SEGMENT_ENTRY_YOUNG)
        rste |= move_set_bit(pte, _PAGE_SOFT_DIRTY, _SEGMENT_ENTRY_SOFT_DIRTY)
        rste |= move_set_bit(pte, _PAGE_NOEXEC, _SEGMENT_ENTRY_NOEXEC)
        return rste

    def pfn_pud(self, pfn: int, prot: Prot) -> int:
        """A 2 GB leaf as hugetlb writes it (v6.12 s390 has no pfn_pud/THP PUDs):
        ``set_huge_pte_at(make_huge_pte())`` = ``__pte_to_rste(pte_mkhuge(pfn_pte()))`` |
        _REGION_ENTRY_TYPE_R3 | _REGION3_ENTRY_LARGE (__set_huge_pte_at)."""
        if prot.devmap:
            raise ValueError("s390 has no devmap PUDs (no CONFIG_ARCH_HAS_PTE_DEVMAP)")
        pa = pfn << PAGE_SHIFT
        if pa & ~_REGION3_ENTRY_ORIGIN_LARGE:
            raise ValueError(f"pfn {pfn:#x} is not aligned for a 2 GB region")
        pte = self.pfn_pte(pfn, Prot(write=prot.write, exec=prot.exec, young=prot.young, dirty=prot.dirty,
                                     protnone=prot.protnone)) | _PAGE_LARGE
        rste = self.pte_to_rste(pte)
        if not self.machine_has_nx:
            rste &= ~_SEGMENT_ENTRY_NOEXEC
        return rste | _REGION_ENTRY_TYPE_R3 | _REGION3_ENTRY_LARGE

    def mk_bad(self, linux: str, val: int) -> int:
        """A table entry that ``pXd_bad()`` rejects but DAT still follows: a bit outside
        _REGION_ENTRY_BITS / _SEGMENT_ENTRY_BITS that translation does not use in that entry --
        bit 59 of a region-first/-second entry (the common-region bit belongs to region-third
        entries only), bit 55 of a region-third or segment entry with FC=0 (instruction-execution
        protection exists only in the FC=1 forms)."""
        if linux in ("pgd", "p4d"):
            return val | REGION.mask("cr")
        if linux == "pud":
            return val | REGION.mask("unassigned_55")
        if linux == "pmd":
            return val | SEGMENT.mask("unassigned_55")
        raise ValueError(f"no {linux}_bad on s390")

    # -- decoding for people -----------------------------------------------------------------------
    def entry_format(self, linux: str, val: int) -> EntryFormat:
        """The format an entry has, by its own bits: at ``pte`` level a PTE or swap PTE; above,
        the TT bits choose a region or segment form and FC its large form."""
        if linux == "pte":
            return SWAP if not self.pte_present(val) and self.pte_swap(val) else PTE
        tt = _tt(val)
        if tt == TT_SEGMENT:
            return SEGMENT_LARGE if val & _SEGMENT_ENTRY_LARGE else SEGMENT
        if tt == TT_REGION3 and val & _REGION3_ENTRY_LARGE:
            return REGION3_LARGE
        return REGION

    def decode(self, linux: str, val: int) -> dict[str, int]:
        fmt = self.entry_format(linux, val)
        return {"format": fmt.name, **fmt.parse(val)}  # type: ignore[dict-item]


OPS_CLASS = S390x


# -- the architecture's whole walk: foreign tables by the manual (PoP SA22-7832 ch. 3) ---------------
#: CPU facts :func:`translate` takes (``cpu=``): ``edat1`` / ``edat2`` (the enhanced-DAT facilities
#: 1 and 2 installed and enabled in CR0: FC=1 segment / region-third entries are 1 MB / 2 GB
#: frames, and with EDAT-1 the DAT-protection bit of region entries applies), ``iep`` (the
#: instruction-execution-protection facility enabled in CR0: IEP=1 forbids fetches), and
#: ``storage_size`` (bytes of main storage from absolute 0; None: unknown, no addressing checks).
TRANSLATE_CPU: dict[str, object] = {"edat1": True, "edat2": True, "iep": False, "storage_size": None}
ASCE_TYPE = ("asce-type", 0x38)  # PoP ch. 6: ASCE-type exception
PROTECTION = ("protection", 0x04)  # PoP ch. 3 "DAT Protection", ch. 6 protection exception


def config_of_asce(asce: int) -> PagingConfig:
    """The configuration an ASCE's designation type (bits 60-61) names."""
    dt = ASCE.get(asce, "dt")
    return next(c for c in CONFIGS.values() if c.extra["dt"] == dt)


def hw_exception(ops: S390x, linux: str, val: int, addr: int | None) -> tuple[str, int, str | None, str] | None:
    """:meth:`S390x.hw_rejects` as ``(exception, program-interruption code, table it names, reason)``:
    a translation exception names the table (the entry's own, or the next one for a table
    offset/length miss); an addressing or translation-specification exception names none."""
    got = ops._dat_rejects(linux, val, addr)
    if got is None:
        return None
    reason, table = got
    if table is not None:
        name, code = TRANSLATION_EXCEPTION[table]
    elif reason.endswith(_exception(ADDRESSING)):
        name, code = ADDRESSING
    else:
        name, code = TRANSLATION_SPECIFICATION
    return name, code, table, reason


def translate(config_or_ops: object, read: Reader, va: int, access: object = "read", *, asce: int,
              cpu: dict[str, object] | None = None, decode: bool = True) -> Translation | Fault:
    """What the Principles of Operation say DAT does for an access (``read``/``write``/``fetch``)
    to virtual address ``va`` under the address-space-control element ``asce``, over the tables
    ``read(pa)`` returns (big-endian doublewords): an :class:`archs.translate.Translation` or
    :class:`archs.translate.Fault` (code: the program-interruption code).

    ``config_or_ops`` may be None or any s390x configuration: the ASCE's designation type
    decides the top table (:func:`config_of_asce`).  ``cpu``: :data:`TRANSLATE_CPU`.
    ``decode=False`` leaves each trace entry's ``fields`` empty (the construct decoding is most
    of a walk's cost; ``foliowalk conform`` needs only the values).  PoP ch. 3
    "Translation Process", in its order:

    * ASCE real-space control (bit 58): the address is real, no tables;
    * address bits left of the top table's index (bits 0-10 with a region-second table, 0-21
      region-third, 0-32 segment): ASCE-type exception (0x38);
    * the leftmost two bits of the top index above the ASCE table length: the top table's
      translation exception;
    * each entry at ``origin + 8 * index`` (:meth:`S390x.hw_rejects`: invalid bit, table type,
      common bits with a private-space ASCE, next table offset/length, PTE bit 52, a frame beyond
      main storage); an entry address beyond main storage: addressing exception (0x05);
    * FC=1 segment (EDAT-1) / region-third (EDAT-2) entries are frames; without the facility
      FC is ignored and the entry designates a table;
    * DAT protection (the P bit of the segment-table entry or PTE, and of region-table entries
      with EDAT-1) refuses stores, IEP refuses fetches (protection exception, 0x04).  No
      user/supervisor distinction (storage keys are not modelled); the prefix is 0 (real
      addresses are absolute, PoP ch. 3 "Prefixing").
    """

    kind, _user = parse_access(access)
    facts = cpu_facts(TRANSLATE_CPU, cpu, ARCH)
    if not 0 <= asce < 1 << 64:
        raise ValueError(f"ASCE {asce!r} is not a 64-bit value")
    if not 0 <= va < 1 << 64:
        raise ValueError(f"virtual address {va!r} is not a 64-bit value")
    storage = facts["storage_size"]
    if ASCE.get(asce, "r"):
        return Translation(va, 1 << PAGE_SHIFT, Permissions(True, True, True, None), ())
    config = config_of_asce(asce)
    if isinstance(config_or_ops, S390x):
        named: str | None = config_or_ops.config.name
    elif isinstance(config_or_ops, PagingConfig):
        named = config_or_ops.name
    elif config_or_ops is None or str(config_or_ops) in (ARCH, "s390"):
        named = None
    else:
        named = str(config_or_ops).split(":", 1)[-1]
        if named not in CONFIGS:
            raise ValueError(f"unknown s390x configuration {config_or_ops!r}; known: s390x, {', '.join(CONFIGS)}")
    if named is not None and named != config.name:
        raise ValueError(f"the ASCE {asce:#x} designates a {config.name} table (DT {ASCE.get(asce, 'dt'):02b}), "
                         f"not the configuration's {named}")
    ops = S390x(config)
    ops.storage_size = storage  # type: ignore[assignment]
    ops.asce_private = bool(ASCE.get(asce, "p"))
    top = config.levels[0]
    if va >> config.va_bits:
        return Fault(*ASCE_TYPE[:1], None, ASCE_TYPE[1],
                     f"{va:#x} has bits left of the {top.name}-table index while the ASCE designates a "
                     f"{top.name} table (DT {ASCE.get(asce, 'dt'):02b}): PoP ch. 3 'Translation Process', "
                     f"ASCE-type exception ({ASCE_TYPE[1]:#04x})", ())
    tl = ASCE.get(asce, "tl")
    if top.index(va) >> (top.bits - 2) > tl:
        name, code = TRANSLATION_EXCEPTION[top.name]
        return Fault(name, top.name, code,
                     f"the {top.name} index of {va:#x} starts with {top.index(va) >> (top.bits - 2):02b}, beyond "
                     f"the ASCE table length {tl}: PoP ch. 3 'Lookup in a Table Designated by an ASCE', "
                     f"{name} exception ({code:#04x})", ())
    trace: list[Entry] = []
    table = ASCE.get(asce, "origin") << ASCE.masks["origin"][0]
    protected = noexec = False
    for lv in config.levels:
        pa = (table + 8 * lv.index(va)) & U64
        if storage is not None and pa + 8 > storage:  # type: ignore[operator]
            return Fault(ADDRESSING[0], None, ADDRESSING[1],
                         f"the {lv.name}-table entry at {pa:#x} is beyond main storage ({storage:#x} bytes): "
                         f"PoP ch. 3 'Translation Process', {_exception(ADDRESSING)}", tuple(trace))
        val = read_entry(read, pa)
        seen = val
        if lv.name == SEGMENT_LEVEL.name and not facts["edat1"]:
            seen &= ~SEGMENT.mask("fc")  # FC applies only with EDAT-1 (PoP ch. 3 "Enhanced DAT")
        if lv.name == REGION3.name and not facts["edat2"]:
            seen &= ~REGION.mask("fc")  # ... and with EDAT-2 in a region-third entry
        fmt = PTE if lv.name == PAGE_LEVEL.name else ops.entry_format(lv.linux, seen)
        trace.append(Entry(lv.name, pa, val, fmt.name, fmt.parse(val) if decode else {}))
        exc = hw_exception(ops, lv.linux, seen, va)
        if exc is not None:
            name, code, named, reason = exc
            return Fault(name, named, code, f"{reason} (PoP ch. 3 'Translation Process')", tuple(trace))
        if lv.name in (SEGMENT_LEVEL.name, PAGE_LEVEL.name) or facts["edat1"]:
            protected |= bool(val & REGION.mask("p"))  # bit 54 in every form (region P needs EDAT-1)
        if fmt in (PTE, SEGMENT_LARGE, REGION3_LARGE):
            noexec |= bool(facts["iep"] and val & fmt.mask("iep"))
            if fmt is PTE:
                origin, size = val & PTE.mask("pfra"), 1 << PAGE_SHIFT
            else:
                addr_field = "sfaa" if fmt is SEGMENT_LARGE else "rfaa"
                origin, size = val & fmt.mask(addr_field), lv.leaf_size or 0
            perms = Permissions(read=True, write=not protected, execute=not noexec, user=None)
            if (kind == "write" and protected) or (kind == "fetch" and noexec):
                why = "DAT protection (a P bit on the path)" if kind == "write" else "instruction-execution protection"
                return Fault(PROTECTION[0], None, PROTECTION[1],
                             f"{kind} refused by {why}: PoP ch. 3 'DAT Protection' / 'Instruction-Execution "
                             f"Protection', protection exception ({PROTECTION[1]:#04x})", tuple(trace))
            return Translation(origin | (va & (size - 1)), size, perms, tuple(trace))
        table = (val & SEGMENT.mask("origin")) if lv.name == SEGMENT_LEVEL.name else (val & REGION.mask("origin"))
    raise AssertionError("the page table ends the walk")  # pragma: no cover


# -- storage-key recording and the translation-exception identification (conformance model) -------
RC_SET, RC_KEEP, RC_OPEN = "set", "unchanged", "open"


def reference_change(result: Translation | Fault, access: object = "read") -> tuple[str, str]:
    """What an access that gave ``result`` does to the reference (R) and change (C) bits of the
    storage key of the 4K block it addresses: ``(R, C)``, each :data:`RC_SET`, :data:`RC_KEEP`
    or :data:`RC_OPEN`.  s390x table entries have no accessed/dirty bits: the record lives in the
    storage key, one per 4K block of real storage (PoP ch. 3 "Storage Key").

    * allowed: R is set by any fetch or store ("Reference Recording"), C by a store only
      ("Change Recording");
    * refused (any access exception): "no change is made to a storage location or a storage key
      when the reference causes an access exception" (PoP ch. 6, "Summary of Action for
      Addressing and Protection Exceptions"), so C is unchanged; R stays :data:`RC_OPEN` because
      "the record of references ... is not necessarily accurate" (ch. 3 "Reference Recording":
      a model may set R for a block it only prepared to reference)."""
    kind, _user = parse_access(access)
    if isinstance(result, Translation):
        return RC_SET, RC_SET if kind == "write" else RC_KEEP
    return RC_OPEN, RC_KEEP


#: TEID bits (PoP ch. 6 "Translation-Exception Identification"), as masks of the 64-bit doubleword:
TEID_PAGE = PAGE_MASK  #: bits 0-51: the page address of the virtual address that caused the exception
TEID_FETCH, TEID_STORE = 1 << 11, 1 << 10  #: bits 52-53 (ESOP-2, protection): 10 fetch, 01 store
TEID_B56, TEID_B60, TEID_B61 = 1 << 7, 1 << 3, 1 << 2  #: bits 56, 60, 61: the kind of protection
TEID_ASC = 0x3  #: bits 62-63: the address space (00 primary, 10 secondary, 11 home)
ASC_PRIMARY, ASC_SECONDARY = 0, 2


#: Storage-key bits (the seven-bit key, as SSKE takes it and ISKE returns it in bits 56-62 of a
#: register; PoP ch. 3 "Storage Key"): access-control bits ACC, fetch-protection bit F, reference
#: bit R, change bit C.
KEY_ACC, KEY_F, KEY_R, KEY_C = 0xF0, 0x08, 0x04, 0x02


def key_controlled_protection(result: Translation | Fault, access: object = "read", *, psw_key: int,
                              storage_key: int) -> Translation | Fault:
    """``result`` with key-controlled protection applied to the block it reaches (PoP ch. 3
    "Key-Controlled Protection"): a store is permitted only when the access key (the PSW key
    for a CPU access, bits 8-11 of the PSW) is zero or equals the block's ACC bits; a fetch
    (operand or instruction) also when the block's fetch-protection bit F is zero.  A refused
    access is a protection exception (0x04).  The protection applies to the real block DAT
    produced, so a translation fault stays as it is."""
    kind, _user = parse_access(access)
    if not isinstance(result, Translation) or not 0 <= psw_key <= 15:
        if isinstance(result, Translation):
            raise ValueError(f"PSW key {psw_key!r} is not 0..15")
        return result
    acc, fetch_protected = (storage_key & KEY_ACC) >> 4, bool(storage_key & KEY_F)
    if psw_key == 0 or psw_key == acc or (kind != "write" and not fetch_protected):
        return result
    why = "its ACC" if kind == "write" else "its ACC and its fetch-protection bit is 1"
    return Fault(PROTECTION[0], None, PROTECTION[1],
                 f"{kind} with PSW key {psw_key} refused by the storage key {storage_key:#04x} (PSW key "
                 f"nonzero and not {why}): PoP ch. 3 'Key-Controlled Protection', protection exception "
                 f"({PROTECTION[1]:#04x})", result.trace)


#: Low-address protection covers these effective addresses (PoP ch. 3 "Low-Address Protection").
LOW_ADDRESS_RANGES = ((0, 511), (4096, 4607))
ASCE_PRIVATE_SPACE = 1 << 8  #: ASCE bit 55: the private-space control


def low_address_protection(result: Translation | Fault, va: int, access: object = "read", *, enabled: bool,
                           asce: int | None) -> Translation | Fault:
    """``result`` with low-address protection applied (PoP ch. 3 "Low-Address Protection"): when
    CR0 bit 35 is one, a store to effective address 0-511 or 4096-4607 is refused (protection
    exception, 0x04) -- with DAT on only when the private-space control (bit 55) of the ASCE used
    is zero (``asce`` None: DAT off, always).  Fetches are not affected.  Applied to an access
    that translates (the order against translation exceptions is not stated here)."""
    kind, _user = parse_access(access)
    if not (isinstance(result, Translation) and enabled and kind == "write"):
        return result
    if asce is not None and asce & ASCE_PRIVATE_SPACE:
        return result
    if not any(lo <= va <= hi for lo, hi in LOW_ADDRESS_RANGES):
        return result
    return Fault(PROTECTION[0], None, PROTECTION[1],
                 f"store to {va:#x} with CR0 bit 35 one and a non-private ASCE: PoP ch. 3 'Low-Address "
                 f"Protection', protection exception ({PROTECTION[1]:#04x})", result.trace)


def translation_exception_identification(result: Fault, va: int, access: object, asc: int, *,
                                         key_protected: bool = False, low_address: bool = False
                                         ) -> tuple[int, int] | None:
    """``(value, mask)``: the TEID bits the PoP defines for ``result`` (a fault of the access
    to ``va`` through address space ``asc``, :data:`ASC_SECONDARY` / :data:`ASC_PRIMARY`); only
    the bits in ``mask`` are specified.  None where no TEID (or none this model states) is stored
    (addressing, translation-specification, and a protection exception due to key-controlled
    protection, ``key_protected``: this model states no TEID bits for it).  ``low_address``: a
    protection exception due to low-address protection, bits 56/60/61 = 100 only.

    Translation exceptions (ASCE-type, region-first/second/third, segment, page): bits 0-51 the
    page address, bits 62-63 the space.  Protection with the enhanced-suppression-on-protection
    facility 2 (PoP ch. 3 "Suppression on Protection", the figure of TEID bits 56, 60, 61):
    bits 0-51 and 62-63 as above, bits 52-53 fetch (10) or store (01), and bits 56/60/61 = 001 for
    DAT protection, 101 for instruction-execution protection (low-address and key-controlled
    protection have other codes: not stated here).  Linux reads them the same way
    (arch/s390/mm/fault.c ``do_protection_exception()``, v6.12: ``!teid.b61`` is low-address
    protection, ``teid.b56`` with MACHINE_HAS_NX is IEP).  An instruction fetch goes through the
    primary space whatever the PSW's address-space control (ch. 3 "Address-Space Control")."""
    kind, _user = parse_access(access)
    if result.code in (ADDRESSING[1], TRANSLATION_SPECIFICATION[1]) or (key_protected and
                                                                         result.code == PROTECTION[1]):
        return None
    if low_address and result.code == PROTECTION[1]:  # only bits 56/60/61 = 100 (Linux: the rest may be invalid)
        return TEID_B56, TEID_B56 | TEID_B60 | TEID_B61
    value = (va & TEID_PAGE) | (ASC_PRIMARY if kind == "fetch" else asc)
    mask = TEID_PAGE | TEID_ASC
    if result.code == PROTECTION[1]:
        value |= (TEID_STORE if kind == "write" else TEID_FETCH) | TEID_B61
        value |= TEID_B56 if kind == "fetch" else 0  # the model's only fetch refusal is IEP
        mask |= TEID_FETCH | TEID_STORE | TEID_B56 | TEID_B60 | TEID_B61
    return value, mask
