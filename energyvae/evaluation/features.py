"""Feature networks for the sample metrics (FID, KID, IS, precision/recall), trained offline.

Inception-v3 weights cannot be assumed to exist (no downloads), so by default every feature
metric uses a small classifier that the library trains itself on the dataset's labelled
training split, once, and caches (:func:`get_feature_net`). Its penultimate layer gives the
features and its last layer the class logits, in the roles Inception's pool3 features and
logits play for FID/KID/precision/recall and the Inception Score. Numbers computed with it are
comparable between runs on the same dataset (same cached net), NOT with published
Inception-based numbers.

Input space. Every feature extractor here takes images in display space, float ``[N, C, H, W]``
in [0, 1], or float ``[N, D]`` vectors unchanged; :func:`to_unit_images` maps a dataset's raw
split storage there (``uint8 / 255``), and ``data.preprocess.to_unit(x_model)`` maps model
samples there.

Architectures (:func:`architecture_for`):

- images (square, side 8..64, any channel count): stride-2 ``Conv2d(k=4, s=2, p=1)`` stages
  with 32, 64, 128 channels and ReLU, planned like the ``conv`` encoder
  (:func:`energyvae.nets.conv.spatial_sizes`: 8-4-2, 28-14-7-3, 32-16-8-4, 64-32-16-8), then
  ``flatten -> Linear(-> 128) -> ReLU`` (the features, F = 128) ``-> Linear(-> K)`` (logits);
- vectors ``[N, D]``: standardisation by the training mean / std, then
  ``Linear(D, 128) ReLU Linear(128, 128) ReLU`` (features) ``-> Linear(128, K)``.

Training (:class:`TrainSpec`): cross-entropy, Adam (lr 2e-3, cosine decay to 0), batch 128,
``clip(ceil(4 epochs), 1000, 2500)`` steps (digits: 1000 steps, about 5 s and ~98% test
accuracy; Fashion-MNIST: 1688 steps, about 40 s and ~90% on 2 CPU cores); images get a random
translation of up to ``max(1, side // 16)`` pixels per example (zero fill). Everything is
seeded by ``seed`` (weight init, batch order, augmentation), so the same inputs on the same
machine and thread count give the same net (float reductions may differ across them, which is
why the cache, not retraining, is what makes numbers comparable).

Cache: ``<cache_dir>/<dataset>-<hash16>.safetensors`` (weights) and ``.json`` (spec, training
parameters, test accuracy), both written atomically (temporary file + ``os.replace``; the JSON
is written last and marks the entry complete). ``cache_dir`` defaults to ``$ENERGYVAE_CACHE``
if set, else ``~/.cache/energyvae/feature_nets``. The hash (:func:`feature_net_hash`) covers
the dataset name, the size/label fields of ``data.info``, a SHA-256 fingerprint of the train
and test split contents, the shape, the number of classes, the architecture, the training
parameters and the seed.

Optional Inception-v3 features (:func:`inception_feature_extractor`) need the
``torch-fidelity`` package and a local weights file (torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth``); nothing is ever downloaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write
from ..errors import EnergyVAEError
from ..nets.conv import MAX_SIZE, MIN_SIZE, spatial_sizes

__all__ = ["FeatureNet", "TrainSpec", "RawFeatures", "InceptionFeatures", "to_unit_images",
           "architecture_for", "feature_net_hash", "default_cache_dir", "train_feature_net",
           "get_feature_net", "inception_feature_extractor", "evaluate_accuracy"]

NAME = "energyvae-classifier"
FORMAT_VERSION = 2
FEATURE_DIM = 128
CONV_CHANNELS = (32, 64, 128)


# ------------------------------------------------------------------------------ input space
def to_unit_images(data, raw: torch.Tensor) -> torch.Tensor:
    """Raw split storage -> the feature nets' input space (float32); the ONE place that defines it.

    uint8 images ``[N, C, H, W]`` -> ``raw / 255`` in [0, 1]: display space, equal to
    ``data.preprocess.to_unit(data.preprocess(raw))`` for every deterministic preprocessing
    (scale 01 / pm1, no dequantization; with dequantization or binarization that map is random,
    so the exact pixels are used instead). Model samples reach the same space through
    ``data.preprocess.to_unit``. Float inputs (``[N, D]`` vectors, whose model space is the raw
    space) are returned as float32 unchanged. ``data`` is the
    :class:`~energyvae.data.DataBundle` the rows come from (kept for future non-uint8 storage).
    """
    raw = torch.as_tensor(raw)
    if raw.dtype == torch.uint8:
        return raw.to(torch.float32) / 255
    return raw.to(torch.float32)


# ------------------------------------------------------------------------------ the network
def architecture_for(shape, num_classes: int) -> dict:
    """The JSON-able architecture spec of the feature net for per-example ``shape``."""
    shape = [int(s) for s in shape]
    if len(shape) == 3:
        c, h, w = shape
        if h != w or not MIN_SIZE <= h <= MAX_SIZE or c < 1:
            raise EnergyVAEError(f"feature net: needs square images (C, H, W) with H = W in "
                                 f"{MIN_SIZE}..{MAX_SIZE}, got shape {tuple(shape)}")
        return {"kind": "conv", "in_shape": shape, "channels": list(CONV_CHANNELS),
                "sizes": spatial_sizes(h, len(CONV_CHANNELS)), "feature_dim": FEATURE_DIM,
                "num_classes": int(num_classes)}
    if len(shape) == 1:
        return {"kind": "mlp", "in_shape": shape, "hidden": [FEATURE_DIM, FEATURE_DIM],
                "feature_dim": FEATURE_DIM, "num_classes": int(num_classes)}
    raise EnergyVAEError(f"feature net: expected (C, H, W) images or (D,) vectors, got shape {tuple(shape)}")


class FeatureNet(nn.Module):
    """Classifier on display-space inputs; ``features`` = penultimate layer, ``logits`` = last.

    ``spec`` comes from :func:`architecture_for`. ``forward`` returns logits (with gradients,
    for training); :meth:`features` and :meth:`logits` are the no-grad evaluation entry points.
    """

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = json.loads(json.dumps(spec))
        self.in_shape = tuple(spec["in_shape"])
        self.num_features = int(spec["feature_dim"])
        self.num_classes = int(spec["num_classes"])
        if spec["kind"] == "conv":
            sizes = spec["sizes"]
            chans = [self.in_shape[0]] + list(spec["channels"])[: len(sizes) - 1]
            layers: list[nn.Module] = []
            for a, b in zip(chans[:-1], chans[1:]):
                layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
            layers += [nn.Flatten(), nn.Linear(chans[-1] * sizes[-1] ** 2, self.num_features), nn.ReLU()]
            self.register_buffer("shift", torch.zeros(()))
            self.register_buffer("scale", torch.ones(()))
        elif spec["kind"] == "mlp":
            d, layers = self.in_shape[0], []
            for h in spec["hidden"]:
                layers += [nn.Linear(d, h), nn.ReLU()]
                d = h
            if d != self.num_features:
                raise ValueError("mlp spec: the last hidden width must equal feature_dim")
            self.register_buffer("shift", torch.zeros(self.in_shape))
            self.register_buffer("scale", torch.ones(self.in_shape))
        else:
            raise ValueError(f"unknown feature net kind {spec['kind']!r}")
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.num_features, self.num_classes)
        # features() = body(x) * feature_scale; set after training so that the features' root
        # mean square on the training set is 1 (keeps KID's polynomial kernel near O(1))
        self.register_buffer("feature_scale", torch.ones(()))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise EnergyVAEError(f"feature net expects inputs of shape [N, {', '.join(map(str, self.in_shape))}], "
                                 f"got {list(x.shape)}")
        return ((x.to(self.device, torch.float32) - self.shift) / self.scale)

    def _features(self, x01: torch.Tensor) -> torch.Tensor:
        return self.body(self._check(x01))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(x01))

    @torch.no_grad()
    def features(self, x01: torch.Tensor) -> torch.Tensor:
        """``[N, *in_shape]`` display-space inputs -> ``[N, 128]`` penultimate-layer features
        (post-ReLU, times the fixed ``feature_scale``: unit root mean square on the training set)."""
        return self._features(x01) * self.feature_scale

    @torch.no_grad()
    def logits(self, x01: torch.Tensor) -> torch.Tensor:
        """``[N, *in_shape]`` display-space inputs -> ``[N, K]`` class logits."""
        return self.forward(x01)


class RawFeatures(nn.Module):
    """Identity "feature net" for vector data: the features are the (flattened) coordinates.

    It has no classifier, so the Inception Score is not available with it. Use it for
    unlabelled low-dimensional data such as the toy 2-D sets.
    """

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.num_features = dim
        self.num_classes = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), -1).to(torch.float32)

    logits = None


# ------------------------------------------------------------------------------ training
EPOCHS, MIN_STEPS, MAX_STEPS, BATCH_SIZE, LR = 4, 1000, 2500, 128, 2e-3


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Training hyper-parameters of the feature net (all part of the cache hash).

    ``steps`` Adam steps of ``batch_size`` examples (lr ``lr``, cosine decay to 0); images are
    translated by up to ``max_shift`` pixels per example (zero fill).
    """
    steps: int
    batch_size: int = BATCH_SIZE
    lr: float = LR
    max_shift: int = 0

    @classmethod
    def default_for(cls, arch: dict, n_train: int, steps: int | None = None) -> "TrainSpec":
        """``steps = clip(ceil(4 epochs), 1000, 2500)`` unless given; shift ``max(1, side // 16)``."""
        if steps is None:
            steps = min(MAX_STEPS, max(MIN_STEPS, math.ceil(EPOCHS * n_train / BATCH_SIZE)))
        if int(steps) < 1:
            raise EnergyVAEError(f"feature net: train_steps must be >= 1, got {steps}")
        shift = max(1, arch["in_shape"][-1] // 16) if arch["kind"] == "conv" else 0
        return cls(steps=int(steps), max_shift=shift)


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an independent integer offset in [-max_shift, max_shift]^2 (zero fill)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    oy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]          # [n, h, 1]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]          # [n, 1, w]
    out = padded[torch.arange(n)[:, None, None], :, rows, cols]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate_accuracy(net: FeatureNet, x01: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``net`` on display-space inputs ``x01`` with labels ``y``."""
    correct = 0
    for s in range(0, len(x01), batch_size):
        pred = net.logits(x01[s:s + batch_size]).argmax(1).cpu()
        correct += int((pred == y[s:s + batch_size]).sum())
    return correct / max(len(x01), 1)


def train_feature_net(data, arch: dict, hp: TrainSpec, *, seed: int = 0, device="cpu",
                      progress: bool = True) -> FeatureNet:
    """Train a :class:`FeatureNet` with architecture ``arch`` on ``data.train`` (labels needed)."""
    raw, y_all = data.train.x, data.train.y.to(torch.int64)    # raw storage, converted per batch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(arch)
    if arch["kind"] == "mlp":
        v = to_unit_images(data, raw).double()
        net.shift.copy_(v.mean(0))
        net.scale.copy_(v.std(0).clamp_min(1e-6) if len(v) > 1 else torch.ones(arch["in_shape"]))
    net.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=hp.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, hp.steps) / max(hp.steps, 1))))
    max_shift = hp.max_shift if arch["kind"] == "conv" else 0
    n = len(raw)
    bar = None
    if progress:
        import sys

        from tqdm.auto import tqdm
        bar = tqdm(total=hp.steps, desc=f"feature net ({data.name})", dynamic_ncols=True, leave=False,
                   mininterval=0.2 if sys.stderr.isatty() else 30.0)
    perm, pos = torch.randperm(n, generator=gen), 0
    try:
        for _ in range(hp.steps):
            if pos + hp.batch_size > n:                         # reshuffle each epoch
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + hp.batch_size]
            pos += hp.batch_size
            x = to_unit_images(data, raw[idx])
            if max_shift:
                x = _random_shift(x, max_shift, gen)
            loss = F.cross_entropy(net(x.to(device)), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    if not all(torch.isfinite(p).all() for p in net.parameters()):
        raise EnergyVAEError(f"feature net training on {data.name} diverged (non-finite weights)")
    net.eval()
    with torch.no_grad():
        sub = raw[torch.randperm(n, generator=gen)[:10000]]
        sq = sum(float(net._features(to_unit_images(data, sub[s:s + 1000])).double().pow(2).sum())
                 for s in range(0, len(sub), 1000))
        rms = (sq / (len(sub) * net.num_features)) ** 0.5
        net.feature_scale.fill_(1.0 / rms if rms > 0 else 1.0)
    return net


# ------------------------------------------------------------------------------ cache
def default_cache_dir() -> Path:
    """``$ENERGYVAE_CACHE`` if set, else ``~/.cache/energyvae/feature_nets``."""
    env = os.environ.get("ENERGYVAE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "energyvae" / "feature_nets"


def _fingerprint(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a.reshape(-1)).cast("B"))
    return h.hexdigest()


def _num_classes(data) -> int:
    k = data.info.get("num_classes") if isinstance(getattr(data, "info", None), dict) else None
    if k is None:
        ys = [s.y for s in (data.train, data.val, data.test) if s.y is not None and len(s.y)]
        k = int(max(int(y.max()) for y in ys)) + 1
    return int(k)


def feature_net_hash(data, arch: dict, hp: TrainSpec, seed: int) -> str:
    """SHA-256 (hex) identifying the feature net trained for ``data`` with ``arch``/``hp``/``seed``."""
    info = data.info if isinstance(getattr(data, "info", None), dict) else {}
    key = {
        "format": FORMAT_VERSION,
        "name": NAME,
        "dataset": data.name,
        "info": {k: info[k] for k in ("sizes", "official_test", "pool_size", "num_classes", "classes")
                 if k in info},
        "content": _fingerprint(data.train.x, data.train.y, data.test.x, data.test.y),
        "shape": [int(s) for s in data.shape],
        "num_classes": _num_classes(data),
        "architecture": arch,
        "training": dataclasses.asdict(hp),
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "data"


def _load_cached(weights: Path, meta_path: Path) -> tuple[FeatureNet, dict] | None:
    from safetensors.torch import load_file
    try:
        meta = json.loads(meta_path.read_text())
        net = FeatureNet(meta["architecture"])
        net.load_state_dict(load_file(str(weights)), strict=True)
    except Exception:  # noqa: BLE001 - a damaged entry is retrained and overwritten
        return None
    return net.eval(), meta


def get_feature_net(data, *, seed: int = 0, cache_dir: str | Path | None = None, device="cpu",
                    progress: bool = True, train_steps: int | None = None) -> tuple[nn.Module, dict]:
    """The cached (or newly trained) feature net for ``data`` and a JSON-able ``info`` dict.

    ``info = {"name", "hash", "architecture", "training", "test_accuracy", "dataset", "path",
    "seed", "cached", "train_seconds"}`` (``test_accuracy`` on the test split, or the
    validation split when the test split has no labels, else None; ``cached`` tells whether
    this call loaded the net instead of training it). ``train_steps`` overrides the number of
    training steps (it is part of the hash). Labels are required; for UNLABELLED vector data
    the raw coordinates are returned instead (a :class:`RawFeatures`, ``info["name"] =
    "raw-coordinates"``), which supports every metric except the Inception Score.
    """
    if data.train.y is None:
        if data.kind == "vector":
            dim = int(math.prod(data.shape))
            return RawFeatures(dim), {"name": "raw-coordinates", "hash": "", "architecture": {"kind": "identity",
                                      "in_shape": list(data.shape)}, "test_accuracy": None,
                                      "dataset": data.name, "path": None}
        raise EnergyVAEError(f"feature metrics need labels (or Inception weights): dataset {data.name!r} "
                             f"has no labels to train the feature network on")
    arch = architecture_for(data.shape, _num_classes(data))
    hp = TrainSpec.default_for(arch, len(data.train), train_steps)
    digest = feature_net_hash(data, arch, hp, seed)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stem = f"{_safe_name(data.name)}-{digest[:16]}"
    weights, meta_path = root / f"{stem}.safetensors", root / f"{stem}.json"
    if weights.is_file() and meta_path.is_file():
        loaded = _load_cached(weights, meta_path)
        if loaded is not None and loaded[1].get("hash") == digest:
            net, meta = loaded
            return net.to(device), {**meta, "path": str(weights), "cached": True}

    from safetensors.torch import save_file
    t0 = time.perf_counter()
    net = train_feature_net(data, arch, hp, seed=seed, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    acc_split = data.test if data.test.y is not None and len(data.test) else data.val
    acc = (evaluate_accuracy(net, to_unit_images(data, acc_split.x), acc_split.y)
           if acc_split.y is not None and len(acc_split) else None)
    meta = {"name": NAME, "hash": digest, "architecture": arch, "training": dataclasses.asdict(hp),
            "seed": int(seed), "test_accuracy": acc,
            "accuracy_split": "test" if acc_split is data.test else "val",
            "dataset": data.name, "path": str(weights), "train_seconds": round(seconds, 3)}
    try:
        root.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        atomic_write(weights, lambda p: save_file(state, p, metadata={"hash": digest}))
        atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    except OSError as e:   # an unwritable cache costs a retraining next time, nothing else
        warnings.warn(f"feature net not cached: cannot write {root}: {e.strerror or e}", stacklevel=2)
        meta["path"] = None
    return net, {**meta, "cached": False}


# ------------------------------------------------------------------------------ Inception-v3
INCEPTION_NAME = "inception-v3-compat"


class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 (``inception-v3-compat``) behind the feature-net interface.

    ``features(x01)`` -> ``[N, 2048]`` pool3 features, ``logits(x01)`` -> ``[N, 1008]``
    (``logits_unbiased``), for float ``[N, C, H, W]`` images in [0, 1] with C in 1, 3 (gray
    images are repeated to RGB; the extractor quantises to uint8 and resizes to 299 itself).
    """

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor.eval()
        self.num_features = 2048

    @property
    def device(self) -> torch.device:
        return next(self.extractor.parameters()).device

    def _run(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x01.dim() != 4 or x01.shape[1] not in (1, 3):
            raise EnergyVAEError(f"Inception features need [N, 1 or 3, H, W] images, got {list(x01.shape)}")
        x = (x01.clamp(0, 1) * 255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        with torch.no_grad():
            pool, logits = self.extractor(x.to(self.device))
        return pool.reshape(len(x), -1), logits.reshape(len(x), -1)

    def features(self, x01: torch.Tensor) -> torch.Tensor:
        return self._run(x01)[0]

    def logits(self, x01: torch.Tensor) -> torch.Tensor:
        return self._run(x01)[1]


def inception_feature_extractor(weights_path: str | Path, device="cpu") -> tuple[InceptionFeatures, dict]:
    """``(InceptionFeatures, info)`` from a local torch-fidelity Inception-v3 weights file.

    Needs the optional ``torch-fidelity`` package; a missing package, a missing file or an
    unreadable file raise a one-line :class:`EnergyVAEError`. Never downloads anything.
    """
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise EnergyVAEError(f"Inception weights {path}: file not found")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise EnergyVAEError("Inception features need the optional torch-fidelity package "
                             "(pip install torch-fidelity); it is not installed") from None
    try:
        extractor = FeatureExtractorInceptionV3(INCEPTION_NAME, ["2048", "logits_unbiased"],
                                                feature_extractor_weights_path=str(path))
    except Exception as e:  # noqa: BLE001 - torch.load / load_state_dict raise many types
        msg = str(e).splitlines()[0] if str(e) else ""
        raise EnergyVAEError(f"Inception weights {path}: cannot load ({type(e).__name__}: {msg})") from None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    net = InceptionFeatures(extractor).to(device)
    return net, {"name": INCEPTION_NAME, "hash": h.hexdigest(), "architecture": {"kind": "inception-v3"},
                 "test_accuracy": None, "dataset": None, "path": str(path)}
