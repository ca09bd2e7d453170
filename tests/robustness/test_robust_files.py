"""Robustness (issue 8), part 3: output files are written atomically, and a fixture set is data.

* Killed runs: ``foliowalk fixtures build`` and ``foliowalk fuzz --out`` are killed (SIGKILL, the
  whole process group) part-way, several times -- at chosen points inside a write (half a file
  written, after the rename/exchange, before the folder fsync) and at assorted moments of a real
  run.  Afterwards every fixture set in the output folder either loads and checks clean or is not
  there (a pre-existing set is the old one or the new one, never a mix), every saved hierarchy
  parses, ``campaign.json`` and every line of ``findings.jsonl`` parse, and the next run cleans up
  what the killed one left in hidden temporary folders.
  (tests/fixtures/test_fixtures.py already covers an exception -- Ctrl-C -- inside a set's write and a
  build interrupted between sets; these are the kill -9 versions.)
* Nothing in a set is executed or unpickled: ``emu/fixtures/`` imports no deserializer that
  runs code and calls no ``eval``/``exec``/``compile``/``__import__``/``np.load``; a set whose
  files carry pickle payloads and Python source (and ships ``*.py`` files of its own) is loaded,
  checked, exported and replayed without any of it running.  Manifest paths cannot escape the
  set (tests/fixtures/test_fixtures.py: ``..``, an absolute path, a symlinked ``memory.bin``; here: every
  other shape, and a Hypothesis property over arbitrary path strings).
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import emu.fixtures as fx
import emu.fixtures.load as fx_load
from emu import cli
from emu.errors import FixtureError
from emu.fixtures.format import sha256_hex
from emu.fuzz import Hierarchy

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "fixtures"
SET = "x86_64-4level"
KSET = "x86_64-4level-kernel"  # the build writes x86_64:4level's kernel-half set after SET
OLD_MARK = {"robustness-test": "the old set"}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _old_set(out: Path) -> None:
    """A valid set under the name the build will write, distinguishable from a fresh one."""
    shutil.copytree(COMMITTED / SET, out / SET)
    m = json.loads((out / SET / "manifest.json").read_text())
    m["extra"] = OLD_MARK
    (out / SET / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")


def _check_outputs(out: Path, *, old: bool = False) -> dict[str, str]:
    """Every fixture set in ``out`` loads and checks clean; every other output parses.  Returns
    ``{set name: "old" | "new"}``."""
    seen: dict[str, str] = {}
    for p in sorted(out.iterdir()):
        if p.name.startswith("."):
            continue  # a killed writer's temporary folder or file: never a set
        if p.is_dir():
            fs = fx.load_fixture_set(p)
            assert fx.check_fixture_set(p) == [], p
            seen[p.name] = "old" if fs.manifest.get("extra") == OLD_MARK else "new"
        elif p.name.endswith(".hierarchy.json"):
            spec = json.loads(p.read_text())
            Hierarchy.from_json(spec["hierarchy"])
        elif p.name == "campaign.json":
            json.loads(p.read_text())
        elif p.name == "findings.jsonl":
            for n, line in enumerate(p.read_text().splitlines(), 1):
                assert isinstance(json.loads(line), dict), f"findings.jsonl line {n} is torn: {line[:80]!r}"
        else:
            raise AssertionError(f"unexpected output {p}")
    if old:
        assert seen.get(SET) in ("old", "new"), f"the existing set {SET} vanished"
    return seen


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process we started and every process it started (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


# ------------------------------------------------------------------------------------------------
# Killed at chosen points of a write
# ------------------------------------------------------------------------------------------------
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import emu.fixtures.write as fx
    from emu import cli

    out, point, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = {"n": 0}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def hit():
        calls["n"] += 1
        return calls["n"] == nth

    real_write, real_exchange, real_fsync_dir, real_rename = fx._write_file, fx._exchange, fx._fsync_dir, os.rename

    def write(path, data):
        if point == "half-file" and hit():
            with open(path, "xb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            die()
        real_write(path, data)

    def exchange(a, b):
        if point == "no-exchange":
            return False
        ok = real_exchange(a, b)
        if point == "after-exchange" and hit():
            die()
        return ok

    def fsync_dir(path):
        if point == "fsync-dir" and hit():
            die()
        real_fsync_dir(path)

    def rename(a, b):
        if point in ("rename", "no-exchange") and hit():
            die()
        real_rename(a, b)

    fx._write_file, fx._exchange, fx._fsync_dir = write, exchange, fsync_dir
    os.rename = rename
    sys.exit(cli.main(["fixtures", "build", "--out", out, "--config", "x86_64:4level",
                       "--config", "s390x:segment"]))
    """
)

