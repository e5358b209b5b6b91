"""Readers for the papers' datasets in the formats their authors ship them: STL-10's binary
files, LSUN's LMDB databases, the downsampled-ImageNet npz batches and CelebA's aligned images
with its official partition.

Like :mod:`energyvae.data.formats`, every reader returns NumPy arrays (images uint8
``[N, C, H, W]``, labels int64 ``[N]`` or None), reads without writing anything, and raises one
:class:`~energyvae.errors.DataError` line naming the file, what is wrong and the fix. Images
decoded from files (LSUN, CelebA) are centre-cropped and resized one at a time as they are
decoded (:func:`formats.fit_image`), so only the final arrays are held in memory.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .formats import IMAGE_SUFFIXES, fit_image, open_image

# ------------------------------------------------------------------------------------- STL-10
STL_SIDE = 96
STL_BYTES = 3 * STL_SIDE * STL_SIDE
#: data.subset of stl10 -> the image files that form the training pool
STL_SUBSETS = {"train": ("train_X.bin",), "unlabeled": ("unlabeled_X.bin",),
               "train+unlabeled": ("train_X.bin", "unlabeled_X.bin")}
_STL_FIX = "re-extract stl10_binary.tar.gz"


def _stl_folder(path: Path) -> Path:
    for folder in (path / "stl10_binary", path):
        if (folder / "test_X.bin").is_file():
            return folder
    raise DataError(f"{path}: no stl10_binary/test_X.bin here (data.path should be the extracted "
                    f"stl10_binary folder or its parent)")


def _stl_count(path: Path) -> int:
    if not path.is_file():
        raise DataError(f"{path}: file not found ({_STL_FIX})")
    size = path.stat().st_size
    if size == 0 or size % STL_BYTES:
        raise DataError(f"{path}: truncated: {size} bytes is not a whole number of 3x96x96 images "
                        f"({STL_BYTES} bytes each; {_STL_FIX})")
    return size // STL_BYTES


def _stl_images(paths: list[Path]) -> np.ndarray:
    """The images of STL-10 ``*_X.bin`` files, concatenated, as ``[N, 3, 96, 96]`` (C, H, W).

    Each image is 3 planes (R, G, B) of 96x96 bytes stored column-major, so a plane reshaped
    row-major is ``[x, y]`` and is transposed to ``[y, x]``: the official reader's
    ``reshape(-1, 3, 96, 96)`` then ``transpose(0, 3, 2, 1)`` (to N, H, W, C), here kept
    channels-first as torchvision's ``transpose(0, 1, 3, 2)``. Read in chunks from a read-only
    memory map into one preallocated array.
    """
    counts = [_stl_count(p) for p in paths]
    out = np.empty((sum(counts), 3, STL_SIDE, STL_SIDE), dtype=np.uint8)
    at = 0
    for p, n in zip(paths, counts):
        raw = np.memmap(p, dtype=np.uint8, mode="r").reshape(n, 3, STL_SIDE, STL_SIDE)
        for i in range(0, n, 4096):
            j = min(n, i + 4096)
            out[at + i: at + j] = raw[i:j].transpose(0, 1, 3, 2)
        at += n
        del raw
    return out


def _stl_labels(path: Path, n: int, images: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found ({_STL_FIX})")
    y = np.fromfile(path, dtype=np.uint8)
    if len(y) != n:
        raise DataError(f"{path}: {len(y)} labels but {images.name} has {n} images ({_STL_FIX})")
    if n and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels must be 1..10, found {int(y.min())}..{int(y.max())} ({_STL_FIX})")
    return y.astype(np.int64) - 1


def load_stl10(path: str | Path, subset: str = "train"):
    """STL-10 (``stl10_binary``: ``train_X.bin``/``train_y.bin`` 5,000 labelled, ``test_X.bin``/
    ``test_y.bin`` 8,000, ``unlabeled_X.bin`` 100,000) as 3x96x96 images, labels 1..10 -> 0..9.

    ``subset`` picks the training pool: ``train`` (labelled), ``unlabeled`` or
    ``train+unlabeled``; the official test set is ``test_X.bin`` in every case, with labels only
    when the pool has them. Returns ``(x, y, x_test, y_test, files)``.
    """
    folder = _stl_folder(Path(path))
    pool = [folder / n for n in STL_SUBSETS[subset]]
    x, xt = _stl_images(pool), _stl_images([folder / "test_X.bin"])
    files = [str(p) for p in pool] + [str(folder / "test_X.bin")]
    if subset != "train":
        return x, None, xt, None, files
    y = _stl_labels(folder / "train_y.bin", len(x), pool[0])
    yt = _stl_labels(folder / "test_y.bin", len(xt), folder / "test_X.bin")
    return x, y, xt, yt, files + [str(folder / "train_y.bin"), str(folder / "test_y.bin")]


# ------------------------------------------------------------------------- downsampled ImageNet
_BATCH = re.compile(r"train_data_batch_(\d+)\.npz")


def _npz_header(path: Path, key: str, names: list[str]):
    """Shape and dtype of ``key`` in an npz file, from the member's .npy header (no data read)."""
    if f"{key}.npy" not in names:
        keys = ", ".join(sorted(n[:-4] for n in names if n.endswith(".npy"))) or "none"
        raise DataError(f"{path}: missing key {key!r} (has: {keys}); expected a downsampled-ImageNet "
                        f"batch with keys data, labels[, mean]: re-download it")
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version not in read:
            raise DataError(f"{path}: {key}.npy has .npy format version {version}, expected 1.0 or 2.0")
        shape, _, dtype = read[version](f)
    return shape, dtype


