"""The driver of one pipeline run: which stage runs when, through a :class:`packlab.JobQueue`.

A stage starts once every stage it waits for has an output. If its checkpoint is valid
it is reused (``cached``) and nothing runs; otherwise each unit (the stage, or each
element of a fan-out) becomes one queue job whose idempotency key is the unit's cache
key, so a driver restarted after a crash takes over the job it had submitted instead of
submitting a twin. A stage that fails for good (its job ``failed`` or ``dead`` after the
queue's retries) marks every stage after it ``skipped``; the other branches go on.
"""

from __future__ import annotations

import dataclasses
import queue as _queue
import time
import uuid
import warnings
from collections import deque
from typing import Any

from ..errors import PacklabError
from ..queue.states import ENDED_KINDS
from .checkpoints import CheckpointRefused, CheckpointStore, OutputNotSerializable
from .dag import Graph, StageSpec
from .keys import code_token, stage_key, unit_key
from .run import CACHED, DONE, FAILED, FINISHED, PENDING, RUNNING, SKIPPED, PipelineRun, StageResult
from .worker import StageCall, load_output

_FINAL_KINDS = ENDED_KINDS
_POLL = 0.5  # seconds: every job in flight is looked at this often, events or not


class PipelineWarning(UserWarning):
    """A checkpoint was found corrupt, partial or foreign and is being recomputed."""


def stage_keys(graph: Graph) -> dict[str, str]:
    """Every stage's cache key, upstream first (no data is read: keys of keys)."""
    keys: dict[str, str] = {}
    for name in graph.order:
        s = graph.stages[name]
        keys[name] = stage_key(name, code_token(s.fn), s.params, {u: keys[u] for u in s.upstream}, s.map_over)
    return keys


def unfinished_units(store: str, pipeline: str) -> frozenset[str]:
    """The queue keys of ``pipeline``'s jobs left unfinished in the queue store ``store``
    (none if there is no store yet): a driver died while they ran, perhaps after their
    output was checkpointed."""
    from ..queue.jobstore import Store
    from ..store import identify, store_path

    if identify(store, store_path(store)) == "new":  # none, or made empty by a driver killed at once
        return frozenset()
    s = Store(store, mode="ro")
    try:
        return frozenset(s.unfinished_keys(f"pipeline:{pipeline}:"))
    finally:
        s.close()


def check_picklable(graph: Graph, skip: Any = None) -> None:
    """Every stage's function and constants must travel to workers: refuse, naming the
    stage and what cannot be pickled, before anything runs (``skip(name)``: a stage that
    will not run, its checkpoint being reused)."""
    from ..queue import payload

    for name in graph.order:
        s = graph.stages[name]
        if skip is not None and skip(name):
            continue
        try:
            payload.dumps(s.fn, (), s.params)
        except PacklabError as e:
            raise PacklabError(f"stage {name!r}: {e}", field="stage", value=name) from None


def _stage_retry(spec: StageSpec, default: Any) -> Any:
    """The stage's Retry, never retrying what is permanent: an output no format can write,
    a checkpoint directory reached through a link."""
    from ..queue.retry import Retry, as_retry

    r = as_retry(spec.retry if spec.retry is not None else default, None) or Retry.from_config()
    missing = tuple(e for e in (OutputNotSerializable, CheckpointRefused) if e not in r.give_up_on)
    return dataclasses.replace(r, give_up_on=(*r.give_up_on, *missing)) if missing else r


