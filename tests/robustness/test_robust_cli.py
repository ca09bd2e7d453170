"""Robustness (issue 8), part 2: every ``foliowalk`` sub-command (verify, fuzz, fixtures
build/check/export, bench; and ``python -m bench``) given wrong arguments prints one clear line and
exits 2, never a traceback.

Wrong means: an unknown architecture, configuration or kernel; a malformed number; a negative,
zero, non-finite or absurd count, duration or job count; a file or folder that is missing, is the
wrong kind, or cannot be written (``root`` may write anywhere, so "cannot be written" is a folder
whose parent is a file, or one under ``/proc``); an input file that is not what it claims to be.

The cases run through ``emu.cli.main`` (what the ``foliowalk`` script calls: an uncaught exception
there would be the traceback), with the campaign and build entry points replaced by stubs that fail
the test, so a missing check can never start real work (a 100,000-process campaign, say).  A few
run as real subprocesses as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from emu import cli
from emu.fuzz import HierarchyGenerator

FIXTURE = str(Path(__file__).resolve().parents[2] / "fixtures" / "x86_64-4level")  # a good set


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, str]:
    """Things to point arguments at: a plain file, a folder under it, a folder nobody can
    create, an empty folder, bad JSON files and bad hierarchies."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    h = HierarchyGenerator("x86_64:4level").generate(0, 0).to_json()
    bad: dict[str, Any] = {
        "not-json": "{\"format\": ",
        "binary": b"\xff\xfe\x00garbage",
        "list": [1, 2, 3],
        "string": "a string",
        "nested-hierarchy-number": {"hierarchy": 5},
        "wrong-format": {"format": "something/else"},
        "unknown-config": {"hierarchy": {**h, "config": "x86_64:9level"}},
        "entry-outside-pool": {"hierarchy": {**h, "entries": [{**h["entries"][0], "pa": 8}]}},
        "negative-address": {"hierarchy": {**h, "addrs": [-5]}},
        "empty-vma": {"hierarchy": {**h, "vmas": [{"start": 0x10000, "end": 0x5000, "flags": 0}]}},
        "address-not-a-number": {"hierarchy": {**h, "addrs": ["zz"]}},
    }
    out = {"file": str(a_file), "under-file": str(a_file / "sub"), "proc": "/proc/foliowalk-nope/sub",
           "empty": str(empty), "missing": str(tmp_path / "missing"), "fixture": FIXTURE}
    for name, content in bad.items():
        p = tmp_path / f"{name}.json"
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif isinstance(content, str):
            p.write_text(content)
        else:
            p.write_text(json.dumps(content))
        out[name] = str(p)
    return out


