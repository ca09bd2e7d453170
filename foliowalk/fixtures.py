"""Fixture sets (plain files: a JSON manifest, a binary RAM image, the entries a walk read, and
every answer foliowalk gave on them; docs/fixtures.md): build, load and re-check them.

A facade over :mod:`emu.fixtures`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from emu.fixtures import FixtureSet, export_raw, find_sets

__all__ = ["FixtureSet", "build", "check", "export_raw", "find_sets", "load"]


def load(path: str | Path) -> FixtureSet:
    """The fixture set in folder ``path``, every field validated first (raises
    :class:`emu.errors.FixtureError` naming the file and field).  ``fs.to_scenario()`` rebuilds
    its RAM, tables, VMAs and cases; ``fs.cases`` holds the recorded answers."""
    from emu.fixtures import load_fixture_set

    return load_fixture_set(Path(path))


def check(path: str | Path) -> list[str]:
    """Re-walk and re-probe every recorded (address, flags) of the set at ``path``.  Returns the
    differences from what was recorded, one line each (an empty list: the set still holds)."""
    from emu.fixtures import check_fixture_set

    return check_fixture_set(Path(path))


def build(out: str | Path, configs: Iterable[str] | None = None, *, spec: str | Path | None = None,
          name: str | None = None, kernel: str | None = None, harness: str = "auto") -> list[Path]:
    """Write fixture sets into folder ``out``: one per configuration of the default scenarios
    (``configs``, default all), or -- with ``spec`` -- one of your own hierarchy (a spec file,
    docs/hierarchy.md), named ``name`` (default: the file's name).  Returns the sets' folders."""
    import archs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        from emu.specs import build_spec_fixture, load_spec

        spec = Path(spec)
        h = load_spec(spec)
        return [build_spec_fixture(out, h, name or spec.name.removesuffix(".json").removesuffix(".hierarchy"))]
    from emu.fixtures import build_fixture_set

    keys = [archs.get_config(c).key for c in configs] if configs is not None else archs.all_config_keys()
    return [Path(build_fixture_set(out, k, kernel, harness=harness)[0]) for k in keys]
