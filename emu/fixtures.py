"""Hardware-format fixture sets: write, load, re-check and export them.

A fixture set is a folder of plain files that another tool can read without foliowalk (README,
"Fixtures", documents every field):

* ``manifest.json`` -- the format version, architecture, configuration and kernel, the MMU
  register values the probes ran with, the root-table address, RAM size, byte order, page size and
  level geometry, where every non-zero page of the image lives, the allocator / memmap / zero-page
  state, the VMAs, the cases, and for each checked (address, access): the expected MMU result and,
  per ``FW_*`` flag combination, the expected walk result and the verdict;
* ``memory.bin`` -- the raw bytes of the pages that are neither all-zero nor a simple pattern
  (``image.extents`` maps them to physical addresses; ``image.fills`` and ``image.tagged``
  describe the pattern pages without storing them);
* ``entries.jsonl`` -- one line per page-table entry the walks read: level, raw value, decoded
  fields and Linux's predicates on it, for people who test an entry decoder alone.

Writing is atomic (temporary folder in the same parent, fsync, rename / exchange); loading
validates every field before anything is built, and every problem is a :class:`FixtureError`
naming the file and the field.  Nothing in a set is executed or unpickled.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import re
import shutil
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

import archs
from archs import UnknownConfig
from archs.base import LINUX_LEVELS
from archs.linux import KERNELS, LinuxPgtable, is_migration_entry, swap_type_name
from emu import __version__
from emu.errors import FixtureError, FoliowalkError
from emu.machines.base import Access, ProbeResult, Translation
from emu.machines.ram import MAX_RAM, TAG, TAG_MASK, FrameAllocator, MemMap, PhysicalMemory
from emu.mm.mm_types import MM, VMA, vm_flags_str
from emu.mm.pagewalk import FW_MIGRATION, FW_ZEROPAGE, flags_str
from emu.mm.scenarios import Case, Scenario
from emu.mm.tables import PageTableBuilder
from emu.verify import VERDICT_CLASSES, Report, Row, judge, mmu_json, probe_cases, run_walk

FORMAT_VERSION = 1
FORMAT_NAME = "foliowalk-fixture"
MANIFEST = "manifest.json"
IMAGE = "memory.bin"
ENTRIES = "entries.jsonl"
GRANULE = 4096  # the image's unit: every extent, fill and tagged range is a multiple of it
MAX_MANIFEST_BYTES = 64 << 20
MAX_IMAGE_BYTES = 1 << 30
MAX_ENTRIES_BYTES = 64 << 20
U64 = (1 << 64) - 1
_FLAG_BITS = {"FW_MIGRATION": FW_MIGRATION, "FW_ZEROPAGE": FW_ZEROPAGE}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,120}$")


# ----------------------------------------------------------------------------------------------
# Small helpers shared by writing and reading
# ----------------------------------------------------------------------------------------------
def default_set_name(config: str, kernel: str = archs.DEFAULT_KERNEL) -> str:
    """``x86_64:4level`` -> ``x86_64-4level`` (with ``-<kernel>`` for a non-default kernel)."""
    name = config.replace(":", "-")
    return name if kernel == archs.DEFAULT_KERNEL else f"{name}-{kernel}"


def parse_flags(text: str) -> int:
    """``flags_str()`` backwards: ``"FW_MIGRATION|FW_ZEROPAGE"`` -> 3, ``"0"`` -> 0."""
    if text == "0":
        return 0
    value = 0
    for part in text.split("|"):
        if part not in _FLAG_BITS:
            raise ValueError(f"unknown folio_walk flag {part!r}")
        value |= _FLAG_BITS[part]
    return value


def parse_access(text: str) -> Access:
    """``str(Access)`` backwards: ``"kernel-read"``, ``"user-write"``, ``"kernel-fetch"``..."""
    priv, _, kind = text.partition("-")
    if priv not in ("kernel", "user") or kind not in ("read", "write", "fetch"):
        raise ValueError(f"unknown access {text!r} (want kernel|user - read|write|fetch)")
    return Access(kind, priv == "user")  # type: ignore[arg-type]


def _json_value(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return str(v)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Single-entry vectors (entries.jsonl)
# ----------------------------------------------------------------------------------------------
_MISSING = object()


def _call(ops: LinuxPgtable, name: str, *args: Any) -> Any:
    fn = getattr(ops, name, None)
    if fn is None:
        return _MISSING
    try:
        return fn(*args)
    except (NotImplementedError, ValueError, KeyError, AttributeError):
        return _MISSING


def linux_predicates(ops: LinuxPgtable, linux: str, val: int) -> dict[str, Any]:
    """Linux's functions on one raw entry at Linux level ``linux``, by their kernel names:
    ``pXd_none``/``pXd_bad``/``pXd_present``/``pXd_leaf``, ``pXd_pfn`` (present leaves),
    ``special``/``devmap``/``protnone``/``trans_huge``, and for a non-present, non-none PMD/PTE the
    swap entry (``swp_type``/``swp_offset``, migration pfn).  A folded level answers as the
    asm-generic ``pgtable-nop*.h`` headers do.  Functions an architecture lacks are left out."""
    out: dict[str, Any] = {}

    def put(name: str, *args: Any) -> Any:
        v = _call(ops, name, *args)
        if v is not _MISSING:
            out[name] = bool(v) if isinstance(v, bool) else v
        return v

    folded = ops.folded(linux)
    if linux in ("pgd", "p4d"):
        put(f"{linux}_none", val)
        put(f"{linux}_bad", val)
        return out
    if linux in ("pud", "pmd"):
        none = put(f"{linux}_none", val)
        put(f"{linux}_bad", val)
        present = put(f"{linux}_present", val)
        leaf = put(f"{linux}_leaf", val)
        if folded:
            return out
        if linux == "pmd":
            put("pmd_trans_huge", val)
            put("pmd_protnone", val)
        put(f"{linux}_devmap", val)
        put(f"{linux}_special", val)
        if present is True and leaf is True:
            put(f"{linux}_pfn", val)
        if linux == "pmd" and none is False and present is False:
            put("is_pmd_migration_entry", val)
            _swap(ops, out, "pmd_to_swp_entry", val)
        return out
    # pte
    none = put("pte_none", val)
    present = put("pte_present", val)
    put("pte_protnone", val)
    put("pte_special", val)
    put("pte_devmap", val)
    if present is True:
        put("pte_pfn", val)
    elif none is False:
        _swap(ops, out, "pte_to_swp_entry", val)
    return out


def _swap(ops: LinuxPgtable, out: dict[str, Any], fn: str, val: int) -> None:
    entry = _call(ops, fn, val)
    if entry is _MISSING:
        return
    swp: dict[str, Any] = {
        "swp_type": entry.type,
        "swp_type_name": swap_type_name(entry.type),
        "swp_offset": entry.offset,
        "is_migration_entry": is_migration_entry(entry),
    }
    if is_migration_entry(entry):
        swp["pfn"] = ops.swp_offset_pfn(entry)
    out[fn] = swp


def entry_vector(ops: LinuxPgtable, linux: str, pa: int, value: int) -> dict[str, Any]:
    """One line of ``entries.jsonl``: an entry read at Linux level ``linux`` from ``pa``."""
    hw = ops.hw_level(linux)
    decoded = _call(ops, "decode", hw.linux, value)
    return {
        "arch": ops.arch,
        "config": ops.config.key,
        "kernel": ops.kernel,
        "linux_level": linux,
        "hw_level": hw.name,
        "folded": ops.folded(linux),
        "pa": pa,
        "value": value,
        "decoded": None if decoded is _MISSING else _json_value(decoded),
        "predicates": _json_value(linux_predicates(ops, linux, value)),
    }


# ----------------------------------------------------------------------------------------------
# The memory image: which pages, and how each is stored
# ----------------------------------------------------------------------------------------------
def _free_ranges(alloc: FrameAllocator) -> list[tuple[int, int]]:
    # FrameAllocator keeps its free list private; the fixture needs its complement.
    return [(int(s), int(e)) for s, e in alloc._free]


def in_use_ranges(alloc: FrameAllocator) -> list[tuple[int, int]]:
    """The allocator's in-use ``[start, end)`` ranges (the complement of its free list)."""
    used, pos = [], 0
    for s, e in sorted(_free_ranges(alloc)):
        if s > pos:
            used.append((pos, s))
        pos = max(pos, e)
    if pos < alloc.ram.size:
        used.append((pos, alloc.ram.size))
    return used


