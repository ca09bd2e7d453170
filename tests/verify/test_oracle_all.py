"""``--oracle all`` (emu/machines/oracles.py, emu.verify.merge_oracles): every oracle's answer in
one row, the combined verdict naming the emulators; fixture sets that record the emulator that
built them (docs/oracles.md, docs/fixtures.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emu.cli import main
from emu.machines import oracles
from emu.verify import combined_verdict
from tests.ci import unavailable


def need_qemu(arch: str) -> None:
    problem = oracles.get("qemu").missing(arch)
    if problem:
        unavailable("run the QEMU oracle tests", problem)


# -- the combined verdict: hand-written verdicts as the judge words them (emu/judge.py: a
#    non-Unicorn oracle's deviation carries its name in brackets) --------------------------------
@pytest.mark.parametrize(("per", "want"), [
    ({"unicorn": "agree", "qemu": "agree"}, "agree"),
    ({"unicorn": "linux-only: PROT_NONE", "qemu": "linux-only: PROT_NONE"}, "linux-only: PROT_NONE"),
    ({"unicorn": "emulator-deviation: block-oa-ored", "qemu": "agree"}, "emulator-deviation: block-oa-ored [unicorn]"),
    ({"unicorn": "emulator-deviation: block-at-any-level", "qemu": "emulator-deviation: block-at-any-level [qemu]"},
     "emulator-deviation: block-at-any-level [unicorn, qemu]"),
    ({"unicorn": "emulator-deviation: no-address-size-fault", "qemu": "disagree: MMU pa 0x1000, walk NULL"},
     "disagree: MMU pa 0x1000, walk NULL [qemu]"),
    ({"unicorn": "emulator-deviation: block-oa-ored", "qemu": "emulator-deviation: oa-bits-49-48-ignored [qemu]"},
     "emulator-deviation: block-oa-ored [unicorn]; emulator-deviation: oa-bits-49-48-ignored [qemu]"),
    ({"unicorn": "agree", "qemu": "linux-only: PROT_NONE"}, "linux-only: PROT_NONE [qemu]"),
    ({"unicorn": "agree", "qemu": "oracle-cannot-check: a 1 MB segment entry without EDAT-1"}, "agree: [unicorn]"),
    ({"unicorn": "oracle-error: no answer", "qemu": "agree"}, "oracle-error: no answer [unicorn]"),
    ({"unicorn": "oracle-cannot-check: x", "qemu": "oracle-cannot-check: y"},
     "oracle-cannot-check: x [unicorn]; oracle-cannot-check: y [qemu]"),
])
def test_combined_verdict(per: dict[str, str], want: str) -> None:
    got = combined_verdict(per)
    assert got == want
    assert got.split(":", 1)[0] in ("agree", "linux-only", "emulator-deviation", "oracle-cannot-check",
                                    "oracle-error", "disagree")  # the class a Report counts


def test_registry_names_every_oracle_once() -> None:
    import archs

    assert list(oracles.ORACLES)[0] == oracles.DEFAULT == "unicorn"
    assert oracles.oracle_choices() == (*oracles.ORACLES, "all")
    assert all(oracles.get("unicorn").cannot_check(k) is None for k in archs.all_config_keys())
    assert set(oracles.get("qemu").archs()) == {"x86_64", "arm64", "s390x"}
    assert "5-level" in (oracles.get("bochs").cannot_check("x86_64:5level") or "")
    assert "no machine for arm64" in (oracles.get("bochs").cannot_check("arm64:4k:48") or "")
    with pytest.raises(Exception, match="unknown oracle 'bochs2'"):
        oracles.get("bochs2")


@pytest.fixture
def qemu_without_arm64_4k_39(monkeypatch: pytest.MonkeyPatch) -> str:
    """The registry's QEMU entry, told it cannot run arm64:4k:39 (as an oracle whose machine
    cannot run some configuration of its architecture says in ``config_problem``)."""
    import dataclasses

    why = "a configuration this oracle's machine cannot run (test)"
    kind = dataclasses.replace(oracles.ORACLES["qemu"],
                               config_problem=lambda key: why if key == "arm64:4k:39" else None)
    monkeypatch.setitem(oracles.ORACLES, "qemu", kind)
    return why


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    rc = main(["verify", "--harness", "off", "--json", *argv])
    out = capsys.readouterr()
    return rc, json.loads(out.out), out.err


def test_verify_all_rows_are_the_single_oracle_rows(capsys: pytest.CaptureFixture[str],
                                                     qemu_without_arm64_4k_39: str) -> None:
    """Each oracle's part of every ``--oracle all`` row is exactly its row of a run on that oracle
    alone; a configuration an oracle cannot check is its oracle-cannot-check with the registry's
    reason, and the combined verdict names the emulators of every deviation."""
    need_qemu("arm64")
    keys = ["arm64:4k:48", "arm64:4k:39"]  # (Bochs, where installed, has no arm64 machine)
    rc, both, err = _json(capsys, "--oracle", "all", *(x for k in keys for x in ("--config", k)))
    assert rc == 0
    names = list(both["oracles"])
    assert names[:2] == ["unicorn", "qemu"]  # and Bochs, where it is installed
    singles = {}
    for n in names:
        own = [k for k in keys if oracles.get(n).cannot_check(k) is None]
        assert both["oracles"][n]["cannot_check"] == {k: oracles.get(n).cannot_check(k) for k in keys if k not in own}
        singles[n] = iter(_json(capsys, "--oracle", n, *(x for k in own for x in ("--config", k)))[1]["rows"]
                          if own else [])
    assert both["oracles"]["qemu"]["cannot_check"] == {"arm64:4k:39": qemu_without_arm64_4k_39}
    named = 0
    for row in both["rows"]:
        assert list(row["oracles"]) == names
        key = next(k for k in keys if row["config"] == k or row["config"].startswith(k + ":"))
        for name, view in row["oracles"].items():
            why = oracles.get(name).cannot_check(key)
            if why is not None:
                assert view["verdict"] == f"oracle-cannot-check: {why}"
                continue
            single = next(singles[name])
            assert (single["config"], single["case"], single["addr"], single["access"]) == \
                   (row["config"], row["case"], row["addr"], row["access"])
            assert view == {k: v for k, v in single.items() if k not in ("config", "case", "addr", "access")}
        ran = {n: v["verdict"] for n, v in row["oracles"].items() if oracles.get(n).cannot_check(key) is None}
        if row["verdict"].startswith("emulator-deviation"):
            named += 1
            deviating = [n for n, v in ran.items() if v.startswith("emulator-deviation")]
            assert row["verdict"].endswith(f"[{', '.join(deviating)}]")
        if all(v == "agree" for v in ran.values()):
            assert row["verdict"] == "agree"
    assert named > 0  # arm64 4K: the bad level-0 entry is block-at-any-level on both emulators
    assert [next(it, None) for it in singles.values()] == [None] * len(names)
    assert both["summary"]["disagree"] == 0


def test_all_without_qemu_names_it_and_runs_unicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With no QEMU on PATH, ``--oracle all`` says so in one note line and runs the rest; needs no QEMU."""
    monkeypatch.setenv("PATH", str(tmp_path))
    rc, doc, err = _json(capsys, "--oracle", "all", "--config", "x86_64:4level")
    assert rc == 0
    lines = err.strip().splitlines()  # one note per oracle left out (QEMU, and Bochs where registered)
    assert lines and all(x.startswith("note: --oracle all: left out ") and "apt-get install" in x for x in lines)
    assert any(x.startswith("note: --oracle all: left out qemu: ") for x in lines)
    assert doc["rows"] and all(list(r["oracles"]) == ["unicorn"] for r in doc["rows"])
    assert list(doc["oracles"]) == ["unicorn"]


