"""The fuzzer (emu/fuzz/, emu/strategies.py, ``foliowalk fuzz``): generators built only from
archs/, reproducible cases, hostile shapes that neither hang nor crash, a broken walker caught and
shrunk to one entry, findings that replay exactly, crash isolation, and the Hypothesis strategies
used the way a user would."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

import archs
import emu.mm.pagewalk_batch
from archs import x86_64 as X
from emu import cli
from emu.fixtures import check_fixture_set, load_fixture_set
from emu.fuzz import (
    KINDS,
    CampaignOptions,
    Entry,
    EntryGenerator,
    GenParams,
    Hierarchy,
    HierarchyGenerator,
    Target,
    VmaSpec,
    materialize,
    plan_layout,
    run_campaign,
    signature,
)
from emu.fuzz.records import campaign_digest
from emu.judge import judge
from emu.machines.base import Translation
from emu.mm.pagewalk import FolioWalk, folio_walk, folio_walk_end, folio_walk_start
from emu.strategies import entries, hierarchies
from emu.verify import VERDICT_CLASSES, verify_scenario

X86 = "x86_64:4level"
SMALL = GenParams(max_tables=8, entries_per_table=(3, 8), max_addrs=200)
#: One configuration per landed architecture, each with an MMU oracle.
LANDED = [k for k in ("x86_64:4level", "arm64:4k:48", "s390x:region3")
          if k.split(":")[0] in archs.ARCHES]


@pytest.fixture(scope="module")
def x86() -> Iterator[Target]:
    t = Target(X86)
    yield t
    t.close()


# -- generators ---------------------------------------------------------------------------------
def test_same_seed_same_cases_byte_for_byte() -> None:
    a, b = HierarchyGenerator(X86), HierarchyGenerator(X86)
    for i in range(5):
        assert a.generate(7, i).to_bytes() == b.generate(7, i).to_bytes()
    assert a.generate(7, 0).to_bytes() != a.generate(8, 0).to_bytes()
    assert a.generate(7, 0).to_bytes() != a.generate(7, 1).to_bytes()
    h = a.generate(7, 3)
    assert Hierarchy.from_json(json.loads(h.to_bytes())) == h


@pytest.mark.parametrize("key", archs.all_config_keys())
def test_every_configuration_gets_every_kind_from_archs_alone(key: str) -> None:
    """No per-architecture code: each configuration's generator, fed only by archs/, makes the
    entry kinds its Linux builders allow, values fit the entry, and no value aims at the probe
    machine's own frames."""
    ops = archs.get_ops(key)
    lay = plan_layout(key)
    gen = EntryGenerator(ops, lay)
    rng = random.Random(key)
    made: set[str] = set()
    for depth, lv in enumerate(ops.config.levels):
        for kind in KINDS:
            for _ in range(4):
                value, got = gen.entry(rng, depth, kind=kind)
                assert 0 <= value < 1 << (8 * lv.entry_size)
                assert got == "none" or not gen.forbidden(value, depth)  # none: pXd_clear()'s value
                made.add(got)
    assert {"valid", "flip", "field", "noise", "swap", "migration", "hostile", "none"} <= made
    h = HierarchyGenerator(key, params=SMALL).generate(1, 0)
    assert h.addrs and h.entries and h.vmas
    assert all(lay.pool_start <= pa < lay.pool_end for pa, _d in h.tables)