def _resident(ram: PhysicalMemory) -> np.ndarray | None:
    """Per image granule: could it hold non-zero bytes (Linux ``mincore()`` on guest RAM)?
    A granule the host never touched is zero.  None where mincore is unavailable."""
    host = mmap.PAGESIZE
    if ram.size % host or ram.host_address % host:
        return None
    n = ram.size // host
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        vec = (ctypes.c_ubyte * n)()
        rc = libc.mincore(ctypes.c_void_p(ram.host_address), ctypes.c_size_t(ram.size), vec)
    except (OSError, AttributeError):
        return None
    if rc != 0:
        return None
    res = (np.frombuffer(bytes(vec), dtype=np.uint8) & 1).astype(bool)
    if host == GRANULE:
        return res
    if host > GRANULE:
        return np.repeat(res, host // GRANULE)
    return np.asarray(res.reshape(-1, GRANULE // host).any(axis=1), dtype=bool)


def _row_addresses(rows: Iterable[Row]) -> Iterator[int]:
    for r in rows:
        w = r.walk
        for _, pa, _ in list(w.trace) + list(w.cleared):
            yield pa
        for opt in (w.entry_pa, w.expected_pa):
            if opt is not None:
                yield opt
        if isinstance(r.mmu, Translation):
            yield r.mmu.pa


def _candidate_granules(sc: Scenario, rows: list[Row]) -> np.ndarray:
    """Per image granule: might it hold non-zero bytes?  Every granule the host ever touched
    (``mincore``); where that is unavailable, every allocated granule and every granule a row
    names (RAM nobody allocated and no walk read is then taken as zero)."""
    ram = sc.ram
    resident = _resident(ram)
    if resident is not None:
        return resident
    want = np.zeros(ram.size // GRANULE, dtype=bool)
    for s, e in in_use_ranges(sc.alloc):
        want[s // GRANULE : (e + GRANULE - 1) // GRANULE] = True
    for pa in _row_addresses(rows):
        if 0 <= pa < ram.size:
            want[pa // GRANULE] = True
    return want


def _runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """``[start, end)`` granule runs where ``mask`` is set."""
    if not mask.any():
        return
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    for a, b in zip(edges[0::2], edges[1::2], strict=True):
        yield int(a), int(b)


def _scan_image(sc: Scenario, rows: list[Row]) -> tuple[dict[str, Any], bytes]:
    """The ``image`` section of the manifest and the bytes of memory.bin: every non-zero granule
    of RAM, as a tagged range, a fill, or raw bytes."""
    ram = sc.ram
    dt = np.dtype(">u8" if ram.big_endian else "<u8")
    words = GRANULE // 8
    steps = np.arange(0, GRANULE, 8, dtype=np.uint64)
    kinds: list[tuple[int, str, int]] = []  # (granule index, kind, fill word)
    chunk = 4096  # granules per numpy view (16 MiB)
    for a, b in _runs(_candidate_granules(sc, rows)):
        for lo in range(a, b, chunk):
            n = min(chunk, b - lo)
            block = np.frombuffer(ram.buf, dtype=dt, count=n * words, offset=lo * GRANULE).reshape(n, words)
            for i in np.flatnonzero(block.any(axis=1)):
                g = lo + int(i)
                arr = block[i]
                pa, first = g * GRANULE, int(arr[0])
                if first & TAG_MASK == TAG and np.array_equal(arr, np.uint64(TAG | pa) + steps):
                    kinds.append((g, "tag", 0))
                elif (arr == arr[0]).all():
                    kinds.append((g, "fill", first))
                else:
                    kinds.append((g, "raw", 0))
    extents: list[dict[str, int]] = []
    fills: list[dict[str, int]] = []
    tagged: list[dict[str, int]] = []
    data = bytearray()
    prev: tuple[int, str, int] | None = None
    for g, kind, word in kinds:
        pa = g * GRANULE
        contiguous = prev is not None and prev[0] == g - 1 and prev[1] == kind and prev[2] == word
        if kind == "raw":
            if contiguous:
                extents[-1]["size"] += GRANULE
            else:
                extents.append({"pa": pa, "offset": len(data), "size": GRANULE})
            data += ram.buf[pa : pa + GRANULE]
        elif kind == "fill":
            if contiguous:
                fills[-1]["size"] += GRANULE
            else:
                fills.append({"pa": pa, "size": GRANULE, "word": word})
        elif contiguous:
            tagged[-1]["size"] += GRANULE
        else:
            tagged.append({"pa": pa, "size": GRANULE})
        prev = (g, kind, word)
    image = {
        "file": IMAGE,
        "size": len(data),
        "sha256": _sha256(bytes(data)),
        "granule": GRANULE,
        "extents": extents,
        "fills": fills,
        "tag": {"value": TAG, "mask": TAG_MASK},
        "tagged": tagged,
    }
    return image, bytes(data)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def _registers(sc: Scenario) -> dict[str, int]:
    """The oracle's MMU registers while it translates this mm (tables restored afterwards)."""
    if sc.oracle is None:
        return {}
    saved = sc.ram.snapshot(sc.builder.tables)
    try:
        sc.oracle.attach(sc.mm)
        return {str(k): int(v) for k, v in sc.oracle.registers().items()}
    finally:
        sc.ram.restore(saved)


def _levels_json(ops: LinuxPgtable) -> list[dict[str, Any]]:
    return [
        {
            "name": lv.name,
            "linux": lv.linux,
            "shift": lv.shift,
            "bits": lv.bits,
            "entries": lv.entries,
            "entry_size": lv.entry_size,
            "table_size": lv.table_size,
            "leaf_size": lv.leaf_size,
        }
        for lv in ops.config.levels
    ]


def _cases_and_checks(sc: Scenario, rows: list[Row]) -> tuple[list[Case], list[dict[str, Any]]]:
    """Group ``rows`` by (case, access).  A row belongs to the first case with its name and
    address that has no row yet for its access and flags (a scenario may list one address
    twice); a row no case explains gets a case of its own in the VMA holding its address."""
    cases = list(sc.cases)
    by_key: dict[tuple[str, int], list[int]] = {}
    for i, c in enumerate(cases):
        by_key.setdefault((c.name, c.addr), []).append(i)
    groups: dict[tuple[int, str], dict[str, Any]] = {}
    seen: dict[tuple[int, str], set[str]] = {}
    for r in rows:
        if r.config != sc.config:
            raise FixtureError(f"row for {r.config} given with a {sc.config} scenario")
        parse_access(r.access)
        flags = flags_str(r.walk.flags)
        idxs = by_key.setdefault((r.case, r.addr), [])
        free = [j for j in idxs if flags not in seen.get((j, r.access), set())]
        if free:
            i = free[0]
        else:
            vma = sc.mm.find_vma(r.addr)
            if vma is None:
                if idxs:
                    raise FixtureError(f"two rows for {r.case!r} at {r.addr:#x} ({r.access}, {flags})")
                raise FixtureError(f"row {r.case!r} at {r.addr:#x}: no case and no VMA holds this address")
            cases.append(Case(r.case, r.addr, vma))
            i = len(cases) - 1
            idxs.append(i)
        mmu = mmu_json(r.mmu)
        key = (i, r.access)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"case": i, "addr": r.addr, "access": r.access, "mmu": mmu, "walks": []}
        elif group["mmu"] != mmu:
            raise FixtureError(f"rows for {r.case!r} at {r.addr:#x} ({r.access}) carry different MMU results")
        seen.setdefault(key, set()).add(flags)
        group["walks"].append({"walk": r.walk.to_json(), "verdict": r.verdict})
    return cases, list(groups.values())


def _check_walks_reproduce(sc: Scenario, cases: list[Case], checks: list[dict[str, Any]]) -> None:
    """Every recorded walk must come out the same on the RAM being saved, or the set would
    fail its own check.  (It does not when RAM changed after the walks: e.g. a frame a fuzzed
    entry uses as a table was tagged afterwards, or a probe's fault wrote s390x low core.)"""
    for ch in checks:
        case = cases[ch["case"]]
        for w in ch["walks"]:
            now = run_walk(sc, case, parse_flags(w["walk"]["flags"])).to_json()
            diff = _dict_diff("walk", w["walk"], now)
            if diff:
                where = f"row {case.name!r} at {case.addr:#x} ({w['walk']['flags']})"
                raise FixtureError(
                    f"{where} does not reproduce on the RAM being saved (changed after the walk?): {diff[0]}"
                )


def _entry_lines(ops: LinuxPgtable, rows: list[Row]) -> list[dict[str, Any]]:
    seen: set[tuple[str, int, int]] = set()
    lines = []
    for r in rows:
        for step in list(r.walk.trace) + list(r.walk.cleared):
            if step not in seen:
                seen.add(step)
                lines.append(entry_vector(ops, *step))
    return lines


def render_fixture_set(
    sc: Scenario, rows: list[Row], *, name: str, extra: dict[str, Any] | None = None
) -> dict[str, bytes]:
    """The files of one set, by name, as bytes (deterministic: no timestamps)."""
    ops = sc.ops
    if extra is not None:
        if not isinstance(extra, dict):
            raise FixtureError("extra: must be a dict")
        try:
            extra = json.loads(json.dumps(extra, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise FixtureError(f"extra: not plain JSON ({err})") from None
    cases, checks = _cases_and_checks(sc, rows)
    _check_walks_reproduce(sc, cases, checks)
    vmas = list(sc.mm.vmas)
    vma_index = {id(v): i for i, v in enumerate(vmas)}
    for c in cases:
        if id(c.vma) not in vma_index:
            raise FixtureError(f"case {c.name!r}: its VMA is not one of the mm's VMAs")
    image, data = _scan_image(sc, rows)
    entries = _entry_lines(ops, rows)
    entries_bytes = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()
    summary = Counter(r.verdict_class for r in rows)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "foliowalk_version": __version__,
        "name": name,
        "arch": ops.arch,
        "config": ops.config.key,
        "kernel": ops.kernel,
        "description": ops.config.description,
        "endianness": "big" if ops.big_endian else "little",
        "page_size": ops.PAGE_SIZE,
        "va_bits": ops.config.va_bits,
        "levels": _levels_json(ops),
        "ram_size": sc.ram.size,
        "root_table": sc.mm.pgd,
        "registers": _registers(sc),
        "reserved_va": [list(r) for r in sc.builder.reserved],
        "image": image,
        "allocator": {"in_use": [{"start": s, "end": e} for s, e in in_use_ranges(sc.alloc)]},
        "tables": [{"pa": pa, "size": size} for pa, size in sc.builder.tables],
        "memmap": {
            "highest_memmap_pfn": sc.memmap.highest_memmap_pfn,
            "folios": [{"pfn": f.pfn, "order": f.order} for f in sc.memmap.folios()],
        },
        "zero_pfn": sc.mm.zero_pfn,
        "zero_page_nr": sc.mm.zero_page_nr,
        "huge_zero_pfn": sc.mm.huge_zero_pfn,
        "vmas": [
            {
                "name": v.name,
                "vm_start": v.vm_start,
                "vm_end": v.vm_end,
                "vm_flags": v.vm_flags,
                "vm_flags_names": vm_flags_str(v.vm_flags),
                "vm_pgoff": v.vm_pgoff,
            }
            for v in vmas
        ],
        "cases": [{"name": c.name, "addr": c.addr, "vma": vma_index[id(c.vma)]} for c in cases],
        "omitted": list(sc.omitted),
        "checks": checks,
        "summary": {c: summary.get(c, 0) for c in VERDICT_CLASSES},
        "entries": {"file": ENTRIES, "count": len(entries), "sha256": _sha256(entries_bytes)},
        "extra": extra or {},
    }
    manifest_bytes = (json.dumps(_json_value(manifest), indent=1, allow_nan=False) + "\n").encode()
    return {MANIFEST: manifest_bytes, IMAGE: data, ENTRIES: entries_bytes}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return bool(rc == 0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale(out_dir: Path, name: str) -> None:
    """Remove temp folders of an earlier write of ``name`` whose process is gone (killed)."""
    pat = re.compile(rf"^\.{re.escape(name)}\.(tmp|old)-(\d+)-")
    for p in out_dir.iterdir():
        m = pat.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_fixture_set(
    out_dir: Path,
    sc: Scenario,
    rows: list[Row],
    *,
    name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ONE fixture set ``out_dir/<name>`` for scenario ``sc`` and its checked ``rows``
    (``verify_scenario(sc)``); returns the set's folder.

    The set is written into a temporary folder in ``out_dir``, fsynced, then renamed into place
    (an existing set is swapped out atomically), so an interrupted write leaves the old set or the
    new one, never a torn one.  ``name`` defaults to ``x86_64-4level`` style; ``extra`` (plain
    JSON) is stored as the manifest's ``extra``.
    """
    out_dir = Path(out_dir)
    name = name or default_set_name(sc.config, sc.ops.kernel)
    if not _NAME_RE.match(name):
        raise FixtureError(f"set name {name!r}: use letters, digits, '.', '_', '+', '-' (not leading)")
    files = render_fixture_set(sc, rows, name=name, extra=extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir, name)
    final = out_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=out_dir))
    try:
        os.chmod(tmp, 0o755)
        for fname, data in files.items():
            _write_file(tmp / fname, data)
        _fsync_dir(tmp)
        if final.is_symlink() or (final.exists() and not final.is_dir()):
            raise FixtureError(f"{final}: exists and is not a fixture-set folder")
        if not final.exists():
            os.rename(tmp, final)
        elif _exchange(tmp, final):
            shutil.rmtree(tmp)  # now holds the old set
        else:  # no atomic exchange here: two renames, the old set kept until the new is in place
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=out_dir))
            os.rmdir(old)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(out_dir)
    return final


# ----------------------------------------------------------------------------------------------
# Loading and validating
# ----------------------------------------------------------------------------------------------
class _Checker:
    """Type and range checks whose errors name the file and the field."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, fld: str, msg: str) -> NoReturn:
        raise FixtureError(f"{self.file}: {fld}: {msg}")

    @staticmethod
    def _type(v: Any) -> str:
        return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
            type(v), "number" if isinstance(v, (int, float)) else type(v).__name__
        )

    def obj(self, v: Any, fld: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(fld, f"must be an object, got {self._type(v)}")
        return v

    def key(self, o: dict[str, Any], k: str, fld: str) -> Any:
        if k not in o:
            self.fail(f"{fld}.{k}" if fld else k, "missing")
        return o[k]

    def num(self, v: Any, fld: str, lo: int = 0, hi: int = U64) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(fld, f"must be an integer, got {self._type(v)} {v!r:.40}")
        if not lo <= v <= hi:
            self.fail(fld, f"{v:#x} is out of range {lo:#x}..{hi:#x}")
        return v

    def opt_int(self, v: Any, fld: str, lo: int = 0, hi: int = U64) -> int | None:
        return None if v is None else self.num(v, fld, lo, hi)

    def text(self, v: Any, fld: str) -> str:
        if not isinstance(v, str):
            self.fail(fld, f"must be a string, got {self._type(v)}")
        return v

    def flag(self, v: Any, fld: str) -> bool:
        if not isinstance(v, bool):
            self.fail(fld, f"must be true or false, got {self._type(v)}")
        return v

    def arr(self, v: Any, fld: str) -> list[Any]:
        if not isinstance(v, list):
            self.fail(fld, f"must be an array, got {self._type(v)}")
        return v

    def loads(self, data: bytes, fld: str = "") -> Any:
        def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in pairs:
                if k in out:
                    self.fail(fld or "(document)", f"duplicate key {k!r}")
                out[k] = v
            return out

        def no_constants(c: str) -> NoReturn:
            self.fail(fld or "(document)", f"{c} is not allowed")

        try:
            text = data.decode("utf-8")
            return json.loads(text, object_pairs_hook=no_dupes, parse_constant=no_constants)
        except UnicodeDecodeError as err:
            self.fail(fld or "(document)", f"not UTF-8 ({err.reason} at byte {err.start})")
        except json.JSONDecodeError as err:
            where = f"line {err.lineno} column {err.colno}"
            self.fail(fld or "(document)", f"not valid JSON: {err.msg} at {where}")
        except RecursionError:
            self.fail(fld or "(document)", "nested too deeply")


@dataclass(frozen=True)
class Check:
    """One checked (address, access): its case, the recorded MMU result and, per flags, the
    recorded walk (``WalkResult.to_json()``) and verdict."""

    case: int
    addr: int
    access: str
    mmu: dict[str, Any]
    walks: tuple[tuple[int, dict[str, Any], str], ...]  # (flags, walk json, verdict)


@dataclass
class FixtureSet:
    """A loaded, fully validated fixture set (see :func:`load_fixture_set`)."""

    path: Path
    manifest: dict[str, Any]
    config: str
    kernel: str
    ram_size: int
    root_table: int
    registers: dict[str, int]
    extents: list[tuple[int, int, int]]  # (pa, offset, size)
    fills: list[tuple[int, int, int]]  # (pa, size, word)
    tagged: list[tuple[int, int]]  # (pa, size)
    image: bytes
    in_use: list[tuple[int, int]]
    tables: list[tuple[int, int]]
    folios: list[tuple[int, int]]  # (pfn, order)
    zero_pfn: int
    zero_page_nr: int
    huge_zero_pfn: int | None
    vmas: list[dict[str, Any]]
    cases: list[tuple[str, int, int]]  # (name, addr, vma index)
    checks: list[Check]
    entries: list[dict[str, Any]]
    reserved_va: list[tuple[int, int]] = field(default_factory=list)
    omitted: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def arch(self) -> str:
        return self.config.split(":", 1)[0]

    def rows_count(self) -> int:
        return sum(len(c.walks) for c in self.checks)

    def ops(self) -> LinuxPgtable:
        return archs.get_ops(self.config, self.kernel)

    def to_scenario(self, with_oracle: bool = True) -> Scenario:
        """Rebuild the scenario: RAM (image pages at their physical addresses), allocator (the
        recorded in-use ranges reserved before the oracle allocates its own frames), memmap
        folios, zero page / huge zero folio, VMAs and cases; the MMU oracle attached unless
        ``with_oracle`` is False."""
        ops = self.ops()
        ram = PhysicalMemory(self.ram_size, big_endian=ops.big_endian)
        sc: Scenario | None = None
        try:
            alloc = FrameAllocator(ram)
            for s, e in self.in_use:
                alloc.reserve(s, e)
            memmap = MemMap(ram, ops.PAGE_SHIFT)
            mm = MM(ops, ram, _Fixed(self.zero_pfn << ops.PAGE_SHIFT), memmap, self.root_table)  # type: ignore[arg-type]
            mm.alloc = alloc
            if mm.zero_page_nr != self.zero_page_nr:
                raise FixtureError(
                    f"{self.path / MANIFEST}: zero_page_nr: {self.zero_page_nr}, but {self.config} has "
                    f"{mm.zero_page_nr} zero pages"
                )
            mm.huge_zero_pfn = self.huge_zero_pfn
            made = {(f.pfn, f.order) for f in memmap.folios()}  # MM made the zero page folio(s)
            for pfn, order in self.folios:
                if (pfn, order) not in made:
                    memmap.add_folio(pfn, order)
            if {(f.pfn, f.order) for f in memmap.folios()} != set(self.folios):
                raise FixtureError(
                    f"{self.path / MANIFEST}: memmap.folios: the zero page folios of {self.config} "
                    f"at pfn {self.zero_pfn:#x} are not the recorded ones"
                )
            builder = PageTableBuilder(mm)  # may write empty entries into the root: image next
            builder.tables = list(self.tables)
            self.apply_image(ram)
            vma_of = [
                mm.add_vma(VMA(v["vm_start"], v["vm_end"], v["vm_flags"], v["vm_pgoff"], name=v["name"]))
                for v in self.vmas
            ]
            sc = Scenario(ops, ram, alloc, memmap, mm, builder, omitted=list(self.omitted))
            for cname, addr, vi in self.cases:
                sc.add(cname, addr, vma_of[vi])
            if with_oracle:
                from emu.machines.oracle import make_oracle

                sc.oracle = make_oracle(ops, ram, alloc)
                builder.reserved = sc.oracle.reserved_va()
            else:
                builder.reserved = list(self.reserved_va)
            return sc
        except BaseException as err:
            if sc is not None:
                sc.close()
            else:
                ram.close()
            if isinstance(err, FoliowalkError) and not isinstance(err, FixtureError):
                raise FixtureError(f"{self.path / MANIFEST}: does not rebuild: {err}") from err
            raise

    def apply_image(self, ram: PhysicalMemory) -> None:
        """Write the image into ``ram``: extents, then fills, then tagged ranges."""
        for pa, off, size in self.extents:
            ram.buf[pa : pa + size] = self.image[off : off + size]
        fmt = ">Q" if ram.big_endian else "<Q"
        for pa, size, word in self.fills:
            ram.buf[pa : pa + size] = struct.pack(fmt, word) * (size // 8)
        for pa, size in self.tagged:
            ram.tag(pa, size)


class _Fixed:
    """An allocator stand-in that hands MM its recorded zero page (MM allocates it itself)."""

    def __init__(self, pa: int) -> None:
        self.pa = pa

    def alloc(self, size: int, align: int | None = None) -> int:
        return self.pa


def _member(set_dir: Path, rel: Any, c: _Checker, fld: str) -> Path:
    """A file named by the manifest: relative, inside the set's folder, a regular file."""
    rel = c.text(rel, fld)
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or re.match(r"^[A-Za-z]:", rel):
        c.fail(fld, f"{rel!r} must be a relative path inside the fixture set's folder")
    parts = Path(rel).parts
    if any(p in ("..", ".") for p in parts) or "\x00" in rel:
        c.fail(fld, f"{rel!r} escapes the fixture set's folder")
    target = set_dir / rel
    try:
        resolved = target.resolve(strict=False)
        root = set_dir.resolve(strict=True)
    except (OSError, RuntimeError) as err:
        c.fail(fld, f"{rel!r} cannot be resolved ({err})")
    if root != resolved and root not in resolved.parents:
        c.fail(fld, f"{rel!r} escapes the fixture set's folder (it resolves to {resolved})")
    if not target.exists():
        c.fail(fld, f"{rel!r} is missing")
    if not target.is_file():
        c.fail(fld, f"{rel!r} is not a regular file")
    return target


def _read_limited(path: Path, limit: int, c: _Checker, fld: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            c.fail(fld, f"{path.name} is {size} bytes, more than the {limit}-byte limit")
        return path.read_bytes()
    except OSError as err:
        c.fail(fld, f"cannot read {path.name}: {err.strerror or err}")


def _ranges_disjoint(ranges: list[tuple[int, int, str]], c: _Checker) -> None:
    last_end, last_fld = -1, ""
    for s, e, fld in sorted(ranges):
        if s < last_end:
            c.fail(fld, f"{s:#x}..{e:#x} overlaps {last_fld}")
        if e > last_end:
            last_end, last_fld = e, fld


def load_fixture_set(path: Path) -> FixtureSet:
    """Load and validate the fixture set in folder ``path``.

    Every problem raises :class:`FixtureError` naming the file and the field: a missing file, an
    image shorter or longer than the manifest says (or with another sha256), an unknown format
    version, a value of the wrong JSON type, a page outside the image or outside RAM, overlapping
    ranges, a path that escapes the set's folder.  Nothing is built until everything passed."""
    path = Path(path)
    if not path.is_dir():
        raise FixtureError(f"{path}: no such fixture-set folder")
    mc = _Checker(str(path / MANIFEST))
    mpath = _member(path, MANIFEST, _Checker(str(path)), MANIFEST)
    m = mc.obj(mc.loads(_read_limited(mpath, MAX_MANIFEST_BYTES, mc, "(document)")), "(document)")

    def key(o: dict[str, Any], k: str, f: str = "") -> Any:
        return mc.key(o, k, f)

    fmt = key(m, "format")
    if fmt != FORMAT_NAME:
        mc.fail("format", f"{fmt!r} is not {FORMAT_NAME!r}: not a foliowalk fixture set")
    version = key(m, "format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        mc.fail("format_version", f"must be an integer, got {mc._type(version)}")
    if version != FORMAT_VERSION:
        mc.fail(
            "format_version", f"unknown format version {version} (this foliowalk reads {FORMAT_VERSION})"
        )

    config_key = mc.text(key(m, "config"), "config")
    kernel = mc.text(key(m, "kernel"), "kernel")
    if kernel not in KERNELS:
        mc.fail("kernel", f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    try:
        ops = archs.get_ops(config_key, kernel)
    except UnknownConfig as err:
        mc.fail("config", str(err))
    if mc.text(key(m, "arch"), "arch") != ops.arch:
        mc.fail("arch", f"{m['arch']!r} does not match config {config_key!r}")
    endian = mc.text(key(m, "endianness"), "endianness")
    if endian != ("big" if ops.big_endian else "little"):
        mc.fail("endianness", f"{endian!r} is not the byte order of {config_key}")
    if mc.num(key(m, "page_size"), "page_size") != ops.PAGE_SIZE:
        mc.fail("page_size", f"{m['page_size']} is not {config_key}'s page size {ops.PAGE_SIZE}")
    levels = mc.arr(key(m, "levels"), "levels")
    if levels != _levels_json(ops):
        mc.fail("levels", f"do not match the geometry of {config_key} in this foliowalk")

    page = ops.PAGE_SIZE
    ram_size = mc.num(key(m, "ram_size"), "ram_size", 1, MAX_RAM)
    if ram_size % page or ram_size % GRANULE:
        mc.fail("ram_size", f"{ram_size:#x} is not a multiple of the page size {page:#x}")
    top = ops.config.levels[0]
    root = mc.num(key(m, "root_table"), "root_table")
    if root % min(top.table_size, page) or root + top.table_size > ram_size:
        mc.fail("root_table", f"{root:#x} is not an aligned table inside RAM (0..{ram_size:#x})")
    regs_o = mc.obj(key(m, "registers"), "registers")
    registers = {k: mc.num(v, f"registers.{k}") for k, v in regs_o.items()}

    # -- image ----------------------------------------------------------------------------------
    img = mc.obj(key(m, "image"), "image")
    if mc.num(key(img, "granule", "image"), "image.granule") != GRANULE:
        mc.fail("image.granule", f"must be {GRANULE}")
    img_path = _member(path, key(img, "file", "image"), mc, "image.file")
    img_size = mc.num(key(img, "size", "image"), "image.size", 0, MAX_IMAGE_BYTES)
    ic = _Checker(str(img_path))
    actual = img_path.stat().st_size
    if actual != img_size:
        what = "truncated" if actual < img_size else "longer than recorded"
        ic.fail("size", f"{actual} bytes, but manifest image.size says {img_size} ({what})")
    image = _read_limited(img_path, MAX_IMAGE_BYTES, ic, "size")
    if len(image) != img_size:
        ic.fail("size", f"{len(image)} bytes read, manifest image.size says {img_size} (changed meanwhile?)")
    sha = mc.text(key(img, "sha256", "image"), "image.sha256")
    if _sha256(image) != sha:
        ic.fail("sha256", "contents do not match manifest image.sha256 (corrupt or edited)")
    tag_o = mc.obj(key(img, "tag", "image"), "image.tag")
    if mc.num(key(tag_o, "value", "image.tag"), "image.tag.value") != TAG or mc.num(
        key(tag_o, "mask", "image.tag"), "image.tag.mask"
    ) != TAG_MASK:
        mc.fail("image.tag", f"this foliowalk tags words as {TAG:#x} | pa (mask {TAG_MASK:#x})")

    spans: list[tuple[int, int, str]] = []

    def span(o: Any, fld: str) -> tuple[int, int]:
        o = mc.obj(o, fld)
        pa = mc.num(key(o, "pa", fld), f"{fld}.pa")
        size = mc.num(key(o, "size", fld), f"{fld}.size", GRANULE)
        if pa % GRANULE or size % GRANULE:
            mc.fail(fld, f"pa {pa:#x} / size {size:#x} are not multiples of the {GRANULE}-byte granule")
        if pa + size > ram_size:
            mc.fail(fld, f"page {pa:#x}..{pa + size:#x} is outside RAM (0..{ram_size:#x})")
        spans.append((pa, pa + size, fld))
        return pa, size

    extents = []
    used_file: list[tuple[int, int, str]] = []
    for i, e in enumerate(mc.arr(key(img, "extents", "image"), "image.extents")):
        fld = f"image.extents[{i}]"
        pa, size = span(e, fld)
        off = mc.num(key(e, "offset", fld), f"{fld}.offset")
        if off + size > img_size:
            mc.fail(fld, f"bytes {off:#x}..{off + size:#x} are outside the image ({img_size:#x} bytes)")
        used_file.append((off, off + size, fld))
        extents.append((pa, off, size))
    _ranges_disjoint(used_file, mc)
    fills = []
    for i, f in enumerate(mc.arr(key(img, "fills", "image"), "image.fills")):
        fld = f"image.fills[{i}]"
        pa, size = span(f, fld)
        fills.append((pa, size, mc.num(key(f, "word", fld), f"{fld}.word")))
    tagged = []
    for i, t in enumerate(mc.arr(key(img, "tagged", "image"), "image.tagged")):
        tagged.append(span(t, f"image.tagged[{i}]"))
    _ranges_disjoint(spans, mc)

    # -- allocator, tables, memmap, zero pages --------------------------------------------------
    alloc_o = mc.obj(key(m, "allocator"), "allocator")
    in_use: list[tuple[int, int]] = []
    prev_end = -1
    for i, r in enumerate(mc.arr(key(alloc_o, "in_use", "allocator"), "allocator.in_use")):
        fld = f"allocator.in_use[{i}]"
        r = mc.obj(r, fld)
        s = mc.num(key(r, "start", fld), f"{fld}.start", 0, ram_size)
        e = mc.num(key(r, "end", fld), f"{fld}.end", 0, ram_size)
        if e <= s or s < prev_end:
            mc.fail(fld, f"{s:#x}..{e:#x} is empty, unsorted or overlaps the previous range")
        prev_end = e
        in_use.append((s, e))
    tables = []
    for i, t in enumerate(mc.arr(key(m, "tables"), "tables")):
        fld = f"tables[{i}]"
        t = mc.obj(t, fld)
        pa = mc.num(key(t, "pa", fld), f"{fld}.pa")
        size = mc.num(key(t, "size", fld), f"{fld}.size", 8)
        if pa % 8 or size % 8 or pa + size > ram_size:
            mc.fail(fld, f"table {pa:#x}+{size:#x} is misaligned or outside RAM (0..{ram_size:#x})")
        tables.append((pa, size))
    mmo = mc.obj(key(m, "memmap"), "memmap")
    max_pfn = ram_size // page
    if mc.num(key(mmo, "highest_memmap_pfn", "memmap"), "memmap.highest_memmap_pfn") != max_pfn - 1:
        mc.fail("memmap.highest_memmap_pfn", f"must be ram_size / page_size - 1 = {max_pfn - 1:#x}")
    folios = []
    fspans: list[tuple[int, int, str]] = []
    for i, f in enumerate(mc.arr(key(mmo, "folios", "memmap"), "memmap.folios")):
        fld = f"memmap.folios[{i}]"
        f = mc.obj(f, fld)
        pfn = mc.num(key(f, "pfn", fld), f"{fld}.pfn", 0, max_pfn - 1)
        order = mc.num(key(f, "order", fld), f"{fld}.order", 0, 40)
        if pfn % (1 << order) or pfn + (1 << order) > max_pfn:
            mc.fail(fld, f"folio pfn {pfn:#x} order {order} is misaligned or beyond RAM")
        fspans.append((pfn, pfn + (1 << order), fld))
        folios.append((pfn, order))
    _ranges_disjoint(fspans, mc)
    zero_pfn = mc.num(key(m, "zero_pfn"), "zero_pfn", 0, max_pfn - 1)
    zero_nr = mc.num(key(m, "zero_page_nr"), "zero_page_nr", 1, 1 << 20)
    if zero_pfn + zero_nr > max_pfn or not any(p <= zero_pfn < p + (1 << o) for p, o in folios):
        mc.fail("zero_pfn", f"{zero_pfn:#x} (+{zero_nr} pages) is not a folio of memmap.folios inside RAM")
    if not any(s <= zero_pfn * page and (zero_pfn + zero_nr) * page <= e for s, e in in_use):
        mc.fail("zero_pfn", f"{zero_pfn:#x} is not inside an allocator.in_use range")
    huge_zero = mc.opt_int(key(m, "huge_zero_pfn"), "huge_zero_pfn", 0, max_pfn - 1)
    if huge_zero is not None and not any(pfn == huge_zero for pfn, _ in folios):
        mc.fail("huge_zero_pfn", f"{huge_zero:#x} is not the head of a folio in memmap.folios")
    reserved_va = []
    for i, r in enumerate(mc.arr(key(m, "reserved_va"), "reserved_va")):
        r = mc.arr(r, f"reserved_va[{i}]")
        if len(r) != 2:
            mc.fail(f"reserved_va[{i}]", "must be [start, end]")
        lo = mc.num(r[0], f"reserved_va[{i}][0]", 0, 1 << 64)
        reserved_va.append((lo, mc.num(r[1], f"reserved_va[{i}][1]", lo, 1 << 64)))

    # -- VMAs and cases ---------------------------------------------------------------------------
    vmas = []
    vspans: list[tuple[int, int, str]] = []
    for i, v in enumerate(mc.arr(key(m, "vmas"), "vmas")):
        fld = f"vmas[{i}]"
        v = mc.obj(v, fld)
        start = mc.num(key(v, "vm_start", fld), f"{fld}.vm_start")
        end = mc.num(key(v, "vm_end", fld), f"{fld}.vm_end")
        if end <= start or start % page or end % page:
            mc.fail(fld, f"{start:#x}..{end:#x} is empty or not page aligned")
        vspans.append((start, end, fld))
        vmas.append(
            {
                "name": mc.text(key(v, "name", fld), f"{fld}.name"),
                "vm_start": start,
                "vm_end": end,
                "vm_flags": mc.num(key(v, "vm_flags", fld), f"{fld}.vm_flags"),
                "vm_pgoff": mc.num(key(v, "vm_pgoff", fld), f"{fld}.vm_pgoff"),
            }
        )
    _ranges_disjoint(vspans, mc)
    cases = []
    for i, cs_ in enumerate(mc.arr(key(m, "cases"), "cases")):
        fld = f"cases[{i}]"
        cs_ = mc.obj(cs_, fld)
        vi = mc.num(key(cs_, "vma", fld), f"{fld}.vma", 0, max(len(vmas) - 1, 0))
        if not vmas:
            mc.fail(f"{fld}.vma", "there are no VMAs")
        cname = mc.text(key(cs_, "name", fld), f"{fld}.name")
        cases.append((cname, mc.num(key(cs_, "addr", fld), f"{fld}.addr"), vi))
    omitted = [mc.text(o, f"omitted[{i}]") for i, o in enumerate(mc.arr(key(m, "omitted"), "omitted"))]

    checks = []
    for i, ch in enumerate(mc.arr(key(m, "checks"), "checks")):
        fld = f"checks[{i}]"
        ch = mc.obj(ch, fld)
        ci = mc.num(key(ch, "case", fld), f"{fld}.case", 0, max(len(cases) - 1, 0))
        if not cases:
            mc.fail(f"{fld}.case", "there are no cases")
        addr = mc.num(key(ch, "addr", fld), f"{fld}.addr")
        if addr != cases[ci][1]:
            mc.fail(f"{fld}.addr", f"{addr:#x} is not the address of cases[{ci}] ({cases[ci][1]:#x})")
        access = mc.text(key(ch, "access", fld), f"{fld}.access")
        try:
            parse_access(access)
        except ValueError as err:
            mc.fail(f"{fld}.access", str(err))
        mmu = mc.obj(key(ch, "mmu", fld), f"{fld}.mmu")
        walks = []
        seen: set[int] = set()
        for j, w in enumerate(mc.arr(key(ch, "walks", fld), f"{fld}.walks")):
            wf = f"{fld}.walks[{j}]"
            w = mc.obj(w, wf)
            walk = mc.obj(key(w, "walk", wf), f"{wf}.walk")
            flag_text = mc.text(key(walk, "flags", f"{wf}.walk"), f"{wf}.walk.flags")
            try:
                flags = parse_flags(flag_text)
            except ValueError as err:
                mc.fail(f"{wf}.walk.flags", str(err))
            if flags in seen:
                mc.fail(f"{wf}.walk.flags", f"{flag_text} appears twice")
            seen.add(flags)
            walks.append((flags, walk, mc.text(key(w, "verdict", wf), f"{wf}.verdict")))
        checks.append(Check(ci, addr, access, mmu, tuple(walks)))
    if not isinstance(m.get("extra", {}), dict):
        mc.fail("extra", f"must be an object, got {mc._type(m['extra'])}")

    # -- entries.jsonl --------------------------------------------------------------------------
    ent = mc.obj(key(m, "entries"), "entries")
    ent_path = _member(path, key(ent, "file", "entries"), mc, "entries.file")
    ec = _Checker(str(ent_path))
    ent_bytes = _read_limited(ent_path, MAX_ENTRIES_BYTES, ec, "(document)")
    if _sha256(ent_bytes) != mc.text(key(ent, "sha256", "entries"), "entries.sha256"):
        ec.fail("sha256", "contents do not match manifest entries.sha256 (truncated, corrupt or edited)")
    entries = []
    text_lines = ent_bytes.splitlines()
    count = mc.num(key(ent, "count", "entries"), "entries.count")
    if len(text_lines) != count:
        ec.fail("(lines)", f"{len(text_lines)} lines, manifest entries.count says {count}")
    for n, raw in enumerate(text_lines, 1):
        lf = f"line {n}"
        e = ec.obj(ec.loads(raw, lf), lf)
        lv = ec.text(ec.key(e, "linux_level", lf), f"{lf}.linux_level")
        if lv not in LINUX_LEVELS:
            ec.fail(f"{lf}.linux_level", f"{lv!r} is not one of {', '.join(LINUX_LEVELS)}")
        ec.num(ec.key(e, "pa", lf), f"{lf}.pa", 0, ram_size - 8)
        ec.num(ec.key(e, "value", lf), f"{lf}.value")
        if e.get("config") != config_key:
            ec.fail(f"{lf}.config", f"{e.get('config')!r} is not the set's configuration {config_key!r}")
        entries.append(e)

    return FixtureSet(
        path=path,
        manifest=m,
        config=config_key,
        kernel=kernel,
        ram_size=ram_size,
        root_table=root,
        registers=registers,
        extents=extents,
        fills=fills,
        tagged=tagged,
        image=image,
        in_use=in_use,
        tables=tables,
        folios=folios,
        zero_pfn=zero_pfn,
        zero_page_nr=zero_nr,
        huge_zero_pfn=huge_zero,
        vmas=vmas,
        cases=cases,
        checks=checks,
        entries=entries,
        reserved_va=reserved_va,
        omitted=omitted,
    )


def find_sets(paths: Iterable[Path | str]) -> list[Path]:
    """Fixture-set folders named by ``paths``: a set itself, or a folder whose (non-hidden)
    sub-folders are sets.  A path with neither raises :class:`FixtureError`."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / MANIFEST).exists():
            found.append(p)
            continue
        if not p.is_dir():
            raise FixtureError(f"{p}: no such fixture-set folder")
        subs = sorted(
            c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".") and (c / MANIFEST).exists()
        )
        if not subs:
            raise FixtureError(f"{p}: no fixture set here ({MANIFEST} is neither in it nor in a sub-folder)")
        found += subs
    return found


# ----------------------------------------------------------------------------------------------
# Replaying and checking
# ----------------------------------------------------------------------------------------------
def replay(fs: FixtureSet, sc: Scenario) -> tuple[list[Row], dict[str, int]]:
    """Re-walk and re-probe every recorded (address, access, flags) of ``fs`` in ``sc`` (from
    ``fs.to_scenario()``): fresh rows in the recorded order, and the MMU registers."""
    walks = {}
    for ci, ch in enumerate(fs.checks):
        case = sc.cases[ch.case]
        for flags, _, _ in ch.walks:
            walks[(ci, flags)] = run_walk(sc, case, flags)
    mmu: dict[int, ProbeResult] = {}
    by_access: dict[str, list[int]] = {}
    for ci, ch in enumerate(fs.checks):
        by_access.setdefault(ch.access, []).append(ci)
    for access, idxs in by_access.items():
        results = probe_cases(sc, [fs.checks[i].addr for i in idxs], parse_access(access))
        if len(results) != len(idxs):
            raise FixtureError(f"{fs.path}: the oracle answered {len(results)} of {len(idxs)} probes")
        mmu.update(zip(idxs, results, strict=True))
    rows = []
    for ci, ch in enumerate(fs.checks):
        case = sc.cases[ch.case]
        for flags, _, _ in ch.walks:
            w = walks[(ci, flags)]
            verdict = judge(sc.ops, w, mmu[ci], sc.oracle, addr=case.addr)
            rows.append(Row(sc.config, case.name, case.addr, w, mmu[ci], verdict, ch.access))
    return rows, _registers(sc)


def _show(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        return f"{v:#x}" if v > 9 else str(v)
    if isinstance(v, str):
        return repr(v)
    return json.dumps(v, separators=(",", ":"))


def _dict_diff(prefix: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for k in list(old) + [k for k in new if k not in old]:
        if k not in new:
            out.append(f"{prefix}.{k}: recorded {_show(old[k])}, now absent")
        elif k not in old:
            out.append(f"{prefix}.{k}: not recorded, now {_show(new[k])}")
        elif old[k] != new[k]:
            out.append(f"{prefix}.{k}: recorded {_show(old[k])}, now {_show(new[k])}")
    return out


def compare(fs: FixtureSet, rows: list[Row], registers: dict[str, int]) -> list[str]:
    """Differences between what ``fs`` recorded and fresh ``rows``/``registers`` (from
    :func:`replay`), and between its entry vectors and this foliowalk's decoding of them."""
    diffs: list[str] = []
    it = iter(rows)
    for ch in fs.checks:
        name = fs.cases[ch.case][0]
        mmu_done = False
        for flags, walk, verdict in ch.walks:
            row = next(it)
            where = f"{fs.config} {name!r} {ch.addr:#x} {ch.access} {flags_str(flags)}"
            if not mmu_done:
                diffs += [f"{where}: {d}" for d in _dict_diff("mmu", ch.mmu, mmu_json(row.mmu))]
                mmu_done = True
            diffs += [f"{where}: {d}" for d in _dict_diff("walk", walk, row.walk.to_json())]
            if verdict != row.verdict:
                diffs.append(f"{where}: verdict: recorded {verdict!r}, now {row.verdict!r}")
    if fs.checks:
        diffs += [f"{fs.config}: {d}" for d in _dict_diff("registers", fs.registers, registers)]
    ops = fs.ops()
    for n, e in enumerate(fs.entries, 1):
        now = entry_vector(ops, e["linux_level"], e["pa"], e["value"])
        diffs += [f"{fs.config} {ENTRIES} line {n}: {d}" for d in _dict_diff("entry", e, now)]
    return diffs


def check_fixture_set(path: Path) -> list[str]:
    """Reload the set at ``path``, re-walk and re-probe every recorded (address, access, flags)
    and re-decode every entry vector: the differences from what was recorded (empty: identical).
    A corrupt set raises :class:`FixtureError`."""
    fs = load_fixture_set(path)
    sc = fs.to_scenario(with_oracle=True)
    try:
        rows, regs = replay(fs, sc)
    finally:
        sc.close()
    return compare(fs, rows, regs)


def replay_report(paths: Iterable[Path | str]) -> Report:
    """``foliowalk verify --fixture DIR``: the fresh rows of every set under ``paths``."""
    start = time.perf_counter()
    rows: list[Row] = []
    regs: dict[str, dict[str, int]] = {}
    omitted: list[str] = []
    for p in find_sets(paths):
        fs = load_fixture_set(p)
        sc = fs.to_scenario(with_oracle=True)
        try:
            got, r = replay(fs, sc)
        finally:
            sc.close()
        rows += got
        regs[f"{fs.config} ({p})"] = r
        omitted += [f"{fs.config}: {o}" for o in fs.omitted]
    return Report(rows, omitted, regs, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------
# Export and build
# ----------------------------------------------------------------------------------------------
def export_raw(path: Path, out_file: Path) -> Path:
    """Write the set's RAM as one flat raw image (byte ``pa`` of the file = guest physical
    ``pa``), ``ram_size`` bytes long and sparse where the filesystem allows.  Written to a
    temporary file beside ``out_file`` and renamed into place."""
    fs = load_fixture_set(path)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_file.name}.tmp-", dir=out_file.parent)
    fmt = ">Q" if fs.manifest["endianness"] == "big" else "<Q"
    try:
        with os.fdopen(fd, "wb") as f:
            f.truncate(fs.ram_size)
            for pa, off, size in fs.extents:
                f.seek(pa)
                f.write(fs.image[off : off + size])
            for pa, size, word in fs.fills:
                f.seek(pa)
                f.write(struct.pack(fmt, word) * (size // 8))
            for pa, size in fs.tagged:
                for chunk in range(pa, pa + size, 1 << 20):
                    n = min(1 << 20, pa + size - chunk) // 8
                    f.seek(chunk)
                    f.write(struct.pack(f"{fmt[0]}{n}Q", *range(TAG | chunk, TAG | (chunk + 8 * n), 8)))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out_file)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    return out_file


def build_fixture_set(out_dir: Path, key: str, kernel: str | None = None) -> tuple[Path, list[Row]]:
    """Build the default scenario of configuration ``key``, verify it and write its set."""
    from emu.mm.scenarios import build_default
    from emu.verify import verify_scenario

    ops = archs.get_ops(key, kernel) if kernel else archs.get_ops(key)
    sc = build_default(ops)
    try:
        rows = verify_scenario(sc)
        return write_fixture_set(out_dir, sc, rows), rows
    finally:
        sc.close()


def build_fixture_sets(
    out_dir: Path, keys: list[str], kernel: str | None = None, progress: Callable[[str], None] | None = None
) -> list[Path]:
    """One set per configuration; ``progress`` gets one line per set written.  A Ctrl-C keeps
    the sets already written (KeyboardInterrupt propagates after them)."""
    written = []
    for n, key in enumerate(keys, 1):
        t0 = time.perf_counter()
        path, rows = build_fixture_set(out_dir, key, kernel)
        written.append(path)
        if progress:
            size = sum(f.stat().st_size for f in path.iterdir())
            counts = Counter(r.verdict_class for r in rows)
            summary = ", ".join(f"{c} {counts[c]}" for c in VERDICT_CLASSES if counts.get(c))
            progress(
                f"[{n}/{len(keys)}] {key}: {path}  ({len(rows)} rows: {summary}; "
                f"{size / 1024:.0f} KiB, {time.perf_counter() - t0:.2f} s)"
            )
    return written
