"""The kernel view of a row: the compiled kernel's own ``folio_walk_start()`` (emu/kernel/walk.py)
on the same (address, flags) and the same bytes of guest RAM as the model's walk (issue 13).

* :func:`walk_build_for` -- the walk image for a configuration, or a line saying why there is
  none (``--harness off``, no harness built, or ``kernel walk not available on <arch>: <reason>``
  where :func:`emu.kernel.walk.build_walk` raises :class:`~emu.kernel.walk.WalkBuildError`);
* :class:`KernelWalkView` -- one :class:`~emu.kernel.walk.KernelWalk` over a scenario's mm:
  :meth:`KernelWalkView.walk_cases` gives a :class:`KernelAnswer` for every (case, flags) the
  model walked, each call seeing the tables as built, as the model's isolated walks do;
* :func:`walk_differs` -- the comparison the judge's ``model-vs-kernel-walk`` rule makes
  (emu/judge.py): folio pfn, page pfn, level, entry address, entry value, the PTL held while
  the folio is returned and released by ``folio_walk_end()``, the bad entries cleared, and an
  oops where the model predicts one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import archs
from emu.errors import FoliowalkError
from emu.kernel import uc_renewal

if TYPE_CHECKING:
    from emu.kernel.walk import KernelWalk, KernelWalkResult, WalkBuild
    from emu.mm.mm_types import MM, VMA
    from emu.mm.scenarios import Case
    from emu.verify import WalkResult

#: FW_LEVEL_* (include/linux/pagewalk.h) -> the model's level names
_LEVELS = {0: "PTE", 1: "PMD", 2: "PUD"}
#: calls per KernelWalk.walk() (its guest buffers hold a few thousand)
_BATCH = 2048
#: model reasons that mean "the kernel oopses here" (the model ends the walk and says so)
OOPS_REASONS = ("oops@", "unreadable@")


@dataclass(frozen=True)
class KernelAnswer:
    """The compiled kernel's answer for one row: its ``folio_walk_start()`` record and the entries
    its call wrote (``pXd_clear_bad()``), as ``(pa, new value)``."""

    result: KernelWalkResult
    cleared: tuple[tuple[int, int], ...] = ()

    @property
    def found(self) -> bool:
        return self.result.folio_pfn is not None

    def summary(self) -> str:
        """Compact, for a table column: ``folio 0x60 page 0x65 PTE``, ``NULL``, ``oops``."""
        r = self.result
        if r.oops:
            return "oops"
        if r.folio_pfn is None:
            return "NULL"
        page = f"{r.page_pfn:#x}" if r.page_pfn is not None else "NULL"
        lock = "" if r.ptl_held and r.ptl_released else " PTL!"
        return f"folio {r.folio_pfn:#x} page {page} {_LEVELS.get(r.level or 0, '?')}{lock}"

    def describe(self) -> str:
        """Every compared field, for a verdict."""
        r = self.result
        if r.oops:
            return f"oops ({r.oops})"
        cleared = f" cleared {_cleared(self.cleared)}" if self.cleared else ""
        if r.folio_pfn is None:
            return "NULL" + cleared
        page = f"{r.page_pfn:#x}" if r.page_pfn is not None else "NULL"
        return (f"folio {r.folio_pfn:#x} page {page} {_LEVELS.get(r.level or 0, '?')} "
                f"{_LEVELS.get(r.level or 0, '?').lower()}@{r.entryp:#x}={r.entry:#x} "
                f"PTL {'held' if r.ptl_held else 'NOT held'}/{'released' if r.ptl_released else 'NOT released'}"
                + cleared)

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "found": self.found, "folio_pfn": r.folio_pfn, "page_pfn": r.page_pfn,
            "level": _LEVELS.get(r.level) if r.level is not None else None,
            "entry_pa": r.entryp, "entry": r.entry, "ptl_held": r.ptl_held, "ptl_released": r.ptl_released,
            "ptl_is_mm_lock": r.ptl_is_mm_lock, "cleared": [{"pa": pa, "value": v} for pa, v in self.cleared],
            "oops": r.oops, "warnings": list(r.warnings), "stubs": list(r.stubs),
        }


def _cleared(c: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{pa:#x}" for pa, _ in c)


def model_describe(w: WalkResult) -> str:
    """The model's answer in :meth:`KernelAnswer.describe`'s terms."""
    if w.reason.startswith(OOPS_REASONS):
        return f"oops ({w.reason}: {w.warnings[-1] if w.warnings else ''})"
    cleared = f" cleared {_cleared([(pa, 0) for _, pa, _ in w.cleared])}" if w.cleared else ""
    if not w.found:
        return f"NULL ({w.reason})" + cleared
    page = f"{w.page_pfn:#x}" if w.page_pfn is not None else "NULL"
    return (f"folio {w.folio_pfn:#x} page {page} {w.level} {(w.level or '?').lower()}@{w.entry_pa:#x}="
            f"{w.entry:#x} PTL held/released" + cleared)




def walk_differs(model: WalkResult, kernel: KernelAnswer, pxd_clear: Any = None) -> str | None:
    """``model-vs-kernel folio_walk_start: kernel ..., model ...`` where the two answers differ,
    else None.  Compared: whether each oopses (the model names the reason: a struct page that
    does not exist, a table outside RAM); else found or not, and when found the folio pfn, page
    pfn, level, entry address and value, and that the PTL was held and then released; the bad
    entries cleared (addresses, and the value written when ``pxd_clear(level, old)`` -- the
    model's ``pXd_clear()``, which on s390 depends on the entry it clears -- is given)."""
    r = kernel.result
    m_oops = model.reason.startswith(OOPS_REASONS)
    same = bool(r.oops) == m_oops
    if same and not m_oops:
        if model.found != kernel.found:
            same = False
        elif model.found:
            same = ((r.folio_pfn, r.page_pfn, _LEVELS.get(r.level or 0), r.entryp, r.entry)
                    == (model.folio_pfn, model.page_pfn, model.level, model.entry_pa, model.entry)
                    and r.ptl_held and r.ptl_released)
        if same:
            want = [(pa, pxd_clear(lv, old) if pxd_clear is not None else None) for lv, pa, old in model.cleared]
            got = [(pa, v if pxd_clear is not None else None) for pa, v in kernel.cleared]
            same = sorted(want) == sorted(got)
            if not same and pxd_clear is not None and [p for p, _ in sorted(want)] == [p for p, _ in sorted(got)]:
                written = ", ".join(f"{pa:#x}: kernel {k:#x}, model {m:#x}"
                                    for (pa, m), (_, k) in zip(sorted(want), sorted(got), strict=True) if m != k)
                return f"model-vs-kernel folio_walk_start: the clears write other values ({written})"
    if same:
        return None
    return f"model-vs-kernel folio_walk_start: kernel {kernel.describe()}, model {model_describe(model)}"


def walk_build_for(key: str, profile: str | None, harness: str, *, version: str = "6.12",
                   tree: str | None = None, model_kernel: str | None = None) -> tuple[WalkBuild | None, str]:
    """The compiled walk for configuration ``key`` as ``--harness`` asks (``off``: none; ``auto``:
    where the predicate harness of that profile is built -- the walk image is then built next to
    it if needed, a few seconds; ``on``: build both), and a line saying which, or why none.

    ``model_kernel`` is the model's folio_walk_start() version (``--kernel``): its kernel is
    reproduced from source -- ``v6.12`` the distribution's tree, ``aa39ca6940f1`` (the seed) that
    tree with ``patches/seed-folio_walk_start.patch`` (emu/kernel/patched.py).  ``version``/``tree``
    name another tree (``foliowalk kernel verify``)."""
    from archs.kconfig import DEFAULT_PROFILE

    arch = key.split(":")[0]
    profile = profile or DEFAULT_PROFILE
    if harness == "off":
        return None, "kernel walk: off (--harness off)"
    from emu.kernel.build import cached_build, not_yet
    from emu.kernel.patched import MODEL_KERNEL, SEED, resolve_tree

    why = not_yet(archs.get_config(key))
    if why:
        return None, f"kernel walk: none ({why})"
    from emu.kernel.walk import WalkBuildError, build_walk

    what = ""
    try:
        if model_kernel is not None and model_kernel != MODEL_KERNEL["6.12"]:
            if model_kernel != MODEL_KERNEL[SEED]:
                return None, f"kernel walk: none for the {model_kernel} model (no tree reproduces it)"
            version, tree = resolve_tree(SEED)
            what = " + seed-folio_walk_start.patch"
        if harness != "on" and cached_build(key, profile, version, tree) is None:
            how = " --kernel-version seed" if what else ""
            return None, (f"kernel walk: none (no harness built; foliowalk kernel build --config {key} "
                          f"--kconfig {profile}{how})")
        build = build_walk(key, profile, version, tree)
    except WalkBuildError as e:
        return None, f"kernel walk not available on {arch}: {e}"
    except FoliowalkError as e:
        if harness == "on":
            raise
        return None, f"kernel walk not available on {arch}: {e}"
    return build, f"kernel walk: folio_walk_start() of linux {build.harness.tree.release}{what} (compiled)"


class KernelWalkView:
    """The compiled walk over one mm (its RAM is shared, never copied)."""

    def __init__(self, build: WalkBuild, mm: MM) -> None:
        from emu.kernel.walk import KernelWalk

        self.build = build
        self.mm = mm
        self.kw: KernelWalk = KernelWalk(build, mm)
        self.calls = 0  # folio_walk_start() calls made
        self.differences = 0  # rows whose answer the judge found different (counted by callers)

    def close(self) -> None:
        self.kw.close()

    def forget_vmas(self) -> None:
        self.kw.forget_vmas()

    def _renew(self) -> None:
        """A fresh guest every :data:`~emu.kernel.uc_renewal.RENEW_STARTS` emu_start() calls: Unicorn 2.1.4 keeps ~300
        bytes per call until the Uc is closed (a fuzz worker with the kernel walk grew ~30 MiB a
        minute).  Nothing carries over but the build and the mm (VMAs are written again)."""
        from emu.kernel.walk import KernelWalk

        self.kw.close()
        self.kw = KernelWalk(self.build, self.mm)

    def walk_cases(self, cases: Sequence[Case], flag_sets: Sequence[int],
                   model: dict[tuple[int, int], WalkResult], tables: Sequence[tuple[int, int]] = ()
                   ) -> dict[tuple[int, int], KernelAnswer]:
        """A :class:`KernelAnswer` for every (case index, flags), each call seeing the tables as
        built.  Calls run in batches per (VMA, flags), none holding a call that reads an entry
        the model says an earlier call of the batch clears, and RAM is put back after each batch
        (the kernel writes the same RAM).  The words the kernel wrote are found by comparing
        the frames of ``tables`` and of every entry the model read before and after the batch;
        where they are not exactly what the model's calls cleared, the batch is run again one
        call at a time, so each call's own writes are known."""
        if self.kw.starts >= uc_renewal.RENEW_STARTS:
            self._renew()
        ram = self.mm.ram
        page = 1 << self.mm.memmap.page_shift
        out: dict[tuple[int, int], KernelAnswer] = {}
        groups: dict[int, tuple[VMA, list[int]]] = {}
        for i, c in enumerate(cases):
            groups.setdefault(id(c.vma), (c.vma, []))[1].append(i)
        frames: set[int] = set()
        for pa, size in tables:
            frames.update(range(pa & ~(page - 1), pa + size, page))
        for w in model.values():
            frames.update(pa & ~(page - 1) for _, pa, _ in w.trace)
        watched = sorted(f for f in frames if ram.contains(f, page))
        saved = ram.snapshot([(f, page) for f in watched])
        before = np.frombuffer(b"".join(d for _, d in saved), dtype=np.uint8)
        for vma, idx in groups.values():
            for f in flag_sets:
                # first fit: a call joins the first batch none of whose calls clears an entry it
                # reads (each call must see the tables as built; RAM is put back between batches)
                batches: list[tuple[list[int], set[int]]] = []  # (calls, entries they clear)
                for i in idx:
                    w = model[(i, f)]
                    reads = {pa for _, pa, _ in w.trace}
                    k = next((k for k, (_s, pending) in enumerate(batches) if not reads & pending), len(batches))
                    if k == len(batches):
                        batches.append(([], set()))
                    batches[k][0].append(i)
                    batches[k][1].update(pa for _, pa, _ in w.cleared)
                for seg, _pending in batches:
                    self._segment(vma, cases, seg, f, model, watched, saved, before, out)
        return out

    def _run(self, vma: VMA, cases: Sequence[Case], seg: list[int], flags: int) -> list[KernelWalkResult]:
        self.calls += len(seg)
        calls = [(cases[i].addr, flags) for i in seg]
        res: list[KernelWalkResult] = []
        for s in range(0, len(calls), _BATCH):
            res += self.kw.walk(vma, calls[s:s + _BATCH])
        return res

    def _written(self, watched: list[int], saved: list[tuple[int, bytes]], before: np.ndarray
                 ) -> list[tuple[int, int]]:
        ram = self.mm.ram
        page = 1 << self.mm.memmap.page_shift
        now = np.frombuffer(b"".join(ram.read(f, page) for f in watched), dtype=np.uint8)
        if np.array_equal(now, before):
            return []
        order = ">u8" if ram.big_endian else "<u8"
        b64, n64 = before.view(order), now.view(order)
        out = []
        for k in np.flatnonzero(b64 != n64).tolist():
            frame = watched[(k * 8) // page]
            out.append((frame + (k * 8) % page, int(n64[k])))
        ram.restore(saved)
        return out

    def _segment(self, vma: VMA, cases: Sequence[Case], seg: list[int], flags: int,
                 model: dict[tuple[int, int], WalkResult], watched: list[int], saved: list[tuple[int, bytes]],
                 before: np.ndarray, out: dict[tuple[int, int], KernelAnswer]) -> None:
        res = self._run(vma, cases, seg, flags)
        wrote = dict(self._written(watched, saved, before))
        expect = {pa for i in seg for _, pa, _ in model[(i, flags)].cleared}
        if set(wrote) == expect:
            # the kernel wrote exactly the entries the model's calls clear, and no call of the
            # batch reads an entry another clears (see walk_cases): each call's are its own
            for n, i in enumerate(seg):
                mine = tuple((pa, wrote[pa]) for _, pa, _ in model[(i, flags)].cleared)
                out[(i, flags)] = KernelAnswer(res[n], mine)
            return
        for i in seg:  # someone wrote what the model did not predict: one call at a time
            (r,) = self._run(vma, cases, [i], flags)
            out[(i, flags)] = KernelAnswer(r, tuple(self._written(watched, saved, before)))


__all__ = ["KernelAnswer", "KernelWalkView", "OOPS_REASONS", "model_describe", "walk_build_for", "walk_differs"]
