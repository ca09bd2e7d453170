"""The architecture as third party on s390x: ``S390x.hw_rejects`` / ``hw_uses`` /
``hw_fault_level`` / ``walk_diverges`` (archs/s390x.py) against the real MMU.

Every entry below is hand-built from the Principles of Operation's bit layout (SA22-7832 ch. 3,
"Translation Tables"; bits numbered from the MSB, so PoP bit n of a doubleword is 1 << (63 - n)),
written into the default region-first scenario (all five tables on the path), probed by the
Unicorn MMU, which must give the program-interruption code the PoP names (ch. 6), and judged by
``emu.verify``, whose verdict must name the reason.  An accepted entry translates and
``hw_rejects`` says None.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest
import unicorn

import archs
from archs.linux import SwpEntry
from emu.judge import first_rejected
from emu.machines.base import Fault, Translation
from emu.mm.scenarios import Case, Scenario, build_default
from emu.verify import Row, verify_scenario, walk_cases

CONFIG = "s390x:region1"

# PoP SA22-7832 ch. 3, region- and segment-table entries: I bit 58, common-segment / common-region
# bit 59, table type bits 60-61, table offset bits 56-57, table length bits 62-63, FC bit 53.
I_58 = 0x20
C_59 = 0x10
TT_60_61 = 0x0C
TF_56_57 = 0xC0
TL_62_63 = 0x03
# Page-table entries: I bit 53, bit 52 (must be zero), bit 63 (available to programming: Linux's
# _PAGE_PRESENT), page-frame real address bits 0-51.
PTE_I_53 = 0x400
PTE_52 = 0x800
PTE_63 = 0x1
PFRA = 0xFFFF_FFFF_FFFF_F000
# Region-third entry with FC=1 (EDAT-2): region-frame absolute address bits 0-32.
RFAA = 0xFFFF_FFFF_8000_0000

# PoP ch. 6, program-interruption codes.
REGION_FIRST, REGION_SECOND, REGION_THIRD, SEGMENT, PAGE = 0x39, 0x3A, 0x3B, 0x10, 0x11
TRANSLATION_SPECIFICATION, ADDRESSING = 0x12, 0x05
INVALID_CODE = {"pgd": REGION_FIRST, "p4d": REGION_SECOND, "pud": REGION_THIRD, "pmd": SEGMENT, "pte": PAGE}
TABLE = {"pgd": "region-first", "p4d": "region-second", "pud": "region-third", "pmd": "segment", "pte": "page"}


def test_pop_bit_numbering() -> None:
    """The constants above are PoP bit n = 1 << (63 - n)."""
    def bit(n: int) -> int:
        return 1 << (63 - n)

    assert (I_58, C_59, PTE_I_53, PTE_52, PTE_63) == (bit(58), bit(59), bit(53), bit(52), bit(63))
    assert TT_60_61 == bit(60) | bit(61) and TF_56_57 == bit(56) | bit(57) and TL_62_63 == bit(62) | bit(63)


@pytest.fixture(scope="module")
def sc() -> Iterator[Scenario]:
    s = build_default(archs.get_ops(CONFIG))
    yield s
    s.close()


def _case(sc: Scenario, prefix: str) -> Case:
    return next(c for c in sc.cases if c.name.startswith(prefix))


def _path(sc: Scenario, case: Case) -> dict[str, tuple[int, int]]:
    """Linux level -> (pa, value) of the entries the walk of ``case`` uses (the last read at each
    level: the first read of the trace is pgd_offset()'s look at the top table's first entry)."""
    w = walk_cases(sc, [case], (0,))[(0, 0)]
    return {lv: (pa, val) for lv, pa, val in w.trace}


def _row(sc: Scenario, case: Case, writes: dict[int, int]) -> Row:
    """The verify row of ``case`` (flags 0) with ``writes`` (pa -> value) in place."""
    saved = sc.cases
    with sc.ram.undo():
        for pa, val in writes.items():
            sc.ram.write_u64(pa, val)
        sc.cases = [case]
        try:
            (row,) = verify_scenario(sc, flag_sets=(0,))
        finally:
            sc.cases = saved
    return row


def _rejected(row: Row, table: str, pa: int, val: int, code: int, what: str) -> None:
    """The MMU gave ``code``, and the verdict says the ``table`` entry is rejected for ``what``."""
    assert isinstance(row.mmu, Fault) and row.mmu.code == code, row.mmu
    assert row.verdict.startswith(f"linux-only: {table} entry {val:#x} at {pa:#x} is rejected by the architecture: ")
    assert what in row.verdict and row.verdict.endswith(f"({code:#04x})"), row.verdict


def test_exception_codes_are_the_machines() -> None:
    """archs.s390x names the program-interruption codes the probe machine decodes (PoP ch. 6)."""
    from archs import s390x as arch
    from emu.machines import s390x as machine

    for table, (kind, code) in arch.TRANSLATION_EXCEPTION.items():
        level = machine.PGM_LEVELS[code]
        assert machine.PGM_KINDS[code] == kind and level is not None and arch.LEVEL_NAMES[level] == table
    for kind, code in (arch.TRANSLATION_SPECIFICATION, arch.ADDRESSING):
        assert machine.PGM_KINDS[code] == kind and machine.PGM_LEVELS[code] is None


# -- accepted entries -----------------------------------------------------------------------------
def test_the_linux_path_is_accepted_and_translates(sc: Scenario) -> None:
    ops = sc.ops
    case = _case(sc, "4K page, order-0")
    path = _path(sc, case)
    assert list(path) == ["pgd", "p4d", "pud", "pmd", "pte"]
    for lv, (_pa, val) in path.items():
        assert ops.hw_rejects(lv, val, leaf=lv == "pte", addr=case.addr) is None
        assert ops.hw_rejects(lv, val, leaf=lv == "pte") is None
    row = _row(sc, case, {})
    assert row.verdict == "agree" and isinstance(row.mmu, Translation)
    assert row.mmu.pa == (path["pte"][1] & PFRA) | (case.addr & 0xFFF)


# -- the invalid bit: the table's own translation exception ----------------------------------------
@pytest.mark.parametrize("level", ["pgd", "p4d", "pud", "pmd", "pte"])
def test_invalid_bit_gives_the_tables_translation_exception(sc: Scenario, level: str) -> None:
    ops = sc.ops
    case = _case(sc, "4K page, order-0")
    pa, val = _path(sc, case)[level]
    bad = val | (PTE_I_53 if level == "pte" else I_58)
    why = ops.hw_rejects(level, bad, leaf=level == "pte", addr=case.addr)
    assert why is not None and f"{INVALID_CODE[level]:#04x}" in why and "invalid bit" in why
    assert ops.hw_fault_level(level, bad, leaf=False, addr=case.addr) == TABLE[level]
    row = _row(sc, case, {pa: bad})
    assert isinstance(row.mmu, Fault) and row.mmu.code == INVALID_CODE[level]
    if level == "pgd":  # pgd_none() is the I bit: Linux stops there too
        assert row.walk.reason == "none@pgd" and row.verdict == "agree"
    elif level == "pte":  # _PAGE_PRESENT with _PAGE_INVALID: an old page, by Linux's design
        assert row.verdict == "linux-only: old-page (_PAGE_INVALID tracks young)"
    else:  # p4d/pud/pmd_none() want the exact empty entry: Linux walks through and finds the page
        assert row.walk.found
        kind = "segment" if level == "pmd" else "region"
        _rejected(row, TABLE[level], pa, bad, INVALID_CODE[level], f"{kind}-invalid bit (bit 58) is one")


def test_an_invalid_upper_entry_explains_a_none_entry_below(sc: Scenario) -> None:
    """Linux walks through a region-third entry with the I bit (not _REGION3_ENTRY_EMPTY) and
    stops at a none PTE; the MMU stops at the region-third entry (0x3b): agree, because the
    architecture rejects that entry -- without it the fault levels would disagree."""
    case = _case(sc, "none PTE")
    path = _path(sc, case)
    pa, val = path["pud"]
    row = _row(sc, case, {pa: val | I_58})
    assert row.walk.reason == "none@pte" and isinstance(row.mmu, Fault) and row.mmu.code == REGION_THIRD
    assert row.verdict == "agree"
    why = first_rejected(sc.ops, row.walk, stop_at="region-third", addr=case.addr)
    assert why is not None and "region-invalid bit (bit 58)" in why and "region-third-translation" in why


# -- table type: translation specification ---------------------------------------------------------
@pytest.mark.parametrize(("level", "tt"), [("pgd", 0b10), ("p4d", 0b01), ("pud", 0b10), ("pmd", 0b01)])
def test_table_type_mismatch_is_a_translation_specification_exception(sc: Scenario, level: str, tt: int) -> None:
    ops = sc.ops
    case = _case(sc, "4K page, order-0")
    pa, val = _path(sc, case)[level]
    bad = (val & ~TT_60_61) | (tt << 2)
    why = ops.hw_rejects(level, bad, leaf=False, addr=case.addr)
    assert why is not None and "table type (bits 60-61)" in why and "translation-specification" in why
    assert ops.hw_fault_level(level, bad, leaf=False, addr=case.addr) is None
    row = _row(sc, case, {pa: bad})
    assert isinstance(row.mmu, Fault) and row.mmu.code == TRANSLATION_SPECIFICATION
    if level == "pud":  # folio_walk_start() never asks pud_bad(): it walks on and finds the page
        assert row.walk.found
        _rejected(row, "region-third", pa, bad, TRANSLATION_SPECIFICATION, f"table type (bits 60-61) is {tt:02b}")
    else:  # Linux reads the entry with its own dynamic folding and finds nothing (or clears it)
        assert not row.walk.found and not row.verdict.startswith("disagree"), row.verdict


# -- common segment / common region with a private-space ASCE --------------------------------------
def test_common_segment_bit_under_a_private_space_asce(sc: Scenario) -> None:
    assert sc.oracle.registers()["CR7"] & 0x100  # the ASCE's P bit (55): Linux's _ASCE_PRIVATE_SPACE
    case = _case(sc, "4K page, order-0")
    pa, val = _path(sc, case)["pmd"]
    row = _row(sc, case, {pa: val | C_59})
    assert row.walk.found  # _SEGMENT_ENTRY_BITS allows bit 59: not pmd_bad()
    _rejected(row, "segment", pa, val | C_59, TRANSLATION_SPECIFICATION, "common-segment bit (bit 59) is one")


def test_common_region_bit_under_a_private_space_asce(sc: Scenario) -> None:
    if not sc.oracle.machine.edat2_works:  # another build: the common-region bit is not checked
        assert unicorn.__version__ != "2.1.4" and sc.oracle.machine.edat_note
        return
    case = _case(sc, "4K page, order-0")
    pa, val = _path(sc, case)["pud"]
    row = _row(sc, case, {pa: val | C_59})
    assert row.walk.found
    _rejected(row, "region-third", pa, val | C_59, TRANSLATION_SPECIFICATION, "common-region bit (bit 59, EDAT-2)")


# -- table offset / length: the next table's translation exception ---------------------------------
@pytest.mark.parametrize(("level", "code"), [("pgd", REGION_SECOND), ("p4d", REGION_THIRD), ("pud", SEGMENT)])
def test_table_offset_excluding_the_next_index(sc: Scenario, level: str, code: int) -> None:
    """TF = 01: the next table starts at its second quarter; the address's next index (0 for this
    case at every level) starts with 00, so DAT gives the NEXT table's translation exception.
    Linux's walk ignores TF/TL of a region-third entry (its tables are always whole) and finds the
    page; pgd_bad()/p4d_bad() refuse a table offset."""
    ops = sc.ops
    case = _case(sc, "4K page, order-0")
    pa, val = _path(sc, case)[level]
    bad = (val & ~TF_56_57) | 0x40
    nxt = {"pgd": "region-second", "p4d": "region-third", "pud": "segment"}[level]
    assert ops.hw_rejects(level, bad, leaf=False) is None  # it depends on the address
    assert ops.hw_fault_level(level, bad, leaf=False, addr=case.addr) == nxt
    row = _row(sc, case, {pa: bad})
    if level in ("pgd", "p4d"):  # pgd_bad()/p4d_bad(): TF is outside _REGION_ENTRY_BITS, Linux clears it
        assert row.walk.reason == f"bad@{level}" and row.verdict == "agree"
        assert isinstance(row.mmu, Fault) and row.mmu.code == code
        return
    assert row.walk.found  # folio_walk_start() never asks pud_bad()
    _rejected(row, TABLE[level], pa, bad, code, f"the {nxt} index of {case.addr:#x} starts with 00, outside")


def test_table_length_excluding_the_next_index_below_a_none_entry(sc: Scenario) -> None:
    """TL = 00 in the region-third entry: a segment index whose leftmost two bits are 01 is outside
    the segment table, DAT gives a segment-translation exception (0x10).  Linux walks on to a
    none PTE: the fault level differs from Linux's, and the region-third entry explains it."""
    ops = sc.ops
    case = _case(sc, "none PTE")
    path = _path(sc, case)
    pud_pa, pud = path["pud"]
    pmd_pa, pmd = path["pmd"]
    addr = case.addr + (512 << 20)  # segment index + 512: leftmost two bits 01
    moved = Case("none PTE, segment index + 512", addr, case.vma)
    pmd_pa2 = (pud & ~0xFFF) + 8 * ((addr >> 20) & 2047)
    row = _row(sc, moved, {pud_pa: pud & ~TL_62_63, pmd_pa2: pmd})
    assert row.walk.reason == "none@pte" and isinstance(row.mmu, Fault) and row.mmu.code == SEGMENT
    assert row.verdict == "agree"
    assert ops.hw_fault_level("pud", pud & ~TL_62_63, leaf=False, addr=addr) == "segment"
    why = first_rejected(ops, row.walk, stop_at="segment", addr=addr)
    assert why is not None and "outside the table offset 0 (bits 56-57) .. length 0 (bits 62-63)" in why
    # ... which the same row without the address could not name: a disagreement.
    assert first_rejected(ops, row.walk, stop_at="segment") is None


