"""Shrinking a finding: to one address, then delta debugging (ddmin) over the fuzzed entries,
then the fewest set bits, keeping only candidates that still show the same signature.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import archs
from emu.errors import FoliowalkError
from emu.fuzz.entry_gen import EntryGenerator
from emu.fuzz.evaluate import Target, signature
from emu.fuzz.layout import Layout
from emu.fuzz.spec import Entry, Hierarchy, VmaSpec


# -- shrinking ----------------------------------------------------------------------------------
def _ddmin(items: list[Any], fails: Callable[[list[Any]], bool]) -> list[Any]:
    """Zeller's ddmin: a 1-minimal subset of ``items`` for which ``fails`` still holds."""
    n = 2
    while len(items) >= 2:
        chunk = max(1, len(items) // n)
        subsets = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        reduced = False
        for s in subsets:
            if fails(s):
                items, n, reduced = s, 2, True
                break
        if not reduced:
            for s in subsets:
                comp = [x for x in items if x not in s]
                if comp and fails(comp):
                    items, n, reduced = comp, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(items):
                break
            n = min(len(items), n * 2)
    if len(items) == 1 and fails([]):
        return []
    return items


@dataclass
class Shrunk:
    """A minimized finding: the hierarchy (one address), its signature and what shrinking did."""

    hierarchy: Hierarchy
    signature: str
    evaluations: int
    seconds: float
    before: tuple[int, int, int]  # (entries, fuzzed entries, set bits) before shrinking
    complete: bool = True


def single_address(h: Hierarchy, addr: int, vmas: tuple[VmaSpec, ...]) -> Hierarchy:
    return replace(h, addrs=(addr,), vmas=vmas)


def shrink(target: Target, h: Hierarchy, addr: int, sig: str, *, budget_s: float = 30.0) -> Shrunk:
    """The smallest hierarchy (fewest fuzzed entries, then table pointers, then set bits) in which
    ``addr`` still gives a row with signature ``sig``."""
    t0 = time.perf_counter()
    count = [0]
    lay = target.layout
    guard = EntryGenerator(target.ops, lay)  # clearing address bits must not aim at the machine
    before = (len(h.entries), len(h.fuzzed), h.set_bits())

    tried: dict[Hierarchy, bool] = {}  # ddmin asks some candidates again: evaluate each once

    def shows(cand: Hierarchy) -> bool:
        got = tried.get(cand)
        if got is not None:
            return got
        count[0] += 1
        ev = target.evaluate(cand)
        got = tried[cand] = any(
            signature(w, ev.probes[0], ev.verdicts[0][j]) == sig for j, w in enumerate(ev.walks[0]))
        return got

    def out_of_time() -> bool:
        return time.perf_counter() - t0 > budget_s

    # The one VMA the walk uses (the address's, else its nearest).
    target.load(single_address(h, addr, h.vmas))
    vma = target.sc.cases[0].vma
    vmas = tuple(v for v in h.vmas if v.start == vma.vm_start and v.end == vma.vm_end) or h.vmas
    cur = single_address(h, addr, vmas)
    if not shows(cur):
        cur = single_address(h, addr, h.vmas)
        if not shows(cur):
            raise FoliowalkError(f"finding at {addr:#x} does not reproduce on its own: {sig}")

    def rebuild(entries: list[Entry]) -> Hierarchy:
        return _tidy(replace(cur, entries=tuple(sorted(entries, key=lambda e: (e.depth, e.pa)))), lay)

    def phase(select: Callable[[Entry], bool], remove: Callable[[Entry], Entry | None]) -> None:
        nonlocal cur
        keep = [e for e in cur.entries if not select(e)]
        cands = [e for e in cur.entries if select(e)]

        def with_only(sub: list[Any]) -> Hierarchy:
            chosen = set(id(e) for e in sub)
            removed = [remove(e) for e in cands if id(e) not in chosen]
            return rebuild(keep + list(sub) + [e for e in removed if e is not None])

        if not cands or out_of_time():
            return
        best = _ddmin(cands, lambda sub: not out_of_time() and shows(with_only(sub)))
        cur = with_only(best)

    # 1. fuzzed entries: revert to the skeleton pointer, or drop.
    phase(lambda e: e.fuzzed, lambda e: None if e.base is None else Entry(e.pa, e.depth, e.base, e.base))
    # 2. skeleton pointers nobody needs.
    phase(lambda e: not e.fuzzed, lambda e: None)
    # 3. bits of the fuzzed entries, high to low, until nothing more can go.
    changed = True
    while changed and not out_of_time():
        changed = False
        for i, e in enumerate(cur.entries):
            if not e.fuzzed:
                continue
            value = e.value
            for bit in reversed(range(e.value.bit_length())):
                if not value >> bit & 1 or out_of_time() or guard.forbidden(value & ~(1 << bit), e.depth):
                    continue
                trial = list(cur.entries)
                trial[i] = replace(e, value=value & ~(1 << bit))
                cand = rebuild(trial)
                if shows(cand):
                    value &= ~(1 << bit)
                    changed = True
            if value != e.value:
                ents = list(cur.entries)
                ents[i] = replace(e, value=value)
                cur = rebuild(ents)
    # The shrunk hierarchy must still show the signature as it stands (evaluated again).
    tried.pop(cur, None)
    if not shows(cur):  # pragma: no cover - every step above checked it
        raise FoliowalkError("shrinking lost the finding")
    return Shrunk(cur, sig, count[0], time.perf_counter() - t0, before, complete=not out_of_time())


def _tidy(h: Hierarchy, lay: Layout) -> Hierarchy:
    """Keep only the table frames that hold entries or that an entry points to."""
    ops = archs.get_ops(h.config, h.kernel)
    levels = ops.config.levels
    targets: set[int] = set()
    for e in h.entries:
        with contextlib.suppress(Exception):
            targets.add(int(ops.table_pa(levels[e.depth].linux, e.value)))
    used = []
    for pa, d in h.tables:
        size = levels[d].table_size
        if pa in targets or any(pa <= e.pa < pa + size for e in h.entries):
            used.append((pa, d))
    return replace(h, tables=tuple(used))
