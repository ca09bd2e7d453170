"""s390x entry formats against values hand-computed from the z/Architecture Principles of
Operation (SA22-7832, ch. 3) bit layouts -- 64-bit big-endian doublewords, bit 0 is the MSB -- and
Linux v6.12's predicates and constructors against the constants and macros of
arch/s390/include/asm/pgtable.h and pgalloc.h, transcribed here (not taken from archs.s390x)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archs import get_ops as _get_ops
from archs import s390x as z
from archs.kconfig import kernel_config
from archs.linux import Prot, SwapTypes, SwpEntry

SWP_MIGRATION_WRITE = SwapTypes(kernel_config("s390x")).SWP_MIGRATION_WRITE  # v6.12, distro

U64 = (1 << 64) - 1
def get_ops(key: str) -> z.S390x:
    ops = _get_ops(key)
    assert isinstance(ops, z.S390x)
    return ops


CONFIGS = ["s390x:region1", "s390x:region2", "s390x:region3", "s390x:segment"]


# -- PoP bit numbering, written out by hand for the tests ------------------------------------------
def bit(n: int) -> int:
    """PoP bit n of a doubleword (bit 0 = 2**63)."""
    return 1 << (63 - n)


def field(first: int, last: int, value: int) -> int:
    assert 0 <= value < 1 << (last - first + 1)
    return value << (63 - last)


def test_pop_bits_helper() -> None:
    assert z.pop_bits(0) == (63, 1 << 63)
    assert z.pop_bits(63) == (0, 1)
    assert z.pop_bits(58) == (5, 0x20)  # the I bit of region/segment entries
    assert z.pop_bits(53) == (10, 0x400)  # the I bit of a PTE, FC of an STE
    assert z.pop_bits(60, 61) == (2, 0xC)  # TT / DT
    assert z.pop_bits(0, 51) == (12, 0xFFFF_FFFF_FFFF_F000)  # origins, PFRA
    assert z.pop_bits(0, 32) == (31, 0xFFFF_FFFF_8000_0000)  # RFAA
    assert z.pop_bits(0, 43) == (20, 0xFFFF_FFFF_FFF0_0000)  # SFAA
    assert z.pop_bits(32, 63) == (0, 0xFFFF_FFFF)
    assert z.pop_bits(0, 7, width=8) == (0, 0xFF) and z.pop_bits(4, width=8) == (3, 0x08)
    for first, last in [(0, 0), (0, 63), (22, 32), (44, 51), (57, 61)]:
        assert z.pop_range(z.pop_bits(first, last)[1]) == (first, last)
    for bad in [(-1, 3), (5, 4), (0, 64)]:
        with pytest.raises(ValueError):
            z.pop_bits(*bad)
    for mask in (0, 0b101, 1 << 64):
        with pytest.raises(ValueError):
            z.pop_range(mask)


@given(first=st.integers(0, 63), width=st.integers(1, 64))
def test_pop_bits_against_bit_by_bit_sum(first: int, width: int) -> None:
    last = min(63, first + width - 1)
    shift, mask = z.pop_bits(first, last)
    assert mask == sum(bit(n) for n in range(first, last + 1))
    assert shift == 63 - last


def test_virtual_address_fields_give_the_level_geometry() -> None:
    # PoP "Translation Process": RFX 0-10, RSX 11-21, RTX 22-32, SX 33-43, PX 44-51, BX 52-63.
    assert [(lv.shift, lv.bits) for lv in z._ALL_LEVELS] == [(53, 11), (42, 11), (31, 11), (20, 11), (12, 8)]
    assert [lv.table_size for lv in z._ALL_LEVELS] == [0x4000] * 4 + [0x800]  # 2048 / 256 entries
    va = field(0, 10, 5) | field(11, 21, 6) | field(22, 32, 7) | field(33, 43, 8) | field(44, 51, 9) | 0x123
    assert [lv.index(va) for lv in z._ALL_LEVELS] == [5, 6, 7, 8, 9]
    assert {k: get_ops(k).config.va_bits for k in CONFIGS} == {
        "s390x:region1": 64, "s390x:region2": 53, "s390x:region3": 42, "s390x:segment": 31,
    }
    assert [lv.linux for lv in get_ops("s390x:region1").config.levels] == ["pgd", "p4d", "pud", "pmd", "pte"]
    assert [lv.linux for lv in get_ops("s390x:segment").config.levels] == ["pmd", "pte"]
    ops = get_ops("s390x:region3")
    assert ops.PMD_SIZE == 1 << 20 and ops.PUD_SIZE == 1 << 31 and ops.PAGE_SIZE == 1 << 12
    assert get_ops("s390x:segment").PUD_SIZE == 1 << 31  # a constant in asm/pgtable.h
    assert ops.va_valid((1 << 42) - 1) and not ops.va_valid(1 << 42)
    assert get_ops("s390x:region1").va_valid(U64)


# -- formats vs the PoP figures --------------------------------------------------------------------
def test_asce_matches_pop() -> None:
    # Table origin 0-51, G 54, P 55, S 56, X 57, R 58, DT 60-61, TL 62-63.
    val = z.ASCE.build(origin=0x12345, p=1, s=1, x=1, dt=3, tl=3)
    assert val == 0x1234_5000 | bit(55) | bit(56) | bit(57) | field(60, 61, 3) | field(62, 63, 3)
    assert val == 0x1234_51CF
    assert z.ASCE.build(r=1) == bit(58) == 0x20  # the real-space ASCE the probe machine uses in CR1
    assert z.ASCE.build(g=1) == bit(54)
    # asm/pgtable.h: _ASCE_PRIVATE_SPACE 0x100, _ALT_EVENT 0x80, _SPACE_SWITCH 0x40, _REAL_SPACE
    # 0x20, _TYPE_MASK 0x0c (REGION1 0x0c, REGION2 0x08, REGION3 0x04, SEGMENT 0), _TABLE_LENGTH 3.
    assert (z._ASCE_PRIVATE_SPACE, z._ASCE_ALT_EVENT, z._ASCE_SPACE_SWITCH, z._ASCE_REAL_SPACE) == (
        0x100, 0x80, 0x40, 0x20,
    )
    assert (z._ASCE_TYPE_MASK, z._ASCE_TABLE_LENGTH, z._ASCE_ORIGIN) == (0x0C, 0x03, U64 & ~0xFFF)


@pytest.mark.parametrize("key,dt", list(zip(CONFIGS, [3, 2, 1, 0], strict=True)))
def test_mm_context_asce(key: str, dt: int) -> None:
    # mmu_context.h init_new_context(): __pa(pgd) | _ASCE_TABLE_LENGTH | _ASCE_USER_BITS | type.
    assert get_ops(key).asce(0x4000) == 0x4000 | 0x3 | (0x40 | 0x100 | 0x80) | (dt << 2)
    assert get_ops(key).asce(0x4000, user=False) == 0x4000 | 0x3 | (dt << 2)
    with pytest.raises(ValueError):
        get_ops(key).asce(0x4800)


def test_region_entry_matches_pop() -> None:
    # Origin 0-51, P 54, TF 56-57, I 58, TT 60-61, TL 62-63.
    assert z.REGION.build(origin=5, tt=3, tl=3) == 0x500F
    assert z.REGION.build(tf=1, tl=2, tt=1) == field(56, 57, 1) | field(60, 61, 1) | field(62, 63, 2) == 0x46
    assert z.REGION.build(i=1) == bit(58) == 0x20
    assert z.REGION.build(p=1) == bit(54) == 0x200
    assert z.REGION.build(fc=1) == bit(53) == 0x400
    # asm/pgtable.h _REGION_ENTRY_*: PROTECT 0x200, NOEXEC 0x100, OFFSET 0xc0, INVALID 0x20,
    # TYPE_MASK 0x0c, LENGTH 0x03; and _REGION1/2/3_ENTRY(_EMPTY).
    assert (z._REGION_ENTRY_PROTECT, z._REGION_ENTRY_NOEXEC, z._REGION_ENTRY_OFFSET) == (0x200, 0x100, 0xC0)
    assert (z._REGION_ENTRY_INVALID, z._REGION_ENTRY_TYPE_MASK, z._REGION_ENTRY_LENGTH) == (0x20, 0x0C, 0x03)
    assert (z._REGION1_ENTRY, z._REGION2_ENTRY, z._REGION3_ENTRY) == (0x0F, 0x0B, 0x07)
    assert (z._REGION1_ENTRY_EMPTY, z._REGION2_ENTRY_EMPTY, z._REGION3_ENTRY_EMPTY) == (0x2C, 0x28, 0x24)
    assert z._REGION_ENTRY_BITS == 0xFFFF_FFFF_FFFF_F22F
    # _REGION3_ENTRY_HARDWARE_BITS (FC=0): everything but bits 52 and 55.
    hw = z.REGION.mask("origin", "fc", "p", "tf", "i", "cr", "tt", "tl")
    assert hw == 0xFFFF_FFFF_FFFF_F6FF


def test_region3_large_entry_matches_pop() -> None:
    # EDAT-2: RFAA 0-32, AV 47, ACC 48-51, F 52, FC 53, P 54, IEP 55, I 58, CR 59, TT 60-61.
    assert z.REGION3_LARGE.build(rfaa=1, fc=1, tt=1) == (1 << 31) | bit(53) | field(60, 61, 1) == 0x8000_0404
    assert z.REGION3_LARGE.build(av=1) == bit(47) == 0x1_0000
    assert z.REGION3_LARGE.build(f=1, iep=1, cr=1) == bit(52) | bit(55) | bit(59) == 0x910
    # _REGION3_ENTRY_HARDWARE_BITS_LARGE = 0xffffffff8001073c: the PoP's fields minus ACC and F.
    assert z.REGION3_LARGE.mask("rfaa", "av", "fc", "p", "iep", "i", "cr", "tt") == 0xFFFF_FFFF_8001_073C
    # Linux's software bits in v6.12: DIRTY 0x2000, YOUNG 0x1000, SOFT_DIRTY 0x4000, WRITE 2, READ 1.
    assert z._REGION3_ENTRY_DIRTY == 0x2000 and z._REGION3_ENTRY_YOUNG == 0x1000
    assert z._REGION3_ENTRY_SOFT_DIRTY == 0x4000
    assert (z._REGION3_ENTRY_WRITE, z._REGION3_ENTRY_READ, z._REGION3_ENTRY_LARGE) == (0x2, 0x1, 0x400)
    assert z._REGION3_ENTRY_ORIGIN_LARGE == U64 & ~0x7FFF_FFFF


def test_segment_entries_match_pop() -> None:
    # FC=0: page-table origin 0-52 (2K-aligned), FC 53, P 54, I 58, CS 59, TT 60-61.
    assert z.SEGMENT.build(origin=0x12800 >> 11) == 0x12800
    assert z.SEGMENT.build(i=1, cs=1, p=1) == bit(58) | bit(59) | bit(54) == 0x230
    assert z.SEGMENT.masks["origin"] == (11, U64 & ~0x7FF)  # _SEGMENT_ENTRY_ORIGIN ~0x7ff
    # _SEGMENT_ENTRY_HARDWARE_BITS = 0xfffffffffffffe3c, _SEGMENT_ENTRY_BITS = 0xfffffffffffffe3f
    assert z.SEGMENT.mask("origin", "fc", "p", "i", "cs", "tt") == 0xFFFF_FFFF_FFFF_FE3C
    assert z._SEGMENT_ENTRY_BITS == 0xFFFF_FFFF_FFFF_FE3F
    # FC=1 (EDAT-1): SFAA 0-43, AV 47, ACC 48-51, F 52, FC 53, P 54, IEP 55, I 58, CS 59.
    assert z.SEGMENT_LARGE.build(sfaa=3, fc=1) == 0x30_0000 | bit(53) == 0x30_0400
    # _SEGMENT_ENTRY_HARDWARE_BITS_LARGE = 0xfffffffffff1073c.
    assert z.SEGMENT_LARGE.mask("sfaa", "av", "fc", "p", "iep", "i", "cs", "tt") == 0xFFFF_FFFF_FFF1_073C
    assert z._SEGMENT_ENTRY_ORIGIN_LARGE == U64 & ~0xFFFFF
    assert z._SEGMENT_ENTRY_DIRTY == 0x2000 and z._SEGMENT_ENTRY_YOUNG == 0x1000
    assert z._SEGMENT_ENTRY_SOFT_DIRTY == 0x4000
    assert (z._SEGMENT_ENTRY_WRITE, z._SEGMENT_ENTRY_READ, z._SEGMENT_ENTRY_LARGE) == (0x2, 0x1, 0x400)
    assert z._SEGMENT_ENTRY_PROTECT == 0x200 and z._SEGMENT_ENTRY_NOEXEC == 0x100
    assert z._SEGMENT_ENTRY_INVALID == 0x20
    assert (z._SEGMENT_ENTRY, z._SEGMENT_ENTRY_EMPTY) == (0, 0x20)


def test_pte_matches_pop_and_pgtable_h() -> None:
    # PFRA 0-51, bit 52 must be 0, I 53, P 54, IEP 55, bits 56-63 for programming.
    assert z.PTE.build(pfra=0x12345, i=1, p=1) == 0x1234_5000 | bit(53) | bit(54) == 0x1234_5600
    assert z.PTE.build(bit52=1, iep=1) == bit(52) | bit(55) == 0x900
    # asm/pgtable.h: _PAGE_NOEXEC 0x100, _PROTECT 0x200, _INVALID 0x400, _LARGE 0x800, and the
    # software bits PRESENT 1, SOFT_DIRTY 2, YOUNG 4, DIRTY 8, READ 0x10, WRITE 0x20,
    # SPECIAL 0x40, UNUSED 0x80.
    assert (z._PAGE_NOEXEC, z._PAGE_PROTECT, z._PAGE_INVALID, z._PAGE_LARGE) == (0x100, 0x200, 0x400, 0x800)
    assert (z._PAGE_PRESENT, z._PAGE_SOFT_DIRTY, z._PAGE_YOUNG, z._PAGE_DIRTY) == (1, 2, 4, 8)
    assert (z._PAGE_READ, z._PAGE_WRITE, z._PAGE_SPECIAL, z._PAGE_UNUSED) == (0x10, 0x20, 0x40, 0x80)
    assert z.PTE.mask("unused", "special", "write", "read", "dirty", "young", "soft_dirty", "present") == 0xFF
    # PAGE_NONE / PAGE_RO / PAGE_RX / PAGE_RW / PAGE_RWX
    assert (z.PAGE_NONE, z.PAGE_RO, z.PAGE_RX, z.PAGE_RW, z.PAGE_RWX) == (0x601, 0x711, 0x611, 0x731, 0x631)


def test_swap_pte_layout_comment() -> None:
    # | offset 0-51 | E 52 | 1 1 (53-54) | X X 55-56 | type 57-61 | S 62 | 0 63 |
    assert z.SWAP.build(offset=1, i=1, p=1, type=1) == (1 << 12) | 0x600 | (1 << 2)
    assert z.SWAP.masks["type"] == (2, 0x7C) and z.SWAP.masks["offset"] == (12, U64 & ~0xFFF)
    assert z.SWAP.mask("exclusive") == bit(52) and z.SWAP.mask("soft_dirty") == bit(62)


@pytest.mark.parametrize("fmt", z.FORMATS, ids=lambda f: f.name)
def test_derived_masks_equal_the_declaration(fmt) -> None:  # type: ignore[no-untyped-def]
    seen = 0
    first = 0
    for name in fmt.fields:  # declared from PoP bit 0 onwards, without gaps
        shift, mask = fmt.masks[name]
        width = fmt.width(name)
        assert (shift, mask) == z.pop_bits(first, first + width - 1), name
        assert mask & seen == 0, f"{name} overlaps another field"
        seen |= mask
        first += width
        parsed = fmt.parse(fmt.build(**{name: (1 << width) - 1}))
        assert parsed == {f: ((1 << width) - 1 if f == name else 0) for f in fmt.fields}
    assert seen == U64 and first == 64


@pytest.mark.parametrize("fmt", z.FORMATS, ids=lambda f: f.name)
@given(value=st.integers(0, U64))
def test_parse_build_round_trip(fmt, value: int) -> None:  # type: ignore[no-untyped-def]
    fields = fmt.parse(value)
    assert fmt.build(**fields) == value
    assert value.to_bytes(8, "big") == fmt.fmt.build(fmt.fmt.parse(value.to_bytes(8, "big")))
    assert all(fmt.get(value, f) == v for f, v in fields.items())


# -- Linux: swap entries against the kernel macros -------------------------------------------------
def _kernel_mk_swap_pte(swp_type: int, offset: int) -> int:
    """mk_swap_pte() transcribed from v6.12 asm/pgtable.h:
    pteval = _PAGE_INVALID | _PAGE_PROTECT;
    pteval |= (offset & __SWP_OFFSET_MASK) << __SWP_OFFSET_SHIFT;   MASK (1UL << 52) - 1, SHIFT 12
    pteval |= (type & __SWP_TYPE_MASK) << __SWP_TYPE_SHIFT;         MASK (1UL << 5) - 1, SHIFT 2"""
    pteval = 0x400 | 0x200
    pteval |= (offset & ((1 << 52) - 1)) << 12
    pteval |= (swp_type & ((1 << 5) - 1)) << 2
    return pteval


def test_swap_entry_worked_value() -> None:
    ops = get_ops("s390x:region3")
    # type 3, offset 0x1234: 0x1234 << 12 = 0x1234000; | 0x600; | 3 << 2 = 0xc.
    assert ops.swp_entry_to_pte(SwpEntry(3, 0x1234)) == 0x123_460C
    assert ops.pte_to_swp_entry(0x123_460C) == SwpEntry(3, 0x1234)
    assert ops.swp_entry_to_pte(SwpEntry(3, 0x1234), exclusive=True) == 0x123_4E0C


@given(
    swp_type=st.integers(0, 31),
    offset=st.integers(0, (1 << 52) - 1),
    extra=st.sampled_from([0, 0x2, 0x800, 0x802]),
)
def test_swap_encode_decode_against_kernel_formula(swp_type: int, offset: int, extra: int) -> None:
    ops = get_ops("s390x:region1")
    pte = _kernel_mk_swap_pte(swp_type, offset)
    assert ops.swp_entry_to_pte(SwpEntry(swp_type, offset)) == pte
    # pte_to_swp_entry() drops soft-dirty (0x2) and exclusive (0x800) before __swp_type/_offset.
    assert ops.pte_to_swp_entry(pte | extra) == SwpEntry(swp_type, offset)
    # pte_swap: (pte & 0x201) == 0x200; never present, never none.
    assert pte & 0x201 == 0x200 and not ops.pte_present(pte) and not ops.pte_none(pte)


def test_migration_entries_and_no_pmd_swap() -> None:
    ops = get_ops("s390x:region3")
    # SWP_PFN_BITS = MAX_PHYSMEM_BITS (CONFIG_MAX_PHYSMEM_BITS default 46) - PAGE_SHIFT.
    assert ops.swp_pfn_bits() == 34
    e = ops.make_pfn_swp_entry(SWP_MIGRATION_WRITE, 0x1234, young=True)
    pte = ops.swp_entry_to_pte(e)
    # SWP_MIGRATION_WRITE is 30 on s390 6.12 (no MEMORY_FAILURE, no DEVICE_PRIVATE; the compiled kernel)
    assert SWP_MIGRATION_WRITE == 30 and pte == _kernel_mk_swap_pte(30, 0x1234 | 1 << 34)
    assert ops.swp_offset_pfn(ops.pte_to_swp_entry(pte)) == 0x1234
    # No CONFIG_ARCH_ENABLE_THP_MIGRATION: is_pmd_migration_entry() is 0, pmd_to_swp_entry() is
    # swp_entry(0, 0) (swapops.h), even for a value that looks like a migration PTE.
    assert not ops.has_thp_migration and not ops.has_pte_devmap
    assert not ops.is_pmd_migration_entry(pte) and ops.pmd_to_swp_entry(pte) == SwpEntry(0, 0)
    with pytest.raises(ValueError):
        ops.swp_entry_to_pmd(e)


# -- Linux: predicates, dynamic folding, constructors ---------------------------------------------
def test_none_present_and_bad() -> None:
    ops = get_ops("s390x:region1")
    assert ops.pte_none(0x400) and not ops.pte_none(0) and not ops.pte_none(0x400 | 0x800)
    assert ops.pte_present(0x1) and not ops.pte_present(0x400)
    # pgd_none: the I bit of a region-first entry; folded (TT < 11) entries are never none/bad.
    assert ops.pgd_none(0x2C) and ops.pgd_none(0x5000 | 0x2F) and not ops.pgd_none(0x500F)
    assert not ops.pgd_none(0x24) and not ops.pgd_bad(0x24 | 0x100)
    assert ops.pgd_bad(0x500F | 0x10) and ops.pgd_bad(0x500F | 0x100) and ops.pgd_bad(0x500F | 0xC0)
    assert not ops.pgd_bad(0x500F | 0x200)
    # p4d/pud_none compare with the exact empty value; p4d_bad on a wrong (higher) type.
    assert ops.p4d_none(0x28) and not ops.p4d_none(0x28 | 0x1000) and not ops.p4d_none(0x24)
    assert ops.p4d_bad(0x500F) and not ops.p4d_bad(0x500B) and ops.p4d_bad(0x500B | 0x10)
    assert ops.pud_none(0x24) and not ops.pud_none(0x2C) and not ops.pud_none(0x20)
    assert ops.pud_present(0x5007) and not ops.pud_present(0x24) and ops.pud_present(0x20)  # folded
    assert ops.pud_leaf(0x8000_0407) and not ops.pud_leaf(0x8000_0403)  # LARGE needs TT=01
    assert ops.pud_bad(0x8000_0407) and ops.pud_bad(0x500B) and not ops.pud_bad(0x5007)
    # pmd: present = not exactly _SEGMENT_ENTRY_EMPTY; leaf = LARGE; bad = type/leaf/stray bits.
    assert ops.pmd_none(0x20) and ops.pmd_present(0x20 | 0x5000) and not ops.pmd_present(0x20)
    assert ops.pmd_leaf(0x10_0400) and ops.pmd_trans_huge(0x10_0400)
    assert ops.pmd_bad(0x10_0400) and ops.pmd_bad(0x5004) and ops.pmd_bad(0x5000 | 0x100)
    assert not ops.pmd_bad(0x5800) and not ops.pmd_bad(0x5800 | 0x230)
    assert ops.pmd_protnone(0x10_0600 | 0x20) and not ops.pmd_protnone(0x10_0401)
    assert not ops.pmd_devmap(0x10_0400) and not ops.pud_devmap(0x8000_0407)
    assert not ops.pmd_special(0x10_0400) and not ops.pud_special(0x8000_0407)
    assert ops.pmd_pfn(0x10_7503) == 0x100 and ops.pud_pfn(0x8000_7507) == 0x80000
    assert ops.pte_pfn(0x2B13F) == 0x2B and ops.pte_special(0x40)


def test_pgd_offset_takes_the_shift_from_the_first_entry() -> None:
    ops = get_ops("s390x:region3")
    va = field(0, 10, 1) | field(11, 21, 2) | field(22, 32, 3) | field(33, 43, 4)
    for first, index in [(0x2C, 1), (0x28, 2), (0x24, 3), (0x20, 4)]:  # TT 11/10/01/00
        assert ops.pgd_offset(0x4000, va, lambda pa, v=first: v) == 0x4000 + 8 * index
    # p4d/pud/pmd_offset descend only when the upper entry's TT designates a lower table.
    assert ops.p4d_offset(0x4008, 0x8000 | 0x0F, va) == 0x8000 + 8 * 2
    assert ops.p4d_offset(0x4008, 0x8000 | 0x0B, va) == 0x4008
    assert ops.pud_offset(0x4008, 0x8000 | 0x0B, va) == 0x8000 + 8 * 3
    assert ops.pud_offset(0x4008, 0x8000 | 0x07, va) == 0x4008
    assert ops.pmd_offset(0x4008, 0x8000 | 0x07, va) == 0x8000 + 8 * 4
    assert ops.pmd_offset(0x4008, 0x8800, va) == 0x4008
    # pte_offset: 2K page-table origin, 256 entries.
    assert ops.pte_offset(0x9800, va | field(44, 51, 0xFF)) == 0x9800 + 8 * 0xFF


def test_lower_offsets_wrap_around_2_to_the_64() -> None:
    """v6.12 arch/s390/include/asm/pgtable.h:1486-1525: ``(p4d_t *) pgd_deref(pgd) +
    p4d_index(address)`` is pointer arithmetic (an unsigned long, modulo 2**64), pgd_deref()
    = __va(val & _REGION_ENTRY_ORIGIN) (:1427-1428), __va(x) = x + __identity_base (asm/page.h:241,
    0 here).  An origin of 0xffff_ffff_ffff_f000 and index 0x7ff: 0xffff_ffff_ffff_f000 + 0x3ff8
    = 2**64 + 0x2ff8, so the entry is read at 0x2ff8."""
    ops = get_ops("s390x:region1")
    last = 0xFFFF_FFFF_FFFF_F000
    va2 = field(11, 21, 0x7FF)  # region-second index 0x7ff
    va3 = field(22, 32, 0x7FF)
    vas = field(33, 43, 0x7FF)
    assert ops.p4d_offset(0x4008, last | 0x0F, va2) == 0x2FF8
    assert ops.pud_offset(0x4008, last | 0x0B, va3) == 0x2FF8
    assert ops.pmd_offset(0x4008, last | 0x07, vas) == 0x2FF8
    # index 0x1ff: 0xffff_ffff_ffff_fff8, the last entry before the wrap
    assert ops.pud_offset(0x4008, last | 0x0B, field(22, 32, 0x1FF)) == 0xFFFF_FFFF_FFFF_FFF8


def test_clear_and_populate_values() -> None:
    ops = get_ops("s390x:region1")
    levels = ("pgd", "p4d", "pud", "pmd", "pte")
    assert [ops.clear_value(lv) for lv in levels] == [0x2C, 0x28, 0x24, 0x20, 0x400]
    # pgalloc.h: pgd_populate _REGION1_ENTRY | pa ... pmd_populate _SEGMENT_ENTRY | pa.
    assert [ops.mk_table(lv, 0x12000) for lv in ("pgd", "p4d", "pud")] == [0x1200F, 0x1200B, 0x12007]
    assert ops.mk_table("pmd", 0x12800) == 0x12800
    with pytest.raises(ValueError):
        ops.mk_table("pmd", 0x12400)
    with pytest.raises(ValueError):
        ops.mk_table("pud", 0x12800)
    # A folded level's empty value is that of the table it shares (region-third for pgd/p4d).
    assert get_ops("s390x:region3").clear_value("pgd") == 0x24
    # mk_bad: a bit the kernel's pXd_bad() rejects that DAT does not use in that entry.
    assert ops.mk_bad("pgd", 0x1200F) == 0x1201F and ops.pgd_bad(0x1201F)
    assert ops.mk_bad("p4d", 0x1200B) == 0x1201B and ops.p4d_bad(0x1201B)
    assert ops.mk_bad("pud", 0x12007) == 0x12107 and ops.pud_bad(0x12107)
    assert ops.mk_bad("pmd", 0x12800) == 0x12900 and ops.pmd_bad(0x12900)


def test_pxd_clear_writes_only_its_own_region_type() -> None:
    """v6.12 arch/s390/include/asm/pgtable.h:1001-1022, transcribed: pgd_clear() stores
    _REGION1_ENTRY_EMPTY (TT 11 | I = 0x2c) only if (val & _REGION_ENTRY_TYPE_MASK (0xc)) ==
    _REGION_ENTRY_TYPE_R1 (0xc); p4d_clear() 0x28 only for TT 10 (0x8); pud_clear() 0x24 only
    for TT 01 (0x4); pmd_clear() stores _SEGMENT_ENTRY_EMPTY (0x20) whatever the entry."""
    for key in ("s390x:region1", "s390x:region2", "s390x:region3", "s390x:segment"):
        ops = get_ops(key)
        for tt in range(4):
            val = 0x12000 | tt << 2 | 0x10  # an origin, the type, a bit pXd_bad() rejects
            assert ops.pxd_clear("pgd", val) == (0x2C if tt == 3 else None), (key, tt)
            assert ops.pxd_clear("p4d", val) == (0x28 if tt == 2 else None), (key, tt)
            assert ops.pxd_clear("pud", val) == (0x24 if tt == 1 else None), (key, tt)
            assert ops.pxd_clear("pmd", val) == 0x20
    # the other architectures' pXd_clear() always store 0 (x86 native_p?d_clear, arm64 set_p?d(0))
    for key in ("x86_64:4level", "arm64:4k:48"):
        assert _get_ops(key).pxd_clear("p4d", 0x1234_5000) == 0


def test_pfn_pte_follows_mk_pte_phys_and_pte_mkdirty() -> None:
    ops = get_ops("s390x:region2")
    pa = 0x2B000
    # PAGE_RW | pa, pte_mkyoung (young; READ clears INVALID), pte_mkdirty (DIRTY|SOFT_DIRTY; WRITE
    # clears PROTECT): NOEXEC|WRITE|READ|DIRTY|YOUNG|SOFT_DIRTY|PRESENT.
    assert ops.pfn_pte(0x2B, Prot()) == pa | 0x13F
    # Clean and writable: PROTECT stays (dirty tracking by protection faults).
    assert ops.pfn_pte(0x2B, Prot(dirty=False)) == pa | 0x335
    # Old: pte_mkold() sets INVALID -- present to Linux, invalid to DAT.
    old = ops.pfn_pte(0x2B, Prot(young=False, dirty=False))
    assert old == pa | 0x731 and ops.pte_present(old)
    # PROT_NONE: PAGE_NONE | YOUNG (| DIRTY); present, protnone, hardware-invalid.
    pn = ops.pfn_pte(0x2B, Prot(protnone=True, dirty=False))
    assert pn == pa | 0x605 and ops.pte_protnone(pn)
    # Read-only special (the zero page): PAGE_RO | special, young, dirty without WRITE keeps P.
    assert ops.pfn_pte(0x2B, Prot(write=False, special=True)) == pa | 0x35F
    # Executable, and a machine without NX drops NOEXEC.
    assert ops.pfn_pte(0x2B, Prot(exec=True)) == pa | 0x3F
    nonx = type(ops)(ops.config, machine_has_nx=False)
    assert nonx.pfn_pte(0x2B, Prot()) == pa | 0x3F
    with pytest.raises(ValueError):
        ops.pfn_pte(0x2B, Prot(devmap=True))


def test_pfn_pmd_and_pfn_pud_leaves() -> None:
    ops = get_ops("s390x:region1")
    # THP: SEGMENT_RW + pmd_mkhuge (LARGE|YOUNG|PROTECT) + pmd_mkdirty (clears PROTECT).
    assert ops.pfn_pmd(0x100, Prot()) == 0x10_0000 | 0x4000 | 0x2000 | 0x1000 | 0x400 | 0x100 | 0x3
    # Read-only (huge zero folio): SEGMENT_RO keeps PROTECT.
    ro = ops.pfn_pmd(0x100, Prot(write=False, dirty=False))
    assert ro == 0x10_0000 | 0x1000 | 0x400 | 0x200 | 0x100 | 0x1
    # PROT_NONE: SEGMENT_NONE keeps INVALID; pmd_protnone.
    pn = ops.pfn_pmd(0x100, Prot(protnone=True, dirty=False))
    assert pn == 0x10_0000 | 0x1000 | 0x400 | 0x200 | 0x20 and ops.pmd_protnone(pn)
    # hugetlb 2 GB: __pte_to_rste() of the huge PTE | _REGION_ENTRY_TYPE_R3 | _REGION3_ENTRY_LARGE.
    assert ops.pfn_pud(0x80000, Prot()) == 0x8000_0000 | 0x4000 | 0x2000 | 0x1000 | 0x400 | 0x100 | 0x4 | 0x3
    for bad in (0x101, 0x80100):
        with pytest.raises(ValueError):
            (ops.pfn_pmd if bad == 0x101 else ops.pfn_pud)(bad, Prot())


def test_decode_picks_the_format_from_the_entry_bits() -> None:
    ops = get_ops("s390x:region1")
    assert ops.decode("pte", 0x2B13F)["format"] == "pte"
    assert ops.decode("pte", 0x400)["format"] == "pte"
    assert ops.decode("pte", 0x123_460C) == {
        "format": "swap", "offset": 0x1234, "exclusive": 0, "i": 1, "p": 1, "unused_55_56": 0,
        "type": 3, "soft_dirty": 0, "present": 0,
    }
    assert ops.decode("pmd", 0x10_7503)["format"] == "segment-large"
    assert ops.decode("pmd", 0x12800)["format"] == "segment"
    assert ops.decode("pud", 0x8000_7507)["format"] == "region3-large"
    d = ops.decode("pgd", 0x1200F)
    assert d["format"] == "region" and d["origin"] == 0x12 and d["tt"] == 3 and d["tl"] == 3
    # At a folded level the entry's own type decides: a region-third-table top under "pgd".
    assert get_ops("s390x:region3").decode("pgd", 0x8000_7507)["format"] == "region3-large"
