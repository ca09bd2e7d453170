"""Tests whose tool (a kernel tree, a cross compiler, QEMU, a C compiler, a consumer library) is
missing: on a developer's machine they say what to install and do not run; in CI (``CI`` set),
which installs every tool the suite uses, a test that did not run is a failure, not a skip."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(what: str, problem: str) -> NoReturn:
    """Skip with ``problem`` (what is missing, and how to install it), or in CI fail: "CI must
    ``what``: ``problem``"."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must {what}: {problem}")
    pytest.skip(problem)
