"""Where the units of a run execute: in this process (``local``) or on Ray (``ray``).

A run is cut into *units* (for ``align``: one language embedded by one model and
scored against the pivot; for ``eval``: one language's predictions). Units that
share a loaded model form a :class:`Job`: ``job.make()`` builds the worker once
(it loads the model, lazily) and the worker is called on each unit::

    results = executor.run([Job(make, units, labels)], on_result=callback)

``results[j][u]`` is the worker's return value for unit ``u`` of job ``j``, and
``on_result(j, u, value)`` is called on the driver for each job's units *in unit
order* (out-of-order results wait in a buffer), so the caller can write files or
progress in a fixed order whatever the executor. ``executor.map(fn, units)`` is the
stateless form (one job, ``fn`` the worker).

:class:`LocalExecutor` calls everything in this process, one job after the other:
the path every recipe had before executors existed.

:class:`RayExecutor` runs at most ``workers`` Ray actors at a time, each holding one
job's worker (so a model is loaded once per actor, not once per unit). Units are
pulled: an actor gets its next unit of the same job when it returns one; when its
job has nothing left to hand out, the actor is killed and its slot goes to a job
that still has units (several models run side by side). A job may ask that its
first unit finish before its others start (``first_alone``: ``align``'s pivot,
which every other unit then reads from the shared cache instead of embedding it
again). ``ray`` is imported only here, when a Ray run starts; when it is missing,
one line says which ``pip install`` to run.

One writer: workers return values to the driver; the only files they write are
cache entries, through the caches' own atomic, checksummed writes (the same entry
written twice holds the same bytes), so a run whose worker dies can be rerun and
reuses every unit already cached. Failures: a worker that dies (killed, out of
memory) is restarted by Ray and its unit retried ``retries`` times (default 1,
Ray's ``max_restarts`` / ``max_task_retries``); after that, or for an error raised
by the unit itself, the run stops with one line naming the unit.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from xling.errors import XlingError
from xling.registry import Registry

#: Executor classes by name (``--executor``), filled below: ``local``, ``ray``.
EXECUTORS = Registry(kind="executor", ordered=True, unknown="--executor must be one of {known}, got {name!r}")
DEFAULT_RAY_WORKERS = 2

#: Environment variables forwarded from the driver to every Ray worker (cache location, offline mode, ...).
FORWARDED_ENV_PREFIXES = ("XLING_", "HF_", "TRANSFORMERS_", "HUGGINGFACE_")


@dataclass
class Job:
    """Units sharing one worker: ``make()`` builds it (picklable for Ray), ``worker(unit)`` runs one."""

    make: Callable[[], Callable[[Any], Any]]
    units: list
    labels: list[str] | None = None  # one name per unit, for error messages ("model m, language deu")
    first_alone: bool = False  # unit 0 finishes before the others start

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels is not None else f"unit {i}"


def _returns(fn):
    return fn


def check_executor(name: str) -> str:
    """``name`` if it is an executor, else a one-line :class:`XlingError`."""
    if name not in EXECUTORS:
        raise EXECUTORS.unknown(name)
    return name


def check_workers(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise XlingError(f"--ray-workers must be at least 1, got {n!r}")
    return n


class _Ordered:
    """Calls ``on_result`` for each job's units in unit order, buffering the early ones."""

    def __init__(self, jobs: list[Job], on_result):
        self.on_result = on_result
        self.next = [0] * len(jobs)
        self.buffer: list[dict[int, Any]] = [{} for _ in jobs]

    def __call__(self, j: int, u: int, value) -> None:
        if self.on_result is None:
            return
        self.buffer[j][u] = value
        while self.next[j] in self.buffer[j]:
            i = self.next[j]
            self.on_result(j, i, self.buffer[j].pop(i))
            self.next[j] += 1


class LocalExecutor:
    """Every unit in this process, in order (today's path)."""

    name = "local"

    def run(self, jobs: list[Job], on_result: Callable[[int, int, Any], None] | None = None) -> list[list]:
        out = []
        for j, job in enumerate(jobs):
            if not job.units:
                out.append([])
                continue
            worker = job.make()
            results = []
            for u, unit in enumerate(job.units):
                value = worker(unit)
                if on_result is not None:
                    on_result(j, u, value)
                results.append(value)
            out.append(results)
            del worker
        return out

    def map(self, fn: Callable[[Any], Any], units: list, labels: list[str] | None = None) -> list:
        return self.run([Job(functools.partial(_returns, fn), list(units), labels)])[0]

    def describe(self) -> str:
        return "in this process"


