"""Your own scikit-learn code on the cluster: `joblib.parallel_backend("skfleet")` and `skfleet.connect()`.

`import skfleet` registers the backend, and joblib loads this module (and distributed) when it is
first used. It is joblib's Dask backend (each task of a Parallel
call, such as a GridSearchCV fit or a cross_validate fold, runs on a worker) with what the
trainer learned:

- Nested joblib work stays in the task's process. joblib's Dask backend sends a task's own
  Parallel calls to the cluster too, whatever their n_jobs (joblib#1013): a forest's trees
  become one task each, queued behind the fits that wait for them.
- Work that asks joblib for threads (`prefer="threads"`: a forest's trees, nearest
  neighbours) and is called outside any task, such as a search's refit, runs on this
  process's threads, next to its data, instead of as one cluster task per tree.
- Everything else runs on the cluster, even when joblib would run it here: joblib runs a
  call in the calling process when its backend counts one slot (a cluster of one
  single-threaded worker).
- Data goes straight to the workers (skfleet's `distributed.client.direct-to-workers`),
  unless the client was told otherwise, and to every worker: joblib's own backend scatters each
  large argument (the data, a fold's indices) to one worker, and a worker that is dropped
  before the others fetched it takes the only copy with it, cancelling every fit that needs it.
- A search's data goes once: what was copied to the workers for one Parallel call is used by
  the next ones (a search's refit) for as long as the backend and the data live.
- A task may need the results of other work first (skfleet/subtasks.py: a forest's exact
  chunks): each of that work's calls becomes a Dask task of its own, and the task gets their
  results straight from the workers that made them.
- Versions are checked as the backend starts: a client whose scikit-learn, numpy, ... differs
  from the cluster's is refused with the words `doctor` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import dask.config
import joblib
from dask.sizeof import sizeof
from dask.utils import parse_timedelta
from distributed import Client
from joblib._dask import DaskDistributedBackend, _WeakKeyDictionary, is_weakrefable
from joblib._parallel_backends import FallbackToBackend, ThreadingBackend

from skfleet import cluster
from skfleet.errors import ClusterError, first_line
from skfleet.subtasks import Subtasks

# joblib's Dask backend scatters an argument larger than this (bytes, by dask's sizeof) instead of
# sending it inside each task.
SCATTER_BYTES = 1e3

log = logging.getLogger(__name__)


class SkfleetBackend(DaskDistributedBackend):
    """joblib's Dask backend, with nested work kept in each task's process and versions checked.

    Takes joblib's Dask backend's arguments (`client`, `scatter`, `wait_for_workers_timeout`, ...),
    and `check_versions=False` to skip the version check.
    """

    def __init__(self, *args: Any, check_versions: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if check_versions:
            cluster.check_versions(self.client)
        self._saved_direct: bool | None = None
        self._copies: set[asyncio.Future[Any]] = set()  # on the client's loop: touched there alone
        # Each large argument's future once it is on the workers, for the calls that follow (touched on the loop alone).
        self._kept = _WeakKeyDictionary()

    def subtask_threads(self) -> int:
        """Give the worker threads the tasks' subtasks (skfleet/subtasks.py) run on: this backend runs them."""
        return sum(self.client.nthreads().values())

    async def _to_func_args(self, func: Any) -> tuple[Any, list[Any]]:
        try:
            self._broadcast_large_arguments(func)
            batch, tasks = await super()._to_func_args(func)
            for _, args, kwargs in tasks:
                self._submit_subtasks(args, kwargs)
        except Exception:
            if self.client.status == "running":
                raise
            # The search ended (an error the user was told about) and its client closed while this
            # batch was still being sent: nothing waits for it. Cancelled, it ends without the
            # traceback tornado would print under the trainer's one-line error.
            raise asyncio.CancelledError from None
        # joblib's Dask backend wraps each batch in a callable that runs it under its own backend
        # ("dask"): that is what sends a task's nested work to the cluster. Ours runs it in place.
        return InProcessBatch(repr(batch)), tasks

    def _submit_subtasks(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Submit each call of the task's Subtasks arguments as a Dask task; the task gets the list of their futures."""
        for name, value in kwargs.items():
            if isinstance(value, Subtasks):
                kwargs[name] = [
                    self.client.submit(
                        function, *call_args, key=f"{function.__name__}-{uuid.uuid4().hex}", priority=priority, pure=False,
                        **call_kwargs,
                    )
                    for function, call_args, call_kwargs, priority in value.calls(args, kwargs)
                ]  # fmt: skip

    def _broadcast_large_arguments(self, func: Any) -> None:
        """Scatter each large argument of the batch FUNC to every worker, where joblib would scatter it to one.

        joblib looks a call's scattered arguments up in `call_data_futures` before scattering
        one itself: entered there first, ours are the ones its tasks use. Every worker needs the
        data of a search for its fits anyway; with a copy each, any one of them may be dropped
        (killed, frozen, cut off) and the fits it ran go on elsewhere.
        """
        pending = getattr(self, "call_data_futures", None)
        if pending is None:  # outside a Parallel call
            return
        for _, args, kwargs in func.items:
            for argument in (*args, *kwargs.values()):
                if id(argument) in self.data_futures or not is_weakrefable(argument) or sizeof(argument) <= SCATTER_BYTES:
                    continue
                try:
                    pending[argument]
                except KeyError:
                    pending[argument] = asyncio.ensure_future(self._kept_or_broadcast(argument))

    async def _kept_or_broadcast(self, argument: Any) -> Any:
        """Give the future of ARGUMENT on the workers: an earlier call's while it still holds, else a new broadcast."""
        try:
            kept = self._kept[argument]
        except KeyError:
            kept = None
        if kept is not None and kept.status == "finished":
            return kept
        future = await self._broadcast(argument)
        if future is not None:
            self._kept[argument] = future
        return future

    async def _broadcast(self, argument: Any) -> Any:
        """Give the future of ARGUMENT, sent to every running worker under one key; None if none took it.

        Each copy is sent on its own (`_copy`), and the first that lands is the future, once the
        others landed too or a connect timeout passed after it: a worker the scheduler is
        dropping, or one that stopped answering, fails or hangs its own copy alone. Not the
        scheduler's replicate (`scatter(broadcast=True)`): it retries a worker that left mid-copy
        every connect timeout, for ever, and the search that waited for it with it
        (dask/distributed#5704; CI's frozen VM held a search so). Copies still under way when the
        call ends are cancelled (`stop_call`). With None, joblib sends it to one worker, as it
        would have. Whatever the failure, it must not escape: raised here, in joblib's submission
        coroutine, it would reach only the log, and Parallel would wait for ever for a task never
        submitted.
        """
        try:
            workers = sorted(await self.client.scheduler.ncores_running())  # not the paused or the retiring
        except Exception as error:  # any failure: see above
            log.debug("could not list the workers to copy an argument to (%s): joblib scatters it", first_line(error))
            return None
        key = f"{type(argument).__name__}-{uuid.uuid4().hex}"  # distributed's name for a value scattered unhashed
        copies = [asyncio.ensure_future(self._copy(key, argument, worker)) for worker in workers]
        for copy in copies:
            self._copies.add(copy)
            copy.add_done_callback(self._copies.discard)
        for landed in asyncio.as_completed(copies):
            future = await landed
            if future is not None:
                break
        else:
            return None
        # The fits start once every worker has its copy, or the scheduler would send some of them to
        # fetch it from the first (the copies are under way side by side: healthy workers land
        # together). One copy a connect timeout behind the first is from a worker that stopped
        # answering: the fits go on without it.
        grace = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")
        await asyncio.wait(copies, timeout=grace)
        return future

    async def _copy(self, key: str, argument: Any, worker: str) -> Any:
        """Give the future of KEY once ARGUMENT is on WORKER; None if that failed (the worker went, or refused it)."""
        try:
            scattered = await self.client.scatter({key: argument}, workers=[worker], asynchronous=True)
        except Exception as error:  # any failure: the other copies stand
            log.debug("could not copy %s to %s (%s)", key, worker, first_line(error))
            return None
        return scattered[key]

    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: str | None = None, **backend_args: Any) -> int:
        if prefer == "threads":
            # Shared-memory work at the top (a refit's trees): on this process's threads, as joblib would run it.
            raise FallbackToBackend(ThreadingBackend(nesting_level=self.nesting_level))
        return super().configure(n_jobs=n_jobs, parallel=parallel, **backend_args)

    def effective_n_jobs(self, n_jobs: int) -> int:
        # joblib runs a call in the calling process when a backend counts one slot; two keep it on the cluster.
        return max(2, super().effective_n_jobs(n_jobs))

    def start_call(self) -> None:
        super().start_call()
        # A client made before `import skfleet` says nothing (None), which distributed reads as "through the scheduler".
        self._saved_direct = self.client.direct_to_workers
        if self._saved_direct is None:
            self.client.direct_to_workers = dask.config.get("distributed.client.direct-to-workers", default=None)

    def stop_call(self) -> None:
        self.client.direct_to_workers = self._saved_direct
        # A copy still under way (to a worker that stopped answering) ends with the call.
        with contextlib.suppress(RuntimeError):  # the client's loop already closed: nothing runs on it
            self.client.loop.add_callback(self._cancel_copies)
        super().stop_call()

    def _cancel_copies(self) -> None:
        for copy in list(self._copies):
            copy.cancel()


