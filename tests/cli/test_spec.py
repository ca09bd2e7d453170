"""Hierarchy specs (docs/hierarchy.md) through the commands that take them, as subprocesses:
``verify --spec``, ``fuzz --replay`` (the same table), ``fixtures build --spec`` and
``explain --spec-out``.  The example specs under examples/ are run as shipped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.hierarchy.json"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, timeout=300,
                          check=False, env=os.environ, cwd=ROOT)


def test_three_examples_are_shipped() -> None:
    assert {p.name for p in EXAMPLES} == {
        "x86_64-4level.hierarchy.json", "arm64-4k-48.hierarchy.json", "s390x-region3.hierarchy.json"}


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_spec_verifies(spec: Path) -> None:
    res = run("verify", "--spec", str(spec), "--harness", "off", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    h = json.loads(spec.read_text())
    assert doc["summary"]["disagree"] == 0
    assert len(doc["rows"]) == 4 * len(h["addrs"])  # every address under every FW_* flag set
    assert {r["config"] for r in doc["rows"]} == {h["config"]}


def test_x86_64_example_rows() -> None:
    """The x86-64 example's entries read by hand (SDM vol. 3A table 4-19): its first PTE is
    0x8000000006078867 -- P, R/W, U/S, A, D, frame 0x6078000, XD -- so the MMU reaches
    0x6078010 for the address +0x10 into that page."""
    spec = ROOT / "examples" / "x86_64-4level.hierarchy.json"
    h = json.loads(spec.read_text())
    first = next(e for e in h["entries"] if e["kind"] == "page")
    assert first["value"] == 0x8000000006078867
    doc = json.loads(run("verify", "--spec", str(spec), "--harness", "off", "--json").stdout)
    by = {(r["addr"], r["walk"]["flags"]): r for r in doc["rows"]}
    a0 = h["addrs"][0]
    assert by[(a0, "0")]["mmu"]["pa"] == 0x6078010 and by[(a0, "0")]["verdict"] == "agree"
    mig, protnone = h["addrs"][1], h["addrs"][2]
    assert by[(mig, "FW_MIGRATION")]["verdict"] == "linux-only: migration-entry"
    assert by[(protnone, "0")]["verdict"] == "linux-only: prot-none"


def _table(text: str) -> str:
    return re.sub(r"\(\d+ rows, [0-9.]+ s\)", "(rows, s)", text)


def test_replay_prints_the_verify_table() -> None:
    spec = str(ROOT / "examples" / "arm64-4k-48.hierarchy.json")
    v = run("verify", "--spec", spec, "--harness", "off")
    r = run("fuzz", "--replay", spec, "--harness", "off")
    assert v.returncode == r.returncode == 0, (v.stderr, r.stderr)
    assert "== arm64:4k:48" in v.stdout and "summary: agree" in v.stdout
    assert _table(v.stdout) == _table(r.stdout)


def test_fixtures_build_from_a_spec_checks_clean(tmp_path: Path) -> None:
    spec = ROOT / "examples" / "s390x-region3.hierarchy.json"
    res = run("fixtures", "build", "--spec", str(spec), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "s390x-region3" / "manifest.json").is_file()
    man = json.loads((tmp_path / "s390x-region3" / "manifest.json").read_text())
    assert man["config"] == "s390x:region3"
    chk = run("fixtures", "check", str(tmp_path))
    assert chk.returncode == 0 and "1 identical" in chk.stdout, chk.stdout + chk.stderr


def test_explain_saves_a_spec_that_verify_runs(tmp_path: Path) -> None:
    out = tmp_path / "mine.hierarchy.json"
    ex = run("explain", "--config", "x86_64:4level", "--pte", "0x8000000000065067", "--harness", "off",
             "--spec-out", str(out), "--json")
    assert ex.returncode == 0, ex.stderr
    v = run("verify", "--spec", str(out), "--harness", "off", "--json")
    assert v.returncode == 0, v.stderr
    a, b = json.loads(ex.stdout)["rows"], json.loads(v.stdout)["rows"]
    assert [(r["addr"], r["walk"], r["mmu"], r["verdict"]) for r in a] == \
        [(r["addr"], r["walk"], r["mmu"], r["verdict"]) for r in b]


def test_fixtures_check_of_an_empty_folder_says_so(tmp_path: Path) -> None:
    res = run("fixtures", "check", str(tmp_path))
    assert res.returncode == 0 and "nothing to check" in res.stderr and "checked 0 sets" in res.stdout


def test_fuzz_rate_bad_options_are_one_line() -> None:
    for args in (["--config", "x86_64:9level"], ["--seconds", "-1"], ["--walker", "bad"], ["--bogus"]):
        res = subprocess.run([sys.executable, "-m", "bench.fuzz_rate", *args], capture_output=True, text=True,
                             timeout=120, check=False, cwd=ROOT)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, (args, res.stderr)
        assert lines[0].startswith("python -m bench.fuzz_rate: error: ") and "Traceback" not in res.stderr


def test_help_lists_the_configuration_names() -> None:
    for cmd in (["verify"], ["fuzz"], ["fixtures", "build"], ["explain"], []):
        out = " ".join(run(*cmd, "--help").stdout.split())
        assert "arm64:64k:48" in out and "s390x:segment" in out and "x86_64:5level" in out, cmd
        assert "``" not in out, cmd


def test_version() -> None:
    res = run("--version")
    assert res.returncode == 0 and re.fullmatch(r"foliowalk \d+\.\d+\.\d+\S*", res.stdout.strip())
