"""What the architecture manual says one access does: the result types of every arch module's
``translate()`` (:func:`archs.x86_64.translate`, :func:`archs.arm64.translate`,
:func:`archs.s390x.translate`).

Each ``translate()`` walks tables it reads through a caller's ``read(pa) -> int`` (the 64-bit
entry at physical address ``pa``; tables anywhere, a root at 0 included), from the root the
architecture names (x86-64 CR3, arm64 TTBR0_EL1/TTBR1_EL1, s390x the ASCE), with the CPU facts
that decide faults as parameters, and answers with one of two types shared by all three:

* :class:`Translation` ``(pa, size, permissions, trace)``: the physical address, the size of the
  page or block that maps it, the rights of the walk's entries (:class:`Permissions`);
* :class:`Fault` ``(kind, level, code, reason, trace)``: the architecture's name of the fault,
  the table level it names, the code hardware reports (x86 #PF error code, arm64 FST, s390x
  program-interruption code), and the manual's rule that gives it.

``trace`` lists every entry read, top down, as :class:`Entry` (level, physical address, value,
fields decoded through the arch module's construct format).  The walks use the arch modules'
per-entry facts (``hw_reserved``/``hw_fault``/``hw_rejects``) and construct masks; nothing here
imports Unicorn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: ``read(pa)``: the 64-bit entry at physical address ``pa`` (in the architecture's byte order).
Reader = Callable[[int], int]

ACCESS_KINDS = ("read", "write", "fetch")


@dataclass(frozen=True)
class Entry:
    """One entry the walk read: hardware ``level`` name, its physical address ``pa``, its raw
    ``value``, the construct ``format`` it was decoded with and the decoded ``fields``."""

    level: str
    pa: int
    value: int
    format: str
    fields: dict[str, int] = field(compare=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (addresses and values as hex strings)."""
        return {"level": self.level, "pa": hex(self.pa), "value": f"{self.value:#018x}",
                "format": self.format, "fields": dict(self.fields)}

    def __str__(self) -> str:
        return f"{self.level}@{self.pa:#x}={self.value:#018x}"


@dataclass(frozen=True)
class Permissions:
    """The rights the walk's entries give at the privilege of the access: ``read``, ``write``,
    ``execute``; ``user``: whether unprivileged code may access the page at all (x86 U/S, arm64
    AP[1] and APTable[0]; None on s390x, which has no user/supervisor bit in its tables)."""

    read: bool
    write: bool
    execute: bool
    user: bool | None

    def __str__(self) -> str:
        rwx = ("r" if self.read else "-") + ("w" if self.write else "-") + ("x" if self.execute else "-")
        return rwx + ("" if self.user is None else (" user" if self.user else " supervisor"))


@dataclass(frozen=True)
class Translation:
    """The access translates to physical address ``pa`` through a ``size``-byte page/block."""

    pa: int
    size: int
    permissions: Permissions
    trace: tuple[Entry, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        p = self.permissions
        return {"result": "translation", "pa": hex(self.pa), "size": hex(self.size),
                "permissions": {"read": p.read, "write": p.write, "execute": p.execute, "user": p.user},
                "trace": [e.to_json() for e in self.trace]}

    def __str__(self) -> str:
        return f"pa {self.pa:#x} ({self.size:#x}-byte page, {self.permissions})"


@dataclass(frozen=True)
class Fault:
    """The access faults: ``kind`` as the architecture names it (x86 ``page-fault``,
    ``general-protection``; arm64 ``translation``, ``address-size``, ``access-flag``,
    ``permission``; s390x ``page-translation``, ``segment-translation``, ...,
    ``translation-specification``, ``asce-type``, ``addressing``, ``protection``), the hardware
    ``level`` it names (None where the architecture names none), the ``code`` hardware reports,
    and ``reason``: what the entry (or address) did, with the manual's rule."""

    kind: str
    level: str | None
    code: int
    reason: str
    trace: tuple[Entry, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"result": "fault", "kind": self.kind, "level": self.level, "code": hex(self.code),
                "reason": self.reason, "trace": [e.to_json() for e in self.trace]}

    def __str__(self) -> str:
        at = f" at {self.level}" if self.level is not None else ""
        return f"{self.kind}{at} code {self.code:#x}: {self.reason}"


Result = Translation | Fault


def parse_access(access: Any) -> tuple[str, bool]:
    """``"read"``/``"write"``/``"fetch"``, optionally ``"user-"``/``"kernel-"`` prefixed, or an
    object with ``kind`` and ``user`` attributes (``emu.machines.base.Access``) -> (kind, user)."""
    if isinstance(access, str):
        user = access.startswith("user-")
        kind = access.split("-", 1)[1] if access.startswith(("user-", "kernel-")) else access
    else:
        kind, user = str(getattr(access, "kind", None)), bool(getattr(access, "user", False))
    if kind not in ACCESS_KINDS:
        raise ValueError(f"access {access!r} is not read, write or fetch (optionally user-/kernel-)")
    return str(kind), user


def cpu_facts(defaults: dict[str, Any], cpu: dict[str, Any] | None, arch: str) -> dict[str, Any]:
    """``defaults`` updated by ``cpu``; an unknown fact name is refused (ValueError)."""
    facts = dict(defaults)
    unknown = set(cpu or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {arch} CPU fact(s) {sorted(unknown)}; known: {', '.join(sorted(defaults))}")
    facts.update(cpu or {})
    return facts


def read_entry(read: Reader, pa: int) -> int:
    """``read(pa)`` as a 64-bit value (a reader's failure names the address)."""
    try:
        value = int(read(pa))
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"cannot read the entry at physical address {pa:#x}: {e}") from None
    if not 0 <= value < 1 << 64:
        raise ValueError(f"the entry read at {pa:#x} ({value:#x}) is not a 64-bit value")
    return value


def entries_reader(entries: dict[int, int]) -> Reader:
    """A reader over ``{pa: value}``: every other 8-byte-aligned address reads 0."""
    return lambda pa: entries.get(pa, 0)


def image_reader(image: bytes, *, base: int = 0, byteorder: str = "little") -> Reader:
    """A reader over a raw physical image whose byte 0 is physical address ``base``; outside it
    every address reads 0 (memory the image does not hold)."""
    def read(pa: int) -> int:
        off = pa - base
        if off < 0 or off + 8 > len(image):
            return 0
        return int.from_bytes(image[off:off + 8], byteorder)  # type: ignore[arg-type]
    return read
