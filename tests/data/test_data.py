"""Tests of energyvae.data: formats, corrupt inputs, toy sets, exact U1..U4 sampling, transforms, splits."""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from energyvae.data import (DataBundle, DataConfig, Preprocess, available_datasets, formats,
                            load_data, toy2d)
from energyvae.errors import ConfigError, DataError
from energyvae.registry import parse_params

FASHION = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------- file writers
def write_idx(path: Path, arr: np.ndarray, gz: bool = False, magic: int | None = None) -> Path:
    arr = np.asarray(arr, dtype=np.uint8)
    head = struct.pack(">I", magic if magic is not None else 0x800 + arr.ndim)
    head += b"".join(struct.pack(">I", d) for d in arr.shape)
    data = head + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def mnist_folder(root: Path, gz: bool, n=(7, 3), labels: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for stem, k in zip(("train", "t10k"), n):
        x = rng.integers(0, 256, (k, 5, 4), dtype=np.uint8)
        y = rng.integers(0, 10, k, dtype=np.uint8)
        write_idx(root / f"{stem}-images-idx3-ubyte", x, gz)
        if labels:
            write_idx(root / f"{stem}-labels-idx1-ubyte", y, gz)
        arrays[stem] = (x, y)
    return arrays


def cifar_folder(root: Path, which: str, n: int = 4, list_labels: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    sub, names, key = (("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels")
                       if which == "cifar10" else ("cifar-100-python", ["train", "test"], b"fine_labels"))
    folder = root / sub
    folder.mkdir(parents=True)
    out = {}
    for name in names:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10 if which == "cifar10" else 100, n).astype(np.uint8)
        label = b"" if name == names[0] else name.encode()   # b"" pickles as bytes()
        d = {b"batch_label": label, b"data": x, key: y.tolist() if list_labels else y,
             b"filenames": [f"f{i}.png".encode() for i in range(n)]}
        if which == "cifar100":
            d[b"coarse_labels"] = (y // 5).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        out[name] = (x.reshape(n, 3, 32, 32), y)
    return folder, out


def save_image(path: Path, arr: np.ndarray):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def assert_data_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert excinfo.value.__suppress_context__ or excinfo.value.__context__ is None
    for frag in fragments:
        assert str(frag) in msg, (frag, msg)


# ------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    arrays = mnist_folder(tmp_path, gz)
    b = load_data(DataConfig(name="mnist-idx", path=str(tmp_path), val_fraction=0.0))
    assert b.kind == "image" and b.shape == (1, 5, 4) and b.info["official_test"]
    # val_fraction 0 keeps all of train, in permuted order
    x, y = arrays["train"]
    got = sorted((xx.tobytes(), int(yy)) for xx, yy in zip(b.train.x.numpy()[:, 0], b.train.y.numpy()))
    assert got == sorted((xx.tobytes(), int(yy)) for xx, yy in zip(x, y))
    assert np.array_equal(b.test.x.numpy()[:, 0], arrays["t10k"][0])
    assert np.array_equal(b.test.y.numpy(), arrays["t10k"][1])
    assert b.test.y.dtype == torch.int64 and b.test.x.dtype == torch.uint8


def test_idx_without_labels(tmp_path):
    mnist_folder(tmp_path, gz=True, labels=False)
    b = load_data(DataConfig(name="mnist-idx", path=str(tmp_path)))
    assert b.train.y is None and b.test.y is None and len(b.test) == 3


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
@pytest.mark.parametrize("list_labels", [False, True])
def test_cifar_roundtrip(tmp_path, which, list_labels):
    folder, out = cifar_folder(tmp_path, which, list_labels=list_labels)
    # the real batches were pickled by numpy 1.x, whose arrays reference numpy.core.multiarray
    first = folder / ("data_batch_1" if which == "cifar10" else "train")
    first.write_bytes(first.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    # path may be the batch folder or its parent
    for path in (folder, tmp_path):
        b = load_data(DataConfig(name=which, path=str(path), val_fraction=0.0))
        test_name = "test_batch" if which == "cifar10" else "test"
        assert b.shape == (3, 32, 32) and b.info["official_test"]
        assert np.array_equal(b.test.x.numpy(), out[test_name][0])
        assert np.array_equal(b.test.y.numpy(), out[test_name][1])
        train = {bytes(xx.tobytes()): int(yy) for n, (xs, ys) in out.items() if n != test_name
                 for xx, yy in zip(xs, ys)}
        assert len(b.train) == len(train)
        for xx, yy in zip(b.train.x.numpy(), b.train.y.numpy()):
            assert train[xx.tobytes()] == yy


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_image_folder_with_classes(tmp_path, ext):
    colors = {"cats": (200, 30, 30), "dogs": (20, 40, 220)}
    for cls, rgb in colors.items():
        for i in range(3):
            save_image(tmp_path / cls / f"{i}.{ext}", np.full((6, 5, 3), rgb, dtype=np.uint8))
    b = load_data(DataConfig(name="image-folder", path=str(tmp_path), test_fraction=0.0, val_fraction=0.0))
    assert b.shape == (3, 6, 5) and b.info["classes"] == ["cats", "dogs"]
    tol = 0 if ext == "png" else 6
    for x, y in zip(b.train.x, b.train.y):
        rgb = torch.tensor(colors[["cats", "dogs"][y]], dtype=torch.int16)
        assert (x.to(torch.int16) - rgb[:, None, None]).abs().max() <= tol
    g = load_data(DataConfig(name="image-folder", path=str(tmp_path), grayscale=True, image_size=4))
    assert g.shape == (1, 4, 4)


def test_image_folder_grayscale_no_labels(tmp_path):
    for i in range(5):
        save_image(tmp_path / "sub" / f"{i}.png", np.full((4, 4), i * 10, dtype=np.uint8))
    b = load_data(DataConfig(name="image-folder", path=str(tmp_path), test_fraction=0.2, val_fraction=0.0))
    assert b.shape == (1, 4, 4) and b.train.y is None and len(b.test) == 1


def test_npy_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", nhwc)
    b = load_data(DataConfig(name="array", path=str(tmp_path / "a.npy"), val_fraction=0, test_fraction=0))
    assert b.shape == (3, 6, 6) and b.train.y is None
    got = {t.tobytes() for t in b.train.x.numpy()}
    assert got == {t.tobytes() for t in nhwc.transpose(0, 3, 1, 2)}

    vec = rng.standard_normal((20, 5))
    np.savez(tmp_path / "v.npz", x=vec, y=np.arange(20))
    b = load_data(DataConfig(name="array", path=str(tmp_path / "v.npz"), val_fraction=0.2, test_fraction=0.2))
    assert b.kind == "vector" and b.shape == (5,) and b.train.x.dtype == torch.float32
    assert b.preprocess.value_range is None
    for s in (b.train, b.val, b.test):
        assert np.allclose(s.x.numpy(), vec[s.y.numpy()].astype(np.float32))

    nchw = rng.integers(0, 256, (8, 1, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", train_x=nchw, train_y=np.arange(8), test_x=nchw[:3], test_y=np.arange(3))
    b = load_data(DataConfig(name="array", path=str(tmp_path / "s.npz")))
    assert b.info["official_test"] and len(b.test) == 3 and len(b.train) + len(b.val) == 8
    assert np.array_equal(b.test.x.numpy(), nchw[:3])

    np.save(tmp_path / "rgb.npy", nhwc)
    g = load_data(DataConfig(name="array", path=str(tmp_path / "rgb.npy"), grayscale=True, image_size=3))
    assert g.shape == (1, 3, 3)


# --------------------------------------------------------------------------- corrupt inputs
def test_missing_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="mnist-idx", path=str(tmp_path / "nope")))
    assert_data_error(e, tmp_path / "nope")
    mnist_folder(tmp_path / "m", gz=False)
    os.remove(tmp_path / "m" / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="mnist-idx", path=str(tmp_path / "m")))
    assert_data_error(e, tmp_path / "m", "t10k-images")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="array", path=str(tmp_path / "x.npz")))
    assert_data_error(e, "x.npz", "not found")
    folder, _ = cifar_folder(tmp_path / "c", "cifar10")
    os.remove(folder / "data_batch_3")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", path=str(folder)))
    assert_data_error(e, folder, "data_batch_3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="image-folder", path=str(tmp_path / "empty")))
    assert_data_error(e, tmp_path / "empty", "no .png")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx(tmp_path, gz):
    p = write_idx(tmp_path / "t.idx", np.zeros((4, 3, 3)), gz)
    data = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
    data = data[:-5]
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as e:
        formats.read_idx(p)
    assert_data_error(e, p, "truncated", "36")
    if gz:  # a cut gzip stream
        p.write_bytes(gzip.compress(b"\0" * 100)[:20])
        with pytest.raises(DataError) as e:
            formats.read_idx(p)
        assert_data_error(e, p)


def test_wrong_magic_and_count_mismatch(tmp_path):
    mnist_folder(tmp_path, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((7, 5, 4)), magic=0x00000D03)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="mnist-idx", path=str(tmp_path)))
    assert_data_error(e, tmp_path / "train-images-idx3-ubyte", "magic")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((7, 5, 4)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="mnist-idx", path=str(tmp_path)))
    assert_data_error(e, tmp_path / "train-labels-idx1-ubyte", "6 labels", "7 images")


