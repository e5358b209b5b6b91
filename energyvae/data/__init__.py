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
  and optionally ``{train,t10k}-labels-idx1-ubyte[.gz]``. ``mnist`` is the same reader under the
  name of paper 002's setting (binarised MNIST: ``name: mnist, binarize: true``).
- ``cifar10`` / ``cifar100``: the python batch folder (``cifar-10-batches-py`` /
  ``cifar-100-python``, or its parent) at ``path``; unpickled with a restricted unpickler.
- ``image-folder``: PNG/JPEG files under ``path``; >= 2 class subfolders give labels.
- ``stl10``: the ``stl10_binary`` folder (or its parent), 3x96x96; ``subset``: ``train`` (5,000
  labelled, the default), ``unlabeled`` (100,000) or ``train+unlabeled``; test is ``test_X.bin``.
- ``imagenet32`` / ``imagenet64``: the downsampled-ImageNet npz batches ``train_data_batch_*.npz``
  (+ ``val_data.npz`` as the official test set) in ``path`` or its subfolders.
- ``lsun``: one LSUN LMDB folder (e.g. ``church_outdoor_train_lmdb``; needs ``pip install
  'energyvae[lsun]'``), centre-cropped to a square by default.
- ``celeba``: ``img_align_celeba/`` (178x218) with ``list_eval_partition.txt`` (official train /
  val / test) when present; the 140x140 centre crop by default (see :func:`readers.load_celeba`).
- ``celeba-hq``: a folder of CelebA-HQ images (256 or 1024 px; set ``image_size`` to resize).
- ``array``: ``.npy`` or ``.npz`` at ``path`` (keys ``x`` [, ``y``] or ``train_x``, ``test_x``
  [, ``train_y``, ``test_y``]); see :func:`formats.load_array`.
- toy 2-D sets (float32 ``[N, 2]``): see :mod:`energyvae.data.toy2d`.

