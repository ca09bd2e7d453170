"""Guest physical memory, the frame allocator and the struct page / folio model.

RAM is ONE anonymous mmap that Unicorn maps with ``mem_map_ptr``: the walker reads exactly the bytes
the MMU reads, with no copies in between.  The mapping is sparse (MAP_NORESERVE), so a 4 GiB RAM
that holds a handful of tables and one 2 GiB leaf costs only the pages that are touched.

Page-table entries are read and written in the guest's byte order (little-endian x86-64/arm64,
big-endian s390x).  Data frames can be *tagged*: every 8-byte word holds ``TAG | its own physical
address``, so a guest load through the MMU proves which physical word it reached.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from emu.errors import AddressError, MemoryLayoutError

# A tagged word: the top 16 bits are TAG's, the rest is the word's physical address.
TAG = 0xF011_0000_0000_0000
TAG_MASK = 0xFFFF_0000_0000_0000

MAX_RAM = 1 << 40  # what a sparse mapping of this kind of machine can sensibly hold


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
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
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


@dataclass(frozen=True, order=True)
class Page:
    """``struct page``: identified by its pfn (``page_to_pfn``)."""

    pfn: int


@dataclass(frozen=True, order=True)
class Folio:
    """``struct folio``: the head page's pfn and the folio order (``folio_order``)."""

    pfn: int
    order: int

    @property
    def nr_pages(self) -> int:  # folio_nr_pages()
        return 1 << self.order


class MemMap:
    """The memory map (``mem_map`` / vmemmap): pfn -> page, compound heads and orders.

    Only folios that were allocated are compound; any other pfn is its own order-0 folio, as for
    a page that was never part of a large allocation.  ``max_pfn`` plays ``highest_memmap_pfn``.
    """

    def __init__(self, ram: PhysicalMemory, page_shift: int) -> None:
        self.page_shift = page_shift
        self.page_size = 1 << page_shift
        self.highest_memmap_pfn = (ram.size >> page_shift) - 1
        self._heads: list[int] = []  # sorted head pfns
        self._orders: dict[int, int] = {}

    def pfn_valid(self, pfn: int) -> bool:
        """``pfn_valid()``: the pfn has a struct page (it lies in RAM)."""
        return 0 <= pfn <= self.highest_memmap_pfn

    def add_folio(self, pfn: int, order: int) -> Folio:
        """Make ``[pfn, pfn + 2**order)`` one compound folio (``prep_compound_page``)."""
        if pfn & ((1 << order) - 1):
            raise AddressError(f"folio at pfn {pfn:#x} is not aligned to its order {order}")
        if not self.pfn_valid(pfn + (1 << order) - 1):
            raise MemoryLayoutError(f"folio pfn {pfn:#x} order {order} is beyond RAM")
        i = bisect.bisect_right(self._heads, pfn)
        if i and self._heads[i - 1] + (1 << self._orders[self._heads[i - 1]]) > pfn:
            raise MemoryLayoutError(f"folio at pfn {pfn:#x} overlaps the folio at {self._heads[i - 1]:#x}")
        if i < len(self._heads) and self._heads[i] < pfn + (1 << order):
            raise MemoryLayoutError(f"folio at pfn {pfn:#x} overlaps the folio at {self._heads[i]:#x}")
        self._heads.insert(i, pfn)
        self._orders[pfn] = order
        return Folio(pfn, order)

    def pfn_to_page(self, pfn: int) -> Page:
        return Page(pfn)

    def page_folio(self, page: Page) -> Folio:
        """``page_folio()``: the folio (compound head) that contains ``page``."""
        i = bisect.bisect_right(self._heads, page.pfn)
        if i:
            head = self._heads[i - 1]
            order = self._orders[head]
            if page.pfn < head + (1 << order):
                return Folio(head, order)
        return Folio(page.pfn, 0)

    def compound_head(self, page: Page) -> Page:
        return Page(self.page_folio(page).pfn)

    @staticmethod
    def nth_page(page: Page, n: int) -> Page:
        """``nth_page()``: the page ``n`` struct pages after ``page``."""
        return Page(page.pfn + n)

    def folios(self) -> list[Folio]:
        return [Folio(h, self._orders[h]) for h in self._heads]