# -- page-table entry bit 52 -----------------------------------------------------------------------
def test_pte_bit_52_is_a_translation_specification_exception(sc: Scenario) -> None:
    case = _case(sc, "4K page, order-0")
    pa, val = _path(sc, case)["pte"]
    row = _row(sc, case, {pa: val | PTE_52})
    assert row.walk.found  # Linux's _PAGE_LARGE: pte_present() does not look at it
    _rejected(row, "page", pa, val | PTE_52, TRANSLATION_SPECIFICATION, "bit 52 is one")


def test_the_brief_s_pte_0x6000811(sc: Scenario) -> None:
    """PTE 0x6000811: frame 0x6000000, bit 52, _PAGE_READ, _PAGE_PRESENT."""
    ops = sc.ops
    why = ops.hw_rejects("pte", 0x6000811, leaf=True, addr=0)
    assert why == "bit 52 is one: translation-specification exception (0x12)"
    assert ops.hw_rejects("pte", 0x6000011, leaf=True, addr=0) is None


# -- addressing: a frame beyond main storage -------------------------------------------------------
def test_pfnmap_pte_beyond_storage_is_an_addressing_exception(sc: Scenario) -> None:
    case = _case(sc, "special PTE in a VM_PFNMAP")
    pa, val = _path(sc, case)["pte"]
    bad = (val & ~PFRA) | sc.ram.size  # the first frame past the end of RAM
    row = _row(sc, case, {pa: bad})
    assert row.walk.reason == "not-normal@pte:special-pfnmap"
    _rejected(row, "page", pa, bad, ADDRESSING, f"real address {sc.ram.size | (case.addr & 0xFFF):#x} is beyond")


