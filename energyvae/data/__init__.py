"""Data: the ``data:`` config section, dataset loading, splits and per-batch preprocessing.

``load_data(DataConfig(...))`` returns a :class:`DataBundle` whose splits hold RAW storage
(uint8 images, float32 vectors); the trainer applies ``bundle.preprocess`` to each batch.

Datasets (``name``):

- ``digits``: sklearn's 8x8 digits, 1x8x8 uint8 (0..16 rescaled by ``round(v * 255 / 16)``).
- ``digits-rgb``: the same digits painted in colour, 3x8x8 uint8, for colorization without a
  download: class c gets the hue c/10 (full saturation and value), jittered by +-0.03 per image
  (seed ``split_seed``), on black. The hue is learnable from the shape, so gray -> colour is a
  well-posed restoration task (``energyvae restore --task colorize``).
- ``fashion-mnist``: gzip IDX files in ``path`` (default ``/usr/share/datasets/fashion-mnist``).
- ``mnist-idx``: any MNIST-format folder at ``path``: ``{train,t10k}-images-idx3-ubyte[.gz]``
  and optionally ``{train,t10k}-labels-idx1-ubyte[.gz]``.
- ``cifar10`` / ``cifar100``: the python batch folder (``cifar-10-batches-py`` /
  ``cifar-100-python``, or its parent) at ``path``; unpickled with a restricted unpickler.
- ``image-folder``: PNG/JPEG files under ``path``; >= 2 class subfolders give labels.
- ``array``: ``.npy`` or ``.npz`` at ``path`` (keys ``x`` [, ``y``] or ``train_x``, ``test_x``
  [, ``train_y``, ``test_y``]); see :func:`formats.load_array`.
- toy 2-D sets (float32 ``[N, 2]``): see :mod:`energyvae.data.toy2d`.

Official test splits (fashion-mnist, mnist-idx, cifar, npz with ``test_x``) are kept; otherwise
``test_fraction`` is carved. Validation is carved from train; ``limit`` then cuts train.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import DataError
from ..registry import check
from . import formats, toy2d
from .splits import Split, make_splits
from .toy2d import log_density_unnormalized
from .transforms import Preprocess

__all__ = ["DataConfig", "DataBundle", "Split", "Preprocess", "available_datasets", "data_from_spec", "load_data",
           "log_density_unnormalized"]

FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
IMAGE_SETS = ("digits", "digits-rgb", "fashion-mnist", "mnist-idx", "cifar10", "cifar100", "image-folder")
NEEDS_PATH = ("mnist-idx", "cifar10", "cifar100", "image-folder", "array")


def available_datasets() -> list[str]:
    return [*IMAGE_SETS, "array", *toy2d.TOY_SETS]


@dataclass
class DataConfig:
    """The ``data:`` section of a run config (see the module docstring for datasets)."""
    name: str = "digits"
    path: str | None = None           # file or folder for on-disk data
    scale: Literal["01", "pm1"] = "01"   # images in [0, 1] or [-1, 1]
    binarize: bool = False            # Bernoulli(x) redrawn every batch (needs scale 01)
    dequantize: Literal["none", "uniform", "uniform_logit"] = "none"
    logit_alpha: float = 0.05         # logit(a + (1 - 2a) x) as in RealNVP
    val_fraction: float = 0.1
    test_fraction: float = 0.1        # only without an official test split
    split_seed: int = 0               # also seeds toy-set generation
    n_points: int = 20000             # size of generated toy 2-D sets
    limit: int | None = None          # keep at most this many training examples
    image_size: int | None = None     # square bilinear resize; None keeps native size
    grayscale: bool = False           # RGB -> 1 channel

    def __post_init__(self):
        names = available_datasets()
        check(self.name in names, f"name: unknown dataset {self.name!r} (choose from: {', '.join(names)})")
        check(self.scale in ("01", "pm1"), f"scale must be '01' or 'pm1', got {self.scale!r}")
        check(self.dequantize in ("none", "uniform", "uniform_logit"),
              f"dequantize must be 'none', 'uniform' or 'uniform_logit', got {self.dequantize!r}")
        check(not (self.binarize and self.scale == "pm1"), "binarize needs scale '01', got 'pm1'")
        check(not (self.binarize and self.dequantize != "none"),
              f"binarize cannot be combined with dequantize {self.dequantize!r}")
        check(not (self.dequantize == "uniform_logit" and self.scale == "pm1"),
              "dequantize 'uniform_logit' needs scale '01' (the logit replaces the scaling)")
        check(0 <= self.logit_alpha < 0.5, f"logit_alpha must be in [0, 0.5), got {self.logit_alpha}")
        check(self.dequantize != "uniform_logit" or self.logit_alpha > 0,
              "dequantize 'uniform_logit' needs logit_alpha > 0 (logit(0) is -inf)")
        for k in ("val_fraction", "test_fraction"):
            check(0 <= getattr(self, k) < 0.5, f"{k} must be in [0, 0.5), got {getattr(self, k)}")
        check(self.n_points > 0, f"n_points must be > 0, got {self.n_points}")
        check(self.limit is None or self.limit > 0, f"limit must be > 0, got {self.limit}")
        check(self.image_size is None or self.image_size > 0,
              f"image_size must be > 0, got {self.image_size}")
        check(self.name not in NEEDS_PATH or bool(self.path), f"path is required for dataset {self.name!r}")
        if self.name in toy2d.TOY_SETS:
            check(not (self.binarize or self.grayscale or self.image_size) and self.dequantize == "none",
                  f"binarize, dequantize, grayscale and image_size apply to images, "
                  f"not to the toy 2-D set {self.name!r}")


@dataclass
class DataBundle:
    name: str
    kind: str                    # "image" | "vector"
    shape: tuple[int, ...]       # per-example model-space shape: (C, H, W) or (D,)
    train: Split
    val: Split
    test: Split
    preprocess: Preprocess
    info: dict                   # JSON-serializable: sources, sizes, official split, classes
    available: bool = True       # False: rebuilt from a run's data.json, the splits are empty
    missing_reason: str = ""     # why the data could not be loaded (when not available)

    def spec(self) -> dict:
        """What a trained run needs of its data without the data (``data.json`` of a run
        folder): name, kind, per-example shape and the loader's info. The preprocessing and
        value range follow from the run's ``data:`` config section."""
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "info": self.info}


