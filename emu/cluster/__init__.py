"""Campaigns on an existing Dask cluster: ``foliowalk conform --scheduler ADDRESS`` and
``foliowalk fuzz --scheduler ADDRESS`` (docs/conform.md, docs/fuzzing.md).

Dask is an optional extra (``pip install 'foliowalk[cluster]'``); without ``--scheduler`` nothing
here is imported and campaigns run in local worker processes, as before.

* :func:`connect` -- a ``distributed.Client`` for the scheduler, with every worker checked (it
  imports this foliowalk) and the :class:`~emu.cluster.plugin.MachineCache` worker plugin
  registered.  An unreachable scheduler, a cluster without workers or a missing Dask is one
  :class:`~emu.errors.ConfigError` line (exit 2).
* :func:`run_shards` -- the client's loop: shard descriptors (enumeration index ranges, hierarchy
  index ranges) submitted a window at a time, results streamed back with ``as_completed`` as they
  finish, Ctrl-C cancels what is still running and keeps what came back.
* The tasks: :mod:`emu.cluster.conform` (any ``emu.conform.<space>`` module) and
  :mod:`emu.cluster.fuzz`.  Unicorn engines cannot be pickled, so a task never carries a machine:
  each worker thread builds its own on first use and keeps them in the plugin, keyed by what
  they are built from (:func:`emu.cluster.plugin.cached`).

Campaign digests do not depend on the sharding, the order results come back in, or the number of
workers: a cluster run's digest equals the local run's (tests/cluster).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from emu.errors import ConfigError, FoliowalkError


class ClusterLost(FoliowalkError):
    """The client lost the Dask scheduler in the middle of a campaign (the scheduler or the
    network went away).  What came back before is kept by the caller."""

INSTALL = "pip install 'foliowalk[cluster]'"
#: how long to wait for the scheduler to answer, and for its first worker
CONNECT_TIMEOUT_S = 10.0
WORKERS_TIMEOUT_S = 30.0


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--scheduler needs Dask, which is not installed: {INSTALL}") from None
    return distributed


def _worker_version() -> str:
    """Run on each worker: the foliowalk it imports."""
    import emu

    return emu.__version__


def connect(address: str) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address`` (``tcp://host:8786``, or a
    ``LocalCluster``'s ``scheduler_address``), its workers checked and the machine-cache plugin
    registered on them.  Every failure is a :class:`ConfigError` (one line, exit 2)."""
    distributed = _distributed()
    import emu
    from emu.cluster.plugin import MachineCache

    try:
        # reach it first: a Client whose constructor fails is left half-made, and closing it when
        # it is collected blocks the exit for 20 s and prints a traceback
        _reach(address)
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, (OSError, TimeoutError)):
            what = "no Dask scheduler answers there"
        elif isinstance(exc, ValueError):
            what = "not an address Dask can connect to"  # no port, an unknown protocol
        else:  # something answered, in another protocol (a garbled message length, ...)
            what = "what answers there is not a Dask scheduler"
        raise ConfigError(f"--scheduler {address}: {what} ({why})") from None
    try:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except Exception:
            raise ConfigError(f"--scheduler {address}: the cluster has no workers "
                              f"(none joined in {WORKERS_TIMEOUT_S:.0f} s)") from None
        try:
            versions = client.run(_worker_version)
        except Exception as exc:
            raise ConfigError(f"--scheduler {address}: a worker cannot import foliowalk ({exc!r}); "
                              f"install it on every worker: {INSTALL}") from None
        other = {w: v for w, v in versions.items() if v != emu.__version__}
        if other:
            w, v = next(iter(other.items()))
            raise ConfigError(f"--scheduler {address}: worker {w} runs foliowalk {v}, this is {emu.__version__}")
        client.register_plugin(MachineCache(), name=MachineCache.name)
    except BaseException:
        client.close()
        raise
    return client


def _reach(address: str) -> None:
    """Open and close one connection to ``address`` with Dask's own transport (tcp://, tls://,
    ...): raises what the connection raises."""
    import asyncio

    from distributed.comm import connect as comm_connect

    async def probe() -> None:
        comm = await comm_connect(address, timeout=CONNECT_TIMEOUT_S)
        await comm.close()

    asyncio.run(probe())


def describe(client: Any) -> str:
    """``dask ADDRESS (N workers, T threads)``: where a campaign ran."""
    nthreads = client.nthreads()
    return (f"dask {client.scheduler.address} ({len(nthreads)} worker{'s' * (len(nthreads) != 1)}, "
            f"{sum(nthreads.values())} threads)")


def threads(client: Any) -> int:
    """Worker threads in the cluster (tasks that can run at once)."""
    return max(1, sum(client.nthreads().values()))


def run_shards(client: Any, fn: Callable[..., Any], shards: Iterable[Any],
               done: Callable[[Any, Any], Iterable[Any] | None], *,
               args: tuple[Any, ...] = (), window: int | None = None,
               failed: Callable[[Any, BaseException], Iterable[Any] | None] | None = None) -> bool:
    """Run ``fn(shard, *args)`` for every shard on the cluster, at most ``window`` at a time
    (default: twice the worker threads), and call ``done(shard, result)`` in the client as each
    finishes (in completion order).  ``shards`` is consumed lazily, so a generator may stop at a
    deadline; ``done`` may return further shards to run (a campaign's follow-up work).

    A task whose worker died (``distributed.KilledWorker``: the scheduler gave up after its
    retries) goes to ``failed(shard, exc)``, which may return shards to run instead (the same
    work, cut smaller); without ``failed`` it is raised.  Any other exception a task raises is
    raised here (a :class:`~emu.errors.FoliowalkError` stays one line).  Ctrl-C cancels the
    running tasks and returns True: the results that came back are kept."""
    distributed = _distributed()
    window = window or 2 * threads(client)
    source: Iterator[Any] = iter(shards)
    extra: deque[Any] = deque()
    running: dict[Any, tuple[Any, Any]] = {}  # future key -> (future, shard)
    queue = distributed.as_completed(loop=client.loop)

    def submit_more() -> None:
        while len(running) < window:
            if extra:
                shard = extra.popleft()
            else:
                shard = next(source, _END)
                if shard is _END:
                    return
            fut = client.submit(fn, shard, *args, pure=False)
            running[fut.key] = (fut, shard)
            queue.add(fut)

    try:
        submit_more()
        for fut in queue:
            _fut, shard = running.pop(fut.key)
            try:
                result = fut.result()
            except distributed.KilledWorker as exc:
                if failed is None:
                    raise
                extra.extend(failed(shard, exc) or ())
            else:
                more = done(shard, result)
                if more:
                    extra.extend(more)
            finally:
                fut.release()
            submit_more()
    except KeyboardInterrupt:
        _cancel(client, running)
        return True
    except (distributed.client.FutureCancelledError, distributed.comm.CommClosedError, OSError) as exc:
        # the scheduler's connection is gone: every running task is lost with it, not failed
        _cancel(client, running)
        why = " ".join(str(exc).split())  # Dask's messages span lines; ours is one
        raise ClusterLost(f"lost the Dask scheduler ({type(exc).__name__}: {why})") from None
    except BaseException:
        _cancel(client, running)
        raise
    return False


_END = object()


def _cancel(client: Any, running: dict[Any, Any]) -> None:
    futures = [fut for fut, _shard in running.values()]
    running.clear()
    if futures:
        try:
            client.cancel(futures)
        except Exception:  # the scheduler may be gone already: nothing left to cancel
            pass
