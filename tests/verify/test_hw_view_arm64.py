"""The architecture as third party on arm64: ``Arm64.hw_rejects()`` / ``hw_fault()`` /
``hw_absent_reason()`` against the real MMU (AT + PAR_EL1) and the verdicts they give.

Every descriptor here is built from raw bits as the Arm ARM lays them out (DDI 0487 D8
"Translation table descriptor formats": bits[1:0] valid/type, AF bit 10, nG bit 11, ...), never
from the helper under test.  For each reason the architecture gives:

* the MMU really faults with that kind at that level (PAR_EL1.FST = 0bKKKKLL),
* ``hw_rejects`` names it, with the same fault kind and level,
* the verify verdict of the row is ``linux-only`` naming it (or, where Unicorn departs from the
  architecture, the registered ``emulator-deviation``), never ``disagree`` and never ``agree``
  where the two differ;

and descriptors whose other bits the architecture ignores (software, IGNORED, PBHA, NS in
Non-secure, table IGNORED fields) translate, with ``hw_rejects`` None and verdict ``agree``.
4K, 16K and 64K granules, both halves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import archs
from archs import arm64 as a64
from archs.linux import LinuxPgtable, Prot
from emu.fuzz import GenParams, HierarchyGenerator, Target
from emu.judge import judge
from emu.machines import deviations
from emu.machines.base import Fault, Translation
from emu.machines.oracle import make_oracle
from emu.mm.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, VMA
from emu.mm.pagewalk import FW_MIGRATION
from emu.mm.scenarios import Case, Scenario, half_base, new_address_space
from emu.verify import Row, verify_scenario

# -- raw descriptor bits, Arm ARM DDI 0487 D8 (stage 1, 48-bit OA) ------------------------------------------
VALID = 1 << 0  # bit[0]
TYPE = 1 << 1  # bit[1]: table (levels 0-2) / page (level 3); 0 = block (levels 1-2)
NS = 1 << 5  # NS: ignored in the Non-secure EL1&0 regime
AP1 = 1 << 6  # AP[1]: EL0 access
SH_INNER = 0b11 << 8  # SH[1:0]
AF = 1 << 10  # Access flag
NG = 1 << 11  # nG
OA_BIT_48 = 1 << 48  # bits 49:48: RES0 with a 48-bit OA
GP = 1 << 50  # Guarded page (FEAT_BTI)
DBM = 1 << 51  # Dirty bit modifier (FEAT_HAFDBS)
PXN = 1 << 53
UXN = 1 << 54
SOFTWARE = 0b1001 << 55  # bits 58:55 reserved for software (Linux: 55 PTE_DIRTY, 58 PTE_UFFD_WP)
PBHA = 0b1111 << 59  # bits 62:59 IGNORED (PBHA with FEAT_HPDS2, which the model lacks)
IGNORED_63 = 1 << 63
TABLE_IGNORED = (0xFF << 51) | (0x3FF << 2)  # table descriptor bits 58:51 and 11:2: IGNORED
NS_TABLE = 1 << 63  # NSTable: ignored in Non-secure state
DEVMAP = 1 << 57  # software in a leaf, IGNORED in a table; Linux PTE_DEVMAP
LEAF = AF | SH_INNER | AP1 | NG  # a user page's lower attributes, as Linux writes them

RW = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
#: PAR_EL1.FST (D19) = kind << 2 | level
FST = {"address-size": 0b0000, "translation": 0b0001, "access-flag": 0b0010}
FAULT_NAME = {"translation": "Translation", "access-flag": "Access flag", "address-size": "Address size"}


def fault(kind: str, level: int) -> Fault:
    return Fault(kind, level, FST[kind] << 2 | level, 0)


def space(key: str, half: str = "low", ram_size: int = 256 << 20) -> Scenario:
    """An empty address space with the MMU oracle attached to ``half``."""
    ops = archs.get_ops(key)
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=ram_size)
    oracle = make_oracle(ops, ram, alloc)
    oracle.half = half
    return Scenario(ops, ram, alloc, memmap, mm, b, oracle=oracle, half=half)


@pytest.fixture
def closing() -> Iterator[list[Scenario]]:
    made: list[Scenario] = []
    yield made
    for sc in made:
        sc.close()


def vma_at(sc: Scenario, offset: int, size: int) -> VMA:
    start = half_base(sc.ops, sc.half) + offset
    return sc.mm.add_vma(VMA(start, start + size, RW, name="anon"))


def row(sc: Scenario, va: int, vma: VMA) -> Row:
    sc.cases = [Case("hw-view", va, vma)]
    [r] = verify_scenario(sc, flag_sets=(FW_MIGRATION,))
    return r


def names(rejects: str | None, kind: str, level: int) -> bool:
    """``hw_rejects`` names the fault the architecture gives: its kind and level."""
    return rejects is not None and f"{FAULT_NAME[kind]} fault, level {level} (Arm ARM D8" in rejects


def level_no(ops: LinuxPgtable, linux: str) -> int:
    return int(ops.hw_level(linux).name[1:])


# -- reserved level-3 encoding (D8: bits[1:0] = 0b01 at level 3 behaves as invalid) ---------------------------
@pytest.mark.parametrize("key,half", [("arm64:4k:48", "low"), ("arm64:16k:47", "high"), ("arm64:64k:42", "high")])
def test_reserved_level3_encoding_is_a_translation_fault(key: str, half: str, closing: list[Scenario]) -> None:
    sc = space(key, half)
    closing.append(sc)
    ops = sc.ops
    page = ops.PAGE_SIZE
    vma = vma_at(sc, 1 << 30, 16 * page)
    f = sc.builder.alloc_folio(0)
    pa = sc.builder.map_folio(vma.vm_start + 3 * page, f, Prot())[0]
    val = (f.pfn * page) | LEAF | VALID  # bits[1:0] = 0b01, AF set: only the encoding is wrong
    sc.ram.write_u64(pa, val)
    r = row(sc, vma.vm_start + 3 * page + 0x18, vma)
    assert r.walk.found and r.walk.level == "PTE"  # pte_present(): PTE_VALID
    assert r.mmu == fault("translation", 3)
    why = ops.hw_rejects("pte", val, leaf=True)
    assert names(why, "translation", 3) and "0b01 at level 3" in (why or "")
    assert r.verdict == f"linux-only: L3 entry {val:#x} at {pa:#x} is rejected by the architecture: {why}"
    assert ops.hw_absent_reason("pte", val) is None  # not an old page: the encoding decides first
    # Translating the same page with bits[1:0] = 0b11 is fine: the encoding is the whole reason.
    sc.ram.write_u64(pa, val | TYPE)
    assert row(sc, vma.vm_start + 3 * page + 0x18, vma).verdict == "agree"
    assert ops.hw_rejects("pte", val | TYPE, leaf=True) is None


def test_pte_0x1_the_fuzzer_s_finding(closing: list[Scenario]) -> None:
    # PTE 0x1: valid, bits[1:0] = 0b01, AF = 0, OA 0.  The encoding faults before AF is looked at.
    sc = space("arm64:4k:48")
    closing.append(sc)
    vma = vma_at(sc, 1 << 30, 1 << 21)
    pa = sc.builder.set_entry(vma.vm_start, "pte", 0x1)
    r = row(sc, vma.vm_start + 0x40, vma)
    assert r.mmu == fault("translation", 3)
    why = sc.ops.hw_rejects("pte", 0x1, leaf=True)
    assert names(why, "translation", 3)
    assert r.verdict == f"linux-only: L3 entry 0x1 at {pa:#x} is rejected by the architecture: {why}"


# -- AF = 0 (D8 "The Access flag": no hardware update, TCR_EL1.HA = 0 -> Access flag fault) ------------------
@pytest.mark.parametrize("key,linux", [
    ("arm64:4k:48", "pte"), ("arm64:4k:48", "pmd"), ("arm64:4k:39", "pud"), ("arm64:16k:36", "pmd"),
    ("arm64:64k:48", "pte"),
])
def test_access_flag_clear_is_an_old_page(key: str, linux: str, closing: list[Scenario]) -> None:
    sc = space(key, "high" if linux == "pmd" else "low", ram_size=(3 << 30) if linux == "pud" else 256 << 20)
    closing.append(sc)
    ops = sc.ops
    size = ops.config.leaf_size(linux)
    assert size
    vma = vma_at(sc, 4 * size, 2 * size)
    f = sc.builder.alloc_folio((size // ops.PAGE_SIZE).bit_length() - 1, tag=False)
    pa = sc.builder.map_folio(vma.vm_start, f, Prot(), linux=linux)[0]
    level = level_no(ops, linux)
    val = (f.pfn * ops.PAGE_SIZE) | SH_INNER | AP1 | NG | PXN | UXN | VALID | (TYPE if level == 3 else 0)
    sc.ram.write_u64(pa, val)
    # This is what Linux writes for an old page (pte_mkold() clears PTE_AF).
    built = {"pte": ops.pfn_pte, "pmd": ops.pfn_pmd, "pud": ops.pfn_pud}[linux]  # type: ignore[attr-defined]
    assert not built(f.pfn, Prot(young=False, write=False, dirty=False)) & AF
    r = row(sc, vma.vm_start + size // 2 + 0x28, vma)
    assert r.walk.found and r.walk.level == linux.upper() and r.walk.kind == "normal"
    assert r.mmu == fault("access-flag", level)
    assert names(ops.hw_rejects(linux, val, leaf=True), "access-flag", level)
    assert r.verdict == "linux-only: old-page (AF = 0: pte_mkold(); Access flag fault)"
    # Made young, the same entry translates to the page Linux names.
    sc.ram.write_u64(pa, val | AF)
    young = row(sc, vma.vm_start + size // 2 + 0x28, vma)
    assert young.verdict == "agree" and isinstance(young.mmu, Translation)
    assert ops.hw_rejects(linux, val | AF, leaf=True) is None and ops.hw_absent_reason(linux, val | AF) is None


def test_old_page_linux_refuses_agrees(closing: list[Scenario]) -> None:
    # An old special PTE (VM_PFNMAP-style): vm_normal_page() refuses it, the MMU faults on AF.
    sc = space("arm64:4k:48")
    closing.append(sc)
    vma = vma_at(sc, 1 << 30, 1 << 21)
    f = sc.builder.alloc_folio(0)
    val = (f.pfn << 12) | SH_INNER | AP1 | NG | (1 << 56) | TYPE | VALID  # bit 56: Linux PTE_SPECIAL
    sc.builder.set_entry(vma.vm_start, "pte", val)
    r = row(sc, vma.vm_start + 8, vma)
    assert r.walk.reason.startswith("not-normal@pte") and r.mmu == fault("access-flag", 3)
    assert r.verdict == "agree"


# -- present-invalid: nG with bit[0] clear (Linux PTE_PRESENT_INVALID; D8: invalid descriptor) ---------------
@pytest.mark.parametrize("key,linux", [("arm64:4k:48", "pmd"), ("arm64:64k:48", "pte"), ("arm64:16k:47", "pte")])
def test_present_invalid_leaf(key: str, linux: str, closing: list[Scenario]) -> None:
    sc = space(key, "low" if linux == "pmd" else "high", ram_size=1 << 30)
    closing.append(sc)
    ops = sc.ops
    size = ops.config.leaf_size(linux)
    assert size
    vma = vma_at(sc, 2 * size, 2 * size)
    f = sc.builder.alloc_folio((size // ops.PAGE_SIZE).bit_length() - 1, tag=False)
    pa = sc.builder.map_folio(vma.vm_start, f, Prot(), linux=linux)[0]
    level = level_no(ops, linux)
    # pmd_mkinvalid()/pte_mkinvalid(): PTE_VALID cleared, PTE_PRESENT_INVALID (= nG) set; a user
    # mapping that may execute (UXN clear), so it is not PROT_NONE.
    val = (f.pfn * ops.PAGE_SIZE) | AF | SH_INNER | AP1 | NG | PXN | (TYPE if level == 3 else 0)
    sc.ram.write_u64(pa, val)
    r = row(sc, vma.vm_start + size - 0x40, vma)
    assert r.walk.found and r.walk.level == linux.upper()
    assert r.mmu == fault("translation", level)
    why = ops.hw_rejects(linux, val, leaf=True)
    assert names(why, "translation", level) and "invalid descriptor (bit[0] = 0" in (why or "")
    assert r.verdict.startswith("linux-only: present-invalid (")
    # PROT_NONE is the same encoding with UXN set and no EL0 access: named as such.
    sc.ram.write_u64(pa, (val | UXN) & ~AP1)
    assert row(sc, vma.vm_start + size - 0x40, vma).verdict == "linux-only: prot-none"


def test_present_invalid_pud_0x800(closing: list[Scenario]) -> None:
    # The fuzzer's PUD 0x800: pud_present() (present-invalid), pud_leaf(); the MMU: invalid at L1.
    sc = space("arm64:4k:48")
    closing.append(sc)
    vma = vma_at(sc, 1 << 39, 1 << 31)
    sc.builder.set_entry(vma.vm_start, "pud", NG)
    r = row(sc, vma.vm_start + 0x1238, vma)
    assert r.walk.level == "PUD" and r.mmu == fault("translation", 1)
    assert names(sc.ops.hw_rejects("pud", NG, leaf=True), "translation", 1)
    assert r.walk.found
    assert r.verdict == "linux-only: present-invalid (nG set, bit[0] clear: pte_mkinvalid(); Translation fault)"


# -- an invalid upper entry Linux walks through ------------------------------------------------------------
def test_invalid_level0_table_entry_linux_walks_through(closing: list[Scenario]) -> None:
    """p4d_none() is "== 0" and p4d_bad() only looks at the table bit, so bits[1:0] = 0b10 at
    level 0 is a table to Linux; to the architecture it is invalid: Translation fault, level 0."""
    sc = space("arm64:4k:48")
    closing.append(sc)
    ops = sc.ops
    vma = vma_at(sc, 1 << 39, 1 << 39)
    f = sc.builder.alloc_folio(0)
    sc.builder.map_folio(vma.vm_start + (1 << 30), f, Prot())
    p4d_pa = sc.builder.entry_pa(vma.vm_start, "p4d")
    val = sc.ram.read_u64(p4d_pa) & ~VALID  # the builder's table pointer with bit[0] cleared
    assert val & 3 == TYPE
    sc.ram.write_u64(p4d_pa, val)
    why = ops.hw_rejects("p4d", val, leaf=False)
    assert names(why, "translation", 0)
    # A page below it: Linux finds it, the MMU faults at level 0.
    found = row(sc, vma.vm_start + (1 << 30) + 0x10, vma)
    assert found.walk.found and found.mmu == fault("translation", 0)
    assert found.verdict == f"linux-only: L0 entry {val:#x} at {p4d_pa:#x} is rejected by the architecture: {why}"
    # A none PUD below it: Linux stops at L1, the MMU at L0 -- explained by the L0 entry.
    none = row(sc, vma.vm_start + (7 << 30), vma)
    assert none.walk.reason == "none@pud" and none.mmu == fault("translation", 0)
    assert none.verdict == "agree"
    # Without the architecture's view that row is the disagreement the fuzzer reported.
    blind = archs.get_ops("arm64:4k:48")
    blind.hw_rejects = lambda *a, **k: None  # type: ignore[method-assign]
    assert judge(blind, none.walk, none.mmu, sc.oracle) == (
        "disagree: Linux stops at a none L1 entry, the MMU faults at L0"
    )


def test_present_invalid_level1_table_64k(closing: list[Scenario]) -> None:
    """64K: pud_table() is always true and pud_present() accepts nG with bit[0] clear, so Linux
    walks through a present-invalid level-1 entry; the architecture faults at level 1."""
    sc = space("arm64:64k:48", "high")
    closing.append(sc)
    ops = sc.ops
    vma = vma_at(sc, 1 << 42, 1 << 42)
    f = sc.builder.alloc_folio(0)
    sc.builder.map_folio(vma.vm_start + (5 << 16), f, Prot())
    pud_pa = sc.builder.entry_pa(vma.vm_start, "pud")
    val = (sc.ram.read_u64(pud_pa) & ~VALID) | NG
    sc.ram.write_u64(pud_pa, val)
    r = row(sc, vma.vm_start + (5 << 16) + 0x20, vma)
    assert r.walk.found and r.walk.level == "PTE" and r.mmu == fault("translation", 1)
    why = ops.hw_rejects("pud", val, leaf=False)
    assert names(why, "translation", 1) and "nG set" in (why or "")
    assert r.verdict == f"linux-only: L1 entry {val:#x} at {pud_pa:#x} is rejected by the architecture: {why}"


# -- blocks at levels without blocks: named by the architecture, Unicorn departs (deviation) -----------------
@pytest.mark.parametrize("key,linux", [("arm64:4k:48", "p4d"), ("arm64:16k:47", "pud"), ("arm64:64k:48", "pud")])
def test_block_where_the_granule_has_none(key: str, linux: str, closing: list[Scenario]) -> None:
    sc = space(key)
    closing.append(sc)
    ops = sc.ops
    level = level_no(ops, linux)
    span = 1 << ops.hw_level(linux).shift
    vma = vma_at(sc, span, span)
    f = sc.builder.alloc_folio(0)
    sc.builder.map_folio(vma.vm_start + (5 << ops.PAGE_SHIFT), f, Prot())
    pa = sc.builder.entry_pa(vma.vm_start, linux)
    val = AF | SH_INNER | VALID  # bits[1:0] = 0b01, OA 0
    sc.ram.write_u64(pa, val)
    why = ops.hw_rejects(linux, val, leaf=True)
    assert names(why, "translation", level) and "has no blocks" in (why or "")
    r = row(sc, vma.vm_start + (5 << ops.PAGE_SHIFT) + 8, vma)
    assert isinstance(r.mmu, Translation)  # Unicorn: a block (the architecture: Translation fault)
    assert r.verdict == "emulator-deviation: block-at-any-level"


# -- address size (D8 "Address size configuration"): the architecture faults, Unicorn never does -------------
def test_address_size_named_and_left_to_the_deviation(closing: list[Scenario]) -> None:
    sc = space("arm64:4k:48")
    closing.append(sc)
    ops = sc.ops
    assert isinstance(ops, a64.Arm64) and ops.pa_bits == 48
    vma = vma_at(sc, 1 << 30, 1 << 21)
    f = sc.builder.alloc_folio(0)
    pa = sc.builder.map_folio(vma.vm_start, f, Prot())[0]
    page = (f.pfn << 12) | LEAF | TYPE | VALID
    # A 48-bit PE: OA bit 45 is in range, bit 48 (RES0, OA[49:48] to Linux) is not.
    assert ops.hw_rejects("pte", page | (1 << 45), leaf=True) is None
    assert names(ops.hw_rejects("pte", page | OA_BIT_48, leaf=True), "address-size", 3)
    # Unicorn's PE: ID_AA64MMFR0_EL1.PARange = 44 bits.
    pe44 = archs.get_ops("arm64:4k:48")
    assert isinstance(pe44, a64.Arm64)
    pe44.pa_bits = deviations.ARM64_EFFECTIVE_PA_BITS
    assert names(pe44.hw_rejects("pte", page | (1 << 45), leaf=True), "address-size", 3)
    table = sc.ram.read_u64(sc.builder.entry_pa(vma.vm_start, "pmd"))
    assert names(pe44.hw_rejects("pmd", table | (1 << 44), leaf=False), "address-size", 2)
    assert pe44.hw_rejects("pmd", table | (1 << 43), leaf=False) is None
    # The MMU translates all the same: the row is the registered deviation, never agree.
    for bit in (45, 48):
        sc.ram.write_u64(pa, page | (1 << bit))
        r = row(sc, vma.vm_start + 0x30, vma)
        assert isinstance(r.mmu, Translation), bit
        assert r.verdict == "emulator-deviation: no-address-size-fault"
        assert judge(pe44, r.walk, r.mmu, sc.oracle) == "emulator-deviation: no-address-size-fault"


# -- bits the architecture ignores: the descriptor translates, hw_rejects says None ------------------------
@pytest.mark.parametrize("key,half", [("arm64:4k:48", "low"), ("arm64:16k:47", "high"), ("arm64:64k:42", "low")])
def test_ignored_and_software_bits_translate(key: str, half: str, closing: list[Scenario]) -> None:
    sc = space(key, half)
    closing.append(sc)
    ops = sc.ops
    page = ops.PAGE_SIZE
    vma = vma_at(sc, 1 << 32, 64 * page)
    f = sc.builder.alloc_folio(0)
    va = vma.vm_start + 7 * page
    pte_pa = sc.builder.map_folio(va, f, Prot())[0]
    leaf = (f.pfn * page) | LEAF | TYPE | VALID
    extras = [0, SOFTWARE, PBHA, IGNORED_63, GP, DBM, NS, PXN | UXN, SOFTWARE | PBHA | IGNORED_63 | GP | DBM | NS]
    for extra in extras:
        sc.ram.write_u64(pte_pa, leaf | extra)
        r = row(sc, va + 0x88, vma)
        assert r.mmu == Translation(f.pfn * page + 0x88, "at"), hex(extra)
        assert r.verdict == "agree", (hex(extra), r.verdict)
        assert ops.hw_rejects("pte", leaf | extra, leaf=True) is None
        assert ops.hw_absent_reason("pte", leaf | extra) is None
    # IGNORED bits and NSTable in every table descriptor of the path.  Bit 57 is the one Linux
    # reads in a table PMD: pmd_devmap() (PTE_DEVMAP), and __pte_offset_map() stops there.
    sc.ram.write_u64(pte_pa, leaf)
    pmd_pa = sc.builder.entry_pa(va, "pmd")
    for lv in ops.config.levels[:-1]:
        tpa = sc.builder.entry_pa(va, lv.linux)
        tval = sc.ram.read_u64(tpa) | (TABLE_IGNORED & ~DEVMAP) | NS_TABLE
        sc.ram.write_u64(tpa, tval)
        assert ops.hw_rejects(lv.linux, tval, leaf=False) is None
        assert ops.hw_rejects(lv.linux, tval | DEVMAP, leaf=False) is None
    r = row(sc, va + 0x88, vma)
    assert r.mmu == Translation(f.pfn * page + 0x88, "at") and r.verdict == "agree"
    sc.ram.write_u64(pmd_pa, sc.ram.read_u64(pmd_pa) | DEVMAP)
    r = row(sc, va + 0x88, vma)
    assert r.mmu == Translation(f.pfn * page + 0x88, "at") and r.verdict == "linux-only: leaf@pmd"


# -- the view agrees with the MMU on fuzzed hierarchies; both walkers give the same verdicts ----------------
@pytest.mark.parametrize("key", ["arm64:4k:48", "arm64:16k:36", "arm64:64k:48"])
def test_every_fault_the_view_predicts_is_the_mmu_s(key: str) -> None:
    """On fuzzed hierarchies: for every row whose MMU answer no registered deviation explains,
    the first descriptor on the walk's path that ``hw_fault`` names gives the MMU's fault kind
    and level exactly, and no row the view explains has an MMU that translated."""
    t = Target(key)
    gen = HierarchyGenerator(key, params=GenParams(max_addrs=400))
    checked = 0
    try:
        ops = t.ops
        assert isinstance(ops, a64.Arm64)
        for i in range(6):
            ev = t.evaluate(gen.generate(23, i))
            for k, walks in enumerate(ev.walks):
                w, v, mmu = walks[0], ev.verdicts[k][0], ev.probes[k]
                assert not v.startswith("disagree"), (hex(ev.addrs[k]), v)
                if v.startswith(("emulator-deviation", "oracle")):
                    continue
                first = None
                for lv, _pa, val in w.trace:
                    first = ops.hw_fault(lv, val)
                    if first is not None:
                        break
                if first is None:
                    continue
                assert isinstance(mmu, Fault) and (mmu.kind, mmu.level) == first[:2], (hex(ev.addrs[k]), first, mmu)
                checked += 1
    finally:
        t.close()
    assert checked >= 100


#: Levels with block descriptors without FEAT_LPA/FEAT_LPA2 (D8 "Block descriptor").
BLOCK_LEVELS = {4096: (1, 2), 16384: (2,), 65536: (2,)}


def arch_walk(ram: object, root: int, va: int, granule: int, va_bits: int, half: str,
              pa_bits: int) -> int | tuple[str, int]:
    """The Arm ARM's stage-1 walk for an EL1 read (DDI 0487 D8, pseudocode
    AArch64.TranslationTableWalk), written here from the manual alone: the PA, or (fault kind,
    level).  PE: no FEAT_LPA/LPA2, no hardware AF update, ``pa_bits`` of PA; descriptor bits 49:48
    read as OA[49:48] (the reading of the registered no-address-size-fault deviation); a walk
    that leaves RAM is an external abort (``external``)."""
    read = ram.read_u64  # type: ignore[attr-defined]
    size = ram.size  # type: ignore[attr-defined]
    shift = granule.bit_length() - 1
    stride = shift - 3
    if va >> va_bits != (0 if half == "low" else (1 << (64 - va_bits)) - 1):
        return ("translation", 0)  # the other half: TCR_EL1.EPDn = 1
    start = 4 - -(-(va_bits - shift) // stride)
    level, table = start, root
    oa_mask = ((1 << 50) - 1) & ~((1 << shift) - 1)
    while True:
        lshift = shift + stride * (3 - level)
        width = va_bits - lshift if level == start else stride
        pa = table + 8 * ((va >> lshift) & ((1 << width) - 1))
        if pa + 8 > size:
            return ("external", level)
        d = read(pa)
        if not d & VALID or (level == 3 and not d & TYPE):
            return ("translation", level)
        if d & TYPE and level < 3:
            table = d & oa_mask
            if table >> pa_bits:
                return ("address-size", level)
            level += 1
            continue
        if level < 3 and level not in BLOCK_LEVELS[granule]:
            return ("translation", level)
        oa = d & oa_mask & ~((1 << lshift) - 1)
        if oa >> pa_bits:
            return ("address-size", level)
        if not d & AF:
            return ("access-flag", level)
        return oa | (va & ((1 << lshift) - 1))


@pytest.mark.parametrize("key", ["arm64:4k:48", "arm64:4k:39", "arm64:16k:47", "arm64:64k:42", "arm64:64k:48"])
def test_unicorn_departs_from_the_architecture_only_on_deviation_rows(key: str) -> None:
    """Fuzzed hierarchies, every address Linux walked: where Unicorn's answer is not the Arm
    ARM's (:func:`arch_walk`, PARange 44 as the model's), the row is ``emulator-deviation``;
    everywhere else -- every ``agree`` and ``linux-only`` row -- the MMU answered as the
    architecture does, so no verdict rests on an emulator departure."""
    t = Target(key)
    gen = HierarchyGenerator(key, params=GenParams(max_addrs=400))
    ops = t.ops
    counts = {"same": 0, "deviation": 0}
    try:
        for i in range(7):  # enough hierarchies for >= 500 compared rows on every granule
            ev = t.evaluate(gen.generate(31, i))
            sc = t.sc
            for k, walks in enumerate(ev.walks):
                w, v, mmu = walks[0], ev.verdicts[k][0], ev.probes[k]
                if not w.trace:  # outside-vma: Linux read no entry, so no comparison rests on the MMU
                    continue
                want = arch_walk(sc.ram, sc.mm.pgd, ev.addrs[k], ops.PAGE_SIZE, ops.config.va_bits,
                                 t.oracle.half, deviations.ARM64_EFFECTIVE_PA_BITS)
                got = mmu.pa if isinstance(mmu, Translation) else (mmu.kind, mmu.level)  # type: ignore[union-attr]
                if got != want:
                    assert v.startswith("emulator-deviation: "), (hex(ev.addrs[k]), want, got, v)
                    counts["deviation"] += 1
                else:
                    counts["same"] += 1
    finally:
        t.close()
    assert counts["same"] >= 500 and counts["deviation"] >= 1, counts


def test_batch_and_per_address_walks_judge_arm64_alike() -> None:
    """The fuzzer's batch path carries hw_absent_reason() (old pages, present-invalid) exactly as
    walk_result() does, so both walkers give the same verdict on every row."""
    key = "arm64:4k:48"
    gen = HierarchyGenerator(key, params=GenParams(max_addrs=300))
    scalar, batch = Target(key, walker="scalar"), Target(key)
    seen = 0
    try:
        for i in range(4):
            h = gen.generate(11, i)
            a, b = scalar.evaluate(h), batch.evaluate(h)
            assert a.verdicts == b.verdicts
            seen += sum(v.startswith("linux-only: old-page") for r in b.verdicts for v in r)
    finally:
        scalar.close()
        batch.close()
    assert seen


# -- deviation detectors see only the path the MMU walks --------------------------------------------------
def test_no_deviation_below_an_invalid_descriptor(closing: list[Scenario]) -> None:
    """Below an invalid descriptor the MMU reads nothing: a table beyond RAM there, or a
    Contiguous leaf, cannot have changed its answer (a Translation fault at the invalid level)."""
    sc = space("arm64:4k:48", ram_size=128 << 20)
    closing.append(sc)
    ops = sc.ops
    vma = vma_at(sc, 1 << 39, 1 << 39)
    p4d_pa = sc.builder.entry_pa(vma.vm_start, "p4d")
    val = ops.mk_table("p4d", sc.ram.size + (1 << 21)) & ~VALID  # bits[1:0] = 0b10, beyond RAM
    sc.ram.write_u64(p4d_pa, val)
    r = row(sc, vma.vm_start + 0x1000, vma)
    assert r.walk.reason == "unreadable@pud" and r.mmu == fault("translation", 0)
    assert deviations.explain(ops, r.walk, r.mmu) is None
    assert r.verdict == "agree"
    # The same table beyond RAM behind a valid descriptor: Unicorn reads zeros at level 1.
    sc.ram.write_u64(p4d_pa, val | VALID)
    r = row(sc, vma.vm_start + 0x1000, vma)
    assert r.mmu == fault("translation", 1) and r.verdict == "emulator-deviation: walk-outside-ram-reads-zero"
