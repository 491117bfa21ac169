"""``PipelineRun``: what one ``pipe.run(...)`` did, stage by stage, and its results."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import PacklabError
from .checkpoints import CheckpointStore
from .worker import load_output

#: A stage's states. ``cached``: its valid checkpoint was reused, nothing ran.
PENDING, RUNNING, DONE, CACHED, FAILED, SKIPPED = "pending", "running", "done", "cached", "failed", "skipped"
STATES = (PENDING, RUNNING, DONE, CACHED, FAILED, SKIPPED)
FINISHED = frozenset({DONE, CACHED})


@dataclass
class StageResult:
    """One stage of a run.

    Attributes
    ----------
    status : str
        ``done`` (computed), ``cached`` (its checkpoint reused), ``failed``, ``skipped``
        (an upstream stage failed), ``pending`` or ``running``.
    key : str
        Its cache key.
    seconds : float
        Wall time from its first job's submission to its last one's end (0 when cached).
    compute_seconds : float
        Time its function ran, summed over its units (what a worker measured).
    attempts : int
        Attempts of its jobs, summed (0 when cached).
    units, units_cached : int
        Elements of a fan-out stage (1 otherwise), and how many were reused.
    resumed : int
        Units that restarted from an in-stage ``ctx.save`` state.
    error : str or None
        Why it failed; ``skipped_because`` names the failed upstream stage.
    invalid : list of str
        Checkpoints of this stage found corrupt, partial or foreign (and recomputed).
    jobs : list of str
        Ids of its queue jobs.
    """

    name: str
    key: str
    status: str = PENDING
    fan_out: bool = False
    started: float | None = None
    finished: float | None = None
    compute_seconds: float = 0.0
    attempts: int = 0
    units: int = 1
    units_cached: int = 0
    resumed: int = 0
    error: str | None = None
    skipped_because: str | None = None
    invalid: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    _run: PipelineRun | None = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return self.finished - self.started

    @property
    def result(self) -> Any:
        """The stage's output (read from its checkpoint; a fan-out stage's is a list)."""
        return self._run.result(self.name)


class PipelineRun:
    """The outcome of ``Pipeline.run``: ``run["stage"]`` is a :class:`StageResult`,
    ``run.results`` maps every stage that has an output to it.

    Examples
    --------
    >>> run = PipelineRun("p", None, {"a": StageResult("a", "k", status="failed", error="boom")})
    >>> run.failed, run.ok, run["a"].status
    (['a'], False, 'failed')
    """

    def __init__(self, name: str, store: CheckpointStore | None, stages: dict[str, StageResult]):
        self.name = name
        self._store = store
        self.stages = stages
        self._cache: dict[str, Any] = {}
        for s in stages.values():
            s._run = self

    def __getitem__(self, name: str) -> StageResult:
        if name not in self.stages:
            raise PacklabError(f"run of pipeline {self.name!r} has no stage {name!r} (stages: "
                               f"{list(self.stages)}).", field="stage", value=name)
        return self.stages[name]

    def __iter__(self) -> Iterator[StageResult]:
        return iter(self.stages.values())

    def __len__(self) -> int:
        return len(self.stages)

    def _named(self, *states: str) -> list[str]:
        return [n for n, s in self.stages.items() if s.status in states]

    @property
    def failed(self) -> list[str]:
        return self._named(FAILED)

    @property
    def skipped(self) -> list[str]:
        return self._named(SKIPPED)

    @property
    def computed(self) -> list[str]:
        return self._named(DONE)

    @property
    def cached(self) -> list[str]:
        return self._named(CACHED)

    @property
    def ok(self) -> bool:
        """Every stage finished (computed or reused)."""
        return all(s.status in FINISHED for s in self.stages.values())

    @property
    def invalid(self) -> list[tuple[str, str]]:
        """(stage, reason) of every checkpoint found unusable and recomputed."""
        return [(s.name, r) for s in self.stages.values() for r in s.invalid]

    def result(self, name: str) -> Any:
        s = self[name]
        if s.status not in FINISHED:
            raise PacklabError(f"stage {name!r} of pipeline {self.name!r} is {s.status}"
                               f"{': ' + s.error if s.error else ''}; it has no result.",
                               field="stage", value=name)
        if name not in self._cache:
            self._cache[name] = load_output(self._store, name, s.key, s.units if s.fan_out else None)
        return self._cache[name]

    @property
    def results(self) -> dict[str, Any]:
        """Every computed or reused stage's output (failed and skipped stages are absent)."""
        return {n: self.result(n) for n, s in self.stages.items() if s.status in FINISHED}

    def rework_saved(self) -> float:
        """Seconds of stage work reused from checkpoints in this run: cached stages' and
        units' recorded compute time (in-stage resumes are counted in ``resumed``)."""
        return sum(s.compute_seconds for s in self.stages.values() if s.status == CACHED)

    def report(self) -> str:
        """A table of the stages: status, time, attempts, units, and every problem."""
        lines = [f"pipeline {self.name}: {len(self.computed)} computed, {len(self.cached)} reused, "
                 f"{len(self.failed)} failed, {len(self.skipped)} skipped"]
        for s in self.stages.values():
            units = f" units={s.units} (reused {s.units_cached})" if s.fan_out else ""
            resumed = f" resumed={s.resumed}" if s.resumed else ""
            lines.append(f"  {s.name:<20} {s.status:<8} {s.seconds:8.3f} s  "
                         f"attempts={s.attempts}{units}{resumed}")
            if s.error:
                last = s.error.strip().splitlines()[-1] if s.error.strip() else s.error
                lines.append(f"      error: {last}")
            if s.skipped_because:
                lines.append(f"      skipped: {s.skipped_because} failed")
            for r in s.invalid:
                lines.append(f"      checkpoint recomputed: {r}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<PipelineRun {self.name} computed={len(self.computed)} cached={len(self.cached)} "
                f"failed={self.failed} skipped={self.skipped}>")
