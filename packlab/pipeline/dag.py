"""A pipeline's stages and the checks of their graph, made before anything runs.

A :class:`StageSpec` is what ``@pipe.stage`` records: the function and its options. The
parameters of the function are bound when the pipeline is validated (stages may be
declared in any order): a parameter named after a stage receives that stage's result,
``ctx`` receives the stage's :class:`~packlab.pipeline.context.Context`, and any other
parameter must have a default (a constant, part of the cache key). :func:`validate`
turns the specs into a :class:`Graph` in topological order, or raises a
:class:`~packlab.errors.PacklabError` that names what is wrong: a cycle (with its
stages), an unknown dependency, a duplicate name, a parameter that names no stage, a
``map_over`` that is not iterable.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import checks
from ..errors import PacklabError, bad_value

#: The parameter name through which a stage receives its in-stage checkpoint context.
CTX = "ctx"


@dataclass
class StageSpec:
    """One stage as declared: its function and options (see ``Pipeline.stage``)."""

    name: str
    fn: Callable
    depends_on: tuple[str, ...] = ()
    retry: Any = None
    timeout: float | None = None
    resources: dict[str, float] | None = None
    priority: str = "normal"
    map_over: str | None = None
    # filled in by validate()
    inputs: tuple[str, ...] = ()  # parameters that receive upstream results
    params: dict[str, Any] = field(default_factory=dict)  # constant parameters (defaults)
    takes_ctx: bool = False
    upstream: tuple[str, ...] = ()  # every stage this one waits for, inputs first


@dataclass
class Graph:
    """A validated pipeline: stages by name in topological order, and who follows whom."""

    stages: dict[str, StageSpec]
    order: list[str]
    downstream: dict[str, list[str]]

    def descendants(self, name: str) -> list[str]:
        """Every stage that (transitively) waits for ``name``, in topological order.

        Examples
        --------
        >>> g = Graph({}, ["a", "b", "c"], {"a": ["b"], "b": ["c"], "c": []})
        >>> g.descendants("a")
        ['b', 'c']
        """
        seen, todo = set(), [name]
        while todo:
            for d in self.downstream[todo.pop()]:
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return [s for s in self.order if s in seen]


def stage_name(value: object, field_name: str = "name", dots: bool = True) -> str:
    """A stage or pipeline name: a non-empty string of letters, digits, ``_``, ``-``, ``.``
    (a pipeline's without ``.``: it is the first part of ``<pipeline>.<stage>``).

    It becomes a directory name and part of job names, so nothing else is allowed.

    Examples
    --------
    >>> stage_name("clean-2")
    'clean-2'
    >>> stage_name("a/b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: name='a/b' is invalid: expected a name of letters, digits, ...
    """
    allowed = "_-." if dots else "_-"
    ok = isinstance(value, str) and value and value[0] not in ".-" and all(
        c.isascii() and (c.isalnum() or c in allowed) for c in value)
    if not ok:
        chars = "'_', '-' or '.'" if dots else "'_' or '-'"
        raise bad_value(field_name, value, f"a name of letters, digits, {chars} (not starting with "
                        "'.' or '-')", "It names directories and queue jobs, e.g. 'clean_data'.")
    return value


def _names(value: object, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if callable(value) and hasattr(value, "__packlab_stage__"):
        return (value.__packlab_stage__,)
    if not isinstance(value, Iterable):
        raise bad_value(field_name, value, "a stage name or a list of stage names",
                        'e.g. depends_on=["load"]')
    out = []
    for v in value:
        if callable(v) and hasattr(v, "__packlab_stage__"):
            v = v.__packlab_stage__
        if not isinstance(v, str):
            raise bad_value(field_name, value, "a stage name or a list of stage names",
                            'e.g. depends_on=["load"]')
        out.append(v)
    return tuple(out)


def make_spec(fn: Callable, *, name: str | None = None, depends_on: Any = None, retry: Any = None,
              timeout: Any = None, resources: Any = None, priority: Any = None,
              map_over: Any = None) -> StageSpec:
    """Check one stage's options (everything that can be checked without the others).

    Examples
    --------
    >>> make_spec(len, name="n", priority="high").priority
    'high'
    """
    from ..queue.job import priority_rank, timeout_seconds
    from ..queue.retry import as_retry

    if not callable(fn):
        raise bad_value("stage", fn, "a function", "Decorate a def: @pipe.stage")
    name = stage_name(getattr(fn, "__name__", None) if name is None else name, "name")
    priority = "normal" if priority is None else priority
    priority_rank(priority)
    t = timeout_seconds(timeout)
    as_retry(retry, None)
    if resources is not None:
        resources = checks.mapping_of(resources, "resources", lambda v, f: checks.number(v, f, above=0))
    if map_over is not None and not isinstance(map_over, str):
        raise bad_value("map_over", map_over, "the name of a parameter of the stage (a string)",
                        'e.g. @pipe.stage(map_over="files") def load(files): ...')
    return StageSpec(name, fn, _names(depends_on, "depends_on"), retry, t, resources, priority, map_over)


def _bind(spec: StageSpec, names: set[str]) -> None:
    try:
        sig = inspect.signature(spec.fn)
    except (TypeError, ValueError):
        raise PacklabError(f"stage {spec.name!r}: its function's parameters cannot be read; "
                           "decorate a plain def.", field="stage", value=spec.name) from None
    inputs, params, ctx = [], {}, False
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise PacklabError(f"stage {spec.name!r} takes *{p.name}: name each input as a parameter "
                               "(a stage's name receives its result).", field="stage", value=spec.name)
        if p.name == CTX:
            ctx = True
        elif p.name in names:
            inputs.append(p.name)
        elif p.default is not p.empty:
            params[p.name] = p.default
        else:
            close = difflib.get_close_matches(p.name, sorted(names), n=1)
            near = f" (did you mean {close[0]!r}?)" if close else ""
            raise PacklabError(
                f"stage {spec.name!r}: parameter {p.name!r} names no stage and has no default{near}. "
                f"A parameter receives the result of the stage of its name (stages: {sorted(names)}); "
                "give it a default for a constant, or name it ctx for the checkpoint context.",
                field=p.name, value=spec.name)
    spec.inputs, spec.params, spec.takes_ctx = tuple(inputs), params, ctx
    spec.upstream = tuple(dict.fromkeys([*inputs, *spec.depends_on]))
    if spec.map_over is not None:
        if spec.map_over in params:
            _iterable(spec, params[spec.map_over])
        elif spec.map_over not in inputs:
            raise bad_value("map_over", spec.map_over, f"a parameter of stage {spec.name!r} "
                            f"(one of {[*inputs, *params]})",
                            "It names the upstream stage (or the default) whose elements fan out.")


def _iterable(spec: StageSpec, value: object) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        t = type(value)
        raise PacklabError(
            f"stage {spec.name!r}: map_over={spec.map_over!r} is {value!r} "
            f"(a {t.__module__}.{t.__qualname__}), not iterable: "
            "fan-out needs a list (or tuple, range...) of elements, one unit each.",
            field="map_over", value=value)


def validate(specs: list[StageSpec]) -> Graph:
    """Bind every stage's parameters and order the stages; raise on any bad graph.

    Examples
    --------
    >>> def a(): return 1
    >>> def b(a): return a + 1
    >>> validate([make_spec(b), make_spec(a)]).order
    ['a', 'b']
    """
    stages: dict[str, StageSpec] = {}
    for s in specs:
        if s.name in stages:
            raise PacklabError(f"two stages are named {s.name!r}: stage names must be unique "
                               "(pass name=... to @pipe.stage).", field="name", value=s.name)
        stages[s.name] = s
    names = set(stages)
    for s in specs:
        _bind(s, names)
        for d in s.depends_on:
            if d not in names:
                raise PacklabError(f"stage {s.name!r} depends on {d!r}, which is not a stage of this "
                                   f"pipeline (stages: {sorted(names)}).", field="depends_on", value=d)
    downstream: dict[str, list[str]] = {n: [] for n in stages}
    waiting = {n: len(s.upstream) for n, s in stages.items()}
    for s in specs:
        for u in s.upstream:
            downstream[u].append(s.name)
    order = [n for n, k in waiting.items() if k == 0]
    i = 0
    while i < len(order):  # Kahn: a stage is ready once all it waits for are placed
        for d in downstream[order[i]]:
            waiting[d] -= 1
            if waiting[d] == 0:
                order.append(d)
        i += 1
    if len(order) < len(stages):
        cycle = _find_cycle({n for n, k in waiting.items() if k > 0}, stages)
        raise PacklabError(f"the stages form a cycle: {' -> '.join(cycle)}; a stage cannot wait for "
                           "itself. Remove one of these dependencies.", field="depends_on", value=cycle)
    return Graph(stages, order, downstream)


def _find_cycle(left: set[str], stages: dict[str, StageSpec]) -> list[str]:
    """One cycle among the stages Kahn's algorithm could not place (each waits for another)."""
    start = min(left)
    path, index, node = [], {}, start
    while node not in index:
        index[node] = len(path)
        path.append(node)
        node = min(u for u in stages[node].upstream if u in left)
    cycle = path[index[node]:]
    cycle.reverse()  # upstream first: a -> b means b waits for a
    i = cycle.index(min(cycle))
    cycle = cycle[i:] + cycle[:i]
    return [*cycle, cycle[0]]
