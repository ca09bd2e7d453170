"""Every recorded placement of a deviation (emu/machines/placement.py RECORDED) is re-run on its
emulator and must still hold; a deviation explains a row only on the emulators it occurs on."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from emu import judge
from emu.machines import deviations, placement
from tests.machines.test_machine_bochs_x86_64 import need_bochs
from tests.machines.test_machine_qemu_x86_64 import need_qemu

ALL = {d.name: d for arch in ("x86_64", "arm64", "s390x") for d in deviations.for_arch(arch)}
CELLS = [(name, emu) for name, by in placement.RECORDED.items() for emu in by]


@pytest.mark.parametrize(("name", "emulator"), CELLS, ids=[f"{n}-{e}" for n, e in CELLS])
def test_recorded_placement_still_holds(name: str, emulator: str) -> None:
    dev = ALL[name]
    if emulator == "qemu":
        need_qemu(dev.arch)
    if emulator == "bochs":
        need_bochs()
    cell = placement.check(name, dev.arch, emulator)
    assert cell.status == placement.RECORDED[name][emulator], cell.detail


def test_every_recorded_name_is_registered() -> None:
    assert set(placement.RECORDED) <= set(ALL)
    assert set(placement.CHECKS) == set(placement.RECORDED)


def test_occurs_on() -> None:
    assert placement.occurs_on("x86-1g-pages-without-pdpe1gb", "qemu")
    assert not placement.occurs_on("x86-la57-cleared-in-long-mode", "qemu")
    assert not placement.occurs_on("x86-rsvd-fault-without-p", "unicorn")
    assert placement.occurs_on("x86-rsvd-fault-without-p", "qemu")
    assert placement.occurs_on("block-at-any-level", "qemu")
    assert not placement.occurs_on("block-oa-ored", "qemu")
    assert placement.occurs_on("contiguous-ignored", "unicorn")  # registered on Unicorn, no check
    assert not placement.occurs_on("contiguous-ignored", "qemu")  # never checked there: excuses nothing
    assert not placement.occurs_on("x86-1g-pages-without-pdpe1gb", "bochs")
    assert not placement.occurs_on("x86-rsvd-fault-without-p", "bochs")


def test_a_deviation_explains_rows_only_of_the_emulators_it_occurs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row that hits both no-address-size-fault (Unicorn only) and oa-bits-49-48-ignored (both):
    on Unicorn the registry's first, on QEMU the first one placed there; a row that hits only a
    Unicorn-only deviation is not excused on QEMU."""
    import archs

    ops = archs.get_ops("arm64:4k:48")
    hit = {"no-address-size-fault", "oa-bits-49-48-ignored"}
    devs = [d for d in deviations.for_arch("arm64") if d.name in hit]
    patched = [deviations.Deviation(d.name, d.arch, d.summary, d.reference, lambda o, w, m: True) for d in devs]
    monkeypatch.setattr(deviations, "REGISTRY", patched)  # the row hits these two only
    monkeypatch.setattr(deviations, "_DETECTORS", {})
    monkeypatch.setattr(placement, "_PLACED", {})
    monkeypatch.setattr(deviations, "explain", lambda o, w, m: patched[0])
    row = {"ops": ops, "model": None, "emulator": None}
    assert judge._deviation(SimpleNamespace(**row, oracle=SimpleNamespace(emulator="unicorn"))) \
        == "no-address-size-fault"
    assert judge._deviation(SimpleNamespace(**row, oracle=SimpleNamespace(emulator="qemu"))) \
        == "oa-bits-49-48-ignored [qemu]"
    monkeypatch.setattr(deviations, "REGISTRY", patched[:1])
    monkeypatch.setattr(placement, "_PLACED", {})
    assert judge._deviation(SimpleNamespace(**row, oracle=SimpleNamespace(emulator="qemu"))) is None


def test_cli_deviations_table() -> None:
    need_qemu()
    need_bochs()
    out = subprocess.run([sys.executable, "-m", "emu", "deviations", "--arch", "x86_64", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    for name, by in placement.RECORDED.items():
        if name.startswith("x86-"):
            for emulator, status in by.items():
                assert rows[name]["emulators"][emulator]["status"] == status
    assert rows["x86-1g-pages-without-pdpe1gb"]["placement"] == "qemu too, not bochs"
    assert rows["x86-la57-cleared-in-long-mode"]["placement"] == "unicorn only"  # no LA57 on Bochs 2.7
    assert "LA57[16] = 0" in rows["x86-la57-cleared-in-long-mode"]["emulators"]["bochs"]["detail"]
    assert rows["x86-rsvd-fault-without-p"]["placement"] == "qemu only, not bochs"


def test_cli_deviations_table_arm64() -> None:
    need_qemu("arm64")
    out = subprocess.run([sys.executable, "-m", "emu", "deviations", "--arch", "arm64", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["block-at-any-level"]["placement"] == "qemu too"
    assert rows["block-oa-ored"]["placement"] == "unicorn only"
    assert rows["walk-outside-ram-reads-zero"]["placement"] == "unicorn only"
    assert rows["no-address-size-fault"]["placement"] == "unicorn only"
    assert rows["tgran16-unimplemented-but-used"]["placement"] == "unicorn only"
    assert rows["oa-bits-49-48-ignored"]["placement"] == "qemu too"
    assert rows["contiguous-ignored"]["emulators"]["qemu"]["status"] == "not-checked"
    assert rows["block-at-any-level"]["emulators"]["bochs"]["status"] == "not-checked"  # x86 only


def test_cli_deviations_table_s390x() -> None:
    need_qemu("s390x")
    out = subprocess.run([sys.executable, "-m", "emu", "deviations", "--arch", "s390x", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["s390x-lra-cc3-for-every-exception"]["placement"] == "qemu too"
    assert rows["s390x-edat-not-in-cpu-models"]["placement"] == "qemu too"
    assert rows["s390x-key-controlled-protection-not-implemented"]["placement"] == "qemu too"
    assert rows["s390x-access-register-mode-aborts"]["placement"] == "qemu too"
    assert rows["s390x-access-register-mode-aborts"]["emulators"]["unicorn"]["status"] == "registered"
