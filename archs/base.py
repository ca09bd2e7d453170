"""What every architecture module provides: entry formats, paging geometry, Linux level folding.

Pure Python + construct; never imports Unicorn.

* :class:`EntryFormat` wraps ONE construct declaration of a 64-bit entry.  It parses and builds
  entries, and derives the ``(shift, mask)`` of every field from the declaration itself, so fast
  paths use masks that cannot drift from the layout.
* :class:`HwLevel` / :class:`PagingConfig` describe a paging configuration: the hardware levels
  from the top down, the size a leaf maps at each, and which Linux level (pgd/p4d/pud/pmd/pte)
  does the real work at each hardware level.  Linux levels with no hardware level of their own are
  *folded* (include/asm-generic/pgtable-nop4d.h, -nopud.h, -nopmd.h): their ``pXd_none``/``pXd_bad``
  are constant 0 and ``pXd_offset`` returns the upper entry's own address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import construct as cs

LINUX_LEVELS = ("pgd", "p4d", "pud", "pmd", "pte")
U64 = 0xFFFF_FFFF_FFFF_FFFF


def _struct_of(fmt: cs.Construct) -> cs.Struct:
    """The innermost Struct of a BitStruct / ByteSwapped(BitStruct) declaration."""
    node: Any = fmt
    while not isinstance(node, cs.Struct):
        node = node.subcon
    return node


def _field_bits(sub: cs.Construct) -> int:
    node: Any = sub
    while not isinstance(node, (cs.BitsInteger, cs.FormatField)) and node is not cs.Flag:
        if isinstance(node, (cs.Const, cs.Renamed, cs.Adapter, cs.Subconstruct)):
            node = node.subcon
        else:
            break
    if node is cs.Flag:
        return 1
    return int(node.sizeof()) if isinstance(node, cs.BitsInteger) else int(node.sizeof() * 8)


class EntryFormat:
    """One 64-bit entry format, declared once with construct.

    ``fmt`` is a ``BitStruct`` whose fields cover all 64 bits (wrapped in ``ByteSwapped`` for a
    little-endian entry).  ``source`` names the manual section or kernel header it encodes.
    """

    def __init__(self, name: str, fmt: cs.Construct, *, byteorder: str, source: str) -> None:
        self.name = name
        self.fmt = fmt
        self.byteorder = byteorder
        self.source = source
        struct = _struct_of(fmt)
        self.fields: list[str] = [s.name for s in struct.subcons if s.name]
        self._widths = {s.name: _field_bits(s) for s in struct.subcons if s.name}
        total = sum(self._widths.values())
        if total != 64:
            raise ValueError(f"{name}: fields cover {total} bits, not 64")
        zero = {f: 0 for f in self.fields}
        #: field -> (shift, mask-in-place), derived by building the declaration.
        self.masks: dict[str, tuple[int, int]] = {}
        for f in self.fields:
            ones = dict(zero)
            ones[f] = (1 << self._widths[f]) - 1
            mask = int.from_bytes(fmt.build(ones), byteorder)  # type: ignore[arg-type]
            shift = (mask & -mask).bit_length() - 1
            self.masks[f] = (shift, mask)

    def width(self, name: str) -> int:
        return self._widths[name]

    def parse(self, value: int) -> dict[str, int]:
        """Decode ``value`` into ``{field: int}`` through the construct declaration."""
        got = self.fmt.parse((value & U64).to_bytes(8, self.byteorder))  # type: ignore[arg-type]
        return {f: int(got[f]) for f in self.fields}

    def build(self, **fields: int) -> int:
        """Encode fields (missing ones are 0) through the construct declaration."""
        unknown = set(fields) - set(self.fields)
        if unknown:
            raise KeyError(f"{self.name} has no field(s) {sorted(unknown)}")
        values = {f: 0 for f in self.fields}
        for f, v in fields.items():
            if v < 0 or v >> self._widths[f]:
                raise ValueError(f"{self.name}.{f} = {v:#x} does not fit in {self._widths[f]} bits")
            values[f] = int(v)
        return int.from_bytes(self.fmt.build(values), self.byteorder)  # type: ignore[arg-type]

    # Fast paths: masks derived from the declaration above.
    def get(self, value: int, name: str) -> int:
        shift, mask = self.masks[name]
        return (value & mask) >> shift

    def mask(self, *names: str) -> int:
        m = 0
        for n in names:
            m |= self.masks[n][1]
        return m

    def with_field(self, value: int, name: str, v: int) -> int:
        shift, mask = self.masks[name]
        return (value & ~mask) | ((v << shift) & mask)


@dataclass(frozen=True)
class HwLevel:
    """One hardware translation level.

    ``shift``/``bits``: the VA bits that index this level's table.  ``leaf_size``: the size a leaf
    (block / large page) maps here, or None where the architecture allows no leaf.  ``linux``: the
    Linux level whose ``pXd_*`` functions interpret this level's entries.
    """

    name: str
    shift: int
    bits: int
    linux: str
    leaf_size: int | None = None
    entry_size: int = 8

    @property
    def entries(self) -> int:
        return 1 << self.bits

    @property
    def table_size(self) -> int:
        return self.entries * self.entry_size

    def index(self, va: int) -> int:
        return (va >> self.shift) & (self.entries - 1)


@dataclass(frozen=True)
class PagingConfig:
    """A paging configuration: ``arch:name`` (e.g. ``x86_64:4level``), its levels top-down."""

    arch: str
    name: str
    levels: tuple[HwLevel, ...]
    page_shift: int
    va_bits: int
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return f"{self.arch}:{self.name}"

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    def level_of(self, linux: str) -> HwLevel | None:
        """The hardware level Linux level ``linux`` works on, None if it is folded away."""
        for lv in self.levels:
            if lv.linux == linux:
                return lv
        return None

    def folded(self, linux: str) -> bool:
        return self.level_of(linux) is None

    def leaf_size(self, linux: str) -> int | None:
        """``PUD_SIZE``/``PMD_SIZE``/``PAGE_SIZE`` where a leaf is allowed, else None."""
        lv = self.level_of(linux)
        return lv.leaf_size if lv else None

    def __str__(self) -> str:
        return self.key