def test_fixture_set_built_on_qemu_records_it_and_checks_clean(tmp_path: Path) -> None:
    """``fixtures build --oracle qemu``: the set names QEMU in the manifest and in every emulator
    view, replays clean on QEMU (fixtures check), rebuilds byte for byte, and a set that names an
    oracle this foliowalk does not know, or views of another emulator, is refused."""
    need_qemu("x86_64")
    from emu.errors import FixtureError
    from emu.fixtures import check_fixture_set, load_fixture_set
    from emu.fixtures.build import build_fixture_set
    from emu.fixtures.replay import rebuild_differences

    path, rows = build_fixture_set(tmp_path, "x86_64:4level", emulator="qemu")  # harness as rebuild_differences
    m = json.loads((path / "manifest.json").read_text())
    assert m["emulator"] == "qemu"
    assert {ch["emulator"]["name"] for ch in m["checks"]} == {"qemu"}
    assert all(r.verdict_class != "disagree" for r in rows)
    assert check_fixture_set(path) == []
    assert rebuild_differences(path) == []
    assert load_fixture_set(path).emulator == "qemu"

    def edit(fn: object) -> None:
        mm = json.loads((path / "manifest.json").read_text())
        fn(mm)  # type: ignore[operator]
        (path / "manifest.json").write_text(json.dumps(mm, indent=1))

    edit(lambda mm: mm["checks"][0]["emulator"].update(name="unicorn"))
    with pytest.raises(FixtureError, match=r"checks\[0\]\.emulator\.name: 'unicorn', but the set was built on 'qemu'"):
        load_fixture_set(path)
    edit(lambda mm: (mm["checks"][0]["emulator"].update(name="qemu"), mm.update(emulator="bogus")))
    with pytest.raises(FixtureError, match=r"emulator: unknown oracle 'bogus'"):
        load_fixture_set(path)


def test_qemu_kernel_half_set_records_gva2gpa_answers(tmp_path: Path) -> None:
    """The x86-64 kernel-half set on QEMU: loads of the direct map that read no tag word are
    answered by QEMU's own translation (``observed_by: gva2gpa``, emu/machines/qemu/x86_64.py),
    which the schema accepts and a check reproduces."""
    need_qemu("x86_64")
    from emu.fixtures import check_fixture_set
    from emu.fixtures.build import build_fixture_set

    path, _ = build_fixture_set(tmp_path, "x86_64:4level", harness="off", layout="kernel", emulator="qemu")
    m = json.loads((path / "manifest.json").read_text())
    assert "gva2gpa" in {ch["emulator"].get("observed_by") for ch in m["checks"]}
    assert check_fixture_set(path) == []


def test_fuzz_all_runs_the_same_cases_on_every_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    """``fuzz --oracle all``: one campaign per oracle over the same seed's hierarchies -- the
    same cases digest on both, each campaign saying which oracle answered."""
    need_qemu("arm64")
    rc = main(["fuzz", "--oracle", "all", "--config", "arm64:4k:39", "--hierarchies", "1", "--jobs", "0",
               "--harness", "off", "--no-shrink", "--quiet", "--json"])
    doc = json.loads(capsys.readouterr().out)["oracles"]
    assert rc == 0 and list(doc) == ["unicorn", "qemu"]
    assert [c["oracle"] for c in doc.values()] == ["unicorn", "qemu"]
    assert doc["unicorn"]["digest"] == doc["qemu"]["digest"]
    assert doc["unicorn"]["stats"]["cases"] == doc["qemu"]["stats"]["cases"] > 0
    assert all(c["stats"]["verdicts"].get("disagree", 0) == 0 for c in doc.values())
