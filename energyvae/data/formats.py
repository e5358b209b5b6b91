"""Readers for on-disk formats: IDX (MNIST), CIFAR pickles, image folders and NumPy arrays.

Every reader returns NumPy arrays: images as uint8 ``[N, C, H, W]``, vectors as float32
``[N, D]``, labels as int64 ``[N]`` (or None). Every failure a user can cause raises one
:class:`~energyvae.errors.DataError` line naming the file, what is wrong and what was expected.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


# ----------------------------------------------------------------------------------------- IDX
#: largest data an IDX file may declare (bytes): beyond it a header is taken as corrupt
MAX_IDX_BYTES = 8 * 2 ** 30
#: largest image (pixels) decoded from a PNG/JPEG; the declared size is checked before decoding
MAX_IMAGE_PIXELS = 2 ** 26


def _read_capped(path: Path) -> bytes:
    """The bytes of an IDX file, reading a gzip stream no further than its header promises
    (+1 byte, to detect trailing data): a decompression bomb cannot exhaust memory."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08":
            return head + f.read(64)                 # the caller reports the bad magic number
        dims_raw = f.read(4 * head[3])
        if len(dims_raw) < 4 * head[3]:
            return head + dims_raw
        n = math.prod(int.from_bytes(dims_raw[4 * i: 4 * i + 4], "big") for i in range(head[3]))
        if n > MAX_IDX_BYTES:
            raise DataError(f"{path}: the IDX header declares {n} data bytes, more than the "
                            f"{MAX_IDX_BYTES} this loader accepts (a corrupt header?)")
        return head + dims_raw + f.read(n + 1)


def check_image_size(im, path) -> None:
    """Refuse an image whose declared size exceeds MAX_IMAGE_PIXELS before it is decoded."""
    if im.width * im.height > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: image of {im.width}x{im.height} pixels is larger than the "
                        f"{MAX_IMAGE_PIXELS} pixels accepted")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed if it ends in ``.gz``) holding unsigned bytes (type 0x08)."""
    path = Path(path)
    try:
        raw = _read_capped(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        magic = raw[:4].hex() if len(raw) >= 4 else f"{len(raw)} bytes"
        raise DataError(f"{path}: wrong magic number 0x{magic}, expected 0x000008NN "
                        f"(unsigned-byte IDX with NN dimensions, e.g. 0x00000803 images, 0x00000801 labels)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, expected at least {4 + 4 * ndim})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    start, expected = 4 + 4 * ndim, math.prod(dims)
    got = len(raw) - start
    if got != expected:
        what = "truncated" if got < expected else "trailing bytes"
        raise DataError(f"{path}: {what}: header promises {'x'.join(map(str, dims))} = {expected} "
                        f"data bytes, file has {got}")
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=start).reshape(dims)  # writable copy


def _find(folder: Path, stem: str, kind: str) -> Path | None:
    """``folder/stem-{kind}-ubyte[.gz]`` (or the ``stem.{kind}-ubyte`` spelling) if present."""
    for name in (f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"):
        for suffix in ("", ".gz"):
            if (folder / (name + suffix)).is_file():
                return folder / (name + suffix)
    return None


def load_idx_folder(folder: str | Path):
    """Official train/t10k split of an MNIST-format folder; labels are optional (both or neither).

    Returns ``(x_train, y_train, x_test, y_test, files)`` with images uint8 ``[N, 1, H, W]``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected train-images-idx3-ubyte[.gz] "
                        f"and t10k-images-idx3-ubyte[.gz] in it)")
    files, out = [], []
    for stem in ("train", "t10k"):
        img, lab = _find(folder, stem, "images-idx3"), _find(folder, stem, "labels-idx1")
        if img is None:
            raise DataError(f"{folder}: missing {stem}-images-idx3-ubyte[.gz]")
        x = read_idx(img)
        if x.ndim != 3:
            raise DataError(f"{img}: expected a 3-D image array [N, H, W], got shape {x.shape}")
        files.append(str(img))
        y = None
        if lab is not None:
            y = read_idx(lab)
            if y.ndim != 1:
                raise DataError(f"{lab}: expected a 1-D label array, got shape {y.shape}")
            if len(y) != len(x):
                raise DataError(f"{lab}: {len(y)} labels but {img.name} has {len(x)} images")
            files.append(str(lab))
            y = y.astype(np.int64)
        out += [x[:, None], y]
    if (out[1] is None) != (out[3] is None):
        raise DataError(f"{folder}: labels found for only one of train and t10k (give both or neither)")
    return (*out, files)


