"""Walk vs MMU on x86-64: the default scenarios (4- and 5-level) give the verdicts the semantics
call for, and 10,000 random mapped/unmapped addresses all agree."""

from __future__ import annotations

import random

import pytest

import archs
from archs.linux import Prot
from emu.machines.base import Fault, Translation
from emu.mm.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, VMA
from emu.mm.scenarios import Case, Scenario, build_default
from emu.verify import Row, verify_configs, verify_scenario
from tests.verify.default_verdicts import expected_verdict

CONFIGS = ["x86_64:4level", "x86_64:5level"]


@pytest.fixture(scope="module", params=CONFIGS)
def rows(request: pytest.FixtureRequest) -> list[Row]:
    return verify_configs([request.param]).rows


def test_default_scenario_verdicts(rows: list[Row]) -> None:
    assert len({r.case for r in rows}) >= 24
    for r in rows:
        assert r.verdict == expected_verdict(r.case, r.walk.flags), (r.case, r.walk.flags, r.verdict)


def test_mapped_cases_reach_the_page_linux_reports(rows: list[Row]) -> None:
    for r in rows:
        if r.walk.found and r.walk.kind == "normal" and isinstance(r.mmu, Translation):
            # The MMU's physical address (seen through a tag word) is exactly the page Linux
            # reported, at the address's offset within the page.
            assert r.mmu.observed_by == "tag"
            assert r.mmu.pa == (r.walk.page_pfn << 12) | (r.addr & 0xFFF)


def test_not_present_cases_fault_as_not_present(rows: list[Row]) -> None:
    for r in rows:
        if r.walk.reason.startswith(("none@", "swap@", "migration-entry@")) or r.walk.kind == "migration-entry":
            assert isinstance(r.mmu, Fault) and r.mmu.kind == "page-fault"
            assert r.mmu.code & 1 == 0  # SDM §4.7: P=0, the fault came from a not-present entry


def test_every_level_and_kind_is_covered(rows: list[Row]) -> None:
    levels = {r.walk.level for r in rows if r.walk.found}
    assert levels == {"PTE", "PMD", "PUD"}
    kinds = {r.walk.kind for r in rows if r.walk.found}
    assert kinds == {"normal", "zero-page", "huge-zero-page", "migration-entry"}
    none_levels = {r.walk.reason for r in rows if r.walk.reason.startswith("none@")}
    assert {"none@pud", "none@pmd", "none@pte"} <= none_levels


def test_seed_kernel_misses_pmd_migration_entries() -> None:
    rows = verify_configs(["x86_64:4level"], kernel="aa39ca6940f1").rows
    pmd_migration = [r for r in rows if "migration entry" in r.case and "PMD" in r.case]
    assert pmd_migration and all(not r.walk.found and r.verdict == "agree" for r in pmd_migration)


@pytest.mark.parametrize("config", CONFIGS)
def test_ten_thousand_random_addresses_agree(config: str) -> None:
    rng = random.Random(20241117)
    ops = archs.get_ops(config)
    sc: Scenario = build_default(ops)
    try:
        base = 0x7E00_0000_0000 if config.endswith("4level") else 0x00FE_0000_0000_0000
        span = 1 << 34
        vma = sc.mm.add_vma(VMA(base, base + span, VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE, name="random"))
        mapped: list[tuple[int, int]] = []
        used: set[int] = set()
        for size, order, count, linux in ((1 << 30, 18, 2, "pud"), (1 << 21, 9, 24, "pmd"), (1 << 12, 0, 1500, "pte")):
            for _ in range(count):
                va = base + rng.randrange(span // size) * size
                if any(va < u + (1 << 30) and u < va + size for u in used if size == 1 << 30) or va in used:
                    continue
                try:
                    folio = sc.builder.alloc_folio(order, tag=order == 0)
                    sc.builder.map_folio(va, folio, Prot(write=rng.random() < 0.5), linux=linux)
                except Exception:  # overlaps an earlier, larger mapping: pick another spot
                    continue
                used.add(va)
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
        assert not bad, bad[:3]
        assert sum(isinstance(r.mmu, Translation) for r in rows) >= 5_000
        assert sum(isinstance(r.mmu, Fault) for r in rows) >= 1_000
    finally:
        sc.close()
