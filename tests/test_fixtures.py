"""Fixture sets: the committed ones still give every recorded answer; building is deterministic and
atomic; loading refuses corrupt sets with a message naming the file and the field; the raw export
opens in a stand-alone reader (the README's) and in volatility3."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import archs
import emu.fixtures as fx
import emu.fixtures.build as fx_build
import emu.fixtures.write as fx_write
from emu.cli import main
from emu.errors import FixtureError
from emu.fixtures import (
    FORMAT_VERSION,
    build_fixture_sets,
    check_fixture_set,
    export_raw,
    find_sets,
    load_fixture_set,
    write_fixture_set,
)
from emu.fixtures.format import sha256_hex
from emu.machines.base import Translation
from emu.machines.oracle import ORACLES
from emu.machines.ram import TAG
from emu.mm.pagewalk import flags_str
from emu.mm.scenarios import Case, build_default
from emu.verify import run_walk, verify_scenario

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "fixtures"
README = REPO / "README.md"
# Every registered configuration whose architecture has an MMU oracle (one that registers
# later is covered from then on).
KEYS = [k for k in archs.all_config_keys() if archs.get_config(k).arch in ORACLES]
X86_KEYS = [k for k in KEYS if k.startswith("x86_64:")]


def committed_sets() -> list[Path]:
    if not COMMITTED.is_dir():
        return []
    return sorted(p.parent for p in COMMITTED.glob("*/manifest.json") if not p.parent.name.startswith("."))


def files_of(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One freshly built set per registered configuration."""
    out = tmp_path_factory.mktemp("built")
    paths = build_fixture_sets(out, KEYS)
    return dict(zip(KEYS, paths, strict=True))


