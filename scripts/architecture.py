#!/usr/bin/env python3
"""Write docs/architecture.md from the code: the layers of pyproject.toml's import-linter
contract, what each package is (its docstring's first line), which packages each one
imports (read from the source), and every plug-in registry (its kind, entry-point group
and module). tests/test_architecture.py fails when the page is stale.

    python scripts/architecture.py          # rewrite docs/architecture.md
    python scripts/architecture.py --check  # exit 1 if it is stale

It also holds the check that no package uses a ``_private`` name of another
(:func:`private_names_across_packages`), which import-linter cannot see (it sees modules,
not names).
"""

from __future__ import annotations

import ast
import os
import sys
from collections import defaultdict

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKLAB = os.path.join(REPO, "packlab")


def _packages(root: str) -> list[str]:
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(("_", ".")):
            continue
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "__init__.py")):
            out.append(f"packlab.{name}")
        elif name.endswith(".py"):
            out.append(f"packlab.{name[:-3]}")
    return out


#: packlab's packages and top-level modules, as the layers name them.
PACKAGES = _packages(PACKLAB)


def package_of(module: str) -> str:
    """``packlab.queue.jobstore`` -> ``packlab.queue``; ``packlab`` stays ``packlab``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _modules(root: str):
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(root))[:-3].split(os.sep)
                is_package = rel[-1] == "__init__"
                name = ".".join(rel[:-1] if is_package else rel)
                with open(path) as fh:
                    yield name, is_package, ast.parse(fh.read(), path)


def _target(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(root: str = PACKLAB) -> dict[str, set[str]]:
    """Which packlab packages each package imports (at any depth, lazily or not)."""
    out: dict[str, set[str]] = defaultdict(set)
    for module, is_package, tree in _modules(root):
        me = package_of(module)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom):
                t = _target(node, module, is_package)
                targets = [t] if t != "packlab" else [f"packlab.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t.startswith("packlab.") and package_of(t) in PACKAGES and package_of(t) != me:
                    out[me].add(package_of(t))
    return out


def private_uses(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str, str]]:
    """``(line, name, module)`` for each ``_private`` name of another packlab package that
    ``tree`` (the module ``module``) imports or reads as an attribute of a module it imported."""
    me = package_of(module)
    found = []
    modules_bound: dict[str, str] = {}  # local name -> packlab module of another package
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _target(node, module, is_package)
            if not target.startswith("packlab"):
                continue
            for a in node.names:
                full = f"{target}.{a.name}"
                other = package_of(full if target == "packlab" else target)
                if other == me:
                    continue
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append((node.lineno, a.name, target))
                else:
                    modules_bound[a.asname or a.name] = full
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("packlab.") and package_of(a.name) != me and a.asname:
                    modules_bound[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules_bound and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append((node.lineno, node.attr, modules_bound[node.value.id]))
    return found


def private_names_across_packages(root: str = PACKLAB) -> list[str]:
    """Every use of another package's ``_private`` name, as ``"module:line name (from X)"``."""
    out = []
    for module, is_package, tree in _modules(root):
        for line, name, target in private_uses(tree, module, is_package):
            out.append(f"{module}:{line} {name} (from {target})")
    return out


def summary(path: str) -> str:
    """The first line of a package's (or module's) docstring."""
    init = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
    with open(init) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def registries(root: str = PACKLAB) -> list[tuple[str, str, str, str]]:
    """``(kind, group, module, name)`` of every ``Registry(kind, group)`` assigned at module level."""
    out = []
    for module, _, tree in _modules(root):
        for node in tree.body:
            value = getattr(node, "value", None)
            if not (isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Call)):
                continue
            func = value.func
            if getattr(func, "id", getattr(func, "attr", None)) != "Registry":
                continue
            args = [a.value for a in value.args if isinstance(a, ast.Constant)]
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if args:
                out.append((args[0], args[1] if len(args) > 1 and args[1] else "-", module,
                            getattr(target, "id", "?")))
    return sorted(out)


def layers(repo: str = REPO) -> list[str]:
    with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
        conf = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return next(c["layers"] for c in conf if c["type"] == "layers")


def page(repo: str = REPO) -> str:
    """The text of docs/architecture.md."""
    root = os.path.join(repo, "packlab")
    deps = imports(root)
    lines = [
        "# Architecture",
        "",
        "<!-- Generated by scripts/architecture.py from the code and pyproject.toml's import-linter",
        "     contract; tests/test_architecture.py fails when it is stale. Do not edit by hand. -->",
        "",
        "packlab is layered: a package imports only packages of the layers below it. `|` separates",
        "packages of one layer that must not import each other, `:` ones that may. The contract is",
        "`[tool.importlinter]` in `pyproject.toml`; `lint-imports` checks it in the test command,",
        "and no package uses a `_private` name of another (checked by tests/test_architecture.py).",
        "Packages talk upward only through hooks (`packlab.hooks`: telemetry installs itself on a",
        "cluster and follows a queue that way) and registries (`packlab.plugins`).",
        "",
        "## Layers, top to bottom",
        "",
    ]
    for i, layer in enumerate(layers(repo), 1):
        lines.append(f"{i}. `{layer}`")
    lines += ["", "## Packages", "", "| package | what it is | imports |", "|---|---|---|"]
    for pkg in _packages(root):
        used = ", ".join(f"`{d.split('.', 1)[1]}`" for d in sorted(deps.get(pkg, ()))) or "-"
        text = summary(os.path.join(repo, *pkg.split("."))).replace("|", "\\|")
        lines.append(f"| `{pkg}` | {text} | {used} |")
    lines += ["", "## Extension points", "",
              "Each is a `packlab.plugins.Registry`: register in code, or through the entry-point",
              "group from an installed package (see CONTRIBUTING.md for a how-to per kind).", "",
              "| kind | entry-point group | registry |", "|---|---|---|"]
    for kind, group, module, name in registries(root):
        lines.append(f"| {kind} | `{group}` | `{module}.{name}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = os.path.join(REPO, "docs", "architecture.md")
    text = page()
    if "--check" in argv:
        with open(path) as f:
            if f.read() != text:
                print("docs/architecture.md is stale: run python scripts/architecture.py", file=sys.stderr)
                return 1
        return 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
