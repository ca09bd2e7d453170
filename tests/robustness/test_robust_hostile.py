"""Robustness (issue 20): what a hostile user found after issue 8 -- a clobbered device, resource
bombs in small consistent sets, tracebacks on hostile numbers and strings, runaways on special
files, and campaigns that did not survive a full disk or a kill.

* Output paths: ``fixtures export --raw`` refuses a device, FIFO, socket, folder or dangling
  symbolic link (one line, exit 2) and leaves it as it was; a symbolic link to a regular file is
  followed.  Never run against ``/dev/null`` itself: a FIFO and a symbolic link to ``/dev/null``
  in ``tmp_path`` are what an unfixed export would have replaced.
* Budgets: a set asking for more guest RAM, or more populated (filled/tagged/extent) bytes than
  the documented limits is refused by the loader naming the field and the limit, before any RAM
  is mapped (``PhysicalMemory`` is replaced by a stub that fails the test).
* Hostile JSON in ``manifest.json``, ``entries.jsonl`` and ``--replay`` files: a 5,000-digit
  integer, a lone surrogate, ``Infinity``, ``1e400``.
* Replay files: special files (``/dev/zero``, a FIFO) and oversized files are refused without
  reading them; hierarchies with impossible table depths or VMA bounds are bad input (exit 2),
  not a death of the replay child.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import emu.fixtures as fx
from emu import cli
from emu.errors import FileError, FixtureError
from emu.files import output_target, read_regular
from emu.fixtures.format import MAX_POPULATED_BYTES, MAX_RAM_SIZE

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "x86_64-4level"


def _one_line(capsys: pytest.CaptureFixture[str], rc: int, fragment: str) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("foliowalk"), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in out + err
    return lines[0]


# ------------------------------------------------------------------------------------------------
# Output paths: never replace a special file
# ------------------------------------------------------------------------------------------------
def test_export_refuses_a_fifo_and_leaves_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rc = cli.main(["fixtures", "export", str(FIXTURE), "--raw", str(fifo)])
    _one_line(capsys, rc, "is a FIFO, not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file left


def test_export_refuses_a_link_to_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What ``--raw /dev/null`` did, one step removed: the unfixed export renamed a 3 GiB file
    over the link (over ``/dev/null`` itself, given that path)."""
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    rc = cli.main(["fixtures", "export", str(FIXTURE), "--raw", str(link)])
    _one_line(capsys, rc, "is a character device, not a regular file")
    assert link.is_symlink() and os.readlink(link) == os.devnull
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_export_refuses_a_dangling_link_and_a_socket(tmp_path: Path) -> None:
    import socket

    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileError, match="symbolic link to nothing"):
        fx.export_raw(FIXTURE, dangling)
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(FileError, match="is a socket"):
            fx.export_raw(FIXTURE, sock_path)
    assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)


def test_the_device_itself_is_refused_without_being_opened() -> None:
    with pytest.raises(FileError, match="character device"):
        output_target(Path(os.devnull), "--raw")


def test_export_follows_a_link_to_a_regular_file(tmp_path: Path) -> None:
    real = tmp_path / "real.raw"
    real.write_bytes(b"old")
    link = tmp_path / "link.raw"
    link.symlink_to(real)
    fs = fx.load_fixture_set(FIXTURE)
    assert fx.export_raw(FIXTURE, link) == real
    assert link.is_symlink() and real.stat().st_size == fs.ram_size


