"""The kernel's own ``folio_walk_start()``/``folio_walk_end()`` run as guest code (issue 13).

``build_walk(config_key)`` builds the image for a paging configuration; ``KernelWalk(build, mm)``
runs it on that architecture's CPU (one module per architecture: ``x86_64``, ``arm64``,
``s390x``; what they share is ``common``).
"""

from .common import KernelWalk, KernelWalkResult, WalkBuild, WalkBuildError, build_walk

__all__ = ["KernelWalk", "KernelWalkResult", "WalkBuild", "WalkBuildError", "build_walk"]
