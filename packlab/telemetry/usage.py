"""What the advisor reads: a run's workers, SLURM jobs and queue counts, and its thresholds.

Plain records that the collectors and the store fill (a dict of the fields is accepted
wherever a record is); every field is checked on construction, so a rule never sees a
negative time or a memory size that is a string.

Examples
--------
>>> s = RunSummary(wall_seconds=60, workers=[{"name": "w1", "cores": 2, "memory": "4GiB",
...                                           "held_seconds": 60}])
>>> s.threads, s.workers[0].memory
(2, 4294967296)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import checks
from ..errors import bad_value
from .records import records


@dataclass(frozen=True)
class WorkerUsage:
    """What one worker was given and used over ``held_seconds`` (sizes in bytes).

    ``idle_seconds`` is the stretch, up to now, in which it ran no task;
    ``gpu_utilisation`` the mean fraction of its GPUs in use (``None``: not measured).
    """

    name: str
    cores: int
    memory: int
    held_seconds: float
    cpu_seconds: float = 0.0
    memory_peak: int = 0
    spilled_bytes: int = 0
    gpus: int = 0
    gpu_utilisation: float | None = None
    idle_seconds: float = 0.0

    def __post_init__(self) -> None:
        checks.text(self.name, "name")
        _set(self, "cores", checks.integer(self.cores, "cores", minimum=1))
        _set(self, "memory", checks.memory(self.memory, "memory"))
        for f in ("held_seconds", "cpu_seconds", "idle_seconds"):
            _set(self, f, checks.number(getattr(self, f), f, minimum=0))
        for f in ("memory_peak", "spilled_bytes"):  # bytes, often a float from a history
            _set(self, f, int(checks.number(getattr(self, f), f, minimum=0)))
        _set(self, "gpus", checks.integer(self.gpus, "gpus", minimum=0))
        if self.gpu_utilisation is not None:
            _set(self, "gpu_utilisation", checks.number(self.gpu_utilisation, "gpu_utilisation",
                                                        minimum=0, maximum=1))


@dataclass(frozen=True)
class SlurmJobUsage:
    """One SLURM job that runs (or will run) Dask workers: its ``state`` and how long it
    has been in it, and the names of its workers.

    ``state`` is ``"PENDING"`` or ``"RUNNING"`` (SLURM's CONFIGURING counts as running; a
    job in any other state holds nothing and is left out).
    """

    job_id: str
    state: str
    seconds: float
    workers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks.text(self.job_id, "job_id")
        checks.choice(self.state, "state", ("PENDING", "RUNNING"))
        _set(self, "seconds", checks.number(self.seconds, "seconds", minimum=0))
        if isinstance(self.workers, str) or not isinstance(self.workers, (list, tuple)):
            raise bad_value("workers", self.workers, "a list of worker names")
        _set(self, "workers", tuple(checks.text(w, "workers[]") for w in self.workers))


@dataclass(frozen=True)
class FunctionUsage:
    """Dask's fine performance metrics of one function's tasks (a queue job's function, or
    a task prefix): ``seconds`` metered while they ran, ``cpu_seconds`` of them on a CPU."""

    name: str
    seconds: float
    cpu_seconds: float

    def __post_init__(self) -> None:
        checks.text(self.name, "name")
        for f in ("seconds", "cpu_seconds"):
            _set(self, f, checks.number(getattr(self, f), f, minimum=0))

    @property
    def cpu_efficiency(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds else 1.0


@dataclass(frozen=True)
class RunSummary:
    """What the advisor looks at: one run (a cluster's life so far, or a stored one).

    ``task_seconds`` is the busy thread-seconds of all tasks; ``submissions`` and
    ``retries`` count queue jobs and their re-runs, ``retry_delays`` the seconds from a
    failure to its retry; ``queue_running`` is true while a queue or pipeline runs, with
    ``alert_sinks`` sinks attached and ``queue_depth`` jobs waiting; ``functions`` are
    Dask's own figures per function (:class:`FunctionUsage`).
    """

    wall_seconds: float
    workers: tuple[WorkerUsage, ...] = ()
    tasks: int = 0
    task_seconds: float = 0.0
    longest_task: str = ""
    longest_task_seconds: float = 0.0
    submissions: int = 0
    retries: int = 0
    retry_delays: tuple[float, ...] = ()
    queue_running: bool = False
    alert_sinks: int = 0
    queue_depth: int = 0
    slurm_jobs: tuple[SlurmJobUsage, ...] = ()
    functions: tuple[FunctionUsage, ...] = ()

    def __post_init__(self) -> None:
        for f in ("wall_seconds", "task_seconds", "longest_task_seconds"):
            _set(self, f, checks.number(getattr(self, f), f, minimum=0))
        for f in ("tasks", "submissions", "retries", "alert_sinks", "queue_depth"):
            _set(self, f, checks.integer(getattr(self, f), f, minimum=0))
        checks.boolean(self.queue_running, "queue_running")
        if not isinstance(self.longest_task, str):
            raise bad_value("longest_task", self.longest_task, "a task name (a string)")
        _set(self, "workers", tuple(records(self.workers, WorkerUsage, "workers")))
        _set(self, "slurm_jobs", tuple(records(self.slurm_jobs, SlurmJobUsage, "slurm_jobs")))
        _set(self, "functions", tuple(records(self.functions, FunctionUsage, "functions")))
        if isinstance(self.retry_delays, (str, bytes)) or not isinstance(self.retry_delays, (list, tuple)):
            raise bad_value("retry_delays", self.retry_delays, "a list of seconds")
        _set(self, "retry_delays", tuple(checks.number(d, f"retry_delays[{i}]", minimum=0)
                                         for i, d in enumerate(self.retry_delays)))

    @property
    def threads(self) -> int:
        """Worker threads held (one per core)."""
        return sum(w.cores for w in self.workers)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


_KINDS: dict[str, str] = {
    "idle_after": "duration", "retry_rate": "positive", "fast_retry": "duration", "memory_low": "fraction",
    "memory_high": "fraction", "giant_share": "fraction", "too_small": "duration",
    "cpu_efficiency": "fraction", "gpu_utilisation": "fraction", "pending_after": "duration",
    "deep_queue": "positive", "headroom": "number",
}


@dataclass(frozen=True)
class Thresholds:
    """The advisor's thresholds; :meth:`from_config` reads ``packlab.telemetry.advisor``."""

    idle_after: float
    retry_rate: float
    fast_retry: float
    memory_low: float
    memory_high: float
    giant_share: float
    too_small: float
    cpu_efficiency: float
    gpu_utilisation: float
    pending_after: float
    deep_queue: float
    headroom: float

    def __post_init__(self) -> None:
        for name, kind in _KINDS.items():
            v = getattr(self, name)
            if kind == "duration":
                x = checks.duration(v, name)
            elif kind == "positive":
                x = checks.number(v, name, above=0)
            elif kind == "number":
                x = checks.number(v, name, minimum=0)
            else:
                x = checks.number(v, name, minimum=0, maximum=1, fix="A fraction: for 50 % write 0.5.")
            _set(self, name, x)

    @classmethod
    def of(cls, value: Thresholds | None) -> Thresholds:
        """``value`` itself, or the settings for ``None``; anything else is refused."""
        if value is None:
            return cls.from_config()
        if not isinstance(value, cls):
            raise bad_value("thresholds", value, "a Thresholds (or None for the settings)",
                            "E.g. Thresholds.from_config(cpu_efficiency=0.5).")
        return value

    @classmethod
    def from_config(cls, **overrides: Any) -> Thresholds:
        """The settings, with ``overrides`` (by field name) replacing some.

        Examples
        --------
        >>> Thresholds.from_config(cpu_efficiency=0.5).cpu_efficiency, Thresholds.from_config().idle_after
        (0.5, 120.0)
        """
        from .. import config

        names = {f.name for f in dataclasses.fields(cls)}
        for key in overrides:
            if key not in names:
                checks.choice(key, "threshold", names)
        # key by key: dask matches ``cpu_efficiency`` (a DASK_* variable) and ``cpu-efficiency`` alike
        get = config.get
        return cls(**{n: overrides[n] if n in overrides else get("telemetry.advisor." + n.replace("_", "-"))
                      for n in names})