Official test splits (fashion-mnist, mnist-idx, cifar, stl10, imagenet val, npz with ``test_x``,
celeba's partition) are kept; otherwise ``test_fraction`` is carved. Validation is carved from
train (celeba's partition has its own); ``limit`` then cuts train.

Image options, for every image source: ``crop: center | none`` (default ``none``, except
``center`` for celeba, celeba-hq and lsun) takes the centre ``crop_size`` square (default the
shorter side; 140 for celeba) before ``image_size`` resizes (bilinear); ``grayscale``.
``augment: [hflip]`` flips training batches at random, deterministically from the train seed,
the step and the process (:meth:`DataBundle.augment_batch`, :func:`transforms.hflip`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import DataError
from ..registry import check
from . import formats, readers, toy2d
from .splits import Split, make_splits
from .toy2d import log_density_unnormalized
from .transforms import AUGMENTATIONS, Preprocess, augment

__all__ = ["DataConfig", "DataBundle", "Split", "Preprocess", "available_datasets", "data_from_spec", "load_data",
           "log_density_unnormalized"]

FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
IMAGE_SETS = ("digits", "digits-rgb", "fashion-mnist", "mnist-idx", "mnist", "cifar10", "cifar100", "image-folder",
              "stl10", "imagenet32", "imagenet64", "lsun", "celeba", "celeba-hq")
NEEDS_PATH = ("mnist-idx", "mnist", "cifar10", "cifar100", "image-folder", "array", "stl10", "imagenet32",
              "imagenet64", "lsun", "celeba", "celeba-hq")
#: sources decoded image by image (crop and resize happen while decoding)
FILE_SOURCES = ("image-folder", "celeba", "celeba-hq", "lsun")
#: data.crop when it is not set
DEFAULT_CROP = {"celeba": "center", "celeba-hq": "center", "lsun": "center"}


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
    crop: Literal["center", "none"] | None = None   # None: center for celeba, celeba-hq, lsun; else none
    crop_size: int | None = None      # side of the centre square; None: 140 for celeba, else the shorter side
    subset: str | None = None         # stl10's training pool: train (default) | unlabeled | train+unlabeled
    augment: list[str] = field(default_factory=list)   # [hflip]: random flips of training batches

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
        check(self.crop in (None, "center", "none"), f"crop must be 'center' or 'none', got {self.crop!r}")
        check(self.crop_size is None or self.crop_size > 0, f"crop_size must be > 0, got {self.crop_size}")
        check(not (self.crop == "none" and self.crop_size), "crop_size needs crop 'center', got crop 'none'")
        check(self.subset is None or self.name == "stl10", f"subset applies to stl10 only, not to {self.name!r}")
        check(self.subset is None or self.subset in readers.STL_SUBSETS,
              f"subset must be one of {', '.join(readers.STL_SUBSETS)}, got {self.subset!r}")
        check(isinstance(self.augment, (list, tuple)) and all(a in AUGMENTATIONS for a in self.augment),
              f"augment must be a list of: {', '.join(AUGMENTATIONS)}; got {self.augment!r}")
        check(len(set(self.augment)) == len(self.augment), f"augment lists an augmentation twice: {self.augment!r}")
        check(self.name not in NEEDS_PATH or bool(self.path), f"path is required for dataset {self.name!r}")
        if self.name in toy2d.TOY_SETS:
            check(not (self.binarize or self.grayscale or self.image_size or self.crop or self.crop_size
                       or self.augment) and self.dequantize == "none",
                  f"binarize, dequantize, grayscale, image_size, crop and augment apply to images, "
                  f"not to the toy 2-D set {self.name!r}")

    def crop_spec(self) -> tuple[str, int | None]:
        """The crop in force: ``("center", side or None)`` or ``("none", None)`` (the dataset's
        convention where ``crop`` is not set; ``crop_size`` alone means ``center``)."""
        crop = self.crop or ("center" if self.crop_size else DEFAULT_CROP.get(self.name, "none"))
        if crop == "none":
            return crop, None
        return crop, self.crop_size or (readers.CELEBA_CROP if self.name == "celeba" else None)


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
    augment: tuple[str, ...] = ()   # data.augment, applied by augment_batch to training batches

    def augment_batch(self, x_raw: torch.Tensor, *, seed: int, step: int, rank: int = 0,
                      world: int = 1) -> torch.Tensor:
        """The raw local training batch of ``step`` augmented by ``data.augment`` (unchanged
        without it), before :attr:`preprocess`: a function of (seed, step, rank, world) only, see
        :func:`transforms.hflip`. ``rank`` / ``world``: this process and the number of processes."""
        return augment(x_raw, self.augment, seed, step, rank, world) if self.augment else x_raw

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
                      Preprocess.from_config(cfg, kind), dict(spec.get("info", {})), available=False,
                      augment=tuple(cfg.augment))


# ----------------------------------------------------------------------------------- loaders
# each returns (x, y, x_test, y_test, info) with NumPy arrays; x_test None = no official split;
# a sixth entry (x_val, y_val) gives an official validation split
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
    x, y, classes = formats.load_image_folder(cfg.path, cfg.image_size, cfg.grayscale, *cfg.crop_spec())
    if cfg.name == "celeba-hq":
        return x, None, None, None, {"source": str(Path(cfg.path))}
    return x, y, None, None, {"source": str(Path(cfg.path)), "classes": classes}


def _stl10(cfg):
    x, y, xt, yt, files = readers.load_stl10(cfg.path, cfg.subset or "train")
    return x, y, xt, yt, {"source": files, "subset": cfg.subset or "train"}


def _imagenet(cfg):
    x, y, xt, yt, files = readers.load_imagenet(cfg.path, 32 if cfg.name == "imagenet32" else 64)
    return x, y, xt, yt, {"source": files}


def _lsun(cfg):
    x, info = readers.load_lsun(cfg.path, "L" if cfg.grayscale else "RGB", *cfg.crop_spec(), cfg.image_size)
    return x, None, None, None, info


def _celeba(cfg):
    x, xv, xt, info = readers.load_celeba(cfg.path, "L" if cfg.grayscale else "RGB", *cfg.crop_spec(),
                                          cfg.image_size)
    return x, None, xt, None, info, (xv, None)


def _array(cfg):
    x, y, xt, yt = formats.load_array(cfg.path)
    return x, y, xt, yt, {"source": str(Path(cfg.path))}


def _toy(cfg):
    x = toy2d.sample(cfg.name, cfg.n_points, cfg.split_seed)
    return x, None, None, None, {"source": f"energyvae.data.toy2d (seed {cfg.split_seed})"}


_LOADERS = {"digits": _digits, "digits-rgb": _digits_rgb, "fashion-mnist": _idx, "mnist-idx": _idx, "mnist": _idx,
            "cifar10": _cifar, "cifar100": _cifar, "image-folder": _image_folder, "array": _array,
            "stl10": _stl10, "imagenet32": _imagenet, "imagenet64": _imagenet, "lsun": _lsun,
            "celeba": _celeba, "celeba-hq": _image_folder, **{n: _toy for n in toy2d.TOY_SETS}}


def _image_ops(x: np.ndarray | None, cfg: DataConfig) -> np.ndarray | None:
    """Grayscale, centre crop and resize of loaded arrays (file sources did them while decoding)."""
    if x is None or cfg.name in FILE_SOURCES:
        return x
    if cfg.grayscale:
        x = formats.to_grayscale(x)
    crop, side = cfg.crop_spec()
    if crop == "center":
        x = formats.center_crop(x, side, cfg.path or cfg.name)
    if cfg.image_size is not None:
        x = formats.resize(x, cfg.image_size)
    return x


def load_data(cfg: DataConfig) -> DataBundle:
    """Load, transform (grayscale/resize) and split the dataset described by ``cfg``."""
    x, y, xt, yt, info, *val = _LOADERS[cfg.name](cfg)
    xv, yv = val[0] if val else (None, None)
    if len(x) == 0 or 0 in x.shape[1:]:
        raise DataError(f"{cfg.path or cfg.name}: no data (array of shape {x.shape})")
    kind = "image" if x.dtype == np.uint8 else "vector"
    if kind == "image":
        x, xt, xv = _image_ops(x, cfg), _image_ops(xt, cfg), _image_ops(xv, cfg)
    elif (cfg.binarize or cfg.dequantize != "none" or cfg.image_size or cfg.grayscale or cfg.crop == "center"
          or cfg.crop_size or cfg.augment):
        raise DataError(f"{cfg.path or cfg.name}: holds float vectors; binarize, dequantize, image_size, "
                        f"grayscale, crop and augment apply to uint8 images only")
    train, val, test = make_splits(x, y, xt, yt, val_fraction=cfg.val_fraction,
                                   test_fraction=cfg.test_fraction, seed=cfg.split_seed,
                                   limit=cfg.limit, name=str(cfg.path or cfg.name), x_val=xv, y_val=yv)
    info = {**info, "official_test": xt is not None, "official_val": xv is not None,
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
            "pool_size": len(x), "labels": y is not None}
    if y is not None:
        info["num_classes"] = int(max(y.max(), -1 if yt is None else yt.max())) + 1
    shape = tuple(int(s) for s in x.shape[1:])
    return DataBundle(cfg.name, kind, shape, train, val, test, Preprocess.from_config(cfg, kind), info,
                      augment=tuple(cfg.augment))
