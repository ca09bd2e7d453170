"""Which kernel, with which Kconfig: the key of every Linux fact foliowalk models.

A :class:`KernelConfig` is a kernel version plus the Kconfig options that change what the
page-table and swap-entry code does (the swap type numbering in include/linux/swap.h, whether
``pte_protnone()`` or the devmap/THP-migration predicates exist, the arm64 granule and VA size).
It is built from a named *profile* -- the options foliowalk asks Kconfig for on top of the
architecture's ``defconfig`` -- and resolved with the ``depends on`` facts of each architecture
that decide which of those options a ``.config`` can hold.  The kernel harness (``emu.kernel``)
builds the same request with the real Kconfig; its tests check that the ``.config`` it resolves
holds exactly the options this module predicts, so the transcription below is checked by the
tree, not trusted.

Versions: ``6.12`` (Debian's linux-source-6.12, 6.12.118; the release that merged folio_walk)
and ``6.1`` (linux-source-6.1, 6.1.192 LTS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

VERSIONS = ("6.12", "6.1")
DEFAULT_VERSION = "6.12"

#: Options whose value changes an answer foliowalk models, in the order reports print them.
LAYOUT_OPTIONS = (
    "MIGRATION",  # swap.h: SWP_MIGRATION_NUM 3 (else 0); ARCH_ENABLE_THP_MIGRATION needs THP
    "MEMORY_FAILURE",  # swap.h: SWP_HWPOISON_NUM 1
    "ZONE_DEVICE",  # needed by DEVICE_PRIVATE
    "DEVICE_PRIVATE",  # swap.h: SWP_DEVICE_NUM 4 (v6.12; 3 device types before the 2025 change)
    "PTE_MARKER",  # v6.1 swap.h: SWP_PTE_MARKER_NUM 1 only with it (v6.12: always 1)
    "TRANSPARENT_HUGEPAGE",  # pmd_trans_huge(), PMD migration entries
    "NUMA_BALANCING",  # pte_protnone()/pmd_protnone() (else constant 0, include/linux/pgtable.h)
    "USERFAULTFD",
    "PTE_MARKER_UFFD_WP",  # selects PTE_MARKER in v6.1
    "MEM_SOFT_DIRTY",
)

#: What the "distro" profile asks for: the layout options as Debian's own 6.12 amd64 kernel has
#: them (/usr/src/linux-config-6.12/config.amd64_none_amd64.xz from linux-config-6.12
#: 6.12.118-1~deb12u1: MIGRATION=y MEMORY_FAILURE=y ZONE_DEVICE=y DEVICE_PRIVATE not set
#: TRANSPARENT_HUGEPAGE=y NUMA_BALANCING=y USERFAULTFD=y PTE_MARKER_UFFD_WP=y MEM_SOFT_DIRTY=y).
#: ZONE_DEVICE depends on MEMORY_HOTPLUG and MEMORY_HOTREMOVE, NUMA_BALANCING on NUMA,
#: MEM_SOFT_DIRTY on CHECKPOINT_RESTORE: asked too (Debian has them all).
_DISTRO = {
    "MIGRATION": True,
    "MEMORY_FAILURE": True,
    "MEMORY_HOTPLUG": True,
    "MEMORY_HOTREMOVE": True,
    "ZONE_DEVICE": True,
    "DEVICE_PRIVATE": False,
    "TRANSPARENT_HUGEPAGE": True,
    "NUMA": True,
    "NUMA_BALANCING": True,
    "USERFAULTFD": True,
    "PTE_MARKER_UFFD_WP": True,
    "CHECKPOINT_RESTORE": True,  # MEM_SOFT_DIRTY depends on it (Debian: CHECKPOINT_RESTORE=y)
    "MEM_SOFT_DIRTY": True,
}

#: Named requests on top of ``defconfig``.  ``device-private`` is what Ubuntu-like kernels
#: have (HMM device memory: SWP_DEVICE_NUM 4 and the migration types move down by 4).
PROFILES: dict[str, dict[str, bool]] = {
    "distro": _DISTRO,
    "device-private": {**_DISTRO, "DEVICE_PRIVATE": True},
    "defconfig": {},
}
DEFAULT_PROFILE = "distro"

#: Options an architecture's Kconfig cannot hold whatever is asked, with the v6.12 fact that
#: says so (the ``depends on`` of the option and the ``select``s the arch lacks).
UNSUPPORTED: dict[str, dict[str, str]] = {
    "s390x": {
        # mm/Kconfig: MEMORY_FAILURE depends on ARCH_SUPPORTS_MEMORY_FAILURE, ZONE_DEVICE on
        # ARCH_HAS_PTE_DEVMAP; arch/s390/Kconfig selects neither.
        "MEMORY_FAILURE": "arch/s390/Kconfig does not select ARCH_SUPPORTS_MEMORY_FAILURE",
        "ZONE_DEVICE": "arch/s390/Kconfig does not select ARCH_HAS_PTE_DEVMAP",
        "DEVICE_PRIVATE": "depends on ZONE_DEVICE",
        # mm/Kconfig: PTE_MARKER_UFFD_WP depends on HAVE_ARCH_USERFAULTFD_WP (not on s390)
        "PTE_MARKER_UFFD_WP": "arch/s390/Kconfig does not select HAVE_ARCH_USERFAULTFD_WP",
    },
    "arm64": {
        # mm/Kconfig: MEM_SOFT_DIRTY depends on HAVE_ARCH_SOFT_DIRTY (not selected by arm64)
        "MEM_SOFT_DIRTY": "arch/arm64/Kconfig does not select HAVE_ARCH_SOFT_DIRTY",
    },
    "x86_64": {},
}

#: What a version's Kconfig cannot hold on an arch on top of :data:`UNSUPPORTED` (which holds in
#: both versions), with the fact that says so.
UNSUPPORTED_IN: dict[str, dict[str, dict[str, str]]] = {
    "6.1": {
        "arm64": {
            # linux v6.1 mm/Kconfig:1144-1148: PTE_MARKER_UFFD_WP "depends on HAVE_ARCH_USERFAULTFD_WP", which
            # v6.1 selects only on x86 (arch/x86/Kconfig:188), not arm64 (v6.12 arch/arm64/Kconfig:268 does, "if
            # USERFAULTFD"); so neither PTE_MARKER_UFFD_WP nor the PTE_MARKER it selects is set
            "PTE_MARKER_UFFD_WP": "v6.1 arch/arm64/Kconfig does not select HAVE_ARCH_USERFAULTFD_WP",
        },
    },
    "6.12": {},
}


def unsupported(arch: str, version: str = DEFAULT_VERSION) -> dict[str, str]:
    """The layout options ``arch``'s Kconfig in ``version`` cannot hold, each with its reason."""
    return {**UNSUPPORTED[arch], **UNSUPPORTED_IN.get(version, {}).get(arch, {})}


