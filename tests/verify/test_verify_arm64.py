"""Walk vs MMU on arm64: every granule / VA size, both halves (TTBR0 and TTBR1).

* The default scenarios give the verdicts the semantics call for (Linux v6.12 folio_walk_start()
  vs the Arm ARM), and every not-present case faults at the level Linux stopped at.
* 10,000 random mapped/unmapped addresses per granule agree.
* Permissions: what Linux's view of the entry says (pte_user, pte_rdonly, pte_write,
  pte_user_exec, PXN, and the APTable/PXNTable/UXNTable fields of the decoded table entries) is
  what the MMU enforces at EL1 and at EL0, for reads, writes and real instruction fetches.
* Every registered emulator deviation is shown to turn a row built to hit it into
  ``emulator-deviation: <name>`` -- a row that would otherwise have been agree, linux-only or
  disagree.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator

import pytest

import archs
from archs import arm64 as a64
from archs.linux import Prot, SwpEntry
from emu.judge import compare, judge
from emu.machines import arm64 as m64
from emu.machines import deviations
from emu.machines.base import READ, WRITE, Access, Fault, Translation
from emu.machines.oracle import make_oracle
from emu.mm.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, VMA
from emu.mm.pagewalk import FW_MIGRATION
from emu.mm.scenarios import Case, Scenario, half_base, new_address_space
from emu.verify import Report, Row, run_walk, verify_configs, verify_scenario
from tests.verify.default_verdicts import expected_verdict

#: The configurations Unicorn checks; the 52-bit ones (FEAT_LPA2 / FEAT_LVA + FEAT_LPA) it
#: cannot, and counts every row of oracle-cannot-check (test_52bit_configs_are_oracle_cannot_check;
#: their QEMU rows: tests/machines/test_arm64_52bit.py).
WIDE = [k for k in archs.all_config_keys(["arm64"]) if a64.is_52bit(archs.get_config(k))]
CONFIGS = [k for k in archs.all_config_keys(["arm64"]) if k not in WIDE]
RW = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
USER_READ, USER_WRITE = Access("read", user=True), Access("write", user=True)
FETCH, USER_FETCH = Access("fetch"), Access("fetch", user=True)
# p4d_bad() is "table bit clear": to the MMU a level-0 block, which the 4K granule does not have
# (Translation fault, Arm ARM D8) -- Unicorn takes it as a 512G block.
BAD_P4D = "emulator-deviation: block-at-any-level"


@pytest.fixture(scope="module", params=CONFIGS)
def report(request: pytest.FixtureRequest) -> Report:
    return verify_configs([request.param])


def test_default_scenario_verdicts_both_halves(report: Report) -> None:
    key = report.rows[0].config
    assert {r.config for r in report.rows} == {key, f"{key}:ttbr1"}
    for half in (key, f"{key}:ttbr1"):
        rows = [r for r in report.rows if r.config == half]
        assert len({r.case for r in rows}) >= 20
        for r in rows:
            want = expected_verdict(r.case, r.walk.flags, bad_entry=BAD_P4D)
            assert r.verdict == want, (half, r.case, r.walk.flags, r.verdict)


def test_52bit_configs_are_oracle_cannot_check_on_unicorn() -> None:
    """Unicorn's Cortex-A72 has no FEAT_LPA2/FEAT_LVA: every row of a 52-bit configuration is
    oracle-cannot-check by that name (both halves, all cases), none another verdict, and no
    Unicorn machine is started for it."""
    assert WIDE == ["arm64:4k:52", "arm64:16k:52", "arm64:64k:52"]
    report = verify_configs(["arm64:64k:52"], harness="off")
    assert {r.config for r in report.rows} == {"arm64:64k:52", "arm64:64k:52:ttbr1"}
    assert len(report.rows) > 100 and report.ok
    for r in report.rows:
        assert r.verdict.startswith("oracle-cannot-check: unicorn-no-feat-lva: ") and "FEAT_LVA / FEAT_LPA" in r.verdict
    for half, regs in report.registers.items():  # no machine: the registers the regime needs
        assert regs["TCR_EL1"] & 0x3F == 12 and (regs["TCR_EL1"] >> 32) & 7 == 0b110, half  # T0SZ 12, IPS 52


def test_halves_use_their_own_translation_base(report: Report) -> None:
    key = report.rows[0].config
    va_bits = archs.get_config(key).va_bits
    for r in report.rows:
        top = r.addr >> va_bits
        assert top == ((1 << (64 - va_bits)) - 1 if r.config.endswith(":ttbr1") else 0), hex(r.addr)
    low, high = report.registers[key], report.registers[f"{key}:ttbr1"]
    # TCR_EL1.EPD1 (bit 23) for the low half's run, EPD0 (bit 7) for the high half's.
    assert low["TCR_EL1"] & (1 << 23) and not low["TCR_EL1"] & (1 << 7)
    assert high["TCR_EL1"] & (1 << 7) and not high["TCR_EL1"] & (1 << 23)
    assert low["TTBR1_EL1"] == 0 and high["TTBR0_EL1"] == 0 and high["TTBR1_EL1"] == low["TTBR0_EL1"]
    assert low["TCR_EL1"] & 0x3F == 64 - va_bits  # T0SZ


def test_mapped_cases_reach_the_page_linux_reports(report: Report) -> None:
    ops = archs.get_ops(report.rows[0].config)
    for r in report.rows:
        if r.walk.found and r.walk.kind == "normal" and isinstance(r.mmu, Translation):
            assert r.mmu.observed_by == "at"
            assert r.mmu.pa == (r.walk.page_pfn << ops.PAGE_SHIFT) | (r.addr & (ops.PAGE_SIZE - 1))


def test_not_present_cases_are_translation_faults_at_linux_s_level(report: Report) -> None:
    ops = archs.get_ops(report.rows[0].config)
    seen = 0
    for r in report.rows:
        w = r.walk
        not_present = w.reason.startswith(("none@", "swap@", "migration-entry@"))
        if not_present or w.kind == "migration-entry" or w.hw_absent:
            assert isinstance(r.mmu, Fault) and r.mmu.kind == "translation", (r.case, r.mmu)
            stop = w.trace[-1][0]  # the entry Linux decided on
            assert r.mmu.level == int(ops.hw_level(stop).name[1:]), (r.case, r.mmu, stop)
            assert r.mmu.code == 0b000100 | r.mmu.level  # PAR_EL1.FST = 0b0001LL
            seen += 1
    assert seen >= 40


def test_every_level_and_kind_is_covered(report: Report) -> None:
    key = report.rows[0].config
    ops = archs.get_ops(key)
    levels = {r.walk.level for r in report.rows if r.walk.found}
    assert levels == ({"PTE", "PMD", "PUD"} if ops.granule == 4096 else {"PTE", "PMD"})
    assert {r.walk.kind for r in report.rows if r.walk.found} == {
        "normal", "zero-page", "huge-zero-page", "migration-entry"
    }
    nones = {r.walk.reason for r in report.rows if r.walk.reason.startswith("none@")}
    assert nones == {f"none@{lv.linux}" for lv in ops.config.levels}


def test_seed_kernel_misses_pmd_migration_entries() -> None:
    # arm64 pmd_leaf() = pmd_present() && !pmd_table(): a PMD migration entry is not a leaf, so
    # the seed's "if (pmd_leaf(pmd))" never takes it (v6.12 added "!pmd_present(pmd) ||").
    rows = verify_configs(["arm64:16k:36"], kernel="aa39ca6940f1").rows
    pmd_migration = [r for r in rows if "migration entry" in r.case and "PMD" in r.case]
    assert pmd_migration and all(not r.walk.found and r.verdict == "agree" for r in pmd_migration)


def test_effective_pa_size_of_the_detector_is_the_machine_s() -> None:
    ops = archs.get_ops("arm64:4k:48")
    ram, alloc, *_ = new_address_space(ops, ram_size=16 << 20)
    oracle = make_oracle(ops, ram, alloc)
    try:
        parange = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}[oracle.machine.id_aa64mmfr0() & 0xF]
        assert parange == deviations.ARM64_EFFECTIVE_PA_BITS
    finally:
        oracle.close()
        ram.close()


# -- random addresses ---------------------------------------------------------------------------------------
def space(key: str, half: str = "low", ram_size: int = 1 << 30) -> Scenario:
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


@pytest.mark.parametrize(
    "key,half", [("arm64:4k:48", "low"), ("arm64:16k:47", "high"), ("arm64:64k:42", "high")]
)
def test_ten_thousand_random_addresses_agree(key: str, half: str, closing: list[Scenario]) -> None:
    rng = random.Random(zlib.crc32(key.encode()))
    sc = space(key, half, ram_size=3 << 30)
    closing.append(sc)
    ops, b = sc.ops, sc.builder
    va_bits = ops.config.va_bits
    span = min(1 << (va_bits - 2), max(1 << 34, 256 * ops.PMD_SIZE))  # room for unmapped PMDs
    base = half_base(ops, half) + (1 << (va_bits - 1))
    vma = sc.mm.add_vma(VMA(base, base + span, RW, name="random"))
    sizes = [(ops.PUD_SIZE, "pud", 2)] if ops.config.leaf_size("pud") else []
    sizes += [(ops.PMD_SIZE, "pmd", 24), (ops.PAGE_SIZE, "pte", 1500)]
    mapped: list[tuple[int, int]] = []
    order = {size: (size // ops.PAGE_SIZE).bit_length() - 1 for size, _, _ in sizes}
    folios = {lv: b.alloc_folio(order[size], tag=False) for size, lv, _ in sizes[:-1]}
    for size, linux, count in sizes:
        for _ in range(count):
            va = base + rng.randrange(span // size) * size
            prot = Prot(write=rng.random() < 0.5, exec=rng.random() < 0.3, user=rng.random() < 0.8)
            try:
                if linux == "pte":
                    if rng.random() < 0.1:  # a swap entry: Linux NULL, MMU translation fault
                        b.set_swap(va, "pte", SwpEntry(rng.randrange(24), rng.randrange(1 << 40)))
                        continue
                    b.map_folio(va, b.alloc_folio(0, tag=False), prot)
                else:  # the same big folio mapped at several places (as a shared mapping would)
                    b.map_pfn(va, linux, folios[linux].pfn, prot)
            except Exception:  # overlaps an earlier, larger mapping: pick another spot
                continue
            mapped.append((va, size))
    addrs = []
    for i in range(10_000):
        if i % 2:
            va, size = rng.choice(mapped)
            addrs.append(va + rng.randrange(size) // 8 * 8)
        else:
            addrs.append(base + rng.randrange(span) // 8 * 8)
    sc.cases = [Case("random", a, vma) for a in addrs]
    rows = verify_scenario(sc, flag_sets=(0,))
    assert len(rows) == 10_000
    bad = [r for r in rows if r.verdict != "agree"]
    assert not bad, [(hex(r.addr), r.walk.summary(), r.mmu, r.verdict) for r in bad[:3]]
    assert sum(isinstance(r.mmu, Translation) for r in rows) >= 4_000
    faults = [r.mmu for r in rows if isinstance(r.mmu, Fault)]
    assert len(faults) >= 1_000 and {f.level for f in faults} >= {2, 3}


# -- permissions: Linux's view of the entries vs the MMU at EL1 and EL0 -------------------------------------
def _expect(ops: a64.Arm64, leaf: int, tables: list[dict[str, int]], leaf_level: int) -> dict[Access, object]:
    """Arm ARM D8.4 (stage 1, EL1&0, no PAN/WXN), from Linux's view of the leaf (pte_user =
    AP[1], pte_rdonly = AP[2], pte_user_exec = !UXN, PTE_PXN) and the table entries' decoded
    APTable/PXNTable/UXNTable fields, which restrict everything below them (hierarchical)."""
    ap_table = 0
    pxn_table = uxn_table = False
    for t in tables:
        ap_table |= t["ap_table"]
        pxn_table |= bool(t["pxn_table"])
        uxn_table |= bool(t["uxn_table"])
    user = ops.pte_user(leaf) and not ap_table & 1  # APTable[0]: no EL0 access below
    rdonly = ops.pte_rdonly(leaf) or bool(ap_table & 2)  # APTable[1]: no write below
    el0_writable = user and not rdonly
    pxn = bool(leaf & a64.PTE_PXN) or pxn_table or el0_writable  # EL0-writable => PXN
    uxn = not ops.pte_user_exec(leaf) or uxn_table
    perm = Fault("permission", leaf_level, 0b001100 | leaf_level, 0)
    if not ops.pte_young(leaf):
        af = Fault("access-flag", leaf_level, 0b001000 | leaf_level, 0)
        return {acc: af for acc in (READ, WRITE, USER_READ, USER_WRITE)}
    return {
        READ: True,
        WRITE: not rdonly or perm,
        USER_READ: user or perm,
        USER_WRITE: el0_writable or perm,
        FETCH: not pxn or Fault("permission", leaf_level, perm.code, 3),
        USER_FETCH: not uxn or Fault("permission", leaf_level, perm.code, 3),
    }


PROTS = [
    Prot(), Prot(write=False), Prot(dirty=False), Prot(exec=True), Prot(write=False, exec=True),
    Prot(user=False), Prot(user=False, write=False), Prot(user=False, exec=True), Prot(young=False),
    Prot(special=True, write=False),
]
#: Table-entry attributes per variant: on the entry just above the leaf's table, or with "all" on
#: every table entry of the path.  The builder's tables are a user mm's (pXd_populate():
#: PXNTable set); "all" with PXNTable 0 / UXNTable 1 is init_mm's (kernel) tables.
TABLE_ATTRS: list[dict[str, int]] = [
    {}, {"ap_table": 0b01}, {"ap_table": 0b10}, {"ap_table": 0b11}, {"uxn_table": 1},
    {"all": 1, "pxn_table": 0}, {"all": 1, "pxn_table": 0, "uxn_table": 1},
    {"all": 1, "pxn_table": 0, "ap_table": 0b01}, {"all": 1, "pxn_table": 0, "ap_table": 0b10},
]


@pytest.mark.parametrize(
    "key,linux", [("arm64:4k:48", "pte"), ("arm64:4k:39", "pmd"), ("arm64:64k:42", "pte")]
)
def test_permissions_agree_at_el1_and_el0(key: str, linux: str, closing: list[Scenario]) -> None:
    sc = space(key, ram_size=1 << 30)
    closing.append(sc)
    ops, b, ram = sc.ops, sc.builder, sc.ram
    assert isinstance(ops, a64.Arm64)
    size = ops.PAGE_SIZE if linux == "pte" else ops.PMD_SIZE
    target = b.alloc_folio((size // ops.PAGE_SIZE).bit_length() - 1, tag=False).pfn
    levels = ops.config.levels
    top = levels[0]
    # the table entry that points to the leaf's table: the level just above the leaf's
    above = levels[[lv.linux for lv in levels].index(ops.hw_level(linux).linux) - 1].linux
    cases = []
    for t, tattrs in enumerate(TABLE_ATTRS):
        # each table-attribute variant under its own top-level entry, so attributes do not mix
        # (and all of a variant's leaves under one entry of ``above``)
        for p, prot in enumerate(PROTS):
            va = ((t + 1) << top.shift) + (p + 1) * 2 * size
            b.map_pfn(va, linux, target, prot)
            cases.append(va)
        path = [lv.linux for lv in levels[: levels.index(ops.hw_level(above)) + 1]]
        for lv_linux in path if tattrs.get("all") else [above]:
            pa = b.entry_pa(cases[-1], lv_linux, create=False)
            val = ram.read_u64(pa)
            for f, v in tattrs.items():
                val = val if f == "all" else ops.table_fmt.with_field(val, f, v)
            ram.write_u64(pa, val)
    sc.oracle.attach(sc.mm)
    m = sc.oracle.machine
    checked = 0
    for va in cases:
        tables, leaf, leaf_level = [], 0, 0
        table = sc.mm.pgd
        for lv in ops.config.levels:
            val = ram.read_u64(table + lv.index(va) * 8)
            decoded = ops.decode(lv.linux, val)
            if decoded["format"].startswith("table"):
                tables.append(decoded)
                table = ops.table_pa(lv.linux, val)
                continue
            leaf, leaf_level = val, int(lv.name[1:])
            break
        expect = _expect(ops, leaf, tables, leaf_level)
        pa = (leaf & ops.PTE_ADDR_LOW & ~(size - 1)) | (va & (size - 1))
        for acc, want in expect.items():
            got = m.probe_many([va], acc)[0] if acc.kind != "fetch" else m.probe(va, acc)
            want = Translation(pa, "at") if want is True else want
            assert got == want, (hex(va), hex(leaf), [t for t in tables if t["ap_table"] or t["pxn_table"]
                                                       or t["uxn_table"]], acc)
            checked += 1
        # Linux's pte_write() (PTE_DBM) without PTE_RDONLY clear is "writable once dirty": with no
        # hardware DBM (TCR_EL1.HD = 0) the MMU faults the write, which is how Linux marks it dirty.
        if ops.pte_write(leaf) and ops.pte_rdonly(leaf) and ops.pte_young(leaf):
            assert isinstance(m.probe(va, WRITE), Fault)
    assert checked >= 500


# -- emulator deviations: each on a row built to hit it ------------------------------------------------------
def _row(sc: Scenario, va: int, vma: VMA) -> Row:
    sc.cases = [Case("deviation", va, vma)]
    [row] = verify_scenario(sc, flag_sets=(FW_MIGRATION,))
    return row


def _anon(sc: Scenario, start: int, size: int) -> VMA:
    return sc.mm.add_vma(VMA(start, start + size, RW, name="anon"))


def test_arm64_deviations_are_all_registered() -> None:
    names = {d.name for d in m64.DEVIATIONS}
    registered = {d.name: d for d in deviations.for_arch("arm64")}
    # Unicorn's own list, and the one found on QEMU 7.2 (emu/machines/placement.py)
    assert set(registered) == names | {deviations.ARM64_QEMU_FOUND.name}
    for d in registered.values():
        test = "tests/machines/test_placement.py" if d is deviations.ARM64_QEMU_FOUND else \
            "tests/machines/test_machine_arm64.py::"
        assert "Arm ARM" in d.reference and test in d.reference
    # Every deviation but one has a detector; the TGran16 one cannot change a translation.
    assert [n for n, d in registered.items() if d.detect is None] == ["tgran16-unimplemented-but-used"]


def test_block_at_any_level_16k_level_1(closing: list[Scenario]) -> None:
    # 16K level 1: no block descriptor in the architecture (Translation fault, level 1); Linux's
    # pud_leaf() takes it as a 64G leaf; Unicorn as a 64G block.
    sc = space("arm64:16k:47")
    closing.append(sc)
    va = 3 << 36
    vma = _anon(sc, va, 1 << 36)
    pa = sc.builder.entry_pa(va, "pud")
    sc.ram.write_u64(pa, 0x0060_0000_0000_0741)  # OA 0, AF, SH, AP[1], bits[1:0] = 0b01
    row = _row(sc, va + 0x12_3450, vma)
    assert row.walk.found and row.walk.level == "PUD"
    assert compare(row.walk, row.mmu) == "agree"  # what it would have been
    assert row.mmu == Translation(0x12_3450, "at")
    assert row.verdict == "emulator-deviation: block-at-any-level"


def test_block_at_any_level_64k_level_1(closing: list[Scenario]) -> None:
    # 64K level 1: Linux's pud_table() is always true, so the walk goes on to the PMD table; the
    # architecture faults (no level-1 block); Unicorn translates a 4T block at the table's PA.
    sc = space("arm64:64k:48")
    closing.append(sc)
    va = 1 << 42
    vma = _anon(sc, va, 1 << 42)
    f = sc.builder.alloc_folio(0)
    sc.builder.map_folio(va + (5 << 16), f, Prot())
    pud_pa = sc.builder.entry_pa(va, "pud")
    sc.ram.write_u64(pud_pa, sc.ram.read_u64(pud_pa) & ~2 | 1 << 10)
    row = _row(sc, va + (5 << 16) + 0x18, vma)
    assert row.walk.found and row.walk.level == "PTE"
    assert compare(row.walk, row.mmu).startswith("disagree")
    assert row.verdict == "emulator-deviation: block-at-any-level"


def test_block_oa_ored(closing: list[Scenario]) -> None:
    sc = space("arm64:4k:48")
    closing.append(sc)
    va = 1 << 30
    vma = _anon(sc, va, 1 << 30)
    f = sc.builder.alloc_folio(9, tag=False)
    pa = sc.builder.map_folio(va, f, Prot(), linux="pmd")[0]
    sc.ram.write_u64(pa, sc.ram.read_u64(pa) | 0x1000)  # RES0 bit 12 of a 2M block
    row = _row(sc, va + 0x234, vma)
    assert row.walk.found and row.walk.expected_pa == (f.pfn << 12) + 0x234
    assert row.mmu == Translation((f.pfn << 12) | 0x1234, "at")
    assert compare(row.walk, row.mmu).startswith("disagree")
    assert row.verdict == "emulator-deviation: block-oa-ored"


def test_no_address_size_fault_output_address(closing: list[Scenario]) -> None:
    sc = space("arm64:4k:48")
    closing.append(sc)
    vma = _anon(sc, 1 << 30, 1 << 21)
    sc.builder.map_pfn(1 << 30, "pte", (1 << 45) >> 12, Prot(), in_ram=False)  # OA above 44 bits
    row = _row(sc, (1 << 30) + 0x10, vma)
    assert row.mmu == Translation((1 << 45) + 0x10, "at")  # Arm ARM: Address size fault, level 3
    assert compare(row.walk, row.mmu) == "linux-only: not-normal@pte:pfn-beyond-memmap"
    assert row.verdict == "emulator-deviation: no-address-size-fault"


def test_no_address_size_fault_table_bit_48(closing: list[Scenario]) -> None:
    sc = space("arm64:4k:48")
    closing.append(sc)
    vma = _anon(sc, 1 << 30, 1 << 21)
    f = sc.builder.alloc_folio(0)
    sc.builder.map_folio(1 << 30, f, Prot())
    pa = sc.builder.entry_pa(1 << 30, "pmd")
    sc.ram.write_u64(pa, sc.ram.read_u64(pa) | 1 << 48)  # Linux's PTE_ADDR_LOW reads bit 48
    row = _row(sc, (1 << 30) + 0x10, vma)
    assert row.walk.reason == "unreadable@pte" and isinstance(row.mmu, Translation)
    assert compare(row.walk, row.mmu).startswith("disagree")
    assert row.verdict == "emulator-deviation: no-address-size-fault"


def test_contiguous_ignored(closing: list[Scenario]) -> None:
    sc = space("arm64:4k:48")
    closing.append(sc)
    vma = _anon(sc, 1 << 30, 1 << 21)
    f = sc.builder.alloc_folio(0)
    pa = sc.builder.map_folio((1 << 30) + 0x3000, f, Prot())[0]  # one entry of a 16-entry run
    sc.ram.write_u64(pa, sc.ram.read_u64(pa) | a64.PTE_CONT)
    row = _row(sc, (1 << 30) + 0x3008, vma)
    assert row.walk.found and row.mmu == Translation((f.pfn << 12) + 8, "at")
    assert compare(row.walk, row.mmu) == "agree"
    assert row.verdict == "emulator-deviation: contiguous-ignored"


def test_txsz_clamped(closing: list[Scenario]) -> None:
    # 64K pages with 52-bit VAs (Linux ARM64_VA_BITS_52, FEAT_LVA): T0SZ = 12.  Unicorn clamps it
    # to 16, so a VA with bit 50 set is beyond its 48-bit range.
    ops = a64.Arm64(a64.make_config(65536, 52))
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=256 << 20)
    sc = Scenario(ops, ram, alloc, memmap, mm, b)
    closing.append(sc)
    machine = m64.Arm64Machine(ram, alloc, granule=65536, va_bits=48)
    try:
        machine.set_roots(mm.pgd, None)
        machine.set_sysreg("TCR_EL1", machine.registers()["TCR_EL1"] & ~0x3F | (64 - 52))
        va = 1 << 50
        vma = mm.add_vma(VMA(va, va + (1 << 29), RW, name="anon"))
        f = b.alloc_folio(0)
        b.map_folio(va, f, Prot())
        walk = run_walk(sc, Case("txsz", va + 8, vma), 0)
        mmu = machine.probe(va + 8)
        assert walk.found and mmu == Fault("translation", 0, 0b000100, 0)
        assert compare(walk, mmu).startswith("disagree")
        assert judge(ops, walk, mmu) == "emulator-deviation: txsz-clamped"
    finally:
        machine.close()


def test_walk_outside_ram_reads_zero(closing: list[Scenario]) -> None:
    sc = space("arm64:4k:48", ram_size=64 << 20)
    closing.append(sc)
    vma = _anon(sc, 1 << 30, 1 << 21)
    f = sc.builder.alloc_folio(0)
    sc.builder.map_folio(1 << 30, f, Prot())
    pa = sc.builder.entry_pa(1 << 30, "pmd")
    sc.ram.write_u64(pa, sc.ops.mk_table("pmd", sc.ram.size + (1 << 20)))  # PTE table beyond RAM
    row = _row(sc, (1 << 30) + 0x10, vma)
    assert row.walk.reason == "unreadable@pte"
    assert row.mmu == Fault("translation", 3, 0b000111, 0)  # Arm ARM: external abort on the walk
    assert compare(row.walk, row.mmu) == "agree"
    assert row.verdict == "emulator-deviation: walk-outside-ram-reads-zero"


def test_tgran16_rows_are_not_marked(closing: list[Scenario]) -> None:
    sc = space("arm64:16k:36")
    closing.append(sc)
    assert (sc.oracle.machine.id_aa64mmfr0() >> 20) & 0xF == 0  # TGran16: not implemented
    vma = _anon(sc, 1 << 25, 1 << 25)
    f = sc.builder.alloc_folio(0)
    sc.builder.map_folio(1 << 25, f, Prot())
    row = _row(sc, (1 << 25) + 0x3010, vma)
    assert row.verdict == "agree" and row.mmu == Translation((f.pfn << 14) + 0x3010, "at")


def test_ordinary_rows_hit_no_deviation(report: Report) -> None:
    ops = archs.get_ops(report.rows[0].config)
    hits = [r for r in report.rows if deviations.explain(ops, r.walk, r.mmu) is not None]
    assert all(r.case.startswith("bad ") for r in hits)


def test_cli_verify_arm64_config_json() -> None:
    import json
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "emu", "verify", "--config", "arm64:4k:48", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {r["config"] for r in doc["rows"]} == {"arm64:4k:48", "arm64:4k:48:ttbr1"}
    assert doc["summary"]["disagree"] == 0 and doc["summary"]["emulator-deviation"] == 8
    assert set(doc["registers"]) == {"arm64:4k:48", "arm64:4k:48:ttbr1"}
    assert doc["rows"][0]["mmu"]["observed_by"] == "at"
