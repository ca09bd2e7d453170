"""``foliowalk verify`` prints exactly the committed golden output (table and JSON), byte for byte.

Regenerate after an intended change: ``python -m tests.golden.regen`` (or run this test with
``FOLIOWALK_REGEN_GOLDEN=1``), then commit the files under ``tests/golden/``.
"""

from __future__ import annotations

import difflib
import os

import pytest

from tests.golden import GOLDEN, HERE, run


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_verify_output_is_byte_identical_to_golden(name: str) -> None:
    status, out = run(GOLDEN[name])
    assert status == 0
    path = HERE / name
    if os.environ.get("FOLIOWALK_REGEN_GOLDEN") == "1":
        path.write_bytes(out)
    golden = path.read_bytes()
    if out != golden:
        diff = difflib.unified_diff(golden.decode().splitlines(), out.decode().splitlines(),
                                    f"tests/golden/{name}", "now", lineterm="", n=1)
        pytest.fail("verify output changed (python -m tests.golden.regen if intended):\n"
                    + "\n".join(list(diff)[:40]))
