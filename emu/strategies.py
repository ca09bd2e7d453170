"""Hypothesis strategies over foliowalk's fuzzing generators, for your own property tests.

The same generators as ``foliowalk fuzz`` (:mod:`emu.fuzz`), driven by Hypothesis's own random
source, so examples shrink and replay the Hypothesis way::

    from hypothesis import given
    from emu.strategies import entries, hierarchies
    from emu.fuzz import materialize

    @given(entries("x86_64", "pte"))
    def test_my_decoder(value):
        my_decode_pte(value)              # must not raise on any encoding

    @given(hierarchies("x86_64", "4level"))
    def test_my_walker(h):
        with materialize(h) as sc:        # h built in guest RAM: sc.ram, sc.mm.pgd, sc.cases
            for case in sc.cases:
                assert my_walk(sc.ram, sc.mm.pgd, case.addr) == ...

* :func:`entries` -- raw entry values (ints) for one level of one configuration: valid,
  near-valid, swap/migration, PROT_NONE/special/devmap, hostile pointers and noise
  (:data:`emu.fuzz.KINDS`; ``kinds=`` narrows the mix).
* :func:`hierarchies` -- whole :class:`emu.fuzz.Hierarchy` values (tables, entries, VMAs and the
  addresses to check), plain data that :func:`emu.fuzz.materialize` builds in fresh guest RAM
  (walk-only by default; ``materialize(h, oracle=True)`` adds the MMU).  A failing example
  shrinks with :func:`emu.fuzz.shrink` to the fewest entries and set bits.
"""

from __future__ import annotations

import random
from functools import cache

from hypothesis import strategies as st

import archs
from archs.linux import DEFAULT_KERNEL
from emu.errors import ConfigError
from emu.fuzz import (
    DEFAULT_WEIGHTS,
    KINDS,
    EntryGenerator,
    GenParams,
    Hierarchy,
    HierarchyGenerator,
    plan_layout,
)

__all__ = ["entries", "hierarchies", "config_key"]


def config_key(arch_or_config: str, config: str | None = None) -> str:
    """``"x86_64"`` (its first configuration), ``"x86_64:5level"``, or ``("x86_64", "5level")``
    -> the full configuration key."""
    if config:
        arch = arch_or_config.split(":", 1)[0]
        name = config[len(arch) + 1 :] if config.startswith(arch + ":") else config
        return archs.get_config(f"{arch}:{name}").key
    if ":" in arch_or_config:
        return archs.get_config(arch_or_config).key
    cfgs = archs.configs(arch_or_config)
    return next(iter(cfgs.values())).key


def _depth(key: str, level: str | int) -> int:
    levels = archs.get_config(key).levels
    if isinstance(level, int):
        if not 0 <= level < len(levels):
            raise ConfigError(f"{key} has hardware depths 0..{len(levels) - 1}, not {level}")
        return level
    for d, lv in enumerate(levels):
        if level in (lv.linux, lv.name):
            return d
    names = ", ".join(f"{lv.linux}/{lv.name}" for lv in levels)
    raise ConfigError(f"{key} has no level {level!r} (folded away?); its levels: {names}")


@cache
def _entry_generator(key: str, kernel: str, kinds: tuple[str, ...] | None) -> EntryGenerator:
    weights = [(k, w) for k, w in DEFAULT_WEIGHTS.items() if kinds is None or k in kinds]
    return EntryGenerator(archs.get_ops(key, kernel), plan_layout(key), weights)


def entries(
    arch_or_config: str,
    level: str | int,
    *,
    kinds: tuple[str, ...] | list[str] | None = None,
    kernel: str = DEFAULT_KERNEL,
) -> st.SearchStrategy[int]:
    """Raw entry values for ``level`` (Linux name ``"pte"``/``"pmd"``/..., hardware name such as
    ``"PML4"``, or depth 0 = top) of a configuration (``"x86_64"`` = its first one)."""
    key = config_key(arch_or_config)
    depth = _depth(key, level)
    if kinds is not None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown entry kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    gen = _entry_generator(key, kernel, tuple(kinds) if kinds is not None else None)

    def draw(rng: random.Random) -> int:
        return gen.entry(rng, depth)[0]

    return st.randoms(use_true_random=False).map(draw)


def hierarchies(
    arch_or_config: str,
    config: str | None = None,
    *,
    params: GenParams | None = None,
    kernel: str = DEFAULT_KERNEL,
) -> st.SearchStrategy[Hierarchy]:
    """Whole random hierarchies of a configuration: ``hierarchies("x86_64", "5level")`` or
    ``hierarchies("x86_64:5level")``.  ``params`` (:class:`emu.fuzz.GenParams`) sets their
    size and entry mix (``GenParams.bench()``: mostly valid mappings)."""
    key = config_key(arch_or_config, config)
    gen = HierarchyGenerator(key, kernel, params)
    # A hierarchy takes thousands of random draws: Hypothesis draws one 64-bit seed instead (its
    # shrinking then goes towards seed 0; emu.fuzz.shrink() minimizes a hierarchy structurally).
    return st.integers(min_value=0, max_value=(1 << 64) - 1).map(lambda s: gen.from_random(random.Random(s)))