def test_mixed_sizes_and_unreadable_images(tmp_path):
    save_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    save_image(tmp_path / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="image-folder", path=str(tmp_path)))
    assert_data_error(e, tmp_path / "a.png", "4x4", tmp_path / "b.png", "4x5")
    b = load_data(DataConfig(name="image-folder", path=str(tmp_path), image_size=3, test_fraction=0, val_fraction=0))
    assert b.shape == (1, 3, 3)
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="image-folder", path=str(tmp_path), image_size=3))
    assert_data_error(e, tmp_path / "c.jpg", "unreadable")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _HugeBytes:
    def __reduce__(self):
        return (bytes, (10**12,))


def test_malicious_pickle_rejected(tmp_path):
    folder, _ = cifar_folder(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", path=str(folder)))
    assert_data_error(e, folder / "data_batch_2", "not allowed")
    assert not marker.exists()
    with open(folder / "data_batch_2", "wb") as f:   # allowed globals with abusive arguments
        pickle.dump({b"data": _HugeBytes(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", path=str(folder)))
    assert_data_error(e, folder / "data_batch_2", "bytes()")
    with open(folder / "data_batch_2", "wb") as f:   # builtins beyond the allow-list are refused too
        pickle.dump({b"data": eval, b"labels": [0]}, f)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", path=str(folder)))
    assert_data_error(e, "builtins.eval")
    (folder / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="cifar10", path=str(folder)))
    assert_data_error(e, folder / "data_batch_2")


def test_bad_arrays(tmp_path):
    cases = {"f.npy": np.zeros((3, 4, 4), np.float32), "r.npy": np.zeros(5, np.uint8),
             "c.npy": np.zeros((2, 5, 5, 5), np.uint8)}
    for name, arr in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(DataError) as e:
            load_data(DataConfig(name="array", path=str(tmp_path / name)))
        assert_data_error(e, tmp_path / name, "expected")
    np.savez(tmp_path / "k.npz", images=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="array", path=str(tmp_path / "k.npz")))
    assert_data_error(e, tmp_path / "k.npz", "bad npz keys", "images")
    np.savez(tmp_path / "y.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="array", path=str(tmp_path / "y.npz")))
    assert_data_error(e, tmp_path / "y.npz", "2 labels but 3")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="array", path=str(tmp_path / "o.npy")))
    assert_data_error(e, tmp_path / "o.npy")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="array", path=str(tmp_path / "g.npz")))
    assert_data_error(e, tmp_path / "g.npz")