class InProcessBatch:
    """A batch of joblib calls for one Dask task, their own joblib work run in the worker's process, serially.

    The worker thread already runs one task; threads of the task's own would compete with
    the other tasks for the same cores.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, tasks: list[tuple[Any, list[Any], dict[str, Any]]]) -> list[Any]:
        with joblib.parallel_config(backend="sequential"):
            return [function(*args, **kwargs) for function, args, kwargs in tasks]

    def __repr__(self) -> str:
        return self.name  # the Dask task's key prefix: "batch_of__fit_and_score_2_calls"


def connect(address: str | None = None, *, timeout: float = 10, workers: int = 1, **client_options: Any) -> Client:
    """Give a client of the cluster at ADDRESS (default: `DASK_SCHEDULER_ADDRESS`), its versions checked.

    Waits up to TIMEOUT seconds for the scheduler and for WORKERS workers. CLIENT_OPTIONS go to
    distributed's Client (`security=` for a TLS cluster, unless Dask's config already says it).
    Raises ClusterError when the cluster can't be reached, VersionMismatchError (the words
    `doctor` prints) when a package that matters differs; a Python patch-level difference is
    no mismatch.
    """
    address = address or cluster.scheduler_address()
    if address is None:
        raise ClusterError("no cluster to connect to: pass an address or set DASK_SCHEDULER_ADDRESS")
    client = cluster.open_client(address, timeout, **client_options)
    try:
        cluster.wait_for_workers(client, address, workers, timeout)
        versions = cluster.check_versions(client)
    except BaseException:
        client.close()
        raise
    log.debug("versions match on %s: %s", address, ", ".join(f"{name} {version}" for name, version in versions.items()))
    return client