def _imagenet_files(root: Path, side: int) -> tuple[list[Path], Path | None]:
    """``train_data_batch_1..K.npz`` and ``val_data.npz`` in ``root`` or its subfolders (the
    official archives extract to ``Imagenet{side}_train_npz/`` and ``Imagenet{side}_val_npz/``)."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected train_data_batch_*.npz in it or in a subfolder)")
    found: dict[str, list[Path]] = {}
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for p in folder.iterdir():
            if _BATCH.fullmatch(p.name) or p.name == "val_data.npz":
                found.setdefault(p.name, []).append(p)
    for name, paths in found.items():
        if len(paths) > 1:     # e.g. Imagenet32_* and Imagenet64_* side by side: keep this size
            paths[:] = [p for p in paths if str(side) in p.parent.name] or paths
        if len(paths) > 1:
            where = ", ".join(str(p.parent) for p in paths)
            raise DataError(f"{root}: {name} found in {len(paths)} folders ({where}); point data.path at one of them")
    numbers = sorted(int(_BATCH.fullmatch(n)[1]) for n in found if n != "val_data.npz")
    if not numbers:
        raise DataError(f"{root}: no train_data_batch_*.npz found (here or one folder down)")
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if missing:
        raise DataError(f"{root}: train_data_batch_{missing[0]}.npz is missing (found batches "
                        f"{', '.join(map(str, numbers))}; the download is incomplete)")
    val = found.get("val_data.npz", [None])[0]
    return [found[f"train_data_batch_{i}.npz"][0] for i in numbers], val


def _imagenet_read(paths: list[Path], side: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated images ``[N, 3, side, side]`` and labels (1..1000 -> 0..999) of npz batches:
    each row of ``data`` is the R plane, then G, then B, each row-major, so a reshape to
    ``(3, side, side)`` is C, H, W. Headers are read first and the output preallocated."""
    width, counts = 3 * side * side, []
    for p in paths:
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
            (shape, dtype), (lshape, ldtype) = _npz_header(p, "data", names), _npz_header(p, "labels", names)
        except DataError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{p}: cannot read npz batch ({type(e).__name__}: {e}); re-download it") from None
        if dtype != np.uint8 or len(shape) != 2 or shape[1] != width:
            raise DataError(f"{p}: data is {dtype} {shape}, expected uint8 [N, {width}] "
                            f"(3x{side}x{side} images; is this the {side}x{side} download?)")
        if len(lshape) != 1 or lshape[0] != shape[0] or not np.issubdtype(ldtype, np.integer):
            raise DataError(f"{p}: labels are {ldtype} {lshape}, expected {shape[0]} integers")
        counts.append(shape[0])
    x = np.empty((sum(counts), 3, side, side), dtype=np.uint8)
    y = np.empty(sum(counts), dtype=np.int64)
    at = 0
    for p, n in zip(paths, counts):
        try:
            with np.load(p, allow_pickle=False) as z:
                x[at:at + n] = z["data"].reshape(n, 3, side, side)
                y[at:at + n] = z["labels"]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{p}: cannot read npz batch ({type(e).__name__}: {e}); re-download it") from None
        lab = y[at:at + n]
        if n and (lab.min() < 1 or lab.max() > 1000):
            raise DataError(f"{p}: labels must be 1..1000, found {int(lab.min())}..{int(lab.max())}")
        at += n
    return x, y - 1