# ------------------------------------------------------------------------------ built-in sets
def test_digits():
    b = load_data(DataConfig(name="digits"))
    assert isinstance(b, DataBundle) and b.kind == "image" and b.shape == (1, 8, 8)
    assert b.train.x.dtype == torch.uint8 and b.train.x.shape[1:] == (1, 8, 8)
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    allx = torch.cat([b.train.x, b.val.x, b.test.x])
    assert allx.min() == 0 and allx.max() == 255
    assert set(np.unique(allx.numpy())) <= {round(v * 255 / 16) for v in range(17)}
    x = b.preprocess(b.train.x[:64])
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    pre = load_data(DataConfig(name="digits", scale="pm1", dequantize="uniform")).preprocess
    assert (pre.scale, pre.dequantize, pre.value_range) == ("pm1", "uniform", (-1.0, 1.0))


def test_digits_rgb_is_the_digits_in_class_colours():
    import colorsys

    gray, rgb = load_data(DataConfig(name="digits")), load_data(DataConfig(name="digits-rgb"))
    assert rgb.shape == (3, 8, 8) and rgb.kind == "image" and rgb.train.x.dtype == torch.uint8
    assert torch.equal(gray.train.y, rgb.train.y)                      # same split, same images
    g, c = gray.train.x.double() / 255, rgb.train.x.double() / 255
    for i in range(20):                                                # each image = gray * one colour
        lit = g[i, 0] > 0.5
        colour = c[i][:, lit].mean(1) / g[i, 0][lit].mean()
        hue = colorsys.rgb_to_hsv(*colour.clamp(0, 1).tolist())[0]
        target = int(rgb.train.y[i]) / 10
        assert min(abs(hue - target), 1 - abs(hue - target)) < 0.03 + 0.01, (i, hue, target)
        assert torch.allclose(c[i], g[i] * colour[:, None, None], atol=1 / 255 + 1e-9)
    assert rgb.train.x.max() > 200 and (c.sum(1) == 0).float().mean() > 0.3   # bright digits on black


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist():
    b = load_data(DataConfig(name="fashion-mnist", val_fraction=0.1))
    assert b.shape == (1, 28, 28) and b.info["official_test"] and b.info["num_classes"] == 10
    assert len(b.train) + len(b.val) == 60000 and len(b.val) == 6000 and len(b.test) == 10000


