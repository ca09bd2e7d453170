"""Files foliowalk reads and writes for its users, made safe against what a hostile (or merely
careless) user points it at.

* :func:`output_target` -- where a write to a path may go: a new name, or an existing regular
  file (through symbolic links).  A device, FIFO, socket or folder is refused, so an atomic
  "write a temporary file and rename it over the target" never puts a file where ``/dev/null``
  was.
* :func:`read_regular` -- the bytes of a regular file, at most ``limit`` of them: opened without
  blocking (a FIFO with no writer, a terminal) and refused unless ``fstat`` says it is a regular
  file (``/dev/zero``, ``/dev/urandom`` are not), so a read can neither block nor run away.
* :func:`loads_strict` -- JSON as data a loader can trust: no ``NaN``/``Infinity``, no number
  Python cannot hold in a float or the format has no use for (an integer of more than
  :data:`MAX_INT_DIGITS` digits, ``1e400``), no duplicate keys, no string that is not valid
  Unicode (a lone surrogate such as ``"\\ud800"``).  Every problem is one error naming where.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from emu.errors import FileError

#: Decimal digits of the largest integer any foliowalk format holds (2**64 has 20); longer
#: integers are refused before Python converts them (CPython refuses > 4,300 digits itself,
#: with a ValueError, after the work).
MAX_INT_DIGITS = 24


def file_kind(mode: int) -> str:
    """What ``st_mode`` is, in words (``a character device``, ``a FIFO``...)."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def output_target(path: Path | str, what: str = "") -> Path:
    """The path a write to ``path`` replaces: ``path`` itself when nothing is there, the regular
    file it names (the end of its symbolic links) when there is one.  Anything else -- a device,
    a FIFO, a socket, a folder, a dangling symbolic link -- raises :class:`FileError` (one line
    naming the path), and nothing is touched."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # nothing there (the folder is checked by the writer)
        if os.path.islink(path):
            raise FileError(f"{label}: is a symbolic link to nothing; refusing to replace it") from None
        return path
    except OSError as err:
        raise FileError(f"{label}: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"{label}: is {file_kind(st.st_mode)}, not a regular file; refusing to replace it")
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def check_replaceable(path: Path) -> None:
    """Right before a rename over ``path``: still absent or a regular file (not a symbolic link:
    :func:`output_target` resolved those), else :class:`FileError`."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"{path}: is {file_kind(st.st_mode)}, not a regular file; refusing to replace it")


def read_regular(path: Path | str, limit: int, what: str = "") -> bytes:
    """The contents of the regular file ``path``, refused (:class:`FileError`) if it is anything
    else or longer than ``limit`` bytes.  Never blocks: the file is opened ``O_NONBLOCK`` and
    checked with ``fstat`` on the open descriptor before a byte is read."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise FileError(f"{label}: {err.strerror or err}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileError(f"{label}: is {file_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise FileError(f"{label}: is {st.st_size} bytes, more than the {limit}-byte limit")
        chunks, total = [], 0
        while True:
            b = os.read(fd, min(1 << 20, limit + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > limit:
                raise FileError(f"{label}: grew past the {limit}-byte limit while being read")
        return b"".join(chunks)
    except OSError as err:
        raise FileError(f"{label}: {err.strerror or err}") from None
    finally:
        os.close(fd)


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _show(s: str) -> str:
    return repr(s if len(s) <= 40 else s[:40] + "...")


def loads_strict(data: bytes | str, fail: Callable[[str, str], NoReturn], fld: str = "") -> Any:
    """``data`` parsed as JSON, or ``fail(field, message)`` (which raises): invalid UTF-8 or JSON,
    ``NaN``/``Infinity``, a number beyond a float (``1e400``), an integer of more than
    :data:`MAX_INT_DIGITS` digits, a duplicate key, a string or key that is not valid Unicode, or
    nesting deeper than Python's recursion limit.  ``fld`` prefixes the field names."""
    where = fld or "(document)"

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                fail(where, f"duplicate key {_show(k)}")
            out[k] = v
        return out

    def no_constants(c: str) -> NoReturn:
        fail(where, f"{c} is not allowed")

    def bounded_int(s: str) -> int:
        digits = len(s.lstrip("-"))
        if digits > MAX_INT_DIGITS:
            fail(where, f"an integer of {digits} digits is out of range (at most {MAX_INT_DIGITS} digits)")
        return int(s)

    def finite_float(s: str) -> float:
        v = float(s)
        if not math.isfinite(v):
            fail(where, f"the number {s[:40]} is out of range")
        return v

    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        doc = json.loads(text, object_pairs_hook=no_dupes, parse_constant=no_constants,
                         parse_int=bounded_int, parse_float=finite_float)
    except UnicodeDecodeError as err:
        fail(where, f"not UTF-8 ({err.reason} at byte {err.start})")
    except json.JSONDecodeError as err:
        fail(where, f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}")
    except RecursionError:
        fail(where, "nested too deeply")
    # Strings: every one must be encodable (a lone surrogate "\ud800" parses, then breaks the
    # first print or file name it reaches).
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        p, v = stack.pop()
        if isinstance(v, str):
            _check_text(v, p, fld, fail)
        elif isinstance(v, dict):
            for k, x in v.items():
                _check_text(k, p, fld, fail, key=True)
                stack.append(((*p, k), x))
        elif isinstance(v, list):
            stack.extend(((*p, i), x) for i, x in enumerate(v))
    return doc


def _check_text(s: str, p: tuple[Any, ...], fld: str, fail: Callable[[str, str], NoReturn], key: bool = False) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as err:
        at = _where(p)
        at = f"{fld}.{at}" if fld and at else (fld or at or "(document)")
        what = "a key" if key else "a string"
        fail(at, f"{what} holds {s[err.start]!a}, a lone surrogate: not valid Unicode")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a temporary file's writer that may still be writing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True