# ------------------------------------------------------------------------------------------------
# Fixture sets: budgets checked before any RAM is mapped, hostile JSON values
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def a_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of a committed set; mapping guest RAM fails the test (a budget must be
    checked before it)."""
    d = tmp_path / "set"
    shutil.copytree(FIXTURE, d)
    import emu.fixtures.load as fx_load

    def mapped(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("guest RAM was mapped for a set the loader should have refused")

    monkeypatch.setattr(fx_load, "PhysicalMemory", mapped)
    return d


def _edit(d: Path, fn: Any) -> None:
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def _refused(d: Path, capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """``fixtures check`` and ``fixtures export`` both refuse the set: one line, exit 2."""
    line = ""
    for argv in (["fixtures", "check", str(d)], ["fixtures", "export", str(d), "--raw", str(d.parent / "x.raw")]):
        rc = cli.main(argv)
        out, err = capsys.readouterr()
        lines = [x for x in err.strip().splitlines() if x]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in out + err, (argv, rc, out, err)
        line = lines[0]
        for f in fragments:
            assert f in line, line
    assert not (d.parent / "x.raw").exists()
    return line


def _bomb_ram(m: dict[str, Any]) -> None:
    m["ram_size"] = MAX_RAM_SIZE + (1 << 30)
    m["memmap"]["highest_memmap_pfn"] = m["ram_size"] // 4096 - 1


def _bomb_tagged(m: dict[str, Any]) -> None:
    """16 GiB of RAM (allowed) with a 12 GiB tagged range above everything else."""
    m["ram_size"] = 16 << 30
    m["memmap"]["highest_memmap_pfn"] = m["ram_size"] // 4096 - 1
    m["image"]["tagged"].append({"pa": 4 << 30, "size": 12 << 30})


def _bomb_fills(m: dict[str, Any]) -> None:
    m["ram_size"] = 16 << 30
    m["memmap"]["highest_memmap_pfn"] = m["ram_size"] // 4096 - 1
    m["image"]["fills"].append({"pa": 4 << 30, "size": 12 << 30, "word": 0x1234})


def _bomb_many_small(m: dict[str, Any]) -> None:
    """No single range is big: the total crosses the limit (1.5 GiB in 64 MiB ranges)."""
    m["ram_size"] = 16 << 30
    m["memmap"]["highest_memmap_pfn"] = m["ram_size"] // 4096 - 1
    m["image"]["tagged"] += [{"pa": (4 << 30) + i * (64 << 20), "size": 64 << 20} for i in range(24)]


@pytest.mark.parametrize("bomb,fragments", [
    (_bomb_ram, ["ram_size", f"{MAX_RAM_SIZE:#x}"]),
    (_bomb_tagged, ["image.tagged[", f"{MAX_POPULATED_BYTES:#x}"]),
    (_bomb_fills, ["image.fills[", f"{MAX_POPULATED_BYTES:#x}"]),
    (_bomb_many_small, ["image.tagged[", f"{MAX_POPULATED_BYTES:#x}"]),
], ids=["ram_size", "tagged", "fills", "many-small-tagged"])
def test_resource_bombs_are_refused_before_ram_is_mapped(bomb: Any, fragments: list[str], a_set: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _edit(a_set, bomb)
    _refused(a_set, capsys, "manifest.json", *fragments)


def test_a_set_just_inside_the_budget_loads(a_set: Path) -> None:
    """The limits refuse bombs, not big sets: 16 GiB of RAM and a 512 MiB tagged range load."""
    def big(m: dict[str, Any]) -> None:
        m["ram_size"] = 16 << 30
        m["memmap"]["highest_memmap_pfn"] = m["ram_size"] // 4096 - 1
        m["image"]["tagged"].append({"pa": 4 << 30, "size": 512 << 20})

    _edit(a_set, big)
    fs = fx.load_fixture_set(a_set)
    assert fs.ram_size == 16 << 30 and (4 << 30, 512 << 20) in fs.tagged


HUGE = "1" * 5000


def _raw_edit(d: Path, old: str, new: str, name: str = "manifest.json") -> None:
    text = (d / name).read_text()
    assert old in text, old
    (d / name).write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("old,new,fragments", [
    ('"zero_page_nr": 1', f'"zero_page_nr": {HUGE}', ["integer of 5000 digits", "out of range"]),
    ('"zero_page_nr": 1', f'"zero_page_nr": -{HUGE}', ["integer of 5000 digits"]),
    ('"zero_page_nr": 1', '"zero_page_nr": 1e400', ["1e400", "out of range"]),
    ('"zero_page_nr": 1', '"zero_page_nr": Infinity', ["Infinity is not allowed"]),
], ids=["huge-int", "huge-negative", "1e400", "Infinity"])
def test_hostile_numbers_in_a_manifest(old: str, new: str, fragments: list[str], a_set: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _raw_edit(a_set, old, new)
    _refused(a_set, capsys, "manifest.json", *fragments)


def _set_case_name(m: dict[str, Any]) -> None:
    m["cases"][0]["name"] = "pte \ud83d"


@pytest.mark.parametrize("edit,fragment", [
    (lambda m: m["image"].update(file="\ud800"), "image.file"),
    (lambda m: m["entries"].update(file="x\udfff"), "entries.file"),
    (lambda m: m.update(omitted=["\ud800"]), "omitted[0]"),
    (_set_case_name, "cases[0].name"),
    (lambda m: m.update({"\udc80": 1}), "a key"),
], ids=["image.file", "entries.file", "omitted", "case-name", "key"])
def test_lone_surrogates_in_a_manifest(edit: Any, fragment: str, a_set: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``json.dumps`` writes a lone surrogate as the escape ``\\ud800``, as a hostile file would."""
    _edit(a_set, edit)
    assert "\\ud" in (a_set / "manifest.json").read_text()
    _refused(a_set, capsys, "manifest.json", fragment, "lone surrogate")


