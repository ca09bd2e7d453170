"""Write the golden files again from the current code: ``python -m tests.golden.regen``."""

from __future__ import annotations

import sys

from tests.golden import GOLDEN, HERE, run


def regen() -> None:
    for name, args in GOLDEN.items():
        status, out = run(args)
        if status != 0:
            sys.exit(f"python -m emu {' '.join(args)} exited {status}; golden file {name} not written")
        (HERE / name).write_bytes(out)
        print(f"wrote tests/golden/{name} ({len(out)} bytes)")


if __name__ == "__main__":
    regen()