def test_hostile_shapes_neither_hang_nor_crash(x86: Target) -> None:
    """A table that points to itself, to the root, into a data page and beyond RAM: the walk is
    bounded and says unreadable@ where the table is outside RAM; the MMU answers every case."""
    ops: Any = x86.ops
    lay = x86.layout
    pud, pmd = lay.tables[1][0], lay.tables[2][0]
    beyond = lay.ram_size + 0x1000
    ents = (
        Entry(lay.root + 8 * 1, 0, ops.mk_table("p4d", lay.root), None, "hostile"),  # root -> root
        Entry(lay.root + 8 * 2, 0, ops.mk_table("p4d", pud), None, "hostile"),
        Entry(pud + 8 * 0, 1, ops.mk_table("pud", pud), None, "hostile"),  # pud -> itself
        Entry(pud + 8 * 1, 1, ops.mk_table("pud", beyond), None, "hostile"),  # beyond RAM
        Entry(pud + 8 * 2, 1, ops.mk_table("pud", pmd), None, "table"),
        Entry(pmd + 8 * 0, 2, ops.mk_table("pmd", lay.small_pfns[0] << 12), None, "hostile"),  # data
    )
    addrs = (1 << 39, (1 << 39) + 0x1238, 2 << 39, (2 << 39) + (1 << 30), (2 << 39) + (2 << 30) + 0x40)
    h = Hierarchy(X86, "v6.12", ents, ((pud, 1), (pmd, 2)), (VmaSpec(1 << 39, 3 << 39, 0x33),), addrs)
    ev = x86.evaluate(h)
    reasons = {w.reason for row in ev.walks for w in row}
    assert "unreadable@pmd" in reasons
    assert len(ev.probes) == len(addrs)
    assert all(v.split(":")[0] != "oracle-error" or "READ_UNMAPPED" in v for r in ev.verdicts for v in r)


def test_batch_and_per_address_walks_give_the_same_results(x86: Target) -> None:
    """The batch path (walk_many columns, rows shared across flag sets, one verdict per shared
    row) gives exactly the per-address walker's WalkResults and judge()'s verdict on every row."""
    gen = HierarchyGenerator(X86, params=SMALL)
    scalar = Target(X86, walker="scalar")
    try:
        for i in range(6):
            h = gen.generate(11, i)
            a, b = scalar.evaluate(h), x86.evaluate(h)
            assert [[w.to_json() for w in r] for r in a.walks] == [[w.to_json() for w in r] for r in b.walks]
            assert [[w.hw_absent for w in r] for r in a.walks] == [[w.hw_absent for w in r] for r in b.walks]
            assert a.verdicts == b.verdicts
            judged = [[judge(x86.ops, w, b.probes[k], x86.oracle) for w in r] for k, r in enumerate(b.walks)]
            assert b.verdicts == judged
    finally:
        scalar.close()


@pytest.mark.parametrize("key", ["arm64:4k:48", "s390x:region3"])
def test_batch_and_per_address_walks_agree_on_every_arch(key: str) -> None:
    """walk_many_cases() (one vector pass per hierarchy for every VMA and flag set, rows built from
    its columns) gives the per-address walker's WalkResults and verdicts on arm64 and s390x too."""
    gen = HierarchyGenerator(key, params=GenParams.bench())
    scalar, batch = Target(key, walker="scalar"), Target(key)
    try:
        for i in range(4):
            h = gen.generate(11, i)
            a, b = scalar.evaluate(h), batch.evaluate(h)
            assert a.walks == b.walks
            assert a.verdicts == b.verdicts
    finally:
        scalar.close()
        batch.close()


# -- campaigns ----------------------------------------------------------------------------------
def _disagree_signatures(key: str, seed: int = 5, n: int = 12) -> dict[str, int]:
    target = Target(key)
    gen = HierarchyGenerator(key, params=SMALL)
    sigs: dict[str, int] = {}
    try:
        for i in range(n):
            ev = target.evaluate(gen.generate(seed, i))
            for a, row in enumerate(ev.walks):
                for j, w in enumerate(row):
                    if ev.verdicts[a][j].startswith("disagree"):
                        s = signature(w, ev.probes[a], ev.verdicts[a][j])
                        sigs[s] = sigs.get(s, 0) + 1
    finally:
        target.close()
    return sigs


@pytest.mark.parametrize("key", LANDED)
def test_seeded_campaign_finds_no_disagree(key: str) -> None:
    """The released code: every difference the fuzzer provokes is agreement, a by-design
    difference named by the architecture's view (hw_rejects/hw_uses), or a registered deviation."""
    assert _disagree_signatures(key) == {}


