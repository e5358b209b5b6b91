import os
from pathlib import Path

# one torch thread per test process (and its CLI subprocesses) unless the caller says otherwise:
# tiny nets only lose time to threads, and on a shared machine OpenMP spin-waiting makes
# multi-thread steps 10-30x slower (energyvae/train/threads.py); set before torch is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config, items):
    """Tiers: everything under tests/e2e/ (the CLI, whole runs in subprocesses, the installed
    wheel) is marked ``e2e``; the fast tier is ``pytest -m "not slow and not e2e"``."""
    for item in items:
        if E2E in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny ops only lose time to threads on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Killed(Exception):
    """A simulated kill of a training process (see ``kill_training_at``)."""


@pytest.fixture
def kill_training_at(monkeypatch):
    """``kill_training_at(step, action)``: run ``action()`` with ``Trainer.train_step`` raising
    :class:`Killed` at ``step`` (before that step's update, like a kill -9 between steps), then
    restore the real ``train_step`` so the caller can resume."""
    from energyvae.train import Trainer
    original = Trainer.train_step

    def kill(step, action):
        def dying(self, x):
            if self.step == step:
                raise Killed()
            return original(self, x)
        monkeypatch.setattr(Trainer, "train_step", dying)
        with pytest.raises(Killed):
            action()
        monkeypatch.setattr(Trainer, "train_step", original)
    return kill
