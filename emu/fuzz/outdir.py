"""A campaign's ``--out`` folder as a durable record: one campaign at a time (a lock), every
finding indexed in ``findings.jsonl`` the moment the campaign learns of it (the whole index
replaced atomically and fsynced, so it is never torn), findings a killed run saved but never
indexed re-indexed by the next run, and temporary files of killed writers removed.

Layout of the folder: ``<finding>.hierarchy.json`` (every finding's hierarchy spec), ``<finding>/``
(its fixture set, when one was written), ``findings.jsonl`` (one JSON record per finding, over
all runs), ``campaign.json`` (the last run's summary), ``.foliowalk-fuzz.lock`` (hidden).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emu.errors import FileError
from emu.files import pid_alive
from emu.fuzz.records import FindingRecord

INDEX = "findings.jsonl"
LOCK = ".foliowalk-fuzz.lock"
#: findings.jsonl and a saved spec are read only up to this size (a record is < 4 KiB).
MAX_INDEX_BYTES = 256 << 20
MAX_SPEC_BYTES = 16 << 20
_SPEC_SUFFIX = ".hierarchy.json"
#: Temporary files and folders of this package's writers: ``.<name>.<pid>.tmp`` (atomic_write),
#: ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>-*`` (fixture sets).
_TEMP = re.compile(r"^\..+?\.(?:(\d+)\.tmp|(?:tmp|old)-(\d+)-.*)$")


@contextlib.contextmanager
def campaign_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s campaign lock (``flock``) for the block; another campaign writing into the
    same folder raises :class:`FileError` (one line) instead of interleaving its files."""
    import fcntl

    path = out / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as err:
        raise FileError(f"{path}: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise FileError(f"--out {out}: another campaign (pid {holder}) is writing into this folder; "
                            "wait for it or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temp(out: Path) -> list[str]:
    """Remove the temporary files and folders that writers killed earlier left in ``out`` (their
    process is gone); returns their names."""
    gone = []
    for p in out.iterdir():
        m = _TEMP.match(p.name)
        if not m:
            continue
        pid = int(m.group(1) or m.group(2))
        if pid == os.getpid() or pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        gone.append(p.name)
    return gone


def read_index(out: Path) -> list[dict[str, Any]]:
    """The records in ``out/findings.jsonl`` (whole lines only: a line torn by a run killed before
    writes were atomic is dropped)."""
    from emu.files import read_regular

    path = out / INDEX
    if not path.exists():
        return []
    data = read_regular(path, MAX_INDEX_BYTES)
    recs = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            recs.append(rec)
    return recs


def index_findings(out: Path, recs: list[FindingRecord]) -> None:
    """Append ``recs`` to ``out/findings.jsonl``: the whole file rewritten through a temporary
    file, fsynced and renamed (never torn; the caller holds the campaign lock).  The index is
    deduplicated by file: a finding saved again under a name already indexed (a later run found
    it again and replaced its files) is not added twice."""
    from emu.fuzz.worker import atomic_write

    if not recs:
        return
    path = out / INDEX
    old = b""
    if path.exists():
        from emu.files import read_regular

        old = read_regular(path, MAX_INDEX_BYTES)
        if old and not old.endswith(b"\n"):
            old = old[: old.rfind(b"\n") + 1]  # a line torn by a run killed before writes were atomic
    known = _indexed_names(read_index(out))
    lines = []
    for r in recs:
        name = _finding_name(r.path) if r.path else None
        if name is not None and name in known:
            continue
        if name is not None:
            known.add(name)
        lines.append(json.dumps(r.to_json()) + "\n")
    if lines:
        atomic_write(path, old + "".join(lines).encode())


def _finding_name(path: str) -> str:
    name = Path(path).name
    return name[: -len(_SPEC_SUFFIX)] if name.endswith(_SPEC_SUFFIX) else name


def _indexed_names(recs: list[dict[str, Any]]) -> set[str]:
    return {_finding_name(r["path"]) for r in recs if isinstance(r.get("path"), str)}


def unindexed_findings(out: Path) -> list[FindingRecord]:
    """Records for the findings saved in ``out`` (``*.hierarchy.json``, and the fixture set of the
    same name) that ``findings.jsonl`` does not list -- saved by a run killed before it indexed
    them.  Rebuilt from the saved spec (signature, verdict, hierarchy)."""
    from emu.files import loads_strict, read_regular

    known = _indexed_names(read_index(out))
    found = []
    for spec_path in sorted(out.glob(f"*{_SPEC_SUFFIX}")):
        name = spec_path.name[: -len(_SPEC_SUFFIX)]
        if name.startswith(".") or name in known or not spec_path.is_file():
            continue

        def bad(_fld: str, _msg: str) -> Any:
            raise ValueError

        try:
            spec = loads_strict(read_regular(spec_path, MAX_SPEC_BYTES), bad)
            h = spec["hierarchy"]
            sig, verdict = str(spec["signature"]), str(spec["verdict"])
            addrs = h.get("addrs") or []
        except (ValueError, KeyError, TypeError, AttributeError, FileError):
            continue  # not a finding's spec (a torn write is never under this name)
        kind = verdict.split(":", 1)[0] if ":" in verdict else sig.split("|", 1)[0]
        set_dir = out / name
        path = set_dir if (set_dir / "manifest.json").is_file() else spec_path
        found.append(FindingRecord(
            kind, sig, str(h.get("config", "?")), h.get("index"),
            addrs[0] if len(addrs) == 1 and kind not in ("crash", "hang") else None, verdict, str(path),
            note="re-indexed: saved by an earlier run that was stopped before it indexed it",
        ))
    return found