# ------------------------------------------------------------------------------------ pickles
def _safe_encode(text, encoding="utf-8"):
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to store bytes."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "utf8"):
        raise pickle.UnpicklingError("_codecs.encode with unexpected arguments")
    return text.encode(encoding)


def _safe_bytes(*args):
    """``bytes`` without ``bytes(n)`` (which would allocate n zero bytes)."""
    if args and not isinstance(args[0], (str, bytes, bytearray)):
        raise pickle.UnpicklingError("bytes() with unexpected arguments")
    return bytes(*args)


def _numpy_globals() -> dict:
    core = getattr(np, "_core", None) or np.core   # numpy 2 renamed numpy.core to numpy._core
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = core.multiarray._reconstruct
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = core.numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only builtins dict/list/tuple/bytes/str/int and NumPy array rebuilding.

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError``.
    ``_codecs.encode`` is allowed in a checked form because protocol-2 pickles store bytes with it.
    """

    _ALLOWED = {**{(m, t.__name__): t for t in (dict, list, tuple, str, int)
                   for m in ("builtins", "__builtin__")},
                ("builtins", "bytes"): _safe_bytes, ("__builtin__", "bytes"): _safe_bytes,
                ("_codecs", "encode"): _safe_encode,
                **_numpy_globals()}

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def safe_pickle_load(path: str | Path):
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (byte-string keys, as in CIFAR)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: refusing to unpickle: {e}") from None
    except Exception as e:  # noqa: BLE001 - any corrupt pickle becomes one DataError line
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def _cifar_batch(path: Path, label_key: str):
    d = safe_pickle_load(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict batch, got {type(d).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: batch lacks key 'data' or {label_key!r} (has {sorted(map(str, d))})")
    x, y = d["data"], d[label_key]
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 3072):
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array [N, 3072], got {desc}")
    try:
        y = np.asarray(y, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {label_key!r} must be a list or array of integers") from None
    if len(y) != len(x):
        raise DataError(f"{path}: {len(y)} labels but {len(x)} images")
    return x.reshape(-1, 3, 32, 32), y


def load_cifar(path: str | Path, which: str):
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``, fine labels).

    ``path`` is the batch folder itself or its parent. Returns ``(x_train, y_train, x_test,
    y_test, files)`` with images uint8 ``[N, 3, 32, 32]``.
    """
    path = Path(path)
    sub, train_files, test_file, key = (
        ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels")
        if which == "cifar10" else ("cifar-100-python", ["train"], "test", "fine_labels"))
    folder = path / sub if (path / sub).is_dir() else path
    if not folder.is_dir():
        raise DataError(f"{path}: folder not found (expected the extracted {sub} folder)")
    missing = [n for n in train_files + [test_file] if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder}: missing {which} batch file(s) {', '.join(missing)} "
                        f"(path should be the extracted {sub} folder or its parent)")
    parts = [_cifar_batch(folder / n, key) for n in train_files]
    x_test, y_test = _cifar_batch(folder / test_file, key)
    files = [str(folder / n) for n in train_files + [test_file]]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            x_test, y_test, files)


