"""What the architectures and Linux's arch headers define: geometry, entry formats, predicates.

Pure Python + construct; never imports Unicorn.  ``get_ops("x86_64:4level")`` gives the Linux
page-table API of one configuration.
"""

from __future__ import annotations

import importlib

from .base import PagingConfig
from .kconfig import KernelConfig
from .linux import DEFAULT_KERNEL, LinuxPgtable

ARCHES = {"x86_64": "archs.x86_64", "arm64": "archs.arm64", "s390x": "archs.s390x"}
ALIASES = {"x86-64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "s390": "s390x"}


class UnknownConfig(ValueError):
    """An architecture or configuration name foliowalk does not know."""


def _module(arch: str):  # type: ignore[no-untyped-def]
    arch = ALIASES.get(arch, arch)
    if arch not in ARCHES:
        raise UnknownConfig(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHES))}")
    return importlib.import_module(ARCHES[arch])


def configs(arch: str) -> dict[str, PagingConfig]:
    """Every paging configuration of ``arch``, by name."""
    return dict(_module(arch).CONFIGS)


def all_config_keys(arches: list[str] | None = None) -> list[str]:
    keys = []
    for arch in arches or list(ARCHES):
        keys += [c.key for c in configs(arch).values()]
    return keys


def get_config(key: str) -> PagingConfig:
    """``arch:name`` (e.g. ``x86_64:5level``) -> its :class:`PagingConfig`."""
    arch, _, name = key.partition(":")
    cfgs = configs(arch)
    if name not in cfgs:
        raise UnknownConfig(
            f"unknown configuration {name!r} for {ALIASES.get(arch, arch)}; known: {', '.join(cfgs)}"
        )
    return cfgs[name]


def parse_config(key: str) -> PagingConfig:
    """A named configuration (:func:`get_config`), or for arm64 any ``arm64:<4k|16k|64k>:<va_bits>``
    the architecture allows (``arm64:16k:48``; :func:`archs.arm64.parse_config`)."""
    arch, _, name = key.partition(":")
    arch = ALIASES.get(arch, arch)
    if arch == "arm64" and name not in configs(arch):
        try:
            return _module(arch).parse_config(key)  # type: ignore[no-any-return]
        except ValueError as err:
            raise UnknownConfig(str(err)) from None
    return get_config(key)


def get_ops(key: str | PagingConfig, kernel: str = DEFAULT_KERNEL,
            kconfig: KernelConfig | None = None) -> LinuxPgtable:
    """The Linux page-table API (:class:`LinuxPgtable`) for configuration ``key`` (a name, or a
    :class:`PagingConfig` such as :func:`parse_config` gives), following the headers of
    ``kconfig`` (default: v6.12 with the "distro" profile, :mod:`archs.kconfig`)."""
    config = key if isinstance(key, PagingConfig) else get_config(key)
    mod = _module(config.arch)
    ops: LinuxPgtable = mod.OPS_CLASS(config, kernel, kconfig=kconfig)
    return ops
