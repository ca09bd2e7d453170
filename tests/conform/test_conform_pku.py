"""x86-64 protection keys in ``foliowalk conform`` (issue 18): hand-built cases whose expectations
are written from the Intel SDM vol. 3A (§4.6.2 "Protection Keys", §4.7 and §6.15 for the PK
bit of the #PF error code), each run through the model (archs.x86_64.translate) and through
Unicorn's MMU on the Skylake-Server CPU model; the machine's PKU controls; the access-pku space,
a sampled run that a key-blind model fails, and the CLI."""

from __future__ import annotations

import json
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
P, W, U, A, PS = 1, 2, 4, 0x20, 0x80
KR, KW, KF = Access("read"), Access("write"), Access("fetch")
UR, UW, UF = Access("read", True), Access("write", True), Access("fetch", True)
BASE = dict(nxe=True, wp=True, smep=False, smap=False, ac=False, pke=True)
AD1, WD1, AD2WD2 = 1 << 2, 1 << 3, 3 << 4  # PKRU: ADi = bit 2i, WDi = bit 2i+1 (SDM vol. 3A §2.7)


def key(k: int) -> int:
    return k << 59  # bits 62:59 of a leaf (Tables 4-18, 4-20)


# (why, from the SDM; PDE (None: the "PTE" column is a 2-MByte PDE); PTE; access; CPU facts;
#  expected #PF error code, or None for an allowed access)
CASES = [
    ("§4.6.2: AD1=1 permits no data access to a user-mode address with key 1: user read, P|U|PK",
     P | W | U, P | W | U | key(1), UR, dict(BASE, pkru=AD1), 0x25),
    ("§4.6.2: AD applies to supervisor-mode accesses too: supervisor read, P|PK",
     P | W | U, P | W | U | key(1), KR, dict(BASE, pkru=AD1), 0x21),
    ("§4.6.2: AD1=1 forbids supervisor writes even with CR0.WP=0: P|W|PK",
     P | W | U, P | W | U | key(1), KW, dict(BASE, wp=False, pkru=AD1), 0x23),
    ("§4.6.2: WD1=1 forbids user writes: P|W|U|PK",
     P | W | U, P | W | U | key(1), UW, dict(BASE, pkru=WD1), 0x27),
    ("§4.6.2: WD1=1 leaves user reads alone",
     P | W | U, P | W | U | key(1), UR, dict(BASE, pkru=WD1), None),
    ("§4.6.2: WD1=1 forbids supervisor writes with CR0.WP=1: P|W|PK",
     P | W | U, P | W | U | key(1), KW, dict(BASE, pkru=WD1), 0x23),
    ("§4.6.2: with CR0.WP=0, WD does not affect supervisor writes",
     P | W | U, P | W | U | key(1), KW, dict(BASE, wp=False, pkru=WD1), None),
    ("§4.6.2: a protection key does not affect instruction fetches (AD1=1, user fetch)",
     P | W | U, P | W | U | key(1), UF, dict(BASE, pkru=AD1), None),
    ("§4.6.2: PKRU for key 1 does not touch a page with key 0",
     P | W | U, P | W | U | key(0), UR, dict(BASE, pkru=AD1), None),
    ("§4.6.2: a supervisor-mode address's key does not control access (U/S=0 in the PTE)",
     P | W | U, P | W | key(1), KR, dict(BASE, pkru=AD1), None),
    ("§4.6.2: with CR4.PKE=0 keys do nothing, whatever PKRU holds",
     P | W | U, P | W | U | key(1), UW, dict(BASE, pke=False, pkru=0xFFFF_FFFC), None),
    ("§4.6.2: the key is the leaf's: key 2 (AD2=WD2=1) in the PDE that references the table is ignored",
     P | W | U | key(2), P | W | U | key(0), UW, dict(BASE, pkru=AD2WD2), None),
    ("§4.6.2 with Table 4-18: a 2-MByte PDE's own key 1 decides; AD1=1: P|U|PK",
     None, P | W | U | key(1), UR, dict(BASE, pkru=AD1), 0x25),
    ("§4.7: PK is set even when R/W=0 forbids the user write as well: P|W|U|PK",
     P | W | U, P | U | key(1), UW, dict(BASE, pkru=WD1), 0x27),
    ("§4.7: PK is set even when SMAP (AC=0) forbids the supervisor read as well: P|PK",
     P | W | U, P | W | U | key(1), KR, dict(BASE, smap=True, pkru=AD1), 0x21),
    ("§4.7: no PK when the key allows the access and R/W=0 forbids it (WD1=0): P|W|U",
     P | W | U, P | U | key(1), UW, dict(BASE, pkru=AD2WD2), 0x7),
]
IDS = [f"{i}-{c[0].split(':')[0]}" for i, c in enumerate(CASES)]


@pytest.fixture(scope="module")
def runner():
    r = C.Runner(C.PKU)
    yield r
    r.close()