def test_pud_leaf_beyond_storage_is_an_addressing_exception(sc: Scenario) -> None:
    """folio_walk_start() takes pud_page() without vm_normal_page()'s memmap check (v6.12's
    TODO), and page_folio() reads a struct page the first frame past storage does not have (its
    256 MB section, SECTION_SIZE_BITS 28, is not present): the kernel oopses; DAT's real address
    has no storage."""
    if not sc.oracle.machine.edat2_works:  # another build: large entries are oracle-cannot-check
        assert unicorn.__version__ != "2.1.4" and sc.oracle.machine.edat_note
        return
    case = _case(sc, "PUD leaf (2G")
    pa, val = _path(sc, case)["pud"]
    bad = (val & ~RFAA) | sc.ram.size  # 6 GB: RAM ends there
    row = _row(sc, case, {pa: bad})
    assert row.walk.reason == "oops@pud:no-struct-page" and row.walk.level == "PUD"
    _rejected(row, "region-third", pa, bad, ADDRESSING, "beyond main storage")


def test_pmd_leaf_beyond_the_memmap_is_refused_by_linux(sc: Scenario) -> None:
    """A normal PMD leaf beyond RAM: vm_normal_page_pmd() refuses the pfn (beyond
    highest_memmap_pfn) and the MMU gives an addressing exception: both nothing."""
    case = _case(sc, "PMD leaf (1M")
    pa, val = _path(sc, case)["pmd"]
    bad = (val & 0xFFFFF) | sc.ram.size
    assert sc.ops.hw_rejects("pmd", bad, leaf=True, addr=case.addr) is not None
    row = _row(sc, case, {pa: bad})
    if not sc.oracle.machine.edat1_works:
        assert row.verdict.startswith("oracle-cannot-check")
        return
    assert row.walk.reason == "not-normal@pmd:pfn-beyond-memmap" and row.verdict == "agree"
    assert isinstance(row.mmu, Fault) and row.mmu.code == ADDRESSING


