"""include/linux/pagewalk.h (v6.12): ``struct folio_walk`` (:class:`FolioWalk`), the ``FW_*`` flags
and ``enum folio_walk_level`` -- shared by the reference walker (:mod:`emu.mm.pagewalk`) and
its fast forms (:mod:`emu.mm.pagewalk_fast`, :mod:`emu.mm.pagewalk_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from emu.mm.mm_types import VMA, Folio, Page, SpinLock

LINUX_LEVELS5 = ("pgd", "p4d", "pud", "pmd", "pte")

# include/linux/pagewalk.h
FW_MIGRATION = 1 << 0  # walk migration entries as well
FW_ZEROPAGE = 1 << 1  # walk shared zeropages (small + huge) as well


class FwLevel(IntEnum):
    """``enum folio_walk_level``: an int (as in the kernel) that prints its name (``FwLevel.PTE``)."""

    PTE = 0
    PMD = 1
    PUD = 2

    def __str__(self) -> str:
        return f"FwLevel.{self.name}"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else format(int(self), spec)


FW_LEVEL_PTE = FwLevel.PTE
FW_LEVEL_PMD = FwLevel.PMD
FW_LEVEL_PUD = FwLevel.PUD
_FW_LEVELS = tuple(FwLevel)
LEVEL_NAMES = {FW_LEVEL_PTE: "PTE", FW_LEVEL_PMD: "PMD", FW_LEVEL_PUD: "PUD"}
FLAG_COMBINATIONS = (0, FW_MIGRATION, FW_ZEROPAGE, FW_MIGRATION | FW_ZEROPAGE)


def flags_str(flags: int) -> str:
    names = [n for bit, n in ((FW_MIGRATION, "FW_MIGRATION"), (FW_ZEROPAGE, "FW_ZEROPAGE")) if flags & bit]
    return "|".join(names) or "0"


@dataclass
class TraceStep:
    """One entry the walk read: Linux level, its physical address and raw value."""

    level: str
    pa: int
    value: int


NO_LIST: tuple[()] = ()


class FolioWalk:
    """``struct folio_walk``: filled by folio_walk_start() on success.

    Public (as in the kernel): ``page``, ``level``, the entry pointer (``ptep``/``pmdp``/``pudp``,
    a physical address here) and the entry value (``pte``/``pmd``/``pud``).  Private: ``vma`` and
    ``ptl``.  foliowalk's own record: ``folio`` (the return value), ``reason`` ("found" or why
    not), ``kind`` of what was found, ``trace``, ``cleared`` and ``warnings``.

    A plain slotted class rather than a dataclass: folio_walk_start() fills one per call, and the
    fast path (see :class:`FastWalk`) stores its trace as one flat tuple that ``trace`` turns
    into :class:`TraceStep` objects only when someone reads it.
    """

    __slots__ = ("page", "_level", "entryp", "entry", "vma", "ptl", "folio", "reason", "kind",
                 "_trace", "_cleared", "_warnings")

    def __init__(
        self,
        page: Page | None = None,
        level: int | None = None,
        entryp: int | None = None,
        entry: int | None = None,
        vma: VMA | None = None,
        ptl: SpinLock | None = None,
        folio: Folio | None = None,
        reason: str = "",
        kind: str = "",
        trace: list[TraceStep] | None = None,
        cleared: list[TraceStep] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.page = page
        self.level = level
        self.entryp = entryp
        self.entry = entry
        self.vma = vma
        self.ptl = ptl
        self.folio = folio
        self.reason = reason
        self.kind = kind
        # A list, or the fast path's flat tuple ``(names, pa0, val0, pa1, val1, ...)``.
        self._trace: list[TraceStep] | tuple[Any, ...] = trace if trace is not None else []
        self._cleared: list[TraceStep] | tuple[()] = cleared if cleared is not None else NO_LIST
        self._warnings: list[str] | tuple[()] = warnings if warnings is not None else NO_LIST

    @property
    def level(self) -> FwLevel | None:
        """``fw->level``: :class:`FwLevel` (an int that prints its name), None before a walk found
        anything."""
        v = self._level
        return v if v is None else _FW_LEVELS[v]

    @level.setter
    def level(self, value: int | None) -> None:
        self._level = value

    # foliowalk's record, materialised on first use.
    @property
    def trace(self) -> list[TraceStep]:
        """The entries the walk read, in order (``pXdp_get()`` / ``READ_ONCE`` calls)."""
        t: Any = self._trace
        if type(t) is not list:
            t = self._trace = [TraceStep(n, t[1 + 2 * i], t[2 + 2 * i]) for i, n in enumerate(t[0])]
        return t  # type: ignore[no-any-return]

    @trace.setter
    def trace(self, value: list[TraceStep]) -> None:
        self._trace = value

    @property
    def cleared(self) -> list[TraceStep]:
        """Bad entries the walk cleared (``pXd_clear_bad()``)."""
        c = self._cleared
        if type(c) is not list:
            c = self._cleared = []
        return c

    @cleared.setter
    def cleared(self, value: list[TraceStep]) -> None:
        self._cleared = value

    @property
    def warnings(self) -> list[str]:
        """WARN_ON_ONCE()s and pXd_ERROR()s the walk hit."""
        w = self._warnings
        if type(w) is not list:
            w = self._warnings = []
        return w

    @warnings.setter
    def warnings(self, value: list[str]) -> None:
        self._warnings = value

    def trace_tuples(self) -> list[tuple[str, int, int]]:
        """``trace`` as ``(level, pa, value)`` tuples, without building TraceStep objects."""
        t: Any = self._trace
        if type(t) is list:
            return [(s.level, s.pa, s.value) for s in t]
        return [(n, t[1 + 2 * i], t[2 + 2 * i]) for i, n in enumerate(t[0])]

    def _fields(self) -> tuple[Any, ...]:
        return (self.page, self.level, self.entryp, self.entry, self.vma, self.ptl, self.folio,
                self.reason, self.kind, self.trace, self.cleared, self.warnings)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FolioWalk):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        names = ("page", "level", "entryp", "entry", "vma", "ptl", "folio", "reason", "kind",
                 "trace", "cleared", "warnings")
        fields = zip(names, self._fields(), strict=True)
        return "FolioWalk(" + ", ".join(f"{n}={v!r}" for n, v in fields) + ")"

    # The unions of struct folio_walk, by their kernel names.
    @property
    def ptep(self) -> int | None:
        return self.entryp if self.level == FW_LEVEL_PTE else None

    @property
    def pmdp(self) -> int | None:
        return self.entryp if self.level == FW_LEVEL_PMD else None

    @property
    def pudp(self) -> int | None:
        return self.entryp if self.level == FW_LEVEL_PUD else None

    @property
    def pte(self) -> int | None:
        return self.entry if self.level == FW_LEVEL_PTE else None

    @property
    def pmd(self) -> int | None:
        return self.entry if self.level == FW_LEVEL_PMD else None

    @property
    def pud(self) -> int | None:
        return self.entry if self.level == FW_LEVEL_PUD else None
