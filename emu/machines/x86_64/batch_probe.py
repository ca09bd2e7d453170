"""The x86-64 machine's batch probe: guest code loops over up to ``CHUNK`` addresses per
``emu_start`` and writes each result (physical address, or fault and its code) to a result table,
handed over as numpy columns (:class:`~emu.machines.base.RawProbes`).  A driver thread runs the
chunks while the caller decodes the previous one.

These are methods of :class:`~emu.machines.x86_64.machine.X86_64Machine` (the class binds them by
name); they live here so that the machine's set-up and single probes and its batch path each fit
in one module.
"""

from __future__ import annotations

import gc
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
from unicorn import x86_const as X

from emu.machines.base import (
    RAW_ERROR,
    RAW_FAULT,
    RAW_TAG,
    READ,
    Access,
    ProbeError,
    ProbeResult,
    RawProbes,
    Translation,
)
from emu.machines.ram import TAG, TAG_MASK
from emu.machines.x86_64.guest_code import (
    CHUNK,
    GUEST_LABELS,
    PER_ADDRESS_BUDGET_US,
    PG_TABLES,
    TABLE_PAGES,
    U64_MASK,
    VEC_PF,
)
from emu.machines.x86_64.native import (
    M_BATCH,
    M_IDLE,
    UNMAPPED,
    BatchRecord,
    RawChunk,
    address_array,
    page_fault,
)

if TYPE_CHECKING:
    from emu.machines.x86_64.machine import X86_64Machine


def probe_many(self: X86_64Machine, vas: Sequence[int] | np.ndarray, access: Access = READ) -> list[ProbeResult]:
    """``[self.probe(va, access) for va in vas]``, computed by guest loops of up to CHUNK
    addresses per ``emu_start``: the loop loads each address from a table in guest RAM and
    stores the loaded word into a result table; a fault is recorded by the hook (error code
    from the state blob, CR2) and the loop resumes at the next address after the hook clears
    QEMU's exception-in-flight field (the #DF trap, ORACLE-NOTES x86-64).

    Built on :meth:`probe_many_raw`: each chunk's columns are turned into result objects
    while the next chunk is emulated (``raw.results()``).
    """
    objects: list[ProbeResult] = []
    self._probe_many(vas, access, objects)
    return objects


def probe_many_raw(self: X86_64Machine, vas: Sequence[int] | np.ndarray, access: Access = READ
                   ) -> tuple[RawProbes, dict[int, ProbeError]]:
    """The batch probe's results as numpy columns (:class:`~emu.machines.base.RawProbes`:
    status, physical address -- from the tag word the load returned, or ``uc_vmem_translate``
    -- and the #PF error code) and ``{index: ProbeError}``, without a Python object per
    address.  ``raw.results(errors)`` is exactly :meth:`probe_many`'s list."""
    return self._probe_many(vas, access, None)


def _probe_many(self: X86_64Machine, vas: Sequence[int] | np.ndarray, access: Access, objects: list[ProbeResult] | None
                ) -> tuple[RawProbes, dict[int, ProbeError]]:
    self._check_probe_args(access)
    arr = address_array(vas)
    n = len(arr)
    raw = RawProbes(np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint32),
                    "vmem", page_fault)
    errors: dict[int, ProbeError] = {}
    if n == 0:
        return raw, errors
    reserved = arr >= np.uint64(self._slot_base)
    if not reserved.any():
        self._probe_many_guest(arr, access.kind, access.user, raw, errors, objects)
        return raw, errors
    keep = np.flatnonzero(~reserved)
    sub = RawProbes(raw.status[keep], raw.pa[keep], raw.code[keep], raw.observed_by, raw.fault_of)
    sub_errors: dict[int, ProbeError] = {}
    sub_objects: list[ProbeResult] | None = None if objects is None else []
    if len(keep):
        self._probe_many_guest(arr[keep], access.kind, access.user, sub, sub_errors, sub_objects)
    raw.status[keep], raw.pa[keep], raw.code[keep] = sub.status, sub.pa, sub.code
    for i in np.flatnonzero(reserved).tolist():
        raw.status[i] = RAW_ERROR
        errors[i] = self._reserved_error(int(arr[i]))
    keep_list = keep.tolist()
    errors.update((keep_list[i], e) for i, e in sub_errors.items())
    if objects is not None and sub_objects is not None:
        full: list[ProbeResult | None] = [None] * n
        for i, r in zip(keep_list, sub_objects, strict=True):
            full[i] = r
        for i in np.flatnonzero(reserved).tolist():
            full[i] = errors[i]
        objects[:] = cast("list[ProbeResult]", full)
    return raw, errors


