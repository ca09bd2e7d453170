"""x86-64 entry formats against values hand-computed from the Intel SDM layout, and Linux's
swap encoding against worked values of the v6.12 formula (arch/x86/include/asm/pgtable_64.h)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archs import get_ops
from archs import x86_64 as x86
from archs.kconfig import kernel_config
from archs.linux import Prot, SwapTypes, SwpEntry

_SWAP = SwapTypes(kernel_config("x86_64"))  # v6.12, distro profile
SWP_MIGRATION_WRITE = _SWAP.SWP_MIGRATION_WRITE

U64 = (1 << 64) - 1


def test_table_entry_matches_sdm_table_4_15() -> None:
    # P(0)=1 RW(1)=2 U/S(2)=4 A(5)=0x20, bit 6 (Linux's D) = 0x40; address bits 51:12.
    assert x86.TABLE.build(p=1, rw=1, us=1, a=1, d=1, addr=0x5) == 0x5067
    assert x86.TABLE.build(xd=1, addr=0xFF_FFFF_FFFF) == (1 << 63) | 0x000F_FFFF_FFFF_F000


def test_4k_pte_matches_sdm_table_4_20() -> None:
    val = x86.PTE_4K.build(p=1, rw=1, xd=1, pkey=0b1010, addr=0x12345, g=1, pat=1)
    assert val == (1 << 63) | (0b1010 << 59) | 0x12345000 | (1 << 8) | (1 << 7) | 0b11


def test_2m_pde_matches_sdm_table_4_18() -> None:
    # Address bits 51:21, PAT at bit 12, PS at bit 7.
    assert x86.PDE_2M.build(addr=3, ps=1, p=1) == 0x600000 | 0x80 | 1
    assert x86.PDE_2M.build(pat=1) == 1 << 12
    assert x86.PDE_2M.masks["reserved_20_13"] == (13, 0x1FE000)


def test_1g_pdpte_matches_sdm_table_4_16() -> None:
    assert x86.PDPTE_1G.build(addr=1, ps=1, p=1) == 0x4000_0081
    assert x86.PDPTE_1G.masks["reserved_29_13"] == (13, 0x3FFF_E000)


def test_linux_software_bits_are_pgtable_types_h_bits() -> None:
    # _PAGE_BIT_SOFTW1 = 9 (SPECIAL), SOFTW2 = 10 (UFFD_WP), SOFTW3 = 11 (SOFT_DIRTY),
    # SOFTW4 = 57 (DEVMAP), SOFTW5 = 58 (SAVED_DIRTY), PROTNONE = GLOBAL = 8, NX = 63.
    assert x86._PAGE_SPECIAL == 1 << 9
    assert x86._PAGE_UFFD_WP == 1 << 10
    assert x86._PAGE_SOFT_DIRTY == 1 << 11
    assert x86._PAGE_DEVMAP == 1 << 57
    assert x86.PTE_4K.mask("saved_dirty") == 1 << 58
    assert x86._PAGE_PROTNONE == 1 << 8
    assert x86._PAGE_NX == 1 << 63
    assert x86.PTE_PFN_MASK == 0x000F_FFFF_FFFF_F000


@pytest.mark.parametrize("fmt", x86.FORMATS, ids=lambda f: f.name)
def test_derived_masks_equal_the_declaration(fmt) -> None:  # type: ignore[no-untyped-def]
    seen = 0
    for name in fmt.fields:
        shift, mask = fmt.masks[name]
        ones = (1 << fmt.width(name)) - 1
        assert mask == ones << shift, name
        assert mask & seen == 0, f"{name} overlaps another field"
        seen |= mask
        # Setting only this field through construct decodes to only this field.
        parsed = fmt.parse(fmt.build(**{name: ones}))
        assert parsed == {f: (ones if f == name else 0) for f in fmt.fields}
    assert seen == U64


@pytest.mark.parametrize("fmt", x86.FORMATS, ids=lambda f: f.name)
@given(value=st.integers(0, U64))
def test_parse_build_round_trip(fmt, value: int) -> None:  # type: ignore[no-untyped-def]
    fields = fmt.parse(value)
    assert fmt.build(**fields) == value
    assert all(fmt.get(value, f) == v for f, v in fields.items())


def _kernel_swp_entry(swp_type: int, offset: int) -> int:
    """__swp_entry() transcribed from the v6.12 macro:
    (~offset << SWP_OFFSET_SHIFT >> SWP_TYPE_BITS) | (type << (64 - SWP_TYPE_BITS)),
    SWP_TYPE_BITS = 5, SWP_OFFSET_SHIFT = (_PAGE_BIT_PROTNONE + 1) + 5 = 14."""
    return ((((~offset) << 14) & U64) >> 5) | (swp_type << 59)


def test_swap_entry_worked_value() -> None:
    ops = get_ops("x86_64:4level")
    # Worked by hand: ~0x1234 << 14 mod 2^64 = 0xFFFFFFFFFB72C000; >> 5 = 0x07FFFFFFFFDB9600;
    # type 27 << 59 = 0xD800000000000000.
    assert ops.swp_entry_to_pte(SwpEntry(27, 0x1234)) == 0xDFFF_FFFF_FFDB_9600
    assert ops.pte_to_swp_entry(0xDFFF_FFFF_FFDB_9600) == SwpEntry(27, 0x1234)


def test_migration_types_follow_swap_h() -> None:
    # What the compiled 6.12.118 x86-64 kernel says (foliowalk kernel check; tests/kernel checks it
    # live): distro (MEMORY_FAILURE=y, DEVICE_PRIVATE=n): MAX_SWAPFILES = 32 - 3 - 1 - 1 = 27,
    # HWPOISON 27, MIGRATION 28/29/30, PTE_MARKER 31; DEVICE_PRIVATE=y moves them down by 4.
    assert (_SWAP.SWP_MIGRATION_READ, _SWAP.SWP_MIGRATION_READ_EXCLUSIVE, SWP_MIGRATION_WRITE) == (28, 29, 30)
    assert (_SWAP.SWP_HWPOISON, _SWAP.SWP_PTE_MARKER, _SWAP.MAX_SWAPFILES) == (27, 31, 27)
    dp = SwapTypes(kernel_config("x86_64", "device-private"))
    assert (dp.SWP_MIGRATION_READ, dp.SWP_DEVICE_WRITE, dp.SWP_DEVICE_EXCLUSIVE_READ) == (24, 27, 30)


@given(swp_type=st.integers(0, 31), offset=st.integers(0, (1 << 50) - 1), flags=st.sampled_from([0, 2, 4, 8, 14]))
def test_swap_encode_decode_against_kernel_formula(swp_type: int, offset: int, flags: int) -> None:
    ops = get_ops("x86_64:5level")
    pte = _kernel_swp_entry(swp_type, offset)
    assert ops.swp_entry_to_pte(SwpEntry(swp_type, offset)) == pte
    # pte_to_swp_entry() ignores soft-dirty (1), uffd-wp (2) and exclusive (3) in the swap PTE.
    assert ops.pte_to_swp_entry(pte | flags) == SwpEntry(swp_type, offset)
    assert not ops.pte_present(pte) or swp_type >= 0  # present bit is 0 by construction
    assert pte & 1 == 0 and pte & (1 << 8) == 0 and pte & (1 << 7) == 0


def test_migration_entry_offset_holds_the_pfn_then_young_dirty_bits() -> None:
    ops = get_ops("x86_64:4level")
    # SWP_PFN_BITS = MAX_PHYSMEM_BITS(46 with 4-level) - PAGE_SHIFT = 34.
    assert ops.swp_pfn_bits() == 34
    e = ops.make_pfn_swp_entry(SWP_MIGRATION_WRITE, 0x1234, young=True, dirty=True)
    assert e.offset == 0x1234 | (1 << 34) | (1 << 35)
    assert ops.swp_offset_pfn(e) == 0x1234
    assert get_ops("x86_64:5level").swp_pfn_bits() == 40


def test_protnone_pte_holds_inverted_pfn() -> None:
    ops = get_ops("x86_64:4level")
    pte = ops.pfn_pte(0x1234, Prot(protnone=True, dirty=False))
    # PAGE_NONE = _PAGE_ACCESSED | _PAGE_PROTNONE, no present bit; pfn bits 12..51 inverted.
    assert pte & 0xFFF == 0x120 and pte >> 52 == 0
    # dirty: pte_mkdirty() adds _PAGE_SOFT_DIRTY (bit 11) and, Write being 0, keeps Dirty in
    # _PAGE_SAVED_DIRTY (bit 58) not bit 6 (v6.12 pgtable.h mksaveddirty_shift())
    dirty = ops.pfn_pte(0x1234, Prot(protnone=True))
    assert dirty & 0xFFF == 0x920 and dirty >> 52 == 1 << 6
    assert (pte >> 12) & ((1 << 40) - 1) == (~0x1234) & ((1 << 40) - 1)
    assert ops.pte_present(pte) and ops.pte_protnone(pte) and ops.pte_pfn(pte) == 0x1234


def test_predicates_on_hand_built_entries() -> None:
    ops = get_ops("x86_64:4level")
    table = 0x5000 | 0x67
    assert not ops.pmd_bad(table) and not ops.pud_bad(table) and not ops.p4d_bad(table)
    assert ops.p4d_bad(table | 1 << 9)  # software bit: not part of _KERNPG_TABLE | _PAGE_USER
    assert ops.pmd_bad(table & ~0x40)  # pmd_bad() requires _PAGE_DIRTY in a table entry
    assert not ops.pmd_bad(table & ~0x20)  # ... but tolerates _PAGE_ACCESSED clear
    assert ops.pte_none(0x60) and not ops.pte_none(0x61)  # A/D alone are the KNL erratum
    assert ops.pmd_present(0x80) and ops.pmd_leaf(0x80)  # PSE counts as present (THP split)
    # v6.12 pud_leaf() is "pud_val(pud) & _PAGE_PSE" (the compiled kernel: non-present PSE is a leaf);
    # v6.1's pud_large() needed PRESENT too
    assert ops.pud_leaf(0x4000_0081) and ops.pud_leaf(0x4000_0080) and not ops.pud_leaf(0x4000_0001)
    assert ops.pud_pfn(0x4000_0081) == 0x40000 and ops.pmd_pfn(0x60_0081) == 0x600
    assert not ops.pgd_none(0) and not ops.pgd_bad(0xFFF)  # 4-level: the pgd is folded
    l5 = get_ops("x86_64:5level")
    assert l5.pgd_none(0) and l5.pgd_bad(table & ~0x20)  # 5-level pgd_bad wants exactly _KERNPG_TABLE
    assert not l5.pgd_bad(table | 1 << 63)  # ... ignoring NX with PTI