# -- entries Linux reads as not present that DAT uses ----------------------------------------------
def test_pte_without_the_software_present_bit_is_used_by_the_mmu(sc: Scenario) -> None:
    ops = sc.ops
    case = _case(sc, "4K page, order-0")
    pa, val = _path(sc, case)["pte"]
    bad = val & ~PTE_63  # I bit clear: hardware-valid; Linux: !pte_present(), a swap entry
    assert ops.hw_rejects("pte", bad, leaf=True, addr=case.addr) is None
    row = _row(sc, case, {pa: bad})
    assert row.walk.reason.startswith("swap@pte")
    assert isinstance(row.mmu, Translation) and row.mmu.pa == (val & PFRA) | (case.addr & 0xFFF)
    assert row.verdict.startswith(f"linux-only: page entry {bad:#x} at {pa:#x} is used by the MMU: ")
    assert "page-invalid bit (bit 53) and bit 52 are zero" in row.verdict
    # The brief's value: hardware-valid, no _PAGE_PRESENT.
    assert ops.hw_uses("pte", 0x6000034) is not None and not ops.pte_present(0x6000034)
    # Linux's own empty / swap PTEs have the I bit: DAT does not use them.
    assert ops.hw_uses("pte", ops.clear_value("pte")) is None
    assert ops.hw_uses("pte", ops.swp_entry_to_pte(SwpEntry(3, 0x1234))) is None