def test_toy_sets_shape_and_determinism():
    for name in toy2d.TOY_SETS:
        a = load_data(DataConfig(name=name, n_points=500, split_seed=1))
        b = load_data(DataConfig(name=name, n_points=500, split_seed=1))
        c = load_data(DataConfig(name=name, n_points=500, split_seed=2))
        assert a.kind == "vector" and a.shape == (2,) and a.train.x.dtype == torch.float32
        assert len(a.train) + len(a.val) + len(a.test) == 500
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
        assert not torch.equal(a.train.x, c.train.x)
        assert torch.isfinite(a.train.x).all()


def _bin_probs(name, box, nb=20, sub=10):
    """Normalized probabilities of nb x nb bins on ``box`` by midpoint quadrature (sub^2 points/bin)."""
    a1, b1, a2, b2 = box
    g1 = a1 + (np.arange(nb * sub) + 0.5) * (b1 - a1) / (nb * sub)
    g2 = a2 + (np.arange(nb * sub) + 0.5) * (b2 - a2) / (nb * sub)
    z = torch.tensor(np.stack(np.meshgrid(g1, g2, indexing="ij"), -1), dtype=torch.float64)
    d = torch.exp(toy2d.log_density_unnormalized(name, z)).numpy()
    mass = d.sum() * (b1 - a1) * (b2 - a2) / (nb * sub) ** 2
    p = d.reshape(nb, sub, nb, sub).sum((1, 3))
    return p / p.sum(), mass


BOXES = {**toy2d.U_BOXES, "8gaussians": (-6.0, 6.0, -6.0, 6.0), "checkerboard": (-4.0, 4.0, -4.0, 4.0),
         "rings": (-4.0, 4.0, -4.0, 4.0)}


@pytest.mark.parametrize("name", list(BOXES))
def test_toy_samples_match_density(name):
    """20k samples (seed 0) vs the quadrature density on a 20x20 grid of bins over the box.

    Tolerances: total variation < 0.05 (sampling noise alone gives ~0.03 here; sampling U3 but
    testing against U4 gives 0.24) and Pearson chi-square (bins with >= 5 expected) below
    dof + 5 sqrt(2 dof).
    """
    box = BOXES[name]
    x = toy2d.sample(name, 20000, seed=0)
    p, mass = _bin_probs(name, box)
    h, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=20, range=[box[:2], box[2:]])
    assert h.sum() >= 19990   # (almost) everything inside the box
    tv = 0.5 * np.abs(p - h / h.sum()).sum()
    e = p * h.sum()
    keep = e >= 5
    chi2, dof = ((h[keep] - e[keep]) ** 2 / e[keep]).sum(), keep.sum() - 1
    assert tv < 0.05, tv
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)
    if name in toy2d.U_LOG_Z:   # the documented normalizer matches quadrature
        assert abs(math.log(mass) - toy2d.U_LOG_Z[name]) < 1e-4
    else:
        assert abs(mass - 1) < 5e-3