#: (kill point, n-th call it strikes at).  A build writes 3 files per set, fsyncs 2 folders per
#: set, exchanges (existing set) or renames (new set) once per set.
POINTS = [("half-file", 1), ("half-file", 3), ("half-file", 5), ("fsync-dir", 1), ("fsync-dir", 2),
          ("after-exchange", 1), ("rename", 1), ("no-exchange", 2)]


@pytest.mark.parametrize("point,nth", POINTS, ids=[f"{p}-{n}" for p, n in POINTS])
def test_fixtures_build_killed_inside_a_write(point: str, nth: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _old_set(out)
    res = subprocess.run([sys.executable, "-c", KILLER, str(out), point, str(nth)], env=_env(),
                         capture_output=True, timeout=300, check=False)
    killed = res.returncode == -signal.SIGKILL
    seen = _check_outputs(out)
    if point == "no-exchange":
        # Without RENAME_EXCHANGE (two renames), a kill between them leaves no set under the
        # name -- both copies sit in hidden folders -- never a mix.
        assert seen.get(SET) in (None, "old", "new")
    else:
        assert seen.get(SET) in ("old", "new"), seen
    if not killed:
        assert res.returncode == 0 and seen == {SET: "new", KSET: "new", "s390x-segment": "new"}, res
    # The next build removes what the killed one left behind and lands both sets.
    assert cli.main(["fixtures", "build", "--out", str(out), "--config", "x86_64:4level",
                     "--config", "s390x:segment"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s390x-segment", SET, KSET]
    assert _check_outputs(out) == {SET: "new", KSET: "new", "s390x-segment": "new"}


# ------------------------------------------------------------------------------------------------
# Killed at assorted moments of real runs
# ------------------------------------------------------------------------------------------------
#: Seconds after the start at which the runs below are killed (no timing is asserted: whatever
#: state each kill leaves must be whole).
MOMENTS = [0.3, 0.7, 1.1, 1.6]


def test_fixtures_build_killed_at_random_moments(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "emu", "fixtures", "build", "--out", "OUT"]
    for key in ("x86_64:4level", "arm64:16k:36", "s390x:segment", "x86_64:5level"):
        args += ["--config", key]
    outcomes = set()
    for i, t in enumerate(MOMENTS):
        out = tmp_path / f"run{i}"
        out.mkdir()
        _old_set(out)
        argv = [a if a != "OUT" else str(out) for a in args]
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(t)
        _kill_group(proc)
        seen = _check_outputs(out, old=True)
        outcomes.add(tuple(sorted(seen.items())))
    assert outcomes, "every kill left whole sets"


def test_fuzz_out_killed_at_random_moments(tmp_path: Path) -> None:
    """Campaigns that save what they find (hierarchy specs and fixture sets of findings,
    campaign.json, findings.jsonl) as they go, killed while they run; the last one runs to the
    end."""
    for i, t in enumerate([*MOMENTS, None]):
        out = tmp_path / f"run{i}"
        argv = [sys.executable, "-m", "emu", "fuzz", "--config", "x86_64:4level", "--config", "arm64:4k:48",
                "--hierarchies", "6", "--jobs", "1" if i % 2 else "0", "--no-shrink", "--max-findings", "20",
                "--seed", str(i), "--out", str(out), "--quiet"]
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        if t is None:
            assert proc.wait(300) in (0, 1)
            _check_outputs(out)
            assert (out / "campaign.json").exists()
            continue
        time.sleep(t)
        _kill_group(proc)
        if out.exists():
            _check_outputs(out)


FUZZ_KILLER = textwrap.dedent(
    """
    import os, pathlib, signal, sys
    from emu import cli
    from emu.fuzz import HierarchyGenerator, save_hierarchy_finding

    out, how, target = sys.argv[1], sys.argv[2], sys.argv[3]
    real_write, real_replace = pathlib.Path.write_bytes, os.replace

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def write_bytes(self, data):
        if how == "half-write" and target in self.name:
            with open(self, "wb") as f:
                f.write(data[: len(data) // 2])
            die()
        return real_write(self, data)

    def replace(a, b):
        if how == "before-replace" and str(b).endswith(target):
            die()
        return real_replace(a, b)

    pathlib.Path.write_bytes, os.replace = write_bytes, replace
    if target == ".hierarchy.json":  # what a worker or the campaign saves for a finding
        h = HierarchyGenerator("x86_64:4level").generate(0, 0)
        os.makedirs(out, exist_ok=True)
        save_hierarchy_finding(pathlib.Path(out), h, "finding-0", "sig", "disagree: test double")
    else:
        sys.exit(cli.main(["fuzz", "--config", "x86_64:4level", "--hierarchies", "1", "--jobs", "0",
                           "--no-shrink", "--out", out, "--quiet"]))
    """
)


@pytest.mark.parametrize("how", ["half-write", "before-replace"])
@pytest.mark.parametrize("target", [".hierarchy.json", "campaign.json"])
def test_fuzz_outputs_killed_inside_a_write(how: str, target: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-c", FUZZ_KILLER, str(out), how, target], env=_env(),
                         capture_output=True, timeout=300, check=False)
    assert res.returncode == -signal.SIGKILL, res  # it died inside that write
    _check_outputs(out)
    assert not (out / target).exists() and not list(out.glob(f"*{target}")), "a torn file under the real name"


def crash_first(index: int) -> None:
    """Test double run in a fuzz worker: hierarchy 0 kills the worker (a crash finding, which the
    campaign records whatever its verdicts find)."""
    if index == 0:
        os._exit(3)


FINDINGS_KILLER = textwrap.dedent(
    """
    import builtins, io, os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_robust_files import crash_first
    from emu.fuzz import CampaignOptions, run_campaign

    real_open = io.open

    class Dying:
        def __init__(self, f):
            self.f = f
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()
        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def dying_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if "findings.jsonl" in str(path) and "r" not in mode:
            return Dying(f)  # whatever writes the findings file dies half-way through
        return f

    builtins.open = io.open = dying_open
    run_campaign(CampaignOptions(configs=["x86_64:4level"], seed=0, seconds=None, hierarchies=1, jobs=1,
                                 out=Path(sys.argv[1]), before_hierarchy=crash_first, progress=False,
                                 shrink=False))
    """
)


def test_findings_jsonl_is_never_torn(tmp_path: Path) -> None:
    """Killed while it records the findings (here: one crash finding): ``findings.jsonl`` holds
    whole lines or nothing."""
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-c", FINDINGS_KILLER, str(out), str(Path(__file__).parent)],
                         env=_env(), capture_output=True, timeout=300, check=False)
    assert res.returncode == -signal.SIGKILL, res  # it did die while writing the findings
    _check_outputs(out)


# ------------------------------------------------------------------------------------------------
# A fixture set is data
# ------------------------------------------------------------------------------------------------
def test_the_loader_imports_and_calls_nothing_that_runs_data() -> None:
    imported: set[str] = set()
    called: set[str] = set()
    nodes = [n for p in sorted((ROOT / "emu" / "fixtures").glob("*.py")) for n in ast.walk(ast.parse(p.read_text()))]
    for node in nodes:
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                called.add(f.id)
            elif isinstance(f, ast.Attribute):
                owner = f.value.id if isinstance(f.value, ast.Name) else "?"
                called.add(f"{owner}.{f.attr}")
    runs_data = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "yaml",
                 "importlib", "runpy", "code", "codeop", "subprocess"}
    assert not imported & runs_data, imported & runs_data
    forbidden = {"eval", "exec", "compile", "__import__", "np.load", "numpy.load", "os.system", "os.popen",
                 "importlib.import_module"}
    assert not called & forbidden, called & forbidden


PAYLOAD_MARK = "robustness-payload-ran"


class _Payload:
    """Unpickling this runs ``open(<marker>, "w")``: the marker file proves it ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_a_set_full_of_code_runs_none_of_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / SET
    shutil.copytree(COMMITTED / SET, d)
    marker = tmp_path / PAYLOAD_MARK
    pickled = pickle.dumps(_Payload(str(marker)))
    source = f"open({str(marker)!r}, 'w')"
    # Python files and a pickle beside the set's own files: nothing may import or load them.
    for name in ("__init__.py", "manifest.py", "conftest.py", "memory.py", "sitecustomize.py"):
        (d / name).write_text(source + "\n")
    (d / "memory.pkl").write_bytes(pickled)
    # Code in every free-text field of the manifest and the entry vectors.
    m = json.loads((d / "manifest.json").read_text())
    m["description"] = source
    m["extra"] = {"pickle": pickled.hex(), "python": source, "__reduce__": source, "!!python/object": source}
    m["cases"][0]["name"] = source
    m["vmas"][0]["name"] = source
    m["omitted"] = [source]
    # ... and a pickle inside the image: a page the set maps, with its sha256 and size updated.
    image = bytearray((d / "memory.bin").read_bytes())
    image[: len(pickled)] = pickled
    (d / "memory.bin").write_bytes(bytes(image))
    m["image"]["sha256"] = sha256_hex(bytes(image))
    lines = (d / "entries.jsonl").read_bytes().splitlines()
    first = json.loads(lines[0])
    first["decoded"] = {"format": source}
    lines[0] = json.dumps(first).encode()
    ent = b"\n".join(lines) + b"\n"
    (d / "entries.jsonl").write_bytes(ent)
    m["entries"]["sha256"] = sha256_hex(ent)
    (d / "manifest.json").write_text(json.dumps(m, indent=1))

    fs = fx.load_fixture_set(d)
    assert fs.manifest["extra"]["python"] == source  # carried as data
    diffs = fx.check_fixture_set(d)  # the edited page and decoded field show up as differences
    assert any("line 1" in x for x in diffs)
    cli.main(["fixtures", "check", str(d)])
    cli.main(["verify", "--fixture", str(d), "--json"])
    cli.main(["fixtures", "export", str(d), "--raw", str(tmp_path / "out.raw")])
    capsys.readouterr()
    assert not marker.exists(), "something in the set was executed or unpickled"


# -- manifest paths -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def escape_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A set folder with a regular file, a sub-folder, and symlinks that lead out of the set
    (to a file, to a folder, to a device, to the set itself), and a FIFO."""
    base = tmp_path_factory.mktemp("escape")
    outside = base / "outside"
    outside.mkdir()
    (outside / "memory.bin").write_bytes(b"outside")
    d = base / "set"
    d.mkdir()
    (d / "memory.bin").write_bytes(b"inside")
    (d / "sub").mkdir()
    (d / "sub" / "inner.bin").write_bytes(b"inner")
    os.symlink(outside / "memory.bin", d / "link-file")
    os.symlink(outside, d / "link-dir")
    os.symlink("/dev/zero", d / "zero")
    os.symlink(d, d / "self")
    os.mkfifo(d / "fifo")
    os.symlink("loop", d / "loop")
    return d


ESCAPES = [
    ("", "must be a relative path"),
    (".", "not a regular file"),
    ("sub/../memory.bin", "escapes"),
    ("sub/../../outside/memory.bin", "escapes"),
    ("/etc/passwd", "must be a relative path"),
    ("\\\\server\\share\\x", "must be a relative path"),
    ("C:memory.bin", "must be a relative path"),
    ("sub\\..\\..\\x", "must be a relative path"),
    ("memory.bin\x00.txt", "escapes"),
    ("link-file", "escapes"),
    ("link-dir/memory.bin", "escapes"),
    ("zero", "escapes"),
    ("fifo", "not a regular file"),
    ("sub", "not a regular file"),
    ("missing.bin", "is missing"),
    ("loop", "cannot be resolved|escapes|is missing"),
    ("self/../../outside/memory.bin", "escapes"),
]


@pytest.mark.parametrize("rel,why", ESCAPES, ids=[repr(e[0]) for e in ESCAPES])
def test_manifest_paths_cannot_leave_the_set(rel: str, why: str, escape_dir: Path) -> None:
    with pytest.raises(FixtureError, match=why):
        fx_load._member(escape_dir, rel, fx_load._Checker("manifest.json"), "image.file")


def test_paths_inside_the_set_are_found(escape_dir: Path) -> None:
    c = fx_load._Checker("manifest.json")
    assert fx_load._member(escape_dir, "memory.bin", c, "image.file").read_bytes() == b"inside"
    assert fx_load._member(escape_dir, "sub/inner.bin", c, "image.file").read_bytes() == b"inner"
    assert fx_load._member(escape_dir, "./memory.bin", c, "image.file").read_bytes() == b"inside"
    # A symlink that stays inside the set is as good as the file (it resolves inside).
    assert fx_load._member(escape_dir, "self/memory.bin", c, "image.file").read_bytes() == b"inside"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["..", ".", "sub", "memory.bin", "link-dir", "link-file", "self", "zero", "fifo",
                              "", "/", "\\", "C:", "~", "inner.bin"]), max_size=6).map("/".join),
))
def test_any_manifest_path_is_inside_the_set_or_refused(rel: str, escape_dir: Path) -> None:
    root = escape_dir.resolve()
    try:
        p = fx_load._member(escape_dir, rel, fx_load._Checker("manifest.json"), "image.file")
    except FixtureError:
        return
    resolved = p.resolve()
    assert resolved == root or root in resolved.parents, (rel, resolved)
    assert p.is_file() and not (escape_dir / "fifo").samefile(p)