#: What each arch's ``defconfig`` (v6.12 and v6.1) sets of the layout options when a profile
#: leaves them alone (the ``defconfig`` profile).
DEFCONFIG: dict[str, dict[str, bool]] = {
    "x86_64": {"MIGRATION": True},
    "arm64": {"MIGRATION": True, "TRANSPARENT_HUGEPAGE": True, "NUMA_BALANCING": True,
              "MEMORY_FAILURE": True},
    "s390x": {"MIGRATION": True, "TRANSPARENT_HUGEPAGE": True, "NUMA_BALANCING": True,
              "USERFAULTFD": True, "MEM_SOFT_DIRTY": True},
}


class UnknownKernelConfig(ValueError):
    """A kernel version, profile or option foliowalk does not know."""


@dataclass(frozen=True)
class KernelConfig:
    """A kernel version and the resolved layout options of one architecture's build.

    ``options`` maps every name of :data:`LAYOUT_OPTIONS` to whether the ``.config`` has it.
    """

    version: str
    arch: str
    profile: str
    options: tuple[tuple[str, bool], ...] = field(default=())

    def enabled(self, name: str) -> bool:
        """``IS_ENABLED(CONFIG_<name>)``."""
        for k, v in self.options:
            if k == name:
                return v
        raise UnknownKernelConfig(f"option {name!r} is not one foliowalk models; known: {', '.join(LAYOUT_OPTIONS)}")

    @property
    def key(self) -> str:
        return f"{self.version}/{self.profile}"

    def describe(self) -> str:
        on = [k for k, v in self.options if v]
        return f"v{self.version} {self.profile} ({' '.join(on) or 'none'})"

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, "profile": self.profile, "options": dict(self.options)}

    @property
    def pte_marker(self) -> bool:
        """Whether swap.h reserves a PTE-marker swap type: always in v6.12, CONFIG_PTE_MARKER in 6.1."""
        return True if self.version != "6.1" else self.enabled("PTE_MARKER")


