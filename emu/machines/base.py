"""What every machine returns for one probe: a translation, a fault, or an emulator failure.

A probe is one guest access (read, write or instruction fetch, at kernel or user privilege) to one
virtual address, executed by the emulated CPU with its MMU walking the tables in guest RAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AccessKind = Literal["read", "write", "fetch"]


@dataclass(frozen=True)
class Access:
    """One kind of guest access: ``kind`` at kernel (``user=False``) or user privilege."""

    kind: AccessKind = "read"
    user: bool = False

    def __str__(self) -> str:
        return f"{'user' if self.user else 'kernel'}-{self.kind}"


READ = Access("read")
WRITE = Access("write")
FETCH = Access("fetch")


@dataclass(frozen=True)
class Translation:
    """The MMU translated the access: ``pa`` is the physical address it reached.

    ``observed_by`` says how the address was seen (``tag``: a load returned the tag word of that
    physical address; ``at``: arm64 PAR_EL1; ``lrag``: s390x LOAD REAL ADDRESS; ``vmem``:
    ``uc_vmem_translate``) -- never computed from our own walk.
    """

    pa: int
    observed_by: str


@dataclass(frozen=True)
class Fault:
    """The access faulted.

    ``kind``: the architecture's name for it (x86 ``page-fault``; arm64 ``translation``,
    ``access-flag``, ``permission``; s390x ``page-translation``, ``segment-translation``, ...).
    ``level``: hardware table level the MMU names (arm64 0-3, s390x from the code), None if the
    architecture does not say (x86).  ``code``: x86 #PF error code, arm64 PAR_EL1.FST, s390x
    program-interruption code.  ``vector``: the exception number the emulator's hook received.
    """

    kind: str
    level: int | None
    code: int
    vector: int


@dataclass(frozen=True)
class ProbeError:
    """The emulator could not give an answer (timeout, unexpected exception, Unicorn error)."""

    reason: str


ProbeResult = Translation | Fault | ProbeError
