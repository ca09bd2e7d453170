"""The manual's walk (archs.<arch>.translate) on the tables of foliowalk's default scenarios --
every Linux entry kind, built by the page-table builder -- against the scenario's own MMU oracle
(the answers ``foliowalk verify`` prints in its MMU column): every address agrees, or differs by a
registered deviation that names itself; never ``disagree``."""

from __future__ import annotations

import pytest

import archs
from emu.machines.base import READ, WRITE, Access
from emu.mm.scenarios import build_default
from emu.translate import TRANSLATORS, judge


def _roots(sc, half: str) -> tuple[dict[str, int], dict[str, object]]:  # type: ignore[no-untyped-def]
    arch = sc.ops.arch
    if arch == "x86_64":
        return {"cr3": sc.mm.pgd}, {}
    if arch == "arm64":
        return ({"ttbr1": sc.mm.pgd} if half == "high" else {"ttbr0": sc.mm.pgd}), {}
    machine = sc.oracle.machine
    cpu = {"storage_size": sc.ram.size, "edat1": machine.edat1_works, "edat2": machine.edat2_works}
    return {"asce": sc.oracle.asce(sc.mm)}, cpu


@pytest.mark.parametrize("key, half", [("x86_64:4level", "low"), ("x86_64:5level", "low"),
                                       ("arm64:4k:48", "low"), ("arm64:4k:48", "high"), ("arm64:16k:47", "low"),
                                       ("arm64:64k:42", "high"), ("s390x:region3", "low"), ("s390x:region1", "low"),
                                       ("s390x:segment", "low")])
@pytest.mark.parametrize("access", [READ, WRITE, Access("read", user=True)], ids=str)
def test_manual_matches_the_scenario_mmu(key: str, half: str, access: Access) -> None:
    ops = archs.get_ops(key)
    sc = build_default(ops, half=half)
    try:
        sc.oracle.attach(sc.mm)
        roots, cpu = _roots(sc, half)
        addrs = [c.addr for c in sc.cases]
        mmu = sc.oracle.probe_many(addrs, access)
        verdicts = []
        for addr, got in zip(addrs, mmu, strict=True):
            manual = TRANSLATORS[ops.arch](key, sc.ram.read_u64, addr, access, cpu=cpu or None, **roots)
            verdicts.append((hex(addr), judge(ops, manual, got), str(manual)))
        assert [v for v in verdicts if v[1] != "agree" and not v[1].startswith("emulator-deviation: ")] == []
        assert sum(v[1] == "agree" for v in verdicts) >= len(verdicts) - 2, verdicts
    finally:
        sc.close()