def load_imagenet(path: str | Path, side: int):
    """Downsampled ImageNet (Chrabaszcz et al. 2017) at ``side`` 32 or 64: the npz batches
    ``train_data_batch_1..K.npz`` (contiguous from 1; K = 10 in the release) form the pool and
    ``val_data.npz`` (50,000 images), when present, the official test set. Keys ``data``
    (uint8 ``[N, 3 side^2]``), ``labels`` (1..1000), ``mean`` (ignored). Returns
    ``(x, y, x_test, y_test, files)``."""
    train, val = _imagenet_files(Path(path), side)
    x, y = _imagenet_read(train, side)
    xt = yt = None
    if val is not None:
        xt, yt = _imagenet_read([val], side)
    return x, y, xt, yt, [str(p) for p in train + ([val] if val else [])]


# ----------------------------------------------------------------------------- encoded images
def _decode_all(items, n: int, mode: str, crop: str, crop_size: int | None, image_size: int | None,
                source) -> np.ndarray:
    """``items`` yields ``(where, path, data)``; every image is decoded, fitted and written into
    one preallocated ``[n, C, H, W]`` array; a size differing from the first is a DataError."""
    out, count = None, 0
    for i, (where, path, data) in enumerate(items):
        if i >= n:
            raise DataError(f"{where}: more images than the {n} expected")
        with open_image(path, data, where) as im:
            a = fit_image(im, mode, crop, crop_size, image_size, where)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if out is None:
            out = np.empty((n, *a.shape), dtype=np.uint8)
            first = where
        elif a.shape != out.shape[1:]:
            raise DataError(f"{where}: image of {a.shape[2]}x{a.shape[1]} after the crop, but {first} gives "
                            f"{out.shape[3]}x{out.shape[2]} (set data.image_size)")
        out[i] = a
        count = i + 1
    if out is None or count != n:
        raise DataError(f"{source}: expected {n} images, read {count}")
    return out


# ---------------------------------------------------------------------------------------- LSUN
def load_lsun(path: str | Path, mode: str = "RGB", crop: str = "center", crop_size: int | None = None,
              image_size: int | None = None):
    """One LSUN LMDB database as released (e.g. ``church_outdoor_train_lmdb/`` with
    ``data.mdb``): keys are image ids, values encoded images (WebP, or JPEG in some exports),
    read in key order through the ``lmdb`` package (opened read-only, without a lock file).
    The images have a shorter side of 256 and are centre-cropped and resized as they are
    decoded. Returns ``(x, info)``."""
    path = Path(path)
    fix = f"re-download and unzip {path.name}"
    if not (path / "data.mdb").is_file():
        raise DataError(f"{path}: not an LMDB database folder (no data.mdb in it); data.path should be "
                        f"the unzipped <category>_train_lmdb folder")
    try:
        import lmdb
    except ImportError:
        raise DataError(f"{path}: reading LSUN needs the lmdb package: pip install 'energyvae[lsun]'") from None
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False,
                        max_readers=1, subdir=True, create=False)
    except lmdb.Error as e:
        raise DataError(f"{path}: cannot open the LMDB database ({type(e).__name__}: {e}); {fix}") from None
    try:
        with env.begin(write=False) as txn:
            n = txn.stat()["entries"]
            if n == 0:
                raise DataError(f"{path}: the LMDB database holds no records ({fix})")
            items = ((f"{path}: record {_key(k)}", None, bytes(v)) for k, v in txn.cursor())
            x = _decode_all(items, n, mode, crop, crop_size, image_size, f"{path} ({fix})")
    except lmdb.Error as e:
        raise DataError(f"{path}: corrupt LMDB database ({type(e).__name__}: {e}); {fix}") from None
    finally:
        env.close()
    return x, {"source": str(path), "records": n}


