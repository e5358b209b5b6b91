"""Deterministic train/val/test splitting."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError


@dataclass
class Split:
    """One split in raw storage: uint8 ``[N, C, H, W]`` images or float32 ``[N, D]`` vectors."""
    x: torch.Tensor
    y: torch.Tensor | None = None   # int64 [N] labels

    def __len__(self) -> int:
        return len(self.x)


def _take(x: np.ndarray, y: np.ndarray | None, idx: torch.Tensor) -> Split:
    i = idx.numpy()
    return Split(torch.from_numpy(np.ascontiguousarray(x[i])),
                 None if y is None else torch.from_numpy(np.ascontiguousarray(y[i])))


def make_splits(x, y, x_test=None, y_test=None, *, val_fraction: float, test_fraction: float,
                seed: int, limit: int | None = None, name: str = "data", x_val=None, y_val=None):
    """Split NumPy arrays into (train, val, test) :class:`Split` objects.

    One ``torch.Generator(seed)`` permutation of the training pool decides everything: with an
    official test set (``x_test`` given) val is its first ``round(val_fraction N)`` entries;
    otherwise test is the first ``round(test_fraction N)`` and val the next
    ``round(val_fraction (N - n_test))``. An official validation set (``x_val`` given) is kept
    as it is and nothing is carved for val. Train is the rest, in permuted order, cut to ``limit``.
    """
    n = len(x)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = 0 if x_test is not None else int(round(test_fraction * n))
    n_val = 0 if x_val is not None else int(round(val_fraction * (n - n_test)))
    train_idx = perm[n_test + n_val:]
    if limit is not None:
        train_idx = train_idx[:limit]
    if len(train_idx) == 0:
        raise DataError(f"{name}: {n} examples leave no training data after carving "
                        f"{n_test} test and {n_val} validation examples")
    test = (Split(torch.from_numpy(np.ascontiguousarray(x_test)),
                  None if y_test is None else torch.from_numpy(np.ascontiguousarray(y_test)))
            if x_test is not None else _take(x, y, perm[:n_test]))
    val = (Split(torch.from_numpy(np.ascontiguousarray(x_val)),
                 None if y_val is None else torch.from_numpy(np.ascontiguousarray(y_val)))
           if x_val is not None else _take(x, y, perm[n_test:n_test + n_val]))
    return _take(x, y, train_idx), val, test