def resolve(arch: str, requested: dict[str, bool], version: str = DEFAULT_VERSION) -> dict[str, bool]:
    """The layout options a ``.config`` ends up with: ``defconfig``'s, then ``requested``, then
    Kconfig's dependencies (what the arch cannot select, DEVICE_PRIVATE without ZONE_DEVICE,
    NUMA_BALANCING without MIGRATION, v6.1's PTE_MARKER selected by PTE_MARKER_UFFD_WP); what the
    arch cannot select depends on ``version`` (:func:`unsupported`)."""
    if arch not in UNSUPPORTED:
        raise UnknownKernelConfig(f"unknown architecture {arch!r}")
    if version not in VERSIONS:
        raise UnknownKernelConfig(f"unknown kernel version {version!r}; known: {', '.join(VERSIONS)}")
    out = {name: False for name in LAYOUT_OPTIONS}
    out.update({k: v for k, v in DEFCONFIG[arch].items() if k in out})
    out.update({k: v for k, v in requested.items() if k in out})
    for name in unsupported(arch, version):
        out[name] = False
    if not out["ZONE_DEVICE"]:
        out["DEVICE_PRIVATE"] = False
    if not out["MIGRATION"]:
        out["NUMA_BALANCING"] = False
    if not out["USERFAULTFD"]:
        out["PTE_MARKER_UFFD_WP"] = False
    # v6.1 mm/Kconfig: "config PTE_MARKER ... bool" (no prompt), selected by PTE_MARKER_UFFD_WP;
    # v6.12 has no such option (swap.h: SWP_PTE_MARKER_NUM is always 1).
    out["PTE_MARKER"] = out["PTE_MARKER_UFFD_WP"] if version == "6.1" else False
    return out


def kernel_config(arch: str, profile: str = DEFAULT_PROFILE, version: str = DEFAULT_VERSION) -> KernelConfig:
    """The :class:`KernelConfig` foliowalk predicts for ``profile`` on ``arch``."""
    if version not in VERSIONS:
        raise UnknownKernelConfig(f"unknown kernel version {version!r}; known: {', '.join(VERSIONS)}")
    if profile not in PROFILES:
        raise UnknownKernelConfig(f"unknown kernel configuration {profile!r}; known: {', '.join(PROFILES)}")
    resolved = resolve(arch, PROFILES[profile], version)
    return KernelConfig(version, arch, profile, tuple((k, resolved[k]) for k in LAYOUT_OPTIONS))


def parse_dotconfig(text: str) -> dict[str, bool]:
    """A ``.config``'s boolean options (``CONFIG_X=y`` -> True, ``# CONFIG_X is not set`` -> False)."""
    out: dict[str, bool] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, _, val = line[len("CONFIG_"):].partition("=")
            out[name] = val in ("y", "m")
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[len("# CONFIG_"):-len(" is not set")]] = False
    return out


def from_dotconfig(arch: str, version: str, profile: str, text: str) -> KernelConfig:
    """The :class:`KernelConfig` a built tree's ``.config`` says (options it lacks are off)."""
    opts = parse_dotconfig(text)
    return KernelConfig(version, arch, profile, tuple((k, opts.get(k, False)) for k in LAYOUT_OPTIONS))
