"""The one error family foliowalk raises on purpose.

Every bad input (unknown architecture, misaligned address, table outside RAM, corrupt fixture,
address outside the VMA) raises a subclass of :class:`FoliowalkError` with a message that names
what is wrong; the CLI prints that message on one line and exits 2.
"""

from __future__ import annotations


class FoliowalkError(Exception):
    """Base class of every error foliowalk raises deliberately."""


class ConfigError(FoliowalkError):
    """Unknown architecture, configuration or option value."""


class AddressError(FoliowalkError):
    """A virtual or physical address that is misaligned, non-canonical or out of range."""


class MemoryLayoutError(FoliowalkError):
    """A physical range outside RAM, an overlapping mapping, an exhausted allocator."""


class FixtureError(FoliowalkError):
    """A fixture set that is truncated, of an unknown version, or otherwise corrupt."""


class EmulatorError(FoliowalkError):
    """The emulator failed in a way it should not (an unexpected exception, a timeout)."""


class FileError(FoliowalkError):
    """A file the command was pointed at that is the wrong kind (a device, a FIFO, a folder), too
    large, or not valid data: refused before anything is read from or written over it."""
