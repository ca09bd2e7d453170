"""Robustness (issue 8), part 4: random bytes into every loader and decoder (Hypothesis).

* Fixture sets: random bytes as ``manifest.json``; a valid manifest with any one node replaced by
  any JSON value (or removed); random bytes as ``memory.bin`` and random lines as
  ``entries.jsonl`` (their sha256 and sizes updated, so the loader has to read them).  Each set
  either loads -- and then checks, i.e. is rebuilt, re-walked and re-probed: random tables are
  hostile tables -- or is refused with :class:`~emu.errors.FixtureError` (the documented error
  family, :class:`~emu.errors.FoliowalkError`).  Nothing else may come out.
* ``foliowalk fuzz --replay``'s loader: random JSON and bytes give one line and exit 2.
* Entry decoders, for every configuration of every architecture and every Linux level: each
  architecture's ``decode``/``entry_format``, Linux's predicates, ``pXd_pfn``, ``table_pa``,
  ``pte_to_swp_entry``/``pmd_to_swp_entry``, ``hw_absent_reason`` and the fixture entry vector
  never raise on any 64-bit value; ``EntryFormat.parse`` of every declared format never raises and
  builds back to the same value.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import archs
import emu.fixtures as fx
from archs.base import LINUX_LEVELS, EntryFormat
from emu import cli
from emu.errors import FixtureError, FoliowalkError

ROOT = Path(__file__).resolve().parents[2]
#: Small committed sets, one per architecture.
SETS = ["x86_64-4level", "arm64-16k-36", "s390x-segment"]
U64 = (1 << 64) - 1
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.sampled_from([0, 1, -1, U64, U64 + 1, 4096])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A private copy of each small set (the examples rewrite files in it, then restore them)."""
    base = tmp_path_factory.mktemp("sets")
    copies = {}
    for name in SETS:
        shutil.copytree(ROOT / "fixtures" / name, base / name)
        copies[name] = base / name
    yield copies


