"""Rewriting a reduction's loop snippets on their syntax tree, never on their text.

A reduction writes its update once, as Python statements over per-cell locals
(``l_<field>``), state arrays (``s_<field>[o]``), the kernel's value ``v`` and its
parameters (``p_<name>``). The fused CPU loop and the CUDA kernel need variants of
those statements: the update straight into the state (no inner loop to fold in
locals), and each thread's own row of the state on the GPU. Both are made here by
parsing the snippet with :mod:`ast` and replacing *names and subscripts*, so state
fields whose names are prefixes of each other (``s`` and ``s2``) or that appear in
other identifiers can never be confused, as they were with ``str.replace``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from ..errors import PacklabError


def _parse(lines: list[str], what: str) -> ast.Module:
    src = "\n".join(lines)
    try:
        return ast.parse(src)
    except SyntaxError as e:
        raise PacklabError(
            f"{what}={src!r} is invalid: not Python statements ({e.msg}, line {e.lineno}). "
            "Fix the reduction's snippet: one statement per list item, nested lines indented."
        ) from None


def _unparse(tree: ast.Module) -> list[str]:
    return ast.unparse(ast.fix_missing_locations(tree)).splitlines()


class _LocalsToState(ast.NodeTransformer):
    def __init__(self, fields: Iterable[str], cell: str):
        self.fields = set(fields)
        self.cell = cell

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id.startswith("l_") and node.id[2:] in self.fields:
            return ast.copy_location(ast.Subscript(
                value=ast.Name(id="s_" + node.id[2:], ctx=ast.Load()),
                slice=ast.Name(id=self.cell, ctx=ast.Load()), ctx=node.ctx), node)
        return node


class _StatePerRow(ast.NodeTransformer):
    def __init__(self, fields: Iterable[str], row: str):
        self.arrays = {"s_" + f for f in fields}
        self.row = row

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id in self.arrays:
            index = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            node.slice = ast.Tuple(elts=[ast.Name(id=self.row, ctx=ast.Load()), *index], ctx=ast.Load())
        return node


def locals_to_state(lines: list[str], fields: Iterable[str], cell: str = "o") -> list[str]:
    """The statements with every per-cell local ``l_<f>`` replaced by ``s_<f>[cell]``.

    Examples
    --------
    >>> locals_to_state(["l_s += v", "l_s2 += v * v"], ("s", "s2"))
    ['s_s[o] += v', 's_s2[o] += v * v']
    """
    return _unparse(_LocalsToState(fields, cell).visit(_parse(lines, "update_local")))


def state_per_row(lines: list[str], fields: Iterable[str], row: str = "row") -> list[str]:
    """The statements with every state subscript ``s_<f>[o, ...]`` given a leading ``row``
    index (on the GPU each thread writes its own row of the state).

    Examples
    --------
    >>> state_per_row(["s_c[o, b] += 1", "s_c2[o] = s_c[o, 0]"], ("c", "c2"))
    ['s_c[row, o, b] += 1', 's_c2[row, o] = s_c[row, o, 0]']
    """
    return _unparse(_StatePerRow(fields, row).visit(_parse(lines, "update_state")))