# ------------------------------------------------------------------------------- image folder
def load_image_folder(root: str | Path, image_size: int | None = None, grayscale: bool = False,
                      crop: str = "none", crop_size: int | None = None):
    """PNG/JPEG files under ``root`` (recursively, sorted paths) as uint8 ``[N, C, H, W]``.

    C is 1 when ``grayscale`` or when every image is grayscale, else 3 (alpha dropped). Each
    image is centre-cropped and resized by :func:`fit_image` (``crop``, ``crop_size``,
    ``image_size``). When ``root`` has two or more top-level subfolders holding every image, the
    sorted subfolder names are the classes and labels are their indices; otherwise there are no
    labels. Returns ``(x, y, classes)``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{root}: no .png/.jpg/.jpeg images found (searched recursively)")
    modes, sizes = [], []
    for p in files:
        with open_image(p) as im:
            modes.append(im.mode)
            sizes.append(im.size)
    outs = [fitted_size(w, h, crop, crop_size, image_size, p) for p, (w, h) in zip(files, sizes)]
    if len(set(outs)) > 1:
        j = next(i for i, s in enumerate(outs) if s != outs[0])
        (w0, h0), (w1, h1) = sizes[0], sizes[j]
        raise DataError(f"{root}: images of mixed sizes (width x height), e.g. {files[0]} is {w0}x{h0} "
                        f"but {files[j]} is {w1}x{h1} (set data.image_size to resize)")
    mode = "L" if grayscale or all(m in _GRAY_MODES for m in modes) else "RGB"
    arrays = []
    for p in files:
        with open_image(p) as im:
            arrays.append(fit_image(im, mode, crop, crop_size, image_size, p))
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    tops = [p.relative_to(root).parts for p in files]
    classes = sorted({t[0] for t in tops if len(t) > 1})
    y = None
    if len(classes) >= 2 and all(len(t) > 1 for t in tops):
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[t[0]] for t in tops], dtype=np.int64)
    else:
        classes = []
    return np.ascontiguousarray(x), y, classes


@contextlib.contextmanager
def open_image(path, data: bytes | None = None, where=None):
    """``with open_image(path) as im``: a lazily opened PIL image (from ``data`` when given) whose
    declared size is checked first (:func:`check_image_size`); a failure to open or decode it
    inside the block is one :class:`DataError` naming ``where`` (default ``path``)."""
    from PIL import Image

    where = where or path
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            check_image_size(im, where)
            yield im
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{where}: unreadable image ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------------- NumPy files
NPZ_KEYS = ({"x"}, {"x", "y"}, {"train_x", "test_x"}, {"train_x", "train_y", "test_x", "test_y"})


def _as_data(a: np.ndarray, where: str) -> np.ndarray:
    """uint8 images (NHW, NHWC or NCHW) -> ``[N, C, H, W]``; float [N, D] -> float32."""
    if a.dtype == np.uint8:
        if a.ndim == 3:
            return a[:, None]
        if a.ndim == 4:
            if a.shape[-1] in (1, 3):
                return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
            if a.shape[1] in (1, 3):
                return a
            raise DataError(f"{where}: uint8 image array of shape {a.shape} has no channel axis of "
                            f"size 1 or 3 (expected NHWC or NCHW)")
    elif np.issubdtype(a.dtype, np.floating) and a.ndim == 2:
        return a.astype(np.float32)
    raise DataError(f"{where}: unsupported array {a.dtype} of shape {a.shape} (expected uint8 images "
                    f"[N,H,W], [N,H,W,C] or [N,C,H,W] with C in 1/3, or float vectors [N,D])")


def _as_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if not (np.issubdtype(y.dtype, np.integer) and y.ndim == 1):
        raise DataError(f"{where}: labels must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{where}: {len(y)} labels but {n} examples")
    return y.astype(np.int64)


def load_array(path: str | Path):
    """A ``.npy`` file (data only) or a ``.npz`` file with keys ``x`` [+ ``y``] or
    ``train_x``, ``test_x`` [+ ``train_y``, ``test_y``] (an official test split).

    Data: uint8 images ``[N,H,W]``, ``[N,H,W,C]`` or ``[N,C,H,W]`` (C in 1, 3; channels-last when
    the last axis has 1 or 3 entries), or float vectors ``[N, D]``. Returns
    ``(x, y, x_test, y_test)``; the test entries are None without an official split.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: expected a .npy or .npz file")
    try:
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            arrays = {"x": loaded} if path.suffix == ".npy" else {k: loaded[k] for k in loaded.files}
    except Exception as e:  # noqa: BLE001 - numpy raises many types for corrupt files
        raise DataError(f"{path}: cannot read array file ({type(e).__name__}: {e})") from None
    if path.suffix == ".npy":
        return _as_data(arrays["x"], str(path)), None, None, None
    if set(arrays) not in NPZ_KEYS:
        raise DataError(f"{path}: bad npz keys {sorted(arrays)}; expected x [, y] or "
                        f"train_x, test_x [, train_y, test_y]")
    pre = "train_" if "train_x" in arrays else ""
    x = _as_data(arrays[pre + "x"], f"{path}[{pre}x]")
    y = _as_labels(arrays[pre + "y"], len(x), f"{path}[{pre}y]") if pre + "y" in arrays else None
    if not pre:
        return x, y, None, None
    xt = _as_data(arrays["test_x"], f"{path}[test_x]")
    if xt.shape[1:] != x.shape[1:] or xt.dtype != x.dtype:
        raise DataError(f"{path}: test_x {xt.dtype} {xt.shape[1:]} does not match "
                        f"train_x {x.dtype} {x.shape[1:]}")
    yt = _as_labels(arrays["test_y"], len(xt), f"{path}[test_y]") if y is not None else None
    return x, y, xt, yt


