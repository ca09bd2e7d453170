"""Guest physical memory and the frame allocator (struct page / folio: emu/mm/mm_types.py).

RAM is ONE anonymous mmap that Unicorn maps with ``mem_map_ptr``: the walker reads exactly the bytes
the MMU reads, with no copies in between.  The mapping is sparse (MAP_NORESERVE), so a 4 GiB RAM
that holds a handful of tables and one 2 GiB leaf costs only the pages that are touched.

Page-table entries are read and written in the guest's byte order (little-endian x86-64/arm64,
big-endian s390x).  Data frames can be *tagged*: every 8-byte word holds ``TAG | its own physical
address``, so a guest load through the MMU proves which physical word it reached.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from emu.errors import AddressError, MemoryLayoutError

# A tagged word: the top 16 bits are TAG's, the rest is the word's physical address.
TAG = 0xF011_0000_0000_0000
TAG_MASK = 0xFFFF_0000_0000_0000

MAX_RAM = 1 << 40  # what a sparse mapping of this kind of machine can sensibly hold

#: Reserve no swap for guest RAM: only the pages touched are backed, so sparse RAM far beyond the
#: host's memory maps (without it Linux's overcommit heuristic refuses a mapping larger than
#: RAM + swap: ENOMEM at ~23 GiB on a 24 GiB host).  Python 3.11's mmap module lacks the
#: constant; 0x4000 is its Linux value on x86-64, arm64 and s390x (include/uapi/asm-generic/
#: mman.h, which those architectures use).  Elsewhere, nothing.
MAP_NORESERVE: int = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)


class PhysicalMemory:
    """Guest RAM at physical address 0, shared byte for byte with the emulator.

    ``big_endian`` selects the byte order of entries and tags (s390x is big-endian).
    """

    def __init__(self, size: int, *, big_endian: bool = False, page_size: int = 4096) -> None:
        if not isinstance(size, int) or size <= 0 or size > MAX_RAM:
            raise MemoryLayoutError(f"RAM size {size!r} must be a positive integer up to {MAX_RAM:#x}")
        if size % page_size:
            raise MemoryLayoutError(f"RAM size {size:#x} is not a multiple of the page size {page_size:#x}")
        self.size = size
        self.big_endian = big_endian
        self._u64 = struct.Struct(">Q" if big_endian else "<Q")
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE
        try:
            self._map = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as err:  # the host cannot map that much, even sparse
            raise MemoryLayoutError(f"cannot map {size:#x} bytes of guest RAM here: {err.strerror or err}") from None
        self._cbuf = ctypes.c_char.from_buffer(self._map)
        self.buf = memoryview(self._map)
        # Host address of guest physical 0: what Uc.mem_map_ptr wants.
        self.host_address = ctypes.addressof(self._cbuf)
        self._journal: list[list[tuple[int, bytes]]] = []

    # -- bounds -------------------------------------------------------------------------------
    def check_range(self, pa: int, length: int, what: str = "physical range") -> None:
        """Raise :class:`MemoryLayoutError` unless ``[pa, pa+length)`` lies inside RAM."""
        if pa < 0 or length < 0 or pa + length > self.size:
            raise MemoryLayoutError(
                f"{what} {pa:#x}..{pa + length:#x} is outside RAM (0..{self.size:#x})"
            )

    def contains(self, pa: int, length: int = 8) -> bool:
        return 0 <= pa and pa + length <= self.size

    # -- raw access ---------------------------------------------------------------------------
    def read(self, pa: int, length: int) -> bytes:
        self.check_range(pa, length)
        return bytes(self.buf[pa : pa + length])

    def write(self, pa: int, data: bytes) -> None:
        self.check_range(pa, len(data))
        if self._journal:
            self._journal[-1].append((pa, bytes(self.buf[pa : pa + len(data)])))
        self.buf[pa : pa + len(data)] = data

    def read_u64(self, pa: int) -> int:
        """One 64-bit entry in guest byte order (the walker's only read primitive)."""
        if pa & 7:
            raise AddressError(f"entry address {pa:#x} is not 8-byte aligned")
        self.check_range(pa, 8, "entry")
        return int(self._u64.unpack_from(self._map, pa)[0])

    def write_u64(self, pa: int, value: int) -> None:
        if pa & 7:
            raise AddressError(f"entry address {pa:#x} is not 8-byte aligned")
        self.check_range(pa, 8, "entry")
        if self._journal:
            self._journal[-1].append((pa, bytes(self.buf[pa : pa + 8])))
        self._u64.pack_into(self._map, pa, value & 0xFFFF_FFFF_FFFF_FFFF)

    @contextmanager
    def undo(self) -> Iterator[None]:
        """Undo every write made inside the block (e.g. a bad entry Linux cleared during a walk)."""
        self._journal.append([])
        try:
            yield
        finally:
            for pa, old in reversed(self._journal.pop()):
                self.buf[pa : pa + len(old)] = old

    def snapshot(self, ranges: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
        return [(pa, self.read(pa, n)) for pa, n in ranges]

    def restore(self, saved: list[tuple[int, bytes]]) -> None:
        for pa, data in saved:
            self.buf[pa : pa + len(data)] = data

    # -- tags ---------------------------------------------------------------------------------
    def tag(self, pa: int, length: int) -> None:
        """Fill ``[pa, pa+length)`` with words that each hold ``TAG | own physical address``."""
        if pa & 7 or length & 7:
            raise AddressError(f"tag range {pa:#x}+{length:#x} is not 8-byte aligned")
        self.check_range(pa, length, "tagged range")
        fmt = ">" if self.big_endian else "<"
        words = length // 8
        chunk = 1 << 16
        for first in range(0, words, chunk):
            n = min(chunk, words - first)
            base = pa + first * 8
            struct.pack_into(f"{fmt}{n}Q", self._map, base, *range(TAG | base, TAG | (base + 8 * n), 8))

    def tagged_pa(self, word: int, va: int) -> int | None:
        """The physical address a loaded tag word proves, or None if the word is no tag."""
        if word & TAG_MASK != TAG:
            return None
        return (word & ~TAG_MASK) | (va & 7)

    def close(self) -> None:
        """Unmap guest RAM now if nothing else still points into it, else when collected."""
        try:
            self.buf.release()
            del self._cbuf
            self._map.close()
        except (BufferError, AttributeError):
            pass


class FrameAllocator:
    """Hands out naturally aligned physical ranges (tables, folios) from RAM.

    Allocation is first-fit over a sorted list of free ranges; ``reserve`` keeps ranges (an
    architecture's low-core, the machine's own code) away from tables and data.
    """

    def __init__(self, ram: PhysicalMemory, *, reserved: list[tuple[int, int]] | None = None) -> None:
        self.ram = ram
        self._free: list[tuple[int, int]] = [(0, ram.size)]
        for start, end in reserved or []:
            self.reserve(start, end)

    def reserve(self, start: int, end: int) -> None:
        """Remove ``[start, end)`` from the free list (raise if any of it is already in use)."""
        self.ram.check_range(start, end - start, "reserved range")
        for i, (s, e) in enumerate(self._free):
            if s <= start and end <= e:
                pieces = [(a, b) for a, b in ((s, start), (end, e)) if b > a]
                self._free[i : i + 1] = pieces
                return
        raise MemoryLayoutError(f"physical range {start:#x}..{end:#x} is already in use or outside RAM")

    def alloc(self, size: int, align: int | None = None) -> int:
        """Return the lowest free ``size``-byte range aligned to ``align`` (default: ``size``)."""
        align = align or size
        if size <= 0 or align & (align - 1):
            raise MemoryLayoutError(f"bad allocation size {size:#x} / alignment {align:#x}")
        for s, e in self._free:
            start = (s + align - 1) & ~(align - 1)
            if start + size <= e:
                self.reserve(start, start + size)
                return start
        raise MemoryLayoutError(
            f"out of guest RAM: no free {size:#x}-byte range aligned to {align:#x} in {self.ram.size:#x} bytes"
        )

    def free_bytes(self) -> int:
        return sum(e - s for s, e in self._free)
