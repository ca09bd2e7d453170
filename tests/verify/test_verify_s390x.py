"""Walk vs MMU on s390x: the default scenario for each ASCE type (region-first, region-second,
region-third, segment table on top) gives the verdicts the semantics call for, every fault carries
the program-interruption code the Principles of Operation names for its case, 10,000 random
addresses per ASCE type all agree, large entries are never 'agree' unless EDAT is proven, and
the s390x emulator deviations in emu/machines/deviations.py still exist."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from unicorn import s390x_const as S

import archs
from archs.linux import Prot
from emu.cli import main
from emu.machines import deviations
from emu.machines import s390x as machine_mod
from emu.machines.base import WRITE, Fault, Translation
from emu.machines.oracle import S390xOracle
from emu.machines.s390x import guest_code as s390x_code
from emu.mm.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, VMA
from emu.mm.pagewalk import FW_ZEROPAGE, FolioWalk, folio_walk_end, folio_walk_start
from emu.mm.scenarios import Case, Scenario, build_default
from emu.verify import Report, verify_configs, verify_scenario
from tests.verify.default_verdicts import expected_verdict

CONFIGS = ["s390x:region1", "s390x:region2", "s390x:region3", "s390x:segment"]
TOP = {"s390x:region1": "pgd", "s390x:region2": "p4d", "s390x:region3": "pud", "s390x:segment": "pmd"}

# PoP SA22-7832 ch. 6 "Program-Interruption Conditions": the translation exception an invalid
# entry (or an invalid bit reached through it) raises, by the table the entry is in.  Linux's
# none@<level> names that table: pgd = region-first, p4d = region-second, pud = region-third,
# pmd = segment table, pte = page table.
PIC_FOR_INVALID = {"pgd": 0x39, "p4d": 0x3A, "pud": 0x3B, "pmd": 0x10, "pte": 0x11}
KIND = {0x39: "region-first-translation", 0x3A: "region-second-translation", 0x3B: "region-third-translation",
        0x10: "segment-translation", 0x11: "page-translation"}
LEVEL = {0x39: 4, 0x3A: 3, 0x3B: 2, 0x10: 1, 0x11: 0}  # Fault.level: the table that said no


@pytest.fixture(scope="module", params=CONFIGS)
def report(request: pytest.FixtureRequest) -> Report:
    return verify_configs([request.param])


def test_default_scenario_verdicts(report: Report) -> None:
    rows = report.rows
    assert len({r.case for r in rows}) >= 14
    for r in rows:
        want = expected_verdict(r.case, r.walk.flags)
        assert r.verdict == want, (r.config, r.case, r.walk.flags, r.verdict)
    assert report.ok and report.counts()["disagree"] == 0


def test_case_list_fits_the_asce_type(report: Report) -> None:
    """PUD leaves only where region-third is a real level; bad entries only where Linux checks
    them (pgd_bad/p4d_bad on region-first/-second tables); none entries at every table level;
    no PMD migration or devmap cases (not configured on s390, listed as omitted)."""
    config = report.rows[0].config
    cases = {r.case for r in report.rows}
    levels = [lv.name for lv in archs.get_config(config).levels]
    linux = [lv.linux for lv in archs.get_config(config).levels]
    assert any(c.startswith("PUD leaf (2G") for c in cases) == ("region-third" in levels)
    bad = {c.split()[1] for c in cases if c.startswith("bad ")}
    assert bad == {"pgd", "p4d"} & set(linux)
    none = {r.walk.reason for r in report.rows if r.walk.reason.startswith("none@")}
    assert none == {f"none@{lv}" for lv in linux}
    assert not any("PMD" in c and "migration" in c for c in cases) and not any("devmap" in c for c in cases)
    omitted = " ".join(report.omitted)
    assert "THP_MIGRATION" in omitted and "PTE_DEVMAP" in omitted
    assert ("no PUD-level leaves" in omitted) == ("region-third" not in levels)
    dt = {"region1": 3, "region2": 2, "region3": 1, "segment": 0}[config.split(":")[1]]
    assert report.registers[config]["CR7"] & 0xC == dt << 2  # ASCE designation type


def test_faults_carry_the_pop_interruption_code(report: Report) -> None:
    seen = set()
    for r in report.rows:
        reason = r.walk.reason
        if reason.startswith(("none@", "swap@", "migration-entry@")) or r.walk.kind == "migration-entry" or (
            "PROT_NONE" in r.case
        ):
            level = "pte" if not reason.startswith("none@") else reason.split("@")[1]
            code = PIC_FOR_INVALID[level]
            assert r.mmu == Fault(KIND[code], LEVEL[code], code, machine_mod.EXCP_PGM), (r.case, r.mmu)
            seen.add(code)
        else:
            assert isinstance(r.mmu, Translation), (r.case, r.mmu)
    config = report.rows[0].config
    assert seen == {PIC_FOR_INVALID[lv.linux] for lv in archs.get_config(config).levels}


def test_mapped_cases_reach_the_page_linux_reports(report: Report) -> None:
    for r in report.rows:
        if r.walk.found and r.walk.kind == "normal" and not r.walk.hw_absent:
            assert isinstance(r.mmu, Translation) and r.mmu.observed_by in ("tag", "lrag")
            assert r.walk.page_pfn is not None and r.mmu.pa == (r.walk.page_pfn << 12) | (r.addr & 0xFFF)
    levels = {r.walk.level for r in report.rows if r.walk.found}
    assert levels == ({"PTE", "PMD", "PUD"} if "segment" not in report.rows[0].config else {"PTE", "PMD"})
    kinds = {r.walk.kind for r in report.rows if r.walk.found}
    assert kinds == {"normal", "zero-page", "huge-zero-page", "migration-entry"}


def test_both_kernels_agree_on_s390x() -> None:
    """Without PMD migration entries (no THP migration on s390) the seed and v6.12 differ only
    in the pud_special()/present checks, which change no s390x row."""
    a = verify_configs(["s390x:region3"], kernel="aa39ca6940f1").rows
    b = verify_configs(["s390x:region3"]).rows
    assert [(r.case, r.walk.reason, r.verdict) for r in a] == [(r.case, r.walk.reason, r.verdict) for r in b]


# -- program interruptions beyond the default read probes -----------------------------------------
@pytest.fixture(scope="module")
def region3() -> Iterator[Scenario]:
    sc = build_default(archs.get_ops("s390x:region3"))
    sc.oracle.attach(sc.mm)
    yield sc
    sc.close()


def _case(sc: Scenario, prefix: str) -> int:
    return next(c.addr for c in sc.cases if c.name.startswith(prefix))


def test_teid_names_the_failing_page_and_the_secondary_space(region3: Scenario) -> None:
    vas = [_case(region3, p) for p in ("none PTE", "none pmd", "none pud", "swap entry")]
    res = region3.oracle.probe_many(vas)
    assert [r.code if isinstance(r, Fault) else r for r in res] == [0x11, 0x10, 0x3B, 0x11]
    for va, teid in zip(vas, region3.oracle.machine.last_teids, strict=True):
        # PoP ch. 6 "Translation-Exception Identification": bits 0-51 the page, bits 62-63 = 10
        # (the secondary ASCE was used).
        assert teid is not None and teid >> 12 == va >> 12 and teid & 3 == 0b10


def test_store_protection_and_asce_type_codes(region3: Scenario) -> None:
    o = region3.oracle
    # The zero page (PAGE_RO) and the huge zero folio (SEGMENT_RO) are DAT-protected: a store
    # gives a protection exception, code 0x04 (PoP ch. 3 "DAT Protection").
    for prefix in ("shared zero page", "huge zero folio"):
        va = _case(region3, prefix)
        assert isinstance(o.probe(va), Translation)
        assert o.probe(va, WRITE) == Fault("protection", None, 0x04, 3)
    # A dirty writable page has _PAGE_PROTECT cleared (pte_mkdirty): the store goes through.
    assert isinstance(o.probe(_case(region3, "4K page, order-0"), WRITE), Translation)
    # Beyond the region-third table's reach (RFX/RSX nonzero): ASCE-type exception, 0x38.
    assert o.probe(1 << 42) == Fault("asce-type", None, 0x38, 3)
    assert o.probe(1 << 60) == Fault("asce-type", None, 0x38, 3)


def test_clean_writable_page_is_write_protected_for_dirty_tracking(region3: Scenario) -> None:
    """s390 tracks dirtiness with DAT protection: pfn_pte() of a clean writable page keeps
    _PAGE_PROTECT, so a store faults (0x04) although Linux calls the page writable."""
    sc = region3
    va = _case(sc, "none PTE") + 0x10000
    folio = sc.builder.alloc_folio(0)
    with sc.ram.undo():
        sc.builder.map_folio(va, folio, Prot(dirty=False))
        sc.oracle.machine.flush_tlb()
        assert sc.oracle.probe(va) == Translation(folio.pfn << 12, "tag")
        assert sc.oracle.probe(va, WRITE) == Fault("protection", None, 0x04, 3)
    sc.oracle.machine.flush_tlb()


# -- walk details -------------------------------------------------------------------------------------
def _walk(sc: Scenario, va: int, flags: int = 0) -> FolioWalk:
    fw = FolioWalk()
    with sc.mm.mmap_read(), sc.ram.undo():
        vma = sc.mm.find_vma(va)
        assert vma is not None
        if folio_walk_start(fw, vma, va, flags) is not None:
            folio_walk_end(fw, vma)
    return fw


@pytest.mark.parametrize("config", CONFIGS)
def test_dynamic_folding_reads_the_top_entry_once_per_folded_level(config: str) -> None:
    """pgd_offset_raw() reads the first top-level entry for its shift; every Linux level above
    the top table's own reads the same entry (p4d/pud/pmd_offset return the pointer as is)."""
    sc = build_default(archs.get_ops(config), with_oracle=False)
    try:
        va = _case(sc, "4K page, order-0")
        fw = _walk(sc, va)
        assert fw.reason == "found"
        first, *steps = fw.trace
        assert (first.level, first.pa) == ("pgd", sc.mm.pgd)
        top = TOP[config]
        order = ["pgd", "p4d", "pud", "pmd", "pte"]
        folded = order[: order.index(top)]
        pas = {s.level: s.pa for s in steps}
        assert all(pas[lv] == pas[top] for lv in folded)
        assert len({pas[lv] for lv in order[order.index(top):]}) == len(order) - order.index(top)
    finally:
        sc.close()


