"""Guest RAM that a QEMU process maps too: the scenario's :class:`~emu.machines.ram.PhysicalMemory`
is moved, in place, onto a memfd (same host address, same contents), which QEMU opens as
``-object memory-backend-file,share=on,mem-path=/proc/<pid>/fd/<fd>``.  Tables are then written
once, by foliowalk, and QEMU's MMU reads exactly those bytes; nothing is copied per probe and no
file is left behind (a memfd has no name in any file system and goes with its last user).
"""

from __future__ import annotations

import ctypes
import mmap
import os

import numpy as np

from emu.errors import EmulatorError
from emu.machines.ram import PhysicalMemory

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]

_PAGE = mmap.PAGESIZE


def _resident_runs(addr: int, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` offsets of the pages of ``[addr, addr+size)`` that are in memory (the only
    ones that can hold anything but zeros in a fresh anonymous mapping)."""
    n = (size + _PAGE - 1) // _PAGE
    vec = np.zeros(n, dtype=np.uint8)
    if _libc.mincore(ctypes.c_void_p(addr), size, vec.ctypes.data_as(ctypes.c_void_p)):
        err = ctypes.get_errno()
        raise EmulatorError(f"mincore() on guest RAM failed: {os.strerror(err)}")
    present = (vec & 1).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], present, [0]))))
    return [(int(a) * _PAGE, min(int(b) * _PAGE, size)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def share(ram: PhysicalMemory) -> str:
    """The path a QEMU process opens to map ``ram`` (moved onto a memfd on first use)."""
    fd = getattr(ram, "_memfd", None)
    if fd is None:
        fd = os.memfd_create("foliowalk-guest-ram", 0)
        try:
            os.ftruncate(fd, ram.size)
            for a, b in _resident_runs(ram.host_address, ram.size):
                view = ram.buf[a:b]
                done = 0
                while done < b - a:
                    done += os.pwrite(fd, view[done:], a + done)
            got = _libc.mmap(ctypes.c_void_p(ram.host_address), ram.size, mmap.PROT_READ | mmap.PROT_WRITE,
                             mmap.MAP_SHARED | 0x10, fd, 0)  # 0x10: MAP_FIXED (same address)
            if got != ram.host_address:
                raise EmulatorError(f"cannot map guest RAM onto a memfd: {os.strerror(ctypes.get_errno())}")
        except BaseException:
            os.close(fd)
            raise
        ram._memfd = fd  # type: ignore[attr-defined]  # closed with the process (the mapping keeps it)
    return f"/proc/{os.getpid()}/fd/{fd}"
