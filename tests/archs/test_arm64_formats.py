"""arm64 descriptor formats against values hand-computed from the Arm ARM layout (DDI 0487 D8.3),
the geometry against D8.2 and Linux's pgtable-hwdef.h formulas, and the v6.12 Linux view
(pgtable-prot.h software bits, pgtable.h predicates and the swap entry macros) against the
kernel's own expressions transcribed here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archs import arm64 as a64
from archs import get_config, get_ops
from archs.kconfig import kernel_config
from archs.linux import Prot, SwapTypes, SwpEntry

_SWAP = SwapTypes(kernel_config("arm64"))  # v6.12, distro profile
SWP_MIGRATION_READ, SWP_MIGRATION_WRITE = _SWAP.SWP_MIGRATION_READ, _SWAP.SWP_MIGRATION_WRITE

U64 = (1 << 64) - 1
KEYS = ["arm64:4k:39", "arm64:4k:48", "arm64:16k:36", "arm64:16k:47", "arm64:64k:42", "arm64:64k:48"]


# -- descriptor layouts (D8.3), every expected value worked by hand -------------------------------------
def test_table_descriptor_per_granule() -> None:
    # bits[1:0] = 0b11, next-level table address in 47:m (m = 12/14/16), PXNTable = 59,
    # UXNTable = 60, APTable = 62:61, NSTable = 63.
    assert a64.TABLE[4096].build(valid=1, table=1, addr=0x12345) == 0x0000_0000_1234_5003
    assert a64.TABLE[16384].build(valid=1, table=1, addr=0x5) == 0x14003  # 0x5 << 14
    assert a64.TABLE[65536].build(valid=1, table=1, addr=0x5) == 0x50003  # 0x5 << 16
    assert a64.TABLE[4096].build(pxn_table=1) == 1 << 59
    assert a64.TABLE[4096].build(uxn_table=1) == 1 << 60
    assert a64.TABLE[4096].build(ap_table=0b11) == 0b11 << 61
    assert a64.TABLE[4096].build(ns_table=1) == 1 << 63
    assert a64.TABLE[16384].masks["res0_13_12"] == (12, 0x3000)
    assert a64.TABLE[65536].masks["res0_15_12"] == (12, 0xF000)
    assert a64.TABLE[4096].masks["addr"][1] == 0x0000_FFFF_FFFF_F000  # bits 47:12


def test_page_descriptor_4k() -> None:
    # A user read/write page as Linux leaves it after a write fault, bit by bit:
    # valid 0, page 1, AttrIndx 0, AP[1] 6 (EL0), SH 9:8 = 0b11, AF 10, nG 11, OA 47:12,
    # DBM 51 (PTE_WRITE), PXN 53, UXN 54, Linux PTE_DIRTY 55.
    val = a64.PAGE[4096].build(
        valid=1, table=1, ap1=1, sh=3, af=1, ng=1, addr=0xABCDE, dbm=1, pxn=1, uxn=1, dirty=1
    )
    assert val == 0x00E8_0000_ABCD_EF43
    assert a64.PAGE[4096].build(ap2=1) == 1 << 7
    assert a64.PAGE[4096].build(attr_indx=0b101) == 0b101 << 2
    assert a64.PAGE[4096].build(ns=1) == 1 << 5
    assert a64.PAGE[4096].build(cont=1, gp=1) == (1 << 52) | (1 << 50)
    assert a64.PAGE[4096].build(pbha=0xF, ignored_63=1) == 0xF8 << 56


def test_page_descriptor_16k_and_64k_output_address() -> None:
    assert a64.PAGE[16384].build(addr=1) == 1 << 14  # OA 47:14
    assert a64.PAGE[16384].masks["res0_13_12"] == (12, 0x3000)
    assert a64.PAGE[65536].build(addr=1) == 1 << 16  # OA 47:16
    assert a64.PAGE[65536].masks["addr"][1] == 0x0000_FFFF_FFFF_0000
    assert a64.PAGE[65536].masks["res0_15_12"] == (12, 0xF000)  # OA[51:48] with FEAT_LPA only


@pytest.mark.parametrize(
    "granule,level,n",
    [(4096, 1, 30), (4096, 2, 21), (16384, 2, 25), (65536, 2, 29), (4096, 0, 39), (16384, 1, 36),
     (65536, 1, 42)],
)
def test_block_descriptor_output_address(granule: int, level: int, n: int) -> None:
    # Block of 2**n bytes: OA 47:n, RES0 n-1:17, nT 16, RES0 15:12; bits[1:0] = 0b01.
    fmt = a64.BLOCK[(granule, level)]
    assert fmt.build(valid=1, addr=1) == (1 << n) | 1
    assert fmt.masks["addr"][1] == ((1 << 48) - 1) & ~((1 << n) - 1)
    assert fmt.masks[f"res0_{n - 1}_17"][1] == ((1 << n) - 1) & ~((1 << 17) - 1)
    assert fmt.masks["nt"] == (16, 1 << 16)
    assert fmt.masks["res0_15_12"] == (12, 0xF000)


def test_swap_format_is_the_kernel_comment() -> None:
    # "bits 0-1: present (must be zero), 2: PG_anon_exclusive, 3: uffd-wp, 6-10: swap type,
    #  11: PTE_PRESENT_INVALID (must be zero), 12-61: swap offset"
    assert a64.SWAP.masks["present"] == (0, 0b11)
    assert a64.SWAP.masks["exclusive"] == (2, 1 << 2)
    assert a64.SWAP.masks["uffd_wp"] == (3, 1 << 3)
    assert a64.SWAP.masks["type"] == (6, 0x1F << 6)
    assert a64.SWAP.masks["present_invalid"] == (11, 1 << 11)
    assert a64.SWAP.masks["offset"] == (12, ((1 << 50) - 1) << 12)


def test_linux_software_bits_are_pgtable_prot_h() -> None:
    # pgtable-hwdef.h / pgtable-prot.h (v6.12)
    assert a64.PTE_VALID == 1 and a64.PTE_TABLE_BIT == 2
    assert a64.PTE_USER == 1 << 6 and a64.PTE_RDONLY == 1 << 7 and a64.PTE_SHARED == 3 << 8
    assert a64.PTE_AF == 1 << 10 and a64.PTE_NG == 1 << 11
    assert a64.PTE_GP == 1 << 50 and a64.PTE_DBM == 1 << 51 and a64.PTE_CONT == 1 << 52
    assert a64.PTE_PXN == 1 << 53 and a64.PTE_UXN == 1 << 54
    assert a64.PTE_WRITE == a64.PTE_DBM  # "same as DBM (51)"
    assert a64.PTE_DIRTY == 1 << 55 and a64.PTE_SPECIAL == 1 << 56 and a64.PTE_DEVMAP == 1 << 57
    assert a64.PTE_UFFD_WP == 1 << 58
    assert a64.PTE_PRESENT_INVALID == a64.PTE_NG  # v6.10+: PROT_NONE overlays nG
    assert a64.PTE_SWP_EXCLUSIVE == 1 << 2 and a64.PTE_SWP_UFFD_WP == 1 << 3
    assert a64.PXD_TABLE_PXN == 1 << 59 and a64.PXD_TABLE_UXN == 1 << 60
    assert a64.S1_TABLE_AP == 3 << 61  # pgtable-hwdef.h: (_AT(pmdval_t, 3) << 61)
    # PAGE_NONE = ((_PAGE_DEFAULT) & ~PTE_VALID) | PTE_PRESENT_INVALID | PTE_RDONLY | PTE_NG |
    #             PTE_PXN | PTE_UXN, _PAGE_DEFAULT = PTE_TYPE_PAGE | PTE_AF | PTE_SHARED | MT_NORMAL
    assert a64.PAGE_NONE == (0b10 | 1 << 10 | 3 << 8) | 1 << 11 | 1 << 7 | 1 << 53 | 1 << 54


@pytest.mark.parametrize("page_shift", [12, 14, 16])
def test_pte_addr_low_is_the_kernel_formula(page_shift: int) -> None:
    # #define PTE_ADDR_LOW (((_AT(pteval_t, 1) << (50 - PAGE_SHIFT)) - 1) << PAGE_SHIFT)
    assert a64.pte_addr_low(page_shift) == ((1 << (50 - page_shift)) - 1) << page_shift


@pytest.mark.parametrize("fmt", a64.FORMATS, ids=lambda f: f.name)
def test_derived_masks_equal_the_declaration(fmt) -> None:  # type: ignore[no-untyped-def]
    seen = 0
    for name in fmt.fields:
        shift, mask = fmt.masks[name]
        ones = (1 << fmt.width(name)) - 1
        assert mask == ones << shift, name
        assert mask & seen == 0, f"{name} overlaps another field"
        seen |= mask
        assert fmt.parse(fmt.build(**{name: ones})) == {f: (ones if f == name else 0) for f in fmt.fields}
    assert seen == U64


@pytest.mark.parametrize("fmt", a64.FORMATS, ids=lambda f: f.name)
@given(value=st.integers(0, U64))
def test_parse_build_round_trip(fmt, value: int) -> None:  # type: ignore[no-untyped-def]
    fields = fmt.parse(value)
    assert fmt.build(**fields) == value
    assert all(fmt.get(value, f) == v for f, v in fields.items())


# -- geometry (D8.2) and Linux's folding (pgtable-hwdef.h, Kconfig PGTABLE_LEVELS) ------------------------
GEOMETRY = {
    # key: (start level, top-table entries, [(level, shift, linux, leaf size)])
    "arm64:4k:39": (1, 512, [(1, 30, "pud", 1 << 30), (2, 21, "pmd", 2 << 20), (3, 12, "pte", 4096)]),
    "arm64:4k:48": (0, 512, [(0, 39, "p4d", None), (1, 30, "pud", 1 << 30), (2, 21, "pmd", 2 << 20),
                             (3, 12, "pte", 4096)]),
    "arm64:16k:36": (2, 2048, [(2, 25, "pmd", 32 << 20), (3, 14, "pte", 16384)]),
    "arm64:16k:47": (1, 2048, [(1, 36, "pud", None), (2, 25, "pmd", 32 << 20), (3, 14, "pte", 16384)]),
    "arm64:64k:42": (2, 8192, [(2, 29, "pmd", 512 << 20), (3, 16, "pte", 65536)]),
    "arm64:64k:48": (1, 64, [(1, 42, "pud", None), (2, 29, "pmd", 512 << 20), (3, 16, "pte", 65536)]),
}


@pytest.mark.parametrize("key", KEYS)
def test_geometry(key: str) -> None:
    cfg = get_config(key)
    start, top_entries, levels = GEOMETRY[key]
    page_shift = cfg.page_shift
    # ARM64_HW_PGTABLE_LEVELS(va_bits) = ((va_bits) - 4) / (PAGE_SHIFT - 3)
    assert len(cfg.levels) == (cfg.va_bits - 4) // (page_shift - 3) == 4 - start
    assert cfg.extra["start_level"] == start == a64.start_level(1 << page_shift, cfg.va_bits)
    # PGDIR_SHIFT = ARM64_HW_PGTABLE_LEVEL_SHIFT(4 - CONFIG_PGTABLE_LEVELS),
    # LEVEL_SHIFT(n) = (PAGE_SHIFT - 3) * (4 - n) + 3; PTRS_PER_PGD = 1 << (VA_BITS - PGDIR_SHIFT)
    pgdir_shift = (page_shift - 3) * (4 - start) + 3
    assert cfg.levels[0].shift == pgdir_shift and cfg.levels[0].entries == 1 << (cfg.va_bits - pgdir_shift)
    assert cfg.levels[0].entries == top_entries
    got = [(int(lv.name[1:]), lv.shift, lv.linux, lv.leaf_size) for lv in cfg.levels]
    assert got == levels
    for lv in cfg.levels[1:]:
        assert lv.table_size == 1 << page_shift  # every lower table is one granule


@pytest.mark.parametrize("key", KEYS)
def test_linux_folding(key: str) -> None:
    ops = get_ops(key)
    n = len(ops.config.levels)
    # nop4d (4 levels), nopud (3), nopmd (2): the folded levels' none/bad are constant 0.
    folded = {4: {"pgd"}, 3: {"pgd", "p4d"}, 2: {"pgd", "p4d", "pud"}}[n]
    assert {lv for lv in ("pgd", "p4d", "pud", "pmd") if ops.folded(lv)} == folded
    for lv in folded:
        assert not getattr(ops, f"{lv}_none")(0) and not getattr(ops, f"{lv}_bad")(0x1)
    # PMD_SIZE (PUD_SIZE) is the span of the level that interprets it.
    assert ops.PMD_SIZE == 1 << ops.hw_level("pmd").shift
    assert ops.PUD_SIZE == 1 << ops.hw_level("pud").shift
    if n == 2:
        assert not ops.pud_leaf(0x1) and ops.pud_present(0)


def test_va_valid_is_the_ttbr_select_rule() -> None:
    ops = get_ops("arm64:4k:48")
    assert ops.va_valid(0x0000_8000_0000_0000)  # bit 47 is an index bit, not a sign bit
    assert ops.va_valid(0xFFFF_0000_0000_0000) and ops.va_valid(U64)
    assert not ops.va_valid(0x0001_0000_0000_0000) and not ops.va_valid(0xFFFE_FFFF_FFFF_FFFF)


# -- Linux predicates on hand-built entries (pgtable.h, v6.12) -------------------------------------------
def test_pte_predicates() -> None:
    ops = get_ops("arm64:4k:48")
    page = 0x00E8_0000_ABCD_EF43
    assert ops.pte_present(page) and ops.pte_valid(page) and not ops.pte_none(page)
    assert ops.pte_pfn(page) == 0xABCDE and ops.pte_write(page) and ops.pte_user(page)
    assert not ops.pte_user_exec(page) and ops.pte_dirty(page) and ops.pte_young(page)
    assert ops.pte_none(0) and not ops.pte_present(0)
    # pte_present_invalid: PTE_PRESENT_INVALID (nG) without PTE_VALID
    assert ops.pte_present(1 << 11) and not ops.pte_valid(1 << 11)
    assert ops.pte_protnone(1 << 11 | 1 << 54)  # and !pte_user && !pte_user_exec
    assert not ops.pte_protnone(1 << 11)  # user-executable: present-invalid but not PROT_NONE
    assert not ops.pte_protnone(1 << 11 | 1 << 54 | 1 << 6)
    # PTE_ADDR_LOW reads bits 49:48 as address bits too (Unicorn drops them: a deviation).
    assert ops.pte_pfn(1 << 48 | 0x3) == 1 << 36
    assert ops.pte_special(1 << 56) and ops.pte_devmap(1 << 57) and ops.pte_uffd_wp(1 << 58)
    assert ops.pte_hw_dirty(1 << 51) and not ops.pte_hw_dirty(1 << 51 | 1 << 7)


def test_pmd_predicates() -> None:
    ops = get_ops("arm64:4k:48")
    block = 0x4000_0000 | 0x741  # 2M block at 1G: AF, SH, AP[1], bits[1:0] = 0b01
    table = 0x5000 | 0b11
    assert ops.pmd_leaf(block) and ops.pmd_present(block)
    assert ops.pmd_bad(block)  # pmd_bad = !pmd_table
    assert ops.pmd_sect(block) and not ops.pmd_table(block)
    assert ops.pmd_table(table) and not ops.pmd_bad(table) and not ops.pmd_leaf(table)
    assert ops.pmd_trans_huge(block) and not ops.pmd_trans_huge(table) and not ops.pmd_trans_huge(0)
    assert ops.pmd_pfn(block | 0x1000) == 0x40000  # & PMD_MASK
    assert ops.table_pa("pmd", table) == 0x5000
    assert ops.pmd_none(0) and not ops.pmd_present(0)
    # pmd_mkinvalid()/PROT_NONE: present-invalid, still a leaf to Linux
    inv = (block & ~1) | 1 << 11
    assert ops.pmd_present(inv) and ops.pmd_leaf(inv)
    assert ops.pmd_devmap(1 << 57 | block) and ops.pmd_special(1 << 56 | block)


def test_pud_predicates_follow_the_granule() -> None:
    block = 0x4000_0000 | 0x741
    four_k = get_ops("arm64:4k:48")
    assert four_k.pud_leaf(block) and four_k.pud_bad(block) and four_k.pud_pfn(block | 0x20_0000) == 0x40000
    assert not four_k.pud_leaf(0x5003) and not four_k.pud_bad(0x5003)
    # 16K, 3 levels: pud_sect()/pud_table() are the type-bit macros, so Linux takes 0b01 at L1
    # as a (64G) leaf although the architecture has no level-1 block with 16K.
    sixteen = get_ops("arm64:16k:47")
    assert sixteen.pud_leaf(1 << 36 | 0x741) and sixteen.PUD_SIZE == 1 << 36
    # 64K: "static inline bool pud_table(pud_t pud) { return true; }", but pud_bad() is the type-bit
    # macro "(pud_val(pud) & PUD_TYPE_MASK) != PUD_TYPE_TABLE" (the compiled 6.12 kernel: 1 here)
    sixty_four = get_ops("arm64:64k:48")
    assert sixty_four.pud_table(0x741) and not sixty_four.pud_leaf(0x741) and sixty_four.pud_bad(0x741)
    assert not sixty_four.pud_bad(0x743)
    # no HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD: pud_devmap() is 0, no pud_special()
    for ops in (four_k, sixteen, sixty_four):
        assert not ops.pud_devmap(block | 1 << 57) and not ops.pud_special(block | 1 << 56)


def test_pud_page_keeps_the_bits_pud_pfn_masks() -> None:
    """v6.12 arch/arm64/include/asm/pgtable.h:859 ``pud_page(pud) = phys_to_page(__pud_to_phys(pud))``
    with :611/:87 ``__pud_to_phys(pud) = pud_val(pud) & PTE_ADDR_LOW`` (bits 49:12 with 4K pages),
    while :613 ``pud_pfn(pud) = (__pud_to_phys(pud) & PUD_MASK) >> PAGE_SHIFT``: a 1G block at
    0x4000_0000 with bit 21 (RES0 in the descriptor) set is page 0x40200 to pud_page(), pfn
    0x40000 to pud_pfn()."""
    four_k = get_ops("arm64:4k:48")
    block = 0x4000_0000 | 0x20_0000 | 0x741
    assert four_k.pud_pfn(block) == 0x4_0000
    assert four_k.pud_page_pfn(block) == (block & (((1 << 38) - 1) << 12)) >> 12 == 0x4_0200
    # bits 49:48 are PTE_ADDR_LOW's too (v6.12; RES0 with a 48-bit OA)
    assert four_k.pud_page_pfn(block | 1 << 49) == 0x4_0200 | 1 << 37
    # x86-64 and s390 define pud_page() as pfn_to_page(pud_pfn()) (x86 pgtable.h:1130, s390 :1543)
    for key in ("x86_64:4level", "s390x:region3"):
        ops = get_ops(key)
        leaf = ops.pfn_pud(0x8_0000, Prot())  # 2 GiB: aligned for both
        assert ops.pud_page_pfn(leaf) == ops.pud_pfn(leaf) == 0x8_0000


def test_ptep_get_of_a_contiguous_pte_gathers_the_block() -> None:
    """v6.12 arch/arm64/include/asm/pgtable.h:1632-1640 and arch/arm64/mm/contpte.c:155-180,
    transcribed: a valid PTE with PTE_CONT (bit 52) gets PTE_AF (bit 10) if any entry of its
    CONT_PTES-aligned block is young, and pte_mkdirty() -- PTE_DIRTY (bit 55), and PTE_RDONLY
    (bit 7) cleared if PTE_WRITE (bit 51) -- if any is dirty (PTE_DIRTY, or PTE_WRITE without
    PTE_RDONLY)."""
    ops = get_ops("arm64:4k:48")
    assert ops.CONT_PTES == 16 and get_ops("arm64:16k:47").CONT_PTES == 128 and get_ops("arm64:64k:48").CONT_PTES == 32
    clean_ro = 0x4_0000_0000 | 1 << 52 | 1 << 7 | 0x3  # valid page, CONT, RDONLY, old, clean
    clean_rw = clean_ro | 1 << 51  # PTE_WRITE, still RDONLY: writable but clean
    table = {0x5000 + 8 * i: clean_ro for i in range(16)}
    table[0x5000 + 8 * 3] |= 1 << 10  # young
    table[0x5000 + 8 * 12] = clean_rw & ~(1 << 7)  # hardware dirty: writable, RDONLY clear
    table[0x5080] = 1 << 10 | 1 << 55  # the next block: not read
    read = table.__getitem__
    assert ops.ptep_get(0x5038, clean_ro, read) == clean_ro | 1 << 10 | 1 << 55
    assert ops.ptep_get(0x5038, clean_rw, read) == (clean_rw | 1 << 10 | 1 << 55) & ~(1 << 7)
    assert ops.ptep_get(0x5038, clean_ro & ~(1 << 52), read) == clean_ro & ~(1 << 52)  # not contiguous
    assert ops.ptep_get(0x5038, clean_ro & ~1, read) == clean_ro & ~1  # not valid
    # v6.1 has no CONFIG_ARM64_CONTPTE (new in v6.9): ptep_get() is READ_ONCE(*ptep)
    v61 = a64.Arm64(get_config("arm64:4k:48"), kconfig=kernel_config("arm64", version="6.1"))
    assert v61.ptep_get(0x5038, clean_ro, read) == clean_ro


def test_va_ors_table_address_bits_into_page_offset() -> None:
    """v6.12 arch/arm64/include/asm/memory.h:353 ``__phys_to_virt(x) = ((x) - PHYS_OFFSET) |
    PAGE_OFFSET`` with :44-45 PAGE_OFFSET = -(1 << VA_BITS), PHYS_OFFSET 0, and :335
    ``__lm_to_phys(va) = va - PAGE_OFFSET``: a table address is read at pa mod 2**VA_BITS when
    that lies in the linear map (below 2**(VA_BITS - 1), :333), else not through it."""
    four_k = get_ops("arm64:4k:48")
    table = 1 << 49 | 0x600_3000 | 0x3  # PTE_ADDR_LOW (:87) keeps bit 49
    assert four_k.table_pa("pud", table) == 0x2_0000_0600_3000
    assert four_k.pgtable_pa("pud", table) == 0x600_3000
    assert four_k.pgtable_pa("pud", 0x600_3003) == 0x600_3000  # nothing to alias
    small = get_ops("arm64:4k:39")  # PAGE_OFFSET 0xffffff8000000000
    assert small.pgtable_pa("pmd", 1 << 40 | 1 << 39 | 0x5000 | 0x3) == 0x5000
    # 2**38 | 0x5000 is at or above PAGE_END - PAGE_OFFSET = 2**38: not a linear-map address
    assert small.pgtable_pa("pmd", 1 << 39 | 1 << 38 | 0x5000 | 0x3) == 1 << 39 | 1 << 38 | 0x5000
    # the judge's fact: the walk below such an entry reads another table than the MMU's
    trace = [("pud", 0x6000_0128, table), ("pmd", 0x600_3000 + 8 * 5, 0)]
    assert "Linux reads the pmd table at 0x6003000" in (four_k.walk_diverges(trace, 5 << 21) or "")
    assert four_k.walk_diverges([("pud", 0x128, 0x600_3003), ("pmd", 0x600_3028, 0)], 5 << 21) is None


def test_p4d_bad_is_the_table_bit() -> None:
    ops = get_ops("arm64:4k:48")
    # p4d_bad(p4d) = pgtable_l4_enabled() && !(p4d_val(p4d) & 2); p4d_none = !p4d_val
    assert ops.p4d_bad(0x5001) and not ops.p4d_bad(0x5003) and ops.p4d_bad(0x5000)
    assert ops.p4d_none(0) and not ops.p4d_none(0x5003)
    assert ops.mk_bad("p4d", 0x0800_0000_0000_5003) == 0x0800_0000_0000_5001


def test_mk_table_is_pxx_populate_for_a_user_mm() -> None:
    # pmd_populate(): PMD_TYPE_TABLE | PMD_TABLE_PXN; pud_populate()/p4d_populate() likewise for
    # a user mm.
    assert get_ops("arm64:4k:48").mk_table("pmd", 0x12_3000) == (1 << 59) | 0x12_3003
    assert get_ops("arm64:64k:48").mk_table("pud", 0x3_0000) == (1 << 59) | 0x3_0003
    with pytest.raises(ValueError):
        get_ops("arm64:16k:47").mk_table("pmd", 0x1000)  # not 16K aligned


# -- building leaves (pfn_pte / pfn_pmd / pfn_pud + pte_mk*) --------------------------------------------
def test_pfn_pte_user_protections() -> None:
    ops = get_ops("arm64:4k:48")
    base = 0x703 | 1 << 11 | 1 << 6 | 1 << 53  # _PAGE_DEFAULT | PTE_USER | PTE_NG | PTE_PXN
    # PAGE_READONLY: + PTE_RDONLY | PTE_UXN
    assert ops.pfn_pte(0x10, Prot(write=False, dirty=False)) == 0x10000 | base | 1 << 7 | 1 << 54
    # PAGE_SHARED then pte_mkdirty(): PTE_WRITE, PTE_DIRTY, PTE_RDONLY cleared
    assert ops.pfn_pte(0x10, Prot()) == 0x10000 | base | 1 << 54 | 1 << 51 | 1 << 55
    # clean writable: PTE_WRITE | PTE_RDONLY (hardware-read-only until dirtied)
    clean = ops.pfn_pte(0x10, Prot(dirty=False))
    assert clean & (1 << 51 | 1 << 7) == 1 << 51 | 1 << 7
    assert ops.pte_write(clean) and not ops.pte_hw_dirty(clean)
    # exec: no UXN; old: no AF; special
    assert not ops.pfn_pte(0x10, Prot(exec=True)) & 1 << 54
    assert not ops.pfn_pte(0x10, Prot(young=False)) & 1 << 10
    assert ops.pfn_pte(0x10, Prot(special=True)) & 1 << 56
    # pte_mkdevmap(): PTE_DEVMAP | PTE_SPECIAL; pmd_mkdevmap(): PTE_DEVMAP only
    assert ops.pfn_pte(0x10, Prot(devmap=True)) & (3 << 56) == 3 << 56
    assert ops.pfn_pmd(0x200, Prot(devmap=True)) & (3 << 56) == 1 << 57


def test_pfn_pte_kernel_protections() -> None:
    ops = get_ops("arm64:4k:48")
    # PAGE_KERNEL = PROT_NORMAL = PROT_DEFAULT | PTE_PXN | PTE_UXN | PTE_WRITE | MT_NORMAL
    k = ops.pfn_pte(0x10, Prot(user=False))
    assert k & ~(1 << 55) == 0x10000 | 0x703 | 1 << 53 | 1 << 54 | 1 << 51
    # _PAGE_KERNEL_RO: PTE_RDONLY, no PTE_WRITE; _PAGE_KERNEL_EXEC: no PXN
    ro = ops.pfn_pte(0x10, Prot(user=False, write=False))
    assert ro & 1 << 7 and not ro & 1 << 51
    assert not ops.pfn_pte(0x10, Prot(user=False, exec=True)) & 1 << 53


def test_protnone_and_huge_leaves() -> None:
    ops = get_ops("arm64:4k:48")
    pte = ops.pfn_pte(0x1234, Prot(protnone=True))
    # PAGE_NONE then pte_mkdirty() (Prot's default dirty=True): PTE_DIRTY (bit 55) set, PTE_RDONLY
    # kept since PAGE_NONE has no PTE_WRITE (v6.12 pgtable.h pte_mkdirty(); the compiled 6.12
    # kernel's pfn_pte op gave the same, where the model had returned bare PAGE_NONE)
    assert pte == 0x1234000 | a64.PAGE_NONE | 1 << 55
    assert ops.pfn_pte(0x1234, Prot(protnone=True, dirty=False)) == 0x1234000 | a64.PAGE_NONE
    assert ops.pte_present(pte) and ops.pte_protnone(pte) and not ops.pte_valid(pte)
    assert ops.pte_pfn(pte) == 0x1234
    # pmd_mkhuge(pfn_pmd()): the table bit cleared -> a block (0b01), or 0b00 for PROT_NONE
    pmd = ops.pfn_pmd(0x200, Prot())
    assert pmd & 3 == 1 and ops.pmd_leaf(pmd) and ops.pmd_pfn(pmd) == 0x200
    pn = ops.pfn_pmd(0x200, Prot(protnone=True))
    assert pn & 3 == 0 and ops.pmd_present(pn) and ops.pmd_leaf(pn) and ops.pmd_protnone(pn)
    pud = ops.pfn_pud(0x40000, Prot())
    assert pud & 3 == 1 and ops.pud_leaf(pud) and ops.pud_pfn(pud) == 0x40000
    with pytest.raises(ValueError):
        ops.pfn_pmd(0x201, Prot())  # not PMD aligned


# -- swap entries: the v6.12 macros transcribed ------------------------------------------------------------
def _kernel_swp_entry(swp_type: int, offset: int) -> int:
    """#define __swp_entry(type,offset) ((swp_entry_t) { ((type) << __SWP_TYPE_SHIFT) |
    ((offset) << __SWP_OFFSET_SHIFT) }), __SWP_TYPE_SHIFT 6, __SWP_OFFSET_SHIFT 12;
    __swp_entry_to_pte(swp) = (pte_t) { (swp).val }."""
    return (swp_type << 6) | (offset << 12)


def _kernel_swp_type(val: int) -> int:
    return (val >> 6) & ((1 << 5) - 1)  # __swp_type: >> __SWP_TYPE_SHIFT & __SWP_TYPE_MASK


def _kernel_swp_offset(val: int) -> int:
    return (val >> 12) & ((1 << 50) - 1)  # __swp_offset: >> __SWP_OFFSET_SHIFT & __SWP_OFFSET_MASK


def test_swap_entry_worked_value() -> None:
    ops = get_ops("arm64:4k:48")
    # 27 << 6 = 0x6c0; 0x1234 << 12 = 0x1234000
    assert ops.swp_entry_to_pte(SwpEntry(27, 0x1234)) == 0x12346C0
    assert ops.pte_to_swp_entry(0x12346C0) == SwpEntry(27, 0x1234)
    assert ops.swp_entry_to_pte(SwpEntry(27, 0x1234), exclusive=True) == 0x12346C4


@given(
    swp_type=st.integers(0, 31),
    offset=st.integers(0, (1 << 50) - 1),
    flags=st.sampled_from([0, 1 << 2, 1 << 3, 3 << 2]),
    key=st.sampled_from(KEYS),
)
def test_swap_encode_decode_against_kernel_formula(swp_type: int, offset: int, flags: int, key: str) -> None:
    ops = get_ops(key)
    pte = _kernel_swp_entry(swp_type, offset)
    entry = SwpEntry(swp_type, offset)
    assert ops.swp_entry_to_pte(entry) == pte == ops.swp_entry_to_pmd(entry)
    # pte_to_swp_entry(): pte_swp_clear_flags() (exclusive bit 2, uffd-wp bit 3) first
    assert ops.pte_to_swp_entry(pte | flags) == SwpEntry(_kernel_swp_type(pte), _kernel_swp_offset(pte))
    assert ops.pmd_to_swp_entry(pte | (flags & 1 << 3)) == SwpEntry(swp_type, offset)
    if pte:  # a swap entry is neither none nor present
        assert not ops.pte_none(pte) and not ops.pte_present(pte) and not ops.pmd_present(pte)
    assert a64.SWAP.parse(pte)["type"] == swp_type and a64.SWAP.parse(pte)["offset"] == offset


def test_migration_entries_carry_the_pfn() -> None:
    # SWP_PFN_BITS = MAX_PHYSMEM_BITS (48, sparsemem.h) - PAGE_SHIFT
    keys = ("arm64:4k:48", "arm64:16k:47", "arm64:64k:48")
    assert [get_ops(k).swp_pfn_bits() for k in keys] == [36, 34, 32]
    ops = get_ops("arm64:16k:47")
    e = ops.make_pfn_swp_entry(SWP_MIGRATION_WRITE, 0x1234, young=True)
    pmd = ops.swp_entry_to_pmd(e)
    assert ops.is_pmd_migration_entry(pmd) and ops.swp_offset_pfn(ops.pmd_to_swp_entry(pmd)) == 0x1234
    assert not ops.is_pmd_migration_entry(ops.swp_entry_to_pmd(SwpEntry(3, 0x1234)))
    assert ops.is_pmd_migration_entry(ops.swp_entry_to_pmd(ops.make_pfn_swp_entry(SWP_MIGRATION_READ, 7)))


# -- decode ------------------------------------------------------------------------------------------------
def test_decode_picks_the_format_by_bits() -> None:
    ops = get_ops("arm64:16k:47")
    assert ops.decode("pud", 0x4003)["format"] == "table-16k"
    assert ops.decode("pud", 1 << 36 | 0x401)["format"] == "block-l1-16k"  # decodable, not architectural
    assert ops.decode("pmd", 1 << 25 | 0x401)["format"] == "block-l2-16k"
    assert ops.decode("pte", 0x4703)["format"] == "page-16k"
    assert ops.decode("pte", 0x12346C0)["format"] == "swap"
    assert ops.decode("pte", ops.pfn_pte(1, Prot(protnone=True)))["format"] == "page-16k"
    assert ops.decode("pmd", ops.pfn_pmd(0x800, Prot(protnone=True)))["format"] == "block-l2-16k"
    d = ops.decode("pte", ops.pfn_pte(0x5, Prot()))
    assert d["addr"] == 0x5 and d["valid"] == 1 and d["dbm"] == 1 and d["ap1"] == 1
