"""The worker side of a Dask campaign: the machine cache every task uses.

Unicorn engines (and the emulator threads behind a QEMU machine) cannot be pickled, so no task
carries one: the first task on a worker thread builds what it needs and :class:`MachineCache`
keeps it for the next task with the same key, until the worker shuts down (``teardown`` closes
everything).  The key is what the object is built from (the conformance space's module; the fuzz
configuration, kernel, walker, harness and emulator), plus the thread: a worker with several
threads runs several tasks at once, and one machine must never serve two of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from distributed import WorkerPlugin, get_worker


class MachineCache(WorkerPlugin):
    """Per-worker cache of machines and runners, built lazily (registered by
    :func:`emu.cluster.connect` on every worker, and on workers that join later)."""

    name = "foliowalk-machines"

    def __init__(self) -> None:
        self.objects: dict[tuple[int, Hashable], Any] = {}
        self.lock = threading.Lock()

    def setup(self, worker: Any) -> None:
        self.objects = {}
        self.lock = threading.Lock()

    def teardown(self, worker: Any) -> None:
        with self.lock:
            objs, self.objects = list(self.objects.values()), {}
        for obj in objs:
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # the worker is going away: close what can be closed
                    pass

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        full = (threading.get_ident(), key)
        with self.lock:
            obj = self.objects.get(full)
        if obj is None:
            obj = make()
            with self.lock:
                self.objects[full] = obj
        return obj

    # pickled to the workers without its lock
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


def cached(key: Hashable, make: Callable[[], Any]) -> Any:
    """The object for ``key`` on this worker thread, built by ``make()`` the first time.  Outside
    a Dask worker, or on one without the plugin, a module-level cache stands in."""
    try:
        plugin = get_worker().plugins.get(MachineCache.name)
    except ValueError:  # not in a worker
        plugin = None
    cache = plugin if isinstance(plugin, MachineCache) else _LOCAL
    return cache.get(key, make)


_LOCAL = MachineCache()
