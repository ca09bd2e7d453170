"""EDAT enablement inside the loaded Unicorn library: find the CPU definition record and set
the EDAT-1/EDAT-2 facility bits while the CPU is created (see the package docstring).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from unicorn import s390x_const as S

# -- EDAT enablement inside the loaded library (see module docstring) ----------------------------
EDAT_MODEL = S.UC_CPU_S390X_Z13
_EDAT_MODEL_NAME = b"z13"
_EDAT_MODEL_DESC = b"IBM z13 GA1"
_EDAT_MODEL_ID = (13, 0x2964, 1)  # generation, machine type, EC GA (cpu_models.c CPUDEF_INIT)
# S390Feat enum indices (target/s390x/cpu_features_def.inc.h of this QEMU 5.0 fork).
_FEAT_EDAT = 7  # "edat", STFLE bit 8
_FEAT_EDAT_2 = 66  # "edat2", STFLE bit 78
# "iep", STFLE bit 130: the instruction-execution-protection facility (PoP ch. 3 "Instruction-Execution
# Protection"), index 71 of the same enum: the library's S390FeatDef table (cpu_features.c, one
# record per enum value) holds "esan3" at 0, "edat" at 7, "edat2" at 66, "iep" at 71.  The z13
# base list lacks it (IEP came with the z14).
_FEAT_IEP = 71
_FEAT_ESAN3, _FEAT_ZARCH = 0, 1
# struct S390CPUDef (target/s390x/cpu_models.h) on LP64: name*, desc*, u8 gen, u16 type, u8 ec_ga,
# u8 mha_pow, u32 hmfai, then base_feat (bitmap) and base_init (u64 list), 5 words each.
_DEF_GEN, _DEF_TYPE, _DEF_EC_GA = 16, 18, 20
_DEF_BASE_FEAT, _DEF_BASE_INIT, _FEAT_WORDS = 32, 72, 5

_edat_lock = threading.Lock()


def _library_mappings() -> list[tuple[int, int, str]]:
    """(start, end, perms) of every mapping of the loaded libunicorn."""
    from unicorn.unicorn_py3 import unicorn as _ucmod

    path = os.path.realpath(getattr(_ucmod.uclib, "_name", "") or "")
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == path:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                out.append((lo, hi, fields[1]))
    return out


_cpu_def_cache: list[tuple[int | None, str]] = []


def _find_cpu_def() -> tuple[int | None, str]:
    """Locate the z13 ``S390CPUDef`` record in the loaded library once per process."""
    if not _cpu_def_cache:
        _cpu_def_cache.append(_search_cpu_def())
    return _cpu_def_cache[0]


def _search_cpu_def() -> tuple[int | None, str]:
    """Search the loaded library for the z13 ``S390CPUDef`` record; (address, note)."""
    if sys.byteorder != "little" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None, "the record layout is only known for little-endian 64-bit hosts"
    try:
        maps = _library_mappings()
    except (OSError, ImportError, AttributeError, ValueError) as exc:
        return None, f"cannot read the library's mappings: {exc}"
    if not maps:
        return None, "libunicorn's mappings not found in /proc/self/maps"
    readable = [(lo, hi) for lo, hi, p in maps if p.startswith("r")]
    writable = [(lo, hi) for lo, hi, p in maps if p.startswith("rw")]

    def inside(addr: int, n: int, ranges: list[tuple[int, int]]) -> bool:
        return any(lo <= addr and addr + n <= hi for lo, hi in ranges)

    names = []
    for lo, hi in readable:
        blob = ctypes.string_at(lo, hi - lo)
        i = blob.find(_EDAT_MODEL_NAME + b"\0")
        while i >= 0:
            names.append(lo + i)
            i = blob.find(_EDAT_MODEL_NAME + b"\0", i + 1)
    found = []
    for lo, hi in writable:
        words = np.frombuffer(ctypes.string_at(lo, hi - lo), dtype="<u8")
        for name in names:
            for idx in np.nonzero(words == name)[0]:
                addr = lo + 8 * int(idx)
                if not inside(addr, _DEF_BASE_INIT + 8 * _FEAT_WORDS, writable):
                    continue
                raw = ctypes.string_at(addr, _DEF_BASE_INIT + 8 * _FEAT_WORDS)
                desc = struct.unpack_from("<Q", raw, 8)[0]
                if not inside(desc, len(_EDAT_MODEL_DESC) + 1, readable):
                    continue
                if ctypes.string_at(desc, len(_EDAT_MODEL_DESC) + 1) != _EDAT_MODEL_DESC + b"\0":
                    continue
                ident = (raw[_DEF_GEN], struct.unpack_from("<H", raw, _DEF_TYPE)[0], raw[_DEF_EC_GA])
                if ident != _EDAT_MODEL_ID:
                    continue
                feat = struct.unpack_from(f"<{_FEAT_WORDS}Q", raw, _DEF_BASE_FEAT)
                init = struct.unpack_from(f"<{_FEAT_WORDS}Q", raw, _DEF_BASE_INIT)
                if init[0] & 0b11 != 0b11:  # esan3 + zarch are in every base list
                    continue
                if any(feat) and any(i & ~f for i, f in zip(init, feat, strict=True)):
                    continue  # an initialised bitmap always contains its init list
                found.append(addr)
    if len(found) != 1:
        return None, f"found {len(found)} candidate z13 CPU definitions in libunicorn (need exactly 1)"
    return found[0], f"z13 CPU definition at library offset {found[0] - maps[0][0]:#x}"


@contextmanager
def edat_facilities_enabled(enable: bool, iep: bool = False) -> Iterator[str]:
    """While active, CPUs created with the z13 model get the EDAT-1/EDAT-2 facility bits
    (``enable``) and the instruction-execution-protection facility bit (``iep``)."""
    feats = ((_FEAT_EDAT, _FEAT_EDAT_2) if enable else ()) + ((_FEAT_IEP,) if iep else ())
    what = " and ".join(w for w, on in (("EDAT", enable), ("IEP", iep)) if on)
    if not feats:
        yield "EDAT not requested (edat=False)"
        return
    with _edat_lock:
        addr, note = _find_cpu_def()
        if addr is None:
            yield f"{what} facility bits not enabled: {note}"
            return
        touched: list[tuple[int, int]] = []  # (feature index, bit mask in its word) we set
        for feat in feats:
            word = addr + _DEF_BASE_INIT + 8 * (feat // 64)
            bit = 1 << (feat % 64)
            cell = ctypes.c_uint64.from_address(word)
            if not cell.value & bit:
                cell.value |= bit
                touched.append((feat, bit))
        how = "set in" if touched else "already present in"
        try:
            yield f"{what} facility bits {how} the {note} while the CPU was created"
        finally:
            # Restore: clear what we set in base_init and in the bitmap the CPU init OR'ed it into.
            for feat, bit in touched:
                for base in (_DEF_BASE_INIT, _DEF_BASE_FEAT):
                    cell = ctypes.c_uint64.from_address(addr + base + 8 * (feat // 64))
                    cell.value &= ~bit