class Driver:
    """Runs a validated graph once. Not thread-safe; one per ``Pipeline.run`` call.

    ``open_queue()`` is called at the first stage that must run, not before: a resumed run
    whose every stage is reused touches no queue and no cluster.
    """

    def __init__(self, name: str, graph: Graph, open_queue: Any, store: CheckpointStore, *, resume: bool,
                 owner: str, retry: Any, pending: frozenset[str] = frozenset()):
        self.name, self.graph, self.store = name, graph, store
        #: queue keys of this pipeline's jobs an earlier driver left unfinished in the store
        self.pending = pending
        self._open_queue, self._q, self._unsubscribe = open_queue, None, None
        self.resume, self.owner, self.retry = resume, owner, retry
        self.keys = stage_keys(graph)
        self.stages = {n: StageResult(n, self.keys[n], fan_out=graph.stages[n].map_over is not None)
                       for n in graph.order}
        self.events: _queue.SimpleQueue = _queue.SimpleQueue()
        self.inflight: dict[str, tuple[str, Any]] = {}  # job id -> (stage, job)
        self.left: dict[str, int] = {}  # units of a running stage not final yet
        self.unit_errors: dict[str, list[str]] = {}
        self._reasons: dict[tuple[str, str], str | None] = {}  # each checkpoint checked once a run

    # -- the loop --------------------------------------------------------------------------
    @property
    def q(self) -> Any:
        if self._q is None:
            q = self._open_queue()
            self._unsubscribe = q.subscribe(lambda e: self.events.put(e.job_id), kinds=list(_FINAL_KINDS))
            self._q = q
        return self._q

    def run(self) -> PipelineRun:
        try:
            self._loop()
        finally:
            if self._unsubscribe is not None:
                self._unsubscribe()
        return self.partial()

    def partial(self) -> PipelineRun:
        """The run as it stands (stages still ``running`` or ``pending`` if it was stopped)."""
        return PipelineRun(self.name, self.store, self.stages)

    def _loop(self) -> None:
        waiting = {n: len(self.graph.stages[n].upstream) for n in self.graph.order}
        last_poll = time.monotonic()
        ready = deque(n for n in self.graph.order if waiting[n] == 0)
        while True:
            while ready:
                name = ready.popleft()
                self._start(name)
                ready += self._after(name, waiting)
            if not self.inflight:
                return
            try:
                jid = self.events.get(timeout=_POLL)
            except _queue.Empty:
                jid = None
            done = [jid] if jid in self.inflight and self.inflight[jid][1].done() else []
            now = time.monotonic()
            if jid is None or now - last_poll > _POLL:  # an event missed (e.g. before its job was ours)
                last_poll = now
                self.q.check()  # a queue that stopped (its store full, its lease lost) raises why
                done = [j for j, (_, job) in self.inflight.items() if job.done()]
            for jid in done:
                stage, job = self.inflight.pop(jid)
                self._unit_finished(stage, job)
                if self.stages[stage].status != RUNNING:
                    ready += self._after(stage, waiting)

    def _after(self, name: str, waiting: dict[str, int]) -> list[str]:
        """Stages that became ready (or skippable) because ``name`` ended; ``[]`` while it runs."""
        s = self.stages[name]
        if s.status in (PENDING, RUNNING):
            return []
        if s.status not in FINISHED:
            for d in self.graph.descendants(name):
                if self.stages[d].status == PENDING:
                    self.stages[d].status = SKIPPED
                    self.stages[d].skipped_because = s.skipped_because or name
        out = []
        for d in self.graph.downstream[name]:
            waiting[d] -= 1
            if waiting[d] == 0 and self.stages[d].status == PENDING:
                out.append(d)
        return out

    # -- starting a stage ------------------------------------------------------------------
    def _reason(self, name: str, key: str) -> str | None:
        if (name, key) not in self._reasons:
            self._reasons[name, key] = self.store.check(name, key)
        return self._reasons[name, key]

    def will_reuse(self, name: str) -> bool:
        """Whether ``name``'s checkpoint is there and valid, so it will not run (a fan-out
        stage: not known before its input is, so False)."""
        spec = self.graph.stages[name]
        return self.resume and spec.map_over is None and self._reason(name, self.keys[name]) is None and \
            self._qkey(name, self.keys[name]) not in self.pending

    def _qkey(self, stage: str, unit: str) -> str:
        """The idempotency key of a unit's queue job."""
        return f"pipeline:{self.name}:{stage}:{unit}"

    def _reusable(self, name: str, unit: str, expected: bool = False) -> bool:
        """A valid checkpoint, and no job of the unit left unfinished by a driver that died
        (that job is run, and completes on the checkpoint: see StageCall's ``reuse``)."""
        return self._check(name, unit, expected) and self._qkey(name, unit) not in self.pending

    def _check(self, name: str, key: str, expected: bool = False) -> bool:
        """Whether a valid checkpoint is there, reporting an invalid one (and a missing one
        that was ``expected``: an element of a fan-out whose index was written)."""
        reason = self._reason(name, key)
        if reason is None:
            return True
        if reason != "missing" or expected:
            self.stages[name].invalid.append(f"{key}: {reason}")
            warnings.warn(f"pipeline {self.name!r}: the checkpoint of stage {name!r} ({key}) is not usable "
                          f"({reason}); recomputing it.", PipelineWarning, stacklevel=4)
        return False

    def _start(self, name: str) -> None:
        spec, s = self.graph.stages[name], self.stages[name]
        s.started = time.time()
        if spec.map_over is None:
            if self.resume and self._reusable(name, s.key):
                self._cached(s, s.key)
                return
            self._submit(spec, s, None)
        else:
            try:
                elements = self._elements(spec)
            except Exception as e:
                self._fail(s, str(e))
                return
            s.units = len(elements)
            valid = [False] * s.units
            if self.resume:
                indexed = self._check(name, s.key) and \
                    self.store.manifest(name, s.key).get("meta", {}).get("units") == s.units
                valid = [self._reusable(name, unit_key(s.key, i), expected=indexed) for i in range(s.units)]
                if indexed and all(valid):
                    self._cached(s, s.key)
                    s.units_cached = s.units
                    return
            for i, value in enumerate(elements):
                if valid[i]:
                    s.units_cached += 1
                    s.compute_seconds += self._recorded_seconds(name, unit_key(s.key, i))
                    continue
                self._submit(spec, s, (spec.map_over, i, value))
        if self.left.get(name, 0) == 0:
            self._stage_done(s)  # nothing to run (every unit reused, or no elements)
        else:
            s.status = RUNNING

    def _elements(self, spec: StageSpec) -> list:
        if spec.map_over in spec.params:
            return list(spec.params[spec.map_over])
        up = self.stages[spec.map_over]
        value = load_output(self.store, up.name, up.key, up.units if up.fan_out else None)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            t = type(value)
            raise PacklabError(f"stage {spec.name!r}: map_over={spec.map_over!r} received a "
                               f"{t.__module__}.{t.__qualname__} from stage {up.name!r}, which is not "
                               "iterable: the upstream stage must return a list (or tuple...) to fan "
                               "out over.",
                               field="map_over", value=spec.map_over)
        return list(value)

    def _recorded_seconds(self, name: str, key: str) -> float:
        try:
            return float(self.store.manifest(name, key).get("meta", {}).get("seconds", 0.0))
        except (OSError, ValueError, TypeError):
            return 0.0

    def _cached(self, s: StageResult, key: str) -> None:
        s.status = CACHED
        s.compute_seconds = self._recorded_seconds(s.name, key)
        if s.fan_out:
            s.compute_seconds = sum(self._recorded_seconds(s.name, unit_key(key, i)) for i in range(s.units))
        s.finished = s.started

    def _submit(self, spec: StageSpec, s: StageResult, element: tuple | None) -> None:
        inputs = {}
        for p in spec.inputs:
            up = self.stages[p]
            inputs[p] = (p, up.key, up.units if up.fan_out else None)
        call = StageCall(self.name, spec.name, spec.fn, self.store.root, s.key, inputs, spec.params,
                         spec.takes_ctx, element, reuse=self.resume)
        opts = dict(priority=spec.priority, owner=self.owner, retry=_stage_retry(spec, self.retry),
                    timeout=spec.timeout, resources=spec.resources,
                    tags={"pipeline": self.name, "stage": spec.name})  # how telemetry groups its jobs
        qkey = self._qkey(spec.name, call.unit)
        t0 = time.time()
        job = self.q.submit(call, key=qkey, **opts)
        if job.done() and job.submitted < t0:  # an earlier run's job of this key: its output is not
            # usable (else the stage would have been reused), so it runs anew under a new key
            job = self.q.submit(call, key=f"{qkey}:{uuid.uuid4().hex[:8]}", **opts)
        self.inflight[job.id] = (spec.name, job)
        self.left[spec.name] = self.left.get(spec.name, 0) + 1
        s.jobs.append(job.id)

    # -- ending ----------------------------------------------------------------------------
    def _unit_finished(self, name: str, job: Any) -> None:
        s = self.stages[name]
        s.attempts += job.attempts
        if job.status == "done":
            receipt = job.result()
            s.compute_seconds += receipt.get("seconds", 0.0)
            s.resumed += bool(receipt.get("resumed"))
            s.units_cached += bool(receipt.get("reused")) and s.fan_out
        else:
            self.unit_errors.setdefault(name, []).append(f"job {job.id} {job.status}: {job.error}")
        self.left[name] -= 1
        if self.left[name] == 0:
            errors = self.unit_errors.pop(name, None)
            if errors:
                n = f"{len(errors)} of {s.units} units failed; " if s.fan_out else ""
                self._fail(s, n + errors[0])
            else:
                self._stage_done(s)

    def _stage_done(self, s: StageResult) -> None:
        if s.fan_out:  # the stage's own checkpoint: its element count, written once all are in
            self.store.write(s.name, s.key, None, {"units": s.units, "seconds": s.compute_seconds})
        s.status = DONE
        s.finished = time.time()

    def _fail(self, s: StageResult, error: str) -> None:
        s.status = FAILED
        s.error = error
        s.finished = time.time()