# --------------------------------------------------------------------------- image transforms
def to_grayscale(x: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` -> ``[N, 1, H, W]`` with PIL's "L" weights (ITU-R 601-2)."""
    if x.shape[1] == 1:
        return x
    r, g, b = (x[:, i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[:, None]


def center_box(width: int, height: int, side: int) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` box of the ``side`` x ``side`` centre square, with
    torchvision's ``CenterCrop`` offsets: ``left = int(round((width - side) / 2))``, likewise top
    (Python's round, half to even)."""
    left, top = int(round((width - side) / 2)), int(round((height - side) / 2))
    return left, top, left + side, top + side


def fitted_size(width: int, height: int, crop: str, crop_size: int | None, image_size: int | None,
                where) -> tuple[int, int]:
    """``(width, height)`` after :func:`fit_image`; a crop larger than the image is a DataError."""
    if crop == "center":
        side = crop_size or min(width, height)
        if side > min(width, height):
            raise DataError(f"{where}: a {side}x{side} centre crop does not fit in {width}x{height} pixels "
                            f"(set data.crop_size to at most {min(width, height)})")
        width = height = side
    return (image_size, image_size) if image_size is not None else (width, height)


def fit_image(im, mode: str, crop: str, crop_size: int | None, image_size: int | None, where) -> np.ndarray:
    """One PIL image -> uint8 ``[H, W]`` (mode "L") or ``[H, W, 3]`` (mode "RGB"): converted to
    ``mode``, centre-cropped (``crop == "center"``: a ``crop_size`` square, default the shorter
    side, box :func:`center_box`), then resized to ``image_size`` squared with PIL's bilinear
    filter (antialiased when shrinking; the same pixels as :func:`resize` of the array)."""
    from PIL import Image

    fitted_size(im.width, im.height, crop, crop_size, None, where)
    im = im.convert(mode)
    if crop == "center":
        im = im.crop(center_box(im.width, im.height, crop_size or min(im.size)))
    if image_size is not None and im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def center_crop(x: np.ndarray, side: int | None, where) -> np.ndarray:
    """Centre square of uint8 ``[N, C, H, W]`` (``side`` None: the shorter side), as :func:`fit_image`."""
    h, w = x.shape[2:]
    side = side or min(h, w)
    fitted_size(w, h, "center", side, None, where)
    left, top, right, bottom = center_box(w, h, side)
    return x if (h, w) == (side, side) else np.ascontiguousarray(x[:, :, top:bottom, left:right])


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Square bilinear resize (PIL) of uint8 ``[N, C, H, W]``."""
    from PIL import Image

    if x.shape[2:] == (size, size):
        return x
    out = np.empty((len(x), x.shape[1], size, size), dtype=np.uint8)
    for i, img in enumerate(x):
        for c in range(x.shape[1]):
            out[i, c] = np.asarray(Image.fromarray(img[c]).resize((size, size), Image.BILINEAR))
    return out
