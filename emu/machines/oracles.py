"""The MMU oracles ``--oracle`` chooses from (verify, fuzz, fixtures build): one registry.

Each :class:`OracleKind` says what the oracle is called (its ``--oracle`` name and the emulator
it runs, as deviation rows and tables name it), which configurations it can check, how to make
its oracle for a configuration (:func:`emu.machines.oracle.make_oracle` asks :meth:`factory`),
and whether it can run on this machine (a one-line reason, what to install, where not).
``--oracle all`` is every registered oracle that is available here (:func:`available`); a missing
one is named in a note, never silently dropped.

An engineer adding an oracle (another emulator, or another architecture of one) adds or extends
its entry in :data:`ORACLES` and nothing else: the CLIs, the judge's emulator placement
(:data:`emu.machines.placement.RECORDED`) and docs/oracles.md read it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import archs
from emu.errors import ConfigError

if TYPE_CHECKING:
    from emu.machines.oracle import OracleFactory


@dataclass(frozen=True)
class OracleKind:
    """One oracle: ``name`` (``--oracle NAME``, the tag of its deviation rows), ``display`` (the
    emulator and version, as docs/oracles.md names it), ``factories`` (arch -> factory, imported
    when first needed: a QEMU oracle must not import Unicorn's machines), ``needs`` (arch ->
    why it cannot run here, or None) and ``config_problem`` (configuration key -> why it cannot
    check that configuration although it has a machine for its architecture, or None)."""

    name: str
    display: str
    factories: Callable[[], dict[str, OracleFactory]]
    needs: Callable[[str], str | None] = field(default=lambda arch: None)
    config_problem: Callable[[str], str | None] = field(default=lambda key: None)

    def archs(self) -> list[str]:
        """The architectures it has a machine for."""
        return list(self.factories())

    def cannot_check(self, key: str) -> str | None:
        """Why this oracle cannot check configuration ``key`` at all (no machine for its
        architecture, or a configuration its machine cannot run), or None."""
        arch = archs.get_config(key).arch
        if arch not in self.factories():
            return f"the {self.name} oracle has no machine for {arch} yet (it covers {', '.join(self.archs())})"
        return self.config_problem(key)

    def missing(self, arch: str) -> str | None:
        """Why the oracle cannot run ``arch`` on this machine (one line: what to install), or None."""
        return self.needs(arch)

    def factory(self, arch: str) -> OracleFactory:
        try:
            return self.factories()[arch]
        except KeyError:
            raise ConfigError(f"no {self.name} MMU oracle for architecture {arch!r}") from None


def _unicorn() -> dict[str, OracleFactory]:
    from emu.machines.oracle import ORACLES

    return ORACLES


def _qemu() -> dict[str, OracleFactory]:
    from emu.machines.qemu.oracle import QEMU_ORACLES

    return QEMU_ORACLES


def _qemu_missing(arch: str) -> str | None:
    from emu.machines.qemu import missing

    return missing(arch)


def _bochs() -> dict[str, OracleFactory]:
    from emu.machines.bochs.oracle import BOCHS_ORACLES

    return BOCHS_ORACLES


def _bochs_missing(arch: str) -> str | None:
    from emu.machines.bochs import missing

    return missing(arch)


def _bochs_config_problem(key: str) -> str | None:
    from emu.machines.bochs.oracle import BOCHS_UNSUPPORTED

    return BOCHS_UNSUPPORTED.get(key)


#: Every oracle, in the order ``--oracle all`` runs and shows them (the first is the default).
ORACLES: dict[str, OracleKind] = {
    "unicorn": OracleKind("unicorn", "Unicorn 2.1.4", _unicorn),
    "qemu": OracleKind("qemu", "QEMU 7.2", _qemu, needs=_qemu_missing),
    "bochs": OracleKind("bochs", "Bochs 2.7", _bochs, needs=_bochs_missing, config_problem=_bochs_config_problem),
}
DEFAULT = "unicorn"


def oracle_choices() -> tuple[str, ...]:
    """What ``--oracle`` accepts: every registered name, and ``all``."""
    return (*ORACLES, "all")


def get(name: str) -> OracleKind:
    """The oracle named ``name``; :class:`ConfigError` (one line) for an unknown one."""
    kind = ORACLES.get(name)
    if kind is None:
        raise ConfigError(f"unknown oracle {name!r}: one of {', '.join(ORACLES)}")
    return kind


def display_name(name: str) -> str:
    """``"qemu"`` -> ``"QEMU 7.2"``; an unknown name as it is."""
    kind = ORACLES.get(name)
    return kind.display if kind is not None else name


def unavailable_reason(name: str, keys: list[str]) -> str | None:
    """Why oracle ``name`` cannot run here for any of ``keys`` (the first architecture's missing
    tool), or None."""
    kind = get(name)
    for arch in sorted({archs.get_config(k).arch for k in keys} & set(kind.archs())):
        problem = kind.missing(arch)
        if problem:
            return problem
    return None


def available(keys: list[str]) -> tuple[list[str], list[str]]:
    """``--oracle all``: the oracles that can run here for ``keys`` (in :data:`ORACLES` order),
    and one note per oracle that cannot (``"<name>: <why>"``)."""
    ok, notes = [], []
    for name in ORACLES:
        why = unavailable_reason(name, keys)
        if why is None:
            ok.append(name)
        else:
            notes.append(f"{name}: {why}")
    return ok, notes