def _reseal_entries(d: Path) -> None:
    """Update the manifest's digest of entries.jsonl, so the loader reads the lines."""
    import hashlib

    data = (d / "entries.jsonl").read_bytes()
    _edit(d, lambda m: m["entries"].update(sha256=hashlib.sha256(data).hexdigest()))


@pytest.mark.parametrize("new,fragments", [
    (f'"value": {HUGE}', ["line 1", "integer of 5000 digits"]),
    ('"value": 1e400', ["line 1", "out of range"]),
    ('"value": "\\ud800"', ["line 1.value", "lone surrogate"]),
], ids=["huge-int", "1e400", "surrogate"])
def test_hostile_values_in_entries_jsonl(new: str, fragments: list[str], a_set: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    lines = (a_set / "entries.jsonl").read_text().splitlines()
    e = json.loads(lines[0])
    lines[0] = json.dumps(e).replace(f'"value": {e["value"]}', new, 1)
    (a_set / "entries.jsonl").write_text("\n".join(lines) + "\n")
    _reseal_entries(a_set)
    _refused(a_set, capsys, "entries.jsonl", *fragments)


def test_a_set_whose_files_are_special_is_refused(a_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (a_set / "entries.jsonl").unlink()
    os.mkfifo(a_set / "entries.jsonl")  # the loader must neither block on it nor read it
    _refused(a_set, capsys, "entries.jsonl", "not a regular file")


# ------------------------------------------------------------------------------------------------
# fuzz --replay: special files, size, hostile values, impossible hierarchies
# ------------------------------------------------------------------------------------------------
def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=ROOT)


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "fifo"])
def test_replay_of_a_special_file_is_refused_without_reading_it(special: str, tmp_path: Path) -> None:
    """Unfixed, ``/dev/zero`` was read until memory ran out and a FIFO blocked for ever: as a
    subprocess with a timeout, so that fails instead of hanging the suite."""
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)
    res = _run("fuzz", "--replay", special, timeout=60)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "not a regular file" in lines[0], res
    assert lines[0].startswith(f"foliowalk: error: {special}: not a saved hierarchy")


def test_replay_file_size_is_limited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from emu.fuzz.spec import MAX_REPLAY_BYTES

    big = tmp_path / "big.hierarchy.json"
    with open(big, "wb") as f:
        f.truncate(MAX_REPLAY_BYTES + 1)  # sparse: nothing is written, and nothing may be read
    rc = cli.main(["fuzz", "--replay", str(big)])
    _one_line(capsys, rc, f"more than the {MAX_REPLAY_BYTES}-byte limit")
    with pytest.raises(FileError, match="limit"):
        read_regular(big, MAX_REPLAY_BYTES)


def _hierarchy() -> dict[str, Any]:
    from emu.fuzz import HierarchyGenerator

    return HierarchyGenerator("x86_64:4level").generate(0, 0).to_json()  # type: ignore[no-any-return]


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    h = json.loads(json.dumps(_hierarchy()))
    node = h
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return h


U64 = (1 << 64) - 1