def _entries(runner: C.Runner, pde_f: int | None, pte_f: int, nxe: bool) -> tuple[int, int, int, int]:
    root, pde_pa, pte_pa, frame = runner.tables(nxe)
    if pde_f is None:
        return root, pde_pa, frame | pte_f | PS, 0
    return root, pde_pa, pte_pa | pde_f, frame | pte_f


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_model_follows_the_sdm(runner: C.Runner, case: tuple) -> None:
    _why, pde_f, pte_f, access, cpu, code = case
    root, pde_pa, pde, pte = _entries(runner, pde_f, pte_f, cpu["nxe"])
    ram = runner._machine(cpu["nxe"])[1]
    pdpt = ram.read_u64(root) & X.PTE_PFN_MASK
    entries = {root: ram.read_u64(root), pdpt: ram.read_u64(pdpt), pde_pa: pde}
    if pte:
        entries[pde & X.PTE_PFN_MASK] = pte
    res = X.translate("x86_64:4level", entries_reader(entries), 0, access, cr3=root, cpu=cpu)
    if code is None:
        assert isinstance(res, Translation), res
    else:
        assert isinstance(res, Fault) and res.code == code, res


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unicorn_follows_the_sdm(runner: C.Runner, case: tuple) -> None:
    _why, pde_f, pte_f, access, cpu, code = case
    _root, _pde_pa, pde, pte = _entries(runner, pde_f, pte_f, cpu["nxe"])
    res, _pde_after, pte_after = runner.probe_one(pde, pte, access, cpu)
    if code is None:
        assert isinstance(res, MTranslation) and res.pa == runner.tables(cpu["nxe"])[3], res
    else:
        assert isinstance(res, MFault) and res.code == code, res
        if pte and access.kind != "write":  # (the machine's write probe loads first: a read may set A)
            assert not pte_after & A  # §4.8: the leaf of a refused access is not marked accessed


def test_the_machine_loads_pkru_and_refuses_what_it_cannot(runner: C.Runner) -> None:
    machine = runner._machine(True)[0]
    rdpkru = bytes.fromhex("0f01ee")  # RDPKRU: EAX = PKRU (ECX = 0), SDM vol. 2
    for value in (AD1, WD1 | AD2WD2, AD1):  # twice the same value and back: each reaches the CPU
        machine.set_controls(pke=True, pkru=value, smep=True)
        assert machine.registers()["CR4"] & (1 << 22) and machine.registers()["CR4"] & (1 << 20)
        machine.set_controls(smep=False)  # (WRPKRU ran with SMEP; run_code here runs on a user page)
        out = machine.run_code(rdpkru, regs={"rcx": 0})
        assert isinstance(out, dict) and out["rax"] == value, out
    machine.set_controls(pke=False)
    assert not machine.registers()["CR4"] & (1 << 22)
    with pytest.raises(ConfigError, match="key 0"):
        machine.set_controls(pkru=1)
    other = C.Runner()  # the default space's Broadwell: no PKU in CPUID
    try:
        with pytest.raises(ConfigError, match="no PKU in CPUID"):
            other._machine(True)[0].set_controls(pke=True)
    finally:
        other.close()


def test_space_size() -> None:
    assert len(C.PKU_SETTINGS) == 10  # PKE=0: key 0/1; PKE=1: (AD, WD) x key
    assert C.PKU.raw_size == 2**9 * 6 * 2**8 * 2**7
    assert C.PKU.size == 10 * C.SPACE.size == 15_851_520
    last = C.Case(C.PKU.size - 1, C.PKU)
    assert last.access == KF and "pke=1,ad=1,wd=1,pkey=1" in last.describe()
    first = C.Case(0, C.PKU)
    assert first.cpu == dict(nxe=False, wp=False, smep=False, smap=False, ac=False, pke=False, ad=False, wd=False,
                             pkey=0)


def test_key_cases_are_where_the_key_can_decide() -> None:
    cases = C.key_cases(C.PKU)
    # groups per NXE value: WP x SMEP x (SMAP off: 4 data accesses; SMAP on with AC 0 or 1: the
    # 2 CPL-0 ones) x 3 PKU settings (key 1 with AD, WD or both) = 2 * 2 * 8 * 3
    groups = 96
    # entry pairs reaching a user-mode leaf, free bits W, A, D (and XD with NXE; without NXE it is
    # reserved): PS=1 PDE alone, or PDE x PTE
    pairs = {False: 8 + 8 * 8, True: 16 + 16 * 16}
    assert len(cases) == groups * (pairs[False] + pairs[True]) == 33_024
    for i in cases[::997]:
        c = C.Case(i, C.PKU)
        assert c.cpu["pke"] and c.cpu["pkey"] and c.access.kind != "fetch" and c.pde_flags["U"]


def test_sample_agrees_and_a_key_blind_model_is_caught(runner: C.Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = sorted(set(C.key_cases(C.PKU)[::120] + C.select(sample=120, seed=4, space=C.PKU)))
    rep = runner.run(cases, C.new_report(C.PKU))
    assert rep.run == len(cases) >= 300 and not rep.mismatches, [m.to_json() for m in rep.mismatches[:3]]
    right = C.expected
    monkeypatch.setattr(C, "expected", lambda read, va, access, cr3, cpu: right(read, va, access, cr3,
                                                                               dict(cpu, pke=False)))
    rep = runner.run(cases, C.new_report(C.PKU))
    assert rep.unexplained and {m.field for m in rep.unexplained} >= {"outcome", "code"}


def test_cli_pku_space_and_sample() -> None:
    res = subprocess.run([sys.executable, "-m", "emu", "conform", "--arch", "x86_64", "--pku", "--sample", "60",
                          "--seed", "2", "--json"], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["space"]["name"] == "access-pku" and out["space"]["size"] == 15_851_520
    assert out["run"] == 60 and out["agree"] == 60 and "PKU" in out["space"]["in"]
