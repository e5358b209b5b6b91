"""Re-run a benchmark script that was started as a file as the module of the package.

``python benchmarks/NAME.py ARGS`` puts ``benchmarks/`` rather than the repository root on
``sys.path``, so the script's ``from benchmarks.common import ...`` cannot work. A script started
that way (``__package__`` empty) imports this module, found beside it, before those imports; the
process is then replaced by ``python [OPTIONS] -m benchmarks.NAME ARGS`` with the repository root
first on PYTHONPATH. The working directory, arguments, interpreter options and the rest of the
environment stay as they were. Importing this module does not return.
"""
import os
import sys
from pathlib import Path

import __main__

_root = Path(__file__).resolve().parent.parent
_options = sys.orig_argv[1:len(sys.orig_argv) - len(sys.argv)]     # e.g. -u; not the script's own
if _options[-1:] == ["-m"]:                                         # python -m NAME from benchmarks/
    _options = _options[:-1]
_env = dict(os.environ)
_env["PYTHONPATH"] = os.pathsep.join([str(_root), *filter(None, [_env.get("PYTHONPATH")])])
sys.stdout.flush()
sys.stderr.flush()
os.execve(sys.executable, [sys.executable, *_options, "-m", f"benchmarks.{Path(__main__.__file__).stem}",
                           *sys.argv[1:]], _env)
