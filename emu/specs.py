"""Hierarchy specs: a user's own page tables as a JSON file (docs/hierarchy.md).

A *hierarchy spec* is the fuzzer's replay format (``foliowalk-fuzz-hierarchy/1``, the schema
``emu/fuzz/hierarchy.schema.json``): a configuration, a kernel, the entries to write (physical
address in the fuzzer's table pool, depth, value), the table frames they use, the VMAs with their
``vm_flags`` and the addresses to check.  ``foliowalk verify --spec``, ``foliowalk fuzz
--replay`` and ``foliowalk fixtures build --spec`` all read it with
:func:`emu.fuzz.spec.load_hierarchy_file` (every field checked before anything is built) and run
it with :class:`emu.fuzz.evaluate.Target`, the fuzzer's own evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emu.fuzz.spec import Hierarchy, load_hierarchy_file

__all__ = ["Hierarchy", "load_spec", "spec_rows", "build_spec_fixture"]


def load_spec(path: Path | str) -> Hierarchy:
    """The hierarchy in ``path`` (a spec, or a fuzz finding's ``*.hierarchy.json``), fully
    checked; raises :class:`emu.errors.FoliowalkError` naming the file and field otherwise."""
    return load_hierarchy_file(Path(path))


def spec_rows(h: Hierarchy, *, harness: str = "off", name: str | None = None) -> list[Any]:
    """Every address of ``h`` walked with every FW_* flag set, probed once and judged: the same
    :class:`emu.verify.Row` list ``verify`` prints.  ``harness``: auto/on/off as for verify."""
    from emu.fuzz.evaluate import Target

    with Target(h.config, h.kernel, harness=harness) as t:
        ev = t.evaluate(h)
        return ev.rows(h.config, name or f"spec {h.config}" + (f" #{h.index}" if h.index is not None else ""))


def build_spec_fixture(out: Path, h: Hierarchy, name: str, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``h`` as a fixture set ``out/name`` (emu/fixtures): RAM with its tables, and every
    row walked, probed and judged on a fresh machine.  Raises :class:`emu.errors.FixtureError`
    where a leaf of ``h`` maps the probe machine's own frames (the set could not be re-checked)."""
    from emu.errors import FixtureError
    from emu.fixtures import write_fixture_set
    from emu.fuzz.evaluate import Target
    from emu.verify import verify_scenario

    with Target(h.config, h.kernel) as fresh:
        ev = fresh.evaluate(h)
        if any(w.expected_pa is not None and fresh.layout.in_forbidden(w.expected_pa)
               for row in ev.walks for w in row):
            raise FixtureError(f"{name}: a leaf maps the probe machine's own frames "
                               f"(below {fresh.layout.pool_start:#x}, outside the root and zero pages)")
        fresh.load(h)
        rows = verify_scenario(fresh.sc)
        return Path(write_fixture_set(out, fresh.sc, rows, name=name, extra={"spec": h.to_json(), **(extra or {})}))
