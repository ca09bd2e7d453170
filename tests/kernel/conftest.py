"""Kernel-harness tests need Debian's kernel sources and cross compilers (README: "The kernel as
the Linux oracle").  Where they are missing these tests say what to install and do not run --
except in CI (``CI`` set), where a missing toolchain fails them: CI installs it, so a test that
did not run there is a failure, not a skip."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from emu.errors import FoliowalkError
from emu.kernel.build import HarnessBuild, build_harness
from emu.kernel.runner import KernelHarness
from emu.kernel.toolchain import INSTALL_HINT, TOOLCHAINS
from emu.kernel.tree import DISTRO_TARBALL
from emu.kernel.walk import WalkBuild, build_walk
from tests.ci import unavailable


def toolchain_problem(arch: str, version: str = "6.12") -> str | None:
    missing = TOOLCHAINS[arch].missing()
    if not os.path.exists(DISTRO_TARBALL.format(series=version)):
        missing.append(DISTRO_TARBALL.format(series=version))
    return f"needs {', '.join(missing)} ({INSTALL_HINT})" if missing else None


def need_toolchain(arch: str, version: str = "6.12") -> None:
    problem = toolchain_problem(arch, version)
    if problem:
        unavailable("run the kernel-harness tests", problem)


_BUILDS: dict[tuple[str, str, str], HarnessBuild] = {}


@pytest.fixture(scope="session")
def harness_build() -> Callable[..., HarnessBuild]:
    """``harness_build(config, profile="distro", version="6.12")``: the (cached) build."""

    def get(config: str, profile: str = "distro", version: str = "6.12") -> HarnessBuild:
        need_toolchain(config.split(":")[0], version)
        key = (config, profile, version)
        if key not in _BUILDS:
            try:
                _BUILDS[key] = build_harness(config, profile, version)
            except FoliowalkError as e:
                pytest.fail(f"harness build failed: {e}")
        return _BUILDS[key]

    return get


@pytest.fixture(scope="session")
def harness(harness_build: Callable[..., HarnessBuild]) -> Callable[..., KernelHarness]:
    """``harness(config, profile="distro", version="6.12")``: a runner for that build."""
    cache: dict[tuple[str, str, str], KernelHarness] = {}

    def get(config: str, profile: str = "distro", version: str = "6.12") -> KernelHarness:
        key = (config, profile, version)
        if key not in cache:
            cache[key] = KernelHarness(harness_build(config, profile, version), config)
        return cache[key]

    return get


_WALK_BUILDS: dict[str, WalkBuild] = {}


@pytest.fixture(scope="session")
def walk_build() -> Callable[[str], WalkBuild]:
    """``walk_build(config)``: the (cached) build of the kernel's own folio_walk_start()."""

    def get(config: str) -> WalkBuild:
        need_toolchain(config.split(":")[0])
        if config not in _WALK_BUILDS:
            try:
                _WALK_BUILDS[config] = build_walk(config)
            except FoliowalkError as e:
                pytest.fail(f"walk harness build failed: {e}")
        return _WALK_BUILDS[config]

    return get
