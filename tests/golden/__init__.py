"""Golden outputs: what ``python -m emu verify`` (table and ``--json``) printed when they were made.

``tests/verify/test_golden.py`` runs both commands and compares their stdout byte for byte with the
files here, so a change that moves code around can not change a single byte of the output.
The one thing that differs between two runs, the wall time (``(1528 rows, 1.27 s)`` in the table,
``"seconds": 1.273`` in JSON), is replaced by ``<wall>`` in both the files and the run's output
before they are compared (:func:`stable`).

When an intended change alters the output (a new default case, a renumbered swap entry), make
them again and commit them with the change::

    python -m tests.golden.regen
    FOLIOWALK_REGEN_GOLDEN=1 python -m pytest tests/verify/test_golden.py    # the same
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: golden file name -> the ``python -m emu`` arguments whose stdout it holds
GOLDEN = {  # --harness off: the same bytes whether or not this machine has a kernel harness built
    "verify.txt": ["verify", "--harness", "off"],
    "verify.json": ["verify", "--json", "--harness", "off"],
}


_WALL = [
    (re.compile(rb"(rows, )[0-9.]+( s\))"), rb"\1<wall>\2"),          # table: summary line
    (re.compile(rb'("seconds": )[0-9.eE+-]+'), rb'\1"<wall>"'),       # JSON: "seconds"
]


def stable(out: bytes) -> bytes:
    """``out`` with the run's wall time replaced by ``<wall>``: everything else must match."""
    for pattern, repl in _WALL:
        out = pattern.sub(repl, out)
    return out


def run(args: list[str]) -> tuple[int, bytes]:
    """Exit status and stdout (wall time masked) of ``python -m emu ARGS`` from the top level."""
    res = subprocess.run([sys.executable, "-m", "emu", *args], cwd=ROOT, capture_output=True,
                         timeout=600, check=False)
    return res.returncode, stable(res.stdout)
