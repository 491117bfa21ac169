"""The Dask span a queue job runs in: one per owner and function, so Dask's own fine
performance metrics (``Span.cumulative_worker_metrics``: thread CPU and non-CPU seconds,
memory reads, spill to and from disk, per span) tell what each owner's and each
function's (each pipeline stage's) jobs cost.

A span is named ``("packlab", "owner:<owner>", "fn:<function>")`` (Dask makes the two
parents too, so ``("packlab", "owner:alice")`` sums alice's functions). Its ids are derived
from the name (UUID5), so every hand-over, every driver and every queue on a cluster uses
the same span: their number is the number of owners times functions, not of jobs, and
the scheduler's and the workers' memory stays bounded (Dask keeps every span it ever
saw, and a worker one counter per span and activity).

Dask ties a span to a ``TaskGroup`` (the key's prefix), not to a task: tasks of one group
go to the span of the first one seen. So the keys of a span's jobs carry a word of its
own, :func:`group_word` (``f-qkzt-packlab-<job>-...``), and two owners running the same
function do not share a group.

Examples
--------
>>> name = span_name("alice", "etl.clean")
>>> name
('packlab', 'owner:alice', 'fn:etl.clean')
>>> parse(name)
('alice', 'etl.clean')
>>> a = annotation(name)
>>> a["name"] == name and a == annotation(name) and len(a["ids"]) == 3
True
>>> w = group_word(name)
>>> len(w), w.isalpha(), w == group_word(name) != group_word(span_name(None, "etl.clean"))
(4, True, True)
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from functools import lru_cache

ROOT = "packlab"
NO_OWNER = "-"
_NS = uuid.UUID("6f1c2a52-8d0e-4c53-9d55-2f8a64b1f0c7")
# g..z only: a word of these is kept by dask.utils.key_split (alphabetic, not hex), so it
# is part of the task's prefix and TaskGroup
_LETTERS = "ghijklmnopqrstuvwxyz"
# and a job id of letters only (a-f: 1 in 126,000), which key_split keeps too
_WORD = re.compile(r"-[g-z]{4}-packlab(-[a-f]{12})?$")


def span_name(owner: str | None, fn_name: str) -> tuple[str, str, str]:
    """The span of a job of ``owner`` running ``fn_name`` (``Job.fn_name``)."""
    return (ROOT, f"owner:{owner if owner else NO_OWNER}", f"fn:{fn_name}")


def parse(name: tuple) -> tuple[str | None, str] | None:
    """``(owner, fn_name)`` of a span name made by :func:`span_name`, else ``None``."""
    if (len(name) != 3 or name[0] != ROOT or not str(name[1]).startswith("owner:")
            or not str(name[2]).startswith("fn:")):
        return None
    owner = name[1][len("owner:"):]
    return (None if owner == NO_OWNER else owner), name[2][len("fn:"):]


@lru_cache(maxsize=4096)
def annotation(name: tuple[str, ...]) -> dict:
    """The ``span`` annotation (as :func:`distributed.span` makes) with ids derived from
    the name: the same span every time."""
    ids = tuple(str(uuid.uuid5(_NS, "\x1f".join(name[:i + 1]))) for i in range(len(name)))
    return {"name": tuple(name), "ids": ids}


@lru_cache(maxsize=4096)
def group_word(name: tuple[str, ...]) -> str:
    """Four letters from the span's name, for its jobs' keys (see the module's docstring)."""
    h = int.from_bytes(hashlib.blake2b("\x1f".join(name).encode(), digest_size=8).digest(), "big")
    out = []
    for _ in range(4):
        h, r = divmod(h, len(_LETTERS))
        out.append(_LETTERS[r])
    return "".join(out)


def by_key(keys: list[str], names: list[tuple[str, ...]]) -> dict | functools.partial:
    """The ``span`` annotation of one graph update whose tasks ``keys`` run in the spans
    ``names`` (one per key): the span's annotation when they share one, else a callable
    the scheduler calls with each key (``dask.annotate`` takes one), so a hand-over that
    interleaves owners is still one ``client.map``. It is a ``functools.partial`` of
    ``dict.get``: it unpickles on a scheduler that has no packlab.

    >>> a, b = span_name("alice", "f"), span_name("bob", "f")
    >>> by_key(["k1", "k2"], [a, a]) == annotation(a)
    True
    >>> per = by_key(["k1", "k2"], [a, b])
    >>> per("k2") == annotation(b), per("other") is None
    (True, True)
    """
    first = names[0]
    if all(n == first for n in names):
        return annotation(first)
    return functools.partial(dict.get, {k: annotation(n) for k, n in zip(keys, names, strict=True)})


def task_name(prefix: str) -> str:
    """A task prefix (``dask.utils.key_split``) without a span's word: ``f-qkzt-packlab`` is
    ``f-packlab``, what the dashboard and the advisor call a queue job's tasks.

    >>> task_name("f-qkzt-packlab"), task_name("f-qkzt-packlab-abcdefabcdef"), task_name("inc")
    ('f-packlab', 'f-packlab', 'inc')
    """
    return _WORD.sub("-packlab", prefix)


__all__ = ["NO_OWNER", "ROOT", "annotation", "by_key", "group_word", "parse", "span_name", "task_name"]