def test_coloured_zero_pages_are_order_0_folios() -> None:
    sc = build_default(archs.get_ops("s390x:region2"), with_oracle=False)
    try:
        mm = sc.mm
        assert mm.zero_page_nr == 128 and mm.zero_page_mask == 0x7F000  # setup_zero_pages(): order 7
        va = _case(sc, "shared zero page")
        pfn = mm.zero_pfn + ((va >> 12) & 0x7F)  # ZERO_PAGE(vaddr): empty_zero_page + (vaddr & mask)
        assert mm.my_zero_pfn(va) == pfn and mm.is_zero_pfn(pfn) and not mm.is_zero_pfn(mm.zero_pfn + 128)
        fw = _walk(sc, va, FW_ZEROPAGE)
        assert fw.kind == "zero-page" and fw.folio is not None and (fw.folio.pfn, fw.folio.order) == (pfn, 0)
    finally:
        sc.close()


# -- 10,000 random addresses per ASCE type ----------------------------------------------------------
RANDOM_SPACE = {  # (base, span) of a VMA away from the default scenario's
    "s390x:region1": (1 << 60, 1 << 35),
    "s390x:region2": (1 << 50, 1 << 35),
    "s390x:region3": (1 << 40, 1 << 35),
    "s390x:segment": (1 << 30, 1 << 30),
}