#: (what, the saved file's text, a fragment of the one line)
HOSTILE_REPLAYS: list[tuple[str, Any, str]] = [
    ("huge-int", lambda: json.dumps({"hierarchy": _hierarchy()}).replace('"addrs": [', f'"addrs": [{HUGE}, ', 1),
     "integer of 5000 digits"),
    ("1e400", lambda: json.dumps(_hierarchy()).replace('"addrs": [', '"addrs": [1e400, ', 1), "out of range"),
    ("Infinity", lambda: json.dumps(_hierarchy()).replace('"addrs": [', '"addrs": [Infinity, ', 1),
     "Infinity is not allowed"),
    ("-Infinity-vma", lambda: json.dumps(_hierarchy()).replace('"start": ', '"start": -Infinity, "x": ', 1),
     "-Infinity is not allowed"),
    ("surrogate-config", lambda: json.dumps(_with(("config",), "x86_64:\ud800")), "lone surrogate"),
    ("surrogate-vma-name", lambda: json.dumps(_with(("vmas", 0, "name"), "\udfff")), "lone surrogate"),
    ("float-address", lambda: json.dumps(_with(("addrs", 0), 1.5)), "addrs[0]"),
    ("vma-name-escape", lambda: json.dumps(_with(("vmas", 0, "name"), "anon\x1b[2J")), "control character"),
    ("depth-7", lambda: json.dumps(_with(("entries", 0, "depth"), 7)), "entries[0].depth: 7 is not a table depth"),
    ("depth-2^40", lambda: json.dumps(_with(("entries", 0, "depth"), 1 << 40)), "is not a table depth"),
    ("table-depth-0", lambda: json.dumps(_with(("tables", 0), [_hierarchy()["tables"][0][0], 0])),
     "tables[0]: depth 0"),
    ("vma-end-2^64", lambda: json.dumps(_with(("vmas", 0, "end"), 1 << 64)), "not inside the 64-bit address"),
    ("vma-start-negative", lambda: json.dumps(_with(("vmas", 0, "start"), -4096)), "vmas[0]"),
    ("vma-unaligned", lambda: json.dumps(_with(("vmas", 0, "end"), _hierarchy()["vmas"][0]["end"] - 1)),
     "not page aligned"),
    ("vmas-overlap", lambda: json.dumps(_with(("vmas",), [{"start": 0x1000, "end": 0x3000, "flags": 0},
                                                          {"start": 0x2000, "end": 0x4000, "flags": 0}])),
     "vmas[1] overlaps vmas[0]"),
    ("value-beyond-64-bits", lambda: json.dumps(_with(("entries", 0, "value"), U64 + 1)), "not a 64-bit value"),
    ("too-many-addresses", lambda: json.dumps(_with(("addrs",), [0x1000] * 20000)), "more than the limit of"),
    ("too-many-vmas", lambda: json.dumps(_with(("vmas",), [{"start": (i + 1) << 12, "end": (i + 2) << 12,
                                                             "flags": 0} for i in range(5000)])),
     "more than the limit of"),
]


@pytest.mark.parametrize("make,fragment", [(m, f) for _, m, f in HOSTILE_REPLAYS],
                         ids=[n for n, _, _ in HOSTILE_REPLAYS])
