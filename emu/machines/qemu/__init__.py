"""QEMU system emulation as an MMU oracle beside Unicorn (docs/oracles.md).

One ``qemu-system-<arch>`` process per configuration runs a bare-metal probe program; guest RAM is
the scenario's own :class:`~emu.machines.ram.PhysicalMemory`, shared with the process
(:mod:`emu.machines.qemu.shared_ram`), and requests and results go through a mailbox and batch
tables in that RAM.  QMP (:mod:`emu.machines.qemu.qmp`) wakes the guest (an NMI), asks QEMU's
debug translation where a load returned no tag word, and quits the process.
"""

from __future__ import annotations

import shutil

from emu.errors import ConfigError

#: What installs the emulators the QEMU machines use on Debian 12 (QEMU 7.2).
INSTALL_HINT = "apt-get install -y --no-install-recommends qemu-system-x86 qemu-system-arm qemu-system-misc"
BINARIES = {"x86_64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64", "s390x": "qemu-system-s390x"}


def qemu_binary(arch: str) -> str:
    """The path of ``qemu-system-<arch>``; :class:`ConfigError` (one line: what to install) if
    it is not installed."""
    name = BINARIES.get(arch)
    if name is None:
        raise ConfigError(f"no QEMU oracle for architecture {arch!r}")
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"the qemu oracle needs {name} ({INSTALL_HINT})")
    return path


def missing(arch: str = "x86_64") -> str | None:
    """Why the QEMU oracle for ``arch`` cannot run here (what to install), or None."""
    try:
        qemu_binary(arch)
    except ConfigError as err:
        return str(err)
    prefix, package = {"arm64": ("aarch64-linux-gnu-", "binutils-aarch64-linux-gnu"),
                       "s390x": ("s390x-linux-gnu-", "binutils-s390x-linux-gnu")}.get(arch, ("", "binutils"))
    tools = [prefix + t for t in ("as", "ld", "objcopy") if shutil.which(prefix + t) is None]
    if tools:
        return f"the qemu oracle assembles its probe firmware with {', '.join(tools)} (apt-get install -y {package})"
    return None


def die_with_parent() -> None:
    """``preexec_fn`` of a QEMU process: SIGKILL it when the thread that started it dies
    (``prctl(PR_SET_PDEATHSIG)``), so a fuzz worker killed by the campaign's crash isolation
    leaves no QEMU behind.  (Machines are created by the thread that uses them.)  No core file
    either: the s390x placement check makes QEMU abort() on purpose (RLIMIT_CORE = 0)."""
    import ctypes
    import resource
    import signal

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        pass

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
