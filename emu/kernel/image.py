"""The harness image: an ELF file linked at a fixed base, read with pyelftools."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import FoliowalkError


class HarnessImageError(FoliowalkError):
    """The harness image is unreadable or lacks a symbol the runner needs."""


@dataclass(frozen=True)
class Segment:
    vaddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class HarnessImage:
    """The loadable segments, symbols, op names and constant names of one harness build."""

    path: Path
    big_endian: bool
    segments: tuple[Segment, ...]
    symbols: dict[str, int]
    ops: tuple[str, ...]  # fw_op_names, in op-number order
    const_names: tuple[str, ...]  # fw_const_names, in fw_consts() order

    @property
    def span(self) -> tuple[int, int]:
        """[start, end) of everything the image occupies."""
        return min(s.vaddr for s in self.segments), max(s.vaddr + s.memsz for s in self.segments)

    def op(self, name: str) -> int:
        try:
            return self.ops.index(name)
        except ValueError:
            raise HarnessImageError(f"the harness image {self.path} has no op {name!r}") from None


def _strings(elf: ELFFile, addr: int) -> tuple[str, ...]:
    """The NUL-separated names at ``addr`` (ended by an empty name)."""
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= addr < seg["p_vaddr"] + seg["p_filesz"]:
            blob = seg.data()[addr - seg["p_vaddr"]:]
            return tuple(n.decode() for n in blob.split(b"\0\0", 1)[0].split(b"\0"))
    raise HarnessImageError(f"address {addr:#x} is in no loadable segment")


def load_image(path: Path, *, predicates: bool = True) -> HarnessImage:
    """The image at ``path``: its loadable segments (``.bss`` included as zeros) and symbols, and
    for the predicate harness (``predicates``) its op and constant names, which it must have."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            symtab = elf.get_section_by_name(".symtab")
            if not isinstance(symtab, SymbolTableSection):
                raise HarnessImageError(f"{path} has no symbol table")
            symbols = {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}
            for need in ("fw_batch", "fw_consts", "fw_op_names", "fw_const_names") if predicates else ():
                if need not in symbols:
                    raise HarnessImageError(f"{path} has no symbol {need}")
            segments = tuple(
                Segment(seg["p_vaddr"], seg.data() + bytes(seg["p_memsz"] - seg["p_filesz"]), seg["p_memsz"])
                for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"
            )
            names = (_strings(elf, symbols["fw_op_names"]), _strings(elf, symbols["fw_const_names"])) \
                if predicates else ((), ())
            return HarnessImage(path, not elf.little_endian, segments, symbols, *names)
    except OSError as e:
        raise HarnessImageError(f"cannot read harness image {path}: {e.strerror}") from None
