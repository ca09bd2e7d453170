"""The public API (``import foliowalk``), its packaging and its generated reference.

Expectations come from outside foliowalk: the x86-64 PTE layout (SDM vol. 3A table 4-19: P, R/W,
U/S, A, D, frame in bits 51:12) and the page numbers the test itself maps."""

from __future__ import annotations

import inspect
import os
import pydoc
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import emu
import foliowalk as fw
import foliowalk.fixtures
import foliowalk.strategies

ROOT = Path(__file__).resolve().parents[2]


def _py(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, check=False,
                          cwd=cwd, env=env or os.environ.copy())


def test_readme_example_runs_and_is_in_the_readme() -> None:
    """The 10-line script of the README ("Use it from Python") is examples/walk_and_probe.py,
    verbatim, and it runs: a 4-page folio mapped at 0x7f0000010000, its second page reached."""
    script = ROOT / "examples" / "walk_and_probe.py"
    code = script.read_text()
    assert len(code.strip().splitlines()) == 10
    assert code.strip() in (ROOT / "README.md").read_text()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = _py(str(script), env=env)
    assert res.returncode == 0, res.stderr
    walk, mmu, verdicts = res.stdout.strip().splitlines()
    # the walk: page 1 of an order-2 folio at PTE level; the entry P|RW|US|A|D for that frame
    parts = walk.split()
    folio, page = int(parts[1].split("/")[0], 16), int(parts[3], 16)
    assert parts[1].endswith("/o2") and page == folio + 1 and "PTE (normal)" in walk
    entry = int(walk.split("entry ")[1], 16)
    assert entry & 0x67 == 0x67 and (entry >> 12) & ((1 << 40) - 1) == page
    assert mmu == f"Translation(pa={(page << 12) + 0x234:#x}, observed_by='tag')"
    assert verdicts == "['agree', 'agree', 'agree', 'agree']"


def test_help_shows_the_api() -> None:
    text = pydoc.render_doc(fw, renderer=pydoc.plaintext)
    for name in ("AddressSpace", "folio_walk_start", "walk_many", "probe_many", "verify", "explain", "FwLevel"):
        assert name in text, name


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for name in fw.__all__:
        obj = getattr(fw, name)
        if isinstance(obj, (int, str, tuple)) and not isinstance(obj, fw.FwLevel):
            continue  # constants (FW_MIGRATION, __version__, FLAG_COMBINATIONS): documented in the module
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(name)
    for name, member in inspect.getmembers(fw.AddressSpace):
        if not name.startswith("_") and not (inspect.getdoc(member) or "").strip():
            missing.append(f"AddressSpace.{name}")
    for mod in (foliowalk.fixtures, foliowalk.strategies):
        for name in mod.__all__:
            if not (inspect.getdoc(getattr(mod, name)) or "").strip():
                missing.append(f"{mod.__name__}.{name}")
    assert missing == []


def test_fw_level_prints_its_name() -> None:
    assert str(fw.FW_LEVEL_PTE) == "FwLevel.PTE" and f"{fw.FW_LEVEL_PMD}" == "FwLevel.PMD"
    assert fw.FW_LEVEL_PUD == 2 and repr(fw.FW_LEVEL_PUD) == "FwLevel.PUD"
    with fw.AddressSpace("x86_64:4level", mmu=False) as space:
        vma = space.add_vma(0x7F0000000000, 0x7F0000200000)
        space.map(0x7F0000010000, space.alloc_folio(0))
        with space.mm.mmap_read(), fw.folio_walk(vma, 0x7F0000010008) as w:
            assert w.folio is not None and str(w.level) == "FwLevel.PTE" and w.level == fw.FW_LEVEL_PTE


def test_address_space_from_a_spec_and_the_functions() -> None:
    spec = ROOT / "examples" / "x86_64-4level.hierarchy.json"
    with fw.AddressSpace.from_spec(spec) as space:
        assert space.config == "x86_64:4level" and len(space.addrs) == 6
        walks = fw.walk_many(space, space.addrs)
        probes = fw.probe_many(space, space.addrs)
        rows = space.verify()
    assert walks[0].found and walks[0].level == "PTE"
    assert isinstance(probes[0], fw.Translation) and probes[0].pa == (walks[0].page_pfn << 12) + 0x10
    assert isinstance(probes[1], fw.Fault)  # the migration entry: P=0
    assert len(rows) == 24 and not any(r.verdict.startswith("disagree") for r in rows)


def test_explain_from_python() -> None:
    ex = fw.explain("x86_64:4level", pte=0x8000000000065067, harness="off", walk=False)
    (view,) = ex.views
    assert view.fields["p"] == 1 and view.fields["addr"] == 0x65 and view.linux["pte_present"] == 1


