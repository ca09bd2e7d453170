"""Bochs 2.7 as an MMU oracle beside Unicorn and QEMU (docs/oracles.md, "Bochs").

Bochs is an independent implementation of x86-64 (its own CPU and paging code, not QEMU's).  It
cannot map the host's RAM, so the machine (:mod:`emu.machines.bochs.x86_64`) keeps a copy: every
request is a stream of the RAM pages that changed since the last one, written to an ATA disk image
that the probe firmware reads with PIO; the host waits at Bochs's magic breakpoint and reads the
results with the internal debugger's ``writemem`` (Debian's bochs is built with the debugger).
One Bochs process per machine, driven over its debugger prompt on stdin/stdout.
"""

from __future__ import annotations

import shutil

from emu.errors import ConfigError

#: What installs Bochs 2.7 on Debian 12 headless: the emulator, its BIOS/VGA BIOS packages, and the
#: curses display plugin (Debian's build has no "nogui" library; "term" needs no X display).
INSTALL_HINT = "apt-get install -y --no-install-recommends bochs bochsbios vgabios bochs-term"
PLUGINS = "/usr/lib/x86_64-linux-gnu/bochs/plugins"


def bochs_binary() -> str:
    """The path of ``bochs``; :class:`ConfigError` (one line: what to install) if missing."""
    path = shutil.which("bochs")
    if path is None:
        raise ConfigError(f"the bochs oracle needs bochs ({INSTALL_HINT})")
    return path


def missing(arch: str = "x86_64") -> str | None:
    """Why the Bochs oracle for ``arch`` cannot run here (what to install), or None."""
    if arch != "x86_64":
        return f"no Bochs oracle for architecture {arch!r} (Bochs emulates x86 only)"
    try:
        bochs_binary()
    except ConfigError as err:
        return str(err)
    import os

    if not os.path.exists(os.path.join(PLUGINS, "libbx_term_gui.so")):
        return f"the bochs oracle runs headless with the term display plugin ({INSTALL_HINT})"
    tools = [t for t in ("as", "ld", "objcopy") if shutil.which(t) is None]
    if tools:
        return f"the bochs oracle assembles its probe firmware with {', '.join(tools)} (apt-get install -y binutils)"
    return None
