"""The layer order of the package, declared once, and the check that the code keeps it.

Each top-level part of ``energyvae`` belongs to one layer; a module may import from its own
layer and the layers before it, never from a later one, and no chain of imports may come back
to where it started. Every import counts: top-level ones and those inside functions (a
function-level import only delays a cycle, it does not remove it). The one exemption is a
module-level ``__getattr__``: the deprecated aliases of names that moved up the order are
served there, and it runs only when an old name is used.

Why this order (docs/layout.md has the picture):

1. **foundation**: errors, atomic file writes, the registries (and the deprecation helper);
2. **primitives**: data loading, the networks, MCMC (AIS, chain diagnostics, the GRBM's closed
   forms) and image quality / statistics: pure functions of tensors that models and
   evaluation both use;
3. **figures**: ``viz`` draws tensors and arrays (it knows no model);
4. **models**: every model and part; a model that needs another trained run is handed a loader
   (:class:`~energyvae.models.base.ModelContext`), it never imports the run layer;
5. **config**: a run's validated config, which names models and data;
6. **training**: the trainer, checkpoints, logging, DDP;
7. **evaluation**: metrics of trained models (it may time a training step, so it sits above
   training) and the report;
8. **restoration**: zero-shot restoration with a trained model;
9. **runs**: the run folder (``config.yaml``, ``data.json``, checkpoints, ``load_run``);
10. **commands**: ``train``, ``sample``, ``evaluate``, ``restore``, the CLI and the package's
    lazy facade (``energyvae/__init__``).

``python -m energyvae.layers`` prints every violation (exit status 1 if any); the test suite
runs :func:`check` (tests/project/test_layers.py).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

#: (layer name, the top-level parts of the package in it), first to last; "" is the package's
#: own ``__init__``
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("errors", "atomic", "registry", "_deprecation", "layers")),
    ("primitives", ("data", "nets", "mcmc", "imaging")),
    ("figures", ("viz",)),
    ("models", ("models",)),
    ("config", ("config",)),
    ("training", ("train",)),
    ("evaluation", ("evaluation",)),
    ("restoration", ("restoration",)),
    ("runs", ("runs",)),
    ("commands", ("commands", "cli", "__main__", "")),
)


def _modules(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        out[".".join((package, *parts))] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import, known: set[str],
             package: str) -> list[str]:
    """The package modules an import statement loads (a name imported from a package that is
    itself a module counts as that module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            base = base if is_package else base[:-1]
            base = base[:len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
    out = []
    for name in names:
        if name != package and not name.startswith(package + "."):
            continue
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


def _imports(tree: ast.Module):
    """Every import statement of a module, except those inside a module-level ``__getattr__``."""
    exempt = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            exempt |= {id(n) for n in ast.walk(node)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in exempt]


def import_graph(root: str | Path, package: str = "energyvae") -> dict[str, dict[str, int]]:
    """module -> {imported package module: line number}, over every import of every module."""
    root = Path(root)
    mods = _modules(root, package)
    known = set(mods)
    graph: dict[str, dict[str, int]] = {}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = graph.setdefault(module, {})
        for node in _imports(tree):
            for target in _resolve(module, path.name == "__init__.py", node, known, package):
                if target != module:
                    edges.setdefault(target, node.lineno)
    return graph


def layer_of(module: str, package: str = "energyvae", layers=LAYERS) -> int:
    top = module[len(package) + 1:].split(".")[0] if module != package else ""
    for i, (_, parts) in enumerate(layers):
        if top in parts:
            return i
    raise KeyError(f"{module}: in no layer of energyvae.layers.LAYERS (add its top-level part there)")


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(root: str | Path | None = None, package: str = "energyvae", layers=LAYERS) -> list[str]:
    """Every violation of the layer order in the package at ``root`` (default: this package),
    one line each: an import of a later layer, or a cycle of imports."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    graph = import_graph(root, package)
    problems = []
    for module, edges in sorted(graph.items()):
        mine = layer_of(module, package, layers)
        for target, line in sorted(edges.items()):
            theirs = layer_of(target, package, layers)
            if theirs > mine:
                problems.append(f"{module} (line {line}) imports {target}: layer {layers[mine][0]!r} "
                                f"must not import the later layer {layers[theirs][0]!r}")
    for comp in _cycles(graph):
        problems.append("import cycle among: " + ", ".join(comp))
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    print(f"{len(problems)} violation(s) of the layer order" if problems else "layer order kept")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
