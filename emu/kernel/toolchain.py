"""What building the kernel harness needs on this machine, and how to get what is missing."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from emu.errors import FoliowalkError


class ToolchainMissing(FoliowalkError):
    """A compiler, linker or kernel tree the harness build needs is not installed."""


@dataclass(frozen=True)
class Toolchain:
    """How kbuild names one architecture and which cross tools build for it."""

    arch: str  # foliowalk's name
    kbuild_arch: str  # ARCH= for make
    cross_compile: str  # CROSS_COMPILE= prefix ("" for the host)
    apt_package: str  # the Debian package that provides it
    link_base: int  # where the harness image is linked (see runner.py for why)

    @property
    def gcc(self) -> str:
        return f"{self.cross_compile}gcc"

    @property
    def ld(self) -> str:
        return f"{self.cross_compile}ld"

    def missing(self) -> list[str]:
        tools = [self.gcc, self.ld, "make", "bison", "flex", "bc"]
        return [t for t in tools if shutil.which(t) is None]


# x86-64 code is compiled with -mcmodel=kernel (R_X86_64_32S): it links anywhere in the low
# 2 GiB as well as the top one, so every image is linked at 4 MiB, clear of s390's lowcore.
TOOLCHAINS = {
    "x86_64": Toolchain("x86_64", "x86_64", "", "gcc", 0x400000),
    "arm64": Toolchain("arm64", "arm64", "aarch64-linux-gnu-", "gcc-aarch64-linux-gnu", 0x400000),
    "s390x": Toolchain("s390x", "s390", "s390x-linux-gnu-", "gcc-s390x-linux-gnu", 0x400000),
}

INSTALL_HINT = (
    "apt-get install linux-source-6.12 linux-source-6.1 gcc-aarch64-linux-gnu gcc-s390x-linux-gnu "
    "bc bison flex libssl-dev libelf-dev make"
)


def toolchain(arch: str) -> Toolchain:
    """The :class:`Toolchain` of ``arch``, or :class:`ToolchainMissing` naming what to install."""
    tc = TOOLCHAINS[arch]
    missing = tc.missing()
    if missing:
        raise ToolchainMissing(
            f"the {arch} kernel harness needs {', '.join(missing)}, not found on PATH; "
            f"install them with: {INSTALL_HINT}"
        )
    return tc
