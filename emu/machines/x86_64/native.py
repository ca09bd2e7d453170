"""What the machine needs below the Python binding: direct ``uclib`` calls that keep the GIL
(``uc_vmem_translate``, context save/restore, register access, TLB flush), a watchdog that
stops a hung ``emu_start``, and the records of one run, batch and raw chunk.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from unicorn import (
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_UNMAPPED,
)
from unicorn.unicorn_py3.unicorn import uclib

from emu.errors import AddressError
from emu.machines.base import (
    Fault,
    address_ndarray,
)
from emu.machines.x86_64.guest_code import VEC_PF, VECTOR_NAMES

NEVER = 0x8000_0000_0000_0000  # the ``until`` of snippet runs: non-canonical, never reached

# Private foreign-function objects (the binding's shared ``uclib`` prototypes are left untouched).
# PYFUNCTYPE: these short calls keep the GIL.  Only ``uc_emu_start`` releases it, so the batch
# driver thread hands the GIL over once per chunk instead of at every call (with another thread
# busy in Python, each re-acquisition can wait a whole switch interval, 5 ms).
_u64p = ctypes.POINTER(ctypes.c_uint64)
uc_vmem_translate = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, _u64p)(
    ("uc_vmem_translate", uclib)
)
uc_context_save = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(("uc_context_save", uclib))
uc_context_restore = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
    ("uc_context_restore", uclib)
)
_emu_stop = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(("uc_emu_stop", uclib))
uc_ctl = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)(("uc_ctl", uclib))
CTL_TLB_FLUSH = (UC_CTL_IO_WRITE << 30) | UC_CTL_TLB_FLUSH  # uc_ctl encoding, no arguments
# Plain 64-bit register access without the binding's per-call register-class lookup (the hooks
# run once per fault; the binding's reg_read costs more than the rest of the hook).
uc_reg_read = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(
    ("uc_reg_read", uclib)
)
uc_reg_write = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(
    ("uc_reg_write", uclib)
)


def address_array(vas: Sequence[int] | np.ndarray) -> np.ndarray:
    """``vas`` as a flat uint64 array; anything that is not a 64-bit unsigned integer is refused
    (numpy alone would turn floats into truncated integers and mixed lists into float64)."""
    if isinstance(vas, np.ndarray):
        return address_ndarray(vas)
    bad = {t for t in set(map(type, vas)) if t is bool or not issubclass(t, (int, np.integer))}
    if bad:
        raise AddressError(f"virtual addresses must be integers, not {sorted(t.__name__ for t in bad)}")
    try:
        return np.array(vas, dtype=np.uint64).reshape(-1)
    except (OverflowError, ValueError) as exc:
        raise AddressError(f"virtual addresses must be 64-bit unsigned integers: {exc}") from None


def page_fault(code: int) -> Fault:
    """The result of a #PF with error ``code`` at the probed address (the raw form's fault)."""
    return Fault("page-fault", None, code, VEC_PF)


def vector_name(vector: int) -> str:
    return f"{VECTOR_NAMES.get(vector, 'exception')} (vector {vector})"


class Watchdog:
    """One thread per machine that stops a guest run which outlives its deadline.

    Replaces ``emu_start(timeout=...)``, whose per-call timer thread costs ~120 µs (measured).
    ``uc_emu_stop`` from another thread is exactly what Unicorn's own timer thread does; a stop that
    lands just after the run ended is harmless (the next ``emu_start`` clears the request).
    """

    def __init__(self, handle: Any, poll_s: float) -> None:
        self._handle = handle
        self._poll = poll_s
        self._lock = threading.Lock()
        self._active: tuple[int, float] | None = None
        self._gen = 0
        self._fired = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="foliowalk-x86-watchdog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            with self._lock:
                act = self._active
                if act is not None and time.monotonic() > act[1]:
                    self._fired = act[0]
                    self._active = None
                    _emu_stop(self._handle)

    def arm(self, budget_us: float) -> int:
        with self._lock:
            self._gen += 1
            self._active = (self._gen, time.monotonic() + budget_us / 1e6)
            return self._gen

    def disarm(self, gen: int) -> bool:
        """End the run ``gen``; True if the watchdog had to stop it."""
        with self._lock:
            self._active = None
            return self._fired == gen

    def close(self) -> None:
        self._stop.set()


# Unicorn errors for an access whose translation succeeded but whose physical address has no
# guest RAM behind it (the page walk itself reads zeros there: a not-present entry).
UNMAPPED = {UC_ERR_READ_UNMAPPED: "read", UC_ERR_WRITE_UNMAPPED: "write", UC_ERR_FETCH_UNMAPPED: "fetch"}


# Hook modes.
M_IDLE, M_PROBE, M_PROBE_FETCH, M_BATCH, M_CALIB, M_RUN = range(6)
# Batch actions keyed by the faulting RIP.
ACT_FINAL_RBX, ACT_PROV_R8, ACT_FINAL_RBX_STORE, ACT_OBS_R8 = range(4)


@dataclass
class RunRecord:
    """What the hooks recorded during one guest run."""

    faults: list[tuple[int, int, int, int]] = field(default_factory=list)  # (vector, code, cr2, rip)
    fetched: bool = False


@dataclass
class BatchRecord:
    """What the hooks recorded during the runs of one batch chunk (indices are chunk positions)."""

    final: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # idx -> (vector, code, cr2)
    provisional: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # write: the load faulted
    observe_failed: set[int] = field(default_factory=set)  # fetch ok, the observing load faulted
    abnormal: dict[int, str] = field(default_factory=dict)  # idx -> reason (run stopped)


@dataclass
class RawChunk:
    """One emulated chunk as the driver thread hands it over."""

    words: bytes  # the result table: one loaded word per address
    rec: BatchRecord
    reprobe: list[int]  # chunk positions the per-address probe decides (timed out; reached no RAM)