@pytest.fixture
def no_real_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad argument must be refused before any campaign or build starts."""

    def started(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the command started its work with a bad argument")

    import bench.core
    import emu.fixtures
    import emu.fuzz
    import emu.verify

    monkeypatch.setattr(bench.core, "run", started)
    monkeypatch.setattr(emu.fuzz, "run_campaign", started)
    monkeypatch.setattr(emu.fixtures, "build_fixture_sets", started)
    monkeypatch.setattr(emu.verify, "verify_configs", started)


#: (arguments with {placeholders} from ``paths``, a fragment the one line must contain)
BAD: list[tuple[str, str]] = [
    # -- the command itself
    ("frobnicate", "invalid choice"),
    # -- verify
    ("verify --arch mips", "unknown architecture 'mips'"),
    ("verify --config x86_64:6level", "unknown configuration '6level'"),
    ("verify --config x86_64", "unknown configuration ''"),
    ("verify --config nonsense", "unknown architecture 'nonsense'"),
    ("verify --kernel v5.0", "invalid choice"),
    ("verify --addr 12q", "not a number"),
    ("verify --addr 0x", "not a number"),
    ("verify --addr= ", "not a number"),
    ("verify --config x86_64:4level --addr=-16", "not a canonical"),
    ("verify --config x86_64:4level --addr 0x1_0000_0000_0000_0000", "not a canonical"),
    ("verify --config s390x:segment --addr 0x80000000", "not a canonical"),
    ("verify --fixture {missing}", "no such fixture-set folder"),
    ("verify --fixture {file}", "no such fixture-set folder"),
    ("verify --fixture {empty}", "no fixture set here"),
    ("verify --fixture {fixture} --addr 0x1000", "--fixture replays the recorded cases"),
    # -- fuzz
    ("fuzz --arch mips", "unknown architecture 'mips'"),
    ("fuzz --config arm64:3k:48", "unknown configuration '3k:48'"),
    ("fuzz --kernel v5.0", "invalid choice"),
    ("fuzz --mix weird", "invalid choice"),
    ("fuzz --seconds abc", "invalid float value"),
    ("fuzz --seconds=-1", "--seconds must be a positive number"),
    ("fuzz --seconds 0", "--seconds must be a positive number"),
    ("fuzz --seconds nan", "--seconds must be a positive number"),
    ("fuzz --seconds inf", "--seconds must be a positive number"),
    ("fuzz --seconds 1e999", "--seconds must be a positive number"),
    ("fuzz --hierarchies 0", "--hierarchies must be positive"),
    ("fuzz --hierarchies=-3", "--hierarchies must be positive"),
    ("fuzz --hierarchies 1.5", "not a number"),
    ("fuzz --jobs=-1", "--jobs must be 0 or more"),
    ("fuzz --jobs 100000", "--jobs 100000 is more than"),
    ("fuzz --jobs x", "not a number"),
    ("fuzz --seed 0x", "not a number"),
    ("fuzz --max-findings=-1", "--max-findings must be 0 or more"),
    ("fuzz --hierarchies 1 --out {file}", "is a file, not a folder"),
    ("fuzz --hierarchies 1 --out {under-file}", "cannot write there"),
    ("fuzz --hierarchies 1 --out {proc}", "cannot write there"),
    ("fuzz --replay {missing}", "not a saved hierarchy"),
    ("fuzz --replay {empty}", "not a saved hierarchy"),
    ("fuzz --replay {not-json}", "not a saved hierarchy"),
    ("fuzz --replay {binary}", "not a saved hierarchy"),
    ("fuzz --replay {list}", "not a saved hierarchy"),
    ("fuzz --replay {string}", "not a saved hierarchy"),
    ("fuzz --replay {nested-hierarchy-number}", "not a saved hierarchy"),
    ("fuzz --replay {wrong-format}", "not a foliowalk fuzz hierarchy"),
    ("fuzz --replay {address-not-a-number}", "not a saved hierarchy"),
    # -- fixtures build / check / export
    ("fixtures build", "required: --out"),
    ("fixtures build --out {file}", "is a file, not a folder"),
    ("fixtures build --out {under-file}", "cannot write there"),
    ("fixtures build --out {proc}", "cannot write there"),
    ("fixtures build --out {empty} --config x86_64:6level", "unknown configuration"),
    ("fixtures build --out {empty} --arch mips", "unknown architecture"),
    ("fixtures build --out {empty} --kernel v5.0", "invalid choice"),
    ("fixtures check", "required: DIR"),
    ("fixtures check {missing}", "no such fixture-set folder"),
    ("fixtures check {file}", "no such fixture-set folder"),
    ("fixtures check {empty}", "no fixture set here"),
    ("fixtures export {fixture}", "one of the arguments --out --raw is required"),
    ("fixtures export {missing} --raw {empty}/out.raw", "no such fixture-set folder"),
    ("fixtures export {file} --raw {empty}/out.raw", "no such fixture-set folder"),
    ("fixtures export {fixture} --raw {empty}", "is a folder, not a file"),
    ("fixtures export {fixture} --raw {under-file}/out.raw", "cannot write there"),
    ("fixtures export {fixture} --raw {proc}/out.raw", "cannot write there"),
    ("fixtures frobnicate", "invalid choice"),
    # -- bench
    ("bench --arch mips", "unknown architecture 'mips'"),
    ("bench --config x86_64:6level", "unknown configuration '6level'"),
    ("bench --config s390x", "unknown configuration ''"),
    ("bench --quick --arch", "expected one argument"),
    ("bench --frobnicate", "unrecognized arguments"),
]


def _argv(template: str, paths: dict[str, str]) -> list[str]:
    return [part.format(**paths) for part in template.split(" ") if part]


@pytest.mark.parametrize("template,fragment", BAD, ids=[b[0].replace(" ", "_") for b in BAD])
def test_bad_argument_gives_one_line_and_exit_2(
    template: str, fragment: str, paths: dict[str, str], no_real_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(template, paths)
    if template == "verify --addr= ":
        argv = ["verify", "--addr="]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (argv, rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("foliowalk"), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err + out


#: Hierarchies that parse but cannot be built: refused by the replay child as bad input (one
#: line, exit 2), not reported as a crash of the child.
BAD_REPLAYS = ["unknown-config", "entry-outside-pool", "negative-address", "empty-vma"]


@pytest.mark.parametrize("name", BAD_REPLAYS)
def test_replay_of_a_hierarchy_that_cannot_be_built_is_bad_input(
    name: str, paths: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["fuzz", "--replay", paths[name]])
    out, err = capfd.readouterr()  # capfd: the child process writes to the same stderr
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "not a valid hierarchy" in lines[0], err
    assert "Traceback" not in err + out


def test_nothing_was_created_by_refused_commands(paths: dict[str, str], no_real_work: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for template, _ in BAD:
        cli.main(_argv(template, paths) if template != "verify --addr= " else ["verify", "--addr="])
    capsys.readouterr()
    assert not list(Path(paths["empty"]).iterdir()), "a refused command left files behind"
    assert not Path(paths["missing"]).exists()
    assert Path(paths["file"]).read_text() == "not a folder\n"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("template,fragment", [
    ("fuzz --seconds nan", "--seconds must be a positive number"),  # it used to run for ever
    ("fuzz --hierarchies 1 --out {under-file}", "cannot write there"),
    ("fixtures build --out {file} --config x86_64:4level", "is a file, not a folder"),
    ("fixtures export {fixture} --raw {empty}", "is a folder, not a file"),
    ("fuzz --replay {entry-outside-pool}", "not a valid hierarchy"),
    ("verify --config x86_64:4level --addr=-16", "not a canonical"),
    ("bench --config x86_64:6level", "unknown configuration"),
    ("-m bench --arch mips", "unknown architecture"),  # python -m bench: the same command
])
def test_as_a_subprocess(template: str, fragment: str, paths: dict[str, str]) -> None:
    argv = _argv(template, paths)
    res = _run(*argv) if argv[0] != "-m" else subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=120, check=False)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and fragment in lines[0], res
    assert "Traceback" not in res.stderr + res.stdout


def test_an_os_error_deep_inside_a_command_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever file operation fails after the checks (the disk fills up, a folder vanishes):
    one line naming the file, exit 2 -- the fixture set itself is never left half-written
    (tests/robustness/test_robust_files.py)."""
    import emu.fixtures

    def disk_full(*_a: Any, **_k: Any) -> Any:
        raise OSError(28, "No space left on device", "/some/where/memory.bin")

    monkeypatch.setattr(emu.fixtures, "build_fixture_sets", disk_full)
    rc = cli.main(["fixtures", "build", "--out", str(tmp_path), "--config", "x86_64:4level"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "foliowalk: error: /some/where/memory.bin: No space left on device", err
