"""The advisor: anti-patterns named with their evidence and a fix, and workers right-sized.

Each rule is a pure function of a :class:`RunSummary` (what a run held and used, as the
collectors and the store report it) and the :class:`Thresholds` (``packlab.telemetry.advisor``)
that returns :class:`Finding` records. The rules are the seed's five anti-patterns (idle
cluster, retry storm, memory hog, single giant job, unmonitored pipeline), what HPC
centres check (Princeton's jobstats and Job Defense Shield: too small for a cluster, low
CPU efficiency, idle GPUs) and the cross-layer one: SLURM worker jobs held while their
Dask workers idle, or pending while the queue is deep. :func:`right_size` reports, as
``seff`` does, CPU and memory efficiency per worker and the cores, memory, walltime and
profile its observed peaks call for.

Examples
--------
>>> w = WorkerUsage("w1", cores=4, memory=16 * GIB, held_seconds=3600, cpu_seconds=3600,
...                 memory_peak=2 * GIB)
>>> [f.name for f in findings(RunSummary(wall_seconds=3600, workers=(w,), tasks=100,
...                                      task_seconds=3600))]
['low-cpu-efficiency', 'memory-hog']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import checks
from ..plugins import Registry
from .records import record
from .sizing import RightSize, right_size
from .usage import FunctionUsage, RunSummary, SlurmJobUsage, Thresholds, WorkerUsage

GIB = 2**30
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Finding:
    """One thing to change: its ``name``, ``severity``, the ``evidence`` in numbers and a
    ``fix`` (a line to paste); ``message`` says it in words.

    Examples
    --------
    >>> Finding("idle-cluster", "warning", {"workers": 4}, "cluster.adapt(minimum=0, maximum=4)").severity
    'warning'
    """

    name: str
    severity: str
    evidence: dict[str, float]
    fix: str
    message: str = ""

    def __post_init__(self) -> None:
        checks.text(self.name, "name")
        checks.choice(self.severity, "severity", SEVERITIES)
        object.__setattr__(self, "evidence", checks.mapping_of(self.evidence, "evidence", checks.number))
        checks.text(self.fix, "fix")


# -- the rules ---------------------------------------------------------------------------
AdvisorRule = Callable[[RunSummary, Thresholds], list[Finding]]
RULES: Registry[AdvisorRule] = Registry("advisor rule", "packlab.advisor_rules")
"""The advisor's rules by name; :func:`findings` runs them all. Register more with :func:`rule`
(or, from a package installed beside packlab, an entry point in ``packlab.advisor_rules``)."""


def rule(fn: AdvisorRule) -> AdvisorRule:
    """Register ``fn`` in :data:`RULES` under its name (``_`` as ``-``)."""
    RULES.register(fn.__name__.replace("_", "-"), fn)
    return fn


@rule
def idle_cluster(s: RunSummary, th: Thresholds) -> list[Finding]:
    """Workers held and all idle for ``idle_after`` or longer: scale to zero."""
    if not s.workers or min(w.idle_seconds for w in s.workers) < th.idle_after:
        return []
    idle = min(w.idle_seconds for w in s.workers)
    return [Finding("idle-cluster", "warning", {"workers": len(s.workers), "idle_seconds": idle},
                    f"cluster.adapt(minimum=0, maximum={len(s.workers)})",
                    f"{len(s.workers)} workers held and idle for {idle:.0f} s: let the cluster scale "
                    "to zero.")]


@rule
def retry_storm(s: RunSummary, th: Thresholds) -> list[Finding]:
    """Retries above ``retry_rate`` per submission, or three or more without backoff."""
    rate = s.retries / s.submissions if s.submissions else 0.0
    fast = sum(1 for d in s.retry_delays if d < th.fast_retry)
    if rate <= th.retry_rate and fast < 3:
        return []
    return [Finding("retry-storm", "critical" if fast >= 3 else "warning",
                    {"retries": s.retries, "submissions": s.submissions, "retry_rate": round(rate, 6),
                     "retries_without_backoff": fast},
                    'packlab.Retry(attempts=3, backoff="exponential", base="1s", cap="60s", jitter=True)',
                    f"{s.retries} retries for {s.submissions} jobs, {fast} of them within "
                    f"{th.fast_retry:g} s of the failure: back off, and stop retrying what always fails.")]


def _worst(ws: list[WorkerUsage], key: Callable[[WorkerUsage], float]) -> WorkerUsage:
    return max(ws, key=key)


@rule
def memory_hog(s: RunSummary, th: Thresholds) -> list[Finding]:
    """Peak memory under ``memory_low`` of the limit (a smaller profile), or spilling with
    a peak over ``memory_high`` (a bigger one)."""
    out = []
    low = [w for w in s.workers if w.memory_peak and w.memory_peak < th.memory_low * w.memory]
    if low:
        w = _worst(low, lambda w: w.memory_peak)  # the largest peak: the size that must still fit
        size = right_size(w, th)
        out.append(Finding("memory-hog", "warning", {
            "workers": len(low), "memory_peak_gib": round(w.memory_peak / GIB, 3),
            "memory_gib": round(w.memory / GIB, 3), "memory_fraction": round(w.memory_peak / w.memory, 6)},
            size.launch, f"{len(low)} workers peaked at {w.memory_peak / GIB:.2f} GiB or less of "
            f"{w.memory / GIB:.2f} GiB asked: ask for less."))
    high = [w for w in s.workers if w.spilled_bytes and w.memory_peak >= th.memory_high * w.memory]
    if high:
        w = _worst(high, lambda w: w.spilled_bytes)
        size = right_size(w, th)
        out.append(Finding("memory-spill", "warning", {
            "workers": len(high), "spilled_gib": round(w.spilled_bytes / GIB, 3),
            "memory_peak_gib": round(w.memory_peak / GIB, 3), "memory_gib": round(w.memory / GIB, 3)},
            size.launch, f"{len(high)} workers spilled to disk near their memory limit: ask for more."))
    return out


@rule
def single_giant_job(s: RunSummary, th: Thresholds) -> list[Finding]:
    """One task holding ``giant_share`` of all task time, or fewer tasks than half the
    threads (chunks too big to spread)."""
    share = s.longest_task_seconds / s.task_seconds if s.task_seconds else 0.0
    giant = s.tasks >= 2 and share >= th.giant_share
    few = s.threads >= 2 and 1 <= s.tasks < s.threads / 2 and s.task_seconds >= th.too_small
    if not (giant or few):
        return []
    what = f"task {s.longest_task!r} held {share:.0%} of all task time" if giant else (
        f"{s.tasks} tasks for {s.threads} threads")
    return [Finding("single-giant-job", "warning", {
        "longest_task_seconds": s.longest_task_seconds, "task_seconds": s.task_seconds,
        "share": round(share, 6), "tasks": s.tasks, "threads": s.threads},
        'x = x.rechunk("128MiB")  # or split the work into more, smaller jobs',
        f"{what}: split it so that the workers share it.")]


@rule
def unmonitored_pipeline(s: RunSummary, th: Thresholds) -> list[Finding]:
    """A queue or pipeline running with no alert sink."""
    if not s.queue_running or s.alert_sinks:
        return []
    return [Finding("unmonitored-pipeline", "warning", {"alert_sinks": 0, "queue_depth": s.queue_depth},
                    "from packlab.telemetry.sinks import LogSink; monitor.add_sink(LogSink())",
                    "A queue is running and no alert sink listens: failures will be noticed by users first.")]


@rule
def too_small_for_a_cluster(s: RunSummary, th: Thresholds) -> list[Finding]:
    """Less than ``too_small`` of work in all on more than one worker: run it locally."""
    if len(s.workers) < 2 or not s.tasks or s.task_seconds >= th.too_small:
        return []
    return [Finding("too-small-for-a-cluster", "info", {
        "task_seconds": s.task_seconds, "workers": len(s.workers), "wall_seconds": s.wall_seconds},
        'dask.config.set(scheduler="threads")  # run it in this process, no cluster',
        f"{s.task_seconds:.1f} s of work in all on {len(s.workers)} workers: a cluster costs more "
        "than it saves.")]


#: A function counts for low CPU efficiency once Dask metered this share of all seconds (and 1 s).
FUNCTION_SHARE = 0.05


@rule
def low_cpu_efficiency(s: RunSummary, th: Thresholds) -> list[Finding]:
    """CPU time over cores x time held under ``cpu_efficiency``: fewer cores; and the
    functions whose tasks spent under ``cpu_efficiency`` of their time on a CPU by Dask's
    own fine performance metrics (waiting: I/O, sleep, locks)."""
    eff = {w.name: w.cpu_seconds / (w.cores * w.held_seconds) for w in s.workers if w.held_seconds}
    low = [w for w in s.workers if w.name in eff and eff[w.name] < th.cpu_efficiency]
    total = math.fsum(f.seconds for f in s.functions)
    waiting = sorted((f for f in s.functions if f.seconds >= max(1.0, FUNCTION_SHARE * total)
                      and f.cpu_efficiency < th.cpu_efficiency), key=lambda f: f.cpu_efficiency)
    if not low and not waiting:
        return []
    evidence: dict[str, float] = {}
    said = []
    if low:
        w = _worst(low, lambda w: eff[w.name])  # the busiest of them: what must still fit
        mean = math.fsum(eff[x.name] for x in low) / len(low)
        evidence.update({"workers": len(low), "cpu_efficiency": round(mean, 6), "cores": w.cores})
        said.append(f"{len(low)} workers used {mean:.0%} of their cores on average "
                    f"(under {th.cpu_efficiency:.0%}).")
    if waiting:
        f = waiting[0]
        secs, cpu = math.fsum(x.seconds for x in waiting), math.fsum(x.cpu_seconds for x in waiting)
        evidence.update({"functions": len(waiting), "function_cpu_efficiency": round(cpu / secs, 6),
                         "function_seconds": round(secs, 6)})
        said.append(f"{f.name} spent {f.cpu_efficiency:.0%} of its {f.seconds:.1f} s on a CPU (Dask's fine "
                    "performance metrics): it waits on I/O, sleep or locks; fewer cores per worker, or "
                    "asynchronous I/O.")
    fix = right_size(_worst(low or s.workers, lambda w: eff.get(w.name, 0.0)), th).launch if (
        low or s.workers) else "packlab.launch(cores=1)"
    return [Finding("low-cpu-efficiency", "warning", evidence, fix, " ".join(said))]


@rule
def idle_gpus(s: RunSummary, th: Thresholds) -> list[Finding]:
    """GPUs in use under ``gpu_utilisation`` on average: a profile without them."""
    low = [w for w in s.workers if w.gpus and w.gpu_utilisation is not None
           and w.gpu_utilisation < th.gpu_utilisation]
    if not low:
        return []
    mean = math.fsum(w.gpu_utilisation for w in low) / len(low)  # type: ignore[misc]
    return [Finding("idle-gpus", "warning", {"workers": len(low), "gpus": sum(w.gpus for w in low),
                                             "gpu_utilisation": round(mean, 6)},
                    right_size(_worst(low, lambda w: w.memory_peak), th).launch,
                    f"{len(low)} workers used {mean:.0%} of their GPUs: run without them.")]


@rule
def slurm_held_idle(s: RunSummary, th: Thresholds) -> list[Finding]:
    """SLURM worker jobs running whose Dask workers have all idled ``idle_after``."""
    idle = {w.name for w in s.workers if w.idle_seconds >= th.idle_after}
    held = [j for j in s.slurm_jobs if j.state == "RUNNING" and j.workers and set(j.workers) <= idle]
    if not held:
        return []
    busy = len([j for j in s.slurm_jobs if j.state == "RUNNING"]) - len(held)
    return [Finding("slurm-held-idle", "warning", {
        "jobs": len(held), "seconds": max(j.seconds for j in held), "running_jobs": len(held) + busy},
        f"cluster.adapt(minimum={busy}, maximum={busy + len(held)})",
        f"{len(held)} SLURM jobs hold nodes for Dask workers that have been idle "
        f"{th.idle_after:g} s or more: release them.")]


@rule
def slurm_pending_deep_queue(s: RunSummary, th: Thresholds) -> list[Finding]:
    """SLURM worker jobs pending ``pending_after`` while jobs wait in the queue beyond
    ``deep_queue`` per worker thread."""
    pending = [j for j in s.slurm_jobs if j.state == "PENDING" and j.seconds >= th.pending_after]
    if not pending or s.queue_depth < th.deep_queue * max(1, s.threads):
        return []
    return [Finding("slurm-pending-deep-queue", "warning", {
        "pending_jobs": len(pending), "pending_seconds": max(j.seconds for j in pending),
        "queue_depth": s.queue_depth, "threads": s.threads},
        'packlab.launch(backend="slurm", spot=True, walltime="00:30:00")  # short jobs backfill sooner',
        f"{len(pending)} SLURM worker jobs pending for {max(j.seconds for j in pending):.0f} s while "
        f"{s.queue_depth} jobs wait: ask for shorter or preemptible workers.")]


_ORDER = {"critical": 0, "warning": 1, "info": 2}


def findings(summary: RunSummary | Mapping[str, Any], thresholds: Thresholds | None = None) -> list[Finding]:
    """Every rule of :data:`RULES` over ``summary``: the findings, most severe first.

    Examples
    --------
    >>> s = RunSummary(wall_seconds=60, queue_running=True)
    >>> [f.name for f in findings(s)]
    ['unmonitored-pipeline']
    """
    s = record(summary, RunSummary, "summary")
    th = Thresholds.of(thresholds)
    out = [f for fn in RULES.values() for f in fn(s, th)]
    return sorted(out, key=lambda f: (_ORDER[f.severity], f.name))


__all__ = ["RULES", "Finding", "FunctionUsage", "RightSize", "RunSummary", "SlurmJobUsage", "Thresholds",
           "WorkerUsage", "findings", "right_size", "rule"]
