"""``packlab.Pipeline``: a DAG of stages that checkpoint atomically and resume after any crash.

Guarantees
----------
* Everything that can be checked is checked before anything runs: the graph (cycles,
  unknown or duplicate names, parameters naming no stage, ``map_over``), the stage
  options, and that the checkpoint directory can be created owner-only and written.
* A stage whose valid checkpoint exists (same code, constants and upstream keys) is not
  run again with ``resume=True``; a corrupt, partial or foreign checkpoint is reported
  (a :class:`PipelineWarning` and ``run[stage].invalid``) and recomputed, never used.
* Stages run as :class:`packlab.JobQueue` jobs, so they get its retries with backoff,
  timeouts, priorities and dead-letter queue; a job is named
  ``packlab.pipeline.<pipeline>.<stage>`` and owned by the pipeline's ``owner`` (its name
  by default), which is how monitors group a pipeline's jobs.
* A stage that fails for good does not stop the others: independent branches finish, the
  run reports ``failed`` and ``skipped`` stages, and returns every result computed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from .. import checks
from ..errors import PacklabError, bad_value
from ..files import UnsafePath, private_directory
from .checkpoints import CHECKPOINT_PURPOSE
from .dag import Graph, StageSpec, make_spec, stage_name, validate


class Pipeline:
    """A named DAG of stages whose outputs are checkpointed under ``checkpoint``.

    Parameters
    ----------
    name : str
        Names the pipeline's jobs (``packlab.pipeline.<name>.<stage>``) and its checkpoints.
    checkpoint : str or Path
        The directory of checkpoints (created 0700: it holds your data), the in-stage
        saved states and, when ``run`` is given a cluster, the queue's store ``queue.db``.
    retry : Retry, int or False, optional
        Every stage's default retry (else the queue's default, ``packlab.queue.retry``).
    owner : str, optional
        The owner of the stage jobs (fair-share policy, monitors); default: ``name``.

    Examples
    --------
    >>> import packlab, tempfile
    >>> pipe = packlab.Pipeline("demo", checkpoint=tempfile.mkdtemp())
    >>> @pipe.stage
    ... def numbers():
    ...     return [1, 2, 3]
    >>> @pipe.stage(map_over="numbers")
    ... def square(numbers):
    ...     return numbers * numbers
    >>> @pipe.stage
    ... def total(square):
    ...     return sum(square)
    >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
    ...     run = pipe.run(pc)
    >>> run["total"].result, run["square"].units, run.ok
    (14, 3, True)
    """

    def __init__(self, name: str, checkpoint: Any = "packlab-pipeline", *, retry: Any = None,
                 owner: str | None = None):
        from ..queue.retry import as_retry

        self.name = stage_name(name, "name", dots=False)
        self.checkpoint = os.path.abspath(checks.path(checkpoint, "checkpoint"))
        as_retry(retry, None)
        self.retry = retry
        self.owner = self.name if owner is None else checks.text(owner, "owner")
        self._specs: list[StageSpec] = []
        self._names: set[str] = set()
        self.last_run = None  # the last run's PipelineRun (also of a run stopped by an error)

    # -- declaring -------------------------------------------------------------------------
    def stage(self, fn: Callable | None = None, *, name: str | None = None, depends_on: Any = None,
              retry: Any = None, timeout: Any = None, resources: Any = None, priority: str | None = None,
              map_over: str | None = None):
        """Declare a stage: ``@pipe.stage`` or ``@pipe.stage(depends_on=..., retry=...,
        timeout=..., resources=..., priority=..., map_over=...)``.

        A parameter named after a stage receives its result; ``ctx`` receives the
        in-stage checkpoint context; any other parameter needs a default (a constant,
        part of the cache key). ``map_over="p"`` runs one unit (one job, one checkpoint)
        per element of parameter ``p`` (an upstream result, or a default list); stages
        after it receive the list of the units' results. ``depends_on`` adds stages to
        wait for whose results are not passed. Returns the function unchanged.
        """
        def add(f: Callable) -> Callable:
            spec = make_spec(f, name=name, depends_on=depends_on, retry=retry, timeout=timeout,
                             resources=resources, priority=priority, map_over=map_over)
            if spec.name in self._names:
                raise PacklabError(f"pipeline {self.name!r} already has a stage named {spec.name!r}: stage "
                                   "names must be unique (pass name=... to @pipe.stage).",
                                   field="name", value=spec.name)
            self._names.add(spec.name)
            self._specs.append(spec)
            try:
                f.__packlab_stage__ = spec.name
            except (AttributeError, TypeError):  # a callable without a __dict__
                pass
            return f

        if fn is not None:
            if not callable(fn):
                raise bad_value("stage", fn, "a function", "Use @pipe.stage or @pipe.stage(...) on a def.")
            return add(fn)
        return add

    @property
    def stages(self) -> list[str]:
        """The stage names, in declaration order."""
        return [s.name for s in self._specs]

    def validate(self) -> Graph:
        """Check the whole graph (see :func:`packlab.pipeline.dag.validate`); return it."""
        if not self._specs:
            raise PacklabError(f"pipeline {self.name!r} has no stages: declare some with @pipe.stage.",
                               field="stages", value=[])
        return validate(self._specs)

    def keys(self) -> dict[str, str]:
        """Every stage's cache key (computed from code, constants and upstream keys)."""
        from .execute import stage_keys

        return stage_keys(self.validate())

    # -- running ---------------------------------------------------------------------------
    def _checkpoint_dir(self) -> str:
        try:
            root = private_directory(self.checkpoint, "checkpoint", purpose=CHECKPOINT_PURPOSE)
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=root)
            os.close(fd)
            os.remove(probe)
        except UnsafePath as e:
            raise PacklabError(f"checkpoint={e.path!r} is {e.problem}: it cannot be the checkpoint "
                               "directory, which must be a private (0700) directory of yours, never reached "
                               "through someone else's link. Give another directory, e.g. checkpoint='ckpt'.",
                               field="checkpoint", value=self.checkpoint) from None
        except OSError as e:
            raise PacklabError(f"checkpoint={self.checkpoint!r} cannot be written ({e.strerror or e}): "
                               "give a directory you can create and write, e.g. checkpoint='ckpt'.",
                               field="checkpoint", value=self.checkpoint) from None
        return root

    def run(self, cluster_or_queue: Any, resume: bool = True):
        """Run the pipeline; return a :class:`~packlab.pipeline.run.PipelineRun`.

        Parameters
        ----------
        cluster_or_queue : PackCluster, Dask cluster, distributed.Client or JobQueue
            Where stages run. Given a queue, its stages are jobs of that queue (its store,
            policy and defaults); otherwise a ``JobQueue`` with the ``priority`` policy and
            its store ``queue.db`` in the checkpoint directory is opened at the first stage
            that must run, and closed at the end (a run that reuses every stage opens none).
        resume : bool, default True
            Reuse every valid checkpoint. ``False`` recomputes every stage (and replaces
            its checkpoints).
        """
        from distributed import Client

        from ..queue import JobQueue
        from .checkpoints import CheckpointStore
        from .execute import Driver, check_picklable, unfinished_units

        checks.boolean(resume, "resume")
        graph = self.validate()
        if not isinstance(cluster_or_queue, (JobQueue, Client)) and not (
                hasattr(cluster_or_queue, "scheduler_address") or hasattr(cluster_or_queue, "client")):
            raise bad_value("cluster_or_queue", cluster_or_queue,
                            "a packlab PackCluster, a Dask cluster or Client, or a packlab.JobQueue")
        root = self.checkpoint
        store = CheckpointStore(root, self.name)
        opened: list[JobQueue] = []

        def open_queue() -> JobQueue:
            if isinstance(cluster_or_queue, JobQueue):
                q = cluster_or_queue
            else:
                q = JobQueue(cluster_or_queue, policy="priority", store=os.path.join(root, "queue.db"))
                opened.append(q)
            _install_warning_plugin(q)
            return q

        qstore = cluster_or_queue.store if isinstance(cluster_or_queue, JobQueue) else \
            os.path.join(root, "queue.db")
        pending = unfinished_units(qstore, self.name) if resume else frozenset()
        driver = Driver(self.name, graph, open_queue, store, resume=resume, owner=self.owner,
                        retry=self.retry, pending=pending)
        check_picklable(graph, skip=driver.will_reuse)  # (reads checkpoints, writes nothing)
        self._checkpoint_dir()
        try:
            run = driver.run()
        except BaseException:  # e.g. KeyboardInterrupt: what was done so far stays visible
            self.last_run = driver.partial()
            raise
        finally:
            for q in opened:
                q.close()
        self.last_run = run
        return run

    def clean(self, dry_run: bool = False) -> list[str]:
        """Remove checkpoints and saved states that no current stage key can use (older code
        or inputs, stages no longer declared) and leftovers of crashed writes; return their
        paths. With ``dry_run=True`` only list them. Do not call it while the pipeline runs.
        """
        import shutil

        checks.boolean(dry_run, "dry_run")
        keys = self.keys()
        root = self.checkpoint
        stale = []
        for kind in ("outputs", "ctx"):
            base = os.path.join(root, kind)
            if os.path.islink(base):  # a link is removed itself, never listed through
                stale.append(base)
                continue
            for stage in sorted(os.listdir(base)) if os.path.isdir(base) else []:
                d = os.path.join(base, stage)
                if stage not in keys or os.path.islink(d):
                    stale.append(d)
                    continue
                key = keys[stage]
                for entry in sorted(os.listdir(d)):
                    unit = entry.removesuffix(".pkl") if kind == "ctx" else entry
                    if unit != key and not (unit.startswith(key + "-") and unit[len(key) + 1:].isdigit()):
                        stale.append(os.path.join(d, entry))
        tmp = os.path.join(root, "tmp")
        if os.path.islink(tmp):
            stale.append(tmp)
        elif os.path.isdir(tmp):
            stale += [os.path.join(tmp, e) for e in sorted(os.listdir(tmp))]
        if not dry_run:
            for p in stale:
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
        return stale

    def visualize(self, run: Any = None, filename: str | None = None):
        """Draw the DAG with each stage's state (of ``run``, default the last run).

        Returns a Bokeh figure (shown inline in a notebook with ``bokeh.io.show``). With
        ``filename``: ``.html`` saves the figure, ``.svg`` writes a standalone SVG (no
        browser needed); PNG needs a browser driver (selenium), which packlab does not
        require, so it is refused with that advice.
        """
        from .visual import draw

        return draw(self, self.validate(), run if run is not None else self.last_run, filename)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name} stages={len(self._specs)} checkpoint={self.checkpoint}>"


def _install_warning_plugin(q: Any) -> None:
    """Best effort: workers that cannot take the plugin still run stages (see context.py)."""
    import logging

    from .context import WarningPlugin

    try:
        q.client.register_plugin(WarningPlugin(), name=WarningPlugin.name)
    except Exception as e:
        logging.getLogger("packlab.pipeline").info("kill-warning handlers not installed: %s", e)