def data_from_spec(cfg: DataConfig, spec: dict) -> DataBundle:
    """A :class:`DataBundle` with empty splits, built from a run's ``data.json`` (see
    :meth:`DataBundle.spec`): enough to build, sample from and decode the run's model on a
    machine without the training data."""
    try:
        kind, shape = spec["kind"], tuple(int(s) for s in spec["shape"])
        if kind not in ("image", "vector") or not shape:
            raise ValueError(kind)
    except (KeyError, TypeError, ValueError):
        raise DataError("data.json: not a data description written by energyvae") from None
    dtype = torch.uint8 if kind == "image" else torch.float32
    empty = Split(torch.empty((0, *shape), dtype=dtype))
    return DataBundle(spec.get("name", cfg.name), kind, shape, empty, empty, empty,
                      Preprocess.from_config(cfg, kind), dict(spec.get("info", {})), available=False)


# ----------------------------------------------------------------------------------- loaders
# each returns (x, y, x_test, y_test, info) with NumPy arrays; x_test None = no official split
def _digits(cfg):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * 255 / 16).astype(np.uint8)[:, None]
    return x, d.target.astype(np.int64), None, None, {"source": "sklearn.datasets.load_digits"}


def _digits_rgb(cfg):
    import colorsys

    x, y, _, _, _ = _digits(cfg)
    hue = (y / 10 + np.random.default_rng(cfg.split_seed).uniform(-0.03, 0.03, len(y))) % 1.0
    rgb = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hue], dtype=np.float64)   # [N, 3]
    x = np.round(x.astype(np.float64) * rgb[:, :, None, None]).astype(np.uint8)       # [N, 3, 8, 8]
    return x, y, None, None, {"source": f"sklearn.datasets.load_digits, coloured by class (seed {cfg.split_seed})"}


def _idx(cfg):
    x, y, xt, yt, files = formats.load_idx_folder(cfg.path or FASHION_MNIST_PATH)
    return x, y, xt, yt, {"source": files}


def _cifar(cfg):
    x, y, xt, yt, files = formats.load_cifar(cfg.path, cfg.name)
    return x, y, xt, yt, {"source": files}


def _image_folder(cfg):
    x, y, classes = formats.load_image_folder(cfg.path, cfg.image_size, cfg.grayscale)
    return x, y, None, None, {"source": str(Path(cfg.path)), "classes": classes}


def _array(cfg):
    x, y, xt, yt = formats.load_array(cfg.path)
    return x, y, xt, yt, {"source": str(Path(cfg.path))}


def _toy(cfg):
    x = toy2d.sample(cfg.name, cfg.n_points, cfg.split_seed)
    return x, None, None, None, {"source": f"energyvae.data.toy2d (seed {cfg.split_seed})"}


_LOADERS = {"digits": _digits, "digits-rgb": _digits_rgb, "fashion-mnist": _idx, "mnist-idx": _idx, "cifar10": _cifar,
            "cifar100": _cifar, "image-folder": _image_folder, "array": _array,
            **{n: _toy for n in toy2d.TOY_SETS}}


def _image_ops(x: np.ndarray, cfg: DataConfig) -> np.ndarray:
    if cfg.grayscale:
        x = formats.to_grayscale(x)
    if cfg.image_size is not None:
        x = formats.resize(x, cfg.image_size)
    return x


def load_data(cfg: DataConfig) -> DataBundle:
    """Load, transform (grayscale/resize) and split the dataset described by ``cfg``."""
    x, y, xt, yt, info = _LOADERS[cfg.name](cfg)
    if len(x) == 0 or 0 in x.shape[1:]:
        raise DataError(f"{cfg.path or cfg.name}: no data (array of shape {x.shape})")
    kind = "image" if x.dtype == np.uint8 else "vector"
    if kind == "image":
        x = _image_ops(x, cfg)
        xt = None if xt is None else _image_ops(xt, cfg)
    elif cfg.binarize or cfg.dequantize != "none" or cfg.image_size or cfg.grayscale:
        raise DataError(f"{cfg.path or cfg.name}: holds float vectors; binarize, dequantize, image_size and "
                        f"grayscale apply to uint8 images only")
    train, val, test = make_splits(x, y, xt, yt, val_fraction=cfg.val_fraction,
                                   test_fraction=cfg.test_fraction, seed=cfg.split_seed,
                                   limit=cfg.limit, name=str(cfg.path or cfg.name))
    info = {**info, "official_test": xt is not None,
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
            "pool_size": len(x), "labels": y is not None}
    if y is not None:
        info["num_classes"] = int(max(y.max(), -1 if yt is None else yt.max())) + 1
    shape = tuple(int(s) for s in x.shape[1:])
    return DataBundle(cfg.name, kind, shape, train, val, test, Preprocess.from_config(cfg, kind), info)
