"""arm64 MMU conformance (issue 18): hand-built cases whose expectations are written from the Arm
ARM DDI 0487 (D8.4 "Memory access control": AP[2:1], the hierarchical APTable/UXNTable/PXNTable,
UXN/PXN, SCTLR_EL1.WXN, PSTATE.PAN; D8 "The Access flag"; the PAR_EL1/ESR_ELx fault status
codes 0b0001LL translation, 0b0010LL access flag, 0b0011LL permission), each run through the
model (archs.arm64.translate / access_flag) and through Unicorn's MMU; a small sample of the space
agrees and a wrong model is caught; real EL1 loads under PAN agree with AT S1E1RP; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from archs import arm64 as A
from archs.translate import Fault, Translation, entries_reader
from emu.conform import arm64 as C
from emu.machines.base import Fault as MFault
from emu.machines.base import Translation as MTranslation

ROOT = Path(__file__).resolve().parents[2]
PR = {p.insn or p.name.split(" (")[0] + ("P" if p.at in ("S1E1RP", "S1E1WP") else ""): p for p in C.PROBES}
# "EL1 read", "EL1 write", "EL1 readP" (AT S1E1RP), "EL1 writeP", "EL1 fetch", "EL0 read", ...,
# "LDR", "STR", "LDTR", "STTR" (real instructions at EL1)
OFF = dict(pan=False, wxn=False, ha=False, hpd=False)
# Fault status codes by hand (D19 PAR_EL1.FST / ESR_ELx ISS.DFSC): kind in bits 5:2, level in 1:0.
PERM_L3, PERM_L2, AF_L3, AF_L2, TRANS_L3, TRANS_L2, TRANS_L1 = 0x0F, 0x0E, 0x0B, 0x0A, 0x07, 0x06, 0x05

# (why; leaf kind; table flags; leaf flags; probe; cpu; expected: "ok" or the FST)
CASES = [
    ("AP[2:1]=00: EL1 read/write, no EL0 access", "page", "V", "V AF", "EL1 write", OFF, "ok"),
    ("AP[2:1]=00: EL0 has no access: Permission fault level 3", "page", "V", "V AF", "EL0 read", OFF, PERM_L3),
    ("AP[2:1]=01: EL0 read/write", "page", "V", "V AF AP1", "EL0 write", OFF, "ok"),
    ("AP[2:1]=01: a page EL0 can write is PXN at EL1", "page", "V", "V AF AP1", "EL1 fetch", OFF, PERM_L3),
    ("AP[2:1]=10: EL1 read-only", "page", "V", "V AF AP2", "EL1 write", OFF, PERM_L3),
    ("AP[2:1]=10: no EL0 access", "page", "V", "V AF AP2", "EL0 read", OFF, PERM_L3),
    ("AP[2:1]=11: EL0 read-only", "page", "V", "V AF AP1 AP2", "EL0 read", OFF, "ok"),
    ("AP[2:1]=11: no EL0 write", "page", "V", "V AF AP1 AP2", "EL0 write", OFF, PERM_L3),
    ("APTable[0]=1: no EL0 access below, whatever AP[1]", "page", "V APTable0", "V AF AP1", "EL0 read", OFF, PERM_L3),
    ("APTable[0]=1 leaves EL1 access alone", "page", "V APTable0", "V AF AP1", "EL1 write", OFF, "ok"),
    ("APTable[1]=1: read-only below at EL1", "page", "V APTable1", "V AF AP1", "EL1 write", OFF, PERM_L3),
    ("APTable[1]=1: read-only below at EL0 (block: fault at level 2)", "block", "V APTable1", "V AF AP1",
     "EL0 write", OFF, PERM_L2),
    ("APTable[1]=1 still lets EL0 read", "block", "V APTable1", "V AF AP1", "EL0 read", OFF, "ok"),
    ("EL0 execute is UXN alone: AP[1]=0 with UXN=0 is execute-only at EL0", "page", "V", "V AF", "EL0 fetch", OFF,
     "ok"),
    ("UXN=1: EL0 execute-never", "page", "V", "V AF AP1 AP2 UXN", "EL0 fetch", OFF, PERM_L3),
    ("UXNTable=1: EL0 execute-never below", "page", "V UXNTable", "V AF AP1 AP2", "EL0 fetch", OFF, PERM_L3),
    ("UXNTable=1 leaves EL1 execution alone", "page", "V UXNTable", "V AF AP1 AP2", "EL1 fetch", OFF, "ok"),
    ("PXNTable=1: EL1 execute-never below", "block", "V PXNTable", "V AF", "EL1 fetch", OFF, PERM_L2),
    ("PXN=1 leaves EL0 execution alone", "page", "V", "V AF AP1 AP2 PXN", "EL0 fetch", OFF, "ok"),
    ("SCTLR_EL1.WXN: EL1-writable is EL1 execute-never", "page", "V", "V AF", "EL1 fetch", dict(OFF, wxn=True),
     PERM_L3),
    ("SCTLR_EL1.WXN: a read-only page stays executable", "page", "V", "V AF AP2", "EL1 fetch", dict(OFF, wxn=True),
     "ok"),
    ("SCTLR_EL1.WXN: EL0-writable is EL0 execute-never", "page", "V", "V AF AP1", "EL0 fetch", dict(OFF, wxn=True),
     PERM_L3),
    ("... and without WXN the same EL0 fetch is allowed", "page", "V", "V AF AP1", "EL0 fetch", OFF, "ok"),
    ("PSTATE.PAN: AT S1E1RP of an EL0-readable page faults", "page", "V", "V AF AP1 AP2", "EL1 readP",
     dict(OFF, pan=True), PERM_L3),
    ("PSTATE.PAN: AT S1E1WP of an EL0-writable page faults", "page", "V", "V AF AP1", "EL1 writeP",
     dict(OFF, pan=True), PERM_L3),
    ("PSTATE.PAN does not apply to AT S1E1R", "page", "V", "V AF AP1 AP2", "EL1 read", dict(OFF, pan=True), "ok"),
    ("AT S1E1RP with PSTATE.PAN=0: no PAN check", "page", "V", "V AF AP1 AP2", "EL1 readP", OFF, "ok"),
    ("PAN looks at EL0 access after APTable[0]: none, so no PAN fault", "page", "V APTable0", "V AF AP1 AP2",
     "EL1 readP", dict(OFF, pan=True), "ok"),
    ("PAN does not apply to instruction fetches", "page", "V", "V AF AP1 AP2", "EL1 fetch", dict(OFF, pan=True), "ok"),
    ("AF=0: Access flag fault, before the Permission fault the write would take", "page", "V", "V AP2", "EL0 write",
     OFF, AF_L3),
    ("AF=0 in a block: Access flag fault level 2", "block", "V", "V AP1", "EL1 fetch", OFF, AF_L2),
    ("TCR_EL1.HA without FEAT_HAFDBS (RES0): still an Access flag fault", "page", "V", "V AP1", "EL0 read",
     dict(OFF, ha=True), AF_L3),
    ("AF=0 in an invalid leaf: Translation fault level 3", "page", "V", "AF AP1", "EL0 read", OFF, TRANS_L3),
    ("TCR_EL1.HPD0=1: APTable is ignored", "page", "V APTable0 APTable1", "V AF AP1", "EL0 write",
     dict(OFF, hpd=True), "ok"),
    ("TCR_EL1.HPD0=1: UXNTable/PXNTable are ignored", "block", "V UXNTable PXNTable", "V AF", "EL1 fetch",
     dict(OFF, hpd=True), "ok"),
    ("TCR_EL1.HPD0=1 leaves the leaf's own AP and XN", "page", "V", "V AF AP1 UXN", "EL0 fetch",
     dict(OFF, hpd=True), PERM_L3),
    ("a real EL1 load of an EL1-only page", "page", "V", "V AF", "LDR", OFF, "ok"),
    ("PSTATE.PAN: a real EL1 load of an EL0-readable page faults", "page", "V", "V AF AP1 AP2", "LDR",
     dict(OFF, pan=True), PERM_L3),
    ("PSTATE.PAN: a real EL1 store to an EL0-writable page faults", "block", "V", "V AF AP1", "STR",
     dict(OFF, pan=True), PERM_L2),
    ("a real EL1 store to a read-only page faults", "page", "V APTable1", "V AF", "STR", OFF, PERM_L3),
    ("LDTR at EL1 is checked with EL0's permissions: AP[2:1]=00 faults", "page", "V", "V AF", "LDTR", OFF,
     PERM_L3),
    ("LDTR at EL1 is not PAN-checked", "page", "V", "V AF AP1 AP2", "LDTR", dict(OFF, pan=True), "ok"),
    ("STTR at EL1: EL0 read-only (AP[2:1]=11) faults", "page", "V", "V AF AP1 AP2", "STTR", OFF, PERM_L3),
    ("STTR at EL1 to an EL0-writable page, PAN on: allowed", "page", "V", "V AF AP1", "STTR", dict(OFF, pan=True),
     "ok"),
    ("STTR: APTable[0]=1 takes EL0's access", "page", "V APTable0", "V AF AP1", "STTR", OFF, PERM_L3),
    ("a real load of an AF=0 page: Access flag fault", "page", "V", "V AP1", "LDR", OFF, AF_L3),
    ("invalid table descriptor at level 2: Translation fault level 2", "page", "", "", "EL1 read", OFF, TRANS_L2),
    ("invalid table descriptor at level 1 above a block: Translation fault level 1", "block", "", "", "EL1 fetch",
     OFF, TRANS_L1),
]
IDS = [f"{i}-{c[0].split(':')[0][:30]}" for i, c in enumerate(CASES)]


def _word(dims: tuple[str, ...], names: str) -> int:
    on = set(names.split())
    assert on <= set(dims), on - set(dims)
    return sum(1 << i for i, n in enumerate(dims) if n in on)


@pytest.fixture(scope="module")
def runner():
    r = C.Runner()
    yield r
    r.close()


def _descriptors(runner: C.Runner, leaf: str, tflags: str, lflags: str) -> tuple[int, int, int]:
    """(level-1 entry, level-2 entry 0, level-3 entry 0) of the first case slot."""
    _l0, _l1_pa, mid, low, frame = runner.tables()
    tw, lw = _word(C.TABLE_DIMS, tflags), _word(C.LEAF_DIMS, lflags)
    if leaf == "block":
        return C.table_value(tw, mid), C.leaf_value(lw, frame, block=True), 0
    return mid | 3, C.table_value(tw, low), C.leaf_value(lw, frame, block=False)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_model_follows_the_arm_arm(runner: C.Runner, case: tuple) -> None:
    _why, leaf, tflags, lflags, probe, cpu, want = case
    l0, l1_pa, mid, low, _frame = runner.tables()
    l1, l2, l3 = _descriptors(runner, leaf, tflags, lflags)
    _m, ram, *_ = runner._machine()
    read = entries_reader({l0: ram.read_u64(l0), l1_pa: l1, mid: l2, low: l3})
    res, af = C.expected(read, C.VA_OFFSET, PR[probe], l0, cpu, hafdbs=False)
    if want == "ok":
        assert isinstance(res, Translation), res
    else:
        assert isinstance(res, Fault) and res.code == want, res
    assert set(af.values()) == {A.AF_KEEP}  # no hardware AF update: nothing is written


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unicorn_follows_the_arm_arm(runner: C.Runner, case: tuple) -> None:
    _why, leaf, tflags, lflags, probe, cpu, want = case
    before = list(_descriptors(runner, leaf, tflags, lflags))
    res, after = runner.probe_one(*before, PR[probe], cpu)
    if want == "ok":  # a load reaches the tagged word at the PA the model gives
        assert isinstance(res, MTranslation) and res.pa == runner.tables()[4] + C.VA_OFFSET, res
    else:
        assert isinstance(res, MFault) and res.code == want, res
    assert after == before  # the MMU wrote no descriptor


def test_hardware_access_flag_in_the_model() -> None:
    """D8 'Hardware management of the Access flag': with TCR_EL1.HA=1 on a PE with FEAT_HAFDBS an
    access to an AF=0 page completes and sets AF; a Permission fault leaves it open
    (AArch64.SettingAccessFlagPermitted); HA=1 without FEAT_HAFDBS is RES0: the fault stays."""
    read = entries_reader({0x1000: 0x2000 | 3, 0x2000: 0x3000 | 3, 0x3000: 0x4000 | 3,
                           0x4000: 0x5000 | 3 | C._AP1 | C._AP2})  # VA 0: L0..L2 tables, L3 page AF=0
    on = {"ha": True, "hafdbs": True}
    res = A.translate(C.CONFIG, read, 0x10, "user-read", ttbr0=0x1000, cpu=on)
    assert isinstance(res, Translation) and res.pa == 0x5010
    assert A.access_flag(res, on) == (("L0", A.AF_KEEP), ("L1", A.AF_KEEP), ("L2", A.AF_KEEP), ("L3", A.AF_SET))
    res = A.translate(C.CONFIG, read, 0x10, "user-write", ttbr0=0x1000, cpu=on)
    assert isinstance(res, Fault) and res.code == PERM_L3 and A.access_flag(res, on)[-1] == ("L3", A.AF_OPEN)
    res = A.translate(C.CONFIG, read, 0x10, "user-read", ttbr0=0x1000, cpu={"ha": True})
    assert isinstance(res, Fault) and res.code == AF_L3 and A.access_flag(res, {"ha": True})[-1] == ("L3", A.AF_KEEP)


def test_unicorn_max_has_pan2_hpds_and_no_hafdbs(runner: C.Runner) -> None:
    """The facts the space rests on (D19 ID_AA64MMFR1_EL1): PAN = 2 (FEAT_PAN2, AT S1E1RP/WP),
    HPDS = 1 (TCR_EL1.HPDn), HAFDBS = 0 (so TCR_EL1.HA is RES0 and the model expects Access flag
    faults)."""
    machine = runner._machine()[0]
    mmfr1 = machine.id_aa64mmfr1()
    assert mmfr1 >> 20 & 0xF == 2 and mmfr1 >> 12 & 0xF == 1 and mmfr1 & 0xF == 0 and not runner.hafdbs


def test_real_el1_loads_under_pan_agree_with_at_s1e1rp() -> None:
    """A real EL1 load (LDR at EL1 through the tables) under PSTATE.PAN takes the same Permission
    fault as AT S1E1RP on an EL0-readable page, and loads the tagged word on an EL1-only page."""
    from unicorn.arm64_const import UC_CPU_ARM64_MAX

    from emu.machines.arm64 import Arm64Machine
    from emu.machines.base import Access
    from emu.machines.ram import FrameAllocator, PhysicalMemory

    ram = PhysicalMemory(4 << 20)
    alloc = FrameAllocator(ram)
    m = Arm64Machine(ram, alloc, cpu_model=UC_CPU_ARM64_MAX)
    try:
        tables = [alloc.alloc(4096, 4096) for _ in range(5)]
        for t in tables:
            ram.write(t, bytes(4096))
        l0, l1, l2, l3, data = tables
        ram.tag(data, 4096)
        ram.write_u64(l0, l1 | 3)
        ram.write_u64(l1, l2 | 3)
        ram.write_u64(l2, l3 | 3)
        ram.write_u64(l3 + 8, data | 3 | C._AF | C._AP1 | C._AP2)  # VA 0x1000: EL0 read-only
        ram.write_u64(l3 + 16, data | 3 | C._AF | C._AP2)  # VA 0x2000: EL1 read-only
        ram.write_u64(l3 + 24, m.code_pa | 3 | C._AF | C._AP2)  # VA 0x3000: the load stub, EL1 code
        m.set_roots(l0, None)
        stub = 0x3000 + (m.load_stub_pa - m.code_pa)
        for pan in (False, True):
            m.set_pan(pan)
            for va, el0_readable in ((0x1010, True), (0x2010, False)):
                load = m.load_u64(va, stub_va=stub)
                at = m.probe(va, Access("read"))  # AT S1E1RP while PAN is on
                if pan and el0_readable:
                    assert isinstance(load, MFault) and load.code == PERM_L3 and at == MFault("permission", 3,
                                                                                               PERM_L3, 0)
                else:
                    assert load == ram.read_u64(data + 0x10) and isinstance(at, MTranslation)
    finally:
        m.close()


def test_space_size() -> None:
    assert C.RAW_SIZE == 2 * 2**5 * 2**6 * 12 * 16 == 786_432
    # an invalid table descriptor (V=0): only the all-0 leaf word
    assert C.SIZE == 2 * (2**4 * 2**6 + 2**4) * 12 * 16 == 399_360
    assert len({C.Case(i).describe() for i in range(0, C.SIZE, 331)}) == len(range(0, C.SIZE, 331))


def test_sample_agrees_and_a_wrong_model_is_caught(runner: C.Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = C.select(sample=800, seed=3)
    rep = runner.run(cases, C.Report())
    assert rep.run == 800 and not rep.mismatches, [m.to_json() for m in rep.mismatches[:3]]
    right = C.model_cpu
    monkeypatch.setattr(C, "model_cpu", lambda cpu, probe, hafdbs: dict(right(cpu, probe, hafdbs), pan=False))
    rep = runner.run(cases, C.Report())
    assert rep.unexplained and {m.field for m in rep.unexplained} == {"outcome"}
    assert {C.Case(m.case).probe.pan_checked for m in rep.unexplained} == {True}  # AT S1E1RP/WP, LDR, STR


def test_the_digest_is_of_the_outcomes_not_of_the_slots(runner: C.Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    """emu.conform.digest: the same cases run in one batch and in two (odd and even positions:
    every other case in another slot, its descriptors at other addresses) digest alike; a model
    that forgets PSTATE.PAN changes the outcome of a PAN-checked case, and so the digest, even
    when that case is all the campaign runs."""
    cases = C.select(sample=120, seed=9)
    whole = runner.run(cases, C.Report())
    halves = C.Report()
    runner.run(cases[1::2], halves)
    runner.run(cases[::2], halves)
    assert whole.run == halves.run == 120 and not whole.mismatches
    assert whole.digest() is not None and halves.digest() == whole.digest()
    right = C.model_cpu
    monkeypatch.setattr(C, "model_cpu", lambda cpu, probe, hafdbs: dict(right(cpu, probe, hafdbs), pan=False))
    broken = runner.run(cases, C.Report())
    assert broken.unexplained and broken.digest() != whole.digest()
    one = [broken.unexplained[0].case]
    wrong = runner.run(one, C.Report())
    monkeypatch.setattr(C, "model_cpu", right)
    assert wrong.unexplained and runner.run(one, C.Report()).digest() != wrong.digest()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", "conform", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)


def test_cli_space_and_sample() -> None:
    res = _cli("--arch", "arm64", "--space")
    assert res.returncode == 0
    assert "conform arm64 access: 399,360 cases (786,432 before the legality rules)" in res.stdout
    res = _cli("--arch", "arm64", "--sample", "200", "--seed", "1", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["arch"] == "arm64" and out["run"] == out["agree"] == 200 and out["space"]["size"] == C.SIZE