def _key(k: bytes) -> str:
    try:
        return k.decode("ascii") if k.isascii() and k.decode("ascii").isprintable() else k.hex()
    except UnicodeDecodeError:
        return k.hex()


# -------------------------------------------------------------------------------------- CelebA
#: CelebA's conventional crop: the 140x140 centre square of the 178x218 aligned image (see load_celeba)
CELEBA_CROP = 140
CELEBA_SPLITS = {0: "train", 1: "val", 2: "test"}


def _celeba_dirs(root: Path) -> tuple[Path, Path | None]:
    """The image folder and the partition file of a CelebA download (the official layout
    ``Img/img_align_celeba/`` + ``Eval/list_eval_partition.txt``, torchvision's
    ``img_align_celeba/`` + ``list_eval_partition.txt``, or the image folder itself)."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected img_align_celeba/ in it)")
    images = next((d for d in (root / "img_align_celeba", root / "Img" / "img_align_celeba") if d.is_dir()), root)
    for p in (root / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt",
              images.parent / "list_eval_partition.txt", images.parent.parent / "Eval" / "list_eval_partition.txt"):
        if p.is_file():
            return images, p
    return images, None


def _partition(path: Path) -> dict[str, int]:
    out = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the partition file ({type(e).__name__}: {e})") from None
    for i, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}: line {i} is {line.strip()!r}, expected '<file name> <0|1|2>' "
                            f"(0 train, 1 val, 2 test)")
        out[parts[0]] = int(parts[1])
    if not out:
        raise DataError(f"{path}: empty partition file (expected lines '000001.jpg 0')")
    return out


def load_celeba(path: str | Path, mode: str = "RGB", crop: str = "center", crop_size: int | None = CELEBA_CROP,
                image_size: int | None = None):
    """CelebA's aligned images (``img_align_celeba/*.jpg``, 178x218), split by
    ``list_eval_partition.txt`` when present (0 train, 1 val, 2 test: 162,770 / 19,867 / 19,962).

    The crop: by default the 140x140 centre square (box (19, 39, 159, 179)), then the resize
    to ``image_size``: the "closecrop" of the Wasserstein auto-encoder code (Tolstikhin et al.
    2018; ``tolstikhin/wae``, ``datahandler.py``, ``_read_celeba_image``), whose comment traces
    it to DCGAN and AVB. It keeps the face and drops most of the background. The other common
    choice, ``CenterCrop(148)`` of the ``AntixK/PyTorch-VAE`` code and the many VAE repositories
    built on it, is ``data.crop_size: 148``. We resize with PIL's bilinear filter (antialiased),
    where the WAE code used PIL's ANTIALIAS (Lanczos).

    With a partition file every image must be listed and every listed file present. Returns
    ``(x, x_val, x_test, info)``; ``x_val`` and ``x_test`` are None without a partition file.
    """
    images, part_file = _celeba_dirs(Path(path))
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{images}: no .jpg/.png images found (expected img_align_celeba/*.jpg)")
    info = {"source": str(images), "partition": str(part_file) if part_file else None,
            "crop": f"{crop} {crop_size or 'shorter side'}" if crop == "center" else "none"}
    def read(group: list[Path]) -> np.ndarray:
        return _decode_all(((p, p, None) for p in group), len(group), mode, crop, crop_size, image_size, images)

    if part_file is None:
        return read(files), None, None, info
    part = _partition(part_file)
    unlisted = [p for p in files if p.name not in part]
    if unlisted:
        raise DataError(f"{unlisted[0]}: not listed in {part_file} ({len(unlisted)} images are not; "
                        f"use the partition file of this download, or remove it to split at random)")
    names = {p.name for p in files}
    absent = [n for n in part if n not in names]
    if absent:
        raise DataError(f"{images / absent[0]}: listed in {part_file} but missing ({len(absent)} files "
                        f"missing; the download is incomplete)")
    groups = {s: [p for p in files if part[p.name] == s] for s in (0, 1, 2)}
    if not groups[0]:
        raise DataError(f"{part_file}: no image is in the train partition (0)")
    info["partition_sizes"] = {CELEBA_SPLITS[s]: len(g) for s, g in groups.items()}
    return (read(groups[0]), read(groups[1]) if groups[1] else None,
            read(groups[2]) if groups[2] else None, info)