def test_upper_entries_linux_calls_none_are_never_used(sc: Scenario) -> None:
    ops = sc.ops
    for level in ("pgd", "p4d", "pud", "pmd"):
        assert ops.hw_uses(level, ops.clear_value(level)) is None
    # pud_present() is false for a zero origin; DAT takes the entry as a segment-table designation.
    zero_origin = 0x04 | TL_62_63  # TT 01 (region-third), TL 11, origin 0
    assert ops.hw_uses("pud", zero_origin) is not None and not ops.pud_present(zero_origin)


# -- pgd_offset() indexes the top table by its first entry's type ----------------------------------
def test_top_table_first_entry_of_another_type_diverges(sc: Scenario) -> None:
    """The region-first table's first entry is a segment-type empty entry (I bit, TT 00): Linux's
    pgd_offset_raw() then indexes the top table with the segment index (entry 0 for this address),
    DAT with the region-first index (entry 1) and translates."""
    ops = sc.ops
    case = _case(sc, "4K page, order-0")
    first = sc.mm.pgd
    row = _row(sc, case, {first: I_58})
    assert isinstance(row.mmu, Translation) and not row.walk.found
    assert row.verdict.startswith("linux-only: pgd_offset() takes the top table's type from its first entry")
    assert f"Linux reads top entry 0 for {case.addr:#x}, DAT entry 1" in row.verdict
    # Where the two indexes coincide, the walks are the same and nothing diverges.
    assert ops.walk_diverges([("pgd", first, I_58)], 0) is None  # segment index 0, region-first index 0
    assert ops.walk_diverges([("pgd", first, I_58)], 1 << 53) is not None
    assert ops.walk_diverges([("pgd", first, 0x2C)], case.addr) is None  # _REGION1_ENTRY_EMPTY: TT 11


