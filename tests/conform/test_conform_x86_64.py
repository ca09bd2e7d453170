"""x86-64 MMU conformance (issue 18): hand-built cases whose expectations are written from the
Intel SDM vol. 3A (§4.6.1 access rights, §4.7 #PF error code, §4.8 Accessed/Dirty), each run
through the model (archs.x86_64.translate / accessed_dirty) and through Unicorn's MMU; the
conformance runner catches a wrong model; the CLI as a subprocess on a small sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archs import x86_64 as X
from archs.translate import Fault, Translation, entries_reader
from emu.conform import x86_64 as C
from emu.errors import ConfigError
from emu.machines.base import Access
from emu.machines.base import Fault as MFault
from emu.machines.base import Translation as MTranslation

ROOT = Path(__file__).resolve().parents[2]
P, W, U, A, D, PS, XD = 1, 2, 4, 0x20, 0x40, 0x80, 1 << 63
KR, KW, KF = Access("read"), Access("write"), Access("fetch")
UR, UW, UF = Access("read", True), Access("write", True), Access("fetch", True)
ON = dict(nxe=True, wp=True, smep=False, smap=False, ac=False)


# (why, from the SDM; pde flags (None: 2-MByte leaf flags in "pte"); pte flags; access; cpu;
#  expected: ("ok", None) or ("pf", error code); PDE (A, D) after; PTE (A, D) after, as the manual
#  says -- the machine's write probe loads first, see MACHINE_AD below)
CASES = [
    ("§4.6.1: with CR0.WP=0 a supervisor write to a read-only page is allowed; §4.8: A in both, D in the leaf",
     P | W | U, P, KW, dict(ON, wp=False), ("ok", None), (1, 0), (1, 1)),
    ("§4.6.1: with CR0.WP=1 it needs R/W=1; §4.7 error code P|W; §4.8: the leaf's A/D untouched",
     P | W | U, P, KW, ON, ("pf", 0x3), (None, 0), (0, 0)),
    ("§4.6.1: CPL 3 may not read a supervisor-mode address (U/S=0 in the PTE); code P|U",
     P | W | U, P | W, UR, ON, ("pf", 0x5), (None, 0), (0, 0)),
    ("§4.6.1: R/W is combined over every level: R/W=0 in the PDE forbids a user write; code P|W|U",
     P | U, P | W | U, UW, ON, ("pf", 0x7), (None, 0), (0, 0)),
    ("§4.6.1: CR4.SMEP forbids a supervisor fetch from a user-mode address; code P|I/D",
     P | W | U, P | U, KF, dict(ON, smep=True), ("pf", 0x11), (None, 0), (0, 0)),
    ("§4.6.1: without SMEP the same fetch is allowed; §4.8: A set, D not (no write)",
     P | W | U, P | U, KF, ON, ("ok", None), (1, 0), (1, 0)),
    ("§4.6.1: XD=1 with NXE forbids a user fetch; code P|U|I/D",
     P | W | U, P | W | U | XD, UF, ON, ("pf", 0x15), (None, 0), (0, 0)),
    ("§4.5.4: XD is a reserved bit without NXE; code P|U|RSVD, no I/D for a read",
     P | W | U, P | W | U | XD, UR, dict(ON, nxe=False), ("pf", 0xD), (None, 0), (0, 0)),
    ("§4.7: I/D is set for a fetch only with NXE or SMEP: a not-present fetch without them has code 0",
     P | W | U, 0, KF, dict(ON, nxe=False), ("pf", 0x0), (None, 0), (0, 0)),
    ("§4.7: ... and with NXE the same fetch has code I/D",
     P | W | U, 0, KF, ON, ("pf", 0x10), (None, 0), (0, 0)),
    ("Table 4-18: bit 13 is reserved in a 2-MByte PDE; code P|RSVD",
     None, P | W | U | (1 << 13), KR, ON, ("pf", 0x9), (0, 0), None),
    ("§4.8: a write through a 2-MByte PDE sets its A and D",
     None, P | W, KW, ON, ("ok", None), (1, 1), None),
    ("§4.6.1: CR4.SMAP with EFLAGS.AC=0 forbids a supervisor read of a user-mode address; code P",
     P | W | U, P | W | U, KR, dict(ON, smap=True), ("pf", 0x1), (None, 0), (0, 0)),
    ("§4.6.1: EFLAGS.AC=1 lifts SMAP for explicit supervisor data accesses: the write is allowed",
     P | W | U, P | W | U, KW, dict(ON, smap=True, ac=True), ("ok", None), (1, 0), (1, 1)),
    ("§4.6.1: SMAP restricts data accesses only: a supervisor fetch from a user-mode address is allowed",
     P | W | U, P | W | U, KF, dict(ON, smap=True), ("ok", None), (1, 0), (1, 0)),
    ("§4.8: a user write sets A in the PDE (not D: bit 6 of a table PDE is ignored) and A, D in the PTE",
     P | W | U, P | W | U, UW, ON, ("ok", None), (1, 0), (1, 1)),
]
IDS = [f"{i}-{c[0].split(':')[0]}" for i, c in enumerate(CASES)]


@pytest.fixture(scope="module")
def runner():
    r = C.Runner()
    yield r
    r.close()


def _entries(runner: C.Runner, case: tuple) -> tuple[int, int, int, int]:
    _why, pde_f, pte_f, _acc, cpu, *_ = case
    root, pde_pa, pte_pa, frame = runner.tables(cpu["nxe"])
    if pde_f is None:
        return root, pde_pa, frame | pte_f | PS, 0
    return root, pde_pa, pte_pa | pde_f, (frame | pte_f) if pte_f else 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_model_follows_the_sdm(runner: C.Runner, case: tuple) -> None:
    _why, _pdef, _ptef, access, cpu, (outcome, code), pde_ad, pte_ad = case
    root, pde_pa, pde, pte = _entries(runner, case)
    _m, ram, *_ = runner._machine(cpu["nxe"])
    pdpt = ram.read_u64(root) & X.PTE_PFN_MASK
    entries = {root: ram.read_u64(root), pdpt: ram.read_u64(pdpt), pde_pa: pde}
    if pte:
        entries[pde & X.PTE_PFN_MASK] = pte
    res = X.translate("x86_64:4level", entries_reader(entries), 0, access, cr3=root, cpu=cpu)
    if outcome == "ok":
        assert isinstance(res, Translation), res
    else:
        assert isinstance(res, Fault) and res.kind == "page-fault" and res.code == code, res
    ad = {lv: (a, d) for lv, a, d in X.accessed_dirty(res, access)}
    for lv, want, before in (("PD", pde_ad, pde), ("PT", pte_ad, pte)):
        if want is None:
            assert lv not in ad or isinstance(res, Fault)
            continue
        for flag, w, bit in (("A", want[0], A), ("D", want[1], D)):
            got = ad[lv][0 if flag == "A" else 1]
            if w is None:
                assert got == X.AD_OPEN, (lv, flag, got)
            elif w:
                assert got == X.AD_SET or (got == X.AD_KEEP and before & bit), (lv, flag, got)
            else:
                assert got == X.AD_KEEP and not before & bit, (lv, flag, got)


# The machine probes a write as "load, then store back" (emu/machines/x86_64): where the write
# faults but a read would not, the load has set A already (§4.8 for the read).
MACHINE_AD = {1: (1, (1, 0)), 3: (1, (1, 0))}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unicorn_follows_the_sdm(runner: C.Runner, case: tuple) -> None:
    _why, _pdef, _ptef, access, cpu, (outcome, code), pde_ad, pte_ad = case
    _root, _pde_pa, pde, pte = _entries(runner, case)
    res, pde_after, pte_after = runner.probe_one(pde, pte, access, cpu)
    if outcome == "ok":
        assert isinstance(res, MTranslation), res
        assert res.pa == runner.tables(cpu["nxe"])[3]
    else:
        assert isinstance(res, MFault) and res.code == code, res
    i = CASES.index(case)
    if i in MACHINE_AD:
        pde_ad = (MACHINE_AD[i][0], pde_ad[1])
        pte_ad = MACHINE_AD[i][1]
    for want, after in ((pde_ad, pde_after), (pte_ad, pte_after)):
        if want is None:
            continue
        for w, bit in zip(want, (A, D), strict=True):
            if w is not None:
                assert bool(after & bit) == bool(w), (hex(after), bit, w)


def test_set_controls_reach_the_cpu(runner: C.Runner) -> None:
    machine = runner._machine(True)[0]
    machine.set_controls(wp=False, smep=True)
    regs = machine.registers()
    assert not regs["CR0"] & (1 << 16) and regs["CR4"] & (1 << 20)
    machine.set_controls(wp=True, smep=False)
    regs = machine.registers()
    assert regs["CR0"] & (1 << 16) and not regs["CR4"] & (1 << 20)
    machine.set_controls(smap=True)
    assert machine.registers()["CR4"] & (1 << 21)
    with pytest.raises(ConfigError, match="user probes"):
        machine.probe(0, UR)
    machine.set_controls(smap=False)
    assert not machine.registers()["CR4"] & (1 << 21)


def test_space_size() -> None:
    assert C.RAW_SIZE == 2**5 * 6 * 2**8 * 2**7
    # NXE x WP x SMEP x (SMAP, AC) in {(0,0), (1,0), (1,1)}, SMAP only at CPL 0; PS=1: no PTE bits
    assert C.SIZE == (8 * 3 * 3 + 8 * 3) * (2**7 * 2**7 + 2**7) == 1_585_152
    assert len({C.Case(i).describe() for i in range(0, C.SIZE, 997)}) == len(range(0, C.SIZE, 997))


def test_sample_agrees_and_a_wrong_model_is_caught(runner: C.Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = C.select(sample=1500, seed=7)
    rep = runner.run(cases, C.Report())
    assert rep.run == 1500 and not rep.mismatches, [m.to_json() for m in rep.mismatches[:3]]
    right = C.expected
    monkeypatch.setattr(C, "expected", lambda read, va, access, cr3, cpu: right(read, va, access, cr3,
                                                                               dict(cpu, wp=not cpu["wp"])))
    rep = runner.run(cases, C.Report())
    assert rep.unexplained and {m.field for m in rep.unexplained} <= {"code", "outcome", "PT.A", "PT.D", "PD.A", "PD.D"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", "conform", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)


def test_cli_sample_json() -> None:
    res = _cli("--arch", "x86_64", "--sample", "300", "--seed", "1", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["space"]["size"] == C.SIZE and out["run"] == 300 and out["agree"] == 300
    assert out["mismatches_by_class"] == {} and out["cases_per_second"] > 0
    assert "CR4.SMAP with CPL-3 accesses" in out["space"]["out"] and "SMAP" in out["space"]["in"]["CPU"]


def test_cli_table_and_bad_input() -> None:
    res = _cli("--arch", "x86_64", "--limit", "100")
    assert res.returncode == 0, res.stderr
    assert "1,585,152 cases" in res.stdout and "ran 100 of 1585152 cases" in res.stdout
    assert "100/100 cases" in res.stderr  # the progress line
    for bad in (["--arch", "x86_64", "--sample", "0"], ["--arch", "sparc"],
                ["--arch", "x86_64", "--sample", "5", "--limit", "5"], ["--arch", "x86_64", "--sample", "x"]):
        res = _cli(*bad)
        assert res.returncode == 2 and res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, (bad, res.stderr)


def test_cli_ctrl_c_keeps_the_results() -> None:
    """Ctrl-C once cases have run (the progress line says so, however slow the start-up was):
    exit 130 with the partial report."""
    import re
    import select
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "emu", "conform", "--arch", "x86_64"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, deadline = "", time.monotonic() + 300
    try:
        while not re.search(r"conform x86_64: [1-9]\d*/", seen):
            assert time.monotonic() < deadline and proc.poll() is None, f"no progress line: {seen!r}"
            if select.select([proc.stderr], [], [], 1.0)[0]:
                seen += os.read(proc.stderr.fileno(), 4096).decode()  # type: ignore[union-attr]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    ran = re.search(r"ran (\d+) of (\d+) cases \(interrupted\) in .*?: (\d+) agree, 0 mismatches", out)
    assert ran, out
    assert 0 < int(ran[1]) < C.SIZE == int(ran[2]) and int(ran[3]) == int(ran[1])


def test_cli_workers_give_the_same_report() -> None:
    def outcome(*extra: str) -> dict:
        res = _cli("--arch", "x86_64", "--sample", "400", "--seed", "5", "--json", *extra)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        return {k: v for k, v in out.items() if k not in ("seconds", "cases_per_second", "ran_on")}

    two, one = outcome("--workers", "2"), outcome()
    assert two == one and two["digest"] == one["digest"]


def test_unicorn_sets_upper_accessed_on_a_faulting_access(runner: C.Runner) -> None:
    """What the manual leaves open (accessed_dirty: AD_OPEN) and docs/conform.md reports as
    measured: Unicorn sets A in the PDE a faulting access walked through (QEMU sets A level by
    level during the walk); the not-present PTE is left alone."""
    root, _pde_pa, pte_pa, _frame = runner.tables(True)
    res, pde_after, pte_after = runner.probe_one(pte_pa | P | W | U, 0, KR, ON)
    assert isinstance(res, MFault) and res.code == 0
    assert pde_after & A and pte_after == 0
