"""What every machine returns for one probe: a translation, a fault, or an emulator failure.

A probe is one guest access (read, write or instruction fetch, at kernel or user privilege) to one
virtual address, executed by the emulated CPU with its MMU walking the tables in guest RAM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Literal

import numpy as np

from emu.errors import AddressError

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

    def __repr__(self) -> str:
        return f"Translation(pa={self.pa:#x}, observed_by={self.observed_by!r})"


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

    def __repr__(self) -> str:
        return f"Fault(kind={self.kind!r}, level={self.level!r}, code={self.code:#x}, vector={self.vector})"

    @property
    def access_refused(self) -> bool:
        """The address translates but this access is not allowed (rights, not translation): an
        x86 #PF with error-code bit 0 set ("the fault was caused by a page-level protection
        violation", SDM vol. 3A §4.7) and bit 3 clear (RSVD=1 is a reserved bit set in some
        paging-structure entry, with P=1 too), an arm64 permission fault (FSC 0b0011xx, Arm ARM
        D8.13), an s390x protection exception (program-interruption code 0x04, PoP ch. 3)."""
        x86_rights = self.kind == "page-fault" and self.code & 1 and not self.code & 8
        return bool(x86_rights) or self.kind in ("permission", "protection")


@dataclass(frozen=True)
class ProbeError:
    """The emulator could not give an answer (timeout, unexpected exception, Unicorn error)."""

    reason: str


ProbeResult = Translation | Fault | ProbeError


# -- the raw form of a batch probe ------------------------------------------------------------------
#
# ``machine.probe_many_raw(vas, access)`` returns ``(raw, errors)``: a :class:`RawProbes` (numpy
# columns, one element per address, written from the guest loop's result table without building a
# Python object per address) and ``{index: ProbeError}`` for the addresses the oracle could not
# answer.  ``raw.results(errors)`` is exactly ``machine.probe_many(vas, access)``.

RAW_ERROR = 0  #: ``errors[i]`` says why there is no answer
RAW_TAG = 1  #: ``Translation(pa[i], "tag")``: the guest load returned the tag word of ``pa[i]``
RAW_OBSERVED = 2  #: ``Translation(pa[i], raw.observed_by)`` (x86-64 "vmem", s390x "lrag")
RAW_FAULT = 3  #: ``raw.fault_of(code[i])``: the architecture's fault for that code


@dataclass
class RawProbes:
    """A batch probe's results as columns (see the comment above).

    ``status``: uint8, one of RAW_*; ``pa``: uint64, the physical address the MMU reached (where
    ``status`` is RAW_TAG or RAW_OBSERVED); ``code``: uint32, the fault code where ``status`` is
    RAW_FAULT (x86-64: the #PF error code; s390x: the program-interruption code; arm64:
    PAR_EL1.FST).  ``fault_of`` turns a code into the :class:`Fault` ``probe_many`` reports;
    ``extra`` holds machine-specific columns (s390x: ``teid``, 0 where none was stored).
    """

    status: np.ndarray
    pa: np.ndarray
    code: np.ndarray
    observed_by: str
    fault_of: Callable[[int], ProbeResult]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.status)

    def results(self, errors: dict[int, ProbeError], start: int = 0, stop: int | None = None
                ) -> list[ProbeResult]:
        """The result objects of rows ``start..stop`` (all: ``probe_many``'s list); ``errors``
        by row index.  Faults with the same code share one (immutable) object."""
        stop = len(self.status) if stop is None else stop
        status, pa = self.status[start:stop], self.pa[start:stop]
        out: list[ProbeResult] = list(map(Translation, pa.tolist(), repeat("tag", len(status))))
        other = np.flatnonzero(status != RAW_TAG)
        if not len(other):
            return out
        faults: dict[int, ProbeResult] = {}
        for i, st, a, code in zip(other.tolist(), status[other].tolist(), pa[other].tolist(),
                                  self.code[start:stop][other].tolist(), strict=True):
            if st == RAW_FAULT:
                res = faults.get(code)
                if res is None:
                    res = faults[code] = self.fault_of(code)
                out[i] = res
            elif st == RAW_OBSERVED:
                out[i] = Translation(a, self.observed_by)
            else:
                out[i] = errors.get(start + i) or ProbeError("the batch probe recorded no result for this address")
        return out

    def put(self, i: int, result: ProbeResult, errors: dict[int, ProbeError]) -> None:
        """Store one result object in row ``i`` (the inverse of :meth:`results`); ``errors``
        receives a ProbeError.  A result the columns cannot hold exactly is refused."""
        if isinstance(result, Translation) and result.observed_by in ("tag", self.observed_by):
            self.status[i] = RAW_TAG if result.observed_by == "tag" else RAW_OBSERVED
            self.pa[i] = result.pa
            errors.pop(i, None)
        elif isinstance(result, Fault) and self.fault_of(result.code) == result:
            self.status[i], self.code[i] = RAW_FAULT, result.code
            errors.pop(i, None)
        elif isinstance(result, ProbeError):
            self.status[i] = RAW_ERROR
            errors[i] = result
        else:
            raise ValueError(f"{result!r} has no raw form here")


def address_ndarray(vas: np.ndarray) -> np.ndarray:
    """A numpy array of virtual addresses as a flat uint64 array, without a copy where it
    already is one; refused (:class:`~emu.errors.AddressError`) unless it is a flat array of
    non-negative integers (numpy would turn floats into truncated integers)."""
    if vas.ndim != 1 or vas.dtype.kind not in "iu":
        raise AddressError(f"virtual addresses must be a flat integer array, not {vas.dtype}{vas.shape}")
    if vas.dtype.kind == "i" and len(vas) and int(vas.min()) < 0:
        raise AddressError("virtual addresses must not be negative")
    return vas.astype(np.uint64, copy=False)
