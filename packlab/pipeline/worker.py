"""What a queue job runs for one stage (or one fan-out element), on a worker.

The job carries no upstream data, only where it is: the worker reads each input from
its verified checkpoint, calls the stage, writes the output checkpoint atomically and
returns a small receipt. So a gigabyte result never passes through the driver or the
queue's store, and the job's payload stays a few kilobytes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .checkpoints import CheckpointStore
from .context import Context
from .keys import unit_key

JOB_PREFIX = "packlab.pipeline."


def stage_of_job(fn_name: str) -> tuple[str, str] | None:
    """``(pipeline, stage)`` of a queue job run for a pipeline stage, from the job's function
    name (``Job.fn_name``, ``Event.fn``); ``None`` for any other job. How monitors group a
    pipeline's jobs.

    Examples
    --------
    >>> stage_of_job("packlab.pipeline.etl.clean.v2"), stage_of_job("builtins.abs")
    (('etl', 'clean.v2'), None)
    """
    if not isinstance(fn_name, str) or not fn_name.startswith(JOB_PREFIX):
        return None
    pipeline, _, stage = fn_name[len(JOB_PREFIX):].partition(".")
    return (pipeline, stage) if pipeline and stage else None


def ctx_path(root: str, stage: str, key: str) -> str:
    """Where a unit's in-stage state is saved."""
    return os.path.join(root, "ctx", stage, f"{key}.pkl")


def load_output(store: CheckpointStore, stage: str, key: str, units: int | None) -> Any:
    """A stage's output: one checkpoint, or for a fan-out stage the list of its elements'."""
    if units is None:
        return store.read(stage, key)
    return [store.read(stage, unit_key(key, i)) for i in range(units)]


class StageCall:
    """One unit of a stage, as a picklable callable named ``packlab.pipeline.<pipeline>.<stage>``
    (the queue's function name: monitors group a pipeline's jobs by it).

    Parameters
    ----------
    inputs : dict
        parameter -> (upstream stage, its key, its number of units or None).
    element : tuple or None
        (parameter, index, value) for one element of a fan-out stage.
    reuse : bool
        Return the receipt of a valid checkpoint of this unit instead of running the stage
        (runs with ``resume=True``): the job of a driver that died after the unit's output
        was written, or whose twin attempt wrote it, completes without running it again.
    """

    def __init__(self, pipeline: str, stage: str, fn: Any, root: str, key: str, inputs: dict,
                 params: dict, takes_ctx: bool, element: tuple | None = None, reuse: bool = False):
        self.__module__ = "packlab.pipeline"
        self.__qualname__ = f"{pipeline}.{stage}"
        self.pipeline, self.stage, self.fn, self.root, self.key = pipeline, stage, fn, root, key
        self.inputs, self.params, self.takes_ctx, self.element = inputs, params, takes_ctx, element
        self.reuse = reuse

    @property
    def unit(self) -> str:
        """The checkpoint key this call writes."""
        return self.key if self.element is None else unit_key(self.key, self.element[1])

    def __call__(self) -> dict:
        store = CheckpointStore(self.root, self.pipeline)
        if getattr(self, "reuse", False) and store.check(self.stage, self.unit) is None:
            m = store.manifest(self.stage, self.unit)
            return {"format": m["format"], "nbytes": sum(size for size, _ in m["files"].values()),
                    "seconds": float(m.get("meta", {}).get("seconds", 0.0)), "resumed": False, "saves": 0,
                    "pid": os.getpid(), "reused": True}
        kwargs = dict(self.params)
        for param, (up, key, units) in self.inputs.items():
            kwargs[param] = load_output(store, up, key, units)
        index = None
        if self.element is not None:
            param, index, value = self.element
            kwargs[param] = value
        ctx = Context(ctx_path(self.root, self.stage, self.unit), self.stage, index)
        if self.takes_ctx:
            kwargs["ctx"] = ctx
        t0 = time.perf_counter()
        with ctx:
            out = self.fn(**kwargs)
        seconds = time.perf_counter() - t0
        written = store.write(self.stage, self.unit, out, {"seconds": seconds, "resumed": ctx.resumed})
        ctx.clear()
        return {"format": written.format, "nbytes": written.nbytes, "seconds": seconds,
                "resumed": ctx.resumed, "saves": ctx.saves, "pid": os.getpid()}

    def __repr__(self) -> str:
        return f"<packlab stage {self.pipeline}.{self.stage} unit={self.unit}>"