def test_u_envelopes_and_domain():
    for name, (a1, b1, a2, b2) in toy2d.U_BOXES.items():
        g = torch.stack(torch.meshgrid(torch.linspace(a1, b1, 801, dtype=torch.float64),
                                       torch.linspace(a2, b2, 801, dtype=torch.float64), indexing="ij"), -1)
        assert torch.exp(-toy2d.potential(name, g)).max() <= toy2d.U_ENVELOPES[name]
        x = toy2d.sample(name, 2000, seed=3)
        assert (x[:, 0] >= a1).all() and (x[:, 0] <= b1).all() and (x[:, 1] >= a2).all() and (x[:, 1] <= b2).all()
    z = torch.tensor([[4.5, 0.0]])
    assert toy2d.log_density_unnormalized("U2", z).item() == -math.inf
    assert math.isfinite(toy2d.log_density_unnormalized("U1", z).item())
    # numpy and torch potentials agree
    z = np.random.default_rng(0).uniform(-4, 4, (50, 2))
    for name in toy2d.U_BOXES:
        assert np.allclose(toy2d.potential(name, z), toy2d.potential(name, torch.tensor(z)).numpy())


# ----------------------------------------------------------------------------------- transforms
RAW = torch.randint(0, 256, (64, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_preprocess_ranges():
    for kw, lo, hi in [({}, 0, 1), ({"scale": "pm1"}, -1, 1), ({"dequantize": "uniform"}, 0, 1),
                       ({"scale": "pm1", "dequantize": "uniform"}, -1, 1), ({"binarize": True}, 0, 1)]:
        pre = Preprocess("image", **kw)
        x = pre(RAW)
        assert x.dtype == torch.float32 and x.shape == RAW.shape
        assert lo <= x.min() and x.max() <= hi and pre.value_range == (lo, hi) and pre.kind == "image"
    x = Preprocess("image")(RAW)
    assert torch.allclose(x, RAW.float() / 255)
    assert torch.allclose(Preprocess("image", scale="pm1")(RAW), RAW.float() / 127.5 - 1)
    pre = Preprocess("image", dequantize="uniform_logit", logit_alpha=0.05)
    assert pre.value_range is None and torch.isfinite(pre(RAW)).all()
    v = Preprocess("vector")
    assert v(torch.randn(3, 2, dtype=torch.float64)).dtype == torch.float32 and v.value_range is None


def test_binarize():
    torch.manual_seed(0)
    pre = Preprocess("image", binarize=True)
    raw = torch.full((4000, 1, 2, 2), 64, dtype=torch.uint8)
    x = pre(raw)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    p = 64 / 255
    assert abs(x.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / x.numel())
    assert not torch.equal(pre(raw), x)   # redrawn each call


@pytest.mark.parametrize("kw", [{"dequantize": "uniform"}, {"dequantize": "uniform", "scale": "pm1"},
                                {"dequantize": "uniform_logit", "logit_alpha": 0.05}])
def test_dequantize_inverse(kw):
    torch.manual_seed(1)
    pre = Preprocess("image", **kw)
    u = pre.to_unit(pre(RAW)) * 256 - RAW.float()     # = dequantization noise, in [0, 1)
    assert u.min() > -1e-3 and u.max() < 1 + 1e-3 and 0.4 < u.mean() < 0.6
    assert pre.to_unit(torch.tensor([-50.0, 50.0])).tolist() == [0.0, 1.0]   # clamped


def _maps(alpha=0.05):
    """Model-space maps m = f(v) of v = (x + u)/256 for each setting, written independently."""
    return [({"dequantize": "uniform"}, lambda v: v),
            ({"dequantize": "uniform", "scale": "pm1"}, lambda v: 2 * v - 1),
            ({}, lambda v: v * 256 / 255),
            ({"scale": "pm1"}, lambda v: 2 * (v * 256 / 255) - 1),
            ({"dequantize": "uniform_logit", "logit_alpha": alpha},
             lambda v: torch.log(alpha + (1 - 2 * alpha) * v) - torch.log(1 - alpha - (1 - 2 * alpha) * v))]


def test_log_det_matches_jacobian():
    v = torch.rand(1, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for kw, f in _maps():
        pre = Preprocess("image", **kw)
        jac = torch.autograd.functional.jacobian(lambda t: f(t).reshape(-1), v.reshape(-1))
        expect = torch.linalg.slogdet(jac)[1]
        assert torch.allclose(pre.log_det(f(v)), expect.reshape(1), atol=1e-9), kw
    # the forward pass really is f((x + u) / 256) with u = torch.rand_like
    for kw, f in _maps():
        if kw.get("dequantize", "none") != "none":
            torch.manual_seed(5)
            out = Preprocess("image", **kw)(RAW)
            torch.manual_seed(5)
            u = torch.rand_like(RAW, dtype=torch.float32)
            assert torch.allclose(out, f((RAW.float() + u) / 256), atol=1e-5)


def test_bits_per_dim_known_cases():
    torch.manual_seed(0)
    d = RAW[0].numel()
    # a uniform density on the dequantized data has exactly 8 bits/dim in every parametrization
    pre = Preprocess("image", dequantize="uniform")
    assert torch.allclose(pre.bits_per_dim(torch.zeros(64), pre(RAW)), torch.full((64,), 8.0))
    pre = Preprocess("image", dequantize="uniform", scale="pm1")     # uniform on [-1, 1)^D
    assert torch.allclose(pre.bits_per_dim(torch.full((64,), d * math.log(2)), pre(RAW)), torch.full((64,), 8.0))
    a = 0.05
    pre = Preprocess("image", dequantize="uniform_logit", logit_alpha=a)
    m = pre(RAW)   # density of the pushed-forward uniform: sigmoid(m) sigmoid(-m) / (1 - 2a)
    nll = -(torch.sigmoid(m) * torch.sigmoid(-m) / (1 - 2 * a)).log().reshape(64, -1).sum(1)
    assert torch.allclose(pre.bits_per_dim(nll, m), torch.full((64,), 8.0), atol=1e-5)
    # pixels known to be < 128: uniform on [0, 0.5)^D gives 7 bits/dim
    pre = Preprocess("image", dequantize="uniform")
    half = pre(RAW // 2)
    assert torch.allclose(pre.bits_per_dim(torch.full((64,), -d * math.log(2)), half), torch.full((64,), 7.0))
    # binarized: a fair coin per pixel is 1 bit/dim; vectors: nats -> bits per dim
    pre = Preprocess("image", binarize=True)
    assert torch.allclose(pre.bits_per_dim(torch.full((2,), d * math.log(2)), pre(RAW[:2])), torch.ones(2))
    pre = Preprocess("vector")
    assert torch.allclose(pre.bits_per_dim(torch.tensor([2 * math.log(2)]), torch.zeros(1, 2)), torch.ones(1))


# ------------------------------------------------------------------------------------- splits
def test_splits_deterministic_disjoint(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(200, dtype=np.float32)[:, None])
    cfg = dict(name="array", path=str(tmp_path / "v.npy"), val_fraction=0.2, test_fraction=0.1)
    a, b = load_data(DataConfig(**cfg)), load_data(DataConfig(**cfg))
    c = load_data(DataConfig(**cfg, split_seed=1))
    ids = [set(s.x[:, 0].long().tolist()) for s in (a.train, a.val, a.test)]
    assert [len(i) for i in ids] == [144, 36, 20] and set().union(*ids) == set(range(200))
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all(torch.equal(getattr(a, s).x, getattr(b, s).x) for s in ("train", "val", "test"))
    assert not torch.equal(a.test.x, c.test.x)
    lim = load_data(DataConfig(**cfg, limit=10))
    assert len(lim.train) == 10 and torch.equal(lim.val.x, a.val.x) and torch.equal(lim.test.x, a.test.x)
    assert a.info["sizes"] == {"train": 144, "val": 36, "test": 20}
    import json
    json.dumps(a.info)


# ------------------------------------------------------------------------------------- config
def test_config_errors():
    with pytest.raises(ConfigError, match="choose from: .*digits"):
        DataConfig(name="svhn")
    for kw in [dict(binarize=True, scale="pm1"), dict(binarize=True, dequantize="uniform"),
               dict(val_fraction=0.5), dict(test_fraction=-0.1), dict(logit_alpha=0.5),
               dict(dequantize="uniform_logit", scale="pm1"), dict(limit=0), dict(image_size=0),
               dict(name="cifar10"), dict(name="U1", dequantize="uniform"), dict(n_points=0)]:
        with pytest.raises(ConfigError):
            DataConfig(**kw)
    with pytest.raises(ConfigError, match=r"^data: binarize"):
        parse_params(DataConfig, {"binarize": True, "scale": "pm1"}, "data")
    with pytest.raises(ConfigError, match=r"data.scale"):
        parse_params(DataConfig, {"scale": "0-1"}, "data")
    assert set(toy2d.TOY_SETS) | {"digits", "digits-rgb", "fashion-mnist", "mnist-idx", "mnist", "cifar10",
                                  "cifar100", "image-folder", "array", "stl10", "imagenet32", "imagenet64",
                                  "lsun", "celeba", "celeba-hq"} == set(available_datasets())
