"""Seeded mutation fuzzer of the shipped configs: every bad config must be one ConfigError
(or another EnergyVAEError), never a crash.

Each case takes a shipped config (``configs/*.yaml``), applies 1-3 mutations at random nodes
(any depth) - replace the value by a number, a huge or negative number, a string, a list, a
mapping, None or a bool; delete a key; add an unknown key - then validates it
(``build_config``), builds data and model (``runs.prepare``) and the trainer (its optimizers,
the thread rule). Configs that need files absent here (e.g. a run to start from) are skipped
by their error, which is then a clean EnergyVAEError. A crash is any other exception; the
script prints each crash class once (exception type and the innermost energyvae frame) with a
reproducing config and exits 1 if there was any.

    python scripts/fuzz_configs.py --cases 2000 --seed 0        # the full run (< 5 minutes here)
    python scripts/fuzz_configs.py --cases 200                  # the suite's quick version
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
VALUES = [0, -1, 1, 2.5, -3.0, 10 ** 9, 1e30, float("nan"), "", "nope", "1e-3", [], [1, 2], ["mlp"],
          {}, {"name": "mlp"}, None, True, False]
#: configs whose data or runs may be absent on a machine; they still must fail cleanly
SKIP_NAMES = ()


def _paths(node, prefix=()):
    """Every (path, value) of a nested mapping / list, depth first."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _set(root, path, value, delete=False):
    node = root
    for p in path[:-1]:
        node = node[p]
    if delete and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def mutate(raw: dict, rng: random.Random) -> dict:
    raw = copy.deepcopy(raw)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p, _ in _paths(raw) if p]
        if not paths:
            break
        path = rng.choice(paths)
        kind = rng.random()
        try:
            if kind < 0.1:
                _set(raw, path, None, delete=True)
            elif kind < 0.2:
                node = raw
                for p in path[:-1]:
                    node = node[p]
                if isinstance(node, dict):
                    node["unknown_key"] = 1
            else:
                _set(raw, path, copy.deepcopy(rng.choice(VALUES)))
        except (KeyError, IndexError, TypeError):
            pass
    return raw


def check(raw: dict, run_dir: str) -> None:
    from energyvae.config import build_config
    from energyvae.runs import prepare
    from energyvae.train import Trainer

    raw = copy.deepcopy(raw)
    if isinstance(raw.get("run"), dict):
        raw["run"]["dir"] = run_dir if isinstance(raw["run"].get("dir"), str) else raw["run"].get("dir")
    cfg = build_config(raw)
    data, model = prepare(cfg)
    Trainer(cfg, model, data)


def main() -> int:
    from energyvae.config import read_yaml
    from energyvae.errors import EnergyVAEError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory-gb", type=float, default=12.0,
                    help="address-space limit of this process (0: none)")
    args = ap.parse_args()
    configs = {p.stem: read_yaml(p) for p in sorted((ROOT / "configs").glob("*.yaml"))}
    rng = random.Random(args.seed)
    crashes: dict[tuple, tuple] = {}
    clean = ok = 0
    t0 = time.perf_counter()
    warnings.simplefilter("ignore")
    if args.memory_gb:                      # a size that the OS would grant lazily fails here instead
        import resource
        limit = int(args.memory_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    slow = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(args.cases):
            name = rng.choice(sorted(configs))
            raw = mutate(configs[name], rng)
            t_case = time.perf_counter()
            try:
                check(raw, str(Path(tmp) / f"r{case}"))
                ok += 1
            except EnergyVAEError:
                clean += 1
            except Exception as e:                       # a crash: classify by type and place
                tb = traceback.extract_tb(e.__traceback__)
                ours = [f for f in tb if "energyvae" in f.filename] or tb
                key = (type(e).__name__, ours[-1].filename.split("energyvae/")[-1], ours[-1].lineno)
                crashes.setdefault(key, (name, raw, f"{type(e).__name__}: {str(e)[:200]}"))
            if time.perf_counter() - t_case > 10:
                slow.append((time.perf_counter() - t_case, name, raw))
    secs = time.perf_counter() - t0
    print(f"{args.cases} cases in {secs:.0f} s: {ok} valid, {clean} clean errors, "
          f"{args.cases - ok - clean} crashes in {len(crashes)} classes")
    for secs_case, name, raw in slow:
        print(f"- slow case ({secs_case:.0f} s, from {name}): {raw}")
    for (etype, where, line), (name, raw, msg) in crashes.items():
        print(f"- {etype} at {where}:{line} (from {name}): {msg}\n  config: {raw}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