@functools.lru_cache(maxsize=1)
def _actor_class():
    import ray

    @ray.remote
    class XlingWorker:
        """One job's worker in a Ray worker process."""

        def __init__(self, make, env: dict, threads: int):
            os.environ.update(env)
            import torch

            torch.set_num_threads(threads)
            self.worker = self.error = None
            try:  # built at once (the model loads while other units run), but an error here (a model
                self.worker = make()  # that fails to load) is raised by the first call: the unit's error,
            except Exception as exc:  # noqa: BLE001 - with its own message, not an actor death
                self.error = exc

        def call(self, unit):
            if self.error is not None:
                raise self.error
            return self.worker(unit)

    return XlingWorker


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RayExecutor:
    """Units as calls on Ray actors, one actor per (job, worker slot); see the module docstring.

    ``address``: a running cluster (``ray.init(address=...)``; ``"auto"`` finds a local
    one); None starts a local Ray with ``workers * threads`` CPUs, shut down after the
    run. A Ray already initialised in this process (tests, notebooks) is used as it is.
    ``threads``: torch threads per worker (each actor reserves as many CPUs).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int = DEFAULT_RAY_WORKERS, threads: int = 1,
                 retries: int = 1):
        from xling.deps import require

        require("ray", "--executor ray")  # a missing extra is one line now, before the run reads any data
        self.address = address
        self.workers = check_workers(workers)
        self.threads = max(1, int(threads))
        self.retries = max(0, int(retries))

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
        return f"{self.workers} Ray workers on {where}, {self.threads} torch thread(s) each"

    def _connect(self):
        """The ``ray`` module, initialised; and whether this call started it (then the run shuts it down)."""
        from xling.deps import require

        ray = require("ray", "--executor ray")
        if ray.is_initialized():
            return ray, False
        import logging

        kw = dict(logging_level=logging.WARNING, include_dashboard=False)
        try:
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=self.workers * self.threads, **kw)
        except ConnectionError as exc:
            raise XlingError(f"--ray-address {self.address}: cannot connect ({_first_line(exc)})") from None
        return ray, True

    def map(self, fn: Callable[[Any], Any], units: list, labels: list[str] | None = None) -> list:
        return self.run([Job(functools.partial(_returns, fn), list(units), labels)])[0]

    def run(self, jobs: list[Job], on_result: Callable[[int, int, Any], None] | None = None) -> list[list]:
        results: list[list] = [[None] * len(job.units) for job in jobs]
        remaining = sum(len(job.units) for job in jobs)
        if remaining == 0:
            return results
        ray, started = self._connect()
        from ray.exceptions import RayActorError, RayTaskError

        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        cls = _actor_class().options(num_cpus=self.threads, max_restarts=self.retries,
                                     max_task_retries=self.retries)
        queues = [deque(range(len(job.units))) for job in jobs]
        gate = [job.first_alone and len(job.units) > 1 for job in jobs]  # unit 0 not finished yet
        actors: dict[Any, int] = {}  # live actor -> its job
        idle: list = []
        inflight: dict[Any, tuple[Any, int, int]] = {}  # object ref -> (actor, job, unit)
        deliver = _Ordered(jobs, on_result)

        def handable(j: int) -> int:
            """How many of job j's units can be handed out now."""
            if not queues[j]:
                return 0
            if gate[j] and queues[j][0] != 0:
                return 0  # unit 0 is running: the others wait for it
            return 1 if gate[j] else len(queues[j])

        def submit(actor, j: int) -> None:
            u = queues[j].popleft()
            inflight[actor.call.remote(jobs[j].units[u])] = (actor, j, u)

        try:
            while remaining:
                # idle actors: the next unit of their job, or leave (the slot goes to another job)
                for actor in list(idle):
                    j = actors[actor]
                    if handable(j):
                        idle.remove(actor)
                        submit(actor, j)
                    elif not queues[j] or any(handable(k) for k in range(len(jobs)) if k != j):
                        idle.remove(actor)
                        del actors[actor]
                        ray.kill(actor)
                # free slots: a new actor for the job with the most units per actor still to hand out; with
                # none to hand out now, one for a job waiting on its first unit (it starts while that runs)
                while len(actors) < self.workers:
                    busy = {k: sum(1 for a in actors.values() if a == k) for k in range(len(jobs))}
                    want = [(handable(k) / (busy[k] + 1), -k) for k in range(len(jobs)) if handable(k) > busy[k]]
                    if not want:
                        want = [(len(queues[k]) / (busy[k] + 1), -k) for k in range(len(jobs))
                                if gate[k] and len(queues[k]) > busy[k] - 1]
                    if not want:
                        break
                    j = -max(want)[1]
                    actor = cls.remote(jobs[j].make, env, self.threads)
                    actors[actor] = j
                    if handable(j):
                        submit(actor, j)
                    else:
                        idle.append(actor)
                if not inflight:  # cannot happen: every job with units left has an actor or a slot
                    raise RuntimeError("RayExecutor: nothing in flight with units left")
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    actor, j, u = inflight.pop(ref)
                    label = jobs[j].label(u)
                    try:
                        value = ray.get(ref)
                    except RayActorError as exc:
                        raise XlingError(
                            f"{label}: its Ray worker died ({_first_line(exc)}; retried {self.retries} time(s)); "
                            f"the units finished before it are cached: rerun to resume") from None
                    except RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, XlingError):
                            raise XlingError(f"{label}: {cause}") from None
                        if cause is not None:
                            raise cause from exc
                        raise
                    results[j][u] = value
                    remaining -= 1
                    if u == 0:
                        gate[j] = False
                    idle.append(actor)
                    deliver(j, u, value)
        finally:
            for actor in actors:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            if started:
                ray.shutdown()
        return results


def make_executor(name: str = "local", *, address: str | None = None, workers: int = DEFAULT_RAY_WORKERS,
                  threads: int = 1, retries: int = 1):
    """The executor called ``name`` (``local`` or ``ray``), given the settings its class takes; a bad name is one
    line."""
    check_executor(name)
    settings = {"address": address, "workers": workers, "threads": threads, "retries": retries}
    takes = EXECUTORS.options(name)
    return EXECUTORS.get(name)(**{k: v for k, v in settings.items() if k in takes})


EXECUTORS.register(LocalExecutor.name, LocalExecutor)
EXECUTORS.register(RayExecutor.name, RayExecutor)


__all__ = ["EXECUTORS", "Job", "LocalExecutor", "RayExecutor", "check_executor",
           "make_executor"]
