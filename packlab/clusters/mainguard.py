"""Detect ``launch()`` called from a script's top level without ``if __name__ == "__main__":``.

Dask starts local workers with ``multiprocessing``'s *spawn* method, which imports the
main script again in every worker process. Unguarded, that import calls ``launch()``
again in each worker, which starts workers of its own: the user sees a flood of
tracebacks and a hang. We find the call in the parent, before anything starts, from the
call stack and the script's syntax tree.
"""

from __future__ import annotations

import ast
import os
import sys

import dask


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round), alone or as one term of an ``and``
    (``if __name__ == "__main__" and len(sys.argv) < 5:`` is false in a worker too)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_is_main_test(v) for v in test.values)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


def _guarded_lines(source: str) -> list[tuple[int, int]]:
    """Line ranges of the bodies of ``if __name__ == "__main__":`` blocks."""
    ranges = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and _is_main_test(node.test):
            ranges.append((node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno))
    return ranges


def unguarded_main_call(depth: int = 1) -> tuple[str, int] | None:
    """``(script, line)`` if the caller runs, at the top level of the main script, outside a
    ``__main__`` guard; else ``None`` (guarded, interactive, a notebook, ``python -c``).

    Examples
    --------
    >>> unguarded_main_call() is None  # a doctest is not a script's top level
    True
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or getattr(main, "__name__", None) != "__main__":
        return None
    path = os.path.abspath(path)
    outer = None
    frame = sys._getframe(depth)
    while frame is not None:
        if (frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>"
                and os.path.abspath(frame.f_code.co_filename) == path):
            outer = frame
        frame = frame.f_back
    if outer is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            ranges = _guarded_lines(f.read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    line = outer.f_lineno
    if any(lo <= line <= hi for lo, hi in ranges):
        return None
    return path, line


def workers_reimport_main() -> bool:
    """True unless Dask starts worker processes by ``fork`` (which does not re-import)."""
    return dask.config.get("distributed.worker.multiprocessing-method", "spawn") != "fork"