def _probe_many_guest(self: X86_64Machine, arr: np.ndarray, kind: str, user: bool, raw: RawProbes,
                      errors: dict[int, ProbeError], objects: list[ProbeResult] | None) -> None:
    """Emulate chunk after chunk into the columns of ``raw``; with ``objects``, turn one
    chunk into result objects while the next one runs.

    Building ~16k result objects costs about as much as emulating them and ``uc_emu_start``
    releases the GIL, so on two cores a driver thread runs the emulator (while it runs, only
    it touches the engine, and it releases the GIL only inside ``uc_emu_start``) and this
    thread decodes finished chunks.  What needs the engine after the run (re-probes after a
    timeout, ``uc_vmem_translate`` for words that are no tags) is done here at the end.
    """
    store = arr if kind == "fetch" else arr & np.uint64(~7 & U64_MASK)
    payloads = [store[s : s + CHUNK].astype("<u8").tobytes() for s in range(0, len(arr), CHUNK)]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of small objects: the cyclic GC would triple the cost
    try:
        deferred: list[tuple[int, bool]] = []  # (index, True: re-probe / False: vmem)

        def chunk_done(k: int, item: RawChunk) -> None:
            first = k * CHUNK
            self._decode(item, arr, kind, first, raw, errors, deferred)
            if objects is not None:
                objects.extend(raw.results(errors, first, first + len(item.words) // 8))

        if len(payloads) == 1:
            chunk_done(0, self._drive_chunk(payloads[0], kind, user))
        else:
            self._pipeline(payloads, kind, user, chunk_done)
        resolved = self._resolve(deferred, arr, kind, user, raw, errors)
        if objects is not None:
            for g, res in resolved.items():
                objects[g] = res  # (what raw.put() stored: raw.results() gives an equal object)
    finally:
        self._mode = M_IDLE
        if gc_was_enabled:
            gc.enable()


def _pipeline(self: X86_64Machine, payloads: list[bytes], kind: str, user: bool,
              chunk_done: Callable[[int, RawChunk], None]) -> None:
    results: queue.Queue[RawChunk | BaseException] = queue.Queue(maxsize=4)
    cancel = threading.Event()

    def drive() -> None:
        try:
            for payload in payloads:
                if cancel.is_set():
                    return
                results.put(self._drive_chunk(payload, kind, user))
        except BaseException as exc:  # handed over to the caller's thread
            results.put(exc)

    worker = threading.Thread(target=drive, name="foliowalk-x86-batch", daemon=True)
    worker.start()
    try:
        for k in range(len(payloads)):
            item = results.get()
            if isinstance(item, BaseException):
                raise item
            chunk_done(k, item)
    finally:
        cancel.set()
        while worker.is_alive():  # it finishes its current chunk; keep its put() from blocking
            try:
                results.get(timeout=0.01)
            except queue.Empty:
                pass
        worker.join()


def _drive_chunk(self: X86_64Machine, payload: bytes, kind: str, user: bool) -> RawChunk:
    """Run the guest loop over one chunk of addresses (restarting after an abnormal stop).

    Runs in the driver thread: no numpy, no GIL release outside ``uc_emu_start``.
    """
    n = len(payload) // 8
    buf = self.ram.buf
    buf[self._atab_pa : self._atab_pa + 8 * n] = payload
    buf[self._rtab_pa : self._rtab_pa + 8 * n] = self._zero_table[: 8 * n]
    label = {"read": "b_read", "write": "b_write", "fetch": "b_fetch"}[kind]
    code_base = self._ucode if user else self._kcode
    self._batch = rec = BatchRecord()
    self._batch_actions = self._actions_all
    if kind == "fetch":
        self._batch_after = code_base + GUEST_LABELS["b_fetch.after"]
        self._batch_next = code_base + GUEST_LABELS["b_fetch.next"]
    else:
        self._batch_after = self._batch_next = 0
    reprobe: list[int] = []
    start = 0
    while start < n:
        regs = {
            X.UC_X86_REG_RSI: self._va(PG_TABLES),
            X.UC_X86_REG_RDI: self._va(PG_TABLES + TABLE_PAGES),
            X.UC_X86_REG_R10: start,
            X.UC_X86_REG_RDX: n,
        }
        begin, done = self._start(label, user, regs)
        self._mode = M_BATCH
        self._batch_stop = None
        try:
            reason = self._emu(begin, done, self.timeout_us + (n - start) * PER_ADDRESS_BUDGET_US)
        finally:
            self._mode = M_IDLE
        if reason is None:
            break
        unmapped = self._batch_stop is None and self._uc_errno in UNMAPPED
        reason = self._batch_stop or reason
        idx = self._rr(X.UC_X86_REG_RCX)
        rip = self._rr(X.UC_X86_REG_RIP)
        if reason.startswith("timeout"):
            if idx == n:
                break  # it finished just as the watchdog fired
            # Slow is not hung: the per-address probe (its own time limit) decides this one.
            idx = idx if start <= idx < n else start
            reprobe.append(idx)
            start = idx + 1
            continue
        per_address = rip in self._actions_all or rip < self._slot_base  # an access / a fetch target
        if not (start <= idx < n and per_address):
            # The machine's own code failed (e.g. its slot was unmapped): no use going on.
            for i in range(start, n):
                rec.abnormal.setdefault(i, f"batch run failed at RIP {rip:#x}: {reason}")
            break
        if unmapped:
            # The access (or fetch) translated to a physical address with no RAM behind it:
            # the per-address probe turns that into its translation (``_beyond_ram``).
            reprobe.append(idx)
        else:
            rec.abnormal.setdefault(idx, reason)
        start = idx + 1
    return RawChunk(bytes(buf[self._rtab_pa : self._rtab_pa + 8 * n]), rec, reprobe)


def _decode(self: X86_64Machine, item: RawChunk, arr: np.ndarray, kind: str, offset: int, raw: RawProbes,
            errors: dict[int, ProbeError], deferred: list[tuple[int, bool]]) -> None:
    """One chunk into the columns: tagged words are translations; faults, errors and the
    indices that need the engine again (``deferred``, global indices) are sorted out."""
    words = np.frombuffer(item.words, dtype="<u8")
    n = len(words)
    vas = arr[offset : offset + n]
    tagged = (words & np.uint64(TAG_MASK)) == np.uint64(TAG)
    raw.pa[offset : offset + n] = (words & np.uint64(~TAG_MASK & U64_MASK)) | (vas & np.uint64(7))
    raw.status[offset : offset + n] = RAW_TAG
    rec = item.rec
    if not (rec.final or rec.provisional or rec.observe_failed or rec.abnormal or item.reprobe) and bool(
        tagged.all()
    ):
        return
    done: set[int] = set()
    for i, reason in rec.abnormal.items():
        raw.put(offset + i, ProbeError(reason), errors)
        done.add(i)
    for i in item.reprobe:
        deferred.append((offset + i, True))
        done.add(i)
    if rec.final:
        # The common fault, a #PF at the probed address, straight into the columns.
        vl = vas.tolist()
        fetch = kind == "fetch"
        pf_rows: list[int] = []
        pf_codes: list[int] = []
        for i, (vector, code, cr2) in rec.final.items():
            if i not in done:
                expect = vl[i] if fetch else vl[i] & ~7
                if vector == VEC_PF and cr2 == expect:  # (_pf_result()'s Fault)
                    pf_rows.append(offset + i)
                    pf_codes.append(code)
                else:
                    raw.put(offset + i, self._pf_result(vector, code, cr2, expect), errors)
                done.add(i)
        if pf_rows:
            raw.status[pf_rows] = RAW_FAULT
            raw.code[pf_rows] = pf_codes
    for i, load_fault in rec.provisional.items():
        if i not in done:
            va = int(vas[i])
            raw.put(offset + i, ProbeError(
                f"the store to {va:#x} succeeded although the load faulted ({load_fault}); "
                f"memory at {va & ~7:#x} may have been overwritten"
            ), errors)
            done.add(i)
    need_vmem = set(np.flatnonzero(~tagged).tolist()) | rec.observe_failed
    deferred.extend((offset + i, False) for i in sorted(need_vmem - done))


def _resolve(self: X86_64Machine, deferred: list[tuple[int, bool]], arr: np.ndarray, kind: str, user: bool,
             raw: RawProbes, errors: dict[int, ProbeError]) -> dict[int, ProbeResult]:
    """Finish the indices that need the engine: re-probes after a timeout, then vmem.
    Returns the results it stored, by index."""
    done: dict[int, ProbeResult] = {}
    vmem_idx = [g for g, reprobe in deferred if not reprobe]
    for g, reprobe in deferred:
        if reprobe:
            done[g] = self._probe_guest(int(arr[g]), kind, user)
            raw.put(g, done[g], errors)
    if vmem_idx:
        vas = [int(arr[g]) for g in vmem_idx]
        for g, va, vpa in zip(vmem_idx, vas, self._vmem(vas, kind, user), strict=True):
            done[g] = Translation(vpa, "vmem") if vpa is not None else self._no_vmem(kind, va)
            raw.put(g, done[g], errors)
    return done

# -- arbitrary guest code ------------------------------------------------------------------