#: A configuration whose seeded campaigns save findings on the released code: Unicorn's arm64
#: deviations (block-oa-ored, contiguous-ignored, walk-outside-ram-reads-zero, ...) are saved
#: once per kind, as new kinds of emulator-deviation.
FINDINGS = "arm64:4k:48"


def test_broken_walker_is_caught_and_shrunk_to_one_entry_with_that_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test double of the walker whose pte_present() ignores _PAGE_PRESENT (the x86-64 numpy
    rules, which have their own copy of the predicates, are switched off so every walk goes
    through it): the campaign flags it, shrinks it to one PTE with the P bit, and saves a fixture
    that replays exactly (with the double still in place)."""
    present = X.PTE_4K.mask("p")
    monkeypatch.setattr(X.X86_64, "pte_present", lambda self, pte: bool(pte & X._PAGE_PROTNONE))
    monkeypatch.setattr(emu.mm.pagewalk_batch, "VECTOR_RULES", {})
    opts = CampaignOptions(configs=[X86], seed=3, seconds=None, hierarchies=2, jobs=0, out=tmp_path,
                           params=GenParams.bench(max_addrs=300), progress=False)
    res = run_campaign(opts)
    caught = [f for f in res.findings if f.verdict.startswith("disagree: Linux finds nothing (swap@pte")]
    assert caught, [f.verdict for f in res.findings]
    f = caught[0]
    spec = json.loads(Path(str(f.path).removesuffix("/") + ".hierarchy.json").read_text()
                      if not str(f.path).endswith(".json") else Path(str(f.path)).read_text())
    h = Hierarchy.from_json(spec["hierarchy"])
    fuzzed = h.fuzzed
    assert len(fuzzed) == 1 and f.fuzzed == 1
    (e,) = fuzzed
    assert archs.get_config(X86).levels[e.depth].linux == "pte"
    assert e.value & present
    assert e.value & X._PAGE_PROTNONE == 0
    assert all(not x.fuzzed for x in h.entries if x is not e)  # the rest: canonical table pointers
    assert len(h.addrs) == 1
    assert Path(str(f.path)).is_dir() and check_fixture_set(Path(str(f.path))) == []


def test_a_saved_finding_replays_exactly(tmp_path: Path) -> None:
    """A real campaign's finding (released code: an arm64 emulator deviation): its fixture set
    reproduces row for row through the fixtures API and through ``foliowalk fixtures check``."""
    opts = CampaignOptions(configs=[FINDINGS], seed=7, seconds=None, hierarchies=2, jobs=0, out=tmp_path,
                           params=SMALL, progress=False, max_findings=2)
    res = run_campaign(opts)
    saved = [f for f in res.findings if f.path and Path(f.path).is_dir()]
    assert saved, res.findings
    path = Path(saved[0].path or "")
    assert check_fixture_set(path) == []
    fs = load_fixture_set(path)
    sc = fs.to_scenario()
    try:
        rows = verify_scenario(sc)
    finally:
        sc.close()
    spec = json.loads((path.parent / f"{path.name}.hierarchy.json").read_text())
    assert any(signature(r.walk, r.mmu, r.verdict) == spec["signature"] for r in rows)
    assert cli.main(["fixtures", "check", str(path)]) == 0
    # The summary and the index of findings are there too.
    summary = json.loads((tmp_path / "campaign.json").read_text())
    assert summary["stats"]["cases"] == res.stats.cases
    assert (tmp_path / "findings.jsonl").read_text().count("\n") == len(res.findings)


def abort_on_3(index: int) -> None:
    """Test double: the emulator aborts the worker process (as s390x access-register mode does)."""
    if index == 3:
        os.abort()


def test_a_worker_that_aborts_does_not_stop_the_campaign(tmp_path: Path) -> None:
    opts = CampaignOptions(configs=[X86], seed=2, seconds=None, hierarchies=8, jobs=2, out=tmp_path,
                           params=SMALL, before_hierarchy=abort_on_3, progress=False, shrink=False,
                           max_findings=0)
    res = run_campaign(opts)
    crashes = [f for f in res.findings if f.kind == "crash"]
    assert res.crashes == 1 and len(crashes) == 1
    assert crashes[0].index == 3 and "SIGABRT" in crashes[0].verdict
    saved = json.loads(Path(crashes[0].path or "").read_text())
    gen = HierarchyGenerator(X86, params=SMALL)
    assert Hierarchy.from_json(saved["hierarchy"]) == gen.generate(2, 3)
    assert res.indices == [0, 1, 2, 4, 5, 6, 7]
    # --jobs does not change the cases: the same hierarchies as generated in this process.
    assert res.digest == campaign_digest({i: gen.generate(2, i).digest() for i in res.indices})
    assert not res.ok


def test_ctrl_c_stops_and_keeps_the_findings(tmp_path: Path) -> None:
    def interrupt(index: int) -> None:
        if index == 2:
            raise KeyboardInterrupt

    opts = CampaignOptions(configs=[FINDINGS], seed=7, seconds=None, hierarchies=50, jobs=0, out=tmp_path,
                           params=SMALL, before_hierarchy=interrupt, progress=False, max_findings=1)
    res = run_campaign(opts)
    assert res.interrupted and res.indices == [0, 1]
    assert json.loads((tmp_path / "campaign.json").read_text())["interrupted"] is True
    assert len(res.findings) == 1


def test_progress_line_and_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli.main(["fuzz", "--config", X86, "--hierarchies", "2", "--jobs", "0", "--seed", "1",
                     "--mix", "bench", "--no-shrink", "--max-findings", "0", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code in (0, 1)
    assert "cases" in err and "agree" in err  # the progress line
    assert "per core" in out and "cases/s" in out and "MMU fault rate" in out
    for cls in VERDICT_CLASSES:
        assert cls in out
    assert cli.main(["fuzz", "--config", X86, "--jobs", "-1"]) == 2


# -- Hypothesis strategies, used as a user would ------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries("x86_64", "pte"))
def test_user_decoder_accepts_every_pte(value: int) -> None:
    ops = archs.get_ops(X86)
    decoded = ops.decode("pte", value)  # type: ignore[attr-defined]
    assert decoded["format"] in {f.name for f in X.FORMATS}
    assert 0 <= value < 1 << 64


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hierarchies("x86_64", "4level", params=SMALL))
def test_user_walker_properties_on_random_hierarchies(h: Hierarchy) -> None:
    """What a user writes for their own walker: on any hierarchy, folio_walk_start() returns a
    folio exactly when it says "found", holds the PTL exactly while it returns one, gives the
    same answer twice, and leaves the tables as they were (bad entries it clears are undone)."""
    with materialize(h) as sc:
        before = sc.ram.snapshot(sc.builder.tables)
        with sc.mm.mmap_read():
            for case in sc.cases:
                with sc.ram.undo(), folio_walk(case.vma, case.addr) as fw:
                    assert (fw.folio is not None) == (fw.reason == "found")
                    assert (fw.ptl is not None and fw.ptl.is_locked()) == (fw.folio is not None)
                    first = (fw.folio, fw.page, fw.level, fw.entry, fw.reason)
                fw2 = FolioWalk()
                with sc.ram.undo():
                    if folio_walk_start(fw2, case.vma, case.addr) is not None:
                        folio_walk_end(fw2, case.vma)
                assert fw2.ptl is None
                assert (fw2.folio, fw2.page, fw2.level, fw2.entry, fw2.reason) == first
        assert sc.ram.snapshot(sc.builder.tables) == before


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hierarchies("x86_64:5level", params=GenParams.bench(max_tables=6, max_addrs=60)))
def test_user_checks_walk_against_mmu(h: Hierarchy) -> None:
    with materialize(h, oracle=True) as sc:
        rows = verify_scenario(sc)
        assert len(rows) == 4 * len(sc.cases)
        for r in rows:
            assert r.verdict == judge(sc.ops, r.walk, r.mmu, sc.oracle)
            if r.walk.found and r.walk.kind == "normal" and isinstance(r.mmu, Translation):
                assert r.mmu.pa == r.walk.expected_pa or r.verdict.startswith("disagree")