class _Edited:
    """Rewrite some of a set's files for one example, and put the originals back afterwards."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.saved = {p.name: p.read_bytes() for p in d.iterdir()}

    def __enter__(self) -> _Edited:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.d.iterdir():
            if p.name not in self.saved:
                p.unlink()
        for name, data in self.saved.items():
            (self.d / name).write_bytes(data)

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.saved["manifest.json"])  # type: ignore[no-any-return]

    def write_manifest(self, m: Any) -> None:
        (self.d / "manifest.json").write_text(json.dumps(m))


def _load_and_check(d: Path) -> str:
    """Load the set; if it loads, check it (rebuild, re-walk, re-probe, re-decode).  Returns
    what happened; any exception other than a FixtureError propagates and fails the test."""
    try:
        fx.load_fixture_set(d)
    except FixtureError as err:
        assert str(err), "a FixtureError names the file and the field"
        return "refused"
    try:
        diffs = fx.check_fixture_set(d)
    except FoliowalkError:  # FixtureError, or e.g. more RAM than this host can map
        return "refused when rebuilt"
    assert isinstance(diffs, list) and all(isinstance(x, str) for x in diffs)
    return "checked"


# ------------------------------------------------------------------------------------------------
# Fixture-set loader
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SETS)
@settings(max_examples=30, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_random_bytes_as_a_manifest(name: str, data: bytes, workdir: dict[str, Path]) -> None:
    with _Edited(workdir[name]) as ed:
        (ed.d / "manifest.json").write_bytes(data)
        with pytest.raises(FixtureError):
            fx.load_fixture_set(ed.d)
        assert cli.main(["fixtures", "check", str(ed.d)]) == 2


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON document (dict keys and list indices), the root excluded."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*path, k)
            yield from _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):  # the first few items of long lists are enough
            yield (*path, i)
            yield from _nodes(v, (*path, i))


_PATHS = {name: list(_nodes(json.loads((ROOT / "fixtures" / name / "manifest.json").read_text())))
          for name in SETS}


@pytest.mark.parametrize("name", SETS)
@settings(max_examples=60, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_one_manifest_field_replaced_by_anything(name: str, data: st.DataObject, workdir: dict[str, Path]) -> None:
    with _Edited(workdir[name]) as ed:
        m = ed.manifest()
        path = data.draw(st.sampled_from(_PATHS[name]), label="field")
        parent = m
        for step in path[:-1]:
            parent = parent[step]
        how = data.draw(st.sampled_from(["replace", "remove", "nudge"]), label="how")
        old = parent[path[-1]]
        if how == "remove":
            del parent[path[-1]]
        elif how == "nudge" and isinstance(old, int) and not isinstance(old, bool):
            parent[path[-1]] = old + data.draw(st.sampled_from([-4096, -8, -1, 1, 8, 4096, 1 << 32, 1 << 63]))
        else:
            parent[path[-1]] = data.draw(json_values, label="value")
        ed.write_manifest(m)
        event(_load_and_check(ed.d))


@pytest.mark.parametrize("name", SETS)
@settings(max_examples=12, **SETTINGS)  # type: ignore[arg-type]
@given(seed=st.binary(min_size=16, max_size=16), keep=st.floats(0.0, 0.95))
def test_random_image_loads_and_checks_or_is_refused(name: str, seed: bytes, keep: float,
                                                     workdir: dict[str, Path]) -> None:
    """Random page contents (the set's own sha256 and size kept consistent): random tables,
    walked and probed when the set is checked -- or, with a shorter image, refused."""
    with _Edited(workdir[name]) as ed:
        m = ed.manifest()
        size = m["image"]["size"]
        stream = hashlib.shake_256(seed).digest(size)
        old = ed.saved["memory.bin"]
        # Keep a fraction of the original bytes (so tables still lead somewhere), randomise the rest.
        cut = int(size * keep) // 8 * 8
        image = old[:cut] + stream[cut:]
        if seed[0] & 1:
            image = image[: size - 4096] if size > 4096 else image  # and sometimes too short
        (ed.d / "memory.bin").write_bytes(image)
        m["image"]["sha256"] = hashlib.sha256(image).hexdigest()
        m["image"]["size"] = len(image)
        ed.write_manifest(m)
        event(_load_and_check(ed.d))


@pytest.mark.parametrize("name", SETS)
@settings(max_examples=20, **SETTINGS)  # type: ignore[arg-type]
@given(lines=st.lists(st.one_of(st.binary(max_size=40), json_values.map(lambda v: json.dumps(v).encode()),
                                st.builds(lambda lv, pa, v: json.dumps({"linux_level": lv, "pa": pa, "value": v,
                                                                        "config": "x"}).encode(),
                                          st.sampled_from(LINUX_LEVELS), st.integers(-1, 1 << 40),
                                          st.integers(-1, 1 << 65))),
                      min_size=1, max_size=5))
def test_random_entries_file(name: str, lines: list[bytes], workdir: dict[str, Path]) -> None:
    with _Edited(workdir[name]) as ed:
        m = ed.manifest()
        keep = ed.saved["entries.jsonl"].splitlines()[:2]
        data = b"\n".join(keep + [ln.replace(b"\n", b" ") for ln in lines]) + b"\n"
        (ed.d / "entries.jsonl").write_bytes(data)
        m["entries"]["sha256"] = hashlib.sha256(data).hexdigest()
        m["entries"]["count"] = len(data.splitlines())
        ed.write_manifest(m)
        event(_load_and_check(ed.d))


# ------------------------------------------------------------------------------------------------
# fuzz --replay
# ------------------------------------------------------------------------------------------------
@settings(max_examples=40, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                      json_values.filter(lambda v: v not in ([], {}, ""))  # (empty is a valid, empty hierarchy)
                      .map(lambda v: json.dumps({"hierarchy": {
                                                                          "format": "foliowalk-fuzz-hierarchy/1",
                                                                          "config": "x86_64:4level",
                                                                          "entries": v, "tables": v,
                                                                          "vmas": v, "addrs": v}}).encode())))
def test_random_replay_file(data: bytes, tmp_path_factory: pytest.TempPathFactory,
                            capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path_factory.mktemp("replay") / "h.json"
    p.write_bytes(data)
    rc = cli.main(["fuzz", "--replay", str(p)])
    out, err = capsys.readouterr()
    assert (rc == 2 and len(err.strip().splitlines()) == 1 or rc == 0 and not err) and "Traceback" not in err, err


# ------------------------------------------------------------------------------------------------
# Decoders of a 64-bit entry value
# ------------------------------------------------------------------------------------------------
CONFIGS = archs.all_config_keys()
_OPS = {key: archs.get_ops(key) for key in CONFIGS}
_EDGES = [0, U64, 1, 1 << 63, U64 >> 1, 0xFFF, U64 ^ 0xFFF, 0x8000_0000_0000_0001, 0x20, 0x400, 0x7FF]
values = st.one_of(st.integers(0, U64), st.sampled_from(_EDGES),
                   st.integers(0, 63).map(lambda b: 1 << b), st.integers(0, 63).map(lambda b: U64 ^ (1 << b)))

#: The decoders and predicates of each Linux level (folded levels answer as asm-generic does).
PER_LEVEL = {
    "pgd": ["pgd_none", "pgd_bad"],
    "p4d": ["p4d_none", "p4d_bad"],
    "pud": ["pud_none", "pud_bad", "pud_present", "pud_leaf", "pud_pfn", "pud_devmap", "pud_special"],
    "pmd": ["pmd_none", "pmd_bad", "pmd_present", "pmd_leaf", "pmd_pfn", "pmd_trans_huge", "pmd_devmap",
            "pmd_special", "pmd_protnone", "is_pmd_migration_entry", "pmd_to_swp_entry"],
    "pte": ["pte_none", "pte_present", "pte_pfn", "pte_special", "pte_devmap", "pte_protnone", "pte_to_swp_entry"],
}


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(CONFIGS), value=values)
def test_decoders_never_raise_on_any_64_bit_value(key: str, value: int) -> None:
    ops: Any = _OPS[key]
    for linux in LINUX_LEVELS:
        hw = ops.hw_level(linux)
        fields = ops.decode(hw.linux, value)
        assert isinstance(fields, dict) and isinstance(fields["format"], str)
        assert isinstance(ops.entry_format(hw.linux, value), EntryFormat)
        for name in PER_LEVEL[linux]:
            got = getattr(ops, name)(value)
            if name.endswith("_to_swp_entry"):
                assert 0 <= got.type < 1 << 64 and 0 <= got.offset < 1 << 64
                ops.swp_offset_pfn(got)
            elif name.endswith("_pfn"):
                assert isinstance(got, int) and got >= 0
        if linux != "pte":
            assert int(ops.table_pa(linux, value)) >= 0
        reason = ops.hw_absent_reason(linux, value)
        assert reason is None or isinstance(reason, str)
        vec = fx.entry_vector(ops, linux, 0x1000, value)
        json.dumps(vec, allow_nan=False)
        assert vec["value"] == value and vec["decoded"] is not None


def _formats() -> list[tuple[str, EntryFormat]]:
    import importlib

    out = []
    for arch, mod in archs.ARCHES.items():
        for fmt in importlib.import_module(mod).FORMATS:
            out.append((f"{arch}:{fmt.name}", fmt))
    return out


FORMATS = _formats()


@pytest.mark.parametrize("fmt", [f for _, f in FORMATS], ids=[n for n, _ in FORMATS])
@settings(max_examples=60, deadline=None)
@given(value=values)
def test_entry_format_parse_never_raises_and_builds_back(fmt: EntryFormat, value: int) -> None:
    fields = fmt.parse(value)
    assert set(fields) == set(fmt.fields)
    assert fmt.build(**fields) == value
    for name in fmt.fields:
        assert fmt.get(value, name) == fields[name]


def test_entry_format_parse_masks_values_beyond_64_bits() -> None:
    """Out of range for an entry, yet still decoded (as the low 64 bits), never an exception."""
    for _, fmt in FORMATS:
        assert fmt.parse(-1) == fmt.parse(U64)
        assert fmt.parse((1 << 64) | 5) == fmt.parse(5)


def test_the_manifest_paths_cover_every_field() -> None:
    """The mutation test reaches every top-level field of each manifest."""
    for name in SETS:
        top = {p[0] for p in _PATHS[name]}
        assert top >= {"format", "format_version", "config", "ram_size", "root_table", "image", "allocator",
                       "tables", "memmap", "vmas", "cases", "checks", "entries", "registers"}