# -- the reasons against the MMU, on random control bits -------------------------------------------
def test_random_control_bits_get_the_mmus_exception(sc: Scenario) -> None:
    """Random bits 52-63 of one path entry (the origin stays: DAT and Linux keep reading the same
    tables): where hw_rejects names an exception for the first entry it rejects, the MMU gives that
    program-interruption code; where it rejects none, the MMU translates."""
    ops = sc.ops
    rng = random.Random(20250212)
    case = _case(sc, "4K page, order-0")
    path = _path(sc, case)
    seen: set[int] = set()
    for _ in range(150):
        level = rng.choice(list(path))
        pa, val = path[level]
        bad = (val & ~0xFFF) | rng.getrandbits(12)
        if level == "pte" and not bad & PTE_I_53:
            bad |= PTE_63  # keep Linux's _PAGE_PRESENT (else hw_uses, tested above)
        entries = {lv: (bad if lv == level else v) for lv, (_p, v) in path.items()}
        if level != "pte" and bad & 0x400 and level in ("pud", "pmd"):
            entries = {lv: v for lv, v in entries.items() if list(path).index(lv) <= list(path).index(level)}
        why = next((w for lv, v in entries.items()
                    if (w := ops.hw_rejects(lv, v, leaf=lv == "pte", addr=case.addr))), None)
        with sc.ram.undo():
            sc.ram.write_u64(pa, bad)
            sc.oracle.attach(sc.mm)
            mmu = sc.oracle.probe(case.addr)
        if why is None:
            assert isinstance(mmu, Translation), (level, hex(bad), mmu)
        else:
            m = re.search(r"\((0x[0-9a-f]+)\)$", why)
            assert m and isinstance(mmu, Fault) and mmu.code == int(m.group(1), 16), (level, hex(bad), why, mmu)
            seen.add(mmu.code)
    assert {REGION_FIRST, REGION_SECOND, REGION_THIRD, SEGMENT, PAGE, TRANSLATION_SPECIFICATION} <= seen
