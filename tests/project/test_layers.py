"""The layer order of energyvae.layers holds for every import, top-level or inside a function,
and the check fails on a deliberately added upward import or cycle."""
import shutil
import textwrap
from pathlib import Path

import energyvae
from energyvae.layers import LAYERS, check, import_graph

PACKAGE = Path(energyvae.__file__).resolve().parent


def test_the_package_keeps_the_layer_order():
    assert check() == []


def test_every_top_level_part_has_a_layer():
    placed = {p for _, parts in LAYERS for p in parts}
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    tops = {"" if t == "__init__" else t for t in tops}
    assert tops <= placed, tops - placed


def test_function_level_imports_are_seen():
    graph = import_graph(PACKAGE)
    # commands/train.py imports the run layer at the top; cli imports every command inside functions
    assert "energyvae.commands.train" in graph["energyvae.cli"]


def _copy(tmp_path) -> Path:
    dst = tmp_path / "energyvae"
    shutil.copytree(PACKAGE, dst, ignore=shutil.ignore_patterns("__pycache__", "configs"))
    return dst


def test_an_upward_import_inside_a_function_fails(tmp_path):
    root = _copy(tmp_path)
    vae = root / "models" / "vae.py"
    vae.write_text(vae.read_text() + textwrap.dedent("""

        def _sneaky():
            from ..runs import load_run   # a model reaching up into the run layer
            return load_run
        """))
    problems = check(root)
    assert any("energyvae.models.vae" in p and "imports energyvae.runs" in p and "'models'" in p
               for p in problems), problems
    assert any("import cycle" in p for p in problems)       # runs imports models: a circle too


def test_a_cycle_within_one_layer_fails(tmp_path):
    root = _copy(tmp_path)
    (root / "nets" / "base.py").write_text((root / "nets" / "base.py").read_text()
                                           + "\nfrom . import mlp  # noqa\n")     # mlp imports base
    problems = check(root)
    assert problems and all("import cycle" in p for p in problems), problems
    assert any("energyvae.nets.base" in p and "energyvae.nets.mlp" in p for p in problems)


def test_a_deprecated_alias_in_module_getattr_is_exempt(tmp_path):
    root = _copy(tmp_path)
    errors = root / "errors.py"
    errors.write_text(errors.read_text() + textwrap.dedent("""

        def __getattr__(name):
            from .commands.train import train_run   # an old name, served only when used
            return train_run
        """))
    assert check(root) == []