def test_hostile_replay_files_are_one_line_and_exit_2(make: Any, fragment: str, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "h.hierarchy.json"
    p.write_text(make())
    rc = cli.main(["fuzz", "--replay", str(p)])
    out, err = capfd.readouterr()  # capfd: a replay child would write to the same stderr
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and fragment in lines[0], (rc, out, err)
    assert lines[0].startswith(f"foliowalk: error: {p}: not a")
    assert "Traceback" not in out + err


def test_replay_waits_for_its_child_only_so_long(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The parent's wait for the child's rows is bounded; a child that gives no answer in time is
    killed and reported (no child can answer in 0 s: it is still starting Python)."""
    from emu.cli.fuzz import replay

    p = tmp_path / "h.hierarchy.json"
    p.write_text(json.dumps(_hierarchy()))
    assert replay(p, timeout_s=0.0) == 1
    err = capfd.readouterr().err
    assert err.strip() == f"foliowalk: the replay of {p} gave no answer in 0 s", err


# ------------------------------------------------------------------------------------------------
# VMA handling is not quadratic
# ------------------------------------------------------------------------------------------------
class _CountingList(list):  # type: ignore[type-arg]
    """A list that counts the elements anyone reads from it (iteration, indexing, slicing)."""

    reads = 0

    def __iter__(self) -> Any:
        for x in super().__iter__():
            _CountingList.reads += 1
            yield x

    def __getitem__(self, i: Any) -> Any:
        got = super().__getitem__(i)
        _CountingList.reads += len(got) if isinstance(i, slice) else 1
        return got


def test_vma_insert_and_lookup_touch_log_n_vmas() -> None:
    """10k VMAs took 4.6 s, 20k 16-20 s, 100k > 90 s (every insert and lookup scanned all of
    them).  Counted instead of timed: inserting n VMAs and looking up 2n addresses (inside,
    between and beyond them, with the fuzzer's nearest-VMA rule) reads O(n log n) elements."""
    import archs
    from emu.fuzz.evaluate import Target
    from emu.mm.mm_types import VMA
    from emu.mm.scenarios import new_address_space

    ops = archs.get_ops("x86_64:4level")
    ram, _alloc, _memmap, mm, _builder = new_address_space(ops, ram_size=1 << 24)
    try:
        n, page = 4000, ops.PAGE_SIZE
        mm.vmas = _CountingList()
        order = list(range(n))
        order = order[::2] + order[1::2][::-1]  # not in address order
        for i in order:
            mm.add_vma(VMA((2 * i + 1) * page, (2 * i + 2) * page, 0, name=f"v{i}"))
        assert [v.vm_start for v in list.__iter__(mm.vmas)] == [(2 * i + 1) * page for i in range(n)]
        t = Target.__new__(Target)  # only vma_for() is used: it reads t.sc.mm and t.ops
        t.sc, t.ops = type("Sc", (), {"mm": mm})(), ops
        for i in range(n):
            assert mm.find_vma((2 * i + 1) * page + 8).name == f"v{i}"  # type: ignore[union-attr]
            assert mm.find_vma(2 * i * page) is None  # the gap below it
            assert t.vma_for(2 * i * page + 8).name == f"v{max(i - 1, 0)}" if i else True
        assert t.vma_for(1 << 47).name == f"v{n - 1}"
        with pytest.raises(Exception, match="overlaps"):
            mm.add_vma(VMA(3 * page, 5 * page, 0))
        assert _CountingList.reads < 40 * 4 * n, _CountingList.reads  # quadratic: ~n*n/2 = 8,000,000
    finally:
        ram.close()


@pytest.mark.parametrize("seconds", ["1e308", "2592001", "1e10"])
def test_fuzz_seconds_is_bounded(seconds: str, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``--seconds 1e308`` was accepted and ran until killed."""
    import emu.fuzz

    def started(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the campaign started")

    monkeypatch.setattr(emu.fuzz, "run_campaign", started)
    rc = cli.main(["fuzz", "--seconds", seconds])
    _one_line(capsys, rc, "(30 days)")


# ------------------------------------------------------------------------------------------------
# Campaigns that survive their environment: full disk, kills, a second campaign
# ------------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + str(Path(__file__).parent) + os.pathsep
            + os.environ.get("PYTHONPATH", "")}


def disk_full(index: int) -> None:
    """Test double run in a fuzz worker: its disk is full (whatever it was about to write)."""
    raise OSError(28, "No space left on device", "/the/out/folder/some-finding.hierarchy.json")


def test_a_full_disk_in_a_worker_is_one_line_and_no_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    """Unfixed: the worker died with a traceback and the campaign saved the OSError as a ``crash``
    finding of the hierarchy it was fuzzing, and exited 1."""
    import functools

    import emu.fuzz

    monkeypatch.setattr(emu.fuzz, "CampaignOptions", functools.partial(emu.fuzz.CampaignOptions,
                                                                       before_hierarchy=disk_full))
    out = tmp_path / "out"
    rc = cli.main(["fuzz", "--config", "x86_64:4level", "--hierarchies", "4", "--jobs", "2", "--out", str(out),
                   "--quiet"])
    out_text, err = capfd.readouterr()  # capfd: the workers write to the same stderr
    assert rc == 2, (out_text, err)
    assert err.strip().splitlines() == ["foliowalk: error: the campaign stopped: "
                                        "/the/out/folder/some-finding.hierarchy.json: No space left on device"], err
    assert not (out / "findings.jsonl").exists() or "crash" not in (out / "findings.jsonl").read_text()
    assert not list(out.glob("crash-*"))
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".foliowalk-fuzz.lock"]


def test_atomic_write_on_a_full_disk_names_the_file_and_leaves_no_temp(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from emu.fuzz.worker import atomic_write

    real = Path.write_bytes

    def half_then_full(self: Path, data: bytes) -> int:
        real(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(FileError, match=r"campaign\.json: No space left on device"):
        atomic_write(tmp_path / "campaign.json", b"{}" * 100)
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_run_removes_what_killed_writers_left(tmp_path: Path) -> None:
    from emu.fuzz import CampaignOptions, run_campaign

    dead = _dead_pid()
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [f".campaign.json.{dead}.tmp", f".findings.jsonl.{dead}.tmp", f".x.hierarchy.json.{dead}.tmp"]
    for name in leftovers:
        (out / name).write_text("half")
    (out / f".some-set.tmp-{dead}-abc").mkdir()
    mine = out / f".keep.json.{os.getpid()}.tmp"  # a live writer's: kept
    mine.write_text("busy")
    run_campaign(CampaignOptions(configs=["x86_64:4level"], hierarchies=1, jobs=0, out=out, progress=False))
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [".foliowalk-fuzz.lock", mine.name], hidden


def test_findings_saved_but_not_indexed_are_indexed_by_the_next_run(tmp_path: Path) -> None:
    """What a SIGKILL between saving a finding and indexing it leaves: the spec (and fixture set)
    on disk, no line in findings.jsonl.  The next run into the folder indexes it."""
    from emu.fuzz import CampaignOptions, HierarchyGenerator, run_campaign
    from emu.fuzz.outdir import read_index

    out = tmp_path / "out"
    out.mkdir()
    h = HierarchyGenerator("x86_64:4level").generate(5, 7)
    for name, verdict in (("disagree-x86_64-4level-s5-h7-1000", "disagree: test double"),
                          ("crash-x86_64-4level-s5-h7", "crash: worker exited with signal 9 (SIGKILL)")):
        (out / f"{name}.hierarchy.json").write_text(json.dumps(
            {"signature": verdict.split(":")[0] + "|x", "verdict": verdict, "hierarchy": h.to_json()}))
    (out / "findings.jsonl").write_text(json.dumps({"kind": "old", "path": str(out / "gone.hierarchy.json")})
                                        + "\n" + '{"kind": "torn')  # a torn line of an old version
    res = run_campaign(CampaignOptions(configs=["x86_64:4level"], hierarchies=1, jobs=0, out=out,
                                       progress=False))
    assert res.reindexed == 2
    recs = read_index(out)
    names = {Path(r["path"]).name for r in recs}
    assert {"disagree-x86_64-4level-s5-h7-1000.hierarchy.json", "crash-x86_64-4level-s5-h7.hierarchy.json"} <= names
    again = run_campaign(CampaignOptions(configs=["x86_64:4level"], hierarchies=1, jobs=0, out=out,
                                         progress=False))
    assert again.reindexed == 0 and len(read_index(out)) == len(recs)  # indexed once
    kinds = sorted(r["kind"] for r in recs)
    assert kinds[:3] == ["crash", "disagree", "old"]


def test_a_second_campaign_into_the_same_folder_is_refused(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from emu.fuzz.outdir import campaign_lock

    out = tmp_path / "out"
    out.mkdir()
    with campaign_lock(out):
        rc = cli.main(["fuzz", "--config", "x86_64:4level", "--hierarchies", "1", "--jobs", "0",
                       "--out", str(out), "--quiet"])
        _one_line(capsys, rc, "another campaign")
    assert sorted(p.name for p in out.iterdir()) == [".foliowalk-fuzz.lock"]
    rc = cli.main(["fuzz", "--config", "x86_64:4level", "--hierarchies", "1", "--jobs", "0", "--out", str(out),
                   "--quiet"])
    assert rc == 0 and (out / "campaign.json").exists()  # the lock goes with its holder


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_workers_exit_quietly_when_the_campaign_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the campaign process alone: unfixed, every worker printed a BrokenPipeError
    traceback.  Now each exits at its next message, silently."""
    import signal
    import time

    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "emu", "fuzz", "--config", "x86_64:4level", "--seconds",
                                 "600", "--jobs", "2", "--quiet"], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
    workers: list[int] = []
    try:
        for _ in range(600):  # until both workers run hierarchies (the progress is quiet: poll /proc)
            workers = [c for c in _children(proc.pid) if "resource_tracker" not in
                       Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
            if len(workers) == 2 and all(_children(w) == [] for w in workers):
                break
            time.sleep(0.1)
        assert len(workers) == 2, workers
        time.sleep(3)  # inside a hierarchy, not at start-up
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for _ in range(1200):
            if not any(_alive(w) for w in workers):
                break
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a worker outlived its campaign"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    text = err_path.read_text()
    assert "Traceback" not in text and "BrokenPipeError" not in text, text



@pytest.fixture
def full_fs(tmp_path: Path) -> Any:
    """A 4 MiB tmpfs, filled to the last byte (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True,
                         check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        with open(mnt / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\xff" * 65536)
                    f.flush()
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_export_on_a_full_disk_names_the_file(full_fs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["fixtures", "export", str(FIXTURE), "--raw", str(full_fs / "x.raw")])
    _one_line(capsys, rc, f"{full_fs / 'x.raw'}: No space left on device")
    assert sorted(p.name for p in full_fs.iterdir()) == ["filler"]  # no temporary file left


def test_build_on_a_full_disk_names_the_set(full_fs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["fixtures", "build", "--out", str(full_fs), "--config", "s390x:segment", "--harness", "off"])
    line = _one_line(capsys, rc, "No space left on device")
    assert f"{full_fs / 's390x-segment'}: No space left on device" in line, line
    assert sorted(p.name for p in full_fs.iterdir()) == ["filler"]


def _unindexed(out: Path) -> list[str]:
    """Findings on disk (specs, fixture sets) that findings.jsonl does not list."""
    from emu.fuzz.outdir import read_index

    indexed = set()
    for r in read_index(out):
        name = Path(r["path"]).name
        indexed.add(name.removesuffix(".hierarchy.json"))
    on_disk = {p.name.removesuffix(".hierarchy.json") for p in out.iterdir()
               if not p.name.startswith(".") and (p.name.endswith(".hierarchy.json") or p.is_dir())}
    return sorted(on_disk - indexed)


#: Seconds after the start at which the campaign's whole process group is killed.
KILL_MOMENTS = [4.0, 7.5, 11.0, 15.0]


def test_campaign_killed_at_random_moments_leaves_every_finding_indexed_after_the_next_run(tmp_path: Path) -> None:
    """SIGKILL of the process group (unfixed: 11 of 12 trials left 1-5 findings on disk that no
    run ever indexed).  arm64 4K/39 finds emulator deviations from the first hierarchies on."""
    import signal
    import time

    out = tmp_path / "out"
    base = [sys.executable, "-m", "emu", "fuzz", "--config", "arm64:4k:39", "--no-shrink", "--quiet",
            "--out", str(out)]
    for i, t in enumerate(KILL_MOMENTS):
        proc = subprocess.Popen([*base, "--seconds", "120", "--jobs", str(1 + i % 2), "--seed", str(i)], cwd=ROOT,
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(t)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        res = subprocess.run([*base, "--hierarchies", "1", "--jobs", "0", "--seed", "99"], cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode in (0, 1) and not res.stderr.strip(), res
        assert _unindexed(out) == [], (t, _unindexed(out))
    assert any(p.name.endswith(".hierarchy.json") for p in out.iterdir()), "no finding was ever saved"


@pytest.mark.parametrize("fld,count,limit", [("vmas", 5000, 4096), ("cases", 70000, 65536),
                                             ("tables", 70000, 65536)])
def test_counts_in_a_manifest_are_limited(fld: str, count: int, limit: int, a_set: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Huge arrays the checks would then walk (VMAs, cases, tables) are refused by the schema,
    in one short line (not jsonschema's own message, which prints the whole array)."""
    _edit(a_set, lambda m: m.update({fld: [m[fld][0]] * count}))
    line = _refused(a_set, capsys, "manifest.json", f"{fld}: {count} items, more than the limit of {limit}")
    assert len(line) < 300


def test_the_writer_refuses_a_set_the_loader_would_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    import archs
    import emu.fixtures.render as render
    from emu.mm.scenarios import build_default
    from emu.verify import verify_scenario

    sc = build_default(archs.get_ops("s390x:segment"))
    try:
        rows = verify_scenario(sc)
        monkeypatch.setattr(render, "MAX_POPULATED_BYTES", 4096)
        with pytest.raises(FixtureError, match=r"not written.*populated RAM"):
            render.render_fixture_set(sc, rows, name="s390x-segment")
    finally:
        sc.close()


@pytest.mark.parametrize("edit,fragment", [
    (lambda m: m["cases"][0].update(name="pte\n\x1b[2Jfake line"), "cases[0].name"),
    (lambda m: m["vmas"][0].update(name="anon\n"), "vmas[0].name"),
    (lambda m: m.update(omitted=["\x07bell"]), "omitted[0]"),
    (lambda m: m.update(name="set\x9b31m"), "name"),
    (lambda m: m["cases"][0].update(name="x" * 5000), "cases[0].name"),
], ids=["case-name-escape", "vma-name-newline", "omitted-bell", "name-c1", "case-name-long"])
def test_names_are_one_printable_line(edit: Any, fragment: str, a_set: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Names a set prints (case and VMA names, notes) hold no control character -- a newline or a
    terminal escape in a case name would forge output lines -- and are at most 4096 characters."""
    _edit(a_set, edit)
    line = _refused(a_set, capsys, "manifest.json", fragment)
    assert "control character" in line or "more than the limit of 4096" in line, line


def test_the_index_holds_each_saved_finding_once(tmp_path: Path) -> None:
    """The same finding found again by a later run (its files replaced under the same name) is
    not indexed twice (the kill trials above grew 252 index lines for 176 findings)."""
    from emu.fuzz.outdir import index_findings, read_index
    from emu.fuzz.records import FindingRecord

    out = tmp_path / "out"
    out.mkdir()
    a = FindingRecord("disagree", "k", "x86_64:4level", 1, 0x1000, "disagree: x", str(out / "f-a"))
    b = FindingRecord("disagree", "k", "x86_64:4level", 2, 0x2000, "disagree: y", str(out / "f-b.hierarchy.json"))
    index_findings(out, [a])
    index_findings(out, [a, b, b])
    index_findings(out, [FindingRecord("disagree", "k", "x86_64:4level", 2, 0x2000, "d", str(out / "f-b"))])
    assert [r["index"] for r in read_index(out)] == [1, 2]


def test_campaign_outputs_never_replace_a_special_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO where campaign.json goes (or a device given as --out) is refused and left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "campaign.json")
    rc = cli.main(["fuzz", "--config", "x86_64:4level", "--hierarchies", "1", "--jobs", "0", "--out", str(out),
                   "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"foliowalk: error: {out / 'campaign.json'}: is a FIFO, not a regular file; "
                   "refusing to replace it"], err
    assert stat.S_ISFIFO(os.lstat(out / "campaign.json").st_mode)
    rc = cli.main(["fuzz", "--hierarchies", "1", "--out", os.devnull])
    _one_line(capsys, rc, f"--out {os.devnull}: is a character device, not a folder")


@pytest.mark.parametrize("argv,fragment", [
    (["--hierarchies", str(1 << 40)], "--hierarchies 1099511627776 is more than 4294967296"),
    (["--seed", "9" * 4000], "--seed must be 0.."),
    (["--seed=-1"], "--seed must be 0.."),
], ids=["hierarchies-2^40", "seed-4000-digits", "seed-negative"])
def test_fuzz_counts_and_seed_are_bounded(argv: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A 4,000-digit seed was accepted and put into every finding's file name (too long for the
    filesystem); --hierarchies had no bound at all."""
    import emu.fuzz

    def started(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the campaign started")

    monkeypatch.setattr(emu.fuzz, "run_campaign", started)
    rc = cli.main(["fuzz", *argv])
    _one_line(capsys, rc, fragment)