def test_version_is_the_package_version() -> None:
    res = _py("-m", "emu", "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"foliowalk {emu.__version__}" == f"foliowalk {fw.__version__}"


def test_license_is_mit() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


def _copy_source(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".mypy_cache", ".ruff_cache")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dst / name)
    for name in ("archs", "emu", "foliowalk", "bench"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    return dst


def test_the_wheel_has_no_bench_package(tmp_path: Path) -> None:
    """``pip wheel`` of a copy of the source (so no stale build/ folder counts): the wheel holds
    foliowalk, archs and emu, the LICENSE, and no top-level ``bench``."""
    (tmp_path / "src").mkdir()
    src = _copy_source(tmp_path / "src")
    res = _py("-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp_path / "dist"))
    assert res.returncode == 0, res.stderr[-2000:]
    (whl,) = (tmp_path / "dist").glob("foliowalk-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"foliowalk", "archs", "emu", f"foliowalk-{emu.__version__}.dist-info"}, top
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)


def test_bench_command_refuses_somebody_elses_bench(tmp_path: Path) -> None:
    """In a folder with its own ``bench/`` package, ``foliowalk bench`` never runs it: it says
    that the benchmarks run from a source checkout (one line, exit 2)."""
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("print('SOMEBODY ELSE')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = _py("-m", "emu", "bench", "--quick", cwd=tmp_path, env=env)
    assert res.returncode == 2 and "SOMEBODY ELSE" not in res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == [
        "foliowalk: error: bench: the benchmarks run from a foliowalk source checkout: cd into it and run "
        "python -m bench (pip install '.[bench]' adds volatility3's timings)"]


def test_api_reference_builds(tmp_path: Path) -> None:
    """docs/api: pdoc renders the docstrings of foliowalk, foliowalk.fixtures and
    foliowalk.strategies; the pages hold every public name of the facade."""
    res = _py("-m", "pdoc", "-o", str(tmp_path), "foliowalk", "foliowalk.fixtures", "foliowalk.strategies")
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "foliowalk.html").read_text()
    for name in ("AddressSpace", "walk_many", "probe_many", "folio_walk_start", "FwLevel", "explain"):
        assert f'id="{name}"' in page, name
    assert "Write fixture sets into folder" in (tmp_path / "foliowalk" / "fixtures.html").read_text()


def test_fixtures_build_load_check_from_python(tmp_path: Path) -> None:
    spec = ROOT / "examples" / "x86_64-4level.hierarchy.json"
    (path,) = foliowalk.fixtures.build(tmp_path, spec=spec)
    assert path == tmp_path / "x86_64-4level"
    fs = foliowalk.fixtures.load(path)
    assert fs.config == "x86_64:4level"
    assert foliowalk.fixtures.check(path) == []


def test_strategies_draw_entries_the_arch_decodes() -> None:
    from hypothesis import given, settings

    ops = fw.ops("arm64:4k:48")

    @settings(max_examples=20, deadline=None)
    @given(foliowalk.strategies.entries("arm64:4k:48", "pte"))
    def check(value: int) -> None:
        assert 0 <= value < 1 << 64
        assert "format" in ops.decode("pte", value)

    check()


def test_arm64_both_halves() -> None:
    """arm64 translates the low half through TTBR0_EL1 and the high half (bits 63:48 set) through
    TTBR1_EL1: a page mapped in each is reached at its own frame (4K granule, offset 0x10)."""
    with fw.AddressSpace("arm64:4k:48") as space:
        space.add_vma(0xFFFF000000000000, 0xFFFF000000200000)
        space.add_vma(0x7F0000000000, 0x7F0000200000)
        hi, lo = space.alloc_folio(0), space.alloc_folio(0)
        space.map(0xFFFF000000010000, hi)
        space.map(0x7F0000010000, lo)
        addrs = [0xFFFF000000010010, 0x7F0000010010]
        got = space.probe_many(addrs)
        assert [r.pa for r in got] == [(hi.pfn << 12) + 0x10, (lo.pfn << 12) + 0x10]  # type: ignore[union-attr]
        assert {r.verdict for r in space.verify(addrs)} == {"agree"}


def test_anyones_tables_through_the_public_names_only() -> None:
    """Issue 19: foreign tables translate with documented names alone (foliowalk.translate,
    foliowalk.Tables).  A 4-level x86-64 walk built by hand from the SDM (vol. 3A §4.5, tables
    4-14..4-20): CR3 0x1000, PML4E/PDPTE/PDE with P|RW (0x3) pointing to the next table, PTE 1
    mapping the page at 0x5000; and PTE 2 not present."""
    import foliowalk

    entries = {0x1000: 0x2003, 0x2000: 0x3003, 0x3000: 0x4003, 0x4008: 0x5003}
    got = foliowalk.translate("x86_64:4level", 0x1234, entries=entries, cr3=0x1000)
    assert (got.pa, got.size) == (0x5234, 0x1000)
    assert [e.pa for e in got.trace] == [0x1000, 0x2000, 0x3000, 0x4008]
    fault = foliowalk.translate("x86_64:4level", 0x2000, "user-write", entries=entries, cr3=0x1000)
    assert (fault.kind, fault.code) == ("page-fault", 0b110)  # P=0, W/R=1, U/S=1 (§4.7)
    with foliowalk.Tables("x86_64:4level", entries=entries, cr3=0x1000) as tables:
        rows = tables.check([0x1234, 0x2000])
        assert [r.verdict for r in rows] == ["agree", "agree"]