@pytest.fixture
def x86(built: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the x86_64:4level set, to corrupt."""
    dst = tmp_path / "x86_64-4level"
    shutil.copytree(built["x86_64:4level"], dst)
    return dst


def edit_manifest(path: Path, fn: Any) -> None:
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m, indent=1))


# -- the committed sets ----------------------------------------------------------------------------
def test_committed_fixture_sets_exist_and_stay_small() -> None:
    sets = committed_sets()
    assert sets, "fixtures/ holds no fixture set: run `foliowalk fixtures build --out fixtures`"
    total = sum(f.stat().st_size for f in COMMITTED.rglob("*") if f.is_file())
    assert total < 5_000_000, f"fixtures/ is {total} bytes; keep it under 5 MB"
    assert not [p for p in COMMITTED.iterdir() if p.name.startswith(".")], "a temporary folder was left"


@pytest.mark.parametrize("path", committed_sets(), ids=lambda p: p.name)
def test_committed_fixture_set_gives_every_recorded_answer(path: Path) -> None:
    """Re-walk, re-probe and re-decode everything a committed set records: any change to an
    answer (walk, MMU, verdict, registers, entry decoding) shows up here."""
    assert check_fixture_set(path) == []


# -- building ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_build_is_deterministic_and_checks_clean(key: str, built: dict[str, Path], tmp_path: Path) -> None:
    again = build_fixture_sets(tmp_path, [key])[0]
    assert again.name == built[key].name == fx.default_set_name(key)
    assert files_of(again) == files_of(built[key]), "two builds of one configuration differ"
    assert check_fixture_set(again) == []


@pytest.mark.parametrize("key", KEYS)
def test_loaded_set_rebuilds_a_scenario_that_walks_the_same(key: str, built: dict[str, Path]) -> None:
    fs = load_fixture_set(built[key])
    assert fs.manifest["format_version"] == FORMAT_VERSION and fs.config == key
    m = fs.manifest
    assert m["root_table"] == fs.root_table and m["ram_size"] == fs.ram_size
    assert m["registers"], "the MMU registers are recorded"
    assert m["image"]["size"] < 2_000_000, "the image keeps only the pages in use"
    sc = fs.to_scenario(with_oracle=False)
    try:
        assert sc.mm.pgd == fs.root_table and sc.mm.zero_pfn == fs.zero_pfn
        assert sc.mm.huge_zero_pfn == fs.huge_zero_pfn
        assert [(c.name, c.addr) for c in sc.cases] == [(n, a) for n, a, _ in fs.cases]
        for ch in fs.checks:
            for flags, walk, _ in ch.walks:
                assert run_walk(sc, sc.cases[ch.case], flags).to_json() == walk
    finally:
        sc.close()


def test_set_records_each_address_access_and_flags(built: dict[str, Path]) -> None:
    m = json.loads((built["x86_64:4level"] / "manifest.json").read_text())
    assert m["arch"] == "x86_64" and m["config"] == "x86_64:4level" and m["kernel"] == "v6.12"
    assert m["endianness"] == "little" and m["page_size"] == 4096
    assert set(m["registers"]) >= {"CR0", "CR3", "CR4", "EFER"} and m["registers"]["CR3"] == m["root_table"]
    assert {v["name"] for v in m["vmas"]} >= {"anon", "pfnmap", "mixedmap", "fsdax"}
    assert len(m["checks"]) == len(m["cases"])
    for ch in m["checks"]:
        assert ch["access"] == "kernel-read" and ch["addr"] == m["cases"][ch["case"]]["addr"]
        flags = [w["walk"]["flags"] for w in ch["walks"]]
        assert flags == ["0", "FW_MIGRATION", "FW_ZEROPAGE", "FW_MIGRATION|FW_ZEROPAGE"]
        assert all(w["verdict"] for w in ch["walks"])
    assert sum(m["summary"].values()) == 4 * len(m["checks"])
    # pages outside the image are zero; tagged pages are described, not stored
    assert m["image"]["tagged"] and m["image"]["extents"]


def test_entries_are_single_entry_vectors(built: dict[str, Path]) -> None:
    for key, path in built.items():
        ops = archs.get_ops(key)
        lines = [json.loads(x) for x in (path / "entries.jsonl").read_text().splitlines()]
        assert lines and len({(e["linux_level"], e["pa"], e["value"]) for e in lines}) == len(lines)
        for e in lines:
            hw = ops.hw_level(e["linux_level"])
            assert e["arch"] == ops.arch and e["config"] == key and e["hw_level"] == hw.name
            assert e["decoded"] == dict(ops.decode(hw.linux, e["value"]))  # type: ignore[attr-defined]
            assert f"{e['linux_level']}_none" in e["predicates"]
        if key.startswith("x86_64"):
            names = {k for e in lines for k in e["predicates"]}
            assert {"pte_present", "pte_special", "pte_protnone", "pmd_leaf", "pud_devmap"} <= names
            swaps = [e["predicates"].get("pte_to_swp_entry") for e in lines]
            swaps = [s for s in swaps if s]
            assert {s["swp_type_name"] for s in swaps} >= {"migration-read", "migration-write", "swapfile-3"}


def test_fuzzer_style_write_with_name_extra_and_own_address(tmp_path: Path) -> None:
    sc = build_default(archs.get_ops("x86_64:4level"))
    try:
        vma = sc.mm.vmas[0]
        sc.cases = [sc.cases[0], Case("user address in anon", vma.vm_start + 0x123000, vma)]
        rows = verify_scenario(sc)
        path = write_fixture_set(tmp_path, sc, rows, name="finding-1", extra={"seed": 7, "note": "x"})
        with pytest.raises(FixtureError, match="extra"):
            write_fixture_set(tmp_path, sc, rows, name="bad-extra", extra={"x": object()})
        with pytest.raises(FixtureError, match="set name"):
            write_fixture_set(tmp_path, sc, rows, name="../escape")
    finally:
        sc.close()
    assert path == tmp_path / "finding-1"
    fs = load_fixture_set(path)
    assert fs.manifest["extra"] == {"seed": 7, "note": "x"} and len(fs.checks) == 2
    assert check_fixture_set(path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finding-1"]


def test_rows_that_do_not_reproduce_on_the_saved_ram_are_refused(tmp_path: Path) -> None:
    """A set must pass its own check: rows whose walk no longer comes out the same on the RAM
    being saved (RAM changed after the walk) are refused, and nothing is written."""
    sc, rows = _scenario_rows()
    try:
        pte_pa = rows[0].walk.entry_pa
        assert pte_pa is not None
        sc.ram.write_u64(pte_pa, 0)
        refused = r"does not reproduce on the RAM being saved.*walk\.found: recorded true, now false"
        with pytest.raises(FixtureError, match=refused):
            write_fixture_set(tmp_path, sc, rows)
    finally:
        sc.close()
    assert list(tmp_path.iterdir()) == []


# -- atomic writing ---------------------------------------------------------------------------------
def _scenario_rows() -> tuple[Any, Any]:
    sc = build_default(archs.get_ops("x86_64:4level"))
    return sc, verify_scenario(sc)


def test_rewrite_replaces_a_set_and_leaves_no_temporary_folder(
    built: dict[str, Path], tmp_path: Path
) -> None:
    old = tmp_path / "x86_64-4level"
    shutil.copytree(built["x86_64:4level"], old)
    (old / "stale-file").write_text("from an older set")
    stale = tmp_path / ".x86_64-4level.tmp-999999999-zz"  # from a killed build (no such pid)
    stale.mkdir()
    sc, rows = _scenario_rows()
    try:
        assert write_fixture_set(tmp_path, sc, rows) == old
    finally:
        sc.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x86_64-4level"]
    assert files_of(old) == files_of(built["x86_64:4level"])


def test_rewrite_without_atomic_exchange_still_lands(
    built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(built["x86_64:4level"], tmp_path / "x86_64-4level")
    (tmp_path / "x86_64-4level" / "stale-file").write_text("old")
    monkeypatch.setattr(fx_write, "_exchange", lambda a, b: False)
    sc, rows = _scenario_rows()
    try:
        write_fixture_set(tmp_path, sc, rows)
    finally:
        sc.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x86_64-4level"]
    assert files_of(tmp_path / "x86_64-4level") == files_of(built["x86_64:4level"])


@pytest.mark.parametrize("existing", [True, False])
def test_interrupted_write_leaves_the_old_set_or_none(
    existing: bool, built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x86_64-4level"
    if existing:
        shutil.copytree(built["x86_64:4level"], target)
        before = files_of(target)
    real = fx_write._write_file
    calls = []

    def dying_write(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C half-way through the set
        real(path, data)

    monkeypatch.setattr(fx_write, "_write_file", dying_write)
    sc, rows = _scenario_rows()
    try:
        with pytest.raises(KeyboardInterrupt):
            write_fixture_set(tmp_path, sc, rows)
    finally:
        sc.close()
    if existing:
        assert files_of(target) == before
        assert check_fixture_set(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == (["x86_64-4level"] if existing else [])


def test_ctrl_c_during_build_keeps_the_sets_already_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = fx_build.build_fixture_set
    calls = []

    def build_then_interrupt(out_dir: Path, key: str, kernel: str | None = None) -> Any:
        calls.append(key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(out_dir, key, kernel)

    monkeypatch.setattr(fx_build, "build_fixture_set", build_then_interrupt)
    configs = ["--config", "x86_64:4level", "--config", "x86_64:5level"]
    rc = main(["fixtures", "build", "--out", str(tmp_path), *configs])
    out, err = capsys.readouterr()
    assert rc == 130 and "1 of 2 sets written" in err
    assert re.search(r"^\[1/2\] x86_64:4level: .*x86_64-4level .*rows", out, re.M), out
    assert [p.name for p in tmp_path.iterdir()] == ["x86_64-4level"]
    assert check_fixture_set(tmp_path / "x86_64-4level") == []


# -- bad input ----------------------------------------------------------------------------------------
def _truncate(p: Path) -> None:
    data = (p / "memory.bin").read_bytes()
    (p / "memory.bin").write_bytes(data[:-100])


def _version(p: Path) -> None:
    edit_manifest(p, lambda m: m.update(format_version=2))


def _beyond_image(p: Path) -> None:
    edit_manifest(p, lambda m: m["image"]["extents"][0].update(offset=m["image"]["size"]))


def _beyond_ram(p: Path) -> None:
    edit_manifest(p, lambda m: m["image"]["tagged"][0].update(pa=m["ram_size"]))


def _str_for_int(p: Path) -> None:
    edit_manifest(p, lambda m: m.update(ram_size="3G"))


def _obj_for_array(p: Path) -> None:
    edit_manifest(p, lambda m: m.update(checks={}))


def _float_addr(p: Path) -> None:
    edit_manifest(p, lambda m: m["cases"][2].update(addr=1.5))


def _bool_for_int(p: Path) -> None:
    edit_manifest(p, lambda m: m["vmas"][0].update(vm_flags=True))


def _escape_dotdot(p: Path) -> None:
    shutil.copy(p / "memory.bin", p.parent / "memory.bin")
    edit_manifest(p, lambda m: m["image"].update(file="../memory.bin"))


def _escape_absolute(p: Path) -> None:
    edit_manifest(p, lambda m: m["entries"].update(file=str((p / "entries.jsonl").resolve())))


def _escape_symlink(p: Path) -> None:
    outside = p.parent / "elsewhere.bin"
    shutil.move(p / "memory.bin", outside)
    os.symlink(outside, p / "memory.bin")


def _missing_entries(p: Path) -> None:
    (p / "entries.jsonl").unlink()


def _missing_image(p: Path) -> None:
    (p / "memory.bin").unlink()


def _missing_manifest(p: Path) -> None:
    (p / "manifest.json").unlink()


def _not_json(p: Path) -> None:
    (p / "manifest.json").write_text('{"format": "foliowalk-fixture", ')


def _overlap(p: Path) -> None:
    edit_manifest(p, lambda m: m["image"]["tagged"][0].update(pa=m["image"]["extents"][0]["pa"]))


def _edited_image(p: Path) -> None:
    data = bytearray((p / "memory.bin").read_bytes())
    data[8] ^= 1
    (p / "memory.bin").write_bytes(bytes(data))


def _entries_truncated(p: Path) -> None:
    data = (p / "entries.jsonl").read_bytes()
    (p / "entries.jsonl").write_bytes(data[: len(data) // 2])


def _unknown_config(p: Path) -> None:
    edit_manifest(p, lambda m: m.update(config="x86_64:6level"))


def _missing_field(p: Path) -> None:
    edit_manifest(p, lambda m: m.pop("root_table"))


BAD = [
    (_truncate, "memory.bin", r"size: .*truncated"),
    (_version, "manifest.json", r"format_version: unknown format version 2"),
    (_beyond_image, "manifest.json", r"image\.extents\[0\]: .*outside the image"),
    (_beyond_ram, "manifest.json", r"image\.tagged\[0\]: .*outside RAM"),
    (_str_for_int, "manifest.json", r"ram_size: must be an integer, got string"),
    (_obj_for_array, "manifest.json", r"checks: must be an array, got object"),
    (_float_addr, "manifest.json", r"cases\[2\]\.addr: must be an integer, got number"),
    (_bool_for_int, "manifest.json", r"vmas\[0\]\.vm_flags: must be an integer, got boolean"),
    (_escape_dotdot, "manifest.json", r"image\.file: '\.\./memory\.bin' escapes"),
    (_escape_absolute, "manifest.json", r"entries\.file: .* must be a relative path"),
    (_escape_symlink, "manifest.json", r"image\.file: 'memory\.bin' escapes .*resolves to"),
    (_missing_entries, "manifest.json", r"entries\.file: 'entries\.jsonl' is missing"),
    (_missing_image, "manifest.json", r"image\.file: 'memory\.bin' is missing"),
    (_missing_manifest, "x86_64-4level", r"manifest\.json: 'manifest\.json' is missing"),
    (_not_json, "manifest.json", r"\(document\): not valid JSON"),
    (_overlap, "manifest.json", r"overlaps image\.extents\[0\]"),
    (_edited_image, "memory.bin", r"sha256: contents do not match"),
    (_entries_truncated, "entries.jsonl", r"sha256: contents do not match"),
    (_unknown_config, "manifest.json", r"config: unknown configuration '6level'"),
    (_missing_field, "manifest.json", r"root_table: missing"),
]


@pytest.mark.parametrize("corrupt,file,message", BAD, ids=[b[0].__name__.strip("_") for b in BAD])
def test_corrupt_set_is_refused_naming_file_and_field(
    corrupt: Any, file: str, message: str, x86: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt(x86)
    with pytest.raises(FixtureError) as info:
        load_fixture_set(x86)
    text = str(info.value)
    assert file in text and re.search(message, text), text
    rc = main(["fixtures", "check", str(x86)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("foliowalk: error: ") and file in lines[0], err
    assert "Traceback" not in err
    assert main(["fixtures", "export", str(x86), "--raw", str(x86.parent / "out.raw")]) == 2
    assert not (x86.parent / "out.raw").exists()
    capsys.readouterr()


def test_check_of_a_missing_or_empty_folder_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fixtures", "check", str(tmp_path / "nope")]) == 2
    assert "no such fixture-set folder" in capsys.readouterr().err
    assert main(["fixtures", "check", str(tmp_path)]) == 2
    assert "no fixture set here" in capsys.readouterr().err
    with pytest.raises(FixtureError):
        find_sets([tmp_path])


# -- differences ------------------------------------------------------------------------------------
def test_changed_answers_are_reported_and_exit_1(x86: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(m: dict[str, Any]) -> None:
        m["checks"][0]["walks"][1]["verdict"] = "disagree: edited"
        m["checks"][1]["walks"][0]["walk"]["page_pfn"] += 1
        m["checks"][2]["mmu"]["pa"] += 8
        m["registers"]["CR4"] ^= 0x80

    edit_manifest(x86, edit)
    diffs = check_fixture_set(x86)
    verdict = "verdict: recorded 'disagree: edited', now 'agree'"
    assert any(verdict in d and "FW_MIGRATION" in d for d in diffs), diffs
    assert any("walk.page_pfn: recorded" in d for d in diffs)
    assert any("mmu.pa: recorded" in d for d in diffs)
    assert any("registers.CR4" in d for d in diffs)
    assert len(diffs) == 4, diffs
    assert main(["fixtures", "check", str(x86)]) == 1
    out = capsys.readouterr().out
    assert "DIFF" in out and "1 differ" in out


def test_changed_table_entry_in_the_image_is_reported(x86: Path) -> None:
    """Clear the P bit of the first case's PTE inside memory.bin (sha256 updated): the walk and
    the MMU both change, and check says so."""
    m = json.loads((x86 / "manifest.json").read_text())
    pte_pa = m["checks"][0]["walks"][0]["walk"]["entry_pa"]
    ext = next(e for e in m["image"]["extents"] if e["pa"] <= pte_pa < e["pa"] + e["size"])
    data = bytearray((x86 / "memory.bin").read_bytes())
    data[ext["offset"] + pte_pa - ext["pa"]] &= 0xFE
    (x86 / "memory.bin").write_bytes(bytes(data))
    edit_manifest(x86, lambda m: m["image"].update(sha256=sha256_hex(bytes(data))))
    diffs = check_fixture_set(x86)
    assert any("walk.reason: recorded 'found'" in d for d in diffs), diffs
    assert any("mmu.fault: not recorded, now 'page-fault'" in d for d in diffs), diffs


def test_changed_entry_vector_is_reported(x86: Path) -> None:
    lines = (x86 / "entries.jsonl").read_text().splitlines()
    e = json.loads(lines[0])
    e["decoded"]["p"] ^= 1
    lines[0] = json.dumps(e, separators=(",", ":"))
    data = ("\n".join(lines) + "\n").encode()
    (x86 / "entries.jsonl").write_bytes(data)
    edit_manifest(x86, lambda m: m["entries"].update(sha256=sha256_hex(data)))
    diffs = check_fixture_set(x86)
    assert len(diffs) == 1 and "entries.jsonl line 1: entry.decoded" in diffs[0], diffs


# -- replay through verify ------------------------------------------------------------------------------
def test_verify_replays_a_fixture_set(built: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = built["x86_64:5level"]
    assert main(["verify", "--fixture", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fs = load_fixture_set(path)
    assert len(doc["rows"]) == fs.rows_count()
    recorded = [(ch.addr, flags_str(f), v) for ch in fs.checks for f, _, v in ch.walks]
    assert [(r["addr"], r["walk"]["flags"], r["verdict"]) for r in doc["rows"]] == recorded
    assert main(["verify", "--fixture", str(path), "--addr", "0x1000"]) == 2
    capsys.readouterr()


# -- the raw export -----------------------------------------------------------------------------------------
def _readme_block(marker: str) -> str:
    text = README.read_text()
    m = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.S)
    assert m, f"README has no python block after <!-- {marker} -->"
    return m.group(1)


@pytest.mark.parametrize("key", X86_KEYS)
def test_raw_export_with_the_readme_reader(key: str, built: dict[str, Path], tmp_path: Path) -> None:
    path = built[key]
    raw = export_raw(path, tmp_path / "ram.raw")
    fs = load_fixture_set(path)
    st = raw.stat()
    assert st.st_size == fs.ram_size
    assert st.st_blocks * 512 < 64 << 20, "the export is sparse"
    with open(raw, "rb") as f:
        for pa, off, size in fs.extents:
            f.seek(pa)
            assert f.read(size) == fs.image[off : off + size]
        for pa, size in fs.tagged:
            f.seek(pa + size - 8)
            assert int.from_bytes(f.read(8), "little") == TAG | (pa + size - 8)
    ns: dict[str, Any] = {}
    exec(compile(_readme_block("fixture-reader"), "README.md", "exec"), ns)
    translate = ns["translate"]
    for ch in fs.checks:
        got = translate(str(raw), str(path / "manifest.json"), ch.addr)
        assert got == ch.mmu.get("pa"), (fs.cases[ch.case][0], got, ch.mmu)
    assert any(ch.mmu.get("pa") for ch in fs.checks) and any("fault" in ch.mmu for ch in fs.checks)


@pytest.mark.parametrize("key", KEYS)
def test_raw_export_is_the_rebuilt_ram(key: str, built: dict[str, Path], tmp_path: Path) -> None:
    """Byte for byte over every range the image describes (raw, fills, tagged), any byte order."""
    fs = load_fixture_set(built[key])
    raw = export_raw(built[key], tmp_path / "ram.raw")
    sc = fs.to_scenario(with_oracle=False)
    try:
        ranges = [(pa, size) for pa, _, size in fs.extents] + [(pa, size) for pa, size, _ in fs.fills]
        ranges += fs.tagged
        assert ranges
        with open(raw, "rb") as f:
            for pa, size in ranges:
                f.seek(pa)
                assert f.read(size) == sc.ram.read(pa, size), hex(pa)
    finally:
        sc.close()


def test_raw_export_opens_in_volatility3(built: dict[str, Path], tmp_path: Path) -> None:
    from volatility3.framework import exceptions

    path = built["x86_64:4level"]
    raw = export_raw(path, tmp_path / "ram.raw")
    ns: dict[str, Any] = {}
    exec(compile(_readme_block("fixture-volatility3"), "README.md", "exec"), ns)
    layer = ns["volatility_layer"](str(raw), str(path / "manifest.json"))
    fs = load_fixture_set(path)
    for ch in fs.checks:
        try:
            pa = layer.translate(ch.addr)[0]
        except exceptions.InvalidAddressException:
            pa = None
        assert pa == ch.mmu.get("pa"), fs.cases[ch.case][0]
        if pa is not None and ch.mmu.get("observed_by") == "tag":
            word = int.from_bytes(layer.read(ch.addr & ~7, 8), "little")
            assert word == TAG | (pa & ~7)


def test_export_cli_prints_root_and_registers(
    built: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.raw"
    assert main(["fixtures", "export", str(built["x86_64:4level"]), "--raw", str(out)]) == 0
    text = capsys.readouterr().out
    fs = load_fixture_set(built["x86_64:4level"])
    assert f"root table {fs.root_table:#x}" in text and "CR3=" in text and out.exists()


def test_check_cli_on_good_sets_is_exit_0(built: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder = built["x86_64:4level"].parent
    assert main(["fixtures", "check", str(folder), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {s["status"] for s in doc["sets"]} == {"ok"} and len(doc["sets"]) == len(KEYS)


def test_translation_results_are_observed_not_computed(built: dict[str, Path]) -> None:
    """Sanity of what the sets record: translated rows were observed by a tag word."""
    fs = load_fixture_set(built["x86_64:4level"])
    sc = fs.to_scenario(with_oracle=True)
    try:
        rows, regs = fx.replay(fs, sc)
    finally:
        sc.close()
    assert regs == fs.registers
    assert all(r.mmu.observed_by == "tag" for r in rows if isinstance(r.mmu, Translation))