@pytest.mark.parametrize("config", CONFIGS)
def test_ten_thousand_random_addresses_agree(config: str) -> None:
    rng = random.Random(20241117 + CONFIGS.index(config))
    ops = archs.get_ops(config)
    sc = build_default(ops)
    try:
        base, span = RANDOM_SPACE[config]
        flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
        vma = sc.mm.add_vma(VMA(base, base + span, flags, name="random"))
        mapped: list[tuple[int, int]] = []
        plan = [(1 << 20, 8, 24, "pmd"), (1 << 12, 0, 1500, "pte")]
        if not ops.folded("pud"):
            plan.insert(0, (1 << 31, 19, 1, "pud"))
        for size, order, count, linux in plan:
            for _ in range(count):
                va = base + rng.randrange(span // size) * size
                try:
                    folio = sc.builder.alloc_folio(order, tag=order == 0)
                    prot = Prot(write=rng.random() < 0.5, dirty=rng.random() < 0.5)
                    sc.builder.map_folio(va, folio, prot, linux=linux)
                except Exception:  # overlaps an earlier, larger mapping: pick another spot
                    continue
                mapped.append((va, size))
        assert len(mapped) > 1000
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
        assert not bad, bad[:3]
        assert sum(isinstance(r.mmu, Translation) for r in rows) >= 5_000
        faults = [r for r in rows if isinstance(r.mmu, Fault)]
        assert len(faults) >= 1_000
        for r in faults:  # the PoP's code for the table whose entry Linux found none
            code = PIC_FOR_INVALID[r.walk.reason.split("@")[1]]
            assert r.mmu == Fault(KIND[code], LEVEL[code], code, 3), (r.walk.reason, r.mmu)
        if not ops.folded("pud"):
            assert any(r.walk.level == "PUD" for r in rows)
        assert any(r.walk.level == "PMD" for r in rows)
    finally:
        sc.close()


# -- EDAT: large entries are never agreement unless the emulator proved it honours them ------------
def test_large_entries_are_oracle_cannot_check_without_edat() -> None:
    ops = archs.get_ops("s390x:region1")
    sc = build_default(ops, with_oracle=False)
    try:
        sc.oracle = S390xOracle(ops, sc.ram, sc.alloc, edat=False)
        assert not sc.oracle.machine.edat1_works and not sc.oracle.machine.edat2_works
        rows = verify_scenario(sc)
        large = [r for r in rows if r.walk.level in ("PMD", "PUD")]
        assert {r.case.split(" (")[0] for r in large} == {"PMD leaf", "huge zero folio", "PUD leaf"}
        for r in large:
            edat = "EDAT-1 (1 MB segment" if r.walk.level == "PMD" else "EDAT-2 (2 GB region-third"
            assert r.verdict.startswith(f"oracle-cannot-check: {edat} entries) not honoured"), r.verdict
        report = Report(rows, [], {}, 0.0)
        assert report.counts()["oracle-cannot-check"] == len(large) == 12 and report.ok
        assert all(r.verdict == expected_verdict(r.case, r.walk.flags) for r in rows if r not in large)
    finally:
        sc.close()


def test_large_entries_are_checked_when_edat_is_proven(report: Report) -> None:
    rows = [r for r in report.rows if r.walk.level in ("PMD", "PUD")]
    assert rows and not any(r.verdict.startswith("oracle-cannot-check") for r in rows)
    # The claim rests on the machine's start-up self-test; this build passes it.
    assert all(isinstance(r.mmu, Translation) for r in rows)


# -- the command ------------------------------------------------------------------------------------
def test_cli_verify_arch_s390x(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--arch", "s390x"]) == 0
    out = capsys.readouterr().out
    for key in CONFIGS:
        assert f"== {key}" in out
    assert "page-translation L0 code 0x11" in out and "region-first-translation L4 code 0x39" in out
    summary = next(line for line in out.splitlines() if line.startswith("summary:"))
    assert "disagree 0" in summary and "oracle-cannot-check 0" in summary


# -- emulator deviations still exist ----------------------------------------------------------------
def test_s390x_deviations_are_registered() -> None:
    names = {d.name for d in deviations.for_arch("s390x")}
    assert names == {
        "s390x-lra-cc3-for-every-exception",
        "s390x-key-controlled-protection-not-implemented",
        "s390x-access-register-mode-aborts",
        "s390x-edat-not-in-cpu-models",
        "s390x-iep-not-in-cpu-models",
    }
    assert all("PoP" in d.reference for d in deviations.for_arch("s390x"))


def _run(sc: Scenario, code: bytes, pswm: int = machine_mod.PSW_MASK, **regs: int) -> None:
    """Run raw guest code (no faults expected) on the scenario's machine."""
    m = sc.oracle.machine
    pa = sc.alloc.alloc(0x1000)
    sc.ram.write(pa, code)
    for name, val in regs.items():
        m.uc.reg_write(getattr(S, f"UC_S390X_REG_{name.upper()}"), val)
    m.uc.reg_write(S.UC_S390X_REG_PSWM, pswm)
    m.flush_tlb()
    m._events.clear()
    m.uc.emu_start(pa, pa + len(code), count=len(code) // 4)
    assert not m._events and m.uc.reg_read(S.UC_S390X_REG_PC) == pa + len(code)


def test_deviation_lra_gives_cc3_for_every_exception(region3: Scenario) -> None:
    # PoP LOAD REAL ADDRESS: cc 1 for an invalid segment-table entry, cc 2 for an invalid
    # page-table entry (with the entry's real address in R1).  The emulator: cc 3, code in R1.
    code = s390x_code._lrag(1, 2) + s390x_code._ipm(4)
    for prefix, pic in (("none PTE", 0x11), ("none pmd", 0x10)):
        _run(region3, code, r2=_case(region3, prefix), r4=0)
        m = region3.oracle.machine
        cc = (m.uc.reg_read(S.UC_S390X_REG_R4) >> 28) & 3
        assert cc == 3 and m.uc.reg_read(S.UC_S390X_REG_R1) == 0x8000_0000 | pic


def test_deviation_key_controlled_protection_not_implemented(region3: Scenario) -> None:
    va = _case(region3, "4K page, order-0")
    frame = region3.oracle.probe(va).pa & ~0xFFF  # type: ignore[union-attr]
    sske = bytes([0xB2, 0x2B, 0x00, (5 << 4) | 6])  # SSKE r5,r6 (RRF-c)
    iske = bytes([0xB2, 0x29, 0x00, (7 << 4) | 6])  # ISKE r7,r6 (RRE)
    _run(region3, sske + iske, r5=0x18, r6=frame)  # access key 1, fetch protection on
    assert region3.oracle.machine.uc.reg_read(S.UC_S390X_REG_R7) & 0xF8 == 0x18
    try:
        # PSW key 2 (PSW bits 8-11) matches neither 0 nor the frame's key 1: the PoP requires a
        # protection exception for both the fetch and the store; the emulator performs both.
        load_store = s390x_code._lg(3, 2) + s390x_code._stg(3, 2)
        _run(region3, load_store, pswm=machine_mod.PSW_MASK | (2 << 52), r2=va & ~7, r3=0)
        assert region3.oracle.machine.uc.reg_read(S.UC_S390X_REG_R3) >> 48 == 0xF011  # the tag was read
    finally:
        _run(region3, sske, r5=0, r6=frame)


def test_deviation_access_register_mode_aborts_the_process() -> None:
    """Only ever in a child process: ASC=01 kills whoever runs it."""
    script = textwrap.dedent(
        """
        from unicorn import Uc, UC_ARCH_S390X, UC_MODE_BIG_ENDIAN, UC_PROT_ALL
        from unicorn import s390x_const as S
        uc = Uc(UC_ARCH_S390X, UC_MODE_BIG_ENDIAN)
        uc.ctl_set_tlb_mode(1)  # UC_TLB_CPU
        uc.mem_map(0, 0x100000, UC_PROT_ALL)
        uc.mem_write(0x10000, bytes.fromhex("e31020000004"))  # lg %r1,0(%r2)
        uc.reg_write(S.UC_S390X_REG_CR1, 0x20)
        uc.reg_write(S.UC_S390X_REG_R2, 0x20000)
        uc.reg_write(S.UC_S390X_REG_PSWM, 0x0400400180000000)  # DAT, ASC=01, EA, BA
        print("start", flush=True)
        uc.emu_start(0x10000, 0x10006, count=1)
        print("survived", flush=True)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "start" in res.stdout and "survived" not in res.stdout and res.returncode != 0, res


def test_deviation_edat_absent_from_cpu_models(region3: Scenario) -> None:
    """Without the library patch (edat=False) a 1 MB / 2 GB entry is not translated as such."""
    plain = machine_mod.S390xMachine(region3.ram, region3.alloc, edat=False)
    plain.set_asce(archs.get_ops("s390x:region3").asce(region3.mm.pgd))  # type: ignore[attr-defined]
    for prefix in ("PMD leaf", "PUD leaf"):
        va = _case(region3, prefix)
        assert isinstance(region3.oracle.probe(va), Translation)
        assert plain.probe(va) != region3.oracle.probe(va)


def test_fault_levels_name_the_tables(region3: Scenario) -> None:
    """The oracle names the table a translation exception comes from, so an 'agree' on a none
    entry also means Linux and DAT stopped in the same table."""
    names = {code: region3.oracle.fault_hw_level(Fault(KIND[code], LEVEL[code], code, 3)) for code in KIND}
    assert names == {
        0x39: "region-first", 0x3A: "region-second", 0x3B: "region-third", 0x10: "segment", 0x11: "page",
    }
    assert region3.oracle.fault_hw_level(Fault("protection", None, 0x04, 3)) is None
